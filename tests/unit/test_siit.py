"""SIIT core vectors. Each test names the RFC 7915 section it checks.

Expected packets are built independently with scapy (checksums computed by
scapy) and compared byte for byte; a few are kept as hex constants.
"""

from __future__ import annotations

import pytest
from scapy.all import (
    GRE,
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
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrRouting,
    Raw,
    raw,
)

from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig
from v6mostly.siit.verdict import DROPPED, SLOW, Drop

C6 = "2001:db8:64::10"  # client, EAM 2001:db8:64::/120 = 203.0.113.0/24
C4 = "203.0.113.16"
S4 = "198.51.100.10"
S6 = "2001:db8:46::c633:640a"  # pool6 2001:db8:46::/96 (not checksum neutral)


def make(**kw: object) -> Translator:
    cfg = TranslatorConfig(
        pool6="2001:db8:46::/96",
        eam=[("2001:db8:64::/120", "203.0.113.0/24")],
        ipv4_address="192.0.2.1",
        ipv6_address="2001:db8:ff::1",
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return Translator(cfg)


def one(xl: Translator, pkt: bytes) -> bytes:
    v = xl.translate(pkt)
    assert v.drop is None, v.drop
    assert len(v.packets) == 1
    return v.packets[0]


# --- hex vectors ------------------------------------------------------------------

# RFC 7915 §5.1 (IPv6 -> IPv4 header) and §5.5 (UDP checksum update):
# UDP 2001:db8:64::10.5353 -> 2001:db8:46::c633:640a.53, "hello!!!", hop limit 63.
V6_UDP_IN = bytes.fromhex(
    "600000000010113f"
    "20010db8006400000000000000000010"
    "20010db80046000000000000c633640a"
    "14e900350010ff31"
    "68656c6c6f212121"
)
# 203.0.113.16 -> 198.51.100.10: DF clear (36 <= 1260), ID 1 (first generated),
# TTL 63 (copied: TUN mode), header checksum 157a, UDP checksum ff31 -> 1f4d.
V4_UDP_OUT = bytes.fromhex(
    "45000024000100003f11157acb007110c633640a14e9003500101f4d68656c6c6f212121"
)

# RFC 7915 §4.1 (IPv4 -> IPv6 header) and §4.5 (TCP checksum update):
# TCP SYN-ACK 198.51.100.10.80 -> 203.0.113.16.40000, TTL 50, ID 0x1234, "hi".
V4_TCP_IN = bytes.fromhex(
    "4500002a123400003206104cc633640acb00711000509c40000000070000000950122000247800006869"
)
# Traffic class = TOS 0, flow label 0, payload 22, next header 6, hop limit 50;
# TCP checksum 2478 -> 045d; no Fragment Header (DF=0 but only 62 bytes).
V6_TCP_OUT = bytes.fromhex(
    "6000000000160632"
    "20010db80046000000000000c633640a"
    "20010db8006400000000000000000010"
    "00509c400000000700000009501220000"
    "45d0000"
    "6869"
)


def test_hex_vector_udp_6to4() -> None:
    assert one(make(), V6_UDP_IN) == V4_UDP_OUT
    # The constants agree with an independent implementation.
    assert (
        raw(
            IP(src=C4, dst=S4, id=1, flags=0, ttl=63) / UDP(sport=5353, dport=53) / Raw(b"hello!!!")
        )
        == V4_UDP_OUT
    )


def test_hex_vector_tcp_4to6() -> None:
    assert one(make(), V4_TCP_IN) == V6_TCP_OUT
    exp = (
        IPv6(src=S6, dst=C6, hlim=50)
        / TCP(sport=80, dport=40000, flags="SA", seq=7, ack=9)
        / Raw(b"hi")
    )
    assert raw(exp) == V6_TCP_OUT


# --- RFC 7915 §4.1 / §5.1: IP headers ---------------------------------------------


def test_tcp_4to6_exact() -> None:
    inp = raw(
        IP(src=S4, dst=C4, ttl=50, tos=0xB8)
        / TCP(sport=80, dport=40000, flags="SA", seq=7, ack=9)
        / Raw(b"x" * 30)
    )
    exp = raw(
        IPv6(src=S6, dst=C6, hlim=50, tc=0xB8)
        / TCP(sport=80, dport=40000, flags="SA", seq=7, ack=9)
        / Raw(b"x" * 30)
    )
    assert one(make(), inp) == exp


def test_tcp_6to4_exact_df_over_1260() -> None:
    # RFC 7915 §5.1: DF is set when the IPv4 packet is larger than 1260 bytes.
    inp = raw(
        IPv6(src=C6, dst=S6, hlim=64) / TCP(sport=40000, dport=80, flags="A") / Raw(b"y" * 1300)
    )
    exp = raw(
        IP(src=C4, dst=S4, ttl=64, id=1, flags="DF")
        / TCP(sport=40000, dport=80, flags="A")
        / Raw(b"y" * 1300)
    )
    assert one(make(), inp) == exp


def test_traffic_class_copied_or_zeroed() -> None:
    inp = raw(IPv6(src=C6, dst=S6, tc=0x2E) / UDP(sport=1, dport=2))
    assert one(make(), inp)[1] == 0x2E
    assert one(make(reset_traffic_class=True), inp)[1] == 0


def test_flow_label_zero() -> None:
    inp = raw(IP(src=S4, dst=C4) / UDP(sport=1, dport=2))
    out = one(make(), inp)
    assert out[1] & 0x0F == 0 and out[2:4] == b"\x00\x00"


def test_ipv4_options_ignored() -> None:
    # RFC 7915 §4.1: IPv4 options are ignored (an expired source route is an option too).
    inp = raw(
        IP(src=S4, dst=C4, options=[b"\x01\x01\x01\x00"]) / UDP(sport=1, dport=2) / Raw(b"abc")
    )
    exp = raw(IPv6(src=S6, dst=C6) / UDP(sport=1, dport=2) / Raw(b"abc"))
    assert one(make(), inp) == exp


def test_unexpired_source_route_answered() -> None:
    # RFC 7915 §4.1: unexpired source route -> ICMPv4 3/5, not translated.
    lsrr = bytes([131, 7, 4]) + bytes([192, 0, 2, 9]) + b"\x00"
    v = make().translate(raw(IP(src=S4, dst=C4, options=[lsrr]) / UDP(sport=1, dport=2)))
    assert v.drop == Drop.SOURCE_ROUTE and v.icmp_error
    err = IP(v.packets[0])
    assert err[ICMP].type == 3 and err[ICMP].code == 5 and err.src == "192.0.2.1"


def test_other_protocols_untouched() -> None:
    # RFC 7915 §4.1: other protocols are translated at the IP layer only.
    body = raw(GRE() / Raw(b"payload-not-touched"))
    out = one(make(), raw(IP(src=S4, dst=C4, proto=47) / Raw(body)))
    assert out[6] == 47 and out[40:] == body
    back = one(make(), raw(IPv6(src=C6, dst=S6, nh=47) / Raw(body)))
    assert back[9] == 47 and back[20:] == body


def test_extension_headers_skipped() -> None:
    # RFC 7915 §5.1: hop-by-hop, destination options and a routing header with
    # Segments Left 0 are skipped.
    from scapy.all import IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop

    inp = raw(
        IPv6(src=C6, dst=S6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(addresses=[], segleft=0)
        / UDP(sport=1, dport=2)
        / Raw(b"z")
    )
    out = IP(one(make(), inp))
    assert out.proto == 17 and out[UDP].dport == 2 and bytes(out[Raw]) == b"z"


def test_segments_left_parameter_problem() -> None:
    # RFC 7915 §5.1: Segments Left != 0 -> ICMPv6 Parameter Problem pointing at it.
    inp = raw(
        IPv6(src=C6, dst=S6)
        / IPv6ExtHdrRouting(addresses=["2001:db8::1"], segleft=1)
        / UDP(sport=1, dport=2)
    )
    v = make().translate(inp)
    assert v.drop == Drop.SEGMENTS_LEFT and v.icmp_error
    err = IPv6(v.packets[0])
    assert err[ICMPv6ParamProblem].code == 0 and err[ICMPv6ParamProblem].ptr == 43


# --- TTL / Hop Limit ---------------------------------------------------------------


def test_hop_limit_one_time_exceeded_from_translator() -> None:
    v = make().translate(raw(IPv6(src=C6, dst=S6, hlim=1) / UDP(sport=1, dport=2)))
    assert v.drop == Drop.TTL_EXPIRED and v.icmp_error
    err = IPv6(v.packets[0])
    assert err.src == "2001:db8:ff::1" and err.dst == C6 and err[ICMPv6TimeExceeded].code == 0


def test_ttl_one_time_exceeded_v4() -> None:
    v = make().translate(raw(IP(src=S4, dst=C4, ttl=1) / UDP(sport=1, dport=2)))
    err = IP(v.packets[0])
    assert err.src == "192.0.2.1" and err[ICMP].type == 11


def test_ttl_copied_or_decremented() -> None:
    inp = raw(IP(src=S4, dst=C4, ttl=9) / UDP(sport=1, dport=2))
    assert one(make(), inp)[7] == 9
    assert one(make(decrement_ttl=True), inp)[7] == 8


# --- RFC 7915 §4.5 / §5.5: transport checksums --------------------------------------


def test_udp_zero_checksum_computed() -> None:
    inp = raw(IP(src=S4, dst=C4) / UDP(sport=123, dport=123, chksum=0) / Raw(b"ntp"))
    out = one(make(), inp)
    assert out == raw(IPv6(src=S6, dst=C6) / UDP(sport=123, dport=123) / Raw(b"ntp"))


def test_udp_zero_checksum_fragment_dropped() -> None:
    inp = raw(
        IP(src=S4, dst=C4, flags="MF") / UDP(sport=123, dport=123, chksum=0) / Raw(b"ntp-frag")
    )
    v = make().translate(inp)
    assert v.drop == Drop.UDP_ZERO_CHECKSUM_FRAGMENT
    assert IP(v.packets[0])[ICMP].code == 13


def test_udp_checksum_never_zero() -> None:
    # A UDP checksum that comes out 0x0000 must be sent as 0xffff (RFC 768, RFC 8200 §8.1).
    base = IPv6(src=C6, dst=S6) / UDP(sport=1000, dport=2000) / Raw(b"\x00\x00")
    # Choose the last payload word so that the translated IPv4 checksum is 0.
    v4 = raw(IP(src=C4, dst=S4) / UDP(sport=1000, dport=2000, chksum=0) / Raw(b"\x00\x00"))
    from v6mostly.wire.checksum import checksum, pseudo_sum_v4

    c = checksum(v4[20:], pseudo_sum_v4(v4[12:16], v4[16:20], 17, len(v4) - 20))
    word = (0xFFFF - ((~c) & 0xFFFF)) % 0xFFFF  # makes the one's-complement sum 0xffff
    word = (0xFFFF - (0xFFFF - c)) % 0xFFFF
    pkt = IPv6(
        raw(IPv6(src=C6, dst=S6) / UDP(sport=1000, dport=2000) / Raw(word.to_bytes(2, "big")))
    )
    out = one(make(), raw(pkt))
    assert out[26:28] == b"\xff\xff"
    assert IP(out)[UDP].chksum == 0xFFFF
    del base


def test_wrong_checksum_stays_wrong() -> None:
    good = raw(IP(src=S4, dst=C4) / TCP(sport=1, dport=2) / Raw(b"data"))
    bad = bytearray(good)
    bad[36] ^= 0x01  # flip a checksum bit
    out_good, out_bad = one(make(), good), one(make(), bytes(bad))
    assert out_good[40 + 16 : 40 + 18] != out_bad[40 + 16 : 40 + 18]
    assert IPv6(out_good)[TCP].chksum == IPv6(raw(IPv6(out_good)[IPv6].copy()))[TCP].chksum


def test_checksum_neutral_prefix_leaves_l4_checksum() -> None:
    # RFC 6052 §4.1: with 64:ff9b::/96 the TCP checksum is unchanged.
    xl = Translator(TranslatorConfig(pool6="64:ff9b::/96"))
    assert xl.neutral
    inp = raw(
        IPv6(src="64:ff9b::808:808", dst="64:ff9b::909:909") / TCP(sport=1, dport=2) / Raw(b"abc")
    )
    out = one(xl, inp)
    assert out[20 + 16 : 20 + 18] == inp[40 + 16 : 40 + 18]
    assert out == raw(IP(src="8.8.8.8", dst="9.9.9.9", id=1) / TCP(sport=1, dport=2) / Raw(b"abc"))


# --- RFC 7915 §4.2 / §5.2: ICMP -------------------------------------------------------


def test_echo_4to6_and_6to4() -> None:
    out = one(make(), raw(IP(src=S4, dst=C4) / ICMP(type=0, id=5, seq=6) / Raw(b"ping")))
    assert out == raw(IPv6(src=S6, dst=C6) / ICMPv6EchoReply(id=5, seq=6, data=b"ping"))
    out = one(make(), raw(IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=5, seq=6, data=b"ping")))
    assert out == raw(IP(src=C4, dst=S4, id=1) / ICMP(type=8, id=5, seq=6) / Raw(b"ping"))


@pytest.mark.parametrize(
    ("itype", "code"), [(13, 0), (15, 0), (17, 0), (4, 0), (5, 1), (3, 14), (12, 1)]
)
def test_untranslatable_icmpv4_dropped(itype: int, code: int) -> None:
    v = make().translate(raw(IP(src=S4, dst=C4) / ICMP(type=itype, code=code) / Raw(bytes(28))))
    assert v.drop == Drop.UNTRANSLATABLE_ICMP_TYPE and not v.packets


@pytest.mark.parametrize("itype", [130, 133, 134, 135, 136, 143])
def test_nd_and_mld_dropped(itype: int) -> None:
    v = make().translate(
        raw(IPv6(src=C6, dst=S6, nh=58) / Raw(bytes([itype, 0, 0, 0]) + bytes(20)))
    )
    assert v.drop in (Drop.UNTRANSLATABLE_ICMP_TYPE, Drop.BAD_ICMP_CHECKSUM)


def test_port_unreachable_4to6_inner_translated() -> None:
    # RFC 7915 §4.3: the inner packet is translated like an outer one, TTL kept.
    inner4 = IP(src=C4, dst=S4, ttl=33, id=1) / UDP(sport=5353, dport=9999) / Raw(b"q")
    out = one(make(), raw(IP(src=S4, dst=C4) / ICMP(type=3, code=3) / inner4))
    inner6 = IPv6(src=C6, dst=S6, hlim=33) / UDP(sport=5353, dport=9999) / Raw(b"q")
    assert out == raw(IPv6(src=S6, dst=C6) / ICMPv6DestUnreach(code=4) / inner6)


def test_frag_needed_to_packet_too_big() -> None:
    # RFC 7915 §4.2: MTU + 20, not below 1280; MTU 0 -> RFC 1191 plateau.
    inner = IP(src=C4, dst=S4) / TCP(sport=1, dport=2)
    for mtu, want in ((1400, 1420), (1000, 1280), (0, 1280)):
        out = IPv6(
            one(make(), raw(IP(src=S4, dst=C4) / ICMP(type=3, code=4, nexthopmtu=mtu) / inner))
        )
        assert out[ICMPv6PacketTooBig].mtu == want
    big = IP(src=C4, dst=S4, len=4000) / TCP(sport=1, dport=2)
    out = IPv6(one(make(), raw(IP(src=S4, dst=C4) / ICMP(type=3, code=4, nexthopmtu=0) / big)))
    assert out[ICMPv6PacketTooBig].mtu == 2022  # plateau 2002 + 20


def test_packet_too_big_to_frag_needed() -> None:
    inner = IPv6(src=S6, dst=C6) / TCP(sport=1, dport=2)
    out = IP(one(make(), raw(IPv6(src=C6, dst=S6) / ICMPv6PacketTooBig(mtu=1400) / inner)))
    assert out[ICMP].type == 3 and out[ICMP].code == 4 and out[ICMP].nexthopmtu == 1380


def test_parameter_problem_pointer_mapping() -> None:
    # RFC 7915 §5.2 Figure 6: IPv6 pointer 7 (Hop Limit) -> IPv4 pointer 8 (TTL).
    inner = IPv6(src=S6, dst=C6) / UDP(sport=1, dport=2)
    out = IP(one(make(), raw(IPv6(src=C6, dst=S6) / ICMPv6ParamProblem(code=0, ptr=7) / inner)))
    assert out[ICMP].type == 12 and out[ICMP].ptr == 8
    # RFC 7915 §4.2 Figure 3: IPv4 pointer 9 (Protocol) -> IPv6 pointer 6 (Next Header).
    inner4 = IP(src=C4, dst=S4) / UDP(sport=1, dport=2)
    out6 = IPv6(one(make(), raw(IP(src=S4, dst=C4) / ICMP(type=12, code=0, ptr=9) / inner4)))
    assert out6[ICMPv6ParamProblem].ptr == 6


def test_rfc6791_source_for_untranslatable_router() -> None:
    xl = make(pool6791_v4=["192.0.2.250"])
    inner = IPv6(src=S6, dst=C6) / TCP(sport=1, dport=2)
    out = IP(one(xl, raw(IPv6(src="2001:db8:ffff::1", dst=S6) / ICMPv6TimeExceeded() / inner)))
    assert out.src == "192.0.2.250" and out[ICMP].type == 11
    # Empty pool: the translator's own address.
    out = IP(one(make(), raw(IPv6(src="2001:db8:ffff::1", dst=S6) / ICMPv6TimeExceeded() / inner)))
    assert out.src == "192.0.2.1"


def test_icmp_error_size_limits() -> None:
    inner = IP(src=C4, dst=S4) / UDP(sport=1, dport=2) / Raw(bytes(1400))
    out = one(make(), raw(IP(src=S4, dst=C4) / ICMP(type=3, code=1) / inner))
    assert len(out) == 1280
    inner6 = IPv6(src=S6, dst=C6) / UDP(sport=1, dport=2) / Raw(bytes(1400))
    out = one(make(), raw(IPv6(src=C6, dst=S6) / ICMPv6DestUnreach(code=4) / inner6))
    assert len(out) == 576


# --- fragments and MTU -----------------------------------------------------------------


def test_df_clear_fragmented_to_lowest_mtu() -> None:
    # RFC 7915 §4: DF=0 and > 1280 after translation -> IPv6 fragments of at most 1280.
    data = bytes(range(256)) * 6
    v = make().translate(
        raw(IP(src=S4, dst=C4, id=0x1234, flags=0) / UDP(sport=1, dport=2) / Raw(data))
    )
    assert v.drop is None and len(v.packets) == 2
    f1, f2 = IPv6(v.packets[0]), IPv6(v.packets[1])
    assert len(v.packets[0]) <= 1280
    assert f1[IPv6ExtHdrFragment].id == 0x1234 and f1[IPv6ExtHdrFragment].m == 1
    assert f2[IPv6ExtHdrFragment].offset == (1280 - 48) // 8 and f2[IPv6ExtHdrFragment].m == 0
    # Reassembled payload equals a translated unfragmented packet's payload.
    whole = raw(IPv6(src=S6, dst=C6) / UDP(sport=1, dport=2) / Raw(data))
    assert v.packets[0][48:] + v.packets[1][48:] == whole[40:]


def test_df_set_too_big_frag_needed() -> None:
    xl = make(ipv6_mtu=1280)
    v = xl.translate(raw(IP(src=S4, dst=C4, flags="DF") / UDP(sport=1, dport=2) / Raw(bytes(1300))))
    assert v.drop == Drop.PACKET_TOO_BIG
    err = IP(v.packets[0])
    assert err[ICMP].type == 3 and err[ICMP].code == 4 and err[ICMP].nexthopmtu == 1260


def test_ipv6_too_big_for_ipv4_side() -> None:
    xl = make(ipv4_mtu=1400)
    v = xl.translate(raw(IPv6(src=C6, dst=S6) / UDP(sport=1, dport=2) / Raw(bytes(1400))))
    err = IPv6(v.packets[0])
    assert err[ICMPv6PacketTooBig].mtu == 1420 and err.src == "2001:db8:ff::1"


def test_fragment_fields_both_ways() -> None:
    # RFC 7915 §4.1: an IPv4 fragment gets a Fragment Header; §5.1.1 back.
    inp = raw(IP(src=S4, dst=C4, id=777, flags="MF", frag=10) / Raw(bytes(64)))
    out = one(make(), inp)
    f = IPv6(out)[IPv6ExtHdrFragment]
    assert (f.id, f.offset, f.m, f.nh) == (777, 10, 1, 0)
    back = IP(
        one(
            make(),
            raw(
                IPv6(src=C6, dst=S6)
                / IPv6ExtHdrFragment(id=0x10009, offset=3, m=0, nh=17)
                / Raw(bytes(16))
            ),
        )
    )
    assert (back.id, back.frag, back.flags.MF, back.flags.DF) == (9, 3, 0, 0)


# --- the in-place fast path -----------------------------------------------------------


def test_translate_into_in_place() -> None:
    xl = make()
    pkt = raw(IP(src=S4, dst=C4) / TCP(sport=80, dport=40000) / Raw(b"x" * 100))
    buf = bytearray(2048)
    buf[HEADROOM : HEADROOM + len(pkt)] = pkt
    s, e = xl.translate_into(buf, HEADROOM, HEADROOM + len(pkt))
    assert (s, e) == (0, HEADROOM + len(pkt))
    assert not xl.pending
    assert bytes(buf[s:e]) == raw(
        IPv6(src=S6, dst=C6) / TCP(sport=80, dport=40000) / Raw(b"x" * 100)
    )
    pkt6 = raw(IPv6(src=C6, dst=S6) / UDP(sport=1, dport=2) / Raw(b"y" * 10))
    buf[HEADROOM : HEADROOM + len(pkt6)] = pkt6
    s, e = xl.translate_into(buf, HEADROOM, HEADROOM + len(pkt6))
    assert s == HEADROOM + 20 and e == HEADROOM + len(pkt6)


def test_slow_and_drop_codes() -> None:
    xl = make()
    # RFC 7915 §5.4: no error about an ICMPv6 message, so a plain drop.
    pkt = raw(IPv6(src=C6, dst="2001:db8:dead::1") / ICMPv6EchoRequest())
    buf = bytearray(HEADROOM) + pkt
    assert xl.translate_into(buf, HEADROOM, len(buf)) == (DROPPED, Drop.UNTRANSLATABLE_DESTINATION)
    pkt = raw(IPv6(src=C6, dst=S6, hlim=1) / UDP(sport=1, dport=2))
    buf = bytearray(HEADROOM) + pkt
    s, n = xl.translate_into(buf, HEADROOM, len(buf))
    assert s == SLOW and n == 1 and len(xl.pending) == 1


def test_counters() -> None:
    xl = make()
    xl.translate(raw(IP(src=S4, dst=C4) / TCP(sport=1, dport=2)))
    xl.translate(raw(IPv6(src=C6, dst=S6) / UDP(sport=1, dport=2)))
    xl.translate(raw(IPv6(src=C6, dst="2001:db8:dead::1") / UDP(sport=1, dport=2)))
    d = xl.stats.as_dict()
    assert d["packets_4to6_tcp"] == 1 and d["packets_6to4_udp"] == 1
    assert d["octets_4to6_tcp"] == 60
    assert d["drop_untranslatable_destination"] == 1


@pytest.mark.parametrize(
    "pkt",
    [
        b"",
        b"\x45",
        b"\x45" + bytes(19),
        b"\x60" + bytes(39),
        b"\x70" * 40,
        bytes(100),
        b"\x4f" * 60,
    ],
)
def test_garbage_is_a_drop_not_an_exception(pkt: bytes) -> None:
    v = make().translate(pkt)
    assert v.drop is not None
