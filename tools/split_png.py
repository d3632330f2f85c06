"""Draw the traffic split of the site lab as a PNG, from the Grafana dashboard's queries.

    python tools/split_png.py docs/traffic-split.png      (root; needs matplotlib)

Builds the site lab (``lab up --site``), starts the lab's Prometheus
(``v6mostly.lab.prometheus``), loads the three paths in turn (native IPv6 from
``inet6``, IPv4 through the CLAT and DNS64 -> NAT64, IPv4 through NAT44), then
evaluates the two traffic-split panels of ``contrib/grafana/v6mostly.json`` through
Prometheus' HTTP API: the stacked bits/s over time (``query_range``) and the share
of bytes over the whole run. The picture is what the dashboard shows, by the same
PromQL; the lab is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from v6mostly.lab.prometheus import (  # noqa: E402
    Prometheus,
    dashboard_targets,
    grafana_expr,
    start_prometheus,
)
from v6mostly.lab.topology import SERVER4, SERVER6_NAME, SERVER_NAME, Lab, LabConfig, running_lab  # noqa: E402

DASHBOARD = ROOT / "contrib" / "grafana" / "v6mostly.json"
STACKED = "Traffic split: bits/s (stacked)"
SHARES = "Traffic split: share of bytes"
COLOURS = {
    "native IPv6": "#2e7d32",
    "IPv4 via NAT64": "#1565c0",
    "native IPv4 via NAT44": "#ef6c00",
}
BIG = "big.bin"

#: (start s, stop s, node, URL, rate): the load, so that the mix changes over the run.
LOAD = (
    (0, 24, "v6only", f"http://{SERVER6_NAME}/{BIG}", "3M"),  # native IPv6
    (4, 20, "mostly", f"http://{SERVER4}/{BIG}", "2M"),  # CLAT -> NAT64
    (6, 22, "v6only", f"http://{SERVER_NAME}/{BIG}", "1M"),  # DNS64 -> NAT64
    (10, 24, "legacy", f"http://{SERVER4}/{BIG}", "2M"),  # NAT44
    (14, 24, "legacy", f"http://{SERVER6_NAME}/{BIG}", "1M"),  # native IPv6
)


def _big_files(lab: Lab, size: int = 96 << 20) -> None:
    block = bytes(range(256)) * 4096
    for d in ("www", "www6"):
        with open(os.path.join(lab.path(d), BIG), "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)


def load(lab: Lab) -> tuple[float, float]:
    """Run the LOAD schedule; returns (start, end) in Unix time."""
    _big_files(lab)
    t0 = time.time()
    procs: list[subprocess.Popen[bytes]] = []
    for start, stop, node, url, rate in sorted(LOAD):
        time.sleep(max(0.0, t0 + start - time.time()))
        argv = ["curl", "-s", "-o", "/dev/null", "--limit-rate", rate,
                "--max-time", str(stop - start), url]  # fmt: skip
        procs.append(subprocess.Popen(lab.cmd(node, argv), stdout=subprocess.DEVNULL))
    for p in procs:
        p.wait(timeout=60)
    return t0, time.time()


def series(
    prom: Prometheus, start: float, end: float
) -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = {}
    for _, legend, expr in (t for t in dashboard_targets(str(DASHBOARD)) if t[0] == STACKED):
        res = prom.query_range(grafana_expr(expr, {"$__rate_interval": "5s"}), start, end, 1)
        pts = res[0]["values"] if res else []
        out[legend] = ([float(t) - start for t, _ in pts], [float(v) / 1e6 for _, v in pts])
    return out


def shares(prom: Prometheus, start: float, end: float) -> dict[str, float]:
    rng = {"$__range": f"{round(end - start) + 2}s"}
    out: dict[str, float] = {}
    for _, legend, expr in (t for t in dashboard_targets(str(DASHBOARD)) if t[0] == SHARES):
        res = prom.query(grafana_expr(expr, rng), at=end)
        out[legend] = float(res[0]["value"][1]) if res else 0.0
    return out


def draw(path: str, ts: dict[str, tuple[list[float], list[float]]], sh: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 5.2), gridspec_kw={"height_ratios": [4, 1]}, constrained_layout=True
    )
    names = list(ts)
    grid = sorted({t for xs, _ in ts.values() for t in xs})
    ys = []
    for n in names:
        xs, vs = ts[n]
        by_t = dict(zip(xs, vs, strict=True))
        ys.append([by_t.get(t, 0.0) for t in grid])
    top.stackplot(grid, ys, labels=names, colors=[COLOURS.get(n, "grey") for n in names])
    top.set_ylabel("Mbit/s")
    top.set_xlabel("seconds")
    top.set_title("IPv6-mostly site: traffic split (v6mostly lab, Prometheus)")
    top.legend(loc="upper left")
    top.margins(x=0)
    left = 0.0
    for n, v in sh.items():
        bottom.barh(0, v, left=left, color=COLOURS.get(n, "grey"))
        if v > 0.06:
            bottom.text(left + v / 2, 0, f"{n}\n{v:.0%}", ha="center", va="center", color="white",
                        fontsize=9)  # fmt: skip
        left += v
    bottom.set_xlim(0, 1)
    bottom.set_yticks([])
    bottom.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    bottom.set_title("share of bytes over the run", fontsize=10)
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("png", nargs="?", default="docs/traffic-split.png")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("split_png: needs root (network namespaces)", file=sys.stderr)
        return 2
    with running_lab(LabConfig(queues=1, site=True)) as lab:
        prom = start_prometheus(lab)
        try:
            prom.wait_scraped(scrapes=3)
            start, end = load(lab)
            time.sleep(3)  # the last second scraped
            ts = series(prom, start - 2, end + 2)
            sh = shares(prom, start, end)
        finally:
            prom.stop()
    draw(args.png, ts, sh)
    print(f"{args.png}: " + ", ".join(f"{n} {v:.1%}" for n, v in sh.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
