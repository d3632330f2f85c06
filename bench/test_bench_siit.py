"""ns per packet of the SIIT core (pytest-benchmark). Run with `make bench`.

Each benchmark copies the packet into a preallocated buffer (what a TUN read
does) and translates it in place. ``test_copy_only`` measures the copy alone
so it can be subtracted. ``test_round_trip_in_place`` needs no copy at all:
it translates IPv4 -> IPv6 -> IPv4 -> ... in the same buffer, which is the
whole in-place path; packets/s = 2 / its mean.
"""

from __future__ import annotations

import pytest
from scapy.all import ICMP, IP, TCP, UDP, ICMPv6EchoRequest, IPv6, Raw, raw

from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig

NEUTRAL = TranslatorConfig(pool6="64:ff9b::/96", hairpinning=False)
EAMCFG = TranslatorConfig(
    pool6="2001:db8:46::/96", eam=[("2001:db8:64::/120", "203.0.113.0/24")], hairpinning=False
)

S4, S6n = "8.8.8.8", "64:ff9b::808:808"
C4, C6n = "9.9.9.9", "64:ff9b::909:909"

PACKETS = {
    "tcp1500_4to6": raw(
        IP(src=S4, dst=C4, flags="DF") / TCP(sport=443, dport=40000, flags="A") / Raw(bytes(1460))
    ),
    "tcp1500_6to4": raw(
        IPv6(src=C6n, dst=S6n) / TCP(sport=40000, dport=443, flags="A") / Raw(bytes(1440))
    ),
    "udp64_4to6": raw(IP(src=S4, dst=C4) / UDP(sport=53, dport=5353) / Raw(bytes(36))),
    "udp64_6to4": raw(IPv6(src=C6n, dst=S6n) / UDP(sport=5353, dport=53) / Raw(bytes(16))),
    "icmp_echo_4to6": raw(IP(src=S4, dst=C4) / ICMP(type=0, id=1, seq=1) / Raw(bytes(56))),
    "icmp_echo_6to4": raw(IPv6(src=C6n, dst=S6n) / ICMPv6EchoRequest(id=1, seq=1, data=bytes(56))),
    "icmp_error_4to6": raw(
        IP(src=S4, dst=C4)
        / ICMP(type=3, code=3)
        / IP(src=C4, dst=S4)
        / UDP(sport=1, dport=2)
        / Raw(bytes(20))
    ),
}


def _bench(benchmark, cfg: TranslatorConfig, pkt: bytes) -> None:  # type: ignore[no-untyped-def]
    xl = Translator(cfg)
    buf = bytearray(65600)
    n = len(pkt)
    end = HEADROOM + n
    pending = xl.pending
    tr = xl.translate_into

    def one() -> None:
        buf[HEADROOM:end] = pkt
        tr(buf, HEADROOM, end)
        pending.clear()

    benchmark(one)
    xl.stats.drops  # noqa: B018
    assert sum(xl.stats.drops) == 0


@pytest.mark.parametrize("name", list(PACKETS))
def test_neutral_prefix(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    _bench(benchmark, NEUTRAL, PACKETS[name])


def _eam_packet(name: str) -> bytes:
    p = PACKETS[name]
    pkt = IP(p) if p[0] >> 4 == 4 else IPv6(p)
    if isinstance(pkt, IP) or pkt.version == 4:
        pkt.src, pkt.dst = "198.51.100.10", "203.0.113.16"
    else:
        pkt.src, pkt.dst = "2001:db8:64::10", "2001:db8:46::c633:640a"
    for layer in (pkt, pkt.payload):
        for f in ("chksum", "cksum"):
            if f in layer.fields:
                setattr(layer, f, None)
    return raw(pkt)


@pytest.mark.parametrize("name", ["tcp1500_4to6", "tcp1500_6to4", "udp64_4to6", "udp64_6to4"])
def test_eam_and_nonneutral_prefix(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    _bench(benchmark, EAMCFG, _eam_packet(name))


def test_copy_only(benchmark) -> None:  # type: ignore[no-untyped-def]
    buf = bytearray(65600)
    pkt = PACKETS["tcp1500_4to6"]
    end = HEADROOM + len(pkt)

    def one() -> None:
        buf[HEADROOM:end] = pkt

    benchmark(one)


def test_round_trip_in_place(benchmark) -> None:  # type: ignore[no-untyped-def]
    """4->6 then 6->4 in one buffer, no copies: two translations per call."""
    xl = Translator(NEUTRAL)
    pkt = PACKETS["udp64_4to6"]
    buf = bytearray(2048)
    buf[HEADROOM : HEADROOM + len(pkt)] = pkt
    state = [HEADROOM, HEADROOM + len(pkt)]
    tr = xl.translate_into

    def two() -> None:
        s, e = tr(buf, state[0], state[1])
        s, e = tr(buf, s, e)
        state[0], state[1] = s, e

    benchmark(two)
    assert bytes(buf[state[0] : state[1]])[20:] == pkt[20:]
