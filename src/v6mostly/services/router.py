"""``v6mostly router``: DHCPv4 (option 108), Router Advertisements (PREF64) and DNS
(``ipv4only.arpa``) in one asyncio process, from one site configuration.

Each protocol core is sans-I/O (``dhcp4.server``, ``ra.advertiser``,
``dns.responder``); this module owns the sockets, the clock and the signals.
SIGTERM/SIGINT: a final RA with router lifetime 0 on every interface, close
the lease database, exit. SIGHUP: re-read the file; RA contents change at once
(a PREF64 that went away is withdrawn with lifetime 0), DHCP subnets and
classes are replaced (leases are kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype

from ..dhcp4.leases import LeaseTable, MemoryStore, SqliteStore
from ..dhcp4.policy import V6OnlyPolicy
from ..dhcp4.server import Dhcp4Server, Reply, Subnet
from ..dns.responder import Responder
from ..errors import ConfigError, V6mostlyError
from ..ra.advertiser import Advertiser, default_pref64_lifetime
from ..ra.options import Pref64, Prefix, Route, RouterAdvert, router_solicit_ok
from ..site_config import Dhcp4Subnet, InterfaceConfig, SiteConfig, load_site
from .router_metrics import RouterCollector

log = logging.getLogger("v6mostly.router")

IP_PKTINFO = 8
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IPV6_JOIN_GROUP = 20
IPV6_MULTICAST_HOPS = 18
IPV6_UNICAST_HOPS = 16
IPV6_MULTICAST_LOOP = 19
ICMP6_FILTER = 1
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"


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


def make_ra(
    ic: InterfaceConfig, pref64: ipaddress.IPv6Network, lladdr: bytes | None
) -> RouterAdvert:
    life = ic.pref64_lifetime or default_pref64_lifetime(ic.max_interval)
    return RouterAdvert(
        managed=ic.managed,
        other=ic.other,
        preference=ic.preference,
        router_lifetime=ic.router_lifetime,
        source_lladdr=lladdr,
        mtu=ic.mtu or None,
        prefixes=[Prefix(p) for p in ic.prefixes],
        routes=[Route(p) for p in ic.routes],
        rdnss=ic.rdnss,
        rdnss_lifetime=min(3 * ic.max_interval, 0xFFFFFFFF) if ic.rdnss else 0,
        dnssl=ic.dnssl,
        dnssl_lifetime=min(3 * ic.max_interval, 0xFFFFFFFF) if ic.dnssl else 0,
        pref64=[Pref64(pref64, life)] if ic.advertise_pref64 else [],
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


# -- Router Advertisements ---------------------------------------------------------


@dataclass
class RaInterface:
    name: str
    index: int
    adv: Advertiser
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    solicits: int = 0
    errors: int = 0


def _lladdr(ifname: str) -> bytes | None:
    try:
        with open(f"/sys/class/net/{ifname}/address") as f:
            return bytes.fromhex(f.read().strip().replace(":", "")) or None
    except (OSError, ValueError):
        return None


class RaService:
    def __init__(self, interfaces: list[InterfaceConfig], pref64: ipaddress.IPv6Network) -> None:
        self.configs = [ic for ic in interfaces if ic.ra]
        self.pref64 = pref64
        self.ifs: dict[int, RaInterface] = {}
        self.sock: socket.socket | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.rng = random.Random()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.configs:
            return
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_UNICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        filt = [0xFFFFFFFF] * 8  # block everything ...
        filt[133 >> 5] &= ~(1 << (133 & 31))  # ... but Router Solicitations
        s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *filt))
        s.setblocking(False)
        self.sock = s
        now = time.monotonic()
        for ic in self.configs:
            try:
                idx = socket.if_nametoindex(ic.name)
            except OSError:
                raise V6mostlyError(f"interface {ic.name}: does not exist") from None
            mreq = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + struct.pack("=I", idx)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_JOIN_GROUP, mreq)
            adv = Advertiser(
                make_ra(ic, self.pref64, _lladdr(ic.name)),
                ic.max_interval,
                ic.min_interval,
                self.rng.random,
            )
            adv.start(now)
            self.ifs[idx] = RaInterface(ic.name, idx, adv)
        loop.add_reader(s.fileno(), self._readable)
        for rif in self.ifs.values():
            self.tasks.append(loop.create_task(self._run(rif)))

    def _readable(self) -> None:
        assert self.sock is not None
        for _ in range(64):
            try:
                data, anc, _f, addr = self.sock.recvmsg(1500, socket.CMSG_SPACE(20))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            idx = addr[3] if len(addr) > 3 else 0
            for level, kind, cdata in anc:
                if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(cdata) >= 20:
                    idx = struct.unpack_from("=I", cdata, 16)[0]
            rif = self.ifs.get(idx)
            if rif is None or not router_solicit_ok(data):
                continue
            rif.solicits += 1
            rif.adv.on_solicit(time.monotonic())
            rif.wake.set()

    async def _run(self, rif: RaInterface) -> None:
        while True:
            delay = rif.adv.next_time() - time.monotonic()
            if delay > 0:
                rif.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(rif.wake.wait(), delay)
                continue
            ra = rif.adv.on_timer(time.monotonic())
            if ra is not None:
                self._send(rif, ra)

    def _send(self, rif: RaInterface, ra: bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.sendto(ra, (ALL_NODES, 0, 0, rif.index))
            rif.sent += 1
        except OSError as e:
            rif.errors += 1
            # e.g. the link-local address is still tentative: try again soon
            rif.adv.next_at = time.monotonic() + 1.0
            log.debug("ra %s: send failed: %s", rif.name, e)

    def update(self, interfaces: list[InterfaceConfig], pref64: ipaddress.IPv6Network) -> None:
        self.pref64 = pref64
        by_name = {ic.name: ic for ic in interfaces if ic.ra}
        now = time.monotonic()
        for rif in self.ifs.values():
            ic = by_name.get(rif.name)
            if ic is not None:
                rif.adv.update(make_ra(ic, pref64, _lladdr(ic.name)), now)
                rif.wake.set()

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        for t in self.tasks:
            t.cancel()
        if self.sock is None:
            return
        for rif in self.ifs.values():
            # RFC 4861 §6.2.5: a final RA with router lifetime 0.
            with contextlib.suppress(OSError):
                self.sock.sendto(rif.adv.final(), (ALL_NODES, 0, 0, rif.index))
        loop.remove_reader(self.sock.fileno())
        self.sock.close()


# -- DNS ---------------------------------------------------------------------------


class DnsService:
    def __init__(
        self, responder: Responder, listen: list[str], port: int, upstream: str | None
    ) -> None:
        self.responder = responder
        self.listen = listen
        self.port = port
        self.upstream = upstream
        self.transports: list[asyncio.BaseTransport] = []
        self.servers: list[asyncio.base_events.Server] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for addr in self.listen:
            t, _ = await loop.create_datagram_endpoint(
                lambda: _DnsUdp(self), local_addr=(addr, self.port)
            )
            self.transports.append(t)
            self.servers.append(await asyncio.start_server(self._tcp, addr, self.port))

    async def answer(self, wire: bytes, client: str) -> bytes | None:
        ip = ipaddress.ip_address(client.split("%")[0])
        d = self.responder.handle(wire, ip, time.monotonic())
        if d.kind == "answer":
            return d.wire
        if d.kind == "drop" or d.query is None or self.upstream is None:
            return None
        q = d.query
        try:
            r = await dns.asyncquery.udp(q, self.upstream, timeout=2.0)
            if r.flags & 0x0200:  # TC: retry over TCP
                r = await dns.asyncquery.tcp(q, self.upstream, timeout=2.0)
            if self.responder.needs_synthesis(q, r):
                aq = dns.message.make_query(q.question[0].name, dns.rdatatype.A)
                ar = await dns.asyncquery.udp(aq, self.upstream, timeout=2.0)
                r = self.responder.synthesize(q, ar)
        except Exception as e:  # upstream trouble becomes SERVFAIL, never a crash
            log.debug("dns: upstream %s: %s", self.upstream, e)
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.SERVFAIL)
        r.id = q.id
        return r.to_wire()

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), 10)
                n = struct.unpack("!H", head)[0]
                wire = await asyncio.wait_for(reader.readexactly(n), 10)
                out = await self.answer(wire, peer)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        for t in self.transports:
            t.close()
        for s in self.servers:
            s.close()


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, svc: DnsService) -> None:
        self.svc = svc
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(
        self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]
    ) -> None:
        asyncio.get_running_loop().create_task(self._reply(data, addr))

    async def _reply(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        out = await self.svc.answer(data, addr[0])
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


# -- the router --------------------------------------------------------------------


SERVICES = ("dhcp4", "ra", "dns")


class Router:
    def __init__(self, cfg: SiteConfig, only: tuple[str, ...] = SERVICES) -> None:
        self.cfg = cfg
        self.only = only
        self.table: LeaseTable | None = None
        self.dhcp: Dhcp4Service | None = None
        self.ra: RaService | None = None
        self.dns: DnsService | None = None
        self.http: object | None = None
        self.store: SqliteStore | MemoryStore | None = None

    def build_dhcp(self, cfg: SiteConfig) -> Dhcp4Server | None:
        subs = [ic.dhcp4 for ic in cfg.interfaces if ic.dhcp4] + cfg.relayed
        if not subs:
            return None
        subnets = [make_subnet(d, interface_ipv4) for d in subs]
        if self.table is None:
            d = os.path.dirname(cfg.lease_db)
            if d:
                os.makedirs(d, exist_ok=True)
            try:
                self.store = SqliteStore(cfg.lease_db, cfg.lease_sync)
            except Exception as e:
                raise V6mostlyError(f"lease database {cfg.lease_db}: {e}") from None
            self.table = LeaseTable(self.store)
        return Dhcp4Server(subnets, self.table, V6OnlyPolicy(cfg.classes))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self.build_dhcp(self.cfg) if "dhcp4" in self.only else None
        if server is not None:
            self.dhcp = Dhcp4Service(server)
            try:
                self.dhcp.open(loop)
            except OSError as e:
                raise V6mostlyError(f"dhcp4: cannot listen on port 67: {e.strerror}") from None
            log.info("dhcp4: serving %s", ", ".join(s.name for s in server.subnets))
        self.ra = RaService(self.cfg.interfaces if "ra" in self.only else [], self.cfg.pref64)
        try:
            self.ra.open(loop)
        except OSError as e:
            raise V6mostlyError(f"ra: cannot open the ICMPv6 socket: {e.strerror}") from None
        if self.ra.ifs:
            log.info(
                "ra: advertising on %s (PREF64 %s)",
                ", ".join(r.name for r in self.ra.ifs.values()),
                self.cfg.pref64,
            )
        if self.cfg.dns and "dns" in self.only:
            d = self.cfg.dns
            resp = Responder(
                [self.cfg.pref64],
                d.allow,
                forward=d.upstream is not None,
                dns64=d.dns64,
                rate=d.rate,
                burst=d.burst,
            )
            self.dns = DnsService(resp, d.listen, d.port, d.upstream)
            try:
                await self.dns.open()
            except OSError as e:
                raise V6mostlyError(
                    f"dns: cannot listen on {', '.join(d.listen)} port {d.port}: {e.strerror}"
                ) from None
            log.info("dns: answering on %s port %d", ", ".join(d.listen), d.port)
        if self.cfg.metrics_listen:
            from prometheus_client.registry import CollectorRegistry

            from ..config import listen_address
            from ..metrics import serve

            reg = CollectorRegistry()
            reg.register(RouterCollector(self))
            host, port = listen_address(self.cfg.metrics_listen)
            try:
                self.http = serve(reg, host, port)
            except OSError as e:
                raise V6mostlyError(
                    f"metrics listen {self.cfg.metrics_listen}: {e.strerror}"
                ) from None

    def reload(self) -> None:
        try:
            new = load_site(self.cfg.source)
            server = self.build_dhcp(new) if "dhcp4" in self.only else None
        except V6mostlyError as e:
            log.error("SIGHUP: keeping the running configuration: %s", e)
            return
        if self.dhcp is not None and server is not None:
            server.stats = self.dhcp.server.stats
            self.dhcp.server = server
        if self.ra is not None:
            self.ra.update(new.interfaces, new.pref64)
        if self.dns is not None and new.dns is not None:
            self.dns.responder.pref64 = [new.pref64]
            self.dns.responder.__post_init__()
        self.cfg = new
        log.info("SIGHUP: configuration reloaded")

    def stop(self) -> None:
        loop = asyncio.get_event_loop()
        if self.ra is not None:
            self.ra.stop(loop)
        if self.dhcp is not None:
            self.dhcp.close(loop)
        if self.dns is not None:
            self.dns.close()
        if self.http is not None:
            shutdown = getattr(self.http, "shutdown", None)
            if shutdown is not None:
                shutdown()
        if self.store is not None:
            self.store.close()
        log.info("stopped")


async def _main(cfg: SiteConfig, only: tuple[str, ...]) -> int:
    router = Router(cfg, only)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, router.reload)
    try:
        await router.start()
        log.info("router running")
        await stop.wait()
    finally:
        router.stop()
    return 0


def serve_forever(cfg: SiteConfig, only: tuple[str, ...] = SERVICES) -> int:
    return asyncio.run(_main(cfg, only))
