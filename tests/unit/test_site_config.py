"""One validation pass over site.toml and plat.toml (issue 11): every mistake is one
line naming the file, the section, the key, the value and the rule, before the
router or the PLAT runs (``--dry-run`` is the systemd pre-start check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from v6mostly.cli import main
from v6mostly.config import load
from v6mostly.errors import ConfigError
from v6mostly.lab.topology import Lab
from v6mostly.site_config import SiteConfig, load_site

SITE = """
[site]
pref64 = "64:ff9b::/96"

[[interface]]
name = "lan0"
prefixes = ["2001:db8:1::/64"]
rdnss = ["2001:db8:1::1"]
dnssl = ["example.net"]

[interface.dhcp4]
subnet = "192.0.2.0/24"
pool = ["192.0.2.100-192.0.2.199"]
routers = ["192.0.2.1"]
server_address = "192.0.2.2"
domain = "example.net"
search = ["example.net"]
reservations = [{ mac = "02:00:00:00:00:01", address = "192.0.2.10" }]
v6only = true

[[relayed]]
name = "branch"
subnet = "198.51.100.0/24"
pool = ["198.51.100.100-198.51.100.199"]
routers = ["198.51.100.1"]
relays = ["198.51.100.1"]

[[class]]
name = "venue-ssid"
circuit_id = { split = [":", 2, "RubyKaigi 2025"] }
v6only = true
rollout_percent = 50

[[class]]
name = "printers"
mac_prefix = ["00:1b:a9"]
subnets = ["lan0"]
v6only = false

[[class]]
name = "tagged"
vendor_class = { prefix = "MSFT" }

[dhcp4]
lease_db = "LEASE_DIR/leases.sqlite"

[dns]
listen = ["2001:db8:1::1"]
allow = ["2001:db8:1::/64"]
"""


def site(tmp_path: Path, *changes: tuple[str, str]) -> str:
    text = SITE.replace("LEASE_DIR", str(tmp_path))
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    p = tmp_path / "site.toml"
    p.write_text(text)
    return str(p)


def error(tmp_path: Path, *changes: tuple[str, str]) -> str:
    """The one-line message, without the leading "PATH: "."""
    path = site(tmp_path, *changes)
    with pytest.raises(ConfigError) as e:
        load_site(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return msg[len(path) + 2 :]


def test_the_base_site_loads(tmp_path: Path) -> None:
    cfg = load_site(site(tmp_path))
    assert isinstance(cfg, SiteConfig)
    assert [c.name for c in cfg.classes] == ["venue-ssid", "printers", "tagged"]
    assert cfg.interfaces[0].dhcp4 is not None and cfg.relayed[0].name == "branch"


# -- unknown keys, at every level and in inline tables ---------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            (
                'reservations = [{ mac = "02:00:00:00:00:01"',
                'reservations = [{ hw_address = "02:00:00:00:00:01"',
            ),
            '[interface "lan0" dhcp4] reservations[0].hw_address = "02:00:00:00:00:01": '
            "unknown key (expected mac, client_id, address)",
        ),
        (
            ('"RubyKaigi 2025"] }', '"RubyKaigi 2025"], bogus = 1 }'),
            "[class #1] circuit_id.bogus = 1: unknown key (expected equals, contains, prefix, split)",
        ),
        (
            ('vendor_class = { prefix = "MSFT" }', 'vendor_class = { starts = "MSFT" }'),
            '[class #3] vendor_class.starts = "MSFT": unknown key '
            "(expected equals, contains, prefix, split)",
        ),
        (
            ("v6only = true\n\n[[relayed]]", "v6_only = true\n\n[[relayed]]"),
            '[interface "lan0" dhcp4] v6_only = true: unknown key (did you mean "v6only"?)',
        ),
        (
            ('relays = ["198.51.100.1"]', 'relays = ["198.51.100.1"]\nrelay = "x"'),
            '[relayed "branch"] relay = "x": unknown key (did you mean "relays"?)',
        ),
        (
            ('dnssl = ["example.net"]', 'dnssl = ["example.net"]\ncolour = 1'),
            '[interface "lan0"] colour = 1: unknown key',
        ),
        (
            ('pref64 = "64:ff9b::/96"', 'pref64 = "64:ff9b::/96"\nprefix64 = "x"'),
            '[site] prefix64 = "x": unknown key (did you mean "pref64"?)',
        ),
        (
            ("lease_db =", "leasedb = 1\nlease_db ="),
            '[dhcp4] leasedb = 1: unknown key (did you mean "lease_db"?)',
        ),
        (
            ('allow = ["2001:db8:1::/64"]', 'allow = ["2001:db8:1::/64"]\nallowed = []'),
            '[dns] allowed = []: unknown key (did you mean "allow"?)',
        ),
    ],
)
def test_unknown_keys_are_refused(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert error(tmp_path, change) == message


def plat(tmp_path: Path, old: str, new: str) -> str:
    text = Lab("x").plat_config()
    assert old in text, old
    p = tmp_path / "plat.toml"
    p.write_text(text.replace(old, new, 1))
    return str(p)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'outer = [{ ipv6 = "2001:db8:46::1", ipv4 = "198.51.100.1" }]',
            'outer = [{ ipv6 = "2001:db8:46::1", ipv4 = "198.51.100.1", ports = [1, 2] }]',
            "[napt66] outer[0].ports = [1, 2]: unknown key (expected ipv6, ipv4)",
        ),
        (
            'eam = [{ ipv6 = "2001:db8:46::1/128", ipv4 = "198.51.100.1/32" }]',
            'eam = [{ ipv6 = "2001:db8:46::1/128", ipv4 = "198.51.100.1/32", ipv5 = "" }]',
            '[translator] eam[0].ipv5 = "": unknown key (expected ipv6, ipv4)',
        ),
        (
            "udp_oneshot_ports = [53, 123]",
            'udp_oneshot_ports = [53, 123]\nprivate_egress = { ipv6 = "2001:db8:46::1", '
            'ipv4 = "198.51.100.1", destinations = ["10.0.0.0/8"], via = "x" }',
            '[napt66] private_egress.via = "x": unknown key (expected ipv6, ipv4, destinations)',
        ),
        (
            "mtu = 1500",
            "mtu = 1500\nmtus = 1",
            '[tun] mtus = 1: unknown key (did you mean "mtu"?)',
        ),
    ],
)
def test_plat_unknown_keys_in_inline_tables(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = plat(tmp_path, old, new)
    with pytest.raises(ConfigError) as e:
        load(path, plat=True)
    assert str(e.value) == f"{path}: {message}"


# -- addresses and names ----------------------------------------------------------------


def test_interface_name_where_an_address_is_expected(tmp_path: Path) -> None:
    assert error(
        tmp_path, ('listen = ["2001:db8:1::1"]', 'listen = ["2001:db8:1::1", "lan0"]')
    ) == (
        '[dns] listen[1] = "lan0": expected an IPv4 or IPv6 address to listen on '
        "(not an interface name)"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('dnssl = ["example.net"]', 'dnssl = ["example.net", "a..example.net"]'),
            '[interface "lan0"] dnssl[1] = "a..example.net": '
            "expected a domain name: empty label (RFC 1035 §3.1)",
        ),
        (
            ('search = ["example.net"]', 'search = [".example.net"]'),
            '[interface "lan0" dhcp4] search[0] = ".example.net": '
            "expected a domain name: empty label (RFC 1035 §3.1)",
        ),
        (
            ('domain = "example.net"', f'domain = "{"x" * 64}.net"'),
            f'[interface "lan0" dhcp4] domain = "{"x" * 64}.net": '
            "expected a domain name: a label is over 63 octets (RFC 1035 §2.3.4)",
        ),
        (
            ('domain = "example.net"', f'domain = "{"a" * 60 + (".a" + "b" * 59) * 4}"'),
            f'[interface "lan0" dhcp4] domain = "{"a" * 60 + (".a" + "b" * 59) * 4}": '
            "expected a domain name: over 255 octets (RFC 1035 §2.3.4)",
        ),
        (
            ('dnssl = ["example.net"]', 'dnssl = ["."]'),
            '[interface "lan0"] dnssl[0] = ".": '
            "expected a domain name: the root alone is not a search domain",
        ),
    ],
)
def test_invalid_domain_names(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert error(tmp_path, change) == message


def test_idna_and_trailing_dot_names_are_fine(tmp_path: Path) -> None:
    cfg = load_site(
        site(tmp_path, ('dnssl = ["example.net"]', 'dnssl = ["bücher.example", "example.net."]'))
    )
    assert cfg.interfaces[0].dnssl == ["bücher.example", "example.net."]


# -- DHCPv4 pools and subnets -----------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        (
            "192.0.2.1-192.0.2.50",
            '[interface "lan0" dhcp4] pool[0] = "192.0.2.1-192.0.2.50": contains 192.0.2.1, '
            "the router's own address (routers): it would be leased to a client",
        ),
        (
            "192.0.2.2-192.0.2.2",
            '[interface "lan0" dhcp4] pool[0] = "192.0.2.2-192.0.2.2": contains 192.0.2.2, '
            "the server's own address (server_address): it would be leased to a client",
        ),
    ],
)
def test_pool_holding_the_routers_or_servers_address(
    tmp_path: Path, pool: str, message: str
) -> None:
    change = ('pool = ["192.0.2.100-192.0.2.199"]', f'pool = ["{pool}"]')
    assert error(tmp_path, change) == message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            (
                'pool = ["192.0.2.100-192.0.2.199"]',
                'pool = ["192.0.2.100-192.0.2.199", "192.0.2.150-192.0.2.160"]',
            ),
            '[interface "lan0" dhcp4] pool[1] = "192.0.2.150-192.0.2.160": '
            "overlaps pool[0] 192.0.2.100-192.0.2.199",
        ),
        (
            (
                'subnet = "198.51.100.0/24"\npool = ["198.51.100.100-198.51.100.199"]',
                'subnet = "192.0.2.128/25"\npool = ["192.0.2.150-192.0.2.160"]',
            ),
            '[relayed "branch"] pool[0] = "192.0.2.150-192.0.2.160": '
            'overlaps pool[0] 192.0.2.100-192.0.2.199 of [interface "lan0" dhcp4]',
        ),
        (
            (
                'subnet = "198.51.100.0/24"\npool = ["198.51.100.100-198.51.100.199"]',
                'subnet = "192.0.2.0/24"\npool = ["192.0.2.200-192.0.2.210"]',
            ),
            '[relayed "branch"] subnet = "192.0.2.0/24": '
            'already served by [interface "lan0" dhcp4]; describe a subnet once',
        ),
        (
            ('name = "branch"', 'name = "lan0"'),
            '[relayed "lan0"] name = "lan0": [interface "lan0" dhcp4] has this name; '
            "[[class]] subnets name one subnet",
        ),
    ],
)
def test_overlapping_pools_and_duplicate_subnets(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    assert error(tmp_path, change) == message


# -- client classes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('mac_prefix = ["00:1b:a9"]\nsubnets = ["lan0"]\n', ""),
            '[class #2] name = "printers": no match criteria (circuit_id, remote_id, '
            "vendor_class, mac_prefix or subnets): the class would match every client",
        ),
        (
            ('circuit_id = { split = [":", 2, "RubyKaigi 2025"] }', "circuit_id = {}"),
            '[class #1] circuit_id = {}: "TEXT" or { equals | contains | prefix = "TEXT", '
            "split = [SEP, INDEX, VALUE] }",
        ),
        (
            ('name = "tagged"', 'name = "printers"'),
            '[class #3] name = "printers": class #2 has this name; names are unique',
        ),
        (
            ('subnets = ["lan0"]', 'subnets = ["lan0", "guest"]'),
            '[class #2] subnets[1] = "guest": no such subnet '
            "(the subnets, by interface or [[relayed]] name: lan0, branch)",
        ),
    ],
)
def test_class_rules(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert error(tmp_path, change) == message


# -- SLAAC, Pref64, lease database ------------------------------------------------------


def test_slaac_prefix_is_a_64(tmp_path: Path) -> None:
    change = ('prefixes = ["2001:db8:1::/64"]', 'prefixes = ["2001:db8:1::/64", "2001:db8:2::/56"]')
    assert error(tmp_path, change) == (
        '[interface "lan0"] prefixes[1] = "2001:db8:2::/56": '
        "a SLAAC prefix is a /64 (RFC 4862 §5.5.3 with the 64-bit IIDs of RFC 4291)"
    )


def test_napt66_inside_overlapping_the_pref64(tmp_path: Path) -> None:
    text = Lab("x").plat_config()
    inside = text.split("inside = [", 1)[1].split("]", 1)[0]
    path = plat(tmp_path, f"inside = [{inside}]", f'inside = [{inside}, "2001:db8:64::/64"]')
    with pytest.raises(ConfigError) as e:
        load(path, plat=True)
    assert str(e.value) == (
        f'{path}: [napt66] inside[1] = "2001:db8:64::/64": overlaps the Pref64 '
        "(pool6 2001:db8:64::/96): addresses in it are translated IPv4 destinations "
        "(RFC 6052 §2.2), not clients"
    )


def test_lease_db_directory_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gone = tmp_path / "gone"
    path = site(tmp_path, (f"{tmp_path}/leases.sqlite", f"{gone}/leases.sqlite"))
    message = (
        f'[dhcp4] lease_db = "{gone}/leases.sqlite": directory {gone} does not exist '
        "(the router does not create it; systemd: StateDirectory=v6mostly)"
    )
    with pytest.raises(ConfigError) as e:
        load_site(path)
    assert str(e.value) == f"{path}: {message}"
    assert not gone.exists()  # nothing created
    # --dry-run (the systemd pre-start check) says so too, and exits 2.
    assert main(["router", "--config", path, "--dry-run"]) == 2
    assert capsys.readouterr().err == f"v6mostly: error: {path}: {message}\n"
    # Not where the file is not used: a PLAT reading the site's Pref64, a site without DHCPv4.
    assert load_site(path, check_lease_db=False).lease_db == f"{gone}/leases.sqlite"
    text = Lab("x").plat_config()
    pool6 = next(line for line in text.splitlines() if line.startswith("pool6 = "))
    ppath = tmp_path / "plat.toml"
    ppath.write_text(f'site = "{path}"\n' + text.replace(pool6 + "\n", ""))
    assert str(load(str(ppath), plat=True).pref64()) == "64:ff9b::/96"
    bare = tmp_path / "bare.toml"
    bare.write_text(
        '[site]\npref64 = "64:ff9b::/96"\n[[interface]]\nname = "lan0"\n'
        f'[dhcp4]\nlease_db = "{gone}/leases.sqlite"\n'
    )
    assert load_site(str(bare)).interfaces[0].dhcp4 is None


# -- --dry-run shows what each class decides ---------------------------------------------


def test_dry_run_prints_class_criteria_and_decisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["router", "--config", site(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    want = """\
classes (in order; the first that matches and sets v6only decides 108):
class venue-ssid: option 108 on, rollout 50% (v6only = true; overrides the subnet's default)
    when circuit_id split(":")[2] == "RubyKaigi 2025"
class printers: option 108 off (v6only = false; overrides the subnet's default)
    when mac_prefix 00:1b:a9 and subnet lan0
class tagged: no 108 decision (the subnet's default applies)
    when vendor_class starts with "MSFT"
"""
    assert want in out
