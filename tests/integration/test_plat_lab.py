"""The PLAT end to end, in the namespace lab, with real tools.

client6 (IPv6 only) -> plat (`v6mostly plat`: nftables NAPT66 + SIIT on a TUN)
-> inet4 (IPv4 only: HTTP, iperf3, dnsmasq). Everything runs in namespaces
named after a per-run id and is removed at the end, also when a test fails.
The lab turns checksum offload off on the endpoints (rx) and on the router's
veths (tx), so every translated checksum is verified by a real receiver.

Each test runs twice: with TUN offloads (GSO super-packets) and in plain mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_helpers import (
    metric,
    module_lab,
    pyexec,
    require_root,
    rps_cpus,
    rps_during,
    wait_for,
)
from v6mostly.lab.topology import (
    CLIENT,
    CLIENT_B,
    OUTER4,
    OUTER6,
    SERVER4,
    XLAT4,
    Lab,
    LabConfig,
    namespaces,
    running_lab,
    server6,
)

pytestmark = pytest.mark.integration

S6 = server6()


@pytest.fixture(scope="module", params=["offload", "plain"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    # The workers' two modes: without the in-kernel fast path, which would take the TCP
    # and UDP (it has its own tests, test_fastpath_lab).
    yield from module_lab(LabConfig(offload=request.param == "offload", queues=2, fastpath=False))


def test_mode_is_what_was_asked(lab: Lab) -> None:
    mode = "offload" if lab.config.offload else "plain"
    assert metric(lab, "v6mostly_dataplane_mode", mode=mode) == 1
    assert metric(lab, "v6mostly_workers") == 2


def test_ping_and_counters_add_up_across_workers(lab: Lab) -> None:
    before = metric(lab, "v6mostly_translated_packets_total", direction="6to4", protocol="icmp")
    r = lab.exec("client6", ["ping", "-c", "20", "-i", "0.05", "-W", "2", S6])
    assert " 0% packet loss" in r.stdout
    after = metric(lab, "v6mostly_translated_packets_total", direction="6to4", protocol="icmp")
    # 20 echo requests, spread over two workers (flows hash to queues), all counted once.
    assert after - before == 20


def _per_worker(lab: Lab) -> list[float]:
    return [
        metric(lab, "v6mostly_worker_translated_packets_total", worker=str(i)) for i in range(2)
    ]


def test_a_ping_and_its_replies_on_one_worker(lab: Lab) -> None:
    """The steering program (linux/steering.py): echo requests (read as IPv6) and their
    replies (read as IPv4) land on one queue, so no second worker is woken up."""
    for _ in range(3):  # three ping runs: three ICMP identifiers
        before = _per_worker(lab)
        r = lab.exec("client6", ["ping", "-c", "10", "-i", "0.02", "-W", "2", S6])
        assert " 0% packet loss" in r.stdout
        delta = [a - b for a, b in zip(_per_worker(lab), before, strict=True)]
        assert sorted(delta) == [0, 20], delta


def test_rps_auto_follows_bulk_traffic(lab: Lab) -> None:
    """[tun] rps = "auto" (services/rps.py): on while TCP super-packets flow, off after;
    in plain mode (no super-packets) it stays off."""
    assert wait_for(lambda: rps_cpus(lab) == 0, timeout=15)
    seen = rps_during(lab, "client6", ["iperf3", "-c", S6, "-t", "5"])
    if not lab.config.offload:
        assert not any(seen), "plain mode: RPS turned on"
        return
    assert any(seen), "RPS never turned on during a TCP transfer"
    assert wait_for(lambda: rps_cpus(lab) == 0, timeout=15), "RPS stayed on after the transfer"


def test_pmtu_learned_through_translated_packet_too_big() -> None:
    """IPv4 side MTU 1400: a DF ping of 1448 bytes gets Frag Needed from the PLAT's
    IPv4 side, which comes back translated as a Packet Too Big (MTU 1420)."""
    require_root()
    with running_lab(LabConfig(ipv4_mtu=1400, queues=1)) as lab:
        r = lab.exec(
            "client6",
            ["ping", "-c", "3", "-i", "0.3", "-W", "1", "-M", "do", "-s", "1400", S6],
            check=False,
        )
        assert "mtu=1420" in r.stdout + r.stderr or "mtu 1420" in r.stdout + r.stderr, r.stdout
        route = lab.exec("client6", ["ip", "-6", "route", "get", S6]).stdout
        assert "mtu 1420" in route
        # Now fitting packets go through, and a DF=1 large ping of the right size works.
        r = lab.exec("client6", ["ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1372", S6])
        assert " 0% packet loss" in r.stdout
        # TCP adapts too: a 1 MB download completes.
        r = lab.exec(
            "client6",
            [
                "curl",
                "-sS",
                "-m",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                f"http://[{S6}]/1m.bin",
            ],
        )
        assert r.stdout == "1048576"
        assert (
            metric(lab, "v6mostly_translated_packets_total", direction="4to6", protocol="icmp") >= 1
        )


def test_http_download_intact(lab: Lab) -> None:
    r = lab.exec("client6", ["sh", "-c", f"curl -sS -m 20 http://[{S6}]/1m.bin | sha256sum"])
    expected = hashlib.sha256(bytes(range(256)) * 4096).hexdigest()
    assert r.stdout.split()[0] == expected


def _iperf(lab: Lab, *extra: str) -> dict:
    r = lab.exec("client6", ["iperf3", "-J", "-c", S6, "-t", "2", *extra], timeout=40)
    return json.loads(r.stdout)


def test_tcp_both_ways(lab: Lab) -> None:
    up = _iperf(lab)
    down = _iperf(lab, "-R")
    for d in (up, down):
        assert d["end"]["sum_received"]["bytes"] > 10_000_000
    if lab.config.offload:
        assert metric(lab, "v6mostly_gso_superpackets_total") > 0
        assert metric(lab, "v6mostly_gso_segments_total") > metric(
            lab, "v6mostly_gso_superpackets_total"
        )


def test_udp_both_ways(lab: Lab) -> None:
    for extra in ((), ("-R",)):
        d = _iperf(lab, "-u", "-b", "20M", "-l", "1200", *extra)
        s = d["end"]["sum"]
        assert s["packets"] > 1000
        assert s["lost_percent"] < 5


def test_dns_query_through_translator(lab: Lab) -> None:
    r = lab.exec(
        "client6", ["dig", "+short", "+time=2", "+tries=2", f"@{S6}", "www.example.net", "A"]
    )
    assert r.stdout.strip() == SERVER4
    r = lab.exec("client6", ["dig", "+short", "+tcp", "+time=2", f"@{S6}", "www.example.net", "A"])
    assert r.stdout.strip() == SERVER4


def test_traceroute_every_hop_answers(lab: Lab) -> None:
    r = lab.exec("client6", ["traceroute", "-n", "-N", "1", "-q", "1", "-w", "2", S6], timeout=60)
    hops = [ln.split() for ln in r.stdout.splitlines()[1:]]
    assert hops, r.stdout
    assert all("*" not in h for h in hops), r.stdout
    assert hops[-1][1] == S6
    assert len(hops) <= 4


UDP_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: DF=0
s.bind((sys.argv[1], 7000))
s.settimeout(10)
data, peer = s.recvfrom(100)
s.sendto(bytes(i % 251 for i in range(int(data))), peer)
"""

UDP_CLIENT = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(5)
for _ in range(50):
    s.sendto(sys.argv[2].encode(), (sys.argv[1], 7000))
    try:
        data = s.recv(70000)
        break
    except socket.timeout:
        continue
ok = data == bytes(i % 251 for i in range(int(sys.argv[2])))
print(len(data), ok)
"""


def test_ipv4_fragments_arrive_intact(lab: Lab) -> None:
    import sys

    srv = subprocess.Popen(lab.cmd("inet4", [sys.executable, "-c", UDP_SERVER, SERVER4]))
    try:
        time.sleep(0.3)
        out = pyexec(lab, "client6", UDP_CLIENT, S6, "4000")
        assert out.split() == ["4000", "True"]
    finally:
        srv.kill()
        srv.wait()


PORT_UNREACH = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.connect((sys.argv[1], 9))
s.settimeout(3)
for _ in range(3):
    s.send(b"x")
    try:
        s.recv(10)
    except ConnectionRefusedError:
        print("refused")
        break
    except socket.timeout:
        continue
"""


def test_port_unreachable_reaches_the_socket(lab: Lab) -> None:
    out = pyexec(lab, "client6", PORT_UNREACH, S6)
    assert out.strip() == "refused"


def test_two_clients_share_one_outer_address(lab: Lab) -> None:
    for src in (CLIENT, CLIENT_B):
        r = lab.exec(
            "client6",
            [
                "curl",
                "-sS",
                "-m",
                "5",
                "--interface",
                src,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"http://[{S6}]/",
            ],
        )
        assert r.stdout == "200"
    log = Path(lab.path("http.log")).read_text()
    # The server saw only the outer IPv4 address.
    assert OUTER4 in log
    assert "2001:db8" not in log
    ct = lab.exec("plat", ["conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--dport", "80"]).stdout
    srcs = {m.group(1) for m in re.finditer(r"src=(\S+) dst=\S+ sport=\d+ dport=80 ", ct)}
    assert {CLIENT, CLIENT_B} <= srcs
    assert f"dst={OUTER6}" in ct
    assert metric(lab, "v6mostly_napt66_sessions") >= 2


def test_outside_cannot_open_a_flow_inward(lab: Lab) -> None:
    before = metric(lab, "v6mostly_filter_denied_packets", rule="denied_from_plat")
    r = lab.exec("inet4", ["curl", "-sS", "-m", "2", f"http://{OUTER4}/"], check=False)
    assert r.returncode != 0
    assert wait_for(
        lambda: metric(lab, "v6mostly_filter_denied_packets", rule="denied_from_plat") > before
    )


SPOOFED = r"""
import sys
from scapy.all import IPv6, ICMPv6EchoRequest, send, conf
conf.verb = 0
send(IPv6(src="2001:db8:99::1", dst=sys.argv[1]) / ICMPv6EchoRequest(), count=3, inter=0.05)
"""


def test_outside_ipv6_source_to_pref64_is_dropped_and_counted(lab: Lab) -> None:
    """Only inside prefixes may use the PLAT: a Pref64 packet from elsewhere is dropped."""
    before = metric(lab, "v6mostly_filter_denied_packets", rule="denied_to_plat")
    pyexec(lab, "client6", SPOOFED, S6)
    assert wait_for(
        lambda: metric(lab, "v6mostly_filter_denied_packets", rule="denied_to_plat") - before == 3
    )


def test_ipv4_to_a_non_outer_address_is_dropped_and_counted(lab: Lab) -> None:
    """From outside, IPv4 reaches only the outer addresses (here: the translator's own)."""
    before = metric(lab, "v6mostly_filter_denied_packets", rule="denied_ipv4_not_outer")
    lab.exec("inet4", ["ping", "-c", "2", "-W", "1", "-i", "0.2", XLAT4], check=False)
    after = metric(lab, "v6mostly_filter_denied_packets", rule="denied_ipv4_not_outer")
    assert after - before == 2


def test_worker_killed_is_restarted(lab: Lab) -> None:
    plat_pid = lab.pids["plat"]
    # The PLAT process is `ip netns exec` -> python; its children are the workers.
    kids = _children_of_service(plat_pid)
    assert len(kids) == 2, kids
    os.kill(kids[0], signal.SIGKILL)
    assert wait_for(lambda: metric(lab, "v6mostly_worker_restarts_total") >= 1)
    assert wait_for(lambda: metric(lab, "v6mostly_workers") == 2)
    r = lab.exec("client6", ["ping", "-c", "4", "-i", "0.1", "-W", "2", S6])
    assert " 0% packet loss" in r.stdout


def _children_of_service(pid: int) -> list[int]:
    """Worker pids: the grandchildren of the lab's process (ip netns exec execs python)."""
    kids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(p))
    return sorted(kids)


CHECKSUM_PROBE = r"""
import sys
from scapy.all import IPv6, TCP, sr1, conf
conf.verb = 0
dst = sys.argv[1]
good = sr1(IPv6(dst=dst) / TCP(sport=40001, dport=80, flags="S", seq=1), timeout=2)
bad = sr1(IPv6(dst=dst) / TCP(sport=40002, dport=80, flags="S", seq=1, chksum=0x1234), timeout=2)
print("good", good is not None and good.haslayer(TCP) and good[TCP].flags == "SA")
print("bad", bad is not None)
"""


def test_setup_catches_a_corrupted_checksum(lab: Lab) -> None:
    """A SYN with a wrong TCP checksum, translated (the checksum stays equally wrong),
    is dropped by the IPv4 server: the lab really verifies checksums."""
    out = pyexec(lab, "client6", CHECKSUM_PROBE, S6)
    assert out.split() == ["good", "True", "bad", "False"]


def test_lab_down_leaves_nothing() -> None:
    require_root()
    lab = Lab("t" + os.urandom(2).hex(), LabConfig(queues=1))
    try:
        lab.up()
        pids = dict(lab.pids)
    finally:
        lab.down()
    assert namespaces(lab.id) == []
    for pid in pids.values():
        assert (
            not os.path.exists(f"/proc/{pid}")
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )
    assert not os.path.exists(lab.dir)


def test_failed_build_cleans_up() -> None:
    require_root()
    from v6mostly.lab.topology import LabError

    lab = Lab("t" + os.urandom(2).hex(), LabConfig(translator="bogus"))
    with pytest.raises(LabError):
        lab.up()
    assert namespaces(lab.id) == []
    assert not os.path.exists(lab.dir)


def test_client_learns_pref64_from_ra_and_from_ipv4only_arpa(lab: Lab) -> None:
    """The lab's router (RFC 8781 PREF64 in RAs; RFC 7050 via its DNS) as a host sees it."""
    import sys

    base = [sys.executable, "-m", "v6mostly", "pref64", "discover", "--interface", "eth0"]
    r = lab.exec("client6", base)
    assert r.stdout.startswith("2001:db8:64::/96 lifetime 32 s (RA from fe80::")
    r = lab.exec("client6", [*base, "--dns-only", "--dns", "2001:db8:1::1"])
    assert r.stdout.strip() == "2001:db8:64::/96 (ipv4only.arpa via 2001:db8:1::1)"


def test_dns64_name_reaches_the_ipv4_only_server(lab: Lab) -> None:
    r = lab.exec("client6", ["curl", "-sS", "-m", "5", "http://www.example.net/"])
    assert r.stdout == "hello from the IPv4-only Internet\n"
