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

For the planes in ``EXTRAS`` (v6mostly with its defaults and its main
variants, tayga, kernel forwarding) it also measures small packets and
QUIC-like UDP (issue 13):

* a *saturating* 64-byte UDP run both ways (``iperf3 -u -l 64 -b 0``):
  packets delivered per second to the receiving socket (the receiver
  namespace's UDP InDatagrams, cross-checked against iperf3's own count),
  and CPU microseconds per delivered packet, twice: user+sys of the
  translator's namespace (its processes; with RPS part of the forwarding
  work runs in softirq on the other CPU and is not counted there) and the
  whole machine's busy time (/proc/stat: user, system, irq, softirq of every
  CPU, endpoints included; comparable across planes, kernel forwarding too,
  and the one that sees the in-kernel fast path: packets it translates cost
  no process time, and the TUN's rx_packets does not count them);
* a QUIC-like run both ways: a sender using ``UDP_SEGMENT`` (GSO; 1200-byte
  datagrams, 50 per ``send``, i.e. 60 KB sends, as fast as it can; DF set on
  IPv4, as RFC 9000 §14 asks of QUIC) and a
  receiver counting datagrams and bytes (downstream, the receiver first
  sends a hello, as a QUIC client would, to open the NAPT66/NAT64 state).
  Same figures: datagrams delivered per second and CPU per delivered
  datagram.

Data planes: v6mostly with its defaults (offloads, RPS on the TUN, one
worker per CPU, the in-kernel fast path for IPv4 TCP/UDP), without the fast path, with offloads / plain, 1 and 2 queues (with RPS on the
TUN, its default; once without); Debian's tayga (single-threaded) behind the
same NAPT66 table, as packaged and with the same RPS setting; plain kernel IPv6 forwarding
with no translation (the ceiling). Every figure is also printed as a ratio to
tayga and to the kernel, then everything once more as one JSON line. Checksums
are verified for real: the lab turns checksum offload off on the endpoints (rx)
and the router's veths (tx).

``--profile DIR`` also samples the v6mostly workers with py-spy (and
``perf`` when installed) during the saturating runs; see
docs/profile-small-packets.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from v6mostly.lab.topology import (
    SERVER6_NATIVE,
    Lab,
    LabConfig,
    LabError,
    ns_cpu_seconds,
    running_lab,
    server6,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIC_PORT = 5443
QUIC_SEGMENT = 1200  # bytes per datagram (UDP_SEGMENT)
QUIC_SEGMENTS = 50  # datagrams per send: 60,000-byte sends


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


@dataclass
class E2eResult(Result):
    """``Result`` (shared with bench/clat.py) plus the small-packet and QUIC-like runs."""

    # saturating 64-byte UDP (iperf3 -u -l 64 -b 0), planes in EXTRAS only
    extras: bool = False
    sat_up_pps: float = 0.0  # delivered to the receiving socket, per second
    sat_down_pps: float = 0.0
    sat_up_iperf_pps: float = 0.0  # iperf3's own count (packets - lost), per second
    sat_down_iperf_pps: float = 0.0
    sat_up_xlat_pps: float = 0.0  # written into the TUN by the translator, per second
    sat_down_xlat_pps: float = 0.0
    sat_ns_us_up: float = 0.0  # translator namespace CPU us per delivered packet
    sat_ns_us_down: float = 0.0
    sat_host_us_up: float = 0.0  # whole machine busy CPU us per delivered packet
    sat_host_us_down: float = 0.0
    # QUIC-like: UDP_SEGMENT sender, 1200-byte datagrams
    quic_up_dps: float = 0.0  # datagrams delivered per second
    quic_down_dps: float = 0.0
    quic_up_sent_dps: float = 0.0  # datagrams the sender handed to the kernel, per second
    quic_down_sent_dps: float = 0.0
    quic_up_mbps: float = 0.0  # payload Mbit/s delivered
    quic_down_mbps: float = 0.0
    quic_ns_us_up: float = 0.0
    quic_ns_us_down: float = 0.0
    quic_host_us_up: float = 0.0
    quic_host_us_down: float = 0.0


def target(lab: Lab) -> str:
    return SERVER6_NATIVE if lab.config.translator == "none" else server6()


def cpu_seconds(lab: Lab) -> float:
    """user+sys of all processes in the plat namespace (the translator and its workers)."""
    return ns_cpu_seconds(lab.ns("plat"))


def host_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine, all CPUs: user, nice, system, irq, softirq
    (not idle, iowait or steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK


def tun_rx_packets(lab: Lab) -> int:
    r = lab.exec("plat", ["cat", "/sys/class/net/nat64/statistics/rx_packets"], check=False)
    return int(r.stdout.strip() or 0)


def udp_in_datagrams(lab: Lab, node: str) -> int:
    """UDP datagrams delivered to sockets in ``node`` (IPv4 + IPv6, the namespace's SNMP MIB)."""
    r = lab.exec(node, ["cat", "/proc/net/snmp", "/proc/net/snmp6"], check=False)
    total = 0
    udp_hdr: list[str] = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "Udp:":
            if not udp_hdr:
                udp_hdr = parts
            else:
                total += int(parts[udp_hdr.index("InDatagrams")])
        elif parts[0] == "Udp6InDatagrams":
            total += int(parts[1])
    return total


def iperf(lab: Lab, seconds: int, *extra: str, tries: int = 3) -> dict[str, Any]:
    """One iperf3 run; retried (up to ``tries`` times) when iperf3 reports an error."""
    err = ""
    for _ in range(tries):
        r = lab.exec(
            "client6",
            ["iperf3", "-J", "-c", target(lab), "-t", str(seconds), *extra],
            timeout=seconds + 30,
            check=False,
        )
        try:
            d: dict[str, Any] = json.loads(r.stdout)
        except ValueError:
            d = {"error": r.stderr.strip() or "no JSON output"}
        if "error" not in d:
            return d
        err = d["error"]
        print(f"#   iperf3 {' '.join(extra)}: {err}; retrying", file=sys.stderr)
        time.sleep(2)
    raise RuntimeError(f"iperf3 {' '.join(extra)} failed {tries} times: {err}")


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


@dataclass
class Load:
    """What one loaded run cost: delivered packets, CPU of the plat namespace and the host."""

    delivered: int = 0
    translated: int = 0
    ns_cpu: float = 0.0
    host_cpu: float = 0.0

    def ns_us(self) -> float:
        return self.ns_cpu / self.delivered * 1e6 if self.delivered else 0.0

    def host_us(self) -> float:
        return self.host_cpu / self.delivered * 1e6 if self.delivered else 0.0


@contextlib.contextmanager
def accounting(lab: Lab, receiver: str) -> Iterator[Load]:
    """Counters around a loaded run; ``Load`` is filled in when the block ends."""
    translating = lab.config.translator != "none"
    ld = Load()
    d0 = udp_in_datagrams(lab, receiver)
    p0 = tun_rx_packets(lab) if translating else 0
    c0 = cpu_seconds(lab)
    h0 = host_cpu_seconds()
    yield ld
    h1 = host_cpu_seconds()
    c1 = cpu_seconds(lab)
    ld.host_cpu = h1 - h0
    ld.ns_cpu = (c1 - c0) if translating else 0.0
    ld.translated = (tun_rx_packets(lab) - p0) if translating else 0
    ld.delivered = udp_in_datagrams(lab, receiver) - d0


def saturating_run(
    lab: Lab, seconds: int, reverse: bool, prof: Profiler | None
) -> tuple[Load, float, float]:
    """64-byte UDP as fast as iperf3 sends it. Returns (load, seconds, iperf3's delivered pps).

    Retried up to 3 times, each attempt counted on its own (a failed one would add
    delivered packets and CPU to the next)."""
    extra = ["-u", "-l", "64", "-b", "0"] + (["-R"] if reverse else [])
    for attempt in range(3):
        around = prof.around(lab, "down" if reverse else "up", seconds) if prof else None
        try:
            with (
                accounting(lab, "client6" if reverse else "inet4") as ld,
                around or contextlib.nullcontext(),
            ):
                d = iperf(lab, seconds, *extra, tries=1)
        except RuntimeError as e:
            if attempt == 2:
                raise
            print(f"#   {e}; retrying", file=sys.stderr)
            time.sleep(2)
            continue
        break
    s = d["end"]["sum"]
    return ld, s["seconds"], (s["packets"] - s["lost_packets"]) / s["seconds"]


# The QUIC-like peer, run with ``python -c`` in a namespace. Modes:
#   recv PORT SECONDS                      count what arrives on [::]:PORT
#   recv-hello HOST PORT SECONDS           send hellos to HOST:PORT until data arrives, count it
#   send HOST PORT SECONDS SEG NSEG        UDP_SEGMENT sends of NSEG datagrams of SEG bytes
#   send-hello PORT SECONDS SEG NSEG       wait for a hello on [::]:PORT, then send to its source
# Each prints one JSON line.
_QUIC_PEER = r"""
import json, socket, struct, sys, time
SOL_UDP, UDP_SEGMENT = 17, 103
mono = time.monotonic
def sock(port=0):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("::", port))
    return s
def count(s, seconds, hello=None):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 100000))
    buf = bytearray(65536)
    recv = s.recv_into
    n = nbytes = 0
    start = mono()
    deadline = start + seconds
    quiet = 0
    while True:
        try:
            k = recv(buf)
        except OSError:
            now = mono()
            if n:
                quiet += 1
                if quiet >= 5 or now > deadline:  # 0.5 s without data: the sender is done
                    break
            elif now > deadline:
                break
            elif hello:
                s.sendto(b"hello", hello)
            continue
        if k == 5 and buf[:5] == b"hello":
            continue
        quiet = 0
        n += 1
        nbytes += k
    print(json.dumps({"received": n, "bytes": nbytes}))
def blast(s, seconds, seg, nseg):
    s.setsockopt(SOL_UDP, UDP_SEGMENT, seg)
    # as QUIC does (RFC 9000 section 14): never fragmented, DF set on IPv4
    s.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
    s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO (v4-mapped)
    payload = bytes(seg * nseg)
    send = s.send
    sends = errors = 0
    t0 = mono()
    end = t0 + seconds
    while mono() < end:
        for _ in range(8):
            try:
                send(payload)
                sends += 1
            except OSError:
                errors += 1
    print(json.dumps({"sent": sends * nseg, "errors": errors, "seconds": mono() - t0}))
mode, a = sys.argv[1], sys.argv[2:]
if mode == "recv":
    count(sock(int(a[0])), float(a[1]))
elif mode == "recv-hello":
    s = sock()
    peer = (a[0], int(a[1]))
    s.sendto(b"hello", peer)
    count(s, float(a[2]), hello=peer)
elif mode == "send":
    s = sock()
    s.connect((a[0], int(a[1])))
    blast(s, float(a[2]), int(a[3]), int(a[4]))
elif mode == "send-hello":
    s = sock(int(a[0]))
    s.settimeout(15)
    while True:
        data, peer = s.recvfrom(64)
        if data == b"hello":
            break
    s.settimeout(None)
    s.connect(peer)
    blast(s, float(a[1]), int(a[2]), int(a[3]))
"""


def quic_run(
    lab: Lab, seconds: int, reverse: bool
) -> tuple[Load, float, dict[str, Any], dict[str, Any]]:
    """QUIC-like UDP: a UDP_SEGMENT sender and a counting receiver, ``reverse`` = downstream.

    Returns (load, sender's seconds, sender's JSON, receiver's JSON).
    """
    py = sys.executable
    seg, nseg, port = str(QUIC_SEGMENT), str(QUIC_SEGMENTS), str(QUIC_PORT)
    wait = str(seconds + 20)
    if reverse:  # the server sends once the client's hello arrived (QUIC-like download)
        rx_node, tx_node = "client6", "inet4"
        rx_argv = [py, "-c", _QUIC_PEER, "recv-hello", target(lab), port, wait]
        tx_argv = [py, "-c", _QUIC_PEER, "send-hello", port, str(seconds), seg, nseg]
    else:
        rx_node, tx_node = "inet4", "client6"
        rx_argv = [py, "-c", _QUIC_PEER, "recv", port, wait]
        tx_argv = [py, "-c", _QUIC_PEER, "send", target(lab), port, str(seconds), seg, nseg]
    # the receiver's namespace counts the hellos too: few, and cancel out below
    with accounting(lab, rx_node) as ld:
        if reverse:
            tx = subprocess.Popen(lab.cmd(tx_node, tx_argv), stdout=subprocess.PIPE, text=True)
            time.sleep(0.3)
            rx = subprocess.Popen(lab.cmd(rx_node, rx_argv), stdout=subprocess.PIPE, text=True)
        else:
            rx = subprocess.Popen(lab.cmd(rx_node, rx_argv), stdout=subprocess.PIPE, text=True)
            time.sleep(0.3)
            tx = subprocess.Popen(lab.cmd(tx_node, tx_argv), stdout=subprocess.PIPE, text=True)
        try:
            tx_out, _ = tx.communicate(timeout=seconds + 25)
            rx_out, _ = rx.communicate(timeout=15)
        finally:
            for p in (tx, rx):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    try:
        txd, rxd = json.loads(tx_out), json.loads(rx_out)
    except ValueError as e:
        raise RuntimeError(f"QUIC-like run: no result ({tx_out!r}, {rx_out!r})") from e
    ld.delivered = rxd["received"]  # what the application read (hellos excluded)
    return ld, txd["seconds"], txd, rxd


class Profiler:
    """py-spy (and perf, when installed) on the v6mostly workers during a saturating run."""

    def __init__(self, out_dir: str) -> None:
        self.dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.py_spy = shutil.which("py-spy") or os.path.join(
            os.path.dirname(sys.executable), "py-spy"
        )
        self.perf = shutil.which("perf")
        self.plane = ""

    def workers(self, lab: Lab) -> list[int]:
        sup = lab.pids.get("plat", 0)
        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == sup:
                    out.append(int(pid))
        return sorted(out)

    @contextlib.contextmanager
    def around(self, lab: Lab, direction: str, seconds: int) -> Iterator[None]:
        if lab.config.translator != "v6mostly":
            yield
            return
        tag = re.sub(r"[^a-z0-9]+", "-", self.plane.lower()).strip("-") + "-" + direction
        procs = []
        dur = max(1, seconds - 2)
        for pid in self.workers(lab):
            argv = [
                self.py_spy,
                "record",
                "--nonblocking",
                "-r",
                "250",
                "-d",
                str(dur),
                "-f",
                "raw",
                "-o",
                os.path.join(self.dir, f"{tag}-pyspy-{pid}.txt"),
                "-p",
                str(pid),
            ]
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        if self.perf:
            argv = [
                self.perf,
                "record",
                "-q",
                "-e",
                "cpu-clock",
                "-F",
                "999",
                "-a",
                "-g",
                "-o",
                os.path.join(self.dir, f"{tag}-perf.data"),
                "--",
                "sleep",
                str(dur),
            ]
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        try:
            yield
        finally:
            for p in procs:
                try:
                    p.wait(timeout=dur + 20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def measure(
    name: str, cfg: LabConfig, seconds: int, rate: str, extras: bool, prof: Profiler | None
) -> E2eResult:
    res = E2eResult(name, extras=extras)
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
        if not extras:
            return res
        if prof:
            prof.plane = name
        for reverse, d in ((False, "up"), (True, "down")):
            try:
                ld, secs, iperf_pps = saturating_run(lab, seconds, reverse, prof)
            except (RuntimeError, OSError, subprocess.SubprocessError, LabError) as e:
                print(f"#   saturating UDP {d}: {e}; left out", file=sys.stderr)
                continue
            setattr(res, f"sat_{d}_pps", ld.delivered / secs)
            setattr(res, f"sat_{d}_iperf_pps", iperf_pps)
            setattr(res, f"sat_{d}_xlat_pps", ld.translated / secs)
            setattr(res, f"sat_ns_us_{d}", ld.ns_us())
            setattr(res, f"sat_host_us_{d}", ld.host_us())
        for reverse, d in ((False, "up"), (True, "down")):
            try:
                ld, secs, txd, rxd = quic_run(lab, seconds, reverse)
            except (RuntimeError, OSError, subprocess.SubprocessError, LabError) as e:
                print(f"#   QUIC-like {d}: {e}; left out", file=sys.stderr)
                continue
            setattr(res, f"quic_{d}_dps", ld.delivered / secs)
            setattr(res, f"quic_{d}_sent_dps", txd["sent"] / secs)
            setattr(res, f"quic_{d}_mbps", rxd["bytes"] * 8 / secs / 1e6)
            setattr(res, f"quic_ns_us_{d}", ld.ns_us())
            setattr(res, f"quic_host_us_{d}", ld.host_us())
    return res


DEFAULTS = "v6mostly defaults"
PLANES = {
    DEFAULTS: LabConfig(),  # offloads, RPS, one worker (queue) per CPU
    "v6mostly offload q1": LabConfig(queues=1, offload=True),
    "v6mostly offload q2": LabConfig(queues=2, offload=True),
    "v6mostly plain q1": LabConfig(queues=1, offload=False),
    "v6mostly plain q2": LabConfig(queues=2, offload=False),
    "v6mostly offload q1, no RPS": LabConfig(queues=1, offload=True, rps=False),
    "v6mostly + RPS": LabConfig(rps=True),
    "v6mostly, no poll": LabConfig(poll_us=0),
    "v6mostly, no fast path": LabConfig(fastpath=False),
    "tayga": LabConfig(translator="tayga", rps=False),
    "tayga + RPS": LabConfig(translator="tayga", rps=True),
    "kernel (no translation)": LabConfig(translator="none"),
}
#: The planes that also get the saturating 64-byte and the QUIC-like runs.
EXTRAS = (
    DEFAULTS,
    "v6mostly, no fast path",
    "v6mostly plain q2",
    "v6mostly offload q1, no RPS",
    "tayga",
    "tayga + RPS",
    "kernel (no translation)",
)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(results: list[E2eResult]) -> str:
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
    ext = [r for r in results if r.extras]
    if ext:
        out.append(
            report_small(
                ext, tay if tay and tay.extras else None, ker if ker and ker.extras else None
            )
        )
    return "\n".join(out)


#: (header, attribute, format, higher is better) of the small-packet table
SMALL_COLS = (
    ("sat64 pkt/s up", "sat_up_pps", "{:,.0f}", True),
    ("sat64 pkt/s down", "sat_down_pps", "{:,.0f}", True),
    ("sat64 ns us/pkt up", "sat_ns_us_up", "{:.2f}", False),
    ("sat64 ns us/pkt down", "sat_ns_us_down", "{:.2f}", False),
    ("sat64 host us/pkt up", "sat_host_us_up", "{:.2f}", False),
    ("sat64 host us/pkt down", "sat_host_us_down", "{:.2f}", False),
    ("QUIC dgram/s up", "quic_up_dps", "{:,.0f}", True),
    ("QUIC dgram/s down", "quic_down_dps", "{:,.0f}", True),
    ("QUIC ns us/dgram up", "quic_ns_us_up", "{:.2f}", False),
    ("QUIC ns us/dgram down", "quic_ns_us_down", "{:.2f}", False),
    ("QUIC host us/dgram up", "quic_host_us_up", "{:.2f}", False),
    ("QUIC host us/dgram down", "quic_host_us_down", "{:.2f}", False),
    ("ping RTT ms", "rtt_ms", "{:.3f}", False),
)


def report_small(results: list[E2eResult], tay: E2eResult | None, ker: E2eResult | None) -> str:
    head = "| data plane | " + " | ".join(c[0] for c in SMALL_COLS) + " |"
    sep = "|---" * (len(SMALL_COLS) + 1) + "|"
    out = [
        "Small packets (saturating 64-byte UDP, iperf3 -u -l 64 -b 0) and QUIC-like UDP "
        f"(UDP_SEGMENT {QUIC_SEGMENT} x {QUIC_SEGMENTS} per send, as fast as the sender goes); "
        "delivered = reached the receiving socket; ns CPU = the translator namespace's processes, "
        "host CPU = the whole machine (endpoints, softirq) per delivered packet:",
        head,
        sep,
    ]
    for r in results:
        cells = []
        for _, attr, fmt, _ in SMALL_COLS:
            v = getattr(r, attr)
            cells.append(
                "-" if (attr.startswith(("sat_ns", "quic_ns")) and not v) else fmt.format(v)
            )
        out.append(f"| {r.name} | " + " | ".join(cells) + " |")
    out.append("")
    for ref_name, ref in (("tayga", tay), ("kernel forwarding", ker)):
        if ref is None:
            continue
        out.append(f"Ratios to {ref_name} (pkt/s: higher is better; CPU, RTT: lower is better):")
        out.append(head)
        out.append(sep)
        for r in results:
            if r is ref:
                continue
            out.append(
                f"| {r.name} | "
                + " | ".join(ratio(getattr(r, a), getattr(ref, a)) for _, a, _, _ in SMALL_COLS)
                + " |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run")
    ap.add_argument("--udp-rate", default="100M", help="offered UDP rate (iperf3 -b)")
    ap.add_argument("--only", action="append", help="data planes to run (default: all)")
    ap.add_argument(
        "--extras",
        action="append",
        help="planes that also get the saturating 64-byte and QUIC-like runs "
        f"(default: {', '.join(EXTRAS)}); 'none' for none",
    )
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy (and perf) the v6mostly workers during the saturating runs, into DIR",
    )
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/e2e.py needs root (namespaces)", file=sys.stderr)
        return 2
    names = a.only or list(PLANES)
    for n in names + [x for x in a.extras or [] if x != "none"]:
        if n not in PLANES:
            print(f"no data plane {n!r} (planes: {', '.join(PLANES)})", file=sys.stderr)
            return 2
    extras = set(EXTRAS if a.extras is None else [x for x in a.extras if x != "none"])
    prof = Profiler(a.profile) if a.profile else None
    t0 = time.monotonic()
    results = []
    for n in names:
        print(f"# {n} ...", file=sys.stderr, flush=True)
        results.append(measure(n, PLANES[n], a.seconds, a.udp_rate, n in extras, prof))
    took = time.monotonic() - t0
    print(
        f"# bench/e2e.py --seconds {a.seconds} --udp-rate {a.udp_rate}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, took {took:.0f} s"
        + (
            f", V6MOSTLY_ACCEL={os.environ['V6MOSTLY_ACCEL']}"
            if "V6MOSTLY_ACCEL" in os.environ
            else ""
        )
    )
    print(report(results))
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": a.seconds,
        "udp_rate": a.udp_rate,
        "cpus": os.cpu_count(),
        "took_s": round(took, 1),
        # the C accelerator (issue 13) is switched off with V6MOSTLY_ACCEL=0
        "V6MOSTLY_ACCEL": os.environ.get("V6MOSTLY_ACCEL", ""),
    }
    print(json.dumps({"bench": "e2e", **meta, "results": [asdict(r) for r in results]}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
