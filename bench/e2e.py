"""End-to-end benchmark: IPv6-only client -> translator -> IPv4-only server, in namespaces.

Run as root: ``make bench-e2e`` (or ``python bench/e2e.py [--seconds N]``).

For each data plane it builds a fresh lab (the same three namespaces, the
same nftables NAPT66 table), then measures:

* iperf3 TCP client->server and server->client (``-R``);
* iperf3 UDP with 64-byte payloads, both ways, at a fixed offered rate, and
  the translator's CPU time per translated packet: user+sys of every process
  in the translator's namespace (from /proc) divided by the packets the
  translator wrote into the TUN (the TUN's rx_packets);
* ping RTT (50 pings, 20 ms apart, on the idle lab, before the load runs).

Data planes: v6mostly with offloads / plain, 1 and 2 queues (with RPS on the
TUN, its default; once without); Debian's tayga (single-threaded) behind the
same NAPT66 table, as packaged and with the same RPS setting; plain kernel IPv6 forwarding
with no translation (the ceiling). Every figure is also printed as a ratio to
tayga and to the kernel. Checksums are verified for real: the lab turns
checksum offload off on the endpoints (rx) and the router's veths (tx).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass

from v6mostly.lab.topology import (
    SERVER6_NATIVE,
    Lab,
    LabConfig,
    ns_cpu_seconds,
    running_lab,
    server6,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str
    tcp_up_gbps: float = 0.0
    tcp_down_gbps: float = 0.0
    udp_up_pps: float = 0.0
    udp_down_pps: float = 0.0
    cpu_us_per_pkt_up: float = 0.0
    cpu_us_per_pkt_down: float = 0.0
    rtt_ms: float = 0.0


def target(lab: Lab) -> str:
    return SERVER6_NATIVE if lab.config.translator == "none" else server6()


def cpu_seconds(lab: Lab) -> float:
    """user+sys of all processes in the plat namespace (the translator and its workers)."""
    return ns_cpu_seconds(lab.ns("plat"))


def tun_rx_packets(lab: Lab) -> int:
    r = lab.exec("plat", ["cat", "/sys/class/net/nat64/statistics/rx_packets"], check=False)
    return int(r.stdout.strip() or 0)


def iperf(lab: Lab, seconds: int, *extra: str) -> dict:
    """One iperf3 run; retried (up to 3 times) when iperf3 reports an error."""
    err = ""
    for _ in range(3):
        r = lab.exec(
            "client6",
            ["iperf3", "-J", "-c", target(lab), "-t", str(seconds), *extra],
            timeout=seconds + 30,
            check=False,
        )
        try:
            d: dict = json.loads(r.stdout)
        except ValueError:
            d = {"error": r.stderr.strip() or "no JSON output"}
        if "error" not in d:
            return d
        err = d["error"]
        print(f"#   iperf3 {' '.join(extra)}: {err}; retrying", file=sys.stderr)
        time.sleep(2)
    raise RuntimeError(f"iperf3 {' '.join(extra)} failed 3 times: {err}")


def udp_run(lab: Lab, seconds: int, reverse: bool, rate: str) -> tuple[float, float]:
    extra = ["-u", "-l", "64", "-b", rate] + (["-R"] if reverse else [])
    translating = lab.config.translator != "none"
    c0 = cpu_seconds(lab) if translating else 0.0
    p0 = tun_rx_packets(lab) if translating else 0
    d = iperf(lab, seconds, *extra)
    s = d["end"]["sum"]
    pps = (s["packets"] - s["lost_packets"]) / s["seconds"]  # delivered, not offered
    if not translating:
        return pps, 0.0
    c1 = cpu_seconds(lab)
    p1 = tun_rx_packets(lab)
    return pps, (c1 - c0) / max(1, p1 - p0) * 1e6


def measure(name: str, cfg: LabConfig, seconds: int, rate: str) -> Result:
    res = Result(name)
    with running_lab(cfg) as lab:
        time.sleep(0.5)
        r = lab.exec("client6", ["ping", "-q", "-c", "50", "-i", "0.02", target(lab)])
        m = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
        res.rtt_ms = float(m.group(1)) if m else 0.0
        res.tcp_up_gbps = iperf(lab, seconds)["end"]["sum_received"]["bits_per_second"] / 1e9
        res.tcp_down_gbps = (
            iperf(lab, seconds, "-R")["end"]["sum_received"]["bits_per_second"] / 1e9
        )
        res.udp_up_pps, res.cpu_us_per_pkt_up = udp_run(lab, seconds, False, rate)
        res.udp_down_pps, res.cpu_us_per_pkt_down = udp_run(lab, seconds, True, rate)
    return res


PLANES = {
    "v6mostly offload q1": LabConfig(queues=1, offload=True),
    "v6mostly offload q2": LabConfig(queues=2, offload=True),
    "v6mostly plain q1": LabConfig(queues=1, offload=False),
    "v6mostly plain q2": LabConfig(queues=2, offload=False),
    "v6mostly offload q1, no RPS": LabConfig(queues=1, offload=True, rps=False),
    "tayga": LabConfig(translator="tayga", rps=False),
    "tayga + RPS": LabConfig(translator="tayga", rps=True),
    "kernel (no translation)": LabConfig(translator="none"),
}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(results: list[Result]) -> str:
    by = {r.name: r for r in results}
    tay = by.get("tayga")
    ker = by.get("kernel (no translation)")
    rows = [
        "| data plane | TCP up Gbit/s | TCP down Gbit/s | UDP64 up delivered pkt/s | UDP64 down delivered pkt/s | "
        "CPU us/pkt up | CPU us/pkt down | ping RTT ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.name} | {r.tcp_up_gbps:.2f} | {r.tcp_down_gbps:.2f} | {r.udp_up_pps:,.0f} | "
            f"{r.udp_down_pps:,.0f} | {r.cpu_us_per_pkt_up:.2f} | {r.cpu_us_per_pkt_down:.2f} | "
            f"{r.rtt_ms:.3f} |"
        )
    out = ["\n".join(rows), ""]
    for ref_name, ref in (("tayga", tay), ("kernel forwarding", ker)):
        if ref is None:
            continue
        out.append(
            f"Ratios to {ref_name} (TCP, UDP pkt/s: higher is better; CPU/pkt, RTT: lower is better):"
        )
        out.append(
            "| data plane | TCP up | TCP down | UDP64 up | UDP64 down | CPU/pkt up | CPU/pkt down | RTT |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for r in results:
            if r is ref:
                continue
            out.append(
                f"| {r.name} | {ratio(r.tcp_up_gbps, ref.tcp_up_gbps)} | "
                f"{ratio(r.tcp_down_gbps, ref.tcp_down_gbps)} | {ratio(r.udp_up_pps, ref.udp_up_pps)} | "
                f"{ratio(r.udp_down_pps, ref.udp_down_pps)} | "
                f"{ratio(r.cpu_us_per_pkt_up, ref.cpu_us_per_pkt_up)} | "
                f"{ratio(r.cpu_us_per_pkt_down, ref.cpu_us_per_pkt_down)} | {ratio(r.rtt_ms, ref.rtt_ms)} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run")
    ap.add_argument("--udp-rate", default="100M", help="offered UDP rate (iperf3 -b)")
    ap.add_argument("--only", action="append", help="data planes to run (default: all)")
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/e2e.py needs root (namespaces)", file=sys.stderr)
        return 2
    names = a.only or list(PLANES)
    results = []
    for n in names:
        print(f"# {n} ...", file=sys.stderr, flush=True)
        results.append(measure(n, PLANES[n], a.seconds, a.udp_rate))
    print(
        f"# bench/e2e.py --seconds {a.seconds} --udp-rate {a.udp_rate}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print(report(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
