"""`v6mostly clat` on the lab's IPv6-only client: IPv4 literals through CLAT -> PLAT.

The lab's router sends RAs with PREF64 (RFC 8781) and the client has no IPv4,
so the CLAT learns the Pref64 from the kernel (RTM_NEWNDUSEROPT), picks its
address in the SLAAC /64, and takes the IPv4 default route. Checked with real
tools: ping and curl by IPv4 literal, ping6 to the CLAT address, a unicast
Neighbor Solicitation answered as the owner (as Cisco WLCs send them), a
capture of the client link with no 192.0.0.0/29 source and no ARP for it,
stepping back when native IPv4 appears, and clean-up on SIGTERM.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.clat_helpers import clat_state, clat_status, spawn_clat
from tests.integration.lab_helpers import pyexec, require_root, wait_for
from v6mostly.lab.topology import CLIENT_NET, PLAT_V6, PREF64, SERVER4, Lab, LabConfig, running_lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    with running_lab(LabConfig(queues=1)) as lab:
        # The whole run is captured on the client link (the PLAT's side of it).
        cap = Path(lab.path("client-link.pcap"))
        lab.spawn("plat", "tshark", ["tshark", "-q", "-i", "c6", "-w", str(cap)])
        time.sleep(1)
        spawn_clat(lab, "--metrics", "127.0.0.1:9465")
        assert wait_for(lambda: clat_state(lab).get("active"), timeout=30), Path(
            lab.path("clat.log")
        ).read_text() + json.dumps(clat_state(lab))
        yield lab


def test_clat_learns_the_pref64_from_ras_and_takes_an_address(lab: Lab) -> None:
    # ipv4only.arpa may answer first (both are asked at start); the RA then wins.
    assert wait_for(
        lambda: str(clat_state(lab).get("pref64_source", "")).startswith("RA from"), timeout=15
    ), json.dumps(clat_state(lab))
    st = clat_state(lab)
    assert st["pref64"] == PREF64
    assert st["pref64_source"].startswith("RA from fe80::")
    assert 0 < st["pref64_lifetime_left"] <= 65528
    addr = ipaddress.IPv6Address(st["clat_ipv6"])
    assert addr in ipaddress.IPv6Network(CLIENT_NET)
    # Checksum-neutral with 192.0.0.1 (RFC 6052 §4.1 arithmetic on the address alone).
    words = addr.packed
    total = sum(int.from_bytes(words[i : i + 2], "big") for i in range(0, 16, 2)) % 0xFFFF
    assert total == (0xC000 + 0x0001) % 0xFFFF
    out = lab.exec("client6", ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    assert f"{addr}/128" in out and "deprecated" in out.split(f"{addr}/128")[1].split("\n")[0]
    out4 = lab.exec("client6", ["ip", "-4", "addr"]).stdout
    assert "192.0.0.1 peer 192.0.0.2/32" in out4 and "clat0" in out4
    assert "192.0.0" not in lab.exec("client6", ["ip", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert "default dev clat0" in lab.exec("client6", ["ip", "-4", "route"]).stdout
    filters = lab.exec("client6", ["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout
    assert "mirred" in filters and "clat0" in filters
    # Offload mode: IPv6 leaves through the egress TAP's tc program.
    assert st["egress"].startswith("TAP clat0out"), st["egress"]
    out_f = lab.exec("client6", ["tc", "filter", "show", "dev", "clat0out", "ingress"]).stdout
    assert "v6m_clat_out" in out_f and "direct-action" in out_f, out_f
    feats = lab.exec("client6", ["ethtool", "-k", "clat0"]).stdout
    assert "tcp-segmentation-offload: on" in feats, feats
    status = clat_status(lab).stdout
    assert "eth0: active" in status and f"ipv6       {addr}" in status and PREF64 in status


def test_ipv4_literals_work_through_clat_and_plat(lab: Lab) -> None:
    r = lab.exec("client6", ["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER4], check=False)
    assert " 0% packet loss" in r.stdout, r.stdout + r.stderr
    r = lab.exec("client6", ["curl", "-sS", "--max-time", "10", f"http://{SERVER4}/"], check=False)
    assert r.stdout == "hello from the IPv4-only Internet\n", r.stderr
    # 1 MB both ways intact (TCP through two translators).
    r = lab.exec(
        "client6",
        ["sh", "-c", f"curl -sS --max-time 20 http://{SERVER4}/1m.bin | sha256sum"],
        check=False,
    )
    want = __import__("hashlib").sha256(bytes(range(256)) * 4096).hexdigest()
    assert r.stdout.split()[0] == want


def upload_sha(lab: Lab, size: int) -> tuple[str, str]:
    """Send ``size`` bytes by TCP to the IPv4 server's literal; (sent, received) sha256.
    The server's stack checks every checksum (rx offload off in the lab)."""
    recv = f"""
import hashlib, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{SERVER4}", 5099)); s.listen(1); s.settimeout(15)
c, _ = s.accept(); c.settimeout(15); h = hashlib.sha256()
while d := c.recv(65536):
    h.update(d)
print(h.hexdigest())
"""
    send = f"""
import os, socket
data = bytes(range(256)) * ({size} // 256)
c = socket.create_connection(("{SERVER4}", 5099), timeout=15)
c.sendall(data); c.close()
"""
    rx = subprocess.Popen(
        lab.cmd("inet4", [sys.executable, "-c", recv]), stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    pyexec(lab, "client6", send)
    out, _ = rx.communicate(timeout=30)
    want = __import__("hashlib").sha256(bytes(range(256)) * (size // 256)).hexdigest()
    return want, out.strip()


def test_tcp_upload_leaves_as_super_packets_intact(lab: Lab) -> None:
    """The host's TCP hands clat0 64 KB super-packets; the fast path (tc on clat0's
    egress, services/clat_fast) translates them whole and they leave by the uplink
    (segmented there), arriving intact; the workers see none of them."""
    before = clat_state(lab)["counters"].get("fastpath_superpackets", 0)
    worker0 = clat_state(lab)["counters"].get("packets_4to6_tcp", 0)
    want, got = upload_sha(lab, 4 << 20)
    assert got == want
    assert wait_for(
        lambda: clat_state(lab)["counters"].get("fastpath_superpackets", 0) > before + 10,
        timeout=5,
    ), clat_state(lab)["counters"]
    assert clat_state(lab)["counters"].get("packets_4to6_tcp", 0) - worker0 < 10


def test_large_df0_udp_datagram_arrives_whole(lab: Lab) -> None:
    """RFC 7915 §4: a DF=0 IPv4 datagram over the path MTU is fragmented by the CLAT."""
    code = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: DF=0
s.settimeout(5)
s.sendto(bytes(range(256)) * 12, ("{SERVER4}", 7))
"""
    recv = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{SERVER4}", 7))
s.settimeout(8)
data, peer = s.recvfrom(65535)
print(len(data), data == bytes(range(256)) * 12, peer[0])
"""
    rx = subprocess.Popen(
        lab.cmd("inet4", [sys.executable, "-c", recv]), stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    pyexec(lab, "client6", code)
    out, _ = rx.communicate(timeout=15)
    assert out.split()[:2] == ["3072", "True"], out


def test_large_df0_udp_datagram_arrives_whole_downstream(lab: Lab) -> None:
    """The other way: the IPv4 server answers with a 3072-byte DF=0 datagram; the PLAT
    cuts it into IPv6 fragments (RFC 7915 §4), the CLAT translates each fragment
    (RFC 7915 §5.1.1) and the host reassembles the whole datagram."""
    server = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_PMTUDISC_DONT: DF=0
s.bind(("{SERVER4}", 7))
s.settimeout(10)
data, peer = s.recvfrom(100)
s.sendto(bytes(range(256)) * 12, peer)
"""
    client = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(8)
s.sendto(b"give", ("{SERVER4}", 7))
data, peer = s.recvfrom(65535)
print(len(data), data == bytes(range(256)) * 12, peer[0])
"""
    srv = subprocess.Popen(lab.cmd("inet4", [sys.executable, "-c", server]))
    time.sleep(0.5)
    frags0 = lab.metrics().get("v6mostly_fragments_out_total", 0.0)
    out = pyexec(lab, "client6", client)
    srv.wait(timeout=15)
    assert out.split() == ["3072", "True", SERVER4], out
    assert lab.metrics()["v6mostly_fragments_out_total"] >= frags0 + 3  # the PLAT cut it


def test_ping6_and_unicast_ns_to_the_clat_address_answered_as_owner(lab: Lab) -> None:
    addr = clat_state(lab)["clat_ipv6"]
    r = lab.exec("plat", ["ping", "-6", "-c", "2", "-W", "2", addr], check=False)
    assert " 0% packet loss" in r.stdout, r.stdout
    # A unicast NS to the host's MAC, as a Cisco WLC sends it; the NA must come from
    # the CLAT address itself with Solicited and Override set and the target's MAC.
    mac = lab.exec("client6", ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    code = f"""
import time
from scapy.all import (AsyncSniffer, Ether, IPv6, ICMPv6ND_NS, ICMPv6ND_NA, ICMPv6NDOptSrcLLAddr,
                       ICMPv6NDOptDstLLAddr, sendp, get_if_hwaddr)
me = get_if_hwaddr("c6")
ns = (Ether(src=me, dst="{mac}") / IPv6(src="{PLAT_V6}", dst="{addr}", hlim=255)
      / ICMPv6ND_NS(tgt="{addr}") / ICMPv6NDOptSrcLLAddr(lladdr=me))
sn = AsyncSniffer(iface="c6", count=1,
                  lfilter=lambda p: ICMPv6ND_NA in p and p[ICMPv6ND_NA].tgt == "{addr}")
sn.start()
time.sleep(0.5)
sendp(ns, iface="c6", verbose=0)
sn.join(timeout=5)
if sn.running:
    sn.stop()
na = sn.results[0]
print(na[IPv6].src, na[ICMPv6ND_NA].tgt, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O, na[ICMPv6ND_NA].R,
      na[ICMPv6NDOptDstLLAddr].lladdr if ICMPv6NDOptDstLLAddr in na else None)
"""
    out = pyexec(lab, "plat", code).split()
    assert out[0] == addr and out[1] == addr, out
    assert out[2:5] == ["1", "1", "0"], out  # Solicited, Override, not a router
    assert out[5] == mac


def test_steps_back_for_native_ipv4_and_takes_over_again(lab: Lab) -> None:
    lab.exec("client6", ["ip", "addr", "add", "192.0.2.77/24", "dev", "eth0"])
    lab.exec("client6", ["ip", "route", "add", "default", "via", "192.0.2.1", "dev", "eth0"])
    try:
        assert wait_for(lambda: not clat_state(lab).get("active"), timeout=10)
        assert "native IPv4" in clat_state(lab)["reason"]
        assert "clat0" not in lab.exec("client6", ["ip", "link"]).stdout
    finally:
        lab.exec("client6", ["ip", "route", "del", "default", "via", "192.0.2.1"], check=False)
        lab.exec("client6", ["ip", "addr", "del", "192.0.2.77/24", "dev", "eth0"], check=False)
    assert wait_for(lambda: clat_state(lab).get("active"), timeout=15)
    r = lab.exec("client6", ["ping", "-c", "2", "-W", "2", SERVER4], check=False)
    assert " 0% packet loss" in r.stdout


def test_y_ctl_status_stats_reload(lab: Lab) -> None:
    """`v6mostly ctl` on the CLAT's control socket (beside its state file)."""
    sock = lab.path("clat/clat-eth0.sock")
    argv = [sys.executable, "-m", "v6mostly", "ctl", "--socket", sock]
    r = lab.exec("client6", [*argv, "--json", "status"], check=False)
    st = json.loads(r.stdout)[sock]
    assert st["ok"] and st["daemon"] == "clat@eth0" and st["active"], st
    assert st["pref64"] == PREF64 and st["egress"].startswith("TAP clat0out"), st
    r = lab.exec("client6", [*argv, "stats", "--explain", "--all"], check=False)
    assert "fastpath_superpackets" in r.stdout and "GSO super-packets among" in r.stdout, r.stdout
    r = lab.exec("client6", [*argv, "reload"], check=False)
    assert r.returncode == 0 and "eth0: reloaded: re-checking the link" in r.stdout, r.stdout
    assert clat_state(lab)["active"]


def test_zz_no_leak_and_clean_exit(lab: Lab) -> None:
    """Last: SIGTERM removes everything; the capture of the whole run shows no
    192.0.0.0/29 source and no ARP for it on the client link."""
    m = lab.exec(
        "client6",
        ["python3", "-c", "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9465/metrics').read().decode())"],
    ).stdout  # fmt: skip
    assert "v6mostly_clat_active 1.0" in m
    assert "v6mostly_clat_leaked_packets_total 0.0" in m
    for d in ("4to6", "6to4"):  # the fast path took TCP both ways
        line = next(
            x
            for x in m.splitlines()
            if x.startswith(f'v6mostly_fastpath_packets_total{{direction="{d}"}}')
        )
        assert float(line.split()[-1]) > 100, line
    os.kill(lab.pids["clat"], signal.SIGTERM)
    assert wait_for(lambda: "cleaned up" in Path(lab.path("clat.log")).read_text(), timeout=10)
    assert "clat0" not in lab.exec("client6", ["ip", "link"]).stdout
    assert "192.0.0" not in lab.exec("client6", ["ip", "-4", "route"]).stdout
    assert "/128" not in lab.exec("client6", ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    assert "v6mostly" not in lab.exec("client6", ["nft", "list", "tables"]).stdout
    filters = lab.exec("client6", ["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout
    assert "mirred" not in filters and "v6m_plat_fast6" not in filters, filters
    os.kill(lab.pids["tshark"], signal.SIGINT)
    time.sleep(1.5)
    cap = lab.path("client-link.pcap")
    r = subprocess.run(
        ["tshark", "-r", cap, "-Y", "ip.src == 192.0.0.0/29 or ip.dst == 192.0.0.0/29 or arp"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.stdout.strip() == "", r.stdout[:2000]
    total = subprocess.run(["tshark", "-r", cap], capture_output=True, text=True, check=False)
    assert len(total.stdout.splitlines()) > 50  # the capture saw the run's traffic


def spawn_from_config(lab: Lab, name: str, keys: str) -> None:
    """``v6mostly clat --config`` with one worker and ``keys`` (TOML lines) on eth0, as
    ``name``; waits until it is active."""
    conf = Path(lab.path(f"{name}.toml"))
    conf.write_text(f'[clat]\ninterface = "eth0"\nqueues = 1\n{keys}')
    lab.spawn(
        "client6",
        name,
        [sys.executable, "-m", "v6mostly", "clat", "--config", str(conf),
         "--state-dir", lab.path("clat")],
    )  # fmt: skip
    assert wait_for(lambda: clat_state(lab).get("active"), timeout=30), Path(
        lab.path(f"{name}.log")
    ).read_text()


def test_zzz_raw_socket_mode_without_offload(lab: Lab) -> None:
    """``offload = false``: plain TUN, IPv6 out through a raw socket; everything works
    (``fastpath = false``: the upload too goes through the workers and the socket)."""
    lab.pids.pop("clat", None)
    spawn_from_config(lab, "clat-raw", "offload = false\nfastpath = false\n")
    try:
        st = clat_state(lab)
        assert st["egress"].startswith("raw socket") and st["workers"] == 1, st
        assert "clat0out" not in lab.exec("client6", ["ip", "link"]).stdout
        r = lab.exec("client6", ["ping", "-c", "2", "-W", "2", SERVER4], check=False)
        assert " 0% packet loss" in r.stdout, r.stdout
        want, got = upload_sha(lab, 1 << 20)
        assert got == want
    finally:
        os.kill(lab.pids["clat-raw"], signal.SIGTERM)
    assert wait_for(lambda: "cleaned up" in Path(lab.path("clat-raw.log")).read_text(), 10)
    assert "clat0" not in lab.exec("client6", ["ip", "link"]).stdout


def test_zzzz_super_packets_through_the_workers_without_fast_path(lab: Lab) -> None:
    """``fastpath = false``: the workers read the host's TCP super-packets from clat0
    and write them whole into the egress TAP; the upload arrives intact."""
    spawn_from_config(lab, "clat-nofast", "fastpath = false\n")
    try:
        assert (
            "v6m_plat_fast"
            not in lab.exec("client6", ["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout
        )
        want, got = upload_sha(lab, 4 << 20)
        assert got == want
        assert wait_for(
            lambda: clat_state(lab)["counters"].get("gso_superpackets", 0) > 10, timeout=5
        ), clat_state(lab)["counters"]
        assert "fastpath_packets" not in clat_state(lab)["counters"]
    finally:
        os.kill(lab.pids["clat-nofast"], signal.SIGTERM)
    assert wait_for(lambda: "cleaned up" in Path(lab.path("clat-nofast.log")).read_text(), 10)
