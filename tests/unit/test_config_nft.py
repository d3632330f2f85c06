"""Configuration files, the nftables ruleset and --dry-run (no root needed)."""

from __future__ import annotations

import ipaddress
import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.nft_check import nft_check
from v6mostly.cli import main
from v6mostly.config import load
from v6mostly.errors import ConfigError
from v6mostly.lab.topology import Lab
from v6mostly.linux import nft
from v6mostly.services import plat_rules
from v6mostly.services.translator import dry_run_text
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
        (("txqueuelen = 10000", "txqueuelen = 10000\ncolour = 1"), "[tun] colour = 1: unknown key"),
        (('rps = "auto"', 'rps = "yes"'), '[tun] rps = "yes": expected true, false or "auto"'),
        (('rps = "auto"', "rps = 1"), '[tun] rps = 1: expected true, false or "auto"'),
        (("poll_us = 100", "poll_us = -5"), "[tun] poll_us = -5: expected an integer from 0"),
        (("poll_us = 100", "poll_us = 100\npoll_cpu = 101"), "[tun] poll_cpu = 101"),
        (("fastpath = true", "fastpath = 1"), "[tun] fastpath = 1: expected"),
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


@pytest.mark.parametrize(
    ("line", "rps", "poll"),
    [
        ('rps = "auto"', "auto", (100, 5)),
        ("rps = true", "on", (100, 5)),
        ("rps = false\npoll_cpu = 0", "off", (100, 0)),
    ],
)
def test_tun_rps_and_poll(tmp_path: Path, line: str, rps: str, poll: tuple[int, int]) -> None:
    text = LAB_CONF.replace('rps = "auto"', line)
    s = load(write(tmp_path, text), plat=True)
    assert (s.tun.rps, (s.tun.poll_us, s.tun.poll_cpu)) == (rps, poll)


def test_tun_fastpath(tmp_path: Path) -> None:
    """[tun] fastpath: on unless switched off, and --dry-run says which."""
    on = load(write(tmp_path, LAB_CONF.replace("fastpath = true\n", "")), plat=True)
    off = load(write(tmp_path, LAB_CONF.replace("fastpath = true", "fastpath = false")), plat=True)
    assert (on.tun.fastpath, off.tun.fastpath) == (True, False)
    assert "fast path: on" in dry_run_text(on, True)
    assert "fast path: off" in dry_run_text(off, True)


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
    rules = plat_rules.render_plat_table(s)
    assert "2001:db8:64::a00:0/104" in rules  # 10.0.0.0/8 inside the /96
    nft_check(rules)


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
    got = plat_rules.embed_prefix(ipaddress.IPv6Network(pref), ipaddress.IPv4Network(v4))
    assert str(got) == want


def test_route_plan_routes_eam_and_pool6(tmp_path: Path) -> None:
    s = load(write(tmp_path, LAB_CONF), plat=True)
    pl = plat_rules.plan(s)
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


def test_site_example_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).parents[2] / "contrib" / "examples" / "site.toml").read_text()
    path = tmp_path / "site.toml"  # the lease database's directory must exist
    path.write_text(text.replace("/var/lib/v6mostly/", f"{tmp_path}/"))
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


# -- issue 8: translator settings, the PLAT host's addresses, workers -----------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("decrement_ttl = 1", "[translator] decrement_ttl = 1: expected true or false"),
        (
            "icmp_ratelimit_ms = -1",
            "[translator] icmp_ratelimit_ms = -1: expected an integer from 0 to 3600000",
        ),
        (
            "icmp_ratelimit_burst = 0",
            "[translator] icmp_ratelimit_burst = 0: expected an integer from 1 to 1000000",
        ),
        ('icmp_msgs_per_sec = "1k"', '[translator] icmp_msgs_per_sec = "1k": expected an integer'),
        (
            "icmp_msgs_burst = 0",
            "[translator] icmp_msgs_burst = 0: expected an integer from 1 to 10000000",
        ),
    ],
)
def test_translator_keys_errors(tmp_path: Path, line: str, message: str) -> None:
    text = LAB_CONF.replace('ipv6_address = "', line + '\nipv6_address = "')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(path, plat=True)
    assert str(e.value) == f"{path}: {message}"


def test_translator_keys_load(tmp_path: Path) -> None:
    text = LAB_CONF.replace(
        'ipv6_address = "',
        "decrement_ttl = true\nicmp_ratelimit_ms = 0\nicmp_ratelimit_burst = 3\n"
        'icmp_msgs_per_sec = 100\nicmp_msgs_burst = 7\nipv6_address = "',
    )
    t = load(write(tmp_path, text), plat=True).translator
    assert t.decrement_ttl is True
    assert (t.icmp_ratelimit_ms, t.icmp_ratelimit_burst) == (0, 3)
    assert (t.icmp_msgs_per_sec, t.icmp_msgs_burst) == (100, 7)
    d = load(write(tmp_path, LAB_CONF), plat=True).translator
    assert d.decrement_ttl is False  # the default: copy
    assert (d.icmp_ratelimit_ms, d.icmp_ratelimit_burst) == (1000, 6)  # the kernel's
    assert (d.icmp_msgs_per_sec, d.icmp_msgs_burst) == (1000, 50)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["2001:db8::1"]', 'reachable_host_addresses[0] = "2001:db8::1": expected an IPv4 prefix'),
        ('["192.0.2.1/24"]', 'reachable_host_addresses[0] = "192.0.2.1/24": expected an IPv4'),
        ('"192.0.2.1"', 'reachable_host_addresses = "192.0.2.1": expected a list'),
        ("[7]", "reachable_host_addresses[0] = 7: expected an IPv4 address or prefix string"),
    ],
)
def test_reachable_host_addresses_errors(tmp_path: Path, value: str, message: str) -> None:
    text = LAB_CONF.replace(
        "udp_oneshot_ports = [53, 123]",
        f"udp_oneshot_ports = [53, 123]\nreachable_host_addresses = {value}",
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(path, plat=True)
    assert str(e.value).startswith(f"{path}: [napt66] ")
    assert message in str(e.value)


def test_reachable_host_address_through_wkp_is_refused(tmp_path: Path) -> None:
    text = LAB_CONF.replace('pool6 = "2001:db8:64::/96"', 'pool6 = "64:ff9b::/96"').replace(
        "udp_oneshot_ports = [53, 123]",
        'udp_oneshot_ports = [53, 123]\nreachable_host_addresses = ["192.0.2.1"]',
    )
    with pytest.raises(ConfigError, match=r"reachable_host_addresses\[0\] = \"192.0.2.1/32\""):
        load(write(tmp_path, text), plat=True)


def test_ruleset_refuses_translated_traffic_to_the_host(tmp_path: Path) -> None:
    s = load(write(tmp_path, LAB_CONF), plat=True)
    rules = plat_rules.render_plat_table(s)
    assert "counter denied_to_host { }" in rules
    assert "type filter hook input priority filter; policy accept;" in rules
    assert 'iifname "nat64" jump to_host' in rules
    assert 'counter name "denied_to_host" drop' in rules
    assert "reachable_host4" not in rules
    nft_check(rules)
    text = LAB_CONF.replace(
        "udp_oneshot_ports = [53, 123]",
        'udp_oneshot_ports = [53, 123]\nreachable_host_addresses = ["192.0.2.1", "203.0.113.0/28"]',
    )
    s2 = load(write(tmp_path, text), plat=True)
    rules = plat_rules.render_plat_table(s2)
    assert "elements = { 192.0.2.1, 203.0.113.0/28 }" in rules
    to_host = rules[rules.index("chain to_host") :]
    assert to_host.index("ip daddr @reachable_host4 accept") < to_host.index("denied_to_host")
    nft_check(rules)
    # A reload keeps the table (hooks, sets, counters) and replaces rules and elements.
    (tmp_path / "base.nft").write_text(plat_rules.render_plat_table(s))
    reload = plat_rules.render_reload(s, s2)
    assert "delete table" not in reload
    assert reload.startswith("flush table inet v6mostly_nat64\n")
    nft_check(reload, str(tmp_path / "base.nft"))
    back = plat_rules.render_reload(s2, s)
    assert "delete set inet v6mostly_nat64 reachable_host4" in back


def test_dry_run_shows_ttl_ratelimit_mtu_and_host_addresses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = LAB_CONF.replace("queues = 0", "queues = 3").replace(
        'ipv6_address = "', 'icmp_msgs_per_sec = 1000\nicmp_msgs_burst = 50\nipv6_address = "'
    )
    assert main(["plat", "--config", write(tmp_path, text), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ttl: copy (the kernel decrements into and out of the TUN)" in out
    assert "1000/s burst 50 in all (334/s burst 17 per worker)" in out
    assert "next-hop mtu: the TUN's (1500, followed at run time)" in out
    assert "host addresses reachable through the Pref64: none" in out
    argv = ["siit", "--pool6", "2001:db8:64::/96", "--decrement-ttl", "--dry-run"]
    assert main([*argv, "--icmp-ratelimit-ms", "0", "--icmp-msgs-per-sec", "0"]) == 0
    out = capsys.readouterr().out
    assert "ttl: decrement (TAYGA/Jool" in out
    assert "icmp errors: no per-source limit; no global limit" in out
    assert main([*argv, "--icmp-msgs-burst", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "v6mostly: error: --icmp-msgs-burst 0: expected an integer from 1 to 10000000\n"


def test_worker_config_slices_ids_and_shares_the_icmp_allowance() -> None:
    from v6mostly.services.translator import share, worker_config

    cfg = TranslatorConfig(pool6="2001:db8:64::/96", icmp_msgs_per_sec=1000, icmp_msgs_burst=50)
    spans = []
    for gen in range(3):
        for i in range(3):
            w = worker_config(cfg, i, 3, gen)
            xl = Translator(w)
            spans.append((gen % 2, i, xl.ip_id_base, xl.ip_id_end))
            assert (w.icmp_msgs_per_sec, w.icmp_msgs_burst) == (334, 17)
            ids = {xl.next_ip_id() for _ in range(xl.ip_id_end - xl.ip_id_base + 5)}
            assert ids == set(range(xl.ip_id_base, xl.ip_id_end))
    # Within one generation, and between a worker and its replacement: disjoint slices.
    for parity, i, lo, hi in spans:
        for parity2, j, lo2, hi2 in spans:
            if (parity, i) != (parity2, j):
                assert hi <= lo2 or hi2 <= lo
    seeds = {worker_config(cfg, 0, 3, 0).ip_id_seed for _ in range(20)}
    assert len(seeds) > 1  # random at every spawn
    assert (share(0, 4), share(1, 4), share(50, 4), share(1000, 1)) == (0, 1, 13, 1000)


def test_metrics_export_new_counters() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from v6mostly.metrics import DataplaneCollector, parse_exposition
    from v6mostly.services.dataplane import SharedCounters

    counters = SharedCounters(2)
    a, b = counters.stats(0), counters.stats(1)
    a.icmp_errors_suppressed += 5
    b.icmp_errors_suppressed += 2
    b.local_replies += 3
    a.packets[0] += 4
    b.packets[5] += 6
    b.drops[Drop.NOT_FORWARDABLE_DESTINATION] += 1
    a.drops[Drop.INNER_UNTRANSLATABLE_SOURCE] += 2

    class FakeDataplane:
        restarts = 0

        def __init__(self) -> None:
            self.counters = counters

        def alive(self) -> int:
            return 2

    reg = CollectorRegistry()
    reg.register(
        DataplaneCollector(
            FakeDataplane(),  # type: ignore[arg-type]
            "plain",
            nft_counters=lambda: vars(nft.NftCounters(denied_to_host=9)),
        )
    )
    m = parse_exposition(generate_latest(reg).decode())
    assert m["v6mostly_icmp_errors_suppressed_total"] == 7
    assert m["v6mostly_local_replies_total"] == 3
    assert m['v6mostly_dropped_packets_total{reason="not_forwardable_destination"}'] == 1
    assert m['v6mostly_dropped_packets_total{reason="inner_untranslatable_source"}'] == 2
    for d in Drop:  # every reason is exported
        assert f'v6mostly_dropped_packets_total{{reason="{d.name.lower()}"}}' in m
    assert m['v6mostly_worker_translated_packets_total{worker="0"}'] == 4
    assert m['v6mostly_worker_translated_packets_total{worker="1"}'] == 6
    assert m['v6mostly_filter_denied_packets_total{rule="denied_to_host"}'] == 9


def test_shared_link_mtu_word_does_not_touch_counters() -> None:
    from v6mostly.services.dataplane import SharedCounters

    c = SharedCounters(2)
    c.link_mtu = 1400
    st, extra = c.total()
    assert c.link_mtu == 1400 and sum(st.as_dict().values()) == 0 and not any(extra.values())


# -- the worker loop: stop between packets, the TUN MTU on SIGUSR1 ----------------------
# A SOCK_SEQPACKET socket pair stands in for a TUN queue: one packet per read.

XL_PAIR = TranslatorConfig(pool6="2001:db8:64::/96", eam=[("2001:db8:1::/120", "192.0.2.0/24")])


def _fork_worker(fd: int, counters: object, cfg: TranslatorConfig = XL_PAIR) -> int:
    from v6mostly.services.dataplane import SharedCounters, _worker_entry

    assert isinstance(counters, SharedCounters)
    xl = Translator(cfg, counters.stats(0))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            _worker_entry(fd, False, xl, counters.worker(0), counters)
        except SystemExit:
            code = 0
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def _udp6(i: int) -> bytes:
    from scapy.all import UDP, IPv6

    return bytes(
        IPv6(src="2001:db8:1::64", dst="2001:db8:64::c633:640a")
        / UDP(sport=1024 + i % 60000, dport=9)
        / i.to_bytes(4, "big")
    )


def test_worker_stops_between_packets_without_losing_one() -> None:
    """SIGTERM at random moments of a packet stream: every packet the worker took
    from the queue was translated and written; the rest is still in the queue."""
    import random
    import signal
    import socket
    import threading
    import time

    from v6mostly.services.dataplane import SharedCounters, _wait_pid

    rng = random.Random(8)
    packets = [_udp6(i) for i in range(3000)]
    for _round in range(12):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        counters = SharedCounters(1)
        pid = _fork_worker(theirs.fileno(), counters)
        replies: list[bytes] = []
        done = threading.Event()

        reader = ours.dup()  # its own timeout; sends stay non-blocking on ``ours``
        reader.settimeout(0.2)

        def drain(
            sock: socket.socket = reader,
            out: list[bytes] = replies,
            done: threading.Event = done,
        ) -> None:
            while not done.is_set():
                try:
                    out.append(sock.recv(2048))
                except TimeoutError:
                    continue
                except OSError:
                    return

        t = threading.Thread(target=drain)
        t.start()
        kill_at = rng.randrange(200, 2500)
        sent = 0
        exited = False
        for i, p in enumerate(packets):
            if i == kill_at:
                os.kill(pid, signal.SIGTERM)
            while True:
                try:
                    ours.send(p, socket.MSG_DONTWAIT)
                    sent += 1
                    break
                except BlockingIOError:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        exited = True
                        break
                    time.sleep(0.0002)
            if exited:
                break
        status = 0 if exited else _wait_pid(pid, 5)  # None: it had to be killed
        assert status == 0
        time.sleep(0.05)
        done.set()
        t.join()
        left = 0
        theirs.setblocking(False)
        while True:
            try:
                theirs.recv(2048)
                left += 1
            except BlockingIOError:
                break
        for sk in (ours, theirs, reader):
            sk.close()
        assert len(replies) + left == sent, (len(replies), left, sent, kill_at)
        assert all(r[0] >> 4 == 4 for r in replies)


def test_worker_blocked_in_read_stops_at_once() -> None:
    import signal
    import socket
    import time

    from v6mostly.services.dataplane import SharedCounters, _wait_pid

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        pid = _fork_worker(theirs.fileno(), SharedCounters(1))
        ours.send(_udp6(1))
        assert ours.recv(2048)[0] >> 4 == 4  # running, now blocked in readv
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        # As Dataplane.stop waits: a SIGTERM that lands just before the worker's readv
        # starts is repeated (_wait_pid), the read is interrupted, the worker leaves.
        assert _wait_pid(pid, 5) == 0 and time.monotonic() - t0 < 1.0


def test_worker_takes_a_new_tun_mtu_on_sigusr1() -> None:
    """RFC 7915 §4.2: a translated Fragmentation Needed carries at most the next-hop
    (TUN) MTU; the supervisor hands a new one over through shared memory + SIGUSR1."""
    import signal
    import socket
    import time

    from scapy.all import ICMP, IP, IPerror, IPv6, UDPerror
    from scapy.layers.inet6 import ICMPv6PacketTooBig

    from v6mostly.services.dataplane import SharedCounters

    quoted = IPerror(src="192.0.2.100", dst="198.51.100.10", flags="DF") / UDPerror(dport=53)
    fn = bytes(
        IP(src="198.51.100.10", dst="192.0.2.100")
        / ICMP(type=3, code=4, nexthopmtu=1600)
        / bytes(quoted / (b"x" * 20))
    )
    counters = SharedCounters(1)
    counters.link_mtu = 1500
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.settimeout(3)
    with ours, theirs:
        pid = _fork_worker(theirs.fileno(), counters)
        try:
            ours.send(fn)
            assert IPv6(ours.recv(2048))[ICMPv6PacketTooBig].mtu == 1500
            counters.link_mtu = 1400
            os.kill(pid, signal.SIGUSR1)
            time.sleep(0.1)
            ours.send(fn)
            assert IPv6(ours.recv(2048))[ICMPv6PacketTooBig].mtu == 1400
        finally:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


def test_gso_superpacket_is_not_too_big_for_the_tun_mtu() -> None:
    """With the TUN MTU as next-hop MTU, a 64 KB TSO super-packet with DF must still be
    translated as one (the kernel segments it to gso_size), not answered with PTB."""
    from scapy.all import IP, TCP, IPv6

    from v6mostly.services.worker_loops import WORKER_COUNTERS, handle_vnet_packet
    from v6mostly.siit.translator import HEADROOM
    from v6mostly.wire import vnet
    from v6mostly.wire.checksum import pseudo_sum_v4, pseudo_sum_v6

    xl = Translator(XL_PAIR)
    xl.set_link_mtu(1500, 1500)
    for pkt in (
        IP(src="198.51.100.10", dst="192.0.2.100", flags="DF") / TCP(dport=40000) / bytes(30000),
        IPv6(src="2001:db8:1::64", dst="2001:db8:64::c633:640a") / TCP(sport=40000) / bytes(30000),
    ):
        b = bytearray(bytes(pkt))
        v4 = b[0] >> 4 == 4
        l4 = 20 if v4 else 40
        ps = (
            pseudo_sum_v4(bytes(b[12:16]), bytes(b[16:20]), 6, len(b) - l4)
            if v4
            else pseudo_sum_v6(bytes(b[8:24]), bytes(b[24:40]), 6, len(b) - l4)
        )
        b[l4 + 16 : l4 + 18] = ps.to_bytes(2, "big")
        gso = vnet.GSO_TCPV4 if v4 else vnet.GSO_TCPV6
        hdr = vnet.VnetHeader(vnet.F_NEEDS_CSUM, gso, l4 + 20, 1448, l4, 16)
        buf = bytearray(HEADROOM) + hdr.to_wire() + b + bytearray(64)
        w = [0] * len(WORKER_COUNTERS)
        outs = handle_vnet_packet(xl, buf, vnet.VNET_HDR_LEN + len(b), w)
        assert len(outs) == 1
        out = bytes(outs[0])[vnet.VNET_HDR_LEN :]
        assert out[0] >> 4 == (6 if v4 else 4)  # translated, not an ICMP error
        assert xl.gso is False
    assert sum(xl.stats.drops) == 0


def test_siit_flags_go_through_the_files_validators(capsys: pytest.CaptureFixture[str]) -> None:
    """One TUN-name rule and one MTU range for `siit.toml` and for `siit` flags."""
    from v6mostly.cli import main

    assert main(["siit", "--tun", "a/b", "--pool6", "64:ff9b::/96", "--dry-run"]) == 2
    assert 'command line: [tun] name = "a/b": expected an interface name of 1-15' in (
        capsys.readouterr().err
    )
    assert main(["siit", "--mtu", "99", "--pool6", "64:ff9b::/96", "--dry-run"]) == 2
    assert "[tun] mtu = 99: expected an integer from 1280 to 65535" in capsys.readouterr().err
    assert main(["siit", "--tun", "xl0", "--pool6", "64:ff9b::/96", "--dry-run"]) == 0


def test_stop_repeats_sigterm_until_the_worker_leaves() -> None:
    """A SIGTERM that lands just before a worker's blocking read starts is handled only
    when the read returns: on an idle queue, never. ``_wait_pid`` (Dataplane.stop,
    replace_all) repeats it, so the worker leaves by itself instead of being killed.
    The child here misses the first one on purpose."""
    import signal
    import time

    from v6mostly.services.dataplane import RESIGNAL_S, _wait_pid

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        seen = [0]

        def handler(signum: int, frame: object) -> None:
            seen[0] += 1
            if seen[0] >= 2:
                os._exit(7)

        signal.signal(signal.SIGTERM, handler)
        os.write(w, b"!")
        while True:
            time.sleep(1)
    os.close(w)
    assert os.read(r, 1) == b"!"
    os.close(r)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    status = _wait_pid(pid, 5)
    assert status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
    assert time.monotonic() - t0 >= RESIGNAL_S
