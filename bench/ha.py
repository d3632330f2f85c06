"""HA benchmark: two PLATs behind ECMP (issue 12), ours against the report's setup.

Run as root: ``make bench-ha`` (or ``python bench/ha.py [--rounds N]``).

For each setup it builds one HA lab (``lab/ha.py``): ``resilient`` (bird2 + BFD, the
ECMP controller's resilient next-hop group, conntrackd) and ``plain`` (the RubyKaigi
report's setup: bird2's plain multipath route, no state sync). It measures:

* per round: 20 long TCP flows and a UDP stream, ``plat1`` dies (``failover()``:
  every process of its namespace SIGKILLed, its links down); the flows that survive
  on the dead PLAT and on the other, each flow's outage (longest pause in arrivals
  spanning the kill), the UDP stream's; ``revive()`` between rounds (then the idle
  timer, so the next round's flows spread over both PLATs again); medians over rounds;
* how long until core's Pref64 route has one next hop: the box gone (links down:
  the kernel flushes the next hop), the PLAT's processes killed with links up (the
  kernel closes bird's TCP session: bird sees the FIN) and the PLAT hung (its
  processes SIGSTOPped, links up: only BFD, 100 ms x 3, can notice); for the last
  two also until core's bird reports the session down;
* (``resilient`` only) conntrackd's replication: many short UDP flows from the
  clients hashed to plat1 as fast as one process sends them; ``conntrack -E`` in
  plat1 and plat2 timestamps each NAPT66 entry's creation and its copy's arrival
  (every namespace shares the host's clock): sessions/s created and replicated, the
  copies missing at the end (``conntrack -L``), the delay under load and for single
  flows (10 a second) before and right after the flood. A flow younger than that
  delay when its PLAT dies is lost. conntrackd's UDP channel is buffered: a lone
  message waits for the next sync-side wake-up (NOTRACK's alive message, ~1 s, or the
  peer's traffic), so on a quiet sync link the delay is up to ~1 s, under load a
  full MTU-sized buffer goes out at once.

The ``conntrack -E`` readers lose events under the flood (ENOBUFS: reported in the
JSON); the delays come from the flows both readers saw, the counts from the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from v6mostly.lab.ha import CLIENTS, IDLE_TIMER, OUTER, PLATS, pref64_paths
from v6mostly.lab.ha_failover import FailoverResult, failover, revive
from v6mostly.lab.topology import Lab, LabConfig, running_lab, server6

VICTIM = "plat1"
DETECT_LIMIT = 10.0  # s: give up waiting for core to notice
FLOOD_PORT = 20000  # first destination port of the replication flood
SINGLE_PORT = 40000  # ... and of the single timed flows
SINGLES = 20

#: runs in hclient: one UDP socket per source, one datagram per (source, port) flow
FLOOD = r"""
import json, socket, sys, time
dst, n, limit, port0 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
gap = float(sys.argv[5])
srcs = sys.argv[6:]
socks = []
for s in srcs:
    k = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    k.bind((s, 0))
    socks.append(k)
sent = []
end = time.monotonic() + limit
i = 0
while i < n and time.monotonic() < end:
    j = i % len(srcs)
    port = port0 + i // len(srcs)
    try:
        socks[j].sendto(b"v6mostly bench/ha.py", (dst, port))
    except OSError:
        time.sleep(0.001)
        continue
    sent.append((srcs[j], port, time.time()))
    i += 1
    if gap:
        time.sleep(gap)
print(json.dumps(sent))
"""

EVENT = re.compile(r"^\[(\d+\.\d+)\].*?\[NEW\] udp .*?src=(\S+) dst=\S+ sport=\d+ dport=(\d+)")


@dataclass
class Setup:
    name: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    revive_s: list[float] = field(default_factory=list)
    detect_gone_ms: list[float] = field(default_factory=list)
    detect_killed: dict[str, Any] = field(default_factory=dict)
    detect_hung: dict[str, Any] = field(default_factory=dict)
    replication: dict[str, Any] = field(default_factory=dict)


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def log(msg: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# -- detection ---------------------------------------------------------------------


def core_session_up(lab: Lab, proto: str = VICTIM) -> bool:
    r = lab.exec(
        "core",
        ["birdc", "-s", lab.path("core-bird.ctl"), "show", "protocols", proto],
        check=False,
        timeout=10,
    )
    return "Established" in r.stdout


def ns_pids(lab: Lab, node: str) -> list[int]:
    r = subprocess.run(
        ["ip", "netns", "pids", lab.ns(node)], capture_output=True, text=True, check=False
    )
    return [int(t) for t in r.stdout.split() if t.isdigit()]


def signal_ns(lab: Lab, node: str, sig: int) -> None:
    """``sig`` to exactly the processes of the node's namespace (never by name)."""
    for pid in ns_pids(lab, node):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def timed_detect(lab: Lab, sig: int) -> dict[str, Any]:
    """``sig`` to plat1's processes, links up; ms until core's route has one next hop
    and until core's bird reports the session down (two pollers at once)."""
    assert pref64_paths(lab) == 2 and core_session_up(lab), "plat1 not in use before"
    out: dict[str, Any] = {"route_ms": None, "bgp_down_ms": None}
    t0 = time.monotonic()

    def poll(key: str, done: Any) -> None:
        while time.monotonic() - t0 < DETECT_LIMIT:
            if done():
                out[key] = round((time.monotonic() - t0) * 1000)
                return
            time.sleep(0.005)

    threads = [
        threading.Thread(target=poll, args=("route_ms", lambda: pref64_paths(lab) <= 1)),
        threading.Thread(target=poll, args=("bgp_down_ms", lambda: not core_session_up(lab))),
    ]
    signal_ns(lab, VICTIM, sig)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def back(lab: Lab, s: Setup, spread: bool = True) -> None:
    """plat1 back (killed processes, links down left by a round); wait until new
    flows use it again."""
    signal_ns(lab, VICTIM, signal.SIGKILL)
    time.sleep(0.2)
    took = revive(lab, VICTIM)
    s.revive_s.append(round(took, 2))
    if took > 15:
        r = lab.exec("core", ["birdc", "-s", lab.path("core-bird.ctl"), "show", "protocols"],
                     check=False)  # fmt: skip
        log(f"revive took {took:.1f} s; core: {r.stdout.strip()}")
    if spread and lab.config.ha == "resilient":
        time.sleep(IDLE_TIMER + 1)  # the controller gives plat1 its idle buckets
    else:
        time.sleep(1)


# -- replication ---------------------------------------------------------------------


def plat1_clients(lab: Lab) -> list[str]:
    """The client addresses hashed to plat1 now: one datagram from each to port 9, then
    plat1's entries for them (an entry left by a killed plat1 does not count)."""
    code = (
        "import socket, sys\n"
        "for s in sys.argv[2:]:\n"
        "    k = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "    k.bind((s, 0)); k.sendto(b'x', (sys.argv[1], 9)); k.close()\n"
    )
    lab.exec("plat1", ["conntrack", "-D", "-f", "ipv6", "-p", "udp", "--dport", "9"], check=False)
    lab.exec("hclient", [sys.executable, "-c", code, server6(), *CLIENTS], timeout=30)
    time.sleep(0.5)
    r = lab.exec("plat1", ["conntrack", "-L", "-f", "ipv6", "-p", "udp", "--dport", "9"],
                 check=False)  # fmt: skip
    tag = f"dst={OUTER[VICTIM][0]} "
    found = {m.group(1) for line in r.stdout.splitlines() if tag in line + " "
             for m in [re.search(r"src=(\S+)", line)] if m}  # fmt: skip
    return sorted(found & set(CLIENTS))


class Counter(threading.Thread):
    """Samples a node's conntrack entry count (nf_conntrack_count) every ``step`` s."""

    def __init__(self, lab: Lab, node: str, step: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.argv = lab.cmd(node, ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
        self.step = step
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < end:
            r = subprocess.run(self.argv, capture_output=True, text=True, check=False)
            with contextlib.suppress(ValueError):
                self.samples.append((time.time(), int(r.stdout)))
            time.sleep(self.step)

    def rise(self, base: int, n: int) -> tuple[float | None, float | None]:
        """Times of the first sample above base and the first at base + n (or the max)."""
        first = next((t for t, c in self.samples if c > base), None)
        top = max((c for _, c in self.samples), default=base)
        last = next((t for t, c in self.samples if c >= min(base + n, top)), None)
        return first, last


def events(path: str, outer: str) -> dict[tuple[str, int], float]:
    """(client, dport) -> time of the first NEW event of an entry for ``outer``."""
    out: dict[tuple[str, int], float] = {}
    tag = f"dst={outer} "
    with open(path, errors="replace") as f:
        for line in f:
            if tag not in line + " ":
                continue
            m = EVENT.match(line)
            if m:
                out.setdefault((m.group(2), int(m.group(3))), float(m.group(1)))
    return out


def listed(lab: Lab, node: str, outer: str, lo: int, hi: int) -> int:
    """Entries for ``outer`` with a destination port in [lo, hi) in node's kernel table."""
    r = lab.exec(node, ["conntrack", "-L", "-f", "ipv6", "-p", "udp"], check=False, timeout=60)
    tag = f"dst={outer} "
    n = 0
    for line in r.stdout.splitlines():
        m = re.search(r"dport=(\d+)", line)
        if m and lo <= int(m.group(1)) < hi and tag in line + " ":
            n += 1
    return n


def send(lab: Lab, srcs: list[str], n: int, limit: float, port0: int, gap: float) -> list:
    argv = [sys.executable, "-c", FLOOD, server6(), str(n), str(limit), str(port0), str(gap),
            *srcs]  # fmt: skip
    r = lab.exec("hclient", argv, timeout=limit + 60)
    return json.loads(r.stdout)


def wait_stable(path: str, quiet: float, limit: float) -> None:
    """Until the file has not grown for ``quiet`` seconds (at most ``limit``)."""
    end = time.monotonic() + limit
    size, since = -1, time.monotonic()
    while time.monotonic() < end:
        now = os.path.getsize(path)
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)


def replication(lab: Lab, flows: int, limit: float, tmp: str) -> dict[str, Any]:
    outer = OUTER[VICTIM][0]
    srcs = plat1_clients(lab)
    if not srcs:
        return {"error": "no client hashed to plat1"}
    files = {p: os.path.join(tmp, f"{p}-events.txt") for p in PLATS}
    procs = {}
    counters = {p: Counter(lab, p) for p in PLATS}
    for p in PLATS:
        argv = ["conntrack", "-E", "-e", "NEW", "-o", "timestamp", "-b", str(64 << 20)]
        with open(files[p], "w") as f, open(files[p] + ".err", "w") as e:
            procs[p] = subprocess.Popen(lab.cmd(p, argv), stdout=f, stderr=e)
    try:
        time.sleep(0.5)
        for c in counters.values():
            c.start()
        time.sleep(0.3)
        before = send(lab, srcs[:1], SINGLES, 30, SINGLE_PORT, 0.1)
        time.sleep(0.5)
        base = {p: counters[p].samples[-1][1] for p in PLATS}
        flood = send(lab, srcs, flows, limit, FLOOD_PORT, 0.0)
        wait_stable(files["plat2"], 2.0, 30.0)
        for c in counters.values():
            c.stop.set()
            c.join()
        single = send(lab, srcs[:1], SINGLES, 30, SINGLE_PORT + SINGLES, 0.1)
        time.sleep(1.0)
        wait_stable(files["plat2"], 1.0, 10.0)
    finally:
        for c in counters.values():
            c.stop.set()
        for p in procs.values():
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    stats = {}
    for p in PLATS:
        r = lab.exec(p, ["conntrackd", "-C", lab.path(f"{p}-conntrackd.conf"), "-s"],
                     check=False, timeout=20)  # fmt: skip
        stats[p] = " ".join(r.stdout.split())
    errs = {}
    for p in PLATS:
        with open(files[p] + ".err") as f:
            errs[p] = f.read().strip()[-300:]
    hi = FLOOD_PORT + flows // len(srcs) + 1
    on1 = events(files["plat1"], outer)
    on2 = events(files["plat2"], outer)
    in1 = listed(lab, "plat1", outer, FLOOD_PORT, hi)
    in2 = listed(lab, "plat2", outer, FLOOD_PORT, hi)

    def span(d: dict[tuple[str, int], float], keys: list) -> tuple[int, float]:
        ts = [d[k] for k in keys if k in d]
        return len(ts), (max(ts) - min(ts)) if len(ts) > 1 else 0.0

    fk = [(s, p) for s, p, _ in flood]
    n1, _ = span(on1, fk)
    n2, _ = span(on2, fk)
    t_send = max(t for *_, t in flood) - min(t for *_, t in flood) if flood else 0.0
    a1, b1 = counters["plat1"].rise(base["plat1"], in1)
    a2, b2 = counters["plat2"].rise(base["plat2"], in2)
    rate1 = in1 / (b1 - a1) if a1 and b1 and b1 > a1 else None
    rate2 = in2 / (b2 - a2) if a2 and b2 and b2 > a2 else None
    behind = round((b2 - b1) * 1000) if b1 and b2 else None
    lag = [on2[k] - on1[k] for k in fk if k in on1 and k in on2]
    ms = 1000.0

    def singles(sent: list) -> dict[str, Any]:
        lag = [on2[(s, p)] - on1[(s, p)] for s, p, _ in sent if (s, p) in on1 and (s, p) in on2]
        from_send = [on2[(s, p)] - t for s, p, t in sent if (s, p) in on2]
        return {
            "n": len(lag),
            "median": round(statistics.median(lag) * ms, 2) if lag else None,
            "max": round(max(lag) * ms, 2) if lag else None,
            "from_send_median": round(statistics.median(from_send) * ms, 2) if from_send else None,
        }

    return {
        "clients": len(srcs),
        "sent": len(flood),
        "send_per_s": round(len(flood) / t_send) if t_send else None,
        "created_per_s": round(rate1) if rate1 else None,
        "replicated_per_s": round(rate2) if rate2 else None,
        "plat2_done_after_plat1_ms": behind,
        "samples": [len(counters[p].samples) for p in PLATS],
        "events_seen": [n1, n2],
        "event_errors": errs,
        "in_plat1_table": in1,
        "in_plat2_table": in2,
        "missing_at_end": in1 - in2,
        "load_delay_ms": {
            "median": round(statistics.median(lag) * ms, 1) if lag else None,
            "p99": round(pct(lag, 0.99) * ms, 1) if lag else None,
            "max": round(max(lag) * ms, 1) if lag else None,
        },
        "single_delay_ms": singles(before),
        "single_delay_after_flood_ms": singles(single),
        "conntrackd_stats": stats,
    }


# -- one setup -----------------------------------------------------------------------


def run_setup(name: str, a: argparse.Namespace, tmp: str) -> Setup:
    s = Setup(name)
    log(f"{name}: lab up")
    with running_lab(LabConfig(ha=name, queues=1)) as lab:
        for r in range(a.rounds):
            if r:
                back(lab, s)
            # the UDP stream from a client (not one of the TCP flows') hashed to plat1
            on1 = [c for c in plat1_clients(lab) if c in CLIENTS[20:]]
            udp = on1[-1] if on1 else CLIENTS[-1]
            log(f"{name}: round {r + 1}: failover (UDP from {udp})")
            res: FailoverResult = failover(
                lab, list(CLIENTS[:20]), seconds=a.seconds, kill_at=a.kill_at, udp_source=udp
            )
            d = res.summary()
            d["lost"] = [(f.source, f.plat, f.error) for f in res.flows if not f.ok]
            s.rounds.append(d)
            s.detect_gone_ms.append(d["detect_ms"])
            log(f"{name}: round {r + 1}: {json.dumps({k: d[k] for k in PLATS})}")
        if name == "resilient" and a.flows:
            back(lab, s)
            log(f"{name}: replication, {a.flows} flows")
            s.replication = replication(lab, a.flows, a.flood_limit, tmp)
            log(f"{name}: {json.dumps(s.replication)}")
        else:
            back(lab, s, spread=False)
        log(f"{name}: detection, processes killed, links up")
        s.detect_killed = timed_detect(lab, signal.SIGKILL)
        back(lab, s, spread=False)
        log(f"{name}: detection, processes hung (SIGSTOP), links up")
        s.detect_hung = timed_detect(lab, signal.SIGSTOP)
        log(f"{name}: revive took {s.revive_s} s")
        signal_ns(lab, VICTIM, signal.SIGKILL)  # a stopped process would hold the lab down
    return s


# -- report --------------------------------------------------------------------------


def fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        x = int(x) if x.is_integer() else round(x) if abs(x) >= 100 else round(x, 1)
    return f"{x}{unit}"


def round_fig(s: Setup, path: tuple[str, ...]) -> float | None:
    vals = []
    for d in s.rounds:
        v: Any = d
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        vals.append(v)
    return med(vals)


def summary(s: Setup) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in PLATS:
        out[p] = {
            "flows": round_fig(s, (p, "flows")),
            "survived": round_fig(s, (p, "survived")),
            "outage_ms_median": round_fig(s, (p, "outage_ms_median")),
            "outage_ms_max": round_fig(s, (p, "outage_ms_max")),
        }
    out["udp"] = {
        "outage_ms": round_fig(s, ("udp", "outage_ms")),
        "lost_pct": med(
            [100 * (1 - d["udp"]["received"] / max(1, d["udp"]["sent"])) for d in s.rounds]
        ),
        "plat": [d["udp"]["plat"] for d in s.rounds],
    }
    out["detect_gone_ms"] = med(s.detect_gone_ms)
    return out


def report(setups: list[Setup]) -> str:
    sm = {s.name: summary(s) for s in setups}
    names = [s.name for s in setups]
    rows: list[tuple[str, ...]] = []

    def row(label: str, get: Any) -> None:
        rows.append((label, *(get(s, sm[s.name]) for s in setups)))

    v = VICTIM
    o = "plat2"

    def per_round(s: Setup, p: str) -> str:
        return ", ".join(f"{d[p]['survived']}/{d[p]['flows']}" for d in s.rounds)

    row(f"TCP flows on {v} (killed): survived / flows (per round)",
        lambda s, m: f"{fmt(m[v]['survived'])} / {fmt(m[v]['flows'])} ({per_round(s, v)})")  # fmt: skip
    row(f"TCP flows on {o}: survived / flows (per round)",
        lambda s, m: f"{fmt(m[o]['survived'])} / {fmt(m[o]['flows'])} ({per_round(s, o)})")  # fmt: skip
    row(f"outage of surviving {v} flows, median / max ms",
        lambda s, m: f"{fmt(m[v]['outage_ms_median'])} / {fmt(m[v]['outage_ms_max'])}")  # fmt: skip
    row(f"outage of {o} flows, median / max ms",
        lambda s, m: f"{fmt(m[o]['outage_ms_median'])} / {fmt(m[o]['outage_ms_max'])}")  # fmt: skip
    row("UDP stream: outage ms, lost % (its PLAT per round)",
        lambda s, m: f"{fmt(m['udp']['outage_ms'])}, {fmt(m['udp']['lost_pct'])} % "
                     f"({', '.join(m['udp']['plat'])})")  # fmt: skip
    row("route to one next hop, box gone (links down), ms",
        lambda s, m: fmt(m["detect_gone_ms"]))  # fmt: skip
    row("route / BGP down, processes killed (links up), ms",
        lambda s, m: f"{fmt(s.detect_killed.get('route_ms'))} / "
                     f"{fmt(s.detect_killed.get('bgp_down_ms'))}")  # fmt: skip
    row("route / BGP down, processes hung: BFD only, ms",
        lambda s, m: f"{fmt(s.detect_hung.get('route_ms'))} / "
                     f"{fmt(s.detect_hung.get('bgp_down_ms'))}")  # fmt: skip
    row("revive: core uses plat1 again after, s (median)",
        lambda s, m: fmt(med(s.revive_s)))  # fmt: skip
    rep = next((s.replication for s in setups if s.replication), {})
    if rep and "error" not in rep:
        row("conntrackd: sessions/s created on plat1 / replicated to plat2",
            lambda s, m: f"{fmt(rep['created_per_s'])} / {fmt(rep['replicated_per_s'])}"
            if s.replication else "no sync")  # fmt: skip
        row("conntrackd: entries on plat1 / copies on plat2 / missing at end",
            lambda s, m: f"{rep['in_plat1_table']} / {rep['in_plat2_table']} / "
                         f"{rep['missing_at_end']}" if s.replication else "-")  # fmt: skip
        row(
            "conntrackd: last copy on plat2 after last entry on plat1, ms",
            lambda s, m: fmt(rep["plat2_done_after_plat1_ms"]) if s.replication else "-",
        )
        row("replication delay under load, median / p99 / max ms",
            lambda s, m: f"{fmt(rep['load_delay_ms']['median'])} / "
                         f"{fmt(rep['load_delay_ms']['p99'])} / {fmt(rep['load_delay_ms']['max'])}"
            if s.replication else "-")  # fmt: skip
        for key, label in (("single_delay_ms", "idle lab"),
                           ("single_delay_after_flood_ms", "right after the flood")):  # fmt: skip
            row(f"replication delay, single flows ({label}), median / max ms",
                lambda s, m, key=key: f"{fmt(rep[key]['median'])} / {fmt(rep[key]['max'])}"
                if s.replication else "-")  # fmt: skip
    out = [
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    out.append(
        "\nMedians over rounds. A flow's outage is its longest pause in arrivals spanning "
        "the kill; the flows are paced (16 KiB per ~20 ms), so ~20 ms is no outage."
    )
    if rep and "error" not in rep:
        idle = rep["single_delay_ms"]["max"]
        load = rep["load_delay_ms"]["max"]
        out.append(
            f"\nLost by design (resilient): a flow opened in the last {fmt(idle)} ms before "
            f"its PLAT dies (idle; up to {fmt(load)} ms while {fmt(rep['created_per_s'])} "
            "sessions/s are being created, up to "
            f"{fmt(rep['single_delay_after_flood_ms']['max'])} ms right after) has no copy "
            "on the other PLAT yet."
        )
    elif rep:
        out.append(f"\nreplication: {rep['error']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="failovers per setup")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each long flow")
    ap.add_argument("--kill-at", type=float, default=3.0, help="s into the flows")
    ap.add_argument("--flows", type=int, default=20000, help="replication flood (0: skip)")
    ap.add_argument("--flood-limit", type=float, default=20.0, help="s, at most")
    ap.add_argument("--only", action="append", choices=["resilient", "plain"])
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/ha.py needs root (namespaces)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    setups = []
    with tempfile.TemporaryDirectory(prefix="v6mostly-bench-ha-") as tmp:
        for name in a.only or ["resilient", "plain"]:
            setups.append(run_setup(name, a, tmp))
    took = time.monotonic() - t0
    print(
        f"# bench/ha.py --rounds {a.rounds} --seconds {a.seconds:g} --flows {a.flows}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, {took:.0f} s"
    )
    print(report(setups))
    doc = {"seconds": round(took), "setups": {s.name: asdict(s) | {"summary": summary(s)}
                                              for s in setups}}  # fmt: skip
    print(json.dumps(doc))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
