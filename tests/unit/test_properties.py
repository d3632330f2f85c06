"""Property tests: round trips and checksums, with scapy as the independent oracle."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, Raw, raw

from v6mostly.siit.translator import Translator, TranslatorConfig

POOL6 = "2001:db8:46::/96"


def translator() -> Translator:
    # Hairpinning off: translating a translation back is otherwise exactly RFC 7757 §4.3.
    return Translator(
        TranslatorConfig(
            pool6=POOL6, eam=[("2001:db8:64::/120", "203.0.113.0/24")], hairpinning=False
        )
    )


# Unicast, forwardable remotes: 127/8 and 169.254/16 are never translated (issue 8).
v4_remote = (
    st.integers(min_value=0x01000001, max_value=0xDFFFFFFE)
    .filter(lambda n: n >> 24 != 127 and n >> 16 != 0xA9FE)
    .map(lambda n: str(ipaddress.IPv4Address(n)))
)
v4_client = st.integers(min_value=1, max_value=254).map(lambda n: f"203.0.113.{n}")
payloads = st.binary(min_size=0, max_size=600)
ports = st.integers(min_value=0, max_value=65535)


@st.composite
def v4_packets(draw: st.DrawFn) -> bytes:
    src, dst = draw(v4_remote), draw(v4_client)
    kind = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    ip = IP(
        src=src, dst=dst, ttl=draw(st.integers(2, 255)), tos=draw(st.integers(0, 255)), flags="DF"
    )
    data = draw(payloads)
    if kind == "tcp":
        l4 = TCP(
            sport=draw(ports),
            dport=draw(ports),
            seq=draw(st.integers(0, 2**32 - 1)),
            flags=draw(st.sampled_from(["S", "A", "PA", "FA"])),
        )
    elif kind == "udp":
        l4 = UDP(sport=draw(ports), dport=draw(ports))
    else:
        l4 = ICMP(type=draw(st.sampled_from([0, 8])), id=draw(ports), seq=draw(ports))
    return raw(ip / l4 / Raw(data))


@st.composite
def v6_packets(draw: st.DrawFn) -> bytes:
    n = draw(v4_remote)
    dst = str(
        ipaddress.IPv6Address(
            int(ipaddress.IPv6Address("2001:db8:46::")) + int(ipaddress.IPv4Address(n))
        )
    )
    src = f"2001:db8:64::{draw(st.integers(1, 254)):x}"
    kind = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    ip = IPv6(src=src, dst=dst, hlim=draw(st.integers(2, 255)), tc=draw(st.integers(0, 255)))
    data = draw(payloads)
    if kind == "tcp":
        l4 = TCP(sport=draw(ports), dport=draw(ports), flags="A")
    elif kind == "udp":
        l4 = UDP(sport=draw(ports), dport=draw(ports))
    else:
        l4 = draw(st.sampled_from([ICMPv6EchoRequest, ICMPv6EchoReply]))(
            id=draw(ports), seq=draw(ports), data=data
        )
        data = b""
    return raw(ip / l4 / Raw(data))


def checksums_valid(pkt: bytes) -> bool:
    """Recompute every checksum with scapy (fields set to None) and compare bytes."""
    p = IP(pkt) if pkt[0] >> 4 == 4 else IPv6(pkt)
    layer = p
    while layer is not None and layer.__class__.__name__ not in ("Raw", "NoPayload"):
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                setattr(layer, name, None)
        layer = layer.payload
    return raw(p) == pkt


def strip_v4(pkt: bytes) -> bytes:
    """Zero the fields RFC 7915 may change on a 4->6->4 round trip (ID, flags, checksum)."""
    b = bytearray(pkt)
    b[4:8] = bytes(4)
    b[10:12] = bytes(2)
    return bytes(b)


def round_trip(pkt: bytes) -> bytes:
    """Translate there and back; each leg yields one packet whose checksums scapy accepts."""
    xl = translator()
    there = xl.translate(pkt)
    assert there.drop is None and len(there.packets) == 1
    assert checksums_valid(there.packets[0])
    back = xl.translate(there.packets[0])
    assert back.drop is None and len(back.packets) == 1
    assert checksums_valid(back.packets[0])
    return back.packets[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v4_packets())
def test_4to6to4_round_trip(pkt: bytes) -> None:
    back = round_trip(pkt)
    assert strip_v4(back) == strip_v4(pkt)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v6_packets())
def test_6to4to6_round_trip(pkt: bytes) -> None:
    back = round_trip(pkt)
    # Flow label is zeroed by RFC 7915 §4.1; everything else comes back.
    want = bytearray(pkt)
    want[1] &= 0xF0
    want[2:4] = b"\x00\x00"
    assert back == bytes(want)
