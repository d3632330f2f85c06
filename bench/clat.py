"""464XLAT benchmark: IPv4 literals from an IPv6-only host through CLAT + PLAT.

Run as root: ``make bench-clat`` (or ``python bench/clat.py [--seconds N]``).

One lab (the same three namespaces as bench/e2e.py, the lab's v6mostly PLAT in
front of the IPv4-only server 203.0.113.10), and on its IPv6-only ``client6``
two CLATs in turn, alternating for ``--rounds`` rounds (v6mostly, TAYGA, the
reference below, then again; each CLAT is started for its turn and removed after
it, so only one holds the IPv4 default route at a time):

* ``v6mostly clat --interface eth0 --pref64 2001:db8:64::/96`` (its TUN
  ``clat0``; the CLAT address a checksum-neutral IID in the client's /64,
  answered by the kernel as a real address, with its defaults: TCP and UDP
  translated by its tc fast path, the rest by its workers, IPv6 out through the
  egress TAP);
* Debian's TAYGA set up the way clatd runs it: ``tun-device clat``,
  ``ipv4-addr 192.0.0.2``, ``prefix 2001:db8:64::/96``, ``map 192.0.0.1
  <CLAT address>``; 192.0.0.1 and the IPv4 default route on the TUN, a route to
  the CLAT address into the TUN, IPv6 forwarding on with ``accept_ra=2`` on the
  uplink, and a proxy-NDP entry for the CLAT address (``proxy_ndp=1``) so that
  the PLAT reaches it. The default route's MTU is 1480, the IPv4 MTU the
  v6mostly CLAT uses (uplink 1500 - 20); clatd's own default is 1260.

A third plane per round is the reference (``--no-reference`` skips it): no
CLAT, client6 by IPv6 to the server's Pref64 address, i.e. the PLAT alone as
bench/e2e.py measures it, the ceiling of the CLAT + PLAT path on this machine.

For each it measures, by IPv4 literal from client6 to the server (as
bench/e2e.py does): the CLAT's CPU use with no traffic (% of one core over
2 s), ping RTT on the idle path, iperf3 TCP up and down (``-R``),
iperf3 UDP with 64-byte payloads both ways at a fixed offered rate (datagrams
*delivered* per second), and the CPU time per delivered packet of that run: the
whole machine's busy time (/proc/stat, as bench/e2e.py's "host" figure), since
v6mostly's fast path (services/clat_fast) translates in the kernel, where no
process's CPU time and no TUN counter sees it; the ratio between CLATs is what
counts (the endpoints, the PLAT and the rest are the same for both). client6's uplink merges received TCP segments (GRO), as a real NIC's
driver does (a veth only when asked), for all three. Checksums are verified for real: the lab turns rx checksum offload
off on client and server and tx off on the PLAT's veths, and the TUNs run
without offloads, so each endpoint's stack checks every TCP/UDP checksum.
Every iperf3 run is bounded (``--seconds`` + 30 s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from e2e import Result, host_cpu_seconds, ratio
from v6mostly.lab.topology import PREF64, SERVER4, Lab, LabConfig, running_lab, server6

#: The TAYGA CLAT's IPv6 address (a second address in the client's /64, not
#: checksum-neutral: TAYGA updates checksums itself).
TAYGA_CLAT6 = "2001:db8:1::c1a7"
TAYGA_TUN = "clat"
ROUTE_MTU = 1480
V6MOSTLY = "v6mostly clat"
TAYGA = "tayga clat"


@dataclass
class ClatResult(Result):
    #: CPU the CLAT's processes use with no traffic (% of one core, over 2 s).
    idle_cpu_pct: float = 0.0


# -- processes -------------------------------------------------------------------


def tree_cpu_seconds(root: int) -> float:
    """user+sys CPU seconds of ``root`` and all its descendants (forked workers)."""
    parent: dict[int, int] = {}
    stat: dict[int, list[str]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fl = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        stat[int(d)] = fl
        parent[int(d)] = int(fl[1])
    want, todo = set(), [root]
    while todo:
        p = todo.pop()
        if p in want or p not in stat:
            continue
        want.add(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    ticks = sum(int(stat[p][11]) + int(stat[p][12]) for p in want)
    return ticks / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        p, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return os.path.exists(f"/proc/{pid}")
    return p == 0


def stop(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM (then SIGKILL after ``timeout``) one process we spawned, and reap it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            alive(pid)
            return
        time.sleep(0.1)


def wait_until(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def pings(lab: Lab) -> bool:
    r = lab.exec("client6", ["ping", "-c", "1", "-W", "1", SERVER4], check=False, timeout=5)
    return r.returncode == 0


# -- the two CLATs ---------------------------------------------------------------


class V6mostlyClat:
    name = V6MOSTLY
    tun = "clat0"
    target = SERVER4

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.pid = 0
        self.addr = "?"

    def state(self) -> dict:
        try:
            return dict(json.loads(Path(self.lab.path("clat/clat-eth0.json")).read_text()))
        except (OSError, ValueError):
            return {}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "v6mostly", "clat", "--interface", "eth0",
                "--pref64", PREF64, "--state-dir", self.lab.path("clat")]  # fmt: skip

    def start(self) -> None:
        self.pid = self.lab.spawn("client6", "clat", self.command())
        wait_until(lambda: self.state().get("active") and alive(self.pid), 30, "v6mostly clat")
        wait_until(lambda: pings(self.lab), 15, f"ping {SERVER4} through the v6mostly CLAT")
        self.addr = str(self.state().get("clat_ipv6", "?"))

    def stop(self) -> None:
        stop(self.pid)
        r = self.lab.exec("client6", ["ip", "link", "show", self.tun], check=False)
        if r.returncode == 0:
            raise RuntimeError(f"{self.tun} still there after SIGTERM")

    def address(self) -> str:
        return self.addr


class TaygaClat:
    """TAYGA as a CLAT, set up as clatd does it (see the module docstring)."""

    name = TAYGA
    tun = TAYGA_TUN
    target = SERVER4

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.pid = 0
        self.saved: dict[str, str] = {}
        self.conf = lab.path("tayga-clat.conf")

    def sysctl(self, key: str, value: str) -> None:
        old = self.lab.exec("client6", ["sysctl", "-n", key]).stdout.strip()
        self.saved.setdefault(key, old)
        self.lab.exec("client6", ["sysctl", "-qw", f"{key}={value}"])

    def start(self) -> None:
        lab, c = self.lab, "client6"
        with open(self.conf, "w") as f:
            f.write(
                f"tun-device {TAYGA_TUN}\nprefix {PREF64}\nipv4-addr 192.0.0.2\n"
                f"map 192.0.0.1 {TAYGA_CLAT6}\n"
            )
        # clatd: accept_ra 1 -> 2 before turning forwarding on, then proxy ND.
        self.sysctl("net.ipv6.conf.eth0.accept_ra", "2")
        self.sysctl("net.ipv6.conf.all.forwarding", "1")
        self.sysctl("net.ipv6.conf.eth0.proxy_ndp", "1")
        lab.exec(c, ["ip", "-6", "neigh", "add", "proxy", TAYGA_CLAT6, "dev", "eth0"])
        lab.exec(c, ["tayga", "--config", self.conf, "--mktun"])
        lab.exec(c, ["ip", "link", "set", "up", "dev", TAYGA_TUN])
        lab.exec(c, ["ip", "-4", "address", "add", "192.0.0.1", "dev", TAYGA_TUN])
        lab.exec(c, ["ip", "-6", "route", "add", TAYGA_CLAT6, "dev", TAYGA_TUN])
        lab.exec(c, ["ip", "-4", "route", "add", "default", "dev", TAYGA_TUN,
                     "metric", "2048", "mtu", str(ROUTE_MTU)])  # fmt: skip
        self.pid = lab.spawn(c, "tayga-clat", ["tayga", "--config", self.conf, "--nodetach"])
        wait_until(lambda: pings(self.lab), 15, f"ping {SERVER4} through the TAYGA CLAT")

    def stop(self) -> None:
        lab, c = self.lab, "client6"
        if self.pid:
            stop(self.pid)
        lab.exec(c, ["tayga", "--config", self.conf, "--rmtun"], check=False)
        lab.exec(c, ["ip", "-6", "neigh", "del", "proxy", TAYGA_CLAT6, "dev", "eth0"], check=False)
        for k, v in reversed(list(self.saved.items())):
            lab.exec(c, ["sysctl", "-qw", f"{k}={v}"], check=False)
        self.saved.clear()

    def address(self) -> str:
        return TAYGA_CLAT6


class NoClat:
    """The reference: no CLAT, client6 by IPv6 to the server's Pref64 address (the PLAT
    alone, as bench/e2e.py measures it): the ceiling of the CLAT + PLAT path."""

    name = f"no CLAT (IPv6 to {server6()})"
    tun = ""
    target = server6()
    pid = 0

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def address(self) -> str:
        return "-"


Clat = V6mostlyClat | TaygaClat | NoClat


# -- measuring -------------------------------------------------------------------


def iperf(lab: Lab, target: str, seconds: int, *extra: str) -> dict:
    """One iperf3 run (bounded); retried (up to 3 times) when iperf3 reports an error."""
    err = ""
    for _ in range(3):
        r = lab.exec(
            "client6",
            ["iperf3", "-J", "-c", target, "-t", str(seconds), *extra],
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


def server_idle(lab: Lab) -> bool:
    r = lab.exec("inet4", ["ss", "-Htn", "state", "established", "( sport = :5201 )"], check=False)
    return r.returncode == 0 and not r.stdout.strip()


def udp_run(lab: Lab, clat: Clat, seconds: int, reverse: bool, rate: str) -> tuple[float, float]:
    """Delivered packets/s and the whole machine's busy CPU us per delivered packet."""
    extra = ["-u", "-l", "64", "-b", rate] + (["-R"] if reverse else [])
    h0 = host_cpu_seconds()
    d = iperf(lab, clat.target, seconds, *extra)
    h1 = host_cpu_seconds()
    s = d["end"]["sum"]
    delivered = s["packets"] - s["lost_packets"]
    return delivered / s["seconds"], (h1 - h0) / max(1, delivered) * 1e6


def measure(lab: Lab, clat: Clat, label: str, seconds: int, rate: str) -> ClatResult:
    res = ClatResult(label)
    clat.start()
    try:
        time.sleep(0.5)
        if clat.pid:
            c0, t0 = tree_cpu_seconds(clat.pid), time.monotonic()
            time.sleep(2)
            res.idle_cpu_pct = (tree_cpu_seconds(clat.pid) - c0) / (time.monotonic() - t0) * 100
        r = lab.exec("client6", ["ping", "-q", "-c", "50", "-i", "0.02", clat.target])
        m = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
        res.rtt_ms = float(m.group(1)) if m else 0.0
        t = clat.target
        res.tcp_up_gbps = iperf(lab, t, seconds)["end"]["sum_received"]["bits_per_second"] / 1e9
        res.tcp_down_gbps = (
            iperf(lab, t, seconds, "-R")["end"]["sum_received"]["bits_per_second"] / 1e9
        )
        res.udp_up_pps, res.cpu_us_per_pkt_up = udp_run(lab, clat, seconds, False, rate)
        res.udp_down_pps, res.cpu_us_per_pkt_down = udp_run(lab, clat, seconds, True, rate)
        # Tear the path down only once iperf3's server has closed its control
        # connection: a FIN lost with the CLAT would leave the server "busy" for minutes.
        wait_until(lambda: server_idle(lab), 15, "iperf3's server to close its connections")
    finally:
        clat.stop()
    return res


# -- reporting -------------------------------------------------------------------

NUMERIC = [f.name for f in fields(ClatResult) if f.name != "name"]


def median_of(name: str, rs: list[ClatResult]) -> ClatResult:
    return ClatResult(name, **{k: statistics.median(getattr(r, k) for r in rs) for k in NUMERIC})


def row(r: ClatResult) -> str:
    return (
        f"| {r.name} | {r.tcp_up_gbps:.2f} | {r.tcp_down_gbps:.2f} | {r.udp_up_pps:,.0f} | "
        f"{r.udp_down_pps:,.0f} | {r.cpu_us_per_pkt_up:.2f} | {r.cpu_us_per_pkt_down:.2f} | "
        f"{r.rtt_ms:.3f} | {r.idle_cpu_pct:.0f} |"
    )


def ratio_row(name: str, a: ClatResult, b: ClatResult) -> str:
    return (
        f"| {name} | {ratio(a.tcp_up_gbps, b.tcp_up_gbps)} | "
        f"{ratio(a.tcp_down_gbps, b.tcp_down_gbps)} | {ratio(a.udp_up_pps, b.udp_up_pps)} | "
        f"{ratio(a.udp_down_pps, b.udp_down_pps)} | "
        f"{ratio(a.cpu_us_per_pkt_up, b.cpu_us_per_pkt_up)} | "
        f"{ratio(a.cpu_us_per_pkt_down, b.cpu_us_per_pkt_down)} | {ratio(a.rtt_ms, b.rtt_ms)} |"
    )


def report(rounds: list[list[ClatResult]]) -> str:
    """``rounds``: per round [v6mostly, tayga] and, with the reference, [.., no CLAT]."""
    head = (
        "| CLAT (+ v6mostly PLAT) | TCP up Gbit/s | TCP down Gbit/s | UDP64 up delivered pkt/s | "
        "UDP64 down delivered pkt/s | host CPU us/pkt up | host CPU us/pkt down | ping RTT ms | "
        "CLAT idle CPU % |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for rs in rounds:
        rows += [row(r) for r in rs]
    planes = list(zip(*rounds, strict=True))  # per plane, its result of every round
    meds = [median_of(f"{p[0].name.rsplit(', round', 1)[0]}, median", list(p)) for p in planes]
    if len(rounds) > 1:
        rows += [row(m) for m in meds]
    out = ["\n".join(rows), ""]
    out.append(
        "Ratios v6mostly CLAT / TAYGA CLAT (TCP, UDP pkt/s: higher is better; "
        "CPU/pkt, RTT: lower is better):"
    )
    out.append(
        "| | TCP up | TCP down | UDP64 up | UDP64 down | CPU/pkt up | CPU/pkt down | RTT |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for i, rs in enumerate(rounds, 1):
        out.append(ratio_row(f"round {i}", rs[0], rs[1]))
    if len(rounds) > 1:
        out.append(ratio_row("medians", meds[0], meds[1]))
    if len(meds) > 2:
        ref = meds[2]
        out += ["", "Share of the no-CLAT path (the PLAT alone; medians):"]
        out.append("| | TCP up | TCP down | UDP64 up | UDP64 down |\n|---|---|---|---|---|")
        for m in meds[:2]:
            out.append(
                f"| {m.name} | {ratio(m.tcp_up_gbps, ref.tcp_up_gbps)} | "
                f"{ratio(m.tcp_down_gbps, ref.tcp_down_gbps)} | "
                f"{ratio(m.udp_up_pps, ref.udp_up_pps)} | {ratio(m.udp_down_pps, ref.udp_down_pps)} |"
            )
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run")
    ap.add_argument("--udp-rate", default="100M", help="offered UDP rate (iperf3 -b)")
    ap.add_argument("--rounds", type=int, default=2, help="alternations v6mostly/TAYGA")
    ap.add_argument(
        "--no-reference", action="store_true", help="skip the no-CLAT reference (PLAT alone)"
    )
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/clat.py needs root (namespaces)", file=sys.stderr)
        return 2
    rounds: list[list[ClatResult]] = []
    load0 = os.getloadavg()[0]
    addrs = {}
    # The PLAT as the lab runs it (offloads, queues per core, RPS); the CLATs on client6.
    with running_lab(LabConfig()) as lab:
        # A real NIC's driver merges TCP segments (GRO) before the stack (and a CLAT's
        # tc filter) sees them; a veth does so only when asked.
        lab.exec("client6", ["ethtool", "-K", "eth0", "gro", "on"])
        kinds: list[type[V6mostlyClat] | type[TaygaClat] | type[NoClat]] = [
            V6mostlyClat,
            TaygaClat,
        ]
        if not a.no_reference:
            kinds.append(NoClat)
        for i in range(1, a.rounds + 1):
            results = []
            for kind in kinds:
                clat = kind(lab)
                label = f"{clat.name}, round {i}"
                print(f"# {label} ...", file=sys.stderr, flush=True)
                results.append(measure(lab, clat, label, a.seconds, a.udp_rate))
                if clat.pid:
                    addrs[clat.name] = clat.address()
            rounds.append(results)
    print(
        f"# bench/clat.py --seconds {a.seconds} --udp-rate {a.udp_rate} --rounds {a.rounds}, "
        f"{os.cpu_count()} CPUs, load average {load0:.2f} at start and "
        f"{os.getloadavg()[0]:.2f} at end, {time.strftime('%Y-%m-%d')}; CLAT addresses: "
        + ", ".join(f"{k} {v}" for k, v in addrs.items())
    )
    print(report(rounds))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([[asdict(r) for r in rs] for rs in rounds], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
