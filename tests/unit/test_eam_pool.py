"""RFC 7757 EAM table and RFC 6791 pool."""

import ipaddress

import pytest

from v6mostly.addr.eam import EamEntry, EamTable
from v6mostly.addr.pool6791 import Pool6791
from v6mostly.errors import AddressError


def a6(s: str) -> bytes:
    return ipaddress.IPv6Address(s).packed


def a4(s: str) -> bytes:
    return ipaddress.IPv4Address(s).packed


def test_longest_prefix_match_both_ways() -> None:
    # RFC 7757 §3.2: longest prefix match.
    t = EamTable(
        [
            EamEntry.parse("2001:db8:aaaa::/96", "192.0.2.0/32"),
            EamEntry.parse("2001:db8:bbbb::/120", "192.0.2.0/24"),
        ]
    )
    assert t.v4_to_v6(a4("192.0.2.0")) == a6("2001:db8:aaaa::")
    assert t.v4_to_v6(a4("192.0.2.7")) == a6("2001:db8:bbbb::7")
    assert t.v6_to_v4(a6("2001:db8:bbbb::7")) == a4("192.0.2.7")
    assert t.v6_to_v4(a6("2001:db8:aaaa::1234")) == a4("192.0.2.0")
    assert t.v6_to_v4(a6("2001:db8:cccc::1")) is None
    assert t.v4_to_v6(a4("198.51.100.1")) is None


def test_longer_ipv6_suffix() -> None:
    # RFC 7757 §3.2: the IPv4 suffix goes right after the IPv6 prefix.
    t = EamTable([EamEntry.parse("2001:db8:1c0:2::/72", "192.0.2.0/24")])
    assert t.v4_to_v6(a4("192.0.2.33")) == a6("2001:db8:1c0:2:21::")
    assert t.v6_to_v4(a6("2001:db8:1c0:2:21::")) == a4("192.0.2.33")


def test_bad_entries() -> None:
    with pytest.raises(AddressError, match="shorter than"):
        EamEntry.parse("2001:db8::/127", "192.0.2.0/24")
    with pytest.raises(AddressError, match="IPV6PREFIX=IPV4PREFIX"):
        EamEntry.parse_pair("2001:db8::/120")
    with pytest.raises(AddressError, match="collides"):
        EamTable(
            [
                EamEntry.parse("2001:db8::/120", "192.0.2.0/24"),
                EamEntry.parse("2001:db8::/120", "198.51.100.0/24"),
            ]
        )


def test_hairpin_membership() -> None:
    t = EamTable([EamEntry.parse("2001:db8:3::/120", "1.0.0.0/24")])
    assert t.has_v4(a4("1.0.0.9"))
    assert not t.has_v4(a4("1.0.1.9"))


def test_pool6791_pick_and_fallback() -> None:
    p = Pool6791.parse(["203.0.113.8/30"], "198.51.100.1", 4)
    assert len(p) == 2  # hosts of a /30
    assert p.pick(a4("1.2.3.4")) in (a4("203.0.113.9"), a4("203.0.113.10"))
    assert p.pick(a4("1.2.3.4")) == p.pick(a4("1.2.3.4"))  # stable per destination
    empty = Pool6791.parse([], "198.51.100.1", 4)
    assert empty.pick(a4("1.2.3.4")) == a4("198.51.100.1")
    with pytest.raises(AddressError, match="not IPv4"):
        Pool6791.parse(["2001:db8::1"], None, 4)
