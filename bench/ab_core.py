"""A/B timing of the SIIT core fast path: this tree against a git revision.

    python bench/ab_core.py [REV] [--rounds N]

Checks REV (default HEAD) out into a temporary worktree, then times the same
packets through both trees' ``Translator.translate_into`` in alternating child
processes (so machine noise hits both alike) and prints ns/packet medians and
the ratio new/old (of the fastest runs, and of the medians). Numbers are for comparing, on one machine, in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from scapy.all import ICMP, IP, TCP, UDP, ICMPv6DestUnreach, ICMPv6EchoRequest, IPv6, Raw, raw
from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig
NEUTRAL = TranslatorConfig(pool6="64:ff9b::/96", hairpinning=False)
EAM = TranslatorConfig(pool6="2001:db8:46::/96", eam=[("2001:db8:64::/120", "203.0.113.0/24")])
P = {
  "udp64_4to6": (NEUTRAL, IP(src="8.8.8.8", dst="9.9.9.9") / UDP(sport=53, dport=5353) / Raw(bytes(36))),
  "udp64_6to4": (NEUTRAL, IPv6(src="64:ff9b::909:909", dst="64:ff9b::808:808") / UDP(sport=5353, dport=53) / Raw(bytes(16))),
  "tcp1500_4to6": (NEUTRAL, IP(src="8.8.8.8", dst="9.9.9.9", flags="DF") / TCP(flags="A") / Raw(bytes(1460))),
  "tcp1500_6to4": (NEUTRAL, IPv6(src="64:ff9b::909:909", dst="64:ff9b::808:808") / TCP(flags="A") / Raw(bytes(1440))),
  "echo_6to4": (NEUTRAL, IPv6(src="64:ff9b::909:909", dst="64:ff9b::808:808") / ICMPv6EchoRequest(data=bytes(56))),
  "icmp_error_4to6": (NEUTRAL, IP(src="8.8.8.8", dst="9.9.9.9") / ICMP(type=3, code=3) / IP(src="9.9.9.9", dst="8.8.8.8") / UDP(sport=1, dport=2) / Raw(bytes(20))),
  "icmp_error_6to4": (NEUTRAL, IPv6(src="64:ff9b::909:909", dst="64:ff9b::808:808") / ICMPv6DestUnreach(code=4) / IPv6(src="64:ff9b::808:808", dst="64:ff9b::909:909") / UDP(sport=1, dport=2) / Raw(bytes(20))),
  "udp64_4to6_eam": (EAM, IP(src="198.51.100.10", dst="203.0.113.16") / UDP(sport=53, dport=5353) / Raw(bytes(36))),
  "udp64_6to4_eam": (EAM, IPv6(src="2001:db8:64::10", dst="2001:db8:46::c633:640a") / UDP(sport=5353, dport=53) / Raw(bytes(16))),
}
import os
os.sched_setaffinity(0, {1})
n = int(sys.argv[1])
out = {}
for name, (cfg, pkt) in P.items():
    pkt = raw(pkt)
    xl = Translator(cfg)
    buf = bytearray(65600)
    end = HEADROOM + len(pkt)
    tr = xl.translate_into
    best = None
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            buf[HEADROOM:end] = pkt
            tr(buf, HEADROOM, end)
        dt = (time.perf_counter_ns() - t0) / n
        best = dt if best is None else min(best, dt)
    assert sum(xl.stats.drops) == 0, name
    out[name] = best
print(json.dumps(out))
"""


def run(src: Path, n: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src))
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(n)], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(r.stdout))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", nargs="?", default="HEAD")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=20000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="v6m-ab-") as tmp:
        wt = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(wt), a.rev],
            check=True,
        )
        try:
            old: dict[str, list[float]] = {}
            new: dict[str, list[float]] = {}
            for _ in range(a.rounds):
                for k, v in run(wt / "src", a.count).items():
                    old.setdefault(k, []).append(v)
                for k, v in run(ROOT / "src", a.count).items():
                    new.setdefault(k, []).append(v)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)])
    # The minimum is the least disturbed run (the machine's noise only adds time);
    # the median is shown for the spread.
    print(f"{'packet':18} {'min ' + a.rev:>14} {'min this':>10} {'ratio':>6} {'median ratio':>13}")
    for k in old:
        o, n = min(old[k]), min(new[k])
        mr = statistics.median(new[k]) / statistics.median(old[k])
        print(f"{k:18} {o:14.0f} {n:10.0f} {n / o:6.3f} {mr:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
