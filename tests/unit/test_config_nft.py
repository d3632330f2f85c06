"""Configuration files, the nftables ruleset and --dry-run (no root needed)."""

from __future__ import annotations

import ipaddress
import mmap
import subprocess
import sys
from pathlib import Path

import pytest

from v6mostly.cli import main
from v6mostly.config import load
from v6mostly.errors import ConfigError
from v6mostly.lab.topology import Lab
from v6mostly.linux import netlink, nft
from v6mostly.siit.translator import Translator, TranslatorConfig
from v6mostly.siit.verdict import Drop, Stats

LAB_CONF = Lab("x").plat_config()


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "plat.toml"
    p.write_text(text)
    return str(p)


def test_lab_config_loads(tmp_path: Path) -> None:
    s = load(write(tmp_path, LAB_CONF), plat=True)
    assert s.translator.pool6 == "2001:db8:64::/96"
    assert s.napt66 is not None and str(s.napt66.outer[0].ipv4) == "198.51.100.1"
    assert s.tun.name == "nat64" and s.metrics_listen == "127.0.0.1:9464"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('pool6 = "2001:db8:64::/96"', 'pool6 = "64:ff9b::/96"'),
            None,  # fine on its own: the WKP rule is about embedded addresses
        ),
        (
            ('pool6 = "2001:db8:64::/96"', 'pool6 = "2001:db8:64::/95"'),
            '[translator] pool6 = "2001:db8:64::/95"',
        ),
        (("queues = 0", "queues = -1"), "[tun] queues = -1: expected an integer from 0 to 256"),
        (("mtu = 1500", 'mtu = "big"'), '[tun] mtu = "big": expected an integer'),
        (
            ('inside = ["2001:db8:1::/64"]', 'inside = ["2001:db8:1::1/64"]'),
            '[napt66] inside[0] = "2001:db8:1::1/64": expected an IPv6 prefix',
        ),
        (
            ('ipv4_address = "198.51.100.254"', 'ipv4_address = "2001:db8::1"'),
            "[translator] ipv4_address",
        ),
        (
            ('listen = "127.0.0.1:9464"', 'listen = "localhost"'),
            '[metrics] listen = "localhost": expected "ADDRESS:PORT"',
        ),
        (("txqueuelen = 10000", "txqueuelen = 10000\ncolour = 1"), "[tun] colour: unknown key"),
        (
            ('eam = [{ ipv6 = "2001:db8:46::1/128", ipv4 = "198.51.100.1/32" }]', "eam = []"),
            "outer[0]",
        ),
    ],
)
def test_config_errors_name_file_key_value_rule(
    tmp_path: Path, change: tuple[str, str], message: str | None
) -> None:
    assert change[0] in LAB_CONF
    path = write(tmp_path, LAB_CONF.replace(change[0], change[1]))
    if message is None:
        load(path, plat=True)
        return
    with pytest.raises(ConfigError) as e:
        load(path, plat=True)
    assert str(e.value).startswith(path + ": ")
    assert message in str(e.value)


def test_wkp_with_documentation_outer_in_eam_is_fine_but_cli_rejects_bad_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[tun\nname=1")
    assert main(["plat", "--config", path, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"v6mostly: error: {path}: not valid TOML")
    assert "Traceback" not in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plat", "--config", "/nonexistent/plat.toml", "--dry-run"]) == 2
    assert "/nonexistent/plat.toml: cannot read" in capsys.readouterr().err


def test_dry_run_prints_ruleset_routes_sysctls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plat", "--config", write(tmp_path, LAB_CONF), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sysctl net.ipv6.conf.all.forwarding=1" in out
    assert "ip route add 2001:db8:64::/96 dev nat64" in out
    assert "ip route add 198.51.100.1/32 dev nat64" in out
    assert "table inet v6mostly_nat64 {" in out
    assert "snat ip6 to [2001:db8:46::1]:1024-65535" in out
    assert 'ct timeout set "udp_oneshot"' in out


def test_siit_dry_run_from_flags(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "siit",
        "--tun",
        "siit7",
        "--pool6",
        "2001:db8:64::/96",
        "--eam",
        "2001:db8:46::/120=198.51.100.0/24",
        "--dry-run",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tun siit7" in out
    assert "no routes" in out  # TAYGA-like: drops into existing routing
    assert main([*argv, "--routes"]) == 0
    assert "ip route add 198.51.100.0/24 dev siit7" in capsys.readouterr().out


def test_siit_flag_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["siit", "--eam", "nonsense", "--dry-run"]) == 2
    assert "--eam 'nonsense'" in capsys.readouterr().err
    assert main(["siit", "--dry-run"]) == 2


def test_ruleset_is_accepted_by_nft_syntax_check(tmp_path: Path) -> None:
    """`nft -c` parses the ruleset without applying it (needs nft, not a namespace)."""
    text = LAB_CONF.replace(
        "udp_oneshot_ports = [53, 123]",
        'udp_oneshot_ports = [53, 123]\nprivate_egress = { ipv6 = "2001:db8:46::2", '
        'ipv4 = "198.51.100.2", destinations = ["10.0.0.0/8", "192.168.0.0/16"] }',
    ).replace(
        'eam = [{ ipv6 = "2001:db8:46::1/128", ipv4 = "198.51.100.1/32" }]',
        'eam = [{ ipv6 = "2001:db8:46::1/128", ipv4 = "198.51.100.1/32" },'
        ' { ipv6 = "2001:db8:46::2/128", ipv4 = "198.51.100.2/32" }]',
    )
    s = load(write(tmp_path, text), plat=True)
    rules = nft.render_plat_table(s)
    assert "2001:db8:64::a00:0/104" in rules  # 10.0.0.0/8 inside the /96
    r = subprocess.run(
        ["unshare", "-n", "nft", "-c", "-f", "-"],
        input=rules,
        text=True,
        capture_output=True,
        check=False,
    )
    if r.returncode != 0 and "Operation not permitted" in r.stderr:
        pytest.skip("needs root for unshare -n")  # CI is root: runs there
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("pref", "v4", "want"),
    [
        ("2001:db8:64::/96", "10.0.0.0/8", "2001:db8:64::a00:0/104"),
        ("2001:db8::/32", "10.0.0.0/8", "2001:db8:a00::/40"),
        ("2001:db8:100::/40", "192.168.0.0/16", "2001:db8:1c0:a800::/56"),
        ("2001:db8:100::/40", "192.168.1.16/28", "2001:db8:1c0:a801:10::/76"),
        ("2001:db8:1:2::/64", "10.1.0.0/16", "2001:db8:1:2:a:100::/88"),
    ],
)
def test_embed_prefix(pref: str, v4: str, want: str) -> None:
    got = nft.embed_prefix(ipaddress.IPv6Network(pref), ipaddress.IPv4Network(v4))
    assert str(got) == want


def test_route_plan_routes_eam_and_pool6(tmp_path: Path) -> None:
    s = load(write(tmp_path, LAB_CONF), plat=True)
    pl = netlink.plan(s)
    assert [str(r) for r in pl.routes] == [
        "2001:db8:64::/96",
        "198.51.100.1/32",
        "198.51.100.254/32",
        "2001:db8:46::fffe/128",
    ]


def test_stats_in_shared_memory_add_up() -> None:
    mm = mmap.mmap(-1, 8 * Stats.SIZE * 2)
    view = memoryview(mm).cast("Q")
    a, b = Stats(view[: Stats.SIZE]), Stats(view[Stats.SIZE :])  # type: ignore[arg-type]
    a.packets[1] += 3
    b.packets[1] += 4
    b.drops[Drop.MULTICAST] += 1
    a.hairpinned += 2
    total = Stats()
    total.merge(a)
    total.merge(b)
    assert total.packets[1] == 7 and total.hairpinned == 2 and total.drops[Drop.MULTICAST] == 1
    assert view[1] == 3  # the counters really live in the mapping


def test_multicast_is_dropped_without_icmp_error() -> None:
    from scapy.all import IP, UDP, IPv6

    xl = Translator(
        TranslatorConfig(
            pool6="2001:db8:64::/96", ipv6_address="2001:db8::1", ipv4_address="192.0.2.1"
        )
    )
    mld = bytes(IPv6(src="2001:db8:64::1", dst="ff02::16", hlim=1) / UDP())
    v = xl.translate(mld)
    assert v.drop is Drop.MULTICAST and v.packets == []
    v = xl.translate(bytes(IP(src="198.51.100.1", dst="224.0.0.251", ttl=1) / UDP()))
    assert v.drop is Drop.MULTICAST and v.packets == []


def test_python_m_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "v6mostly", "pref64", "check", "2001:db8:64::/96"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0 and "valid Pref64::/96" in r.stdout


@pytest.mark.parametrize("name", ["plat", "siit"])
def test_shipped_examples_dry_run(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parents[2] / "contrib" / "examples" / f"{name}.toml"
    assert main([name, "--config", str(path), "--dry-run"]) == 0
    assert "tun " in capsys.readouterr().out


def test_private_egress_through_wkp_is_refused(tmp_path: Path) -> None:
    text = (
        LAB_CONF.replace('pool6 = "2001:db8:64::/96"', 'pool6 = "64:ff9b::/96"')
        .replace(
            "udp_oneshot_ports = [53, 123]",
            'udp_oneshot_ports = [53, 123]\nprivate_egress = { ipv6 = "2001:db8:46::2", '
            'ipv4 = "198.51.100.2", destinations = ["10.0.0.0/8"] }',
        )
        .replace(
            'eam = [{ ipv6 = "2001:db8:46::1/128", ipv4 = "198.51.100.1/32" }]',
            'eam = [{ ipv6 = "2001:db8:46::1/128", ipv4 = "198.51.100.1/32" },'
            ' { ipv6 = "2001:db8:46::2/128", ipv4 = "198.51.100.2/32" }]',
        )
    )
    with pytest.raises(
        ConfigError, match=r"private_egress.destinations\[0\] = \"10.0.0.0/8\".*RFC 6052 §3.1"
    ):
        load(write(tmp_path, text), plat=True)


def test_site_example_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parents[2] / "contrib" / "examples" / "site.toml"
    assert main(["router", "--config", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "PREF64 64:ff9b::/96 lifetime 1800 s (scaled 225)" in out
    assert "class venue-ssid: option 108 on" in out and "class printers: option 108 off" in out


def test_plat_takes_pref64_from_the_site_file(tmp_path: Path) -> None:
    site = Path(__file__).parents[2] / "contrib" / "examples" / "site.toml"
    text = LAB_CONF.replace('pool6 = "2001:db8:64::/96"\n', "")
    (tmp_path / "plat.toml").write_text(f'site = "{site}"\n' + text)
    s = load(str(tmp_path / "plat.toml"), plat=True)
    assert s.translator.pool6 == "64:ff9b::/96"
    (tmp_path / "plat.toml").write_text(f'site = "{site}"\n' + LAB_CONF)
    with pytest.raises(ConfigError, match="differs from the site's pref64 64:ff9b::/96"):
        load(str(tmp_path / "plat.toml"), plat=True)
