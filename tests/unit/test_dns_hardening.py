"""The DNS responder under attack (issue 10): answer sizes, per-address rate limits
under a per-prefix ceiling, hostile input, CHAOS, TCP admission. Virtual clock only."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from v6mostly.dns.ratelimit import ClientRateLimit, LogThrottle, TokenBucket, prefix_key
from v6mostly.dns.responder import OUTCOMES, Responder, header_only_error
from v6mostly.dns.tcp_limits import TcpLimits
from v6mostly.dns.truncate import fit_response, udp_size_limit

N = ipaddress.ip_network
A = ipaddress.ip_address
ALLOW = [N("2001:db8:1::/64"), N("198.51.100.0/24")]
FLOODER = A("2001:db8:1::100")
NEIGHBOUR = A("2001:db8:1::200")

#: every outcome ``handle`` may report, by the kind of decision
ANSWERS = {
    "ipv4only",
    "refused",
    "refused_class",
    "formerr",
    "notimp",
    "badvers",
    "chaos",
    "chaos_refused",
}
DROPS = {"refused_acl", "rate_limited", "rate_limited_prefix", "malformed", "dropped_response"}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def responder(**kw: object) -> Responder:
    return Responder([N("64:ff9b::/96")], ALLOW, **kw)  # type: ignore[arg-type]


def big_response(q: dns.message.Message, n: int = 13) -> dns.message.Message:
    """About 3.3 KB of TXT: the answer of the issue's amplification report."""
    r = dns.message.make_response(q)
    texts = [f'"{i:02d}' + "x" * 240 + '"' for i in range(n)]
    if texts:
        r.answer.append(dns.rrset.from_text_list(q.question[0].name, 300, "IN", "TXT", texts))
    return r


# -- UDP answer size (RFC 1035 §4.2.1, RFC 6891 §6.2.5) --------------------------------


def test_udp_answer_without_edns_fits_512_with_tc_and_tcp_gets_it_whole() -> None:
    r = responder()
    q = dns.message.make_query("big.example.net", "TXT", use_edns=False)
    assert len(q.to_wire()) == 33  # the 33-byte query
    full = big_response(q).to_wire()
    assert len(full) > 3000
    wire, truncated = r.finish(q, big_response(q), tcp=False)
    m = dns.message.from_wire(wire)
    assert truncated and len(wire) <= 512 and m.flags & dns.flags.TC
    assert m.question == q.question and not m.answer and m.edns < 0 and m.id == q.id
    wire, truncated = r.finish(q, big_response(q), tcp=True)
    assert not truncated and len(wire) == len(full)
    assert r.counts["truncated"] == 1


@pytest.mark.parametrize(
    ("payload", "max_udp", "limit"),
    [(1232, 1232, 1232), (4096, 1232, 1232), (4096, 4096, 4096), (100, 1232, 512)],
)
def test_udp_answer_fits_the_clients_edns_size_capped_by_ours(
    payload: int, max_udp: int, limit: int
) -> None:
    q = dns.message.make_query("big.example.net", "TXT", use_edns=0, payload=payload)
    assert udp_size_limit(q, max_udp) == limit
    for n in (1, 4, 13, 20):
        resp = big_response(q, n)
        size = len(resp.to_wire(max_size=65535))
        wire, truncated = fit_response(resp, q, max_udp, tcp=False)
        m = dns.message.from_wire(wire)
        assert len(wire) <= limit
        assert truncated == bool(m.flags & dns.flags.TC) == (size > limit)
        assert m.edns == 0 and m.payload == max_udp  # OPT echoed, advertising our size
        if not truncated:
            assert len(m.answer[0]) == n


def test_opt_only_when_the_query_had_one_and_do_bit_kept() -> None:
    q = dns.message.make_query("x.example.net", "A", use_edns=False)
    up = dns.message.make_response(q)
    up.use_edns(0, dns.flags.DO, 4096)  # an upstream that adds an OPT anyway
    m = dns.message.from_wire(fit_response(up, q, 1232, tcp=False)[0])
    assert m.edns < 0
    q = dns.message.make_query("x.example.net", "A", use_edns=0, want_dnssec=True)
    up = dns.message.make_response(q)
    m = dns.message.from_wire(fit_response(up, q, 1232, tcp=False)[0])
    assert m.edns == 0 and m.ednsflags & dns.flags.DO and m.payload == 1232


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 40),
    edns=st.one_of(st.none(), st.integers(0, 65535)),
    max_udp=st.integers(512, 4096),
)
def test_a_udp_answer_never_exceeds_its_limit(n: int, edns: int | None, max_udp: int) -> None:
    q = (
        dns.message.make_query("big.example.net", "TXT", use_edns=False)
        if edns is None
        else dns.message.make_query("big.example.net", "TXT", use_edns=0, payload=edns)
    )
    wire, truncated = fit_response(big_response(q, n), q, max_udp, tcp=False)
    assert len(wire) <= udp_size_limit(q, max_udp) <= max(512, max_udp)
    assert truncated == bool(dns.message.from_wire(wire).flags & dns.flags.TC)


# -- rate limits: per address, a ceiling per /64 -----------------------------------------


def ask(r: Responder, client: ipaddress._BaseAddress, now: float) -> str:
    q = dns.message.make_query("ipv4only.arpa", "AAAA")
    return r.handle(q.to_wire(), client, now).outcome  # type: ignore[arg-type]


def test_a_flooding_host_does_not_starve_its_neighbour_in_the_same_64() -> None:
    """The issue: one host at 1,000 qps, another in the same /64 at 7 qps for 5 s."""
    r = responder(forward=False)  # defaults: 50/100 per address, 500/1000 per /64
    got: Counter[tuple[str, str]] = Counter()
    for ms in range(5000):
        now = ms / 1000
        got["flood", ask(r, FLOODER, now)] += 1
        if ms % 143 == 0 and ms < 4990:
            got["neighbour", ask(r, NEIGHBOUR, now)] += 1
    assert got["neighbour", "ipv4only"] == 35 and got["neighbour", "rate_limited"] == 0
    # the flooder gets its burst plus its rate: 100 + 50 * 5
    assert 340 <= got["flood", "ipv4only"] <= 360
    assert got["flood", "rate_limited"] == 5000 - got["flood", "ipv4only"]
    assert r.counts["rate_limited"] == got["flood", "rate_limited"]


def test_many_addresses_of_one_64_hit_the_prefix_ceiling_not_another_64() -> None:
    r = responder(forward=False, prefix_rate=500, prefix_burst=1000)
    outcomes = Counter(ask(r, A(f"2001:db8:1::{i + 1:x}"), 0.0) for i in range(1500))
    assert outcomes == {"ipv4only": 1000, "rate_limited_prefix": 500}
    assert ask(r, A("198.51.100.7"), 0.0) == "ipv4only"  # another prefix is untouched
    assert ask(r, A("2001:db8:1::1"), 1.0) == "ipv4only"  # the ceiling refills at 500/s


def test_prefix_keys_and_bounded_tables() -> None:
    assert prefix_key(A("2001:db8:1::5")) == "2001:db8:1::/64"
    assert prefix_key(A("198.51.100.9")) == "198.51.100.0/24"
    b = TokenBucket(1, 1, max_entries=10)
    for i in range(100):
        b.allow(str(i), 0.0)
    assert len(b.state) == 10 and "99" in b.state and "0" not in b.state
    lim = ClientRateLimit(1, 1, 100, 100)
    assert lim.check(FLOODER, 0.0) == "" and lim.check(FLOODER, 0.0) == "rate_limited"
    assert lim.check(FLOODER, 1.0) == ""


def test_refusals_are_logged_at_most_once_per_interval_with_the_count() -> None:
    t = LogThrottle(10.0)
    lines = [(i / 100, n) for i in range(3000) if (n := t.note("rate_limited", i / 100))]
    assert lines == [(0.0, 1), (10.0, 1000), (20.0, 1000)]
    assert t.note("other", 5.0) == 1


# -- hostile input: never raise; drop responses; FORMERR where RFC 1035 says ------------


def test_a_response_is_dropped_not_raised() -> None:
    r = responder()
    q = dns.message.make_query("www.example.net", "A")
    resp = dns.message.make_response(q)  # QR=1: made dnspython's make_response raise
    d = r.handle(resp.to_wire(), FLOODER, 0.0)
    assert d.kind == "drop" and d.outcome == "dropped_response"
    assert nonzero(r.counts) == {"dropped_response": 1}


def test_formerr_notimp_badvers_are_small_answers() -> None:
    r = responder()
    q = dns.message.make_query("www.example.net", "A")
    q.id = 0xBEEF
    garbage = q.to_wire()[:12] + b"\xff" * 21  # a header, then nonsense
    d = r.handle(garbage, FLOODER, 0.0)
    m = dns.message.from_wire(d.wire)
    assert (d.kind, d.outcome, len(d.wire)) == ("answer", "formerr", 12)
    assert m.id == 0xBEEF and m.rcode() == dns.rcode.FORMERR and m.flags & dns.flags.QR
    assert m.flags & dns.flags.RD
    nq = dns.message.make_query("example.net", "SOA")
    nq.set_opcode(dns.opcode.NOTIFY)
    d = r.handle(nq.to_wire(), FLOODER, 0.0)
    m = dns.message.from_wire(d.wire)
    assert d.outcome == "notimp" and m.rcode() == dns.rcode.NOTIMP and m.opcode() == 4
    empty = dns.message.Message(id=7)  # QDCOUNT 0
    d = r.handle(empty.to_wire(), FLOODER, 0.0)
    assert d.outcome == "formerr" and dns.message.from_wire(d.wire).rcode() == dns.rcode.FORMERR
    v1 = dns.message.make_query("www.example.net", "A")
    v1.use_edns(edns=1)  # EDNS version 1 (make_query's use_edns=1 means version 0 in 2.4)
    d = r.handle(v1.to_wire(), FLOODER, 0.0)
    m = dns.message.from_wire(d.wire)
    assert d.outcome == "badvers" and m.rcode() == dns.rcode.BADVERS and m.edns == 0
    assert r.handle(b"\x00\x01", FLOODER, 0.0).outcome == "malformed"
    assert header_only_error(bytes(12), dns.rcode.FORMERR)[2:4] == b"\x80\x01"


def _check(r: Responder, wire: bytes, seen: Counter[str]) -> None:
    d = r.handle(wire, FLOODER, 0.0)
    seen[d.outcome] += 1
    if d.kind == "drop":
        assert d.outcome in DROPS and not d.wire
        return
    if d.kind == "forward":
        assert d.outcome == "forwarded" and d.query is not None
        return
    assert d.kind == "answer" and d.outcome in ANSWERS
    assert len(wire) >= 12 and not wire[2] & 0x80  # never an answer to a response
    m = dns.message.from_wire(d.wire)
    assert m.flags & dns.flags.QR and m.id == int.from_bytes(wire[:2], "big")
    assert len(d.wire) <= 512  # no EDNS over 512 here: ipv4only and errors are small
    if d.outcome not in ("ipv4only", "chaos"):  # errors: never an amplifier
        assert len(d.wire) <= len(wire) + 11, (d.outcome, wire)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_map_to_known_outcomes(wire: bytes) -> None:
    _check(responder(rate=1e9, burst=1e9), wire, Counter())


def test_fuzz_mutated_queries_reach_every_outcome_category() -> None:
    """h11's invariant for a responder: each input gets a known outcome, and the run
    reaches each category (not merely "no exception")."""
    rng = random.Random(10)
    r = responder(rate=1e9, burst=1e9, prefix_rate=1e9, prefix_burst=1e9)
    seeds = [
        dns.message.make_query("ipv4only.arpa", "AAAA").to_wire(),
        dns.message.make_query("www.example.net", "A", use_edns=0).to_wire(),
        dns.message.make_query("version.bind", "TXT", "CH").to_wire(),
        dns.message.make_response(dns.message.make_query("a.example", "A")).to_wire(),
    ]
    seen: Counter[str] = Counter()
    for _ in range(20_000):
        w = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(0, 4)):
            op = rng.random()
            if op < 0.6 and w:
                w[rng.randrange(len(w))] = rng.randrange(256)
            elif op < 0.8 and w:
                del w[rng.randrange(len(w)) :]
            else:
                w += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        _check(r, bytes(w), seen)
    for outcome in (
        "ipv4only",
        "forwarded",
        "formerr",
        "notimp",
        "dropped_response",
        "malformed",
        "chaos_refused",
        "refused_class",
        "badvers",
    ):
        assert seen[outcome] > 0, (outcome, seen)
    assert sum(seen.values()) == 20_000 and set(seen) <= ANSWERS | DROPS | {"forwarded"}
    assert set(r.counts) == set(OUTCOMES)  # no key appears at run time
    assert nonzero(r.counts) == dict(seen)


# -- CHAOS ------------------------------------------------------------------------------


def chaos(r: Responder, name: str, rdtype: str = "TXT") -> tuple[str, dns.message.Message]:
    q = dns.message.make_query(name, rdtype, "CH")
    d = r.handle(q.to_wire(), FLOODER, 0.0)
    assert d.kind == "answer"  # never "forward"
    return d.outcome, dns.message.from_wire(d.wire)


def test_chaos_is_refused_by_default_and_never_forwarded() -> None:
    r = responder(forward=True)
    for name in ("version.bind", "id.server", "hostname.bind", "authors.bind"):
        outcome, m = chaos(r, name)
        assert outcome == "chaos_refused" and m.rcode() == dns.rcode.REFUSED
    q = dns.message.make_query("www.example.net", "A", "HS")
    d = r.handle(q.to_wire(), FLOODER, 0.0)
    assert d.outcome == "refused_class" and d.kind == "answer"
    assert r.counts["forwarded"] == 0


def test_chaos_answers_as_configured() -> None:
    r = responder(chaos_version="v6mostly", chaos_id="rtr1")
    outcome, m = chaos(r, "version.bind")
    assert outcome == "chaos" and m.flags & dns.flags.AA
    rrset = m.answer[0]
    assert rrset.rdclass == dns.rdataclass.CH and rrset.rdtype == dns.rdatatype.TXT
    assert [s for rd in rrset for s in rd.strings] == [b"v6mostly"]
    outcome, m = chaos(r, "id.server")
    assert [s for rd in m.answer[0] for s in rd.strings] == [b"rtr1"]
    assert chaos(r, "version.bind", "A")[0] == "chaos_refused"


def test_set_pref64_keeps_counts_and_rate_state() -> None:
    r = responder(forward=False, rate=1, burst=1)
    assert ask(r, FLOODER, 0.0) == "ipv4only"
    r.set_pref64([N("2001:db8:64::/96")])
    assert ask(r, FLOODER, 0.0) == "rate_limited"
    assert nonzero(r.counts) == {"ipv4only": 1, "rate_limited": 1}
    q = dns.message.make_query("ipv4only.arpa", "AAAA")
    m = dns.message.from_wire(r.handle(q.to_wire(), NEIGHBOUR, 0.0).wire)
    assert "2001:db8:64::c000:aa" in [rd.address for rd in m.answer[0]]


# -- TCP admission ----------------------------------------------------------------------


def test_tcp_per_client_cap() -> None:
    t = TcpLimits(max_total=100, max_per_client=3, idle_timeout=10)
    got = [t.admit(i, "2001:db8:1::100", 0.0).outcome for i in range(5)]
    assert got == ["tcp_accepted"] * 3 + ["tcp_refused_per_client"] * 2
    assert t.admit(9, "2001:db8:1::200", 0.0).ok
    t.release(0)
    t.release(0)  # idempotent
    assert t.admit(10, "2001:db8:1::100", 1.0).ok


def test_tcp_total_cap_evicts_the_longest_idle_never_a_busy_one() -> None:
    t = TcpLimits(max_total=3, max_per_client=10, idle_timeout=10)
    for i in range(3):
        assert t.admit(i, f"c{i}", float(i)).ok
    t.busy(0, 5.0)  # the oldest is working on a query
    a = t.admit(3, "new", 6.0)
    assert a.ok and a.evict == [1] and set(t.conns) == {0, 2, 3}
    t.busy(2, 6.0)
    t.busy(3, 6.0)
    a = t.admit(4, "newer", 7.0)
    assert not a.ok and a.outcome == "tcp_refused_total" and a.evict == []
    t.idle(3, 8.0)
    assert t.admit(5, "newest", 9.0).evict == [3]
    assert sum(t.per_client.values()) == len(t.conns) == 3


# -- the service's own refusals -----------------------------------------------------------


def test_service_drops_forwards_beyond_the_inflight_cap_and_counts_them() -> None:
    from v6mostly.services.router_dns import MAX_INFLIGHT, DnsService

    svc = DnsService(responder(), [], 53, "127.0.0.1")
    q = dns.message.make_query("www.example.net", "A").to_wire()
    assert svc.decide(q, str(FLOODER)).kind == "forward"
    svc.inflight = MAX_INFLIGHT
    d = svc.decide(q, str(NEIGHBOUR))
    assert (d.kind, d.outcome) == ("drop", "forward_overload")
    assert svc.responder.counts["forward_overload"] == 1
    no_upstream = DnsService(responder(), [], 53, None)
    assert no_upstream.decide(q, str(FLOODER)).kind == "drop"
