"""The router's DNS adapter: UDP and TCP listeners around the sans-I/O
``dns.responder`` core, forwarding to the upstream resolver.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
import time
from typing import cast

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype

from ..dns.responder import Responder

log = logging.getLogger("v6mostly.router")


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
