"""Issue 8 hardening of the SIIT core, packet by packet, with the bytes.

Expected packets are built with scapy (the oracle) and compared byte for byte;
IDs the translator chooses are copied into the expectation first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPerror,
    IPv6,
    IPv6ExtHdrDestOpt,
    Raw,
    UDPerror,
    raw,
)

from v6mostly.config import load
from v6mostly.siit.ratelimit import IcmpRateLimiter
from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig
from v6mostly.siit.verdict import Drop, Stats

# The reproduction: pool6 64:ff9b::/96, EAM 2001:db8::2/128 = 172.16.0.2/32.
EAM = [("2001:db8::2/128", "172.16.0.2/32"), ("2001:db8::3/128", "172.16.0.3/32")]
OWN4, OWN6 = "172.16.0.254", "2001:db8:ff::1"


def make(**kw: object) -> Translator:
    cfg = TranslatorConfig(
        pool6="64:ff9b::/96", eam=list(EAM), ipv4_address=OWN4, ipv6_address=OWN6
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return Translator(cfg)


def with_id(expected: bytes, got: bytes) -> bytes:
    """Copy the IPv4 Identification the translator chose into a scapy expectation."""
    p = IP(expected)
    p.id = int.from_bytes(got[4:6], "big")
    del p.chksum
    return raw(p)


# -- 1. hairpinning (RFC 7757 §4.3) ----------------------------------------------------


def test_eam_destination_is_not_hairpinned() -> None:
    xl = make()
    pkt = raw(IPv6(src="64:ff9b::9ff:ffff", dst="2001:db8::2") / UDP(sport=7, dport=9) / b"hi")
    v = xl.translate(pkt)
    assert v.drop is None and len(v.packets) == 1
    want = raw(IP(src="9.255.255.255", dst="172.16.0.2", ttl=64) / UDP(sport=7, dport=9) / b"hi")
    assert v.packets[0] == with_id(want, v.packets[0])
    assert xl.stats.hairpinned == 0


def test_clat_return_traffic_reaches_the_clat_address() -> None:
    """The CLAT's return traffic: Pref64+IPv4 -> the CLAT address, which is in the EAM."""
    xl = Translator(
        TranslatorConfig(pool6="64:ff9b::/96", eam=[("2001:db8:c1a7::1/128", "192.0.0.1/32")])
    )
    pkt = raw(IPv6(src="64:ff9b::808:808", dst="2001:db8:c1a7::1") / ICMPv6EchoReply(id=5))
    v = xl.translate(pkt)
    assert v.drop is None
    out = IP(v.packets[0])
    assert (out.src, out.dst, out[ICMP].type) == ("8.8.8.8", "192.0.0.1", 0)


def test_pool6_destination_of_an_eam_node_is_hairpinned() -> None:
    # A network-specific prefix: the Well-Known one cannot carry 172.16/12 (RFC 6052 §3.1).
    xl = make(pool6="3fff:6464::/96")
    pkt = raw(IPv6(src="2001:db8::2", dst="3fff:6464::ac10:3") / UDP(sport=7, dport=9) / b"hp")
    v = xl.translate(pkt)
    assert v.drop is None and len(v.packets) == 1
    # Source through pool6 only, destination through the EAM (RFC 7757 §4.3).
    want = raw(IPv6(src="3fff:6464::ac10:2", dst="2001:db8::3") / UDP(sport=7, dport=9) / b"hp")
    assert v.packets[0] == want
    assert xl.stats.hairpinned == 1


def test_icmp_error_towards_an_eam_destination_is_not_hairpinned() -> None:
    xl = make()
    inner = IPv6(src="2001:db8::2", dst="64:ff9b::909:909", hlim=3) / UDP(sport=7, dport=9)
    pkt = raw(IPv6(src="64:ff9b::9ff:ffff", dst="2001:db8::2") / ICMPv6TimeExceeded() / inner)
    v = xl.translate(pkt)
    assert v.drop is None
    out = IP(v.packets[0])
    assert (out.src, out.dst, out[ICMP].type) == ("9.255.255.255", "172.16.0.2", 11)
    assert xl.stats.hairpinned == 0


# -- 2. rate limit of the translator's own ICMP errors -----------------------------------


def test_token_buckets_on_a_virtual_clock() -> None:
    rl = IcmpRateLimiter(interval_ms=1000, burst=6, rate=1000, global_burst=50)
    a = b"\x01" * 16
    assert [rl.allow(a, 0.0) for _ in range(8)] == [True] * 6 + [False] * 2
    assert rl.allow(a, 0.5) is False
    assert rl.allow(a, 1.0) is True  # one token a second
    assert rl.allow(a, 1.0) is False
    assert sum(rl.allow(bytes([i]) * 4, 10.0) for i in range(100)) == 50  # the global cap
    assert rl.allow(b"\x09" * 4, 10.002) is True  # refilled at 1000/s
    off = IcmpRateLimiter(interval_ms=0, rate=0)
    assert all(off.allow(a, 0.0) for _ in range(1000))


def test_shared_destinations_take_only_from_the_global_bucket() -> None:
    """A PLAT's NAPT66 outer address stands for the whole site: 40 errors to it in one
    instant (40 clients' traceroutes) all pass, within the global burst of 50."""
    outer = bytes.fromhex("20010db8000200000000000000000064")
    rl = IcmpRateLimiter(
        interval_ms=1000, burst=6, rate=1000, global_burst=50, shared=frozenset({outer})
    )
    assert all(rl.allow(outer, 0.0) for _ in range(40))
    assert sum(rl.allow(outer, 0.0) for _ in range(40)) == 10  # the global cap still holds
    other = b"\x01" * 16
    assert [rl.allow(other, 5.0) for _ in range(8)] == [True] * 6 + [False] * 2


def test_plat_config_marks_the_napt66_outer_addresses_shared(tmp_path: Path) -> None:
    f = tmp_path / "plat.toml"
    f.write_text(
        '[translator]\npool6 = "64:ff9b::/96"\nipv4_address = "192.0.2.1"\n'
        'eam = [{ ipv6 = "2001:db8:2::64/128", ipv4 = "203.0.113.64/32" }]\n'
        '[napt66]\ninside = ["2001:db8:1::/64"]\n'
        'outer = [{ ipv6 = "2001:db8:2::64", ipv4 = "203.0.113.64" }]\n'
    )
    s = load(str(f), plat=True)
    assert s.translator.icmp_ratelimit_shared == ("2001:db8:2::64",)
    xl = Translator(s.translator, Stats())
    assert xl.ratelimit.shared == frozenset({bytes.fromhex("20010db8000200000000000000000064")})


def test_per_address_table_is_bounded() -> None:
    rl = IcmpRateLimiter(max_peers=16, rate=0)
    for i in range(1000):
        rl.allow(i.to_bytes(4, "big"), 0.0)
    assert len(rl._peers) <= 16


def test_ttl_flood_gives_the_bucket_allowance() -> None:
    xl = make()
    pkt = raw(IPv6(src="2001:db8::2", dst="64:ff9b::808:808", hlim=1) / UDP(sport=1, dport=2))
    sent = sum(bool(xl.translate(pkt, now=0.0).packets) for _ in range(1000))
    assert sent == 6
    assert xl.stats.icmp_errors_suppressed == 994
    assert xl.stats.drops[Drop.TTL_EXPIRED] == 1000
    assert len(xl.translate(pkt, now=1.0).packets) == 1  # a token a second
    # Normal traffic is untouched by the flood.
    ok = raw(IPv6(src="2001:db8::2", dst="64:ff9b::808:808") / UDP(sport=1, dport=2))
    assert xl.translate(ok, now=1.0).drop is None


def test_clock_is_read_only_for_errors() -> None:
    reads = []

    def clock() -> float:
        reads.append(1)
        return 0.0

    xl = Translator(TranslatorConfig(pool6="64:ff9b::/96", eam=EAM, ipv6_address=OWN6), clock=clock)
    xl.translate(raw(IPv6(src="2001:db8::2", dst="64:ff9b::808:808") / UDP()))
    assert reads == []
    xl.translate(raw(IPv6(src="2001:db8::2", dst="64:ff9b::808:808", hlim=1) / UDP()))
    assert reads == [1]


# -- 3. ICMP MTU values and the link MTU (RFC 7915 §4.2, §5.2) ---------------------------


def test_frag_needed_is_clamped_to_the_link_mtu() -> None:
    xl = make()
    xl.set_link_mtu(1500, 1500)
    inner = IP(src="172.16.0.2", dst="8.8.8.8", flags="DF") / UDP(sport=7, dport=9)
    pkt = raw(IP(src="8.8.4.4", dst="172.16.0.2") / ICMP(type=3, code=4, nexthopmtu=1600) / inner)
    v = xl.translate(pkt)
    assert IPv6(v.packets[0])[ICMPv6PacketTooBig].mtu == 1500  # not 1620
    xl.set_link_mtu(1400, 1400)
    assert IPv6(xl.translate(pkt).packets[0])[ICMPv6PacketTooBig].mtu == 1400


def test_packet_too_big_is_clamped_to_the_link_mtu() -> None:
    xl = make()
    xl.set_link_mtu(1500, 1500)
    inner = IPv6(src="2001:db8::2", dst="64:ff9b::808:808") / UDP(sport=7, dport=9)
    pkt = raw(
        IPv6(src="64:ff9b::808:404", dst="2001:db8::2") / ICMPv6PacketTooBig(mtu=1600) / inner
    )
    v = xl.translate(pkt)
    assert IP(v.packets[0])[ICMP].nexthopmtu == 1480  # not 1580


def test_gso_super_packets_skip_the_mtu_check() -> None:
    xl = make()
    xl.set_link_mtu(1500, 1500)
    big = raw(IP(src="8.8.8.8", dst="172.16.0.2", flags="DF") / TCP() / Raw(bytes(8000)))
    assert xl.translate(big).drop == Drop.PACKET_TOO_BIG
    xl.gso = True
    assert xl.translate(big).drop is None


# -- 4. addresses that must never be translated ------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "reason"),
    [
        ("172.16.0.2", "169.254.0.42", Drop.NOT_FORWARDABLE_DESTINATION),
        ("172.16.0.2", "127.0.0.1", Drop.NOT_FORWARDABLE_DESTINATION),
        ("172.16.0.2", "0.1.2.3", Drop.NOT_FORWARDABLE_DESTINATION),
        ("172.16.0.2", "240.0.0.1", Drop.NOT_FORWARDABLE_DESTINATION),
        ("172.16.0.2", "255.255.255.255", Drop.NOT_FORWARDABLE_DESTINATION),
        ("172.16.0.2", "224.0.0.1", Drop.MULTICAST),
        ("127.0.0.1", "172.16.0.2", Drop.NOT_FORWARDABLE_SOURCE),
        ("169.254.1.1", "172.16.0.2", Drop.NOT_FORWARDABLE_SOURCE),
        ("0.0.0.0", "172.16.0.2", Drop.NOT_FORWARDABLE_SOURCE),
        ("224.1.1.1", "172.16.0.2", Drop.NOT_FORWARDABLE_SOURCE),
        ("250.1.1.1", "172.16.0.2", Drop.NOT_FORWARDABLE_SOURCE),
    ],
)
def test_ipv4_addresses_never_translated(src: str, dst: str, reason: Drop) -> None:
    xl = make()
    for ttl in (64, 1):  # nor answered with Time Exceeded
        v = xl.translate(raw(IP(src=src, dst=dst, ttl=ttl) / UDP(sport=1, dport=2)))
        assert v.packets == [] and v.drop in (reason, Drop.TTL_EXPIRED)
    assert xl.stats.icmp_errors == [0, 0]


@pytest.mark.parametrize(
    ("src", "dst", "reason"),
    [
        ("2001:db8::2", "64:ff9b::a9fe:2a", Drop.NOT_FORWARDABLE_DESTINATION),
        ("2001:db8::2", "64:ff9b::7f00:1", Drop.NOT_FORWARDABLE_DESTINATION),
        ("2001:db8::2", "64:ff9b::f000:1", Drop.NOT_FORWARDABLE_DESTINATION),
        ("2001:db8::2", "64:ff9b::ffff:ffff", Drop.NOT_FORWARDABLE_DESTINATION),
        ("2001:db8::2", "64:ff9b::e000:1", Drop.MULTICAST),
        ("64:ff9b::a9fe:101", "2001:db8::2", Drop.NOT_FORWARDABLE_SOURCE),
        ("::1", "64:ff9b::808:808", Drop.NOT_FORWARDABLE_SOURCE),
        ("fe80::1", "64:ff9b::808:808", Drop.NOT_FORWARDABLE_SOURCE),
    ],
)
def test_ipv6_addresses_never_translated(src: str, dst: str, reason: Drop) -> None:
    xl = make()
    v = xl.translate(raw(IPv6(src=src, dst=dst) / UDP(sport=1, dport=2)))
    assert v.packets == [] and v.drop == reason


def test_inner_packet_with_a_link_local_address_is_dropped() -> None:
    xl = make()
    inner = IP(src="172.16.0.2", dst="169.254.0.42") / UDP(sport=7, dport=9)
    pkt = raw(IP(src="198.51.100.9", dst="172.16.0.2") / ICMP(type=3, code=3) / inner)
    v = xl.translate(pkt)
    assert v.packets == [] and v.drop == Drop.INNER_NOT_FORWARDABLE


# -- 5. packets to the translator's own addresses ----------------------------------------


def test_echo_to_own_ipv6_address_is_answered() -> None:
    xl = make()
    for hlim in (64, 1):  # a host accepts a packet for itself whatever its hop limit
        req = raw(
            IPv6(src="2001:db8::2", dst=OWN6, hlim=hlim)
            / ICMPv6EchoRequest(id=7, seq=3, data=b"x" * 8)
        )
        v = xl.translate(req)
        want = raw(
            IPv6(src=OWN6, dst="2001:db8::2", hlim=64) / ICMPv6EchoReply(id=7, seq=3, data=b"x" * 8)
        )
        assert v.packets == [want] and v.drop is None
    assert xl.stats.local_replies == 2
    assert sum(xl.stats.packets) == 0  # nothing translated


def test_echo_to_own_ipv4_address_is_answered() -> None:
    xl = make()
    req = raw(IP(src="8.8.8.8", dst=OWN4, ttl=50) / ICMP(type=8, id=7, seq=3) / b"abcd")
    v = xl.translate(req)
    want = raw(IP(src=OWN4, dst="8.8.8.8", ttl=64, id=0) / ICMP(type=0, id=7, seq=3) / b"abcd")
    assert v.packets == [want]


def test_udp_to_own_addresses_gets_port_unreachable() -> None:
    xl = make()
    pkt6 = raw(IPv6(src="2001:db8::2", dst=OWN6) / UDP(sport=5, dport=9) / b"q")
    v = xl.translate(pkt6)
    want6 = raw(IPv6(src=OWN6, dst="2001:db8::2", hlim=64) / ICMPv6DestUnreach(code=4) / pkt6)
    assert v.packets == [want6] and v.drop == Drop.TO_TRANSLATOR
    pkt4 = raw(IP(src="8.8.8.8", dst=OWN4) / UDP(sport=5, dport=9) / b"q")
    v = xl.translate(pkt4)
    want4 = raw(IP(src=OWN4, dst="8.8.8.8", ttl=64, id=0) / ICMP(type=3, code=3) / pkt4)
    assert v.packets == [want4] and v.drop == Drop.TO_TRANSLATOR


def test_other_protocols_to_own_addresses_get_protocol_unreachable() -> None:
    xl = make()
    pkt6 = raw(IPv6(src="2001:db8::2", dst=OWN6) / IPv6ExtHdrDestOpt(nh=253) / b"12345678")
    v = xl.translate(pkt6)
    # RFC 4443 §3.4 code 1, pointing at the Next Header field that names 253.
    want6 = raw(
        IPv6(src=OWN6, dst="2001:db8::2", hlim=64) / ICMPv6ParamProblem(code=1, ptr=40) / pkt6
    )
    assert v.packets == [want6]
    pkt4 = raw(IP(src="8.8.8.8", dst=OWN4, proto=253) / b"12345678")
    out = IP(xl.translate(pkt4).packets[0])
    assert (out.src, out.dst, out[ICMP].type, out[ICMP].code) == (OWN4, "8.8.8.8", 3, 2)


def test_own_address_answers_are_rate_limited_and_never_translated() -> None:
    xl = make()
    pkt = raw(IPv6(src="2001:db8::2", dst=OWN6) / UDP(sport=5, dport=9))
    assert sum(len(xl.translate(pkt, now=0.0).packets) for _ in range(50)) == 6
    assert xl.stats.icmp_errors_suppressed == 44


# -- 6. IPv4 Identification slices (RFC 6864 §4.1) ---------------------------------------


def test_id_slices_are_disjoint() -> None:
    pkt = raw(IPv6(src="2001:db8::2", dst="64:ff9b::808:808") / UDP(sport=1, dport=2))
    seen: list[set[int]] = []
    for index in range(3):
        xl = make(ip_id_slice=(index, 3), ip_id_seed=12345)
        ids = {int.from_bytes(xl.translate(pkt).packets[0][4:6], "big") for _ in range(30000)}
        lo, hi = index * 65536 // 3, (index + 1) * 65536 // 3
        assert all(lo <= i < hi for i in ids)
        assert len(ids) == min(30000, hi - lo)
        seen.append(ids)
    assert not (seen[0] & seen[1] or seen[1] & seen[2] or seen[0] & seen[2])


# -- 8. errors RFC 7915 §4.4 / §5.4 say the translator SHOULD send -----------------------


def test_untranslatable_ipv6_destination_gets_admin_prohibited() -> None:
    """RFC 7915 §5.4: "If the IPv6 packet is discarded, then the translator SHOULD send
    back an ICMPv6 error message to the original sender of the packet, unless the
    discarded packet is itself an ICMPv6 message. The ICMPv6 message, if sent, has a
    Type of 1 (Destination Unreachable) and a Code of 1 (Communication with Destination
    Administratively Prohibited)"."""
    xl = make()
    pkt = raw(IPv6(src="2001:db8::2", dst="2001:db8:dead::1") / UDP(sport=5, dport=9))
    v = xl.translate(pkt)
    want = raw(IPv6(src=OWN6, dst="2001:db8::2", hlim=64) / ICMPv6DestUnreach(code=1) / pkt)
    assert v.packets == [want] and v.drop == Drop.UNTRANSLATABLE_DESTINATION
    echo = raw(IPv6(src="2001:db8::2", dst="2001:db8:dead::1") / ICMPv6EchoRequest())
    assert xl.translate(echo).packets == []  # "unless ... itself an ICMPv6 message"
    mc = raw(IPv6(src="2001:db8::2", dst="ff02::1") / UDP())
    assert xl.translate(mc).packets == []


def test_untranslatable_ipv4_source_gets_admin_prohibited() -> None:
    """RFC 7915 §4.4: "If the IPv4 packet is discarded, then the translator SHOULD be able
    to send back an ICMPv4 error message to the original sender of the packet, unless
    the discarded packet is itself an ICMPv4 message. The ICMPv4 message, if sent, has a
    Type of 3 (Destination Unreachable) and a Code of 13 (Communication Administratively
    Prohibited)"."""
    xl = make()
    # 10.1.2.3 cannot be embedded in the Well-Known Prefix (RFC 6052 §3.1).
    pkt = raw(IP(src="10.1.2.3", dst="172.16.0.2") / UDP(sport=5, dport=9))
    v = xl.translate(pkt)
    want = raw(IP(src=OWN4, dst="10.1.2.3", ttl=64, id=0) / ICMP(type=3, code=13) / pkt)
    assert v.packets == [want] and v.drop == Drop.UNTRANSLATABLE_SOURCE
    ping = raw(IP(src="10.1.2.3", dst="172.16.0.2") / ICMP(type=8))
    assert xl.translate(ping).packets == []


# -- 9. inner failures have reasons of their own -----------------------------------------


def test_inner_failures_are_counted_as_such() -> None:
    xl = make()
    base = IP(src="198.51.100.9", dst="172.16.0.2") / ICMP(type=3, code=3)
    assert xl.translate(raw(base / b"not an ip packet....")).drop == Drop.INNER_MALFORMED
    inner = IPerror(src="172.16.0.2", dst="10.9.9.9") / UDPerror(sport=7, dport=9)
    assert xl.translate(raw(base / inner)).drop == Drop.INNER_UNTRANSLATABLE_DESTINATION
    inner6 = IPv6(src="2001:db8::2", dst="2001:db8:dead::1") / UDP()
    err6 = raw(IPv6(src="64:ff9b::808:808", dst="2001:db8::2") / ICMPv6DestUnreach() / inner6)
    assert xl.translate(err6).drop == Drop.INNER_UNTRANSLATABLE_DESTINATION


def test_translate_into_answers_own_address_in_place_api() -> None:
    xl = make()
    req = raw(IPv6(src="2001:db8::2", dst=OWN6) / ICMPv6EchoRequest())
    buf = bytearray(HEADROOM) + req
    s, n = xl.translate_into(buf, HEADROOM, len(buf))
    assert (s, n) == (-1, 1) and len(xl.pending) == 1


def test_clat_delivers_hop_limit_one_to_the_host() -> None:
    """A CLAT's IPv4 side is the host itself: an IPv6 packet arriving with hop limit 1
    is delivered (TTL 1 reaches the local stack), not expired."""
    xl = Translator(
        TranslatorConfig(
            pool6="64:ff9b::/96",
            eam=[("2001:db8:1::c1a7/128", "192.0.0.1/32")],
            expire_hop_limit_6to4=False,
        )
    )
    pkt = raw(IPv6(src="64:ff9b::808:808", dst="2001:db8:1::c1a7", hlim=1) / UDP(sport=53, dport=9))
    v = xl.translate(pkt)
    assert v.drop is None and IP(v.packets[0]).ttl == 1 and IP(v.packets[0]).dst == "192.0.0.1"
    assert make().translate(pkt).drop == Drop.TTL_EXPIRED  # a router-like translator expires it
