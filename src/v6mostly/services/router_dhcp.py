"""The router's DHCPv4 socket adapter: the subnets built from the site file and
the socket around the sans-I/O ``dhcp4.server`` core.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable

from ..dhcp4.server import Dhcp4Server, Reply, Subnet
from ..errors import ConfigError
from ..site_config import Dhcp4Subnet

log = logging.getLogger("v6mostly.router")

IP_PKTINFO = 8


# -- building the cores from the configuration ---------------------------------------


def interface_ipv4(ifname: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses of an interface (pyroute2; run in a thread, since pyroute2's
    synchronous API cannot run inside the router's event loop)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        return ex.submit(_interface_ipv4, ifname).result()


def _interface_ipv4(ifname: str) -> list[ipaddress.IPv4Interface]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return []
        return [
            ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in ipr.get_addr(index=idx[0], family=socket.AF_INET)
        ]


def make_subnet(d: Dhcp4Subnet, lookup: Callable[[str], list[ipaddress.IPv4Interface]]) -> Subnet:
    server = d.server_address
    if server is None:
        if d.interface is None:
            raise ConfigError(f"relayed subnet {d.name}: server_address is required")
        for a in lookup(d.interface):
            if a.ip in d.subnet:
                server = str(a.ip)
                break
        if server is None:
            raise ConfigError(
                f"interface {d.interface}: no IPv4 address in {d.subnet} to serve DHCP from "
                "(add one, or set dhcp4.server_address)"
            )
    return Subnet(
        name=d.name,
        network=d.subnet,
        pools=[(int(a), int(b)) for a, b in d.pools],
        server_address=ipaddress.IPv4Address(server),
        interface=d.interface,
        routers=d.routers,
        dns=d.dns,
        domain=d.domain,
        search=d.search,
        lease_time=d.lease_time,
        v6only=d.v6only,
        v6only_wait=d.v6only_wait,
        v6only_rollout=d.v6only_rollout,
        reservations={k: int(v) for k, v in d.reservations.items()},
    )


class Dhcp4Service:
    def __init__(self, server: Dhcp4Server, port: int = 67) -> None:
        self.server = server
        self.port = port
        self.sock: socket.socket | None = None
        self.names: dict[int, str] = {}

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        s.bind(("0.0.0.0", self.port))
        s.setblocking(False)
        self.sock = s
        loop.add_reader(s.fileno(), self._readable)

    def _readable(self) -> None:
        """Read a burst of datagrams, decide them in one lease transaction (group
        commit: on disk before any of their replies leaves), then send the replies."""
        assert self.sock is not None
        batch: list[tuple[bytes, int]] = []
        for _ in range(64):
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.warning("dhcp4: receive failed: %s", e)
                break
            ifindex = 0
            for level, kind, cdata in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(cdata) >= 4:
                    ifindex = struct.unpack_from("=i", cdata)[0]
            batch.append((data, ifindex))
        if not batch:
            return
        now = time.time()
        replies: list[tuple[Reply, int]] = []
        with self.server.table.transaction():
            for data, ifindex in batch:
                reply = self.server.handle(data, now, self._ifname(ifindex))
                if reply is not None:
                    replies.append((reply, ifindex))
        for reply, ifindex in replies:
            self._send(reply, ifindex)

    def _ifname(self, ifindex: int) -> str | None:
        name = self.names.get(ifindex)
        if name is None and ifindex:
            try:
                name = self.names[ifindex] = socket.if_indextoname(ifindex)
            except OSError:
                return None
        return name

    def _send(self, reply: Reply, ifindex: int) -> None:
        assert self.sock is not None
        wire = reply.message.to_wire()
        sid = reply.message.options.get(54, b"\0\0\0\0")
        try:
            if reply.broadcast:
                info = struct.pack("=i4s4s", ifindex, sid, b"\0\0\0\0")
                self.sock.sendmsg(
                    [wire], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (reply.address, reply.port)
                )
            else:
                self.sock.sendto(wire, (reply.address, reply.port))
        except OSError as e:
            log.warning("dhcp4: send to %s failed: %s", reply.address, e)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.sock is not None:
            loop.remove_reader(self.sock.fileno())
            self.sock.close()
