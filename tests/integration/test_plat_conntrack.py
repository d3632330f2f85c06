"""The PLAT's NAPT66 state from the kernel's counters (no conntrack dump per scrape),
and port exhaustion made visible: with the outer port range cut to 10 ports, 50 UDP
flows from client6 to one IPv4 destination leave 40 bindings unmade; the metrics
count the insert failures and the PLAT logs them (rate limited)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_helpers import pyexec, require_root, wait_for
from v6mostly.lab.topology import PREF64, SERVER4, Lab, LabConfig, alive, running_lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    with running_lab(LabConfig(queues=1, router=False)) as lab:
        yield lab


def _server6() -> str:
    import ipaddress

    return str(ipaddress.IPv6Network(PREF64)[int(ipaddress.IPv4Address(SERVER4))])


def test_session_count_and_limit_come_from_the_kernel(lab: Lab) -> None:
    n0 = lab.metrics()["v6mostly_napt66_sessions"]
    code = f"""
import socket
for i in range(20):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"x", ("{_server6()}", 9))
    s.close()
"""
    pyexec(lab, "client6", code)
    m = lab.metrics()
    # 20 new UDP bindings (unreplied entries live 30 s): counted without a dump.
    assert m["v6mostly_napt66_sessions"] >= n0 + 20, m
    kernel = lab.exec("plat", ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout
    assert abs(m["v6mostly_napt66_sessions"] - int(kernel)) <= 2
    assert m["v6mostly_conntrack_max"] > 0
    assert m["v6mostly_conntrack_insert_failed_total"] == 0.0


def ctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """`v6mostly ctl` as an operator runs it on the PLAT box."""
    argv = [sys.executable, "-m", "v6mostly", "ctl", "--socket", lab.path("plat.sock"), *args]
    return lab.exec("plat", argv, check=False, timeout=30)


def test_ctl_status_stats_sessions_and_reload(lab: Lab) -> None:
    """Runs first in file order after the kernel-counter test (the PLAT as the lab
    started it): what an operator asks the running PLAT."""
    st = json.loads(ctl(lab, "--json", "status").stdout)[lab.path("plat.sock")]
    assert st["ok"] and st["daemon"] == "plat" and st["pref64"] == PREF64
    assert st["config"] == lab.path("plat.toml") and len(st["config_sha256"]) == 64
    assert st["workers"] == st["queues"] == 1 and st["mode"] in ("offload", "plain")
    text = ctl(lab, "status").stdout
    assert text.startswith("plat:\n") and f"pref64           {PREF64}" in text
    # A flow from a known client port, then: the binding in `ctl sessions`.
    code = f"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 40555))
s.sendto(b"x", ("{_server6()}", 9999))
"""
    pyexec(lab, "client6", code)
    out = json.loads(ctl(lab, "--json", "sessions").stdout)[lab.path("plat.sock")]
    rows = [r for r in out["sessions"] if r["client_port"] == 40555]
    assert len(rows) == 1, out
    r = rows[0]
    assert r["proto"] == "udp" and r["destination_ipv4"] == SERVER4
    assert r["destination_port"] == 9999 and r["expires_in"] > 0
    assert r["age"] is not None and 0 <= r["age"] <= 30  # nf_conntrack_timestamp on
    text = ctl(lab, "sessions", "--client", r["client"]).stdout
    assert f"udp    [{r['client']}]:40555 -> {SERVER4}:9999  as [{r['outer']}]" in text
    assert "  age " in text and " s, expires in " in text
    # Counters with their meaning; an unknown client has no session.
    text = ctl(lab, "stats", "--explain").stdout
    assert "packets_4to6_icmp" in text and "packets translated, by direction" in text
    assert "fastpath_packets" in text and "translated in the kernel" in text  # the UDP above
    none = json.loads(ctl(lab, "--json", "sessions", "--client", "2001:db8::dead").stdout)
    assert none[lab.path("plat.sock")]["total"] == 0
    # Reload: applied, then a broken file kept out with the reason.
    r1 = ctl(lab, "reload")
    assert r1.returncode == 0 and "plat: reloaded: " in r1.stdout, r1.stdout + r1.stderr
    assert "plat.toml applied (1 EAM entries)" in r1.stdout
    conf = Path(lab.path("plat.toml"))
    good = conf.read_text()
    conf.write_text(good.replace("[napt66]\n", "[napt66]\nbogus_key = 1\n", 1))
    try:
        r2 = ctl(lab, "reload")
        assert r2.returncode == 1 and "plat: NOT reloaded: keeping the running" in r2.stdout
        assert "bogus_key" in r2.stdout
    finally:
        conf.write_text(good)
    assert ctl(lab, "status").returncode == 0  # still running


def test_sighup_applies_napt66_and_names_tun_changes(lab: Lab) -> None:
    """[napt66]: new one-shot UDP ports land in the running nft table (same table,
    counters kept); [tun]: named as needing a restart, not silently ignored."""
    conf = Path(lab.path("plat.toml"))
    good = conf.read_text()
    assert "udp_oneshot_ports = [53, 123]" in good and "mtu = 1500" in good
    table = lab.exec("plat", ["nft", "list", "table", "inet", "v6mostly_nat64"]).stdout
    assert "5353" not in table
    conf.write_text(
        good.replace("udp_oneshot_ports = [53, 123]", "udp_oneshot_ports = [53, 123, 5353]")
    )
    try:
        r = ctl(lab, "reload")
        assert r.returncode == 0 and "plat.toml applied" in r.stdout, r.stdout
        table = lab.exec("plat", ["nft", "list", "table", "inet", "v6mostly_nat64"]).stdout
        assert "5353" in table, table
        conf.write_text(conf.read_text().replace("mtu = 1500", "mtu = 1400"))
        r = ctl(lab, "reload")
        assert r.returncode == 0 and "[tun] and [metrics] changes need a restart" in r.stdout, (
            r.stdout
        )
        assert "mtu 1500" in lab.exec("plat", ["ip", "link", "show", "nat64"]).stdout
    finally:
        conf.write_text(good)
        ctl(lab, "reload")


def test_sighup_applies_translator_eam_and_its_route(lab: Lab) -> None:
    """[translator]/[routing]: a new EAM entry is translated after the reload, and the
    route for its IPv4 side goes into the TUN (the PLAT manages its routes)."""
    conf = Path(lab.path("plat.toml"))
    good = conf.read_text()
    old_eam = good.split("eam = [", 1)[1].split("]", 1)[0]
    extra = ', { ipv6 = "2001:db8:47::/121", ipv4 = "198.51.100.128/25" }'
    assert (
        "198.51.100.128/25" not in lab.exec("plat", ["ip", "route", "show", "dev", "nat64"]).stdout
    )
    conf.write_text(good.replace(f"eam = [{old_eam}]", f"eam = [{old_eam}{extra}]", 1))
    try:
        before = json.loads(ctl(lab, "--json", "status").stdout)[lab.path("plat.sock")]
        r = ctl(lab, "reload")
        assert r.returncode == 0 and "(2 EAM entries)" in r.stdout, r.stdout
        st = json.loads(ctl(lab, "--json", "status").stdout)[lab.path("plat.sock")]
        assert st["eam_entries"] == before["eam_entries"] + 1
        routes = lab.exec("plat", ["ip", "route", "show", "dev", "nat64"]).stdout
        assert "198.51.100.128/25" in routes, routes
    finally:
        conf.write_text(good)
        ctl(lab, "reload")
    routes = lab.exec("plat", ["ip", "route", "show", "dev", "nat64"]).stdout
    assert "198.51.100.128/25" not in routes, routes  # the entry went, its route too


def test_sighup_applies_routing_table_and_names_metrics(lab: Lab) -> None:
    """[routing] table: the policy rule for traffic leaving the TUN follows the file
    (added, moved, removed); [metrics] alone: named as needing a restart."""

    def rules(fam: str) -> str:
        return lab.exec("plat", ["ip", fam, "rule", "show"]).stdout

    conf = Path(lab.path("plat.toml"))
    good = conf.read_text()
    assert "[routing]" not in good and 'listen = "' in good
    assert "lookup 4646" not in rules("-4")
    try:
        for table in (4646, 4747):
            conf.write_text(good + f"\n[routing]\ntable = {table}\n")
            r = ctl(lab, "reload")
            assert r.returncode == 0 and "plat.toml applied" in r.stdout, r.stdout
            assert "need a restart" not in r.stdout, r.stdout
            for fam in ("-4", "-6"):
                text = rules(fam)
                assert f"iif nat64 lookup {table}" in text, text
                assert text.count("iif nat64 lookup") == 1, text
        conf.write_text(good)
        r = ctl(lab, "reload")
        assert r.returncode == 0 and "need a restart" not in r.stdout, r.stdout
        assert "iif nat64" not in rules("-4") + rules("-6")
        # [metrics] alone: the running endpoint stays, the reply says why.
        listen = good.split('listen = "', 1)[1].split('"', 1)[0]
        host = listen.rsplit(":", 1)[0]
        conf.write_text(good.replace(f'listen = "{listen}"', f'listen = "{host}:9999"', 1))
        r = ctl(lab, "reload")
        assert r.returncode == 0 and "[tun] and [metrics] changes need a restart" in r.stdout, (
            r.stdout
        )
        assert "v6mostly_" in str(lab.metrics())  # still served where it was
    finally:
        conf.write_text(good)
        ctl(lab, "reload")


def test_port_exhaustion_is_counted_and_logged(lab: Lab) -> None:
    conf = Path(lab.path("plat.toml"))
    text = conf.read_text()
    assert "[napt66]\n" in text
    conf.write_text(text.replace("[napt66]\n", "[napt66]\nport_min = 40000\nport_max = 40009\n", 1))
    pid = lab.pids["plat"]
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not alive(pid), 10)
    argv = ["plat", "--config", str(conf), "--control-socket", lab.path("plat.sock")]
    lab.spawn("plat", "plat", [sys.executable, "-m", "v6mostly", *argv])
    assert wait_for(lambda: "v6mostly_napt66_sessions" in str(lab.metrics()), 20)
    time.sleep(1.5)  # the PLAT's first conntrack reading is its baseline
    code = f"""
import socket
for i in range(50):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"x", ("{_server6()}", 7777))
    s.close()
"""
    pyexec(lab, "client6", code)
    assert wait_for(
        lambda: lab.metrics().get("v6mostly_conntrack_insert_failed_total", 0) >= 30, 5
    ), lab.metrics()
    log = Path(lab.path("plat.log"))
    assert wait_for(lambda: "insert failures (NAPT66 ports exhausted)" in log.read_text(), 5)
    assert log.read_text().count("insert failures (NAPT66 ports exhausted)") == 1
