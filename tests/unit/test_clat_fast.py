"""The CLAT's fast path (services/clat_fast): the programs built for the CLAT's
translator, run with ``BPF_PROG_TEST_RUN`` and compared with the pure-Python core.

The IPv4 program redirects out of the uplink (``bpf_redirect_neigh``) after putting an
Ethernet header in front (an L3 device's packet has none); the IPv6 program runs on
the uplink's ingress, behind its Ethernet header (``base6 = 14``)."""

from __future__ import annotations

import ipaddress

from scapy.all import ICMP, IP, TCP, UDP, IPv6, raw

from tests.unit.test_fastpath import TC_ACT_REDIRECT, same_id
from v6mostly.linux import fastpath
from v6mostly.services.clat_fast import CLAT_V4, translator_factory
from v6mostly.siit.translator import HEADROOM, Translator
from v6mostly.siit.verdict import Stats

CLAT6 = "2001:db8:1::c1a7"
PREF64 = ipaddress.IPv6Network("2001:db8:64::/96")
SERVER6 = "2001:db8:64::cb00:710a"  # 203.0.113.10


def clat() -> tuple[Translator, fastpath.FastPath]:
    xl = translator_factory(ipaddress.IPv6Address(CLAT6), PREF64, "2001:db8:1::2")(Stats(), 0, 1, 0)
    xl.set_link_mtu(1500, 1480)
    fast = fastpath.build(xl, ifindex=1, base=14, neigh=2, base6=14)
    assert not isinstance(fast, str) and fast.prog6 is not None, fast
    return xl, fast


def core(xl: Translator, pkt: bytes) -> bytes:
    buf = bytearray(HEADROOM) + pkt
    s, e = xl.translate_python(buf, HEADROOM, len(buf))
    assert s >= 0
    return bytes(buf[s:e])


def test_the_hosts_ipv4_leaves_as_ipv6_with_an_ethernet_header() -> None:
    xl, fast = clat()
    for p in (
        IP(src=CLAT_V4, dst="203.0.113.10", flags="DF") / TCP(flags="S"),
        IP(src=CLAT_V4, dst="203.0.113.10") / UDP(sport=5353, dport=53) / bytes(30),
    ):
        ret, out = fast.test_run(raw(p))
        assert ret == TC_ACT_REDIRECT, p.summary()
        # test_run cuts one Ethernet header: the program's new one; the test's follows
        assert out[:14] == b"\x02" * 12 + b"\x08\x00"
        want = core(xl, raw(p))
        assert out[14:] == want and IPv6(want).src == CLAT6, p.summary()
    assert fast.counters(0)[0] == 2
    fast.close()


def test_ipv6_for_the_clat_address_enters_as_ipv4() -> None:
    xl, fast = clat()
    p = IPv6(src=SERVER6, dst=CLAT6) / TCP(flags="SA") / bytes(100)
    ret, out = fast.test_run(raw(p))
    assert ret == TC_ACT_REDIRECT
    assert out == same_id(core(xl, raw(p)), out) and IP(out).dst == CLAT_V4
    assert fast.counters(1)[0] == 1
    fast.close()


def test_the_rest_stays_with_the_workers_and_the_kernel() -> None:
    _, fast = clat()
    left = [
        IP(src=CLAT_V4, dst="203.0.113.10") / ICMP(),  # ping: the workers'
        IP(src=CLAT_V4, dst="192.0.0.2") / UDP(sport=1, dport=2),  # the CLAT's own address
        IPv6(src=SERVER6, dst="2001:db8:1::99") / UDP(sport=1, dport=2),  # not the CLAT's
        IPv6(src="2001:db8:99::1", dst=CLAT6) / UDP(sport=1, dport=2),  # not from Pref64
    ]
    for p in left:
        ret, out = fast.test_run(raw(p))
        assert ret == fastpath.TC_ACT_UNSPEC and out == raw(p), p.summary()
    assert fast.counters() == (0, 0, 0)
    fast.close()
