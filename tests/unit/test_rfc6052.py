"""RFC 6052 address mapping, validation and checksum neutrality."""

import ipaddress

import pytest

from v6mostly.addr.pref64 import is_neutral, propose_neutral
from v6mostly.addr.rfc6052 import Pref64, embed_ipv4, extract_ipv4, validate_pref64
from v6mostly.errors import AddressError

# RFC 6052 §2.4, Table 1: 192.0.2.33 embedded in each prefix length.
RFC6052_TABLE = [
    ("2001:db8::/32", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
    ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
]


@pytest.mark.parametrize(("prefix", "expected"), RFC6052_TABLE)
def test_rfc6052_section_2_4_table(prefix: str, expected: str) -> None:
    assert ipaddress.IPv6Address(embed_ipv4(prefix, "192.0.2.33")) == ipaddress.IPv6Address(
        expected
    )
    assert extract_ipv4(prefix, expected) == "192.0.2.33"


def test_wkp_refuses_non_global_ipv4() -> None:
    # RFC 6052 §3.1: the WKP MUST NOT be used to represent non-global IPv4 addresses.
    p = Pref64("64:ff9b::/96")
    assert p.embed(ipaddress.IPv4Address("10.1.2.3").packed) is None
    assert p.embed(ipaddress.IPv4Address("192.0.2.1").packed) is None  # documentation: not global
    assert (
        p.embed(ipaddress.IPv4Address("8.8.8.8").packed)
        == ipaddress.IPv6Address("64:ff9b::808:808").packed
    )
    assert p.extract(ipaddress.IPv6Address("64:ff9b::a01:203").packed) is None


def test_local_use_prefix_allows_private() -> None:
    # RFC 8215: 64:ff9b:1::/48 may carry non-global IPv4.
    notes = validate_pref64("64:ff9b:1::/96", ipaddress.IPv4Network("10.0.0.0/8"))
    assert any("RFC 8215" in n for n in notes)
    assert Pref64("64:ff9b:1::/96").embed(bytes([10, 0, 0, 1])) is not None


@pytest.mark.parametrize(
    ("prefix", "ipv4", "rule"),
    [
        ("2001:db8::/33", None, "RFC 6052 §2.2 allows only"),
        ("2001:db8:0:0:100::/96", None, "u-octet"),
        ("64:ff9b::/96", "10.0.0.0/8", "RFC 6052 §3.1"),
        ("ff00::/96", None, "multicast"),
        ("64:ff9b::/64", None, "Well-Known Prefix"),
    ],
)
def test_validation_names_the_rule(prefix: str, ipv4: str | None, rule: str) -> None:
    with pytest.raises(AddressError, match=rule):
        validate_pref64(prefix, ipaddress.IPv4Network(ipv4) if ipv4 else None)


def test_invalid_text() -> None:
    with pytest.raises(AddressError, match="not an IPv6 prefix"):
        validate_pref64("not-a-prefix")
    with pytest.raises(AddressError, match="no prefix length"):
        validate_pref64("64:ff9b::")


def test_wkp_is_checksum_neutral() -> None:
    # RFC 6052 §4.1: the WKP was chosen to be checksum neutral.
    assert is_neutral(ipaddress.IPv6Network("64:ff9b::/96"))
    assert not is_neutral(ipaddress.IPv6Network("2001:db8:64::/96"))
    # Non-aligned lengths cannot be neutral for every IPv4 address.
    assert not is_neutral(ipaddress.IPv6Network("2001:db8:100::/40"))


def test_propose_neutral_fills_a_free_group() -> None:
    base = ipaddress.IPv6Network("2001:db8:64::/96")
    props = propose_neutral(base)
    assert props
    for p in props:
        assert is_neutral(p.prefix)
        assert p.prefix.prefixlen == 96
        assert p.prefix.network_address.packed[:6] == base.network_address.packed[:6]
        validate_pref64(p.prefix)
    # The u-octet group (4) is used only when the value fits in its low byte.
    assert all(p.group != 4 or p.value < 0x100 for p in props)


def test_propose_neutral_from_a_32() -> None:
    props = propose_neutral(ipaddress.IPv6Network("2001:db8::/32"), 96)
    assert props and all(is_neutral(p.prefix) for p in props)
