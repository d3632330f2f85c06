"""virtio_net_hdr handling: GSO super-packets with partial checksums, translated.

The oracle is scapy: after our translation, the partial checksum is finished
the way a NIC (or the kernel's software GSO) would finish it, and scapy must
agree with every resulting checksum.
"""

from __future__ import annotations

import random

import pytest
from scapy.all import IP, TCP, UDP, IPv6, Raw

from tests.sample_site import C4, C6, POOL6, S4, S6
from v6mostly.services.worker_loops import (
    W_CSUM,
    W_GSO,
    W_SEGS,
    W_SWSEG,
    W_VNET,
    WORKER_COUNTERS,
    handle_vnet_packet,
)
from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig
from v6mostly.wire import vnet
from v6mostly.wire.checksum import ones_add, ones_sum, pseudo_sum_v4, pseudo_sum_v6

XL_CFG = TranslatorConfig(pool6=POOL6, eam=[("2001:db8:64::/120", "203.0.113.0/24")])


def partial(pkt: bytes) -> tuple[bytes, int, int]:
    """The packet with its L4 checksum replaced by the kernel's partial sum."""
    b = bytearray(pkt)
    if b[0] >> 4 == 4:
        l4 = (b[0] & 15) * 4
        s = pseudo_sum_v4(bytes(b[12:16]), bytes(b[16:20]), b[9], len(b) - l4)
        proto = b[9]
    else:
        l4 = 40
        s = pseudo_sum_v6(bytes(b[8:24]), bytes(b[24:40]), b[6], len(b) - l4)
        proto = b[6]
    off = 16 if proto == 6 else 6
    b[l4 + off : l4 + off + 2] = s.to_bytes(2, "big")
    return bytes(b), l4, off


def frame(hdr: vnet.VnetHeader, pkt: bytes) -> tuple[bytearray, int]:
    buf = bytearray(HEADROOM) + hdr.to_wire() + pkt + bytearray(64)
    return buf, vnet.VNET_HDR_LEN + len(pkt)


def finish(out: bytes) -> tuple[vnet.VnetHeader, bytearray]:
    h = vnet.VnetHeader.from_wire(out)
    pkt = bytearray(out[vnet.VNET_HDR_LEN :])
    if h.flags & vnet.F_NEEDS_CSUM:
        vnet.finish_checksum(h, pkt, 0, len(pkt))
    return h, pkt


def assert_checksum_ok(pkt: bytes) -> None:
    p = IPv6(pkt) if pkt[0] >> 4 == 6 else IP(pkt)
    layer = TCP if p.haslayer(TCP) else UDP
    got = p[layer].chksum
    del p[layer].chksum
    if IP in p:
        del p[IP].chksum
    again = (IPv6 if pkt[0] >> 4 == 6 else IP)(bytes(p))
    assert got == again[layer].chksum


def run(xl: Translator, hdr: vnet.VnetHeader, pkt: bytes) -> tuple[list[bytes], list[int]]:
    w = [0] * len(WORKER_COUNTERS)
    buf, n = frame(hdr, pkt)
    outs = [bytes(f) for f in handle_vnet_packet(xl, buf, n, w)]
    return outs, w


def test_tso4_superpacket_becomes_tso6() -> None:
    xl = Translator(XL_CFG)
    payload = bytes(random.Random(1).randrange(256) for _ in range(4000))
    pkt = bytes(
        IP(src=S4, dst=C4, flags="DF", id=7)
        / TCP(sport=80, dport=40000, seq=1000, flags="PA")
        / Raw(payload)
    )
    p, l4, off = partial(pkt)
    hdr = vnet.VnetHeader(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 40, 1448, l4, off)
    outs, w = run(xl, hdr, p)
    assert len(outs) == 1
    h, out = finish(outs[0])
    assert h == vnet.VnetHeader(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV6, 60, 1448, 40, 16)
    q = IPv6(bytes(out))
    assert (q.src, q.dst) == (S6, C6)
    assert bytes(q[TCP].payload) == payload
    assert_checksum_ok(bytes(out))
    assert (w[W_GSO], w[W_SEGS]) == (1, 3)


def test_tso6_superpacket_becomes_tso4_and_segments_verify() -> None:
    xl = Translator(XL_CFG)
    payload = bytes(range(256)) * 20
    pkt = bytes(
        IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=80, seq=5, flags="FPA") / Raw(payload)
    )
    p, l4, off = partial(pkt)
    ecn = vnet.GSO_TCPV6 | vnet.GSO_ECN
    hdr = vnet.VnetHeader(vnet.F_NEEDS_CSUM, ecn, 60, 1000, l4, off)
    outs, _ = run(xl, hdr, p)
    h = vnet.VnetHeader.from_wire(outs[0])
    assert h.gso_type == vnet.GSO_TCPV4 | vnet.GSO_ECN
    assert (h.csum_start, h.hdr_len) == (20, 40)
    pkt4 = bytearray(outs[0][vnet.VNET_HDR_LEN :])
    segs = vnet.segment(h, pkt4, 0, len(pkt4))
    assert len(segs) == 6
    got = b""
    for i, s in enumerate(segs):
        assert_checksum_ok(bytes(s))
        q = IP(bytes(s))
        assert (q.src, q.dst) == (C4, S4)
        assert q[TCP].seq == 5 + i * 1000
        assert ("F" in str(q[TCP].flags)) == (i == len(segs) - 1)
        got += bytes(q[TCP].payload)
    assert got == payload


def test_df0_superpacket_is_segmented_in_software() -> None:
    """DF=0 IPv4 may be fragmented by the translator: a super-packet whose segments do
    not fit the lowest IPv6 MTU (1280) is cut first, never fragmented as a whole."""
    xl = Translator(XL_CFG)
    payload = b"z" * 3900
    pkt = bytes(IP(src=S4, dst=C4, flags=0) / TCP(sport=80, dport=40000, flags="A") / Raw(payload))
    p, l4, off = partial(pkt)
    hdr = vnet.VnetHeader(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 40, 1300, l4, off)
    outs, w = run(xl, hdr, p)
    assert w[W_SWSEG] == 1
    lens = []
    for o in outs:  # each 1,360-byte segment is fragmented (RFC 7915 §4)
        h, out = finish(o)
        assert h == vnet.VnetHeader()
        q = IPv6(bytes(out))
        assert q.nh == 44 and len(out) <= 1280
        lens.append(len(out))
    assert len(outs) == 6


@pytest.mark.parametrize("udp", [False, True])
def test_df0_superpacket_whose_segments_fit_stays_one(udp: bool) -> None:
    """DF=0 (a QUIC-like UDP_SEGMENT sender without DF, or TCP): when every segment fits
    the lowest IPv6 MTU, nothing would be fragmented: one translation for the burst."""
    xl = Translator(XL_CFG)
    payload = bytes(range(256)) * 12  # 3,072 bytes
    l4_hdr = UDP(sport=443, dport=40000) if udp else TCP(sport=80, dport=40000, flags="A")
    pkt = bytes(IP(src=S4, dst=C4, flags=0) / l4_hdr / Raw(payload))
    p, l4, off = partial(pkt)
    gso = vnet.GSO_UDP_L4 if udp else vnet.GSO_TCPV4
    hdr = vnet.VnetHeader(vnet.F_NEEDS_CSUM, gso, 28 if udp else 40, 1024, l4, off)
    outs, w = run(xl, hdr, p)
    assert (w[W_SWSEG], len(outs)) == (0, 1)
    h, out = finish(outs[0])
    assert h.gso_type == (vnet.GSO_UDP_L4 if udp else vnet.GSO_TCPV6) and h.gso_size == 1024
    q = IPv6(bytes(out))
    assert (q.src, q.dst, q.nh) == (S6, C6, 17 if udp else 6)
    assert bytes(q[UDP if udp else TCP].payload) == payload
    segs = vnet.segment(h, out, 0, len(out))
    assert len(segs) == 3 and all(len(x) <= 1280 for x in segs)
    for x in segs:
        assert_checksum_ok(bytes(x))


def test_partial_udp_without_gso() -> None:
    xl = Translator(XL_CFG)
    pkt = bytes(IPv6(src=C6, dst=S6) / UDP(sport=5353, dport=53) / Raw(b"q" * 33))
    p, l4, off = partial(pkt)
    outs, w = run(xl, vnet.VnetHeader(vnet.F_NEEDS_CSUM, 0, 0, 0, l4, off), p)
    h, out = finish(outs[0])
    assert h.csum_start == 20 and h.csum_offset == 6
    assert_checksum_ok(bytes(out))
    assert w[W_CSUM] == 0


def test_partial_checksum_finished_in_software_when_translation_is_slow() -> None:
    """Hop limit 1: the translator answers with an ICMP error quoting a finished checksum."""
    xl = Translator(TranslatorConfig(pool6=POOL6, ipv6_address="2001:db8:ff::1", eam=XL_CFG.eam))
    pkt = bytes(IPv6(src=C6, dst=S6, hlim=1) / UDP(sport=1, dport=2) / Raw(b"x" * 10))
    p, l4, off = partial(pkt)
    outs, w = run(xl, vnet.VnetHeader(vnet.F_NEEDS_CSUM, 0, 0, 0, l4, off), p)
    assert w[W_CSUM] == 1
    assert len(outs) == 1
    q = IPv6(outs[0][vnet.VNET_HDR_LEN :])
    assert q.type == 3  # time exceeded


def test_plain_frame_gets_zero_header() -> None:
    xl = Translator(XL_CFG)
    pkt = bytes(IP(src=S4, dst=C4) / UDP(sport=53, dport=5353) / Raw(b"a" * 20))
    outs, _ = run(xl, vnet.VnetHeader(), pkt)
    h, out = finish(outs[0])
    assert h == vnet.VnetHeader()
    assert_checksum_ok(bytes(out))


@pytest.mark.parametrize(
    "hdr",
    [
        vnet.VnetHeader(vnet.F_NEEDS_CSUM, 0, 0, 0, 20, 9000),  # offset past the end
        vnet.VnetHeader(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 40, 0, 20, 16),  # gso_size 0, DF=0
        vnet.VnetHeader(0, vnet.GSO_TCPV4, 40, 1000, 20, 16),  # GSO without NEEDS_CSUM
        vnet.VnetHeader(vnet.F_NEEDS_CSUM, 77, 40, 1000, 20, 16),  # unknown gso type
    ],
)
def test_inconsistent_header_is_counted_not_raised(hdr: vnet.VnetHeader) -> None:
    xl = Translator(XL_CFG)
    pkt = bytes(IP(src=S4, dst=C4, flags=0) / TCP() / Raw(b"b" * 1500))
    outs, w = run(xl, hdr, pkt)
    assert outs == []
    assert w[W_VNET] == 1


def test_random_frames_never_raise() -> None:
    rng = random.Random(3)
    xl = Translator(XL_CFG)
    base = [
        bytes(IP(src=S4, dst=C4) / TCP() / Raw(b"x" * 3000)),
        bytes(IPv6(src=C6, dst=S6) / UDP() / Raw(b"y" * 2000)),
    ]
    for _ in range(3000):
        pkt = bytearray(rng.choice(base))
        for _ in range(rng.randrange(4)):
            pkt[rng.randrange(len(pkt))] = rng.randrange(256)
        pkt = pkt[: rng.randrange(1, len(pkt) + 1)]
        hdr = vnet.VnetHeader(
            rng.choice([0, 1, 2, 3]),
            rng.choice([0, 1, 3, 4, 5, 0x81, 200]),
            rng.randrange(0, 200),
            rng.choice([0, 1, 536, 1448, 65535]),
            rng.randrange(0, 80),
            rng.choice([6, 16, 0, 4000]),
        )
        run(xl, hdr, bytes(pkt))


def test_segment_udp_l4() -> None:
    pkt = bytes(IPv6(src=C6, dst=S6) / UDP(sport=1, dport=2) / Raw(b"u" * 2500))
    p, l4, off = partial(pkt)
    h = vnet.VnetHeader(vnet.F_NEEDS_CSUM, vnet.GSO_UDP_L4, 48, 1000, l4, off)
    segs = vnet.segment(h, bytearray(p), 0, len(p))
    assert [len(s) for s in segs] == [1048, 1048, 548]
    for s in segs:
        assert_checksum_ok(bytes(s))


def test_ones_sum_of_partial_plus_payload_is_the_checksum() -> None:
    """The premise of NEEDS_CSUM: finishing = complementing the sum from csum_start."""
    pkt = bytes(IP(src=S4, dst=C4) / TCP() / Raw(b"abc"))
    p, l4, _off = partial(pkt)
    c = ~ones_sum(p[l4:]) & 0xFFFF
    assert c == IP(pkt)[TCP].chksum
    assert ones_add(0, 0) == 0


def test_translation_over_65535_bytes_is_segmented() -> None:
    """An IPv6 super-packet whose IPv4 translation would exceed 65535 bytes."""
    xl = Translator(XL_CFG)
    payload = b"p" * (65535 - 20)  # IPv6 payload length 65535: IPv4 total would be 65555
    pkt = bytes(IPv6(src=C6, dst=S6) / TCP(sport=1, dport=2, flags="A") / Raw(payload))
    p, l4, off = partial(pkt)
    hdr = vnet.VnetHeader(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV6, 60, 32000, l4, off)
    outs, w = run(xl, hdr, p)
    assert w[W_SWSEG] == 1 and len(outs) == 3
    total = 0
    for o in outs:
        h, out = finish(o)
        assert h == vnet.VnetHeader()
        assert_checksum_ok(bytes(out))
        total += len(IP(bytes(out))[TCP].payload)
    assert total == len(payload)


def test_offload_fallback_when_kernel_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    from v6mostly.linux import tun

    calls: list[int] = []

    def fake_ioctl(fd: int, req: int, arg: object) -> int:
        if req == tun.TUNSETOFFLOAD:
            calls.append(int(arg))  # type: ignore[call-overload]
            if int(arg) & (tun.TUN_F_USO4 | tun.TUN_F_USO6):  # type: ignore[call-overload]
                raise OSError(22, "Invalid argument")
        return 0

    monkeypatch.setattr(tun.fcntl, "ioctl", fake_ioctl)
    got = tun._set_offload(0, tun.TUN_F_CSUM | tun.TUN_F_TSO4 | tun.TUN_F_TSO6 | tun.TUN_F_USO4)
    assert got == tun.TUN_F_CSUM | tun.TUN_F_TSO4 | tun.TUN_F_TSO6
    t = tun.Tun("x", [], True, got, False)
    assert t.mode == "offload" and "uso4" not in t.offload_names()
    assert tun.Tun("x", [], True, tun.TUN_F_CSUM, False).mode == "plain"
    assert tun.Tun("x", [], False, 0, False).mode == "plain"


def test_tun_name_is_checked() -> None:
    from v6mostly.linux import tun

    with pytest.raises(tun.TunError, match="1-15 characters"):
        tun.open_tun("a" * 16, 1)
