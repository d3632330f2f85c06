"""A Prometheus in the site lab: it scrapes every service of the lab, as a site's would.

Debian's ``prometheus`` runs in the ``plat`` node (the router: PLAT, router and the
lab's nft exporter listen on its 127.0.0.1) and reaches the ``mostly`` client's CLAT
over the LAN. Its configuration, rules and data live in the lab's directory, so
``lab down`` removes them; the process is one of the lab's and dies with it.

::

    job v6mostly-plat    127.0.0.1:9464  v6mostly plat (NAT64, NAPT66, conntrack)
    job v6mostly-router  127.0.0.1:9466  v6mostly router (DHCPv4 + option 108, RA, DNS)
    job v6mostly-site    127.0.0.1:9467  the lab table's per-family forwarding counters
    job v6mostly-clat    [mostly]:9465   v6mostly clat on the mostly client

The site table's counters (native IPv6, native IPv4 through NAT44) are the router's
forwarding, which no v6mostly service counts: ``python -m v6mostly.lab.prometheus
nft-exporter`` serves them (``metrics.NftCountersCollector``), so that the traffic
split of the dashboard comes from Prometheus like every other panel.

The dashboard (``contrib/grafana/v6mostly.json``) and the alert rules
(``contrib/prometheus/v6mostly-rules.yml``) are evaluated against this Prometheus by
``tests/integration/test_dashboard.py``; ``tools/split_png.py`` draws the README's
picture of the traffic split from the same queries.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .topology import METRICS, ROUTER_METRICS, SITE_TABLE, LabError, alive, tail

if TYPE_CHECKING:
    from .topology import Lab

#: Prometheus' own HTTP API, inside the plat node.
LISTEN = "127.0.0.1:9090"
#: The lab's nft exporter (the site table's counters), inside the plat node.
NFT_EXPORTER = "127.0.0.1:9467"
#: The CLAT's metrics port in the ``mostly`` node (``site.CLAT_METRICS`` listens on [::]).
CLAT_PORT = 9465
JOBS = ("v6mostly-plat", "v6mostly-router", "v6mostly-site", "v6mostly-clat")
#: What the tests and the picture put in place of Grafana's variables.
GRAFANA_VARS = {"$__rate_interval": "10s", "$__interval": "5s", "$__range": "1m"}


def read_nft_counters(table: str) -> dict[str, tuple[int, int]]:
    """``{name: (packets, bytes)}`` of the named counters of ``inet TABLE`` ({} when absent)."""
    from ..linux.nft import table_counters

    return table_counters(table)


def scrape_config(
    targets: dict[str, list[str]], rule_files: Sequence[str] = (), interval: str = "1s"
) -> str:
    """prometheus.yml as text (JSON, which is YAML): one job per entry of ``targets``."""
    cfg: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": t}]} for job, t in targets.items()
        ],
    }
    return json.dumps(cfg, indent=2) + "\n"


def lab_targets(lab: Lab) -> dict[str, list[str]]:
    """Every metrics endpoint of the site lab, as the plat node reaches it."""
    from .site import client_ipv6

    clat = [a.split("/")[0] for a in client_ipv6(lab, "mostly") if a.endswith("/64")]
    if not clat:
        raise LabError(f"lab {lab.id}: the mostly client has no SLAAC address to scrape")
    return {
        "v6mostly-plat": [METRICS],
        "v6mostly-router": [ROUTER_METRICS],
        "v6mostly-site": [NFT_EXPORTER],
        "v6mostly-clat": [f"[{clat[0]}]:{CLAT_PORT}"],
    }


@dataclass
class Prometheus:
    """A Prometheus running in one of the lab's nodes; queried through its HTTP API."""

    lab: Lab
    node: str = "plat"
    listen: str = LISTEN
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET an API path inside the node; the decoded JSON (status "error" included)."""
        argv = ["curl", "-sS", "-m", "10", "-G"]
        for k, v in (params or {}).items():
            argv += ["--data-urlencode", f"{k}={v}"]
        r = self.lab.exec(self.node, [*argv, self.url + path], check=False, timeout=20)
        if r.returncode != 0:
            raise LabError(f"prometheus {path}: {r.stderr.strip()}")
        try:
            return dict(json.loads(r.stdout))
        except ValueError:
            raise LabError(f"prometheus {path}: not JSON: {r.stdout[:200]}") from None

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result (a list of samples) at ``at`` (default: now);
        LabError when it does not parse."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        d = self.get("/api/v1/query", params)
        if d.get("status") != "success":
            raise LabError(f"query {expr!r}: {d.get('errorType')}: {d.get('error')}")
        res = d["data"]["result"]
        if d["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": res}]
        return list(res)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        d = self.get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        if d.get("status") != "success":
            raise LabError(f"query {expr!r}: {d.get('errorType')}: {d.get('error')}")
        return list(d["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/targets")["data"]["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        groups = self.get("/api/v1/rules")["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    def wait_scraped(self, scrapes: int = 3, timeout: float = 30.0) -> None:
        """Until every target is up and has been scraped ``scrapes`` times (rate() works)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                ts = self.targets()
                ok = bool(ts) and all(t["health"] == "up" for t in ts)
                if ok:
                    n = self.query(f"min(count_over_time(up[{scrapes * 2}s]))")
                    if n and float(n[0]["value"][1]) >= scrapes:
                        return
                last = "; ".join(
                    f"{t['labels'].get('job')} {t['health']} {t.get('lastError', '')}" for t in ts
                )
            except LabError as e:
                last = str(e)
            time.sleep(0.5)
        raise LabError(f"prometheus: targets not scraped after {timeout:.0f} s: {last}")

    def _check_alive(self) -> None:
        for pid in self.pids:
            if not alive(pid):
                raise LabError("prometheus exited: " + tail(self.lab.path("prometheus.log"), 5))

    def stop(self) -> None:
        import signal

        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in self.pids):
            time.sleep(0.1)
        for pid in self.pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def start_prometheus(
    lab: Lab, rule_files: Sequence[str] = (), interval: str = "1s", timeout: float = 30.0
) -> Prometheus:
    """The nft exporter and Prometheus in the plat node, scraping the whole site lab.

    Returns once Prometheus answers; ``Prometheus.wait_scraped`` waits for data.
    """
    import sys

    if not lab.config.site:
        raise LabError("the lab's Prometheus scrapes the site lab (lab up --site)")
    prom = Prometheus(lab)
    prom.pids.append(
        lab.spawn(
            "plat",
            "nft-exporter",
            [
                sys.executable,
                "-m",
                "v6mostly.lab.prometheus",
                "nft-exporter",
                "--table",
                SITE_TABLE,
                "--listen",
                NFT_EXPORTER,
            ],
        )
    )
    data = lab.path("prometheus")
    os.makedirs(data, exist_ok=True)
    rules = []
    for i, src in enumerate(rule_files):  # copied: the lab's files stay in the lab's directory
        dst = os.path.join(data, f"rules-{i}-{os.path.basename(src)}")
        with open(src) as f, open(dst, "w") as g:
            g.write(f.read())
        rules.append(dst)
    conf = lab.path("prometheus.yml")
    with open(conf, "w") as f:
        f.write(scrape_config(lab_targets(lab), rules, interval))
    prom.pids.append(
        lab.spawn(
            "plat",
            "prometheus",
            [
                "prometheus",
                f"--config.file={conf}",
                f"--storage.tsdb.path={data}/tsdb",
                f"--web.listen-address={prom.listen}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
        )
    )
    lab.save()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prom._check_alive()
        r = lab.exec("plat", ["curl", "-s", "-m", "1", prom.url + "/-/ready"], check=False)
        if r.returncode == 0 and "Ready" in r.stdout:
            return prom
        time.sleep(0.3)
    prom.stop()
    raise LabError(
        f"prometheus not ready after {timeout:.0f} s: " + tail(lab.path("prometheus.log"))
    )


# -- the dashboard's queries ---------------------------------------------------------------


def grafana_expr(expr: str, variables: dict[str, str] | None = None) -> str:
    """A panel's PromQL with Grafana's interval variables replaced (longest names first)."""
    vs = {**GRAFANA_VARS, **(variables or {})}
    for k in sorted(vs, key=len, reverse=True):
        expr = expr.replace("${" + k[1:] + "}", vs[k]).replace(k, vs[k])
    return expr


def dashboard_targets(path: str) -> Iterator[tuple[str, str, str]]:
    """(panel title, legend, PromQL) of every query of a Grafana dashboard file, rows included."""
    with open(path) as f:
        dash = json.load(f)

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p.get("title", ""), t.get("legendFormat", ""), t["expr"]

    yield from walk(dash.get("panels", []))


#: A metric selector in PromQL: a v6mostly_ metric name or ``up``, with its braces.
_SELECTOR = re.compile(r"\b((?:v6mostly_[a-z0-9_]+)|up)\b(\{[^}]*\})?")


def selectors(expr: str) -> list[str]:
    """The metric selectors an expression reads (``name{labels}``), in order, once each."""
    out: list[str] = []
    for m in _SELECTOR.finditer(expr):
        s = m.group(1) + (m.group(2) or "")
        if s not in out:
            out.append(s)
    return out


def _nft_exporter(table: str, listen: str) -> None:
    from prometheus_client.registry import CollectorRegistry

    from ..metrics import NftCountersCollector, serve_endpoint

    reg = CollectorRegistry()
    reg.register(NftCountersCollector(table, lambda: read_nft_counters(table)))
    serve_endpoint(reg, listen)
    while True:
        time.sleep(3600)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m v6mostly.lab.prometheus")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ne = sub.add_parser("nft-exporter", help="serve an nft table's named counters")
    ne.add_argument("--table", default=SITE_TABLE)
    ne.add_argument("--listen", default=NFT_EXPORTER)
    args = ap.parse_args(argv)
    if args.cmd == "nft-exporter":
        _nft_exporter(args.table, args.listen)


if __name__ == "__main__":
    main()
