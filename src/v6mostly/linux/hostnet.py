"""The host's links and addresses as the CLAT needs them (pyroute2).

Adapters only: each function asks or tells the kernel one thing about a link,
its IPv6 addresses or its IPv4 default routes; the CLAT service decides.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import Any

from . import netlink

IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40


def iproute() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


def link_index(name: str) -> int | None:
    with iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        return int(idx[0]) if idx else None


def link_state(name: str) -> tuple[bool, bytes]:
    """(operationally up, MAC) of ``name``."""
    with iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return False, b""
        link = ipr.get_links(idx[0])[0]
        mac = link.get_attr("IFLA_ADDRESS") or ""
        up = link.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN") and bool(link["flags"] & 1)
        return up, bytes.fromhex(mac.replace(":", "")) if mac else b""


def native_ipv4_default(own_tun: str) -> str | None:
    """The interface of an IPv4 default route that is not the CLAT's, or None."""
    with iproute() as ipr:
        own = ipr.link_lookup(ifname=own_tun)
        for r in ipr.get_default_routes(family=socket.AF_INET, table=254):
            oif = r.get_attr("RTA_OIF")
            if oif is None:
                mp = r.get_attr("RTA_MULTIPATH")
                return "multipath" if mp else "unknown"
            if not own or oif != own[0]:
                links = ipr.get_links(oif)
                return str(links[0].get_attr("IFLA_IFNAME")) if links else str(oif)
    return None


def uplink_prefixes(name: str, exclude: set[str]) -> list[ipaddress.IPv6Network]:
    """The global /64s on ``name`` (from its SLAAC or static addresses)."""
    out: list[ipaddress.IPv6Network] = []
    with iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return out
        for a in ipr.get_addr(index=idx[0], family=socket.AF_INET6):
            addr = a.get_attr("IFA_ADDRESS")
            if a["prefixlen"] != 64 or addr in exclude:
                continue
            ip = ipaddress.IPv6Address(addr)
            if ip.is_global or ip in ipaddress.IPv6Network("2001:db8::/32"):
                net = ipaddress.IPv6Network(f"{addr}/64", strict=False)
                if net not in out:
                    out.append(net)
    return out


def source_address(name: str, exclude: str) -> str | None:
    """A preferred global address of ``name`` other than the CLAT's (source of the
    ICMPv6 errors the CLAT's translator originates)."""
    with iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        for a in ipr.get_addr(index=idx[0], family=socket.AF_INET6):
            addr = a.get_attr("IFA_ADDRESS")
            if addr != exclude and a["scope"] == 0 and not a["flags"] & IFA_F_DEPRECATED:
                return str(addr)
    return None


def address_flags(name: str, address: str) -> int | None:
    """IFA flags of ``address`` on ``name``; None when it is not there."""
    with iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        for a in ipr.get_addr(index=idx[0], family=socket.AF_INET6):
            if a.get_attr("IFA_ADDRESS") == address:
                return int(a.get_attr("IFA_FLAGS") or a["flags"])
    return None


def add_deprecated_address(name: str, address: str) -> None:
    with iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)[0]
        ipr.addr("add", index=idx, address=address, prefixlen=128, preferred=0, valid=0xFFFFFFFF)


def del_address(name: str, address: str) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    with iproute() as ipr, contextlib.suppress(NetlinkError, IndexError):
        idx = ipr.link_lookup(ifname=name)[0]
        ipr.addr("del", index=idx, address=address, prefixlen=128)


def ipv6_mtu(name: str) -> int:
    """The uplink's IPv6 MTU (RA MTU options change it, RFC 4861 §6.3.4)."""
    try:
        return int(netlink.read_sysctl(f"net/ipv6/conf/{name}/mtu"))
    except (OSError, ValueError):
        return netlink.link_mtu(name)
