"""Failure and recovery of a PLAT in the HA lab (``ha.py``): the tests' and
``make bench-ha``'s shared procedure.

``failover(lab, ...)`` starts long TCP downloads from many client addresses and a
UDP stream, kills ``plat1`` (SIGKILL of every process in its namespace, then its
links down: the box is gone), waits for the flows and reports, per flow, whether
it completed intact (status 200, SHA-256 of the body) and its outage (the longest
pause in arrivals spanning the kill), with the PLAT each flow was on before.
``revive(lab, node)`` brings the PLAT back as an operator would (links up, the
PLAT and bird started again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .ha import (
    CLIENT_NET,
    CLIENTS,
    DOWN6,
    FLOW_FILE,
    FLOW_SIZE,
    PLATS,
    UP4,
    bird_argv,
    flow_body,
    plat_argv,
    pref64_paths,
)
from .ha_probe import max_gap
from .topology import Lab, LabError, server6

UDP_PORT = 9999


@dataclass
class Flow:
    source: str
    plat: str  # where it ran before the failure ("?" if unknown)
    ok: bool
    outage_s: float
    error: str = ""


@dataclass
class FailoverResult:
    flows: list[Flow] = field(default_factory=list)
    udp_sent: int = 0
    udp_received: int = 0
    udp_outage_s: float = 0.0
    udp_plat: str = "?"
    detect_s: float = 0.0  # kill -> core's Pref64 route down to one next hop
    revive_s: float = 0.0  # revive() -> core uses the PLAT again (0: not revived)

    def survived(self, plat: str | None = None) -> int:
        return sum(1 for f in self.flows if f.ok and (plat is None or f.plat == plat))

    def count(self, plat: str | None = None) -> int:
        return sum(1 for f in self.flows if plat is None or f.plat == plat)

    def outages(self, plat: str) -> list[float]:
        return [f.outage_s for f in self.flows if f.plat == plat and f.ok]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "flows": self.count(),
            "survived": self.survived(),
            "detect_ms": round(self.detect_s * 1000),
            "revive_s": round(self.revive_s, 2),
            "udp": {"sent": self.udp_sent, "received": self.udp_received,
                    "outage_ms": round(self.udp_outage_s * 1000), "plat": self.udp_plat},
        }  # fmt: skip
        for p in PLATS:
            o = self.outages(p)
            out[p] = {
                "flows": self.count(p),
                "survived": self.survived(p),
                "outage_ms_median": round(statistics.median(o) * 1000) if o else None,
                "outage_ms_max": round(max(o) * 1000) if o else None,
            }
        return out


def ctl_json(lab: Lab, node: str, *args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "v6mostly", "ctl", "--json", "--socket",
            lab.path(f"{node}.sock"), *args]  # fmt: skip
    r = lab.exec(node, argv, check=False, timeout=30)
    try:
        d: dict[str, Any] = json.loads(r.stdout)[lab.path(f"{node}.sock")]
    except (ValueError, KeyError):
        return {}
    return d


def clients_by_plat(lab: Lab) -> dict[str, set[str]]:
    """The client addresses with a NAPT66 binding on each PLAT's own outer address."""
    out: dict[str, set[str]] = {}
    for p in PLATS:
        d = ctl_json(lab, p, "sessions", "--limit", "100000")
        out[p] = {s["client"] for s in d.get("sessions", [])}
    return out


def expected_sha() -> str:
    return hashlib.sha256(flow_body()).hexdigest()


def _popen(lab: Lab, node: str, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        lab.cmd(node, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def kill(lab: Lab, node: str) -> None:
    """The box is gone: SIGKILL every process in its namespace, then its links down."""
    r = subprocess.run(
        ["ip", "netns", "pids", lab.ns(node)], capture_output=True, text=True, check=False
    )
    for tok in r.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(tok), signal.SIGKILL)
    for ifname in ("d0", "u0", "sync0"):
        lab.exec(node, ["ip", "link", "set", ifname, "down"], check=False)


def revive(lab: Lab, node: str, timeout: float = 60) -> float:
    """Links up, the PLAT and its bird started again; seconds until core uses it."""
    t0 = time.monotonic()
    for ifname in ("d0", "u0", "sync0"):
        lab.exec(node, ["ip", "link", "set", ifname, "up"])
    # The lab's static routes went with the links (once the carrier is back).
    routes = [["ip", "route", "replace", "default", "via", UP4[node][0]],
              ["ip", "-6", "route", "replace", CLIENT_NET, "via", DOWN6[node][0]]]  # fmt: skip
    deadline = time.monotonic() + 10
    while routes:
        r = lab.exec(node, routes[0], check=False)
        if r.returncode == 0:
            routes.pop(0)
        elif time.monotonic() > deadline:
            raise LabError(f"{node}: {' '.join(routes[0])}: {r.stderr.strip()}")
        else:
            time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lab.path(f"{node}-bird.ctl"))
    # --replace: the killed PLAT left its nftables table behind (a rebooted box would not)
    argv = [*plat_argv(lab.path, node), "--replace"]
    log_before = _size(lab.path(f"{node}.log"))
    lab.spawn(node, node, [sys.executable, "-m", "v6mostly", *argv])
    deadline = time.monotonic() + timeout
    while b"bird configuration" not in _tail_from(lab.path(f"{node}.log"), log_before):
        if time.monotonic() > deadline:
            raise LabError(
                f"{node} did not come back: "
                + _tail_from(lab.path(f"{node}.log"), log_before).decode(errors="replace")[-500:]
            )
        time.sleep(0.1)
    lab.spawn(node, f"bird-{node}", bird_argv(lab.path, node))
    lab.save()
    while pref64_paths(lab) < 2:
        if time.monotonic() > deadline:
            raise LabError(f"core does not use {node} again after {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _tail_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


def failover(
    lab: Lab, sources: list[str], seconds: float = 10.0, kill_at: float = 3.0,
    udp_source: str | None = None, victim: str = "plat1", revive_at: float | None = None,
) -> FailoverResult:  # fmt: skip
    """Long flows from ``sources`` (one each) and a UDP stream; kill ``victim`` (and,
    with ``revive_at``, bring it back that many seconds after the start while the
    flows still run)."""
    target = server6()
    before: dict[str, set[str]] = {}
    udp_src = udp_source or CLIENTS[-1]
    recv = _popen(lab, "inet4", [sys.executable, "-m", "v6mostly.lab.ha_probe", "udp-recv",
                                 "0.0.0.0", str(UDP_PORT), str(seconds + 4)])  # fmt: skip
    time.sleep(0.3)
    send = _popen(lab, "hclient", [sys.executable, "-m", "v6mostly.lab.ha_probe", "udp-send",
                                   target, str(UDP_PORT), udp_src, str(seconds), "10"])  # fmt: skip
    tcp = _popen(lab, "hclient", [sys.executable, "-m", "v6mostly.lab.ha_probe", "tcp", target,
                                  f"/{FLOW_FILE}", str(seconds), str(FLOW_SIZE), *sources])  # fmt: skip
    try:
        time.sleep(kill_at * 0.6)
        before = clients_by_plat(lab)
        time.sleep(max(0.0, kill_at * 0.4))
        revived = 0.0
        t_kill = time.time()
        t0 = time.monotonic()
        kill(lab, victim)
        detect = 0.0
        while time.monotonic() - t0 < 10:
            if pref64_paths(lab) <= 1:
                detect = time.monotonic() - t0
                break
            time.sleep(0.01)
        if revive_at is not None:
            time.sleep(max(0.0, revive_at - kill_at - (time.monotonic() - t0)))
            revived = revive(lab, victim)
        out_tcp, _ = tcp.communicate(timeout=seconds * 4 + 60)
        out_send, _ = send.communicate(timeout=30)
        out_recv, _ = recv.communicate(timeout=30)
    finally:
        for p in (tcp, send, recv):
            if p.poll() is None:
                p.kill()
                p.wait()
    res = FailoverResult(detect_s=detect, revive_s=revived)
    sha = expected_sha()
    for line in out_tcp.splitlines():
        d = json.loads(line)
        plat = next((p for p, cl in before.items() if d["source"] in cl), "?")
        ok = d["status"] == 200 and d["sha256"] == sha and not d["error"]
        err = d["error"] or ("" if ok else f"status {d['status']}, {d['bytes']} bytes")
        res.flows.append(Flow(d["source"], plat, ok, max_gap(d["times"], t_kill), err))
    with contextlib.suppress(ValueError, IndexError):
        res.udp_sent = json.loads(out_send.splitlines()[-1])["sent"]
    with contextlib.suppress(ValueError, IndexError):
        got = json.loads(out_recv.splitlines()[-1])["received"]
        res.udp_received = len(got)
        res.udp_outage_s = max_gap([t for _, t in got], t_kill)
    res.udp_plat = next((p for p, cl in before.items() if udp_src in cl), "?")
    return res


def flows_across_revive(
    lab: Lab, sources: list[str], seconds: float, node: str = "plat1"
) -> tuple[list[dict[str, Any]], float]:
    """Long downloads from ``sources`` while ``node`` comes back (2 s after they start):
    one result row per flow (``ha_probe tcp``) and how long the revival took."""
    argv = [sys.executable, "-m", "v6mostly.lab.ha_probe", "tcp", server6(), f"/{FLOW_FILE}",
            str(seconds), str(FLOW_SIZE), *sources]  # fmt: skip
    tcp = _popen(lab, "hclient", argv)
    try:
        time.sleep(2)
        took = revive(lab, node)
        out, _ = tcp.communicate(timeout=seconds * 4 + 60)
    finally:
        if tcp.poll() is None:
            tcp.kill()
            tcp.wait()
    return [json.loads(x) for x in out.splitlines()], took
