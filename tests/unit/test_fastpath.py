"""The in-kernel fast path (linux/fastpath.py) against the pure-Python core, its reference.

The program is built with ``base = 14`` (``BPF_PROG_TEST_RUN`` hands a tc program the
Ethernet header first), loaded into the running kernel and run on each input: a packet
it translates (``TC_ACT_REDIRECT``) must come out as the core's translation, byte for
byte; a packet it leaves (``TC_ACT_UNSPEC``) must be unchanged, for the workers. Inputs:
Jool's corpus, the hypothesis generators of ``test_properties`` (as generated and
mutated), the fuzz mutator and the edge cases of the C path's differential test, through
every shared configuration with a /96 pool6, plain and as GSO super-packets. Then the
maps' contents (``tables``) and the cases the program must leave to the workers.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    raw,
)

from tests.unit.test_properties import v4_packets, v6_packets
from tests.unit.xlat_cases import C4, C6, CONFIGS, S4, S6, edge_packets, mutated
from v6mostly.linux import fastpath
from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig
from v6mostly.wire.checksum import checksum

TC_ACT_REDIRECT = 7
#: BPF_PROG_TEST_RUN takes a packet of at most a page, less its head- and tailroom.
MAX_TEST_PACKET = 3000


class Twin:
    """The program for one configuration and the pure-Python translator it must match."""

    def __init__(self, kw: dict[str, Any] | Translator, mtu: int = 1500) -> None:
        if isinstance(kw, Translator):
            self.xl = kw
        else:
            self.xl = Translator(TranslatorConfig(**kw))
            if "ipv6_mtu" not in kw:
                self.xl.set_link_mtu(mtu, mtu)
        fast = fastpath.build(self.xl, ifindex=1, base=14)
        assert not isinstance(fast, str), fast
        self.fast = fast
        self.translated = 0
        self.inputs = 0

    def check(self, pkt: bytes, gso_size: int = 0) -> bool:
        """Run both on ``pkt``; True when the fast path translated it."""
        pkt = pkt[:MAX_TEST_PACKET]
        if len(pkt) < (40 if pkt[:1] >= b"\x60" else 20):
            return False  # never routed; BPF_PROG_TEST_RUN refuses it as IPv4 or IPv6
        self.inputs += 1
        ret, out = self.fast.test_run(pkt, gso_size)
        buf = bytearray(HEADROOM) + pkt
        self.xl.gso = bool(gso_size)
        try:
            s, e = self.xl.translate_python(buf, HEADROOM, len(buf))
        finally:
            self.xl.gso = False
            self.xl.pending.clear()
        if ret == TC_ACT_REDIRECT:
            assert s >= 0, (pkt.hex(), gso_size)
            assert out == same_id(bytes(buf[s:e]), out), (pkt.hex(), gso_size)
            self.translated += 1
            return True
        assert ret == fastpath.TC_ACT_UNSPEC, (ret, pkt.hex())
        assert out == pkt, pkt.hex()
        return False

    def close(self) -> None:
        self.fast.close()


def same_id(want: bytes, got: bytes) -> bytes:
    """``want`` (the core's IPv4 translation of an IPv6 packet) with ``got``'s
    Identification and the header checksum made right again: the fast path draws the
    Identification from its own counter (RFC 6864 §4.1), the core from its slice."""
    if want[:1] != b"\x45" or len(got) < 20:
        return want
    h = bytearray(want[:20])
    h[4:6] = got[4:6]
    h[10:12] = b"\0\0"
    h[10:12] = checksum(bytes(h)).to_bytes(2, "big")
    return bytes(h) + want[20:]


FAST_CONFIGS = [n for n, kw in CONFIGS.items() if kw.get("pool6")]
_TWINS: dict[str, Twin] = {}


def twin(name: str) -> Twin:
    if name not in _TWINS:
        _TWINS[name] = Twin(CONFIGS[name])
    return _TWINS[name]


def every_twin(pkt: bytes) -> None:
    for name in FAST_CONFIGS:
        t = twin(name)
        t.check(pkt)
        t.check(pkt, gso_size=1000)
        t.check(pkt, gso_size=1400)


def test_the_configurations_cover_the_program() -> None:
    assert {"properties", "wkp", "wkp_dec_reset", "p32", "p40", "p48", "p56", "p64"} <= set(
        FAST_CONFIGS
    )
    assert fastpath.build(Translator(TranslatorConfig(**CONFIGS["eam_only"])), 1) == "no pool6"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(v4_packets(), v6_packets()))
def test_generated_packets(pkt: bytes) -> None:
    every_twin(pkt)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    v4_packets(),
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), min_size=1, max_size=4),
    st.booleans(),
    st.integers(-8, 8),
)
def test_mutated_packets(pkt: bytes, pokes: list[tuple[int, int]], fix: bool, cut: int) -> None:
    every_twin(mutated(pkt, pokes, fix, cut))


def test_generated_packets_are_mostly_translated() -> None:
    """Not a vacuous comparison: the generators' TCP and UDP go through the program."""
    t = Twin(CONFIGS["properties"])
    rng = random.Random(7915)
    for _ in range(300):
        kind = rng.choice([TCP(sport=rng.randrange(65536), flags="A"), UDP(sport=53, dport=9)])
        src = str(ipaddress.IPv4Address(rng.randrange(0x01000000, 0xDF000000)))
        pkt = IP(src=src, dst=f"203.0.113.{rng.randrange(1, 255)}", tos=rng.randrange(256))
        t.check(raw(pkt / kind / bytes(rng.randrange(0, 1400))))
    assert t.translated > 250, t.translated  # 127/8 and 169.254/16 are the workers'
    assert fastpath_counters(t) == t.translated
    t.close()


def fastpath_counters(t: Twin) -> int:
    return t.fast.counters()[0]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    v6_packets(),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-8, 8),
)
def test_mutated_ipv6_packets(pkt: bytes, pokes: list[tuple[int, int]], cut: int) -> None:
    every_twin(mutated(pkt, pokes, False, cut))


def test_generated_ipv6_packets_are_mostly_translated() -> None:
    """The IPv6-to-IPv4 program (linux/fastpath6) takes the common TCP and UDP: from an
    EAM'd client to pool6, as after NAPT66."""
    t = Twin(CONFIGS["properties"])
    rng = random.Random(6877)
    for _ in range(300):
        kind = rng.choice([TCP(sport=rng.randrange(65536), flags="A"), UDP(sport=53, dport=9)])
        dst = ipaddress.IPv6Address("2001:db8:46::") + rng.randrange(0x01000000, 0xDF000000)
        pkt = IPv6(src=f"2001:db8:64::{rng.randrange(256):x}", dst=str(dst))
        pkt.tc, pkt.hlim = rng.randrange(256), rng.randrange(2, 256)
        t.check(raw(pkt / kind / bytes(rng.randrange(0, 1400))))
    assert t.translated > 200, t.translated  # private and special IPv4 are the workers'
    assert fastpath_counters(t) == t.translated
    t.close()


def test_fuzz_mutator() -> None:
    from harness import mutate, seeds  # tests/fuzz (tests/conftest.py)

    rng = random.Random(13)
    pool = [*seeds(), raw(IP(src="8.8.8.8", dst=C4) / UDP(sport=1, dport=2) / (b"x" * 30))]
    t = twin("properties")
    for _ in range(5000):
        data = mutate(rng, rng.choice(pool), pool)
        t.check(data, gso_size=rng.choice((0, 0, 600, 1400)))


def test_jool_corpus() -> None:
    from corpus import load_manifest, translator_for  # tests/conformance

    try:
        base, manifest = load_manifest()
    except FileNotFoundError:
        pytest.skip("Jool's SIIT corpus not found (V6MOSTLY_CONFORMANCE)")
    translated = cases = 0
    for case in manifest["cases"]:
        xl = translator_for(case, manifest["topology"])
        if xl.pool6 is None:
            continue
        cases += 1
        t = Twin(xl)
        for name in [case["send"], *case["expect"]]:
            pkt = (base / name).read_bytes()
            translated += t.check(pkt) + t.check(pkt, gso_size=1000)
        t.close()
    assert cases > 100 and translated > 20, (cases, translated)


def test_edge_cases() -> None:
    for pkt in edge_packets():
        every_twin(pkt)


# -- what the program takes, and what it leaves to the workers ------------------------------


def test_the_common_packets_are_taken() -> None:
    t = Twin(CONFIGS["properties"])
    taken = [
        IP(src=S4, dst=C4) / UDP(sport=53, dport=5353) / bytes(36),
        IP(src=S4, dst=C4, flags="DF") / TCP(flags="A") / bytes(1400),
        IP(src=S4, dst=C4, flags="DF", tos=0xB8) / TCP(flags="S", options=[("MSS", 1460)]),
        IP(src="8.8.8.8", dst=C4, ttl=2) / UDP(sport=443, dport=4433) / bytes(1200),
        IP(src=S4, dst="192.0.2.1") / UDP(sport=1, dport=2),  # destination through pool6
        IP(src="203.0.113.7", dst="8.8.8.8") / UDP(sport=1, dport=2),  # EAM'd source (CLAT)
    ]
    for p in taken:
        assert t.check(raw(p)), p.summary()
    # a TCP super-packet with DF: the kernel checks its segments after the translation
    assert t.check(raw(IP(src=S4, dst=C4, flags="DF") / TCP(flags="A") / bytes(2900)), 1440)
    # without DF, when each segment fits the lowest IPv6 MTU (1280)
    assert t.check(raw(IP(src=S4, dst=C4) / TCP(flags="A") / bytes(2900)), 1200)
    packets, octets, superpackets = t.fast.counters()
    assert (packets, superpackets) == (len(taken) + 2, 2)
    # skb->len: the IPv6 packet, and here the Ethernet header BPF_PROG_TEST_RUN adds
    assert octets == sum(len(raw(p)) + 20 for p in taken) + 2 * (2940 + 20) + 14 * packets
    # a rebuild (reload, new MTU) counts on in the same map, after the old one is gone
    again = fastpath.build(t.xl, ifindex=1, base=14, counters=t.fast.maps.counters)
    assert not isinstance(again, str), again
    t.close()
    assert again.counters() == (packets, octets, superpackets)
    ret, _ = again.test_run(raw(taken[0]))
    assert ret == TC_ACT_REDIRECT and again.counters()[0] == packets + 1
    again.close()


def test_the_rest_is_left_to_the_workers() -> None:
    t = Twin(CONFIGS["hairpin_own"])  # own addresses, TTL decrement
    udp = UDP(sport=5, dport=6) / b"data"
    left = {
        "ttl 1": raw(IP(src=S4, dst=C4, ttl=1) / udp),
        "icmp echo": raw(IP(src=S4, dst=C4) / ICMP(type=8)),
        "udp checksum 0": raw(IP(src=S4, dst=C4) / UDP(sport=5, dport=6, chksum=0) / b"x"),
        "fragment": raw(IP(src=S4, dst=C4, flags="MF") / udp),
        "options": raw(IP(src=S4, dst=C4, options=b"\x01\x01\x01\x00") / udp),
        "trailer": raw(IP(src=S4, dst=C4) / udp) + b"\0\0",
        "reserved destination": raw(IP(src=S4, dst="240.0.0.1") / udp),
        "multicast destination": raw(IP(src=S4, dst="224.0.0.5") / udp),
        "own address": raw(IP(src=S4, dst="198.51.100.1") / udp),
        "loopback source": raw(IP(src="127.0.0.1", dst=C4) / udp),
        "link-local source": raw(IP(src="169.254.1.1", dst=C4) / udp),
        "too big with DF": raw(IP(src=S4, dst=C4, flags="DF") / TCP() / bytes(1470)),
        "over the lowest mtu": raw(IP(src=S4, dst=C4) / TCP() / bytes(1300)),
        "sctp": raw(IP(src=S4, dst=C4, proto=132) / bytes(20)),
        "segment over the lowest mtu": raw(IP(src=S4, dst=C4) / TCP() / bytes(2900)),
    }
    for what, pkt in left.items():
        gso = 1400 if what.startswith("segment") else 0
        assert not t.check(pkt, gso), what
    bad = bytearray(raw(IP(src=S4, dst=C4) / udp))
    bad[10] ^= 1  # the header checksum
    assert not t.check(bytes(bad)), "bad header checksum"
    assert t.fast.counters() == (0, 0, 0)
    t.close()


def test_the_common_ipv6_packets_are_taken() -> None:
    t = Twin(CONFIGS["hairpin_own"])  # own addresses, TTL decrement
    taken = [
        IPv6(src=C6, dst=S6) / UDP(sport=5353, dport=53) / bytes(36),
        IPv6(src=C6, dst=S6, tc=0xB8) / TCP(flags="S", options=[("MSS", 1440)]),
        IPv6(src=C6, dst=S6, hlim=2) / TCP(flags="A") / bytes(1400),  # DF: over 1260
        IPv6(src=C6, dst="2001:db8:46::808:808") / UDP(sport=1, dport=2) / bytes(1200),
        IPv6(src=S6, dst=C6) / UDP(sport=1, dport=2),  # the source through pool6
    ]
    for p in taken:
        assert t.check(raw(p)), p.summary()
    # a super-packet goes whole, as the worker's write does
    assert t.check(raw(IPv6(src=C6, dst=S6) / TCP(flags="A") / bytes(2900)), 1440)
    packets, _, superpackets = t.fast.counters()
    assert (packets, superpackets) == (len(taken) + 1, 1)
    assert t.fast.counters(1)[0] == packets and t.fast.counters(0) == (0, 0, 0)
    t.close()


def test_the_rest_of_ipv6_is_left_to_the_workers() -> None:
    t = Twin(CONFIGS["hairpin_own"])
    udp = UDP(sport=5, dport=6) / b"data"
    left = {
        "hop limit 1": IPv6(src=C6, dst=S6, hlim=1) / udp,
        "icmpv6 echo": IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(),
        "udp checksum 0": IPv6(src=C6, dst=S6) / UDP(sport=5, dport=6, chksum=0) / b"x",
        "fragment header": IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment() / udp,
        "hop-by-hop": IPv6(src=C6, dst=S6) / IPv6ExtHdrHopByHop() / udp,
        "multicast destination": IPv6(src=C6, dst="ff02::1") / udp,
        "own address": IPv6(src=C6, dst="2001:db8:1c0:2:1::") / udp,
        "loopback ipv4 in pool6": IPv6(src=C6, dst="2001:db8:46::7f00:1") / udp,
        "hairpin (eam'd ipv4 in pool6)": IPv6(src=C6, dst="2001:db8:46::cb00:7107") / udp,
        "unmapped destination": IPv6(src=C6, dst="2001:db8:99::1") / udp,
        "unmapped source": IPv6(src="2001:db8:99::1", dst=S6) / udp,
        "link-local source": IPv6(src="fe80::1", dst=S6) / udp,
        "too big for ipv4": IPv6(src=C6, dst=S6) / TCP() / bytes(1470),
        "sctp": IPv6(src=C6, dst=S6, nh=132) / bytes(20),
    }
    for what, p in left.items():
        assert not t.check(raw(p)), what
    assert not t.check(raw(IPv6(src=C6, dst=S6) / udp) + b"\0\0"), "trailer"
    assert t.fast.counters() == (0, 0, 0)
    t.close()


def test_no_ipv6_program_where_the_core_would_decide_otherwise() -> None:
    from v6mostly.linux import fastpath6

    def why(**kw: Any) -> str:
        got = fastpath6.eam_map(Translator(TranslatorConfig(**kw)))
        assert isinstance(got, str)
        return got

    assert "overlaps pool6" in why(
        pool6="2001:db8:46::/96", eam=[("2001:db8:46::cb00:7100/120", "203.0.113.0/24")]
    )
    assert "illegal" in why(pool6="fe80::/96")
    assert "more than the map" in why(
        pool6="64:ff9b::/96", eam=[("2001:db8:64::/96", "10.0.0.0/8")]
    )
    xl = Translator(TranslatorConfig(**CONFIGS["hairpin_own"]))
    fast = fastpath.build(xl, ifindex=1, base=14)
    assert not isinstance(fast, str) and fast.prog6 is not None and fast.why6 == ""
    fast.close()
    eam = fastpath6.eam_map(xl)
    assert not isinstance(eam, str) and len(eam) == 256
    assert eam[ipaddress.IPv6Address("2001:db8:64::9").packed] == bytes([203, 0, 113, 9])


def test_tables() -> None:
    own = {"ipv4_address": "198.51.100.1"}
    xl = Translator(
        TranslatorConfig(pool6="64:ff9b::/96", eam=[("2001:db8:64::/120", "203.0.113.0/24")], **own)
    )
    tb = fastpath.tables(xl)
    assert not isinstance(tb, str)

    def source_ok(a: str) -> bool:
        n = int(ipaddress.IPv4Address(a)) >> 16
        return bool(tb.pool6_bitmap[n >> 3] >> (n & 7) & 1)

    assert source_ok("8.8.8.8") and source_ok("1.1.1.1")
    # RFC 6052 §3.1: the Well-Known Prefix embeds global addresses only
    for a in ("10.1.1.1", "192.168.1.1", "100.64.0.1", "127.0.0.1", "169.254.0.1", "224.0.0.1"):
        assert not source_ok(a), a
    assert not source_ok("203.0.113.50")  # EAM'd (and documentation)
    assert not source_ok("198.51.100.9")  # documentation: not global
    assert len(tb.destinations) == 256
    assert (
        tb.destinations[bytes([203, 0, 113, 9])] == ipaddress.IPv6Address("2001:db8:64::9").packed
    )
    nsp = fastpath.tables(Translator(TranslatorConfig(pool6="2001:db8:46::/96")))
    assert not isinstance(nsp, str) and nsp.destinations == {}
    n = int(ipaddress.IPv4Address("10.0.0.0")) >> 16
    assert nsp.pool6_bitmap[n >> 3] >> (n & 7) & 1  # a network-specific prefix takes 10/8


def test_udp_gro_forwarding_on_a_missing_interface_is_a_note() -> None:
    """linux/gro.py: an interface that is not there is reported, not raised."""
    from v6mostly.linux import gro

    changed, notes = gro.enable(["v6m-nonexistent0"])
    assert changed == [] and len(notes) == 1 and notes[0].startswith("v6m-nonexistent0: ")
    gro.disable(["v6m-nonexistent0"])  # never raises
