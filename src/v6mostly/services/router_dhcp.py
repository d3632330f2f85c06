"""The router's DHCPv4 socket adapter: the subnets built from the site file and
the sockets around the sans-I/O ``dhcp4.server`` core.

Sockets: one per served interface (``SO_BINDTODEVICE``), so a flood arriving
elsewhere does not fill the receive buffer that the site's clients use, and
one catch-all socket on ``0.0.0.0:67`` that takes what arrives on any other
interface: the core drops those (``interface_not_served``) and counts them,
and having a socket there means the kernel sends no ICMP port unreachable
back either. ``IP_PKTINFO`` tells every socket the arriving interface; a
broadcast on a served link reaches the catch-all socket too, which leaves it
to the interface's own socket. Drops, pool exhaustion and limits are logged
at most once per ``LOG_EVERY`` seconds, as counts since the last line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable

from ..dhcp4.limits import ClientLimits
from ..dhcp4.server import Dhcp4Server, Reply, Subnet
from ..errors import ConfigError
from ..linux import instance_lock
from ..site_config import Dhcp4Limits, Dhcp4Subnet

log = logging.getLogger("v6mostly.router")
#: One line per decision (lease given, renewed, released, declined, option 108 and why):
#: shown with -v (the CLI keeps this logger at WARNING otherwise).
decisions = logging.getLogger("v6mostly.dhcp4.decisions")

IP_PKTINFO = 8
SO_ATTACH_FILTER = 26
#: classic BPF: the receiving interface's index, an ancillary load (SKF_AD_OFF + SKF_AD_IFINDEX)
_BPF_LD_IFINDEX = (0x20, 0, 0, (-0x1000 + 8) & 0xFFFFFFFF)
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
#: seconds between two log lines about drops / exhaustion / limits
LOG_EVERY = 10.0


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
        relays=list(d.relays),
    )


def make_limits(d: Dhcp4Limits) -> ClientLimits:
    return ClientLimits(
        offer_hold_time=d.offer_hold_time,
        client_rate=d.client_rate,
        client_burst=d.client_burst,
        max_declines=d.max_declines,
        decline_window=d.decline_window,
    )


def _drop_interfaces(sock: socket.socket, ifindexes: list[int]) -> None:
    """A socket filter so the kernel does not queue, on the catch-all socket, the
    broadcasts of links that have their own socket (each would be read twice).
    Best effort: without it, ``_readable`` skips them."""
    import ctypes

    n = len(ifindexes)
    prog = [_BPF_LD_IFINDEX]
    prog += [(_BPF_JEQ_K, n - i, 0, idx) for i, idx in enumerate(ifindexes)]
    prog += [(_BPF_RET_K, 0, 0, 0xFFFFFFFF), (_BPF_RET_K, 0, 0, 0)]
    code = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(buf))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as e:
        log.debug("dhcp4: no socket filter on the catch-all socket: %s", e)


class Dhcp4Service:
    def __init__(self, server: Dhcp4Server, port: int = 67) -> None:
        self.server = server
        self.port = port
        self.sock: socket.socket | None = None  # the catch-all socket
        #: ifindex -> the socket bound to that served interface
        self.own: dict[int, socket.socket] = {}
        self.names: dict[int, str] = {}
        self.logged_at = -LOG_EVERY
        self.logged: Counter[str] = Counter()
        #: instance locks held on the served interfaces (see linux.instance_lock)
        self.locks: list[socket.socket] = []

    def _socket(self, device: str | None) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if device is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            s.bind(("0.0.0.0", self.port))
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        # One DHCPv4 server per link (two answered from two lease databases).
        self.locks = [instance_lock.claim("dhcp4", n) for n in sorted(self.server.served)]
        self.sock = self._socket(None)
        loop.add_reader(self.sock.fileno(), self._readable, self.sock, True)
        for name in sorted(self.server.served):
            try:
                index = socket.if_nametoindex(name)
                s = self._socket(name)
            except OSError as e:
                # absent now, or no CAP_NET_RAW: the catch-all socket serves it
                log.warning("dhcp4: no socket of its own on %s (%s)", name, e)
                continue
            self.own[index] = s
            self.names[index] = name
            loop.add_reader(s.fileno(), self._readable, s, False)
        if self.own:
            _drop_interfaces(self.sock, sorted(self.own))

    def _readable(self, sock: socket.socket, catch_all: bool) -> None:
        """Read a burst of datagrams, decide them in one lease transaction (group
        commit: on disk before any of their replies leaves), then send the replies."""
        batch: list[tuple[bytes, int, str]] = []
        for _ in range(64):
            try:
                data, anc, _flags, addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.warning("dhcp4: receive failed: %s", e)
                break
            ifindex = 0
            for level, kind, cdata in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(cdata) >= 4:
                    ifindex = struct.unpack_from("=i", cdata)[0]
            if catch_all and ifindex in self.own:
                continue  # a broadcast on a served link: its own socket has it too
            batch.append((data, ifindex, addr[0] if addr else ""))
        if not batch:
            return
        now = time.time()
        replies: list[tuple[Reply, int]] = []
        server = self.server
        with server.table.transaction():
            tell = decisions.isEnabledFor(logging.INFO)
            for data, ifindex, source in batch:
                reply = server.handle(data, now, self._ifname(ifindex), source)
                if tell and server.event:
                    decisions.info("%s", server.event)
                if reply is not None:
                    replies.append((reply, ifindex))
        for reply, ifindex in replies:
            self._send(reply, ifindex)
        if now - self.logged_at >= LOG_EVERY:
            self._log_counts(now)

    def _log_counts(self, now: float) -> None:
        """Drops, exhaustion and limits since the last line (at most one per LOG_EVERY)."""
        st = self.server.stats
        cur: Counter[str] = Counter()
        for k, v in st.dropped.items():
            cur[f"dropped {k}"] = v
        for k, v in st.exhausted.items():
            cur[f"pool {k} exhausted"] = v
        cur["option 82 from a client ignored"] = st.option82_ignored
        cur["malformed"] = st.malformed
        delta = {k: v - self.logged[k] for k, v in cur.items() if v > self.logged[k]}
        if delta:
            self.logged = cur
            self.logged_at = now
            parts = []
            for k, v in sorted(delta.items()):
                who = st.last_client.get(k.removeprefix("dropped "))
                parts.append(f"{k}: {v}" + (f" (last client {who})" if who else ""))
            log.warning("dhcp4: in the last %.0f s or less: %s", LOG_EVERY, ", ".join(parts))

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
                sock = self.own.get(ifindex, self.sock)
                info = struct.pack("=i4s4s", ifindex, sid, b"\0\0\0\0")
                sock.sendmsg(
                    [wire], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (reply.address, reply.port)
                )
            else:
                self.sock.sendto(wire, (reply.address, reply.port))
        except OSError as e:
            log.warning("dhcp4: send to %s failed: %s", reply.address, e)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for s in [*self.own.values(), *([self.sock] if self.sock else [])]:
            loop.remove_reader(s.fileno())
            s.close()
        self.own.clear()
        self.sock = None
        for lock in self.locks:
            lock.close()
        self.locks = []
