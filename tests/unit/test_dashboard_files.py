"""The dashboard and rule files' shape, and the metrics added for them (no root needed).

Their PromQL is evaluated against a real Prometheus in
``tests/integration/test_dashboard.py``; here: the JSON is a Grafana dashboard
whose every query goes through the datasource variable and uses only Grafana
variables the tests know how to replace, and the collectors behind the traffic
split and the NAPT66 port-use panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from v6mostly.lab.prometheus import (
    GRAFANA_VARS,
    JOBS,
    dashboard_targets,
    grafana_expr,
    scrape_config,
    selectors,
)
from v6mostly.metrics import NftCountersCollector, parse_exposition, parse_port_use

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "v6mostly.json"
RULES = ROOT / "contrib" / "prometheus" / "v6mostly-rules.yml"


def _panels(panels: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for p in panels:
        out.append(p)
        out += _panels(p.get("panels", []))  # type: ignore[arg-type]
    return out


def test_the_dashboard_is_grafana_json_with_one_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "v6mostly" and dash["schemaVersion"] >= 36
    (var,) = dash["templating"]["list"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    panels = _panels(dash["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])  # type: ignore[arg-type]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            for t in p["targets"]:  # type: ignore[attr-defined]
                assert t["datasource"] == p["datasource"] and t["refId"]


def test_the_issue_s_panels_are_there() -> None:
    titles = {t for t, _, _ in dashboard_targets(str(DASHBOARD))}
    for want in (
        "Traffic split: share of bytes",
        "Traffic split: bits/s (stacked)",
        "Clients that ask for option 108",
        "Clients told IPv6-only",
        "NAPT66 sessions against nf_conntrack_max",
        "Port use per outer address",
        "Translator drops by reason",
        "Fragments and Packet Too Big",
        "ipv4only.arpa and DNS64 queries",
        "Worker restarts",
    ):
        assert want in titles, want


def test_every_query_uses_known_variables_and_jobs() -> None:
    for title, _, expr in dashboard_targets(str(DASHBOARD)):
        for v in re.findall(r"\$\{?\w+", expr):
            assert v.replace("{", "") in GRAFANA_VARS, (title, v)
        e = grafana_expr(expr)
        assert "$" not in e
        for job in re.findall(r'job=~?"([^"]+)"', e):
            assert any(re.fullmatch(job, j) for j in JOBS), (title, job)
        assert selectors(e), title
    rules = RULES.read_text()
    for job in re.findall(r'job=~?"([^"]+)"', rules):
        assert any(re.fullmatch(job, j) for j in JOBS), job


def test_grafana_variables_are_replaced_longest_first() -> None:
    e = "rate(x[$__rate_interval]) + increase(x[${__range}]) + y[$__interval]"
    assert grafana_expr(e) == "rate(x[10s]) + increase(x[1m]) + y[5s]"
    assert grafana_expr("x[$__range]", {"$__range": "30s"}) == "x[30s]"


def test_selectors_name_every_metric_read() -> None:
    e = (
        'sum(rate(v6mostly_a_total{job="p",reason="x"}[5m])) / v6mostly_b'
        ' or absent(up{job="p"}) or v6mostly_b'
    )
    assert selectors(e) == ['v6mostly_a_total{job="p",reason="x"}', "v6mostly_b", 'up{job="p"}']


def test_scrape_config_is_json_yaml() -> None:
    cfg = json.loads(scrape_config({"j": ["127.0.0.1:1"]}, ["/r.yml"], "1s"))
    assert cfg["global"]["scrape_interval"] == "1s"
    assert cfg["rule_files"] == ["/r.yml"]
    assert cfg["scrape_configs"] == [
        {"job_name": "j", "static_configs": [{"targets": ["127.0.0.1:1"]}]}
    ]


def test_nft_counters_collector() -> None:
    reg = CollectorRegistry()
    reg.register(NftCountersCollector("t", lambda: {"native6_out": (3, 300), "to_nat64": (1, 60)}))
    m = parse_exposition(generate_latest(reg).decode())
    assert m['v6mostly_nft_counter_bytes_total{counter="native6_out",table="t"}'] == 300
    assert m['v6mostly_nft_counter_packets_total{counter="to_nat64",table="t"}'] == 1


LISTING = """\
ipv6     10 tcp      6 119 TIME_WAIT src=2001:db8:1::7 dst=2001:db8:64::cb00:710a sport=56168 dport=80 src=2001:db8:64::cb00:710a dst=2001:db8:46::1 sport=80 dport=56168 [ASSURED] mark=0 use=1
ipv6     10 tcp      6 113 TIME_WAIT src=2001:db8:1::8 dst=2001:db8:64::cb00:710b sport=35614 dport=80 src=2001:db8:64::cb00:710b dst=2001:db8:46::1 sport=80 dport=56168 [ASSURED] mark=0 use=1
ipv6     10 tcp      6 113 TIME_WAIT src=2001:db8:1::8 dst=2001:db8:64::cb00:710b sport=35615 dport=80 src=2001:db8:64::cb00:710b dst=2001:db8:46::2 sport=80 dport=35615 [ASSURED] mark=0 use=1
ipv6     10 udp      17 29 src=2001:db8:1::8 dst=2001:db8:64::cb00:710b sport=5353 dport=53 src=2001:db8:64::cb00:710b dst=2001:db8:46::1 sport=53 dport=1030 mark=0 use=1
ipv6     10 icmpv6   58 29 src=2001:db8:1::8 dst=2001:db8:64::cb00:710b type=128 code=0 id=7 src=2001:db8:64::cb00:710b dst=2001:db8:46::1 type=129 code=0 id=2000 mark=0 use=1
ipv6     10 tcp      6 118 SYN_SENT src=2001:db8:1::9 dst=2001:db8:64::cb00:710b sport=4242 dport=81 [UNREPLIED] src=2001:db8:64::cb00:710b dst=2001:db8:46::2 sport=81 dport=4242 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 6 flow entries have been shown.
"""


def test_port_use_counts_distinct_outer_ports_per_address_and_protocol() -> None:
    assert parse_port_use(LISTING) == {
        ("2001:db8:46::1", "tcp"): 1,  # one port shared by two destinations
        ("2001:db8:46::2", "tcp"): 2,  # one of them not answered yet
        ("2001:db8:46::1", "udp"): 1,
        ("2001:db8:46::1", "icmpv6"): 1,
    }
    assert parse_port_use("") == {}
