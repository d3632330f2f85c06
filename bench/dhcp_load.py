"""DHCPv4 load: full exchanges per second, v6mostly against Kea, over a veth.

Run as root: ``make bench-dhcp`` (or ``python bench/dhcp_load.py [--seconds N]``).

Two namespaces joined by a veth: ``srv`` runs the server under test,
``gen`` runs this load generator, which acts as a relay agent (giaddr
198.51.100.2) for many simulated clients. Each client does a full exchange:
DISCOVER -> OFFER -> REQUEST -> ACK, then RELEASE so that the /24 pool never
runs out; ``--window`` clients are in flight at any time. An exchange counts
when its ACK arrives. Servers:

* v6mostly: ``v6mostly dhcp4`` with SQLite lease persistence (WAL,
  synchronous=NORMAL: every ACK is committed before it is sent);
* Kea: Debian's kea-dhcp4-server, memfile backend (persisted to CSV), raw
  sockets, in the same namespace, same subnet, pool and lease time.

The same generator drives both, in the same run; the report gives the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from v6mostly.lab.topology import ns_cpu_seconds

GEN_ADDR = "198.51.100.2"
SRV_ADDR = "198.51.100.1"
MAGIC = b"\x63\x82\x53\x63"


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def packet(
    mtype: int,
    xid: int,
    mac: bytes,
    requested: bytes | None = None,
    server: bytes | None = None,
    ciaddr: bytes = b"\0\0\0\0",
) -> bytes:
    head = struct.pack(
        "!BBBBIHH4s4s4s4s16s",
        1,
        1,
        6,
        1,
        xid,
        0,
        0,
        ciaddr,
        b"\0" * 4,
        b"\0" * 4,
        socket.inet_aton(GEN_ADDR),
        mac.ljust(16, b"\0"),
    )
    opts = bytes([53, 1, mtype, 55, 3, 1, 3, 6])
    if requested:
        opts += bytes([50, 4]) + requested
    if server:
        opts += bytes([54, 4]) + server
    opts += bytes([61, 7, 1]) + mac + b"\xff"
    return head + bytes(192) + MAGIC + opts


def parse_reply(data: bytes) -> tuple[int, int, bytes, bytes] | None:
    if len(data) < 244 or data[236:240] != MAGIC:
        return None
    xid = struct.unpack_from("!I", data, 4)[0]
    yiaddr = data[16:20]
    mtype = 0
    sid = b""
    i = 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, n = data[i], data[i + 1]
        if code == 53:
            mtype = data[i + 2]
        elif code == 54:
            sid = data[i + 2 : i + 6]
        i += 2 + n
    return xid, mtype, yiaddr, sid


def generate(seconds: float, window: int) -> dict[str, float]:
    """Runs inside the gen namespace: drives exchanges, returns counts."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((GEN_ADDR, 67))
    s.setblocking(False)
    dst = (SRV_ADDR, 67)
    inflight: dict[int, tuple[bytes, float]] = {}  # xid -> (mac, sent at)
    next_id = 1
    done = 0
    retries = 0
    start = time.monotonic()
    end = start + seconds

    def new_client() -> None:
        nonlocal next_id
        i = next_id
        next_id += 1
        mac = b"\x02\x10" + i.to_bytes(4, "big")
        xid = i
        inflight[xid] = (mac, time.monotonic())
        s.sendto(packet(1, xid, mac), dst)

    for _ in range(window):
        new_client()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        r, _, _ = select.select([s], [], [], 0.05)
        if r:
            for _ in range(256):
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    break
                p = parse_reply(data)
                if p is None:
                    continue
                xid, mtype, yiaddr, sid = p
                entry = inflight.get(xid)
                if entry is None:
                    continue
                mac, _ = entry
                if mtype == 2:  # OFFER -> REQUEST
                    s.sendto(packet(3, xid, mac, requested=yiaddr, server=sid), dst)
                    inflight[xid] = (mac, time.monotonic())
                elif mtype == 5:  # ACK -> RELEASE, next client
                    done += 1
                    s.sendto(packet(7, xid + 0x40000000, mac, server=sid, ciaddr=yiaddr), dst)
                    del inflight[xid]
                    new_client()
                elif mtype == 6:  # NAK: start over
                    del inflight[xid]
                    new_client()
        # a lost message: restart that client after 1 s
        for xid, (_mac, t) in list(inflight.items()):
            if now - t > 1.0:
                del inflight[xid]
                retries += 1
                new_client()
    elapsed = time.monotonic() - start
    return {
        "exchanges": done,
        "seconds": elapsed,
        "per_second": done / elapsed,
        "restarts": retries,
    }


SITE = """
[site]
pref64 = "64:ff9b::/96"
[[interface]]
name = "srv0"
ra = false
[interface.dhcp4]
subnet = "198.51.100.0/24"
pool = ["198.51.100.10-198.51.100.250"]
routers = ["198.51.100.1"]
lease_time = 3600
relays = ["198.51.100.2"]
[dhcp4]
lease_db = "{dir}/leases.sqlite"
"""

KEA = {
    "Dhcp4": {
        "interfaces-config": {"interfaces": ["srv0"], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": True, "name": "", "lfc-interval": 0},
        "valid-lifetime": 3600,
        "subnet4": [
            {
                "id": 1,
                "subnet": "198.51.100.0/24",
                "pools": [{"pool": "198.51.100.10 - 198.51.100.250"}],
                "option-data": [{"name": "routers", "data": "198.51.100.1"}],
            }
        ],
        "loggers": [
            {"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "WARN"}
        ],
    }
}


def run_one(kind: str, seconds: float, window: int) -> dict[str, float]:
    rid = os.urandom(3).hex()
    srv, gen = f"v6m-{rid}-dsrv", f"v6m-{rid}-dgen"
    d = Path(tempfile.mkdtemp(prefix="v6m-dhcp-"))
    proc = None
    try:
        sh("ip", "netns", "add", srv)
        sh("ip", "netns", "add", gen)
        sh(
            "ip",
            "-n",
            srv,
            "link",
            "add",
            "srv0",
            "type",
            "veth",
            "peer",
            "name",
            "gen0",
            "netns",
            gen,
        )
        sh("ip", "-n", srv, "addr", "add", f"{SRV_ADDR}/24", "dev", "srv0")
        sh("ip", "-n", gen, "addr", "add", f"{GEN_ADDR}/24", "dev", "gen0")
        for ns, dev in ((srv, "srv0"), (gen, "gen0")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        log = (d / "server.log").open("wb")
        if kind == "v6mostly":
            (d / "site.toml").write_text(SITE.format(dir=d))
            argv = [sys.executable, "-m", "v6mostly", "dhcp4", "--config", str(d / "site.toml")]
            env = os.environ
        else:
            cfg = json.loads(json.dumps(KEA))
            cfg["Dhcp4"]["lease-database"]["name"] = str(d / "kea-leases4.csv")
            (d / "kea.conf").write_text(json.dumps(cfg))
            argv = ["kea-dhcp4", "-c", str(d / "kea.conf")]
            env = dict(os.environ, KEA_PIDFILE_DIR=str(d), KEA_LOCKFILE_DIR=str(d))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", srv, *argv], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        time.sleep(2.0)
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited: {(d / 'server.log').read_text()[-500:]}")
        cpu0 = ns_cpu_seconds(srv)
        r = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                gen,
                sys.executable,
                __file__,
                "--generate",
                str(seconds),
                "--window",
                str(window),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
        result: dict[str, float] = json.loads(r.stdout)
        cpu = ns_cpu_seconds(srv) - cpu0
        result["cpu_us_per_exchange"] = cpu / max(1, result["exchanges"]) * 1e6
        return result
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in (srv, gen):
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True
            ).stdout
            for p in pids.split():
                subprocess.run(["kill", "-9", p], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--window", type=int, default=32, help="clients in flight")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    ap.add_argument("--generate", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.generate:
        print(json.dumps(generate(a.generate, a.window)))
        return 0
    if os.geteuid() != 0:
        print("bench/dhcp_load.py needs root (namespaces)", file=sys.stderr)
        return 2
    rounds: dict[str, list[dict[str, float]]] = {"v6mostly": [], "kea": []}
    for i in range(a.rounds):
        order = ("v6mostly", "kea") if i % 2 == 0 else ("kea", "v6mostly")
        for k in order:
            rounds[k].append(run_one(k, a.seconds, a.window))
    print(
        f"# bench/dhcp_load.py --seconds {a.seconds:g} --window {a.window} --rounds {a.rounds}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print(
        "| server | median exchanges/s | each round | server CPU us/exchange (median) | restarted (lost) |"
    )
    print("|---|---|---|---|---|")
    med: dict[str, float] = {}
    cpu_med: dict[str, float] = {}
    for k, rs in rounds.items():
        rates = sorted(r["per_second"] for r in rs)
        med[k] = rates[len(rates) // 2]
        each = ", ".join(f"{r['per_second']:,.0f}" for r in rs)
        lost = sum(r["restarts"] for r in rs)
        cpus = sorted(r["cpu_us_per_exchange"] for r in rs)
        cpu_med[k] = cpus[len(cpus) // 2]
        print(f"| {k} | {med[k]:,.0f} | {each} | {cpu_med[k]:.0f} | {lost:,.0f} |")
    ratios = [
        v["per_second"] / max(1e-9, kk["per_second"])
        for v, kk in zip(rounds["v6mostly"], rounds["kea"], strict=True)
    ]
    print(
        f"\nv6mostly / Kea = {med['v6mostly'] / med['kea']:.2f}x on the medians "
        f"(per round: {', '.join(f'{r:.2f}x' for r in ratios)}); full "
        "DISCOVER/OFFER/REQUEST/ACK exchanges, each followed by a RELEASE"
    )
    print(
        f"server CPU per exchange: v6mostly / Kea = {cpu_med['v6mostly'] / cpu_med['kea']:.2f}x "
        "(lower is better; the generator shares the 2 cores, so the rate can be the generator's)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
