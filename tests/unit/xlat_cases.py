"""Translator configurations and packets shared by the differential tests of the C
fast path (test_accel_differential, test_accel_clat) and the in-kernel one
(test_fastpath): RFC 6052 prefix lengths, the Well-Known Prefix, EAM entries, the
translator's own addresses, TTL decrement, traffic-class reset, MTUs."""

from __future__ import annotations

import ipaddress
from typing import Any

from scapy.all import ICMP, IP, TCP, UDP, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, raw

OWN = {"ipv4_address": "198.51.100.1", "ipv6_address": "2001:db8:1c0:2:1::"}
PROPS = {"pool6": "2001:db8:46::/96", "eam": [("2001:db8:64::/120", "203.0.113.0/24")]}
CONFIGS: dict[str, dict[str, Any]] = {
    "properties": {**PROPS, "hairpinning": False},
    "hairpin_own": {**PROPS, **OWN, "decrement_ttl": True},
    "wkp": {"pool6": "64:ff9b::/96"},
    "wkp_dec_reset": {
        "pool6": "64:ff9b::/96",
        "decrement_ttl": True,
        "reset_traffic_class": True,
        "amend_udp_checksum_zero": False,
        "ipv6_mtu": 1400,
        "ipv4_mtu": 1300,
    },
    "p32": {"pool6": "2001:db8::/32", "expire_hop_limit_6to4": False},
    "p40": {
        "pool6": "2001:db8:100::/40",
        "eam": [("2001:db8:3::/120", "1.0.0.0/24"), ("2001:db8:2::/120", "10.0.0.0/24")],
        **OWN,
        "decrement_ttl": True,
        "ipv6_mtu": 1280,
        "ipv4_mtu": 1400,
        "lowest_ipv6_mtu": 1500,
    },
    "p48": {"pool6": "2001:db8:46::/48", "eam": [("2001:db8:64::10/128", "203.0.113.16/32")]},
    "p56": {"pool6": "2001:db8:46::/56", "ip_id_slice": (2, 3), "ip_id_seed": 21840},
    "p64": {"pool6": "2001:db8:46::/64", "eam": [("2001:db8:64::/112", "203.0.0.0/16")]},
    "eam_only": {
        "eam": [
            ("2001:db8:64::10/128", "203.0.113.16/32"),
            ("2001:db8:46::/96", "0.0.0.0/0"),
            ("2001:db8:64::/120", "203.0.113.0/24"),
        ],
        "ip_id_seed": 65534,
    },
}


def mutated(pkt: bytes, pokes: list[tuple[int, int]], fix: bool, cut: int) -> bytes:
    """``pkt`` with bytes overwritten (``pokes``: position, value), its IPv4 header
    checksum made right again (``fix``), and ``cut`` bytes cut off (< 0) or zeros added."""
    b = bytearray(pkt)
    for pos, value in pokes:
        if pos < len(b):
            b[pos] = value
    if fix:
        fix_ipv4_checksum(b)
    if cut < 0:
        del b[cut:]
    else:
        b += bytes(cut)
    return bytes(b)


def fix_ipv4_checksum(b: bytearray) -> None:
    if len(b) >= 20 and b[0] >> 4 == 4:
        b[10:12] = b"\0\0"
        s = int.from_bytes(b[:20], "big") % 0xFFFF
        b[10:12] = (0xFFFF - (s or 0xFFFF)).to_bytes(2, "big")


S4, C4, S6, C6 = "198.51.100.10", "203.0.113.16", "2001:db8:46::c633:640a", "2001:db8:64::10"


def edge_packets() -> list[bytes]:
    out = []
    for ttl in (0, 1, 2, 255):
        out.append(raw(IP(src=S4, dst=C4, ttl=ttl) / UDP(sport=1, dport=2) / b"abc"))
        out.append(raw(IPv6(src=C6, dst=S6, hlim=ttl) / UDP(sport=1, dport=2) / b"abc"))
    for size in (1180, 1232, 1240, 1252, 1260, 1272, 1280, 1300, 1380, 1400, 1480):
        for flags in ("DF", 0):
            out.append(raw(IP(src=S4, dst=C4, flags=flags) / TCP() / bytes(size - 40)))
        out.append(raw(IPv6(src=C6, dst=S6) / TCP() / bytes(size - 60)))
    udp0 = IP(src=S4, dst=C4) / UDP(sport=7, dport=9, chksum=0) / b"zero"
    out.append(raw(udp0))
    out.append(raw(IPv6(src=C6, dst=S6) / UDP(sport=7, dport=9, chksum=0) / b"zero"))
    # Echo replies whose ICMPv4 checksum comes out as the "other zero" (RFC 1624 corner).
    out.append(raw(IPv6(src=C6, dst=S6) / ICMPv6EchoReply(id=0, seq=0)))  # ICMPv4 sum: all zero
    for ident in range(0, 65536, 4099):
        out.append(raw(IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=ident, seq=0)))
        out.append(raw(IP(src=S4, dst=C4) / ICMP(type=0, id=ident, seq=0)))
    for tos in (0, 0x0F, 0xB8, 0xFF):
        out.append(raw(IP(src=S4, dst=C4, tos=tos) / TCP()))
        out.append(raw(IPv6(src=C6, dst=S6, tc=tos, fl=0x12345) / TCP()))
    for dst in ("8.8.8.8", "10.1.2.3", "100.64.0.1", "192.0.0.170", "192.88.99.1", "1.0.0.5"):
        out.append(raw(IP(src="9.9.9.9", dst=dst) / UDP() / b"x"))
        v6 = ipaddress.IPv6Address(
            int(ipaddress.IPv6Address("64:ff9b::")) + int(ipaddress.IPv4Address(dst))
        )
        out.append(raw(IPv6(src="2001:db8::1", dst=str(v6)) / UDP() / b"x"))
    out.append(raw(IP(src=S4, dst="198.51.100.1") / ICMP(type=8)))  # the translator itself
    out.append(raw(IPv6(src=C6, dst="2001:db8:46::cb00:7110") / UDP() / b"hairpin"))
    out.append(raw(IP(src=S4, dst=C4, options=b"\x01\x01\x01\x00") / UDP() / b"opt"))
    return out
