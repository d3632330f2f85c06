"""The CLAT's egress TAP (offload mode): IPv6 the workers translated, written whole
into a TAP whose tc program hands it to the uplink (:mod:`v6mostly.linux.bpf`)."""

from __future__ import annotations

import logging

from ..errors import V6mostlyError
from ..linux import bpf, hostnet, netlink, tun

log = logging.getLogger("v6mostly.clat")


def egress_name(tun_name: str) -> str:
    """The egress TAP's name: the TUN's with ``out`` (``clat0`` -> ``clat0out``)."""
    return f"{tun_name[:12]}out"


def open_egress(tun_name: str, uplink: str, queues: int, mtu: int) -> tun.Tun | None:
    """The egress TAP with its tc program, or None (then: raw socket, a packet at a time)."""
    name = egress_name(tun_name)
    tap: tun.Tun | None = None
    try:
        tap = tun.open_tun(name, queues, offload=True, tap=True)
        if tap.mode != "offload":
            raise tun.TunError(f"{name}: offloads refused ({'; '.join(tap.notes)})")
        tun.configure_link(name, mtu, 1000)
        # Nothing of the host's own on it: no IPv6 (RS, MLD), no ARP, no addresses.
        netlink.write_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
        with hostnet.iproute() as ipr:
            idx = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=idx, flags=0x80, mask=0x80)  # IFF_NOARP
        bpf.install_redirect_neigh(name, uplink)
        return tap
    except (V6mostlyError, OSError) as e:
        log.warning(
            "offload mode unavailable (%s): one packet at a time, IPv6 through a raw socket", e
        )
        if tap is not None:
            close_egress(tap)
        return None


def close_egress(tap: tun.Tun) -> None:
    tap.close()
    tun.delete_link(tap.name)  # its qdisc and filter go with it
