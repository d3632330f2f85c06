"""The router's Router Advertisement adapter: the RA built from the site file and
the ICMPv6 socket around the sans-I/O ``ra.advertiser`` core.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from ..errors import V6mostlyError
from ..ra.advertiser import Advertiser, default_pref64_lifetime
from ..ra.options import Pref64, Prefix, Route, RouterAdvert, router_solicit_invalid
from ..site_config import InterfaceConfig

log = logging.getLogger("v6mostly.router")

IPV6_RECVPKTINFO = 49
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
IPV6_PKTINFO = 50
IPV6_JOIN_GROUP = 20
IPV6_MULTICAST_HOPS = 18
IPV6_UNICAST_HOPS = 16
IPV6_MULTICAST_LOOP = 19
ICMP6_FILTER = 1
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"


# -- Router Advertisements ------


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


@dataclass
class RaInterface:
    name: str
    index: int
    adv: Advertiser
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    solicits: int = 0
    errors: int = 0
    #: Router Solicitations discarded (RFC 4861 §6.1.1), by reason.
    invalid: Counter[str] = field(default_factory=Counter)


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
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
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
                data, anc, _f, addr = self.sock.recvmsg(
                    1500, socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            idx = addr[3] if len(addr) > 3 else 0
            hops: int | None = None
            for level, kind, cdata in anc:
                if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(cdata) >= 20:
                    idx = struct.unpack_from("=I", cdata, 16)[0]
                elif level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT and len(cdata) >= 4:
                    hops = struct.unpack_from("=i", cdata)[0]
            rif = self.ifs.get(idx)
            if rif is None:
                continue
            why = router_solicit_invalid(data, hops, addr[0])
            if why is not None:
                rif.invalid[why] += 1
                if rif.invalid.total() in (1, 10, 100, 1000, 10000):
                    log.warning(
                        "%s: invalid Router Solicitation from %s (%s, RFC 4861 §6.1.1); "
                        "%d discarded so far",
                        rif.name,
                        addr[0],
                        why,
                        rif.invalid.total(),
                    )
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
