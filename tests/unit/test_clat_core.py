"""CLAT cores: the Pref64 tracker (RFC 8781, RFC 7050) on a virtual clock, and the
checksum-neutral CLAT address (RFC 6877 §6.3), cross-checked with the SIIT core."""

from __future__ import annotations

import ast
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, UDP, IPv6, Raw

import v6mostly.clat
from v6mostly.clat import address as address_mod
from v6mostly.clat.address import (
    CLAT_IPV4,
    ipv4_mtu_for,
    is_checksum_neutral,
    is_reserved_iid,
    neutral_clat_address,
)
from v6mostly.clat.pref64_state import (
    DNS_ORIGIN,
    DnsRetry,
    Pref64Changed,
    Pref64Event,
    Pref64Refused,
    Pref64Source,
    Pref64Tracker,
)
from v6mostly.errors import AddressError, V6mostlyError
from v6mostly.siit.translator import Translator, TranslatorConfig
from v6mostly.wire.checksum import ones_sum

N = ipaddress.IPv6Network
WKP = N("64:ff9b::/96")
P1 = N("2001:db8:64::/96")
P2 = N("2001:db8:65::/96")
P64 = N("2001:db8:66::/64")
#: u-octet (bits 64-71) set: RFC 6052 §2.2 says MUST be zero.
BAD_U = N("2001:db8:0:0:ff00::/96")
#: Overlaps the Well-Known Prefix without being it (RFC 6052 §2.1).
BAD_WKP = N("64:ff9b::/64")
R1 = "fe80::1"
R2 = "fe80::2"
UPLINK = N("2001:db8:1:2::/64")
MAC = bytes.fromhex("020000000001")


def changes(evs: list[Pref64Event]) -> list[tuple[N | None, N | None, Pref64Source | None]]:
    return [(e.old, e.new, e.source) for e in evs if isinstance(e, Pref64Changed)]


# -- layering ---------------------------------------------------------------------------


def test_clat_core_imports_no_io() -> None:
    """DESIGN.md: the cores import no socket/os/asyncio/time/random; clat imports only
    the lower cores (addr, wire) and errors."""
    forbidden = {"socket", "os", "asyncio", "time", "random", "subprocess", "select"}
    pkg = Path(v6mostly.clat.__file__).parent
    files = sorted(pkg.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "address.py", "pref64_state.py"}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & forbidden, f.name
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module:
                    assert node.module.split(".")[0] not in forbidden, f.name
                if node.level == 2 and node.module:
                    assert node.module.split(".")[0] in {"addr", "wire", "errors"}, f.name


# -- the CLAT address -------------------------------------------------------------------


def test_address_vector() -> None:
    """Stable values (a regression pin: the IID derivation must not drift, or a
    CLAT would change its address across an upgrade)."""
    a0 = neutral_clat_address(UPLINK, MAC)
    a1 = neutral_clat_address(UPLINK, MAC, attempt=1)
    assert a0 == ipaddress.IPv6Address("2001:db8:1:2:bfec:d047:4a60:b7b0")
    assert a1 == ipaddress.IPv6Address("2001:db8:1:2:b2e2:42fc:30df:6b87")
    # 192.0.0.1 sums to 0xc000 + 0x0001; so does the address, word by word.
    assert ones_sum(CLAT_IPV4.packed) == 0xC001
    assert ones_sum(a0.packed) == 0xC001
    assert is_checksum_neutral(a0) and is_checksum_neutral(a1, CLAT_IPV4)


def test_address_depends_on_network_and_seed() -> None:
    a = neutral_clat_address(UPLINK, MAC)
    assert neutral_clat_address(N("2001:db8:1:3::/64"), MAC).packed[8:] != a.packed[8:]
    assert neutral_clat_address(UPLINK, bytes.fromhex("020000000002")) != a
    assert neutral_clat_address(UPLINK, MAC, ipaddress.IPv4Address("192.0.0.2")) != a


def test_attempts_are_distinct_and_stable() -> None:
    seq = [neutral_clat_address(UPLINK, MAC, attempt=i) for i in range(32)]
    assert len(set(seq)) == 32
    assert seq == [neutral_clat_address(UPLINK, MAC, attempt=i) for i in range(32)]


def test_not_checksum_neutral() -> None:
    a = neutral_clat_address(UPLINK, MAC)
    b = ipaddress.IPv6Address(int(a) + 1)
    assert not is_checksum_neutral(b)
    # +0 and -0 are the same in one's complement: 0x0000 vs 0xffff in the last word.
    zero = ipaddress.IPv6Address(int(a) & ~0xFFFF)
    w = (ones_sum(CLAT_IPV4.packed) - ones_sum(zero.packed)) % 0xFFFF
    assert is_checksum_neutral(ipaddress.IPv6Address(int(zero) + w))


@pytest.mark.parametrize(
    ("iid", "reserved"),
    [
        (0x0000_0000_0000_0000, True),  # Subnet-Router anycast, RFC 4291 §2.6.1
        (0xFDFF_FFFF_FFFF_FF80, True),  # RFC 2526
        (0xFDFF_FFFF_FFFF_FFFF, True),
        (0xFDFF_FFFF_FFFF_FF7F, False),
        (0x0200_5EFE_C000_0201, True),  # ISATAP, RFC 5214 §6.1
        (0x0000_5EFE_C000_0201, True),
        (0x0300_5EFE_0000_0001, True),
        (0x0200_5EFF_FE00_5213, True),  # RFC 6543 Proxy Mobile IPv6
        (0x0200_5EFF_FF00_0000, False),
        (0x0000_0000_0000_0001, False),
    ],
)
def test_reserved_iids(iid: int, reserved: bool) -> None:
    assert is_reserved_iid(iid) is reserved


def test_zero_class_word_and_reserved_iids_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    head = UPLINK.network_address.packed[:8]
    target = ones_sum(CLAT_IPV4.packed)
    # Candidate 1 needs last word 0x0000 == 0xffff (the +0/-0 class): skipped.
    w = (target - ones_sum(head + bytes(4))) % 0xFFFF
    c1 = bytes(4) + w.to_bytes(2, "big")
    assert (target - ones_sum(head + c1)) % 0xFFFF == 0
    # Candidate 2 is the ISATAP form 0000:5efe:...: skipped. Candidate 3 is used.
    c2 = bytes.fromhex("00005efe1234")
    c3 = bytes.fromhex("123456789abc")
    seen: list[int] = []

    def fake(prefix: bytes, seed: bytes, attempt: int, counter: int) -> bytes:
        seen.append(counter)
        return (c1, c2, c3)[counter]

    monkeypatch.setattr(address_mod, "_candidate", fake)
    a = neutral_clat_address(UPLINK, MAC)
    assert seen == [0, 1, 2]
    assert a.packed[8:14] == c3 and is_checksum_neutral(a)
    # by hand: 2001+0db8+0001+0002+1234+5678+9abc folds to 0x3125; 0xc001-0x3125 = 0x8edc
    assert a == ipaddress.IPv6Address("2001:db8:1:2:1234:5678:9abc:8edc")


def test_address_errors() -> None:
    with pytest.raises(AddressError, match="/64"):
        neutral_clat_address(N("2001:db8::/48"), MAC)
    with pytest.raises(V6mostlyError, match="attempt"):
        neutral_clat_address(UPLINK, MAC, attempt=-1)


@settings(max_examples=300, deadline=None)
@given(
    net=st.integers(0, (1 << 64) - 1),
    seed=st.binary(max_size=32),
    v4=st.integers(1, (1 << 32) - 1),
    attempt=st.integers(0, 1000),
)
def test_address_properties(net: int, seed: bytes, v4: int, attempt: int) -> None:
    prefix = N((net << 64, 64))
    ipv4 = ipaddress.IPv4Address(v4)
    a = neutral_clat_address(prefix, seed, ipv4, attempt)
    assert a in prefix
    assert is_checksum_neutral(a, ipv4)
    assert ones_sum(a.packed) == ones_sum(ipv4.packed)  # same canonical sum, not just mod
    iid = int(a) & ((1 << 64) - 1)
    assert not is_reserved_iid(iid)
    assert iid & 0xFFFF not in (0, 0xFFFF)
    assert neutral_clat_address(prefix, seed, ipv4, attempt) == a


@pytest.mark.parametrize(
    ("mtu", "v4mtu"), [(1500, 1480), (1280, 1260), (1000, 1260), (9000, 8980), (70000, 65535)]
)
def test_ipv4_mtu(mtu: int, v4mtu: int) -> None:
    assert ipv4_mtu_for(mtu) == v4mtu


# -- cross-check with the translator ------------------------------------------------------


def _clat_translator(addr: ipaddress.IPv6Address) -> Translator:
    return Translator(TranslatorConfig(pool6="64:ff9b::/96", eam=[(f"{addr}/128", "192.0.0.1/32")]))


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_translation_leaves_checksum_unchanged(proto: str) -> None:
    """192.0.0.1 <-> the CLAT address by EAM, 8.8.8.8 <-> 64:ff9b::808:808 by pool6:
    both neutral, so the transport checksum bytes cross unchanged, both ways."""
    addr = neutral_clat_address(UPLINK, MAC)
    xl = _clat_translator(addr)
    l4 = UDP(sport=40000, dport=53) if proto == "udp" else TCP(sport=40000, dport=443, seq=7)
    pkt4 = bytes(IP(src="192.0.0.1", dst="8.8.8.8", ttl=64) / l4 / Raw(b"464XLAT"))
    v = xl.translate(pkt4)
    assert v.drop is None and len(v.packets) == 1
    p6 = IPv6(v.packets[0])
    assert (p6.src, p6.dst) == (str(addr), "64:ff9b::808:808")
    layer = UDP if proto == "udp" else TCP
    c4 = IP(pkt4)[layer].chksum
    assert p6[layer].chksum == c4
    # and scapy agrees the unchanged checksum is right for IPv6
    fresh = IPv6(bytes(p6))
    del fresh[layer].chksum
    assert IPv6(bytes(fresh))[layer].chksum == c4
    # back: 64:ff9b::808:808 -> CLAT address, unchanged again
    reply6 = bytes(IPv6(src="64:ff9b::808:808", dst=str(addr)) / l4 / Raw(b"reply"))
    back = xl.translate(reply6)
    assert back.drop is None
    p4 = IP(back.packets[0])
    assert (p4.src, p4.dst) == ("8.8.8.8", "192.0.0.1")
    assert p4[layer].chksum == IPv6(reply6)[layer].chksum


def test_non_neutral_address_changes_checksum() -> None:
    """The control: one bit off and the translator must rewrite the checksum."""
    addr = ipaddress.IPv6Address(int(neutral_clat_address(UPLINK, MAC)) ^ 1)
    xl = _clat_translator(addr)
    pkt4 = bytes(IP(src="192.0.0.1", dst="8.8.8.8") / UDP(sport=1, dport=2) / Raw(b"x"))
    p6 = IPv6(xl.translate(pkt4).packets[0])
    assert p6[UDP].chksum != IP(pkt4)[UDP].chksum


# -- the Pref64 tracker: pinned -------------------------------------------------------------


def test_pinned_wins_and_never_expires() -> None:
    t = Pref64Tracker(pinned=P1)
    t.start(0.0)
    evs = t.events()
    assert changes(evs) == [(None, P1, Pref64Source.PINNED)]
    assert isinstance(evs[0], Pref64Changed) and evs[0].reason == "start"
    assert not t.dns_query_due(0.0) and not t.dns_wanted()
    assert t.rs_due(0.0)  # an RS on start regardless (the CLAT address needs the /64)
    t.on_ra_pref64(P2, 1800, R1, 1.0)
    t.on_dns_result([WKP], 300, 2.0)
    t.tick(1e9)
    assert changes(t.events()) == []
    cur = t.current()
    assert cur is not None and (cur.prefix, cur.source, cur.origin) == (P1, "pinned", "--pref64")
    assert cur.remaining(1e9) is None
    assert cur.describe(5.0) == "2001:db8:64::/96 from --pref64"


def test_pin_notes_and_refusal() -> None:
    t = Pref64Tracker(pinned=WKP)
    t.start(0.0)
    (ev,) = t.events()
    assert isinstance(ev, Pref64Changed) and "Well-Known Prefix" in ev.notes[0]
    with pytest.raises(AddressError, match=r"--pref64 2001:db8:0:0:ff00::/96: .*u-octet"):
        Pref64Tracker(pinned=BAD_U)
    with pytest.raises(AddressError, match=r"RFC 6052 §2\.1"):
        t.set_pinned(BAD_WKP, 1.0)
    t.on_ra_pref64(P2, 100, R1, 2.0)
    t.set_pinned(None, 3.0)
    assert changes(t.events()) == [(WKP, P2, Pref64Source.RA)]


# -- RA PREF64 ---------------------------------------------------------------------------


def test_ra_lifetime_expiry_and_rs() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    assert t.events() == [] and t.current() is None
    assert t.rs_due(0.0) and t.dns_query_due(0.0)
    t.on_rs_sent(0.0)
    t.on_ra_pref64(P1, 1800, R1, 10.0)
    (ev,) = t.events()
    assert isinstance(ev, Pref64Changed)
    assert (ev.old, ev.new, ev.source, ev.origin) == (None, P1, Pref64Source.RA, "RA from fe80::1")
    assert ev.reason == "new PREF64 in RA from fe80::1 (lifetime 1800 s)"
    assert ev.prefix_changed
    assert not t.rs_due(100.0)  # the RA ended the solicitation
    assert not t.dns_query_due(100.0)  # RA carries PREF64: no RFC 7050
    cur = t.current()
    assert cur is not None and cur.remaining(100.0) == 1710.0
    assert cur.describe(100.0) == "2001:db8:64::/96 from RA from fe80::1, 1710 s left"
    assert t.next_deadline() == 1810.0
    t.tick(1809.5)
    assert t.events() == []
    t.tick(1810.0)
    (ev,) = t.events()
    assert isinstance(ev, Pref64Changed) and (ev.old, ev.new) == (P1, None)
    assert ev.reason == "PREF64 2001:db8:64::/96 from RA from fe80::1 expired (lifetime 1800 s)"
    assert t.rs_due(1810.0)  # ask again at once
    assert not t.dns_query_due(1810.0)  # the link speaks PREF64: expiry stops the CLAT
    assert t.why_none.startswith("no valid PREF64 in RAs on this link")


def test_suspend_longer_than_lifetime_then_resume() -> None:
    """Issue 9: SIGSTOP past the lifetime, SIGCONT: expiry, RS, the next RA restores it."""
    t = Pref64Tracker()
    t.start(0.0)
    t.on_ra_pref64(P1, 600, R1, 1.0)
    t.events()
    # resumed at 5000: the first call (whatever it is) applies the expiry first
    t.on_ra_pref64(P1, 600, R1, 5000.0)
    assert changes(t.events()) == [(P1, None, None), (None, P1, Pref64Source.RA)]
    cur = t.current()
    assert cur is not None and cur.expires == 5600.0


def test_new_prefix_replaces_and_refresh_does_not_flip_back() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    t.on_ra_pref64(P1, 1800, R1, 0.0)
    t.on_ra_pref64(P2, 1800, R1, 10.0)  # the router moves to P2, still announcing P1
    t.on_ra_pref64(P1, 1200, R1, 20.0)  # refresh of the old one
    t.on_ra_pref64(P2, 1800, R1, 20.0)
    assert changes(t.events()) == [(None, P1, "ra"), (P1, P2, "ra")]
    t.on_ra_pref64(P2, 0, R1, 30.0)  # withdrawn: back to P1, still valid
    (ev,) = t.events()
    assert isinstance(ev, Pref64Changed) and (ev.old, ev.new) == (P2, P1)
    assert ev.reason == "withdrawn by RA from fe80::1 (lifetime 0, RFC 8781 §4)"
    t.on_ra_pref64(P1, 0, R1, 40.0)
    assert changes(t.events()) == [(P1, None, None)]
    assert not t.dns_query_due(40.0)
    t.on_ra_pref64(P1, 1800, R1, 50.0)  # back again: resumes
    assert changes(t.events()) == [(None, P1, "ra")]


def test_two_routers_and_same_prefix_from_another_router() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    t.on_ra_pref64(P1, 100, R1, 0.0)
    t.on_ra_pref64(P1, 1800, R2, 1.0)
    evs = t.events()
    assert changes(evs) == [(None, P1, "ra"), (P1, P1, "ra")]
    last = evs[-1]
    assert isinstance(last, Pref64Changed) and not last.prefix_changed
    assert last.origin == "RA from fe80::2"
    t.on_ra_pref64(P1, 0, R2, 2.0)  # R1's is still valid
    assert changes(t.events()) == [(P1, P1, "ra")]
    t.tick(100.0)
    assert changes(t.events()) == [(P1, None, None)]


def test_withdrawal_of_unknown_prefix_is_harmless() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    t.on_ra_pref64(P1, 100, R1, 0.0)
    t.on_ra_pref64(P2, 0, R1, 1.0)
    assert changes(t.events()) == [(None, P1, "ra")]


def test_ra_refused_prefix() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    t.on_ra_pref64(BAD_U, 1800, R1, 1.0)
    t.on_ra_pref64(BAD_U, 1800, R1, 2.0)  # reported once per link
    t.on_ra_pref64(BAD_WKP, 1800, R1, 3.0)
    evs = t.events()
    assert [type(e) for e in evs] == [Pref64Refused, Pref64Refused]
    e0, e1 = evs
    assert isinstance(e0, Pref64Refused) and isinstance(e1, Pref64Refused)
    assert (e0.prefix, e0.source, e0.origin, e0.at) == (
        BAD_U,
        Pref64Source.RA,
        "RA from fe80::1",
        1.0,
    )
    assert "u-octet" in e0.why and "RFC 6052 §2.2" in e0.why
    assert e1.prefix == BAD_WKP and "RFC 6052 §2.1" in e1.why
    assert t.refused_count == 3
    assert t.current() is None
    assert t.why_none.startswith("no valid PREF64 in RAs")
    t.on_link_change(10.0)
    t.on_ra_pref64(BAD_U, 1800, R1, 11.0)
    assert [type(e) for e in t.events()] == [Pref64Refused]


def test_negative_inputs_raise() -> None:
    t = Pref64Tracker()
    with pytest.raises(V6mostlyError):
        t.on_ra_pref64(P1, -1, R1, 0.0)
    with pytest.raises(V6mostlyError):
        t.on_dns_result([P1], -1, 0.0)


# -- RFC 7050 -------------------------------------------------------------------------------


def test_dns_used_until_ra_arrives() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    assert t.next_deadline() == 0.0
    assert t.dns_query_due(0.0)
    t.on_dns_query_sent(0.0)
    assert not t.dns_query_due(0.0)
    assert t.next_deadline() == 0.0  # the RS is still due
    t.on_rs_sent(0.0)
    t.on_dns_result([WKP], 300, 0.5)
    (ev,) = t.events()
    assert isinstance(ev, Pref64Changed)
    assert (ev.new, ev.source, ev.origin) == (WKP, Pref64Source.DNS, DNS_ORIGIN)
    assert ev.reason == "ipv4only.arpa (RFC 7050) answered 64:ff9b::/96 (TTL 300 s)"
    cur = t.current()
    assert cur is not None and cur.remaining(100.0) is None
    assert t.next_deadline() == 4.0  # second RS
    t.on_rs_sent(4.0)
    t.on_rs_sent(8.0)
    assert t.next_deadline() == 300.5
    assert not t.dns_query_due(300.4) and t.dns_query_due(300.5)
    t.on_ra_pref64(WKP, 1800, R1, 301.0)  # RA wins; same prefix, new source
    evs = t.events()
    assert changes(evs) == [(WKP, WKP, "ra")]
    assert isinstance(evs[0], Pref64Changed) and not evs[0].prefix_changed
    assert not t.dns_query_due(400.0) and t.next_deadline() == 2101.0


@pytest.mark.parametrize(("ttl", "due"), [(0, 30.0), (10, 30.0), (3600, 3600.0), (10**7, 86400.0)])
def test_dns_recheck_follows_ttl_within_bounds(ttl: int, due: float) -> None:
    t = Pref64Tracker()
    t.start(0.0)
    for _ in range(3):
        t.on_rs_sent(0.0)
    t.on_dns_result([P1], ttl, 0.0)
    assert t.next_deadline() == due
    assert not t.dns_query_due(due - 0.001) and t.dns_query_due(due)


def test_dns_failures_back_off_and_keep_last_good() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    for _ in range(3):
        t.on_rs_sent(0.0)
    t.on_dns_result([P1], 60, 0.0)
    t.events()
    now = 60.0
    retries = []
    for _ in range(9):
        assert t.dns_query_due(now)
        t.on_dns_query_sent(now)
        t.on_dns_failure(now)
        (ev,) = t.events()
        assert isinstance(ev, DnsRetry) and ev.kept == P1
        retries.append(ev.retry_at - now)
        assert t.next_deadline() == ev.retry_at
        assert not t.dns_query_due(ev.retry_at - 0.1)
        now = ev.retry_at
    assert retries == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    cur = t.current()
    assert cur is not None and cur.prefix == P1  # kept through the failures
    t.on_dns_result([P1], 60, now)  # success resets the backoff; nothing changed
    assert t.events() == []
    t.on_dns_failure(now + 60)
    (ev,) = t.events()
    assert isinstance(ev, DnsRetry) and (ev.failures, ev.retry_at) == (1, now + 65)


def test_dns_query_timeout_counts_as_failure() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    for _ in range(3):
        t.on_rs_sent(0.0)
    t.on_dns_query_sent(0.0)
    assert t.next_deadline() == 30.0
    t.tick(29.0)
    assert t.events() == []
    t.tick(30.0)
    (ev,) = t.events()
    assert isinstance(ev, DnsRetry) and (ev.failures, ev.retry_at, ev.kept) == (1, 35.0, None)
    assert t.why_none == (
        "no PREF64 in RAs; ipv4only.arpa (RFC 7050) failing (1 failures, next try at 35; "
        "last: start)"
    )


def test_dns_answer_without_prefix_clears() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    t.on_dns_result([P1], 60, 0.0)
    t.on_dns_result([], 60, 60.0)
    evs = t.events()
    assert changes(evs) == [(None, P1, "dns"), (P1, None, None)]
    last = evs[-1]
    assert isinstance(last, Pref64Changed)
    assert last.reason == "ipv4only.arpa (RFC 7050) has no AAAA: no DNS64/NAT64 here"


def test_dns_refuses_bad_prefixes_and_uses_first_good() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    t.on_dns_result([BAD_U, P2, P1], 60, 0.0)
    evs = t.events()
    assert isinstance(evs[0], Pref64Refused) and evs[0].source is Pref64Source.DNS
    assert changes(evs) == [(None, P2, "dns")]
    t.on_dns_result([BAD_U], 60, 60.0)  # a good answer of only bad prefixes: none
    assert changes(t.events()) == [(P2, None, None)]
    assert t.refused_count == 2


# -- link changes ------------------------------------------------------------------------------


def test_link_change_requeries_and_keeps_dns_prefix() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    for _ in range(3):
        t.on_rs_sent(0.0)
    t.on_dns_result([P1], 3600, 0.0)
    t.on_dns_failure(3600.0)
    t.on_dns_failure(3605.0)
    t.events()
    t.on_link_change(3606.0)
    assert t.events() == []  # still P1 from DNS
    assert t.dns_query_due(3606.0) and t.rs_due(3606.0)
    t.on_dns_failure(3607.0)  # backoff starts over
    (ev,) = t.events()
    assert isinstance(ev, DnsRetry) and (ev.failures, ev.retry_at, ev.kept) == (1, 3612.0, P1)


def test_rs_retransmission() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    sent = []
    now = 0.0
    while (d := t.next_deadline()) is not None and d < 100:
        now = d
        t.tick(now)
        if t.rs_due(now):
            t.on_rs_sent(now)
            sent.append(now)
        if t.dns_query_due(now):
            t.on_dns_query_sent(now)
            t.on_dns_result([], 1000, now)
    assert sent == [0.0, 4.0, 8.0]  # RFC 4861 §6.3.7: 3 RSs, 4 s apart


def test_link_change_reopens_dns_after_withdrawal() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    t.on_dns_result([P2], 3600, 0.0)
    t.on_ra_pref64(P1, 1800, R1, 1.0)
    t.on_ra_pref64(P1, 0, R1, 2.0)
    assert changes(t.events()) == [(None, P2, "dns"), (P2, P1, "ra"), (P1, None, None)]
    assert not t.dns_query_due(3600.0)
    t.on_link_change(4000.0)  # maybe another network: RFC 7050 again, and the kept P2
    assert changes(t.events()) == [(None, P2, "dns")]
    assert t.dns_query_due(4000.0)


def test_link_change_unconfirmed_ra_prefix_dropped() -> None:
    t = Pref64Tracker()
    t.start(0.0)
    t.on_ra_pref64(P1, 1800, R1, 0.0)
    t.on_ra_pref64(P2, 1800, R2, 0.0)
    t.events()
    t.on_link_change(100.0)
    assert t.events() == []  # kept meanwhile
    assert t.next_deadline() == 100.0  # the RS
    t.on_rs_sent(100.0)
    t.on_ra_pref64(P1, 1800, R1, 101.0)  # R1 re-advertises P1; P2 (newer) still in use
    assert t.next_deadline() == 112.0  # the RA ended the solicitation; the confirm window
    t.tick(112.0)
    (ev,) = t.events()
    assert isinstance(ev, Pref64Changed) and (ev.old, ev.new) == (P2, P1)
    assert ev.reason == (
        "PREF64 2001:db8:65::/96 from RA from fe80::2 not re-advertised within 12 s "
        "of the link change"
    )
    assert t.rs_due(112.0)  # the prefix in use went: solicit again
    for at in (112.0, 116.0, 120.0):
        t.on_rs_sent(at)
    assert t.next_deadline() == 1901.0


# -- a model-based property ------------------------------------------------------------------

PREFIXES = [WKP, P1, P2, P64, BAD_U]
ops = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 4.0, 5.0, 12.0, 100.0, 2000.0]),
        st.one_of(
            st.tuples(
                st.just("ra"),
                st.sampled_from([R1, R2]),
                st.sampled_from(PREFIXES),
                st.sampled_from([0, 5, 100, 1800]),
            ),
            st.tuples(st.just("dns"), st.lists(st.sampled_from(PREFIXES), max_size=3)),
            st.tuples(st.just("tick")),
            st.tuples(st.just("link")),
            st.tuples(st.just("fail")),
        ),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(ops)
def test_tracker_matches_model(steps: list[tuple[float, tuple[object, ...]]]) -> None:
    """A plain model of the selection rules (module doc) agrees with the tracker after
    every step, and the Changed events chain (each old is the previous new)."""
    t = Pref64Tracker()
    t.start(0.0)
    ra: dict[tuple[str, N], list[float]] = {}  # key -> [expires, order, confirmed]
    order = 0
    signalled = False
    dns: N | None = None
    confirm_by: float | None = None
    now = 0.0
    seen: N | None = None
    valid = [p for p in PREFIXES if p != BAD_U]
    for dt, op in steps:
        now += dt
        # expiry first, as every tracker entry point does
        for k, (exp, _o, conf) in list(ra.items()):
            if now >= exp or (not conf and confirm_by is not None and now >= confirm_by):
                del ra[k]
        if confirm_by is not None and now >= confirm_by:
            confirm_by = None
        kind = op[0]
        if kind == "ra":
            _, router, prefix, life = op
            assert isinstance(router, str) and isinstance(prefix, N) and isinstance(life, int)
            t.on_ra_pref64(prefix, life, router, now)
            signalled = True
            if prefix in valid:
                if life == 0:
                    ra.pop((router, prefix), None)
                elif (router, prefix) in ra:
                    ra[(router, prefix)][0] = now + life
                    ra[(router, prefix)][2] = 1
                else:
                    order += 1
                    ra[(router, prefix)] = [now + life, order, 1]
        elif kind == "dns":
            answer = op[1]
            assert isinstance(answer, list)
            t.on_dns_result(answer, 60, now)
            dns = next((p for p in answer if p in valid), None)
        elif kind == "tick":
            t.tick(now)
        elif kind == "fail":
            t.on_dns_failure(now)
        else:
            t.on_link_change(now)
            signalled = False
            for v in ra.values():
                v[2] = 0
            confirm_by = now + 12.0 if ra else None
        if ra:
            (_r, want), _ = max(ra.items(), key=lambda kv: kv[1][1])
            want_src: str | None = "ra"
        elif not signalled and dns is not None:
            want, want_src = dns, "dns"
        else:
            want, want_src = None, None
        cur = t.current()
        assert (cur.prefix if cur else None) == want
        assert (cur.source if cur else None) == want_src
        assert (t.why_none == "") == (cur is not None)
        for e in t.events():
            if isinstance(e, Pref64Changed):
                assert e.old == seen and e.at == now
                seen = e.new
            elif isinstance(e, Pref64Refused):
                assert e.prefix == BAD_U
        assert seen == want
        d = t.next_deadline()
        # a deadline in the past only ever means "an RS or a query is due now"
        assert d is None or d > now or t.rs_due(now) or t.dns_query_due(now)
        if cur is not None and cur.expires is not None:
            assert d is not None and d <= cur.expires
