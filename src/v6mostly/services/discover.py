"""``v6mostly pref64 discover``: learn the network's Pref64 as a host (or a CLAT) would.

RFC 8781: send a Router Solicitation and read the PREF64 option of the Router
Advertisements that come back (parsed by the same codec the router writes
with). RFC 7050 as the fallback: ask ``ipv4only.arpa`` AAAA and find where
192.0.0.170/171 sit in the answers (RFC 7050 §3).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from dataclasses import dataclass

from ..addr.rfc6052 import Pref64
from ..dns.responder import WELL_KNOWN_V4
from ..errors import AddressError
from ..ra.options import RaError, RouterAdvert

ICMP6_FILTER = 1
IPV6_MULTICAST_HOPS = 18
WKA = tuple(a.packed for a in WELL_KNOWN_V4)  # RFC 7050 §2.2: 192.0.0.170/171


@dataclass
class Found:
    prefix: ipaddress.IPv6Network
    lifetime: int | None
    source: str  # "RA from fe80::..." or "ipv4only.arpa via ..."


def from_router_advertisements(ifname: str, timeout: float) -> list[Found]:
    idx = socket.if_nametoindex(ifname)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        filt = [0xFFFFFFFF] * 8
        filt[134 >> 5] &= ~(1 << (134 & 31))  # pass Router Advertisements only
        s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *filt))
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255)
        s.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0]), ("ff02::2", 0, 0, idx))  # RFC 4861 §4.1
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            r, _, _ = select.select([s], [], [], left)
            if not r:
                return []
            data, addr = s.recvfrom(2048)
            if len(addr) > 3 and addr[3] not in (0, idx):
                continue
            try:
                ra = RouterAdvert.from_wire(data)
            except RaError:
                continue
            if ra.pref64:
                return [Found(p.prefix, p.lifetime, f"RA from {addr[0]}") for p in ra.pref64]
    finally:
        s.close()


def from_ipv4only_arpa(server: str | None, timeout: float) -> list[Found]:
    """RFC 7050 §3: the Pref64 is what surrounds 192.0.0.170/171 in the AAAA answers."""
    import dns.resolver

    res = dns.resolver.Resolver(configure=server is None)
    if server is not None:
        res.nameservers = [server]
    res.lifetime = timeout
    try:
        ans = res.resolve("ipv4only.arpa.", "AAAA")
    except Exception:  # NXDOMAIN, timeout, no server: "not found", said by the caller
        return []
    out: list[Found] = []
    for rd in ans:
        a = ipaddress.IPv6Address(rd.address).packed
        for n in (96, 64, 56, 48, 40, 32):
            if embedded_ipv4(a, n) in WKA:
                net = ipaddress.IPv6Network((a, n), strict=False)
                out.append(Found(net, None, f"ipv4only.arpa via {server or 'the system resolver'}"))
                break
    uniq = {str(f.prefix): f for f in out}
    return list(uniq.values())


def embedded_ipv4(a: bytes, n: int) -> bytes | None:
    """The IPv4 address at prefix length ``n`` of ``a`` (RFC 6052 §2.2), or None when
    ``a`` cannot be an address under a Pref64::/n (e.g. a non-zero u-octet at /96)."""
    try:
        p = Pref64(ipaddress.IPv6Network((a, n), strict=False))
    except AddressError:
        return None
    return p.extract_unchecked(a)
