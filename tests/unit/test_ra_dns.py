"""Router Advertisements (RFC 4861, RFC 8781 PREF64, RFC 8106) and the ipv4only.arpa responder.

RA bytes are checked exactly and against scapy's decoder; the advertiser's
schedule runs on a virtual clock; DNS messages are built and read with dnspython.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from harness import mutate
from scapy.all import ICMPv6ND_RA, ICMPv6NDOptPREF64

from v6mostly.dns.responder import Responder, TokenBucket
from v6mostly.errors import ConfigError
from v6mostly.ra.advertiser import Advertiser, default_pref64_lifetime
from v6mostly.ra.options import Pref64, Prefix, RaError, RouterAdvert, router_solicit_ok

N = ipaddress.IPv6Network


def ra(**kw: object) -> RouterAdvert:
    args: dict[str, object] = dict(
        router_lifetime=1800,
        prefixes=[Prefix(N("2001:db8:1::/64"))],
        rdnss=[ipaddress.IPv6Address("2001:db8:1::1")],
        dnssl=["example.net"],
        mtu=1500,
        pref64=[Pref64(N("64:ff9b::/96"), 1800)],
    )
    args.update(kw)
    return RouterAdvert(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prefix", "plc"),
    [
        ("64:ff9b::/96", 0),
        ("2001:db8:1:2::/64", 1),
        ("2001:db8:100::/56", 2),
        ("2001:db8:100::/48", 3),
        ("2001:db8:100::/40", 4),
        ("2001:db8::/32", 5),
    ],
)
def test_pref64_option_bytes_rfc8781(prefix: str, plc: int) -> None:
    w = RouterAdvert(pref64=[Pref64(N(prefix), 600)]).to_wire()
    opt = w[16:]
    assert opt[:2] == bytes([38, 2])
    assert int.from_bytes(opt[2:4], "big") == (75 << 3) | plc  # 600 s = 75 x 8 s
    assert opt[4:16] == N(prefix).network_address.packed[:12]
    back = RouterAdvert.from_wire(w).pref64[0]
    assert back.prefix == N(prefix) and back.lifetime == 600


def test_pref64_lifetime_rounds_up_and_caps() -> None:
    assert Pref64(N("64:ff9b::/96"), 601).scaled() == 76
    assert Pref64(N("64:ff9b::/96"), 100000).scaled() == 8191
    assert default_pref64_lifetime(600) == 1800
    assert default_pref64_lifetime(1800) == 5400
    assert default_pref64_lifetime(30000) == 65528


def test_full_ra_exact_header_and_scapy_decodes() -> None:
    w = ra(source_lladdr=bytes.fromhex("020000000001"), preference="high").to_wire()
    assert w[:16] == bytes.fromhex("86000000400807080000000000000000")
    p = ICMPv6ND_RA(w)
    assert p.routerlifetime == 1800 and p.prf == 1
    p64 = p[ICMPv6NDOptPREF64]
    assert p64.prefix == "64:ff9b::" and p64.plc == 0 and p64.scaledlifetime == 225
    back = RouterAdvert.from_wire(w)
    assert back.prefixes[0].prefix == N("2001:db8:1::/64") and back.prefixes[0].autonomous
    assert back.rdnss == [ipaddress.IPv6Address("2001:db8:1::1")]
    assert back.dnssl == ["example.net"] and back.mtu == 1500 and back.preference == "high"


@pytest.mark.parametrize(
    "bad",
    [
        bytes.fromhex("8600000040000708000000000000000026000000"),  # zero-length option
        bytes.fromhex("860000004000070800000000000000002602") + bytes(10),  # truncated
        bytes.fromhex("8600000040000708000000000000000026020007") + bytes(12),  # PLC 7
        b"\x85" + bytes(15),  # not an RA
    ],
)
def test_malformed_ra_raises_raerror(bad: bytes) -> None:
    with pytest.raises(RaError):
        RouterAdvert.from_wire(bad)


def test_router_solicit_check() -> None:
    assert router_solicit_ok(bytes([133, 0, 0, 0, 0, 0, 0, 0]))
    assert not router_solicit_ok(bytes([133, 1, 0, 0, 0, 0, 0, 0]))
    assert not router_solicit_ok(bytes([133, 0, 0, 0, 0, 0, 0, 0, 1, 0]))


def test_advertiser_schedule_on_a_virtual_clock() -> None:
    adv = Advertiser(ra(), max_interval=600, rand=lambda: 1.0)
    adv.start(0.0)
    times = []
    now = 0.0
    for _ in range(5):
        now = adv.next_time()
        assert adv.on_timer(now) is not None
        times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[:2] == [16.0, 16.0]  # the first three: at most MAX_INITIAL_RTR_ADVERT_INTERVAL
    assert gaps[2:] == [600.0, 600.0]
    # an RS moves the next RA to within 0.5 s, but not sooner than 3 s after the last
    adv.on_solicit(now + 1.0)
    assert adv.next_time() == now + 3.0
    adv.on_solicit(now + 100.0)
    assert adv.next_time() == pytest.approx(now + 3.0)
    assert adv.on_timer(now + 1.0) is None  # not due yet


def test_withdrawn_pref64_goes_out_with_lifetime_zero_then_disappears() -> None:
    adv = Advertiser(ra(), max_interval=60, rand=lambda: 0.0)
    adv.start(0.0)
    adv.on_timer(0.0)
    adv.update(ra(pref64=[Pref64(N("2001:db8:64::/96"), 180)]), 1.0)
    lifetimes = []
    t = 1.0
    for _ in range(5):
        t = adv.next_time()
        w = adv.on_timer(t)
        assert w is not None
        lifetimes.append({str(p.prefix): p.lifetime for p in RouterAdvert.from_wire(w).pref64})
    assert lifetimes[0] == {"2001:db8:64::/96": 184, "64:ff9b::/96": 0}
    assert all(x.get("64:ff9b::/96") == 0 for x in lifetimes[:3])
    assert lifetimes[3] == {"2001:db8:64::/96": 184}


def test_final_ra_has_router_lifetime_zero() -> None:
    adv = Advertiser(ra(), max_interval=600)
    assert RouterAdvert.from_wire(adv.final()).router_lifetime == 0


def test_advertiser_interval_limits() -> None:
    with pytest.raises(ValueError, match="4-1800"):
        Advertiser(ra(), max_interval=2)
    with pytest.raises(ValueError, match=r"0\.75"):
        Advertiser(ra(), max_interval=10, min_interval=9)


# -- DNS --------------------------------------------------------------------------------

ALLOW = [ipaddress.ip_network("2001:db8:1::/64"), ipaddress.ip_network("198.51.100.0/24")]
C6 = ipaddress.ip_address("2001:db8:1::100")


def ask(
    r: Responder, name: str, rdtype: str, client: ipaddress._BaseAddress = C6, now: float = 0.0
) -> dns.message.Message | None:
    q = dns.message.make_query(name, rdtype)
    d = r.handle(q.to_wire(), client, now)  # type: ignore[arg-type]
    return dns.message.from_wire(d.wire) if d.kind == "answer" else None


def test_ipv4only_arpa_aaaa_and_a() -> None:
    r = Responder([N("64:ff9b::/96")], ALLOW, forward=False)
    a = ask(r, "ipv4only.arpa", "AAAA")
    assert a is not None and a.flags & dns.flags.AA
    assert sorted(rd.address for rd in a.answer[0]) == ["64:ff9b::c000:aa", "64:ff9b::c000:ab"]
    a = ask(r, "ipv4only.arpa", "A")
    assert a is not None and sorted(rd.address for rd in a.answer[0]) == [
        "192.0.0.170",
        "192.0.0.171",
    ]
    r2 = Responder([N("2001:db8:100::/40")], ALLOW, forward=False)
    a = ask(r2, "ipv4only.arpa", "AAAA")
    assert a is not None and "2001:db8:1c0:0:aa::" in [rd.address for rd in a.answer[0]]


def test_other_names_refused_or_forwarded_and_acl() -> None:
    r = Responder([N("64:ff9b::/96")], ALLOW, forward=False)
    a = ask(r, "www.example.net", "A")
    assert a is not None and a.rcode() == dns.rcode.REFUSED
    assert ask(r, "ipv4only.arpa", "AAAA", client=ipaddress.ip_address("2001:db8:99::1")) is None
    f = Responder([N("64:ff9b::/96")], ALLOW, forward=True)
    q = dns.message.make_query("www.example.net", "A")
    assert f.handle(q.to_wire(), C6, 0.0).kind == "forward"
    assert f.handle(b"\x00\x01garbage", C6, 0.0).kind == "drop"


def test_rate_limit() -> None:
    r = Responder([N("64:ff9b::/96")], ALLOW, forward=False, rate=1, burst=3)
    got = [ask(r, "ipv4only.arpa", "A", now=0.0) is not None for _ in range(5)]
    assert got == [True, True, True, False, False]
    assert ask(r, "ipv4only.arpa", "A", now=1.5) is not None
    b = TokenBucket(10, 1)
    assert b.allow("x", 0.0) and not b.allow("x", 0.0) and b.allow("x", 0.2)


def test_dns64_synthesis_and_exclusions() -> None:
    r = Responder([N("64:ff9b::/96")], ALLOW, dns64=True)
    q = dns.message.make_query("www.example.net", "AAAA")
    nodata = dns.message.make_response(q)
    assert r.needs_synthesis(q, nodata)
    mapped = dns.message.make_response(q)
    mapped.answer.append(
        dns.rrset.from_text("www.example.net.", 60, "IN", "AAAA", "::ffff:192.0.2.1")
    )
    assert r.needs_synthesis(q, mapped)  # RFC 6147 §5.1.4
    real = dns.message.make_response(q)
    real.answer.append(dns.rrset.from_text("www.example.net.", 60, "IN", "AAAA", "2001:db8::1"))
    assert not r.needs_synthesis(q, real)
    nx = dns.message.make_response(q)
    nx.set_rcode(dns.rcode.NXDOMAIN)
    assert not r.needs_synthesis(q, nx)
    aq = dns.message.make_query("www.example.net", "A")
    ar = dns.message.make_response(aq)
    ar.answer.append(dns.rrset.from_text("www.example.net.", 60, "IN", "A", "8.8.8.8", "127.0.0.1"))
    s = r.synthesize(q, ar)
    assert [rd.address for rd in s.answer[0]] == ["64:ff9b::808:808"]
    assert s.answer[0].ttl == 60


def test_ra_parser_fuzz_raises_only_raerror() -> None:
    import random

    rng = random.Random(11)
    base = ra(source_lladdr=b"\x02\x00\x00\x00\x00\x01").to_wire()
    for _ in range(5000):
        b = mutate(rng, base, [base])
        with contextlib.suppress(RaError):
            RouterAdvert.from_wire(b)


@pytest.mark.parametrize("n", [32, 40, 48, 56, 64, 96])
def test_rfc7050_finds_the_well_known_address_at_every_length(n: int) -> None:
    from v6mostly.addr.rfc6052 import Pref64 as P64
    from v6mostly.services.discover import WKA, embedded_ipv4

    prefix = {
        32: "2001:db8::/32",
        40: "2001:db8:100::/40",
        48: "2001:db8:122::/48",
        56: "2001:db8:122:300::/56",
        64: "2001:db8:122:344::/64",
        96: "64:ff9b::/96",
    }[n]
    a = P64(prefix).embed_unchecked(WKA[0])
    assert embedded_ipv4(a, n) == WKA[0]
    assert all(embedded_ipv4(a, m) != WKA[0] for m in (32, 40, 48, 56, 64, 96) if m != n)


def test_advertise_pref64_false_withdraws_it(tmp_path: Path) -> None:
    """``advertise_pref64 = false``: RAs without PREF64; after a reload the old one
    goes out with lifetime 0 three times (RFC 8781 §4: hosts drop it), then not at all."""
    from v6mostly.services.router_ra import make_ra
    from v6mostly.services.router_text import dry_run_text
    from v6mostly.site_config import load_site

    f = tmp_path / "site.toml"
    base = '[site]\npref64 = "64:ff9b::/96"\n[[interface]]\nname = "lan0"\nmax_interval = 60\n'
    f.write_text(base)
    on = load_site(str(f))
    f.write_text(base + "advertise_pref64 = false\n")
    off = load_site(str(f))
    assert off.interfaces[0].advertise_pref64 is False
    assert "no PREF64 (advertise_pref64 = false" in dry_run_text(off)
    adv = Advertiser(make_ra(on.interfaces[0], on.pref64, None), max_interval=60, rand=lambda: 0.0)
    adv.start(0.0)
    first = RouterAdvert.from_wire(adv.on_timer(0.0) or b"").pref64
    assert [(str(p.prefix), p.lifetime) for p in first] == [("64:ff9b::/96", 184)]
    adv.update(make_ra(off.interfaces[0], off.pref64, None), 1.0)
    seen = []
    for _ in range(4):
        w = adv.on_timer(adv.next_time())
        assert w is not None
        seen.append([(str(p.prefix), p.lifetime) for p in RouterAdvert.from_wire(w).pref64])
    assert seen == [[("64:ff9b::/96", 0)]] * 3 + [[]]
    # Announced again while still being withdrawn: only the announcement goes out.
    adv.update(make_ra(on.interfaces[0], on.pref64, None), adv.next_time())
    adv.update(make_ra(off.interfaces[0], off.pref64, None), adv.next_time())
    adv.on_timer(adv.next_time())
    adv.update(make_ra(on.interfaces[0], on.pref64, None), adv.next_time())
    w = adv.on_timer(adv.next_time())
    assert w is not None
    back = [(str(p.prefix), p.lifetime) for p in RouterAdvert.from_wire(w).pref64]
    assert back == [("64:ff9b::/96", 184)]
    f.write_text(base + 'advertise_pref64 = "no"\n')
    with pytest.raises(ConfigError, match='advertise_pref64 = "no": expected'):
        load_site(str(f))
