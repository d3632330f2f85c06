"""The Grafana dashboard and the alert rules, evaluated against a real Prometheus.

Debian's ``prometheus`` runs in the site lab's ``plat`` node (``lab/prometheus.py``)
and scrapes every service of the lab once a second: the PLAT, the router, the CLAT
on the ``mostly`` client and the site table's per-family counters. After traffic
on every path (NAT44, CLAT -> NAT64, DNS64, native IPv6, ipv4only.arpa, DHCPv4 with
and without option 108), every query of ``contrib/grafana/v6mostly.json`` and every
rule of ``contrib/prometheus/v6mostly-rules.yml`` is evaluated through the HTTP API:
a panel whose query returns nothing, or a metric selector that matches no series
(a renamed metric), fails here rather than leaving an empty panel in production.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_helpers import require_root, wait_for
from v6mostly.lab.prometheus import (
    JOBS,
    Prometheus,
    dashboard_targets,
    grafana_expr,
    selectors,
    start_prometheus,
)
from v6mostly.lab.topology import (
    PLAT_V6,
    SERVER4,
    SERVER6_NAME,
    SERVER_NAME,
    Lab,
    LabConfig,
    alive,
    namespaces,
    running_lab,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "v6mostly.json"
RULES = ROOT / "contrib" / "prometheus" / "v6mostly-rules.yml"
EXAMPLE_CONFIG = ROOT / "contrib" / "prometheus" / "prometheus.yml"
#: Alerts that must not fire in a healthy lab.
QUIET = ("V6mostlyPlatDown", "V6mostlyRouterDown", "V6mostlyNapt66SessionsNearLimit")


def _run(lab: Lab, node: str, *argv: str) -> str:
    r = lab.exec(node, list(argv), check=False, timeout=30)
    assert r.returncode == 0, f"{node}: {' '.join(argv)}: {r.stderr or r.stdout}"
    return r.stdout


def traffic(lab: Lab) -> None:
    """Something on every path the dashboard shows."""
    for _ in range(3):
        _run(lab, "legacy", "curl", "-sS", "-m", "10", "-o", "/dev/null", f"http://{SERVER4}/")
        _run(lab, "legacy", "curl", "-sS", "-m", "10", "-o", "/dev/null", f"http://{SERVER6_NAME}/")
        _run(lab, "mostly", "curl", "-sS", "-m", "10", "-o", "/dev/null", f"http://{SERVER4}/")
        _run(lab, "v6only", "curl", "-sS", "-m", "10", "-o", "/dev/null", f"http://{SERVER_NAME}/")
    _run(lab, "mostly", "curl", "-sS", "-m", "10", "-o", "/dev/null", f"http://{SERVER4}/1m.bin")
    _run(lab, "mostly", "ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER4)
    _run(lab, "v6only", "dig", "+short", "+time=2", f"@{PLAT_V6}", "ipv4only.arpa", "AAAA")
    # DHCPv4 while Prometheus watches: one client that asks for option 108, one that
    # does not (busybox udhcpc with no script: nothing is configured in the node).
    for extra in (["-O", "108"], []):
        _run(lab, "v6only", "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
             "-t", "3", "-T", "1", "-s", "/bin/true", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    with running_lab(LabConfig(queues=1, site=True)) as lab:
        yield lab
    assert namespaces(lab.id) == []
    for pid in lab.pids.values():
        assert wait_for(lambda p=pid: not alive(p), 5), pid


@pytest.fixture(scope="module")
def prom(lab: Lab) -> Iterator[Prometheus]:
    p = start_prometheus(lab, [str(RULES)])
    try:
        p.wait_scraped(scrapes=2)
        traffic(lab)
        p.wait_scraped(scrapes=5)  # the traffic scraped, and rules evaluated since
        yield p
    finally:
        p.stop()
    assert not any(alive(pid) for pid in p.pids)


def _values(result: list[dict[str, object]]) -> list[float]:
    return [float(s["value"][1]) for s in result]  # type: ignore[index]


def test_promtool_accepts_the_rules_and_the_example_config() -> None:
    for argv in (
        ["promtool", "check", "rules", str(RULES)],
        ["promtool", "check", "config", str(EXAMPLE_CONFIG)],
    ):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_runs_in_the_lab_and_scrapes_every_service(lab: Lab, prom: Prometheus) -> None:
    assert prom.lab is lab and prom.node == "plat"
    assert Path(lab.path("prometheus/tsdb")).is_dir()  # its data is in the lab's directory
    jobs = {t["labels"]["job"]: t["health"] for t in prom.targets()}
    assert jobs == dict.fromkeys(JOBS, "up"), jobs


def test_every_panel_query_returns_data(prom: Prometheus) -> None:
    queries = list(dashboard_targets(str(DASHBOARD)))
    assert len(queries) >= 20
    empty: list[str] = []
    for title, legend, expr in queries:
        e = grafana_expr(expr)
        assert "$" not in e, (title, e)
        if not prom.query(e):
            empty.append(f"{title} [{legend}]: {e}")
        # each metric it reads exists: a renamed metric shows here by name
        for sel in selectors(e):
            if not prom.query(sel):
                empty.append(f"{title} [{legend}]: no series {sel}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_a_renamed_metric_is_caught(prom: Prometheus) -> None:
    expr = 'sum(rate(v6mostly_translated_packet_total{job="v6mostly-plat"}[10s]))'
    assert selectors(expr) == ['v6mostly_translated_packet_total{job="v6mostly-plat"}']
    assert prom.query(expr) == []
    assert prom.query(selectors(expr)[0]) == []


def _panel(title: str) -> list[tuple[str, str]]:
    out = [
        (legend, grafana_expr(e))
        for t, legend, e in dashboard_targets(str(DASHBOARD))
        if t == title
    ]
    assert out, title
    return out


def test_the_traffic_split_has_all_three_paths(prom: Prometheus) -> None:
    shares = {}
    now = time.time()  # one instant for the three shares
    for legend, expr in _panel("Traffic split: share of bytes"):
        (v,) = _values(prom.query(expr, at=now))
        shares[legend] = v
    assert set(shares) == {"native IPv6", "IPv4 via NAT64", "native IPv4 via NAT44"}
    assert all(0 < v < 1 for v in shares.values()), shares
    assert math.isclose(sum(shares.values()), 1.0, rel_tol=1e-6), shares
    for legend, expr in _panel("Traffic split: bits/s (stacked)"):
        assert _values(prom.query(expr)), legend


def test_option_108_adoption_is_a_share_of_the_clients(prom: Prometheus) -> None:
    for title in ("Clients that ask for option 108", "Clients told IPv6-only"):
        ((_, expr),) = _panel(title)
        (v,) = _values(prom.query(expr))
        assert 0 < v < 1, (title, v)  # udhcpc asked once with option 108 and once without


def test_napt66_port_use_per_outer_address(prom: Prometheus) -> None:
    res = prom.query('v6mostly_napt66_ports_in_use{job="v6mostly-plat"}')
    got = {(s["metric"]["outer"], s["metric"]["protocol"]) for s in res}
    assert ("2001:db8:46::1", "tcp") in got, got


def _rule_names() -> list[str]:
    return re.findall(r"^\s*- alert:\s*(\w+)", RULES.read_text(), re.M)


def test_every_alert_rule_is_loaded_evaluated_and_reads_existing_metrics(
    prom: Prometheus,
) -> None:
    names = _rule_names()
    assert len(names) >= 5
    assert all(n in names for n in QUIET)
    assert wait_for(
        lambda: all(r.get("lastEvaluation", "").startswith("20") for r in prom.rules()), 10
    )
    rules = {r["name"]: r for r in prom.rules()}
    assert sorted(rules) == sorted(names)
    bad: list[str] = []
    for name, rule in rules.items():
        if rule["health"] != "ok":
            bad.append(f"{name}: {rule['health']} {rule.get('lastError', '')}")
        prom.query(rule["query"])  # parses and evaluates (an empty vector when quiet)
        for sel in selectors(rule["query"]):
            if not prom.query(sel):
                bad.append(f"{name}: no series {sel}")
    assert not bad, "\n".join(bad)
    for name in QUIET:
        assert rules[name]["state"] == "inactive", rules[name]
        assert prom.query(rules[name]["query"]) == [], name
