"""The router's DNS adapter: UDP and TCP listeners around the sans-I/O
``dns.responder`` core, forwarding to the upstream resolver.

What the adapter adds under attack: every answer leaves through
``Responder.finish`` (UDP fitted to the client's size, TC beyond it); TCP
connections are admitted at accept by the ACL and ``dns.tcp_limits`` (total and
per-client caps, the longest-idle connection evicted when full) before a byte is
read, and each read has the idle timeout; refusals are counted in the
responder's ``counts`` and logged at most once per 10 s per kind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import struct
import time
from typing import cast

import dns.asyncquery
import dns.flags
import dns.message
import dns.rdatatype

from ..dns.ratelimit import LogThrottle
from ..dns.responder import Decision, Responder
from ..dns.tcp_limits import TcpLimits

log = logging.getLogger("v6mostly.router")

#: upstream queries in flight at most (each holds a socket while it waits up to 2 s);
#: beyond, queries are dropped and counted. 512 + 100 TCP connections fit in 1024 fds.
MAX_INFLIGHT = 512

#: listen(2) backlog of the TCP sockets (the kernel caps it at net.core.somaxconn): a
#: deep queue, drained and judged at once, so a flood does not make a neighbour's SYN
#: wait for a retransmission
TCP_BACKLOG = 1024

#: connections accepted per wake-up: evicted transports close on the next loop pass, so
#: this bounds how far the descriptors in use can overshoot the caps for an instant
ACCEPT_BATCH = 64

#: outcomes worth a (throttled) log line
_LOGGED = {
    "rate_limited": "rate limited (per address)",
    "rate_limited_prefix": "rate limited (per prefix)",
    "dropped_response": "dropped a response (QR=1)",
    "formerr": "answered FORMERR to a malformed query",
    "malformed": "dropped a runt datagram",
    "tcp_refused_acl": "refused a TCP connection from outside allow",
    "tcp_refused_per_client": "refused a TCP connection (per-client cap)",
    "tcp_refused_total": "refused a TCP connection (all slots busy)",
    "tcp_evicted": "closed the longest-idle TCP connection to make room",
    "tcp_accept_failed": "accept() failed, listener paused 0.1 s",
    "forward_overload": f"dropped a query: {MAX_INFLIGHT} upstream queries in flight",
}


# -- DNS ---------------------------------------------------------------------------


class DnsService:
    def __init__(
        self,
        responder: Responder,
        listen: list[str],
        port: int,
        upstream: str | None,
        tcp_max_connections: int = 100,
        tcp_max_per_client: int = 10,
        tcp_idle_timeout: float = 10.0,
    ) -> None:
        self.responder = responder
        self.listen = listen
        self.port = port
        self.upstream = upstream
        self.tcp = TcpLimits(tcp_max_connections, tcp_max_per_client, tcp_idle_timeout)
        self.transports: list[asyncio.BaseTransport] = []
        self.listeners: list[socket.socket] = []
        #: admitted connections whose task has not started yet
        self.starting: dict[int, socket.socket] = {}
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self._ids = itertools.count()
        self.throttle = LogThrottle(10.0)
        self.inflight = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for addr in self.listen:
            t, _ = await loop.create_datagram_endpoint(
                lambda: _DnsUdp(self), local_addr=(addr, self.port)
            )
            self.transports.append(t)
            self.listeners.append(_listen_tcp(addr, self.port))
        for ls in self.listeners:
            loop.add_reader(ls.fileno(), self._accept, ls)

    # -- TCP: judged at accept, before any transport exists ------------------------------

    def _accept(self, ls: socket.socket) -> None:
        """Drain the accept queue: each connection is checked against the ACL and the
        caps while it is a bare socket and closed at once if refused, so a flood costs
        no file descriptors beyond the instant (asyncio's own server would accept a
        whole backlog of them into transports first)."""
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE, ENFILE, ENOBUFS: pause this listener briefly
                self.responder.count("tcp_accept_failed")
                self.note("tcp_accept_failed", str(e))
                loop.remove_reader(ls.fileno())
                loop.call_later(0.1, self._resume, ls)
                return
            cid = self._admit(str(peer[0]).split("%")[0])
            if cid is None:
                conn.close()
                continue
            conn.setblocking(False)
            self.starting[cid] = conn
            t = loop.create_task(self._serve_tcp(conn, cid))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    def _resume(self, ls: socket.socket) -> None:
        if ls.fileno() >= 0 and ls in self.listeners:
            asyncio.get_running_loop().add_reader(ls.fileno(), self._accept, ls)

    def _admit(self, client: str) -> int | None:
        """The ACL, then the caps; evicts as told. A connection id, or None to close."""
        try:
            ip = ipaddress.ip_address(client)
        except ValueError:
            return None
        if not self.responder.allowed(ip):
            self.responder.count("tcp_refused_acl")
            self.note("tcp_refused_acl", client)
            return None
        cid = next(self._ids)
        adm = self.tcp.admit(cid, client, time.monotonic())
        for victim in adm.evict:
            self.responder.count("tcp_evicted")
            self.note("tcp_evicted", client)
            w = self.writers.pop(victim, None)
            if w is not None:
                w.close()
            sock = self.starting.pop(victim, None)
            if sock is not None:  # its task has not run yet: free the descriptor now
                sock.close()
        if not adm.ok:
            self.responder.count(adm.outcome)
            self.note(adm.outcome, client)
            return None
        return cid

    def note(self, outcome: str, client: str) -> None:
        """A throttled log line for refusals: one per kind per 10 s, with the count."""
        what = _LOGGED.get(outcome)
        if what is None:
            return
        n = self.throttle.note(outcome, time.monotonic())
        if n:
            log.warning("dns: %s: %d since the last report, latest from %s", what, n, client)

    def decide(self, wire: bytes, client: str, tcp: bool = False) -> Decision:
        """The core's decision for one message (synchronous: no task for a drop)."""
        ip = ipaddress.ip_address(client.split("%")[0])
        d = self.responder.handle(wire, ip, time.monotonic(), tcp=tcp)
        self.note(d.outcome, client)
        if d.kind == "forward" and (self.upstream is None or d.query is None):
            return Decision("drop", outcome="forwarded")
        if d.kind == "forward" and self.inflight >= MAX_INFLIGHT:
            self.responder.count("forward_overload")
            self.note("forward_overload", client)
            return Decision("drop", outcome="forward_overload")
        return d

    async def answer(self, wire: bytes, client: str, tcp: bool = False) -> bytes | None:
        d = self.decide(wire, client, tcp)
        if d.kind == "answer":
            return d.wire
        if d.kind == "drop" or d.query is None:
            return None
        return await self.forward(d.query, client, tcp)

    async def forward(self, q: dns.message.Message, client: str, tcp: bool) -> bytes:
        """Ask the upstream; the answer leaves fitted to the client's transport."""
        assert self.upstream is not None
        self.inflight += 1
        try:
            r = await dns.asyncquery.udp(q, self.upstream, timeout=2.0)
            if r.flags & dns.flags.TC:  # retry over TCP; ``finish`` fits it to the client
                r = await dns.asyncquery.tcp(q, self.upstream, timeout=2.0)
            if self.responder.needs_synthesis(q, r):
                aq = dns.message.make_query(q.question[0].name, dns.rdatatype.A)
                ar = await dns.asyncquery.udp(aq, self.upstream, timeout=2.0)
                r = self.responder.synthesize(q, ar)
        except Exception as e:  # upstream trouble becomes SERVFAIL, never a crash
            log.debug("dns: upstream %s: %s", self.upstream, e)
            self.responder.count("upstream_failed")
            r = self.responder.servfail(q)
        finally:
            self.inflight -= 1
        try:
            return self.responder.finish(q, r, tcp)[0]
        except Exception as e:  # an upstream answer we cannot re-encode
            log.debug("dns: upstream answer for %s: %s", client, e)
            self.responder.count("upstream_failed")
            return self.responder.finish(q, self.responder.servfail(q), tcp)[0]

    async def _serve_tcp(self, conn: socket.socket, cid: int) -> None:
        client = self.tcp.conns[cid].client if cid in self.tcp.conns else ""
        writer: asyncio.StreamWriter | None = None
        idle = self.tcp.idle_timeout
        try:
            if self.starting.pop(cid, None) is None:  # evicted (and closed) before it ran
                return
            reader, writer = await asyncio.open_connection(sock=conn)
            if cid not in self.tcp.conns:  # evicted while it started
                return
            self.writers[cid] = writer
            while True:
                # the whole query, length and body, within the idle timeout (slow senders too)
                wire = await asyncio.wait_for(_read_message(reader), idle)
                self.tcp.busy(cid, time.monotonic())
                out = await self.answer(wire, client, tcp=True)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await asyncio.wait_for(writer.drain(), idle)
                self.tcp.idle(cid, time.monotonic())
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.tcp.release(cid)
            self.writers.pop(cid, None)
            if writer is not None:
                writer.close()
            else:
                conn.close()

    def close(self) -> None:
        for t in self.transports:
            t.close()
        loop = asyncio.get_event_loop()
        for ls in self.listeners:
            loop.remove_reader(ls.fileno())
            ls.close()
        self.listeners.clear()
        for w in list(self.writers.values()):
            w.close()
        self.writers.clear()
        for sock in self.starting.values():
            sock.close()
        self.starting.clear()


def _listen_tcp(addr: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    ls = socket.socket(family, socket.SOCK_STREAM)
    try:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        ls.bind((addr, port))
        ls.listen(TCP_BACKLOG)
        ls.setblocking(False)
    except OSError:
        ls.close()
        raise
    return ls


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    """One RFC 1035 §4.2.2 message: a two-byte length, then that many bytes."""
    head = await reader.readexactly(2)
    return await reader.readexactly(struct.unpack("!H", head)[0])


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, svc: DnsService) -> None:
        self.svc = svc
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(
        self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]
    ) -> None:
        d = self.svc.decide(data, addr[0])
        if d.kind == "answer" and self.transport is not None:
            self.transport.sendto(d.wire, addr)
        elif d.kind == "forward" and d.query is not None:
            t = asyncio.get_running_loop().create_task(self._reply(d.query, addr))
            self.svc.tasks.add(t)
            t.add_done_callback(self.svc.tasks.discard)

    def error_received(self, exc: Exception) -> None:  # ICMP errors from earlier sends
        log.debug("dns: udp: %s", exc)

    async def _reply(
        self, q: dns.message.Message, addr: tuple[str, int] | tuple[str, int, int, int]
    ) -> None:
        out = await self.svc.forward(q, addr[0], tcp=False)
        if self.transport is not None:
            self.transport.sendto(out, addr)
