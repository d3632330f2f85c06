"""Routes, policy rules and forwarding sysctls of a translator, through pyroute2.

``plan`` (pure) lists what a configuration needs; ``Applied`` applies such a
plan, remembers exactly what it created and removes that again at exit.
``conflicts`` tells what already exists (the service refuses to start then,
unless ``--replace``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from dataclasses import dataclass, field

from ..errors import V6mostlyError

log = logging.getLogger("v6mostly.netlink")

RULE_PRIORITY = 1000
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")


class NetlinkError(V6mostlyError):
    pass


@dataclass
class Plan:
    routes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    rules: list[tuple[int, int]] = field(default_factory=list)  # (family, table)
    sysctls: dict[str, str] = field(default_factory=dict)

    def describe(self, dev: str) -> list[str]:
        out = [f"sysctl {k.replace('/', '.')}={v}" for k, v in self.sysctls.items()]
        out += [f"ip route add {r} dev {dev}" for r in self.routes]
        for fam, table in self.rules:
            ipv = "-6" if fam == socket.AF_INET6 else "-4"
            out.append(f"ip {ipv} rule add iif {dev} lookup {table} priority {RULE_PRIORITY}")
        return out


def _family(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    return socket.AF_INET if net.version == 4 else socket.AF_INET6


def conflicts(pl: Plan) -> list[str]:
    """Routes of the plan that already exist in the main table."""
    from pyroute2 import IPRoute

    found = []
    with IPRoute() as ipr:
        existing: set[tuple[int, str, int]] = set()
        for fam in (socket.AF_INET, socket.AF_INET6):
            for g in ipr.get_routes(family=fam, table=254):
                dst = g.get_attr("RTA_DST")
                if dst is not None:
                    existing.add((fam, str(ipaddress.ip_address(dst)), g.get("dst_len")))
        for r in pl.routes:
            if (_family(r), str(r.network_address), r.prefixlen) in existing:
                found.append(f"route {r} already exists")
    return found


def read_sysctl(key: str) -> str:
    """``key`` is a path under /proc/sys (``net/ipv6/conf/eth0.100/mtu``: slashes,
    since interface names may hold dots)."""
    with open("/proc/sys/" + key) as f:
        return f.read().strip()


def write_sysctl(key: str, value: str) -> None:
    try:
        with open("/proc/sys/" + key, "w") as f:
            f.write(value)
    except OSError as e:
        raise NetlinkError(f"sysctl {key.replace('/', '.')}={value}: {e.strerror}") from None


class Applied:
    """What ``apply`` changed, so that ``undo`` restores exactly that."""

    def __init__(self, dev: str) -> None:
        self.dev = dev
        self.routes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.rules: list[tuple[int, int]] = []
        self.sysctls: dict[str, str] = {}

    def apply(self, pl: Plan, replace: bool = False) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError as PrNetlinkError

        for k, v in pl.sysctls.items():
            old = read_sysctl(k)
            if old != v:
                write_sysctl(k, v)
                self.sysctls[k] = old
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.dev)
            if not idx:
                raise NetlinkError(f"link {self.dev} does not exist")
            for r in pl.routes:
                try:
                    ipr.route("replace" if replace else "add", dst=str(r), oif=idx[0])
                except PrNetlinkError as e:
                    raise NetlinkError(f"ip route add {r} dev {self.dev}: {e}") from None
                self.routes.append(r)
            for fam, table in pl.rules:
                try:
                    ipr.rule(
                        "add", family=fam, iifname=self.dev, table=table, priority=RULE_PRIORITY
                    )
                except PrNetlinkError as e:
                    raise NetlinkError(f"ip rule add iif {self.dev} lookup {table}: {e}") from None
                self.rules.append((fam, table))

    def withdraw(self, pl: Plan) -> None:
        """Remove routes and rules this instance applied that a reload no longer
        wants (its sysctls stay until ``undo``)."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError as PrNetlinkError

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.dev)
            for r in pl.routes:
                if r in self.routes and idx:
                    with contextlib.suppress(PrNetlinkError):
                        ipr.route("del", dst=str(r), oif=idx[0])
                    self.routes.remove(r)
            for fam, table in pl.rules:
                if (fam, table) in self.rules:
                    with contextlib.suppress(PrNetlinkError):
                        ipr.rule(
                            "del",
                            family=fam,
                            iifname=self.dev,
                            table=table,
                            priority=RULE_PRIORITY,
                        )
                    self.rules.remove((fam, table))

    def undo(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError as PrNetlinkError

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.dev)
            for r in reversed(self.routes):
                if not idx:
                    break  # the routes went with the link
                with contextlib.suppress(PrNetlinkError):
                    ipr.route("del", dst=str(r), oif=idx[0])
            for fam, table in self.rules:
                with contextlib.suppress(PrNetlinkError):
                    ipr.rule(
                        "del", family=fam, iifname=self.dev, table=table, priority=RULE_PRIORITY
                    )
        for k, old in self.sysctls.items():
            try:
                write_sysctl(k, old)
            except NetlinkError as e:
                log.warning("%s", e)
        self.routes, self.rules, self.sysctls = [], [], {}


RTMGRP_LINK = 1
RTM_NEWLINK = 16


def link_mtu(dev: str) -> int:
    """The current MTU of ``dev`` (pyroute2)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=dev)
        if not idx:
            raise NetlinkError(f"link {dev} does not exist")
        return int(ipr.get_links(idx[0])[0].get_attr("IFLA_MTU"))


class LinkWatch:
    """RTM_NEWLINK notifications for one device (RTNLGRP_LINK), read without blocking.

    With ``sigio`` the socket raises SIGIO in this process when a notification
    arrives, so a supervisor waiting in ``sigtimedwait`` learns of it at once.
    ``poll`` drains the socket and returns the device's latest MTU, or None when
    it did not change.
    """

    def __init__(self, dev: str, mtu: int, sigio: bool = True) -> None:
        import fcntl
        import os

        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=dev)
        if not idx:
            raise NetlinkError(f"link {dev} does not exist")
        self.dev = dev
        self.index = idx[0]
        self.mtu = mtu
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK))
        self.sock.setblocking(False)
        if sigio:
            fd = self.sock.fileno()
            fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)

    def poll(self) -> int | None:
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        latest = None
        marshal = MarshalRtnl()
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as e:  # ENOBUFS: notifications lost; ask for the state
                log.warning("link watch on %s: %s; re-reading the MTU", self.dev, e.strerror)
                latest = link_mtu(self.dev)
                continue
            for msg in marshal.parse(data):
                if msg.get("header", {}).get("type") != RTM_NEWLINK:
                    continue
                if msg.get("index") != self.index:
                    continue
                mtu = msg.get_attr("IFLA_MTU")
                if mtu is not None:
                    latest = int(mtu)
        if latest is None or latest == self.mtu:
            return None
        self.mtu = latest
        return latest

    def close(self) -> None:
        self.sock.close()
