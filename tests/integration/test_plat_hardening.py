"""`v6mostly siit` / `plat` as running processes: TUN MTU in ICMP errors (followed at run
time), IPv4 IDs across workers, the TTL mode, the PLAT host's own addresses, SIGHUP
without loss (issue 8, items 3, 5, 6, 7, 9).

The `siit` tests run the service in a namespace of their own (per-run name, removed at
the end, also on failure) with routes into its TUN, send crafted packets from raw
sockets there and capture what the translator writes back with an AF_PACKET socket on
the TUN. Scapy parses the capture (a test oracle only).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.lab_helpers import (
    metric,
    nsrun,
    pyexec,
    require_root,
    throwaway_netns,
    wait_for,
)
from v6mostly.lab.topology import PLAT_V4, SERVER4, LabConfig, running_lab, server6

pytestmark = pytest.mark.integration

POOL6 = "2001:db8:64::/96"
EAM = "2001:db8:1::/120=192.0.2.0/24"
CLIENT6 = "2001:db8:1::64"  # = 192.0.2.100 (EAM 2001:db8:1::/120)
CLIENT4 = "192.0.2.100"
ROUTER6 = "2001:db8:1::1"  # = 192.0.2.1 (EAM)
REMOTE4 = "198.51.100.10"
REMOTE6 = "2001:db8:64::c633:640a"  # = 198.51.100.10 (pool6)
TUN = "xl0"


@pytest.fixture
def netns() -> Iterator[str]:
    with throwaway_netns("v6m-hard-") as name:
        yield name


@contextlib.contextmanager
def siit(ns: str, tmp_path: Path, *extra: str) -> Iterator[Path]:
    """`v6mostly siit` on TUN xl0 in ``ns``, with the pool6 and EAM routes into it
    (forwarding stays off: what the translator writes back is only captured)."""
    log = tmp_path / "siit.log"
    with log.open("wb") as f:
        p = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-m",
                "v6mostly",
                "siit",
                "--tun",
                TUN,
                "--pool6",
                POOL6,
                "--eam",
                EAM,
                *extra,
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for(lambda: "worker(s) running" in log.read_text()), log.read_text()
        for route in (["-6", "route", "add", POOL6], ["-4", "route", "add", "192.0.2.0/24"]):
            r = nsrun(ns, "ip", *route, "dev", TUN)
            assert r.returncode == 0, r.stderr
        yield log
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            assert p.wait(10) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise
    assert "cleaned up" in log.read_text()


# Runs inside the namespace: send crafted packets (hex, "4" or "6" first) through raw
# sockets routed into the TUN, capture what the translator writes into it (packets the
# kernel receives on the TUN: PACKET_HOST), print them as hex, one JSON list.
PROBE = r"""
import json, select, socket, sys, time
tun, wait, want = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
pkts = json.loads(sys.stdin.read())
cap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))  # ETH_P_ALL
cap.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
cap.bind((tun, 0))
s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
out = []
def drain(block):
    while True:
        r, _, _ = select.select([cap], [], [], block)
        if not r:
            return
        data, addr = cap.recvfrom(70000)
        if addr[2] == socket.PACKET_HOST:
            out.append(data.hex())
        block = 0
for i, (fam, hexpkt) in enumerate(pkts):
    b = bytes.fromhex(hexpkt)
    if fam == "4":
        s4.sendto(b, (socket.inet_ntop(socket.AF_INET, b[16:20]), 0))
    else:
        s6.sendto(b, (socket.inet_ntop(socket.AF_INET6, b[24:40]), 0))
    if i % 50 == 49:
        time.sleep(0.002)  # paced: bounded rate, nothing dropped on the way
        drain(0)
deadline = time.monotonic() + wait
while time.monotonic() < deadline and len(out) < want:
    drain(0.1)
print(json.dumps(out))
"""


def probe(ns: str, packets: list[tuple[str, bytes]], want: int, wait: float = 3.0) -> list[Any]:
    """Send ``packets`` (family, bytes) inside ``ns``; return what the translator wrote
    into the TUN, parsed by scapy."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    r = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, TUN, str(wait), str(want)],
        input=json.dumps([(f, p.hex()) for f, p in packets]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    out = []
    for h in json.loads(r.stdout):
        b = bytes.fromhex(h)
        out.append(IP(b) if b[0] >> 4 == 4 else IPv6(b))
    return out


def frag_needed(mtu: int) -> bytes:
    """ICMPv4 Fragmentation Needed from an IPv4 router to the IPv6 client (EAM'd),
    quoting a packet the client sent (translated) towards REMOTE4."""
    from scapy.layers.inet import ICMP, IP, IPerror, UDPerror

    quoted = IPerror(src=CLIENT4, dst=REMOTE4, flags="DF", id=1) / UDPerror(sport=4000, dport=53)
    return bytes(
        IP(src=REMOTE4, dst=CLIENT4, ttl=64)
        / ICMP(type=3, code=4, nexthopmtu=mtu)
        / bytes(quoted / (b"x" * 20))
    )


def packet_too_big(mtu: int) -> bytes:
    """ICMPv6 Packet Too Big from an IPv6 router (EAM'd) to an IPv4 host (Pref64),
    quoting a packet that host sent towards the IPv6 client."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

    quoted = IPv6(src=REMOTE6, dst=CLIENT6, hlim=60) / UDP(sport=53, dport=4000) / (b"x" * 20)
    return bytes(IPv6(src=ROUTER6, dst=REMOTE6, hlim=64) / ICMPv6PacketTooBig(mtu=mtu) / quoted)


def _mtus(captured: list[Any]) -> tuple[list[int], list[int]]:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6PacketTooBig

    ptb = [p[ICMPv6PacketTooBig].mtu for p in captured if p.haslayer(ICMPv6PacketTooBig)]
    fn = [
        p[ICMP].nexthopmtu
        for p in captured
        if isinstance(p, IP) and p.haslayer(ICMP) and p[ICMP].type == 3 and p[ICMP].code == 4
    ]
    return ptb, fn


@pytest.mark.parametrize("mode", ["offload", "plain"])
def test_icmp_mtu_follows_the_tun_mtu(netns: str, tmp_path: Path, mode: str) -> None:
    """RFC 7915 §4.2/§5.2 with the TUN MTU as the next-hop MTU, also after a change
    at run time: FN 1600 -> PTB min(1620, 1500) = 1500 and PTB 1600 -> FN
    min(1580, 1500 - 20) = 1480; after `ip link set xl0 mtu 1400`: 1400 and 1380."""
    extra = ["--queues", "1"] + (["--no-offload"] if mode == "plain" else [])
    with siit(netns, tmp_path, *extra) as log:
        pkts = [("4", frag_needed(1600)), ("6", packet_too_big(1600))]
        assert _mtus(probe(netns, pkts, 2)) == ([1500], [1480])
        r = nsrun(netns, "ip", "link", "set", TUN, "mtu", "1400")
        assert r.returncode == 0, r.stderr
        assert wait_for(lambda: "mtu now 1400" in log.read_text()), log.read_text()
        time.sleep(0.2)  # the workers take it on SIGUSR1
        assert _mtus(probe(netns, pkts, 2)) == ([1400], [1380])
        # Below the advertised MTU the advertised value stands (the minimum wins).
        pkts = [("4", frag_needed(1300)), ("6", packet_too_big(1300))]
        assert _mtus(probe(netns, pkts, 2)) == ([1320], [1280])


def _udp6(sport: int, hlim: int = 64) -> bytes:
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6

    return bytes(IPv6(src=CLIENT6, dst=REMOTE6, hlim=hlim) / UDP(sport=sport, dport=9) / b"id")


@pytest.mark.parametrize("path", ["workers", "fastpath"])
def test_ipv4_ids_do_not_repeat_across_two_workers(netns: str, tmp_path: Path, path: str) -> None:
    """RFC 6864 §4.1: small IPv6 packets become non-atomic IPv4 (DF=0), so the ID must
    not repeat for a (src, dst, protocol). 3000 UDP flows over two workers (each with its
    slice of the ID space), or through the in-kernel fast path (one counter for all CPUs)."""
    from scapy.layers.inet import IP, UDP

    n = 3000
    flags = ("--no-fastpath",) if path == "workers" else ()
    with siit(netns, tmp_path, "--queues", "2", "--metrics", "127.0.0.1:9477", *flags):
        got = probe(netns, [("6", _udp6(20000 + i)) for i in range(n)], n, wait=5)
        scrape = nsrun(
            netns,
            sys.executable,
            "-c",
            "import urllib.request;print(urllib.request.urlopen("
            "'http://127.0.0.1:9477/metrics',timeout=3).read().decode())",
        ).stdout
    udp = [p for p in got if isinstance(p, IP) and p.haslayer(UDP)]
    assert len(udp) == n
    assert all(p.flags == 0 for p in udp)  # non-atomic: DF=0, the ID matters
    ids: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for p in udp:
        ids[(p.src, p.dst, p.proto)].append(p.id)
    for key, seq in ids.items():
        assert len(seq) == len(set(seq)), f"IPv4 ID repeated for {key}"
    from v6mostly.metrics import parse_exposition

    m = parse_exposition(scrape)
    if path == "fastpath":
        assert m.get('v6mostly_fastpath_packets_total{direction="6to4"}') == n, m
        return
    # Both workers translated some (each has its own slice of the ID space) ...
    slices = {i // 16384 for seq in ids.values() for i in seq}
    assert len(slices) == 2, slices
    # ... and their own counters say so.
    per = [m.get(f'v6mostly_worker_translated_packets_total{{worker="{w}"}}', 0) for w in "01"]
    assert all(c > 0 for c in per) and sum(per) == n, per


@pytest.mark.parametrize("decrement", [False, True])
def test_ttl_mode(netns: str, tmp_path: Path, decrement: bool) -> None:
    """Default: the hop limit is copied (the kernel decrements on the way into and out
    of the TUN); --decrement-ttl: TAYGA/Jool behaviour, one less. Both directions.
    Locally sent packets are not decremented by the kernel on their way into the TUN."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    extra = ["--queues", "1"] + (["--decrement-ttl"] if decrement else [])
    four = bytes(IP(src=REMOTE4, dst=CLIENT4, ttl=10) / UDP(sport=9, dport=4000) / b"ttl")
    with siit(netns, tmp_path, *extra):
        got = probe(netns, [("6", _udp6(30000, hlim=10)), ("4", four)], 2)
    want = 9 if decrement else 10
    assert sorted((type(p).__name__, p.ttl if isinstance(p, IP) else p.hlim) for p in got) == [
        ("IP", want),
        ("IPv6", want),
    ]
    assert all(p.haslayer(UDP) for p in got)
    assert {p.dst for p in got} == {REMOTE4, CLIENT6}
    assert any(isinstance(p, IPv6) for p in got)
    r = subprocess.run(
        [sys.executable, "-m", "v6mostly", "siit", "--pool6", POOL6, *extra, "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ("ttl: decrement" if decrement else "ttl: copy") in r.stdout


# -- the PLAT host's own addresses (lab) ----------------------------------------------

PLAT_HOST6 = str(
    ipaddress.IPv6Address(
        int(ipaddress.IPv6Address("2001:db8:64::")) + int(ipaddress.IPv4Address(PLAT_V4))
    )
)


def test_plat_refuses_translated_traffic_to_its_own_addresses_unless_listed() -> None:
    """`ping Pref64::<PLAT's IPv4>` from an IPv6-only client: dropped and counted
    (denied_to_host) while normal traffic works; answered once the address is listed
    in [napt66] reachable_host_addresses (applied by SIGHUP)."""
    require_root()
    assert PLAT_HOST6 == "2001:db8:64::cb00:7101"
    with running_lab(LabConfig(queues=1)) as lab:
        before = metric(lab, "v6mostly_filter_denied_packets", rule="denied_to_host")
        r = lab.exec(
            "client6", ["ping", "-c", "3", "-i", "0.2", "-W", "1", PLAT_HOST6], check=False
        )
        assert " 100% packet loss" in r.stdout, r.stdout
        assert wait_for(
            lambda: (
                metric(lab, "v6mostly_filter_denied_packets", rule="denied_to_host") - before == 3
            )
        )
        # UDP to the DHCP server on the same box through the Pref64: refused too.
        dhcp6 = PLAT_HOST6.replace("cb00:7101", "c000:201")  # 192.0.2.1
        pyexec(
            lab,
            "client6",
            "import socket,sys\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
            "s.sendto(b'x'*300,(sys.argv[1],67))",
            dhcp6,
        )
        assert wait_for(
            lambda: (
                metric(lab, "v6mostly_filter_denied_packets", rule="denied_to_host") - before == 4
            )
        )
        r = lab.exec("client6", ["ping", "-c", "3", "-i", "0.2", "-W", "2", server6()])
        assert " 0% packet loss" in r.stdout
        conf = Path(lab.path("plat.toml"))
        conf.write_text(
            conf.read_text().replace(
                "udp_oneshot_ports = [53, 123]",
                f'udp_oneshot_ports = [53, 123]\nreachable_host_addresses = ["{PLAT_V4}"]',
            )
        )
        os.kill(lab.pids["plat"], signal.SIGHUP)
        assert wait_for(lambda: "configuration reloaded" in Path(lab.path("plat.log")).read_text())
        r = lab.exec("client6", ["ping", "-c", "3", "-i", "0.2", "-W", "2", PLAT_HOST6])
        assert " 0% packet loss" in r.stdout
        assert metric(lab, "v6mostly_filter_denied_packets", rule="denied_to_host") - before == 4


# -- SIGHUP swaps workers without losing a packet (lab) ---------------------------------

RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
s.bind((sys.argv[1], 7100))
n = int(sys.argv[2])
seen = set()
s.settimeout(float(sys.argv[3]))  # first datagram
while len(seen) < n:
    try:
        data = s.recv(2048)
    except socket.timeout:
        break
    seen.add(int.from_bytes(data[:4], "big"))
    s.settimeout(3)
print(len(seen))
"""

SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
n, rate = int(sys.argv[2]), int(sys.argv[3])
pad = bytes(200)
t0 = time.monotonic()
for i in range(n):
    s.sendto(i.to_bytes(4, "big") + pad, (sys.argv[1], 7100))
    if i % 100 == 99:
        ahead = (i + 1) / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
print(round(time.monotonic() - t0, 2))
"""


def test_sighup_swaps_workers_without_losing_a_packet() -> None:
    """A paced UDP stream (40,000 datagrams at 10,000/s, 4 s) through two workers
    while the PLAT gets 6 SIGHUPs (12 worker swaps): every datagram arrives."""
    require_root()
    n, rate, hups = 40_000, 10_000, 6
    with running_lab(LabConfig(queues=2)) as lab:
        recv = subprocess.Popen(
            lab.cmd("inet4", [sys.executable, "-c", RECEIVER, SERVER4, str(n), "15"]),
            stdout=subprocess.PIPE,
            text=True,
        )
        send: subprocess.Popen[str] | None = None
        try:
            time.sleep(0.5)
            send = subprocess.Popen(
                lab.cmd("client6", [sys.executable, "-c", SENDER, server6(), str(n), str(rate)]),
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.5)
            for _ in range(hups):
                os.kill(lab.pids["plat"], signal.SIGHUP)
                time.sleep(0.5)
            send.communicate(timeout=60)
            out, _ = recv.communicate(timeout=60)
        finally:
            for p in (recv, send):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
        log = Path(lab.path("plat.log")).read_text()
        assert log.count("configuration reloaded") == hups, log
        assert "died" not in log
        assert int(out.strip()) == n, f"received {out.strip()} of {n}"
