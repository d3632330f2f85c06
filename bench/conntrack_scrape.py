"""How long a metrics scrape of the PLAT takes with many NAPT66 sessions.

Run as root: ``make bench-scrape`` (or ``python bench/conntrack_scrape.py [--sessions N]``).

In the namespace lab, client6 opens ``--sessions`` UDP flows through the PLAT
(one socket per source address, one datagram to each of many destination ports
of the IPv4 server's Pref64 address: each is a conntrack entry, unreplied ones
live 30 s). Then, inside the PLAT's namespace, in one run:

* the scrape of ``/metrics`` (v6mostly: the kernel's ``nf_conntrack_count``),
  timed ``--scrapes`` times (min and median);
* for reference, counting the same sessions by dumping the conntrack table with
  pyroute2 (what the PLAT did before);
* ping RTT from client6 through the PLAT while scraping in a loop, against the
  same ping without scrapes (a scrape must not stall forwarding).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from v6mostly.lab.topology import METRICS, PREF64, SERVER4, Lab, LabConfig, running_lab

FLOOD = """
import socket, sys
dst, n = sys.argv[1], int(sys.argv[2])
socks = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range((n + 59999) // 60000)]
sent = 0
for s in socks:
    for port in range(2000, 62000):
        if sent == n:
            break
        s.sendto(b"x", (dst, port))
        sent += 1
print(sent)
"""

TIME_SCRAPES = """
import json, statistics, sys, time, urllib.request
url, n = "http://" + sys.argv[1] + "/metrics", int(sys.argv[2])
times, count = [], None
for _ in range(n):
    t0 = time.perf_counter()
    body = urllib.request.urlopen(url, timeout=60).read().decode()
    times.append(time.perf_counter() - t0)
for line in body.splitlines():
    if line.startswith("v6mostly_napt66_sessions "):
        count = float(line.split()[1])
print(json.dumps({"times": times, "sessions": count}))
"""

TIME_DUMP = """
import json, socket, time
from pyroute2 import Conntrack
t0 = time.perf_counter()
n = 0
with Conntrack(nfgen_family=socket.AF_INET6) as ct:
    for entry in ct.dump_entries():
        n += 1
print(json.dumps({"seconds": time.perf_counter() - t0, "entries": n}))
"""

SCRAPE_LOOP = """
import sys, time, urllib.request
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=60).read()
"""


def ping_ms(lab: Lab, target: str, count: int) -> tuple[float, float, int]:
    """(avg RTT ms, max RTT ms, lost) of a ping from client6."""
    r = lab.exec(
        "client6",
        ["ping", "-6", "-q", "-c", str(count), "-i", "0.01", "-W", "1", target],
        check=False,
        timeout=count * 0.05 + 30,
    )
    sent = recv = 0
    avg = mx = float("nan")
    for line in r.stdout.splitlines():
        if "packets transmitted" in line:
            parts = line.split(", ")
            sent, recv = int(parts[0].split()[0]), int(parts[1].split()[0])
        if line.startswith("rtt"):
            vals = line.split("=")[1].split()[0].split("/")
            avg, mx = float(vals[1]), float(vals[2])
    return avg, mx, sent - recv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--scrapes", type=int, default=10)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/conntrack_scrape.py needs root (namespaces)", file=sys.stderr)
        return 2
    target = str(ipaddress.IPv6Network(PREF64)[int(ipaddress.IPv4Address(SERVER4))])
    with running_lab(LabConfig(router=False)) as lab:
        base = ping_ms(lab, target, 200)
        t0 = time.monotonic()
        sent = lab.exec(
            "client6", [sys.executable, "-c", FLOOD, target, str(a.sessions)], timeout=120
        ).stdout.strip()
        made = time.monotonic() - t0
        r = lab.exec("plat", [sys.executable, "-c", TIME_SCRAPES, METRICS, str(a.scrapes)])
        scr = json.loads(r.stdout)
        d = json.loads(lab.exec("plat", [sys.executable, "-c", TIME_DUMP], timeout=300).stdout)
        loop = subprocess.Popen(lab.cmd("plat", [sys.executable, "-c", SCRAPE_LOOP, METRICS, "6"]))
        during = ping_ms(lab, target, 200)
        loop.wait(timeout=60)
    ms = [t * 1000 for t in scr["times"]]
    print(
        f"# bench/conntrack_scrape.py --sessions {a.sessions} --scrapes {a.scrapes}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print(f"flows sent {sent} in {made:.1f} s; the PLAT's count {scr['sessions']:.0f}")
    print("| | sessions | time |")
    print("|---|---|---|")
    print(
        f"| v6mostly scrape (kernel counters), min / median of {a.scrapes} | "
        f"{scr['sessions']:.0f} | {min(ms):.1f} / {statistics.median(ms):.1f} ms |"
    )
    print(
        f"| conntrack dump with pyroute2 (before) | {d['entries']} | {d['seconds'] * 1000:.0f} ms |"
    )
    print(
        f"| ping through the PLAT, no scrapes: avg / max RTT, lost of 200 | | "
        f"{base[0]:.3f} / {base[1]:.3f} ms, {base[2]} |"
    )
    print(
        f"| ping while scraping in a loop: avg / max RTT, lost of 200 | | "
        f"{during[0]:.3f} / {during[1]:.3f} ms, {during[2]} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
