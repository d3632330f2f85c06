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

from ..ra.options import RaError, RouterAdvert

ICMP6_FILTER = 1
IPV6_MULTICAST_HOPS = 18
WKA = (b"\xc0\x00\x00\xaa", b"\xc0\x00\x00\xab")


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
            if _embedded_at(a, n) in WKA:
                out.append(
                    Found(
                        ipaddress.IPv6Network((a[: n // 8] + bytes(16 - n // 8), n)),
                        None,
                        f"ipv4only.arpa via {server or 'the system resolver'}",
                    )
                )
                break
    uniq = {str(f.prefix): f for f in out}
    return list(uniq.values())


def _embedded_at(a: bytes, n: int) -> bytes:
    """The IPv4 address embedded at prefix length ``n`` (RFC 6052 §2.2, skipping the u-octet)."""
    if n == 96:
        return a[12:16]
    if n == 64:
        return a[9:13]
    k = n // 8
    head = a[k:8]
    return (head + a[9 : 9 + 4 - len(head)])[:4]
