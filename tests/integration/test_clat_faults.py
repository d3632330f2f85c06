"""`v6mostly clat` under faults (issue 9 §3): the CLAT recovers by itself.

Each test builds its own lab (``running_lab`` removes its namespaces, processes,
links and files at the end, also on failure) and runs the CLAT on ``client6``
as ``test_clat_lab.py`` does, then breaks something and asserts the outcome:

* the network moves to a new Pref64 (router and PLAT, SIGHUP): the CLAT follows
  within one RA interval (the lab's ``max_interval`` is 10 s) and IPv4 works
  again; the PREF64 is withdrawn (lifetime 0): the CLAT stops and removes its
  route; the router comes back: it resumes;
* link down/up: the kernel flushes the CLAT address; the CLAT adds it again;
* a suspend-like pause (SIGSTOP for longer than the PREF64 lifetime): SLOW, ~40 s;
* the PLAT stopped or gone: IPv4 fails cleanly, the CLAT stays responsive,
  IPv6 keeps working; IPv4 comes back with the PLAT;
* traceroute by IPv4 literal (ICMP and UDP) lists every hop, the IPv6-only hop
  as 192.0.0.8 (RFC 7600) with its IPv6 address in an RFC 5837 extension;
* ESP (IP protocol 50) through CLAT -> PLAT -> server and back.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.clat_helpers import clat_state, clat_status, spawn_clat
from tests.integration.lab_helpers import pyexec, require_root, wait_for
from v6mostly.lab.topology import (
    PLAT_V6,
    PREF64,
    SERVER4,
    XLAT6,
    Lab,
    LabConfig,
    running_lab,
    server6,
)

pytestmark = pytest.mark.integration

NEW_PREF64 = "2001:db8:6464::/96"
#: The lab's RA max_interval (site.toml) and so the PREF64 lifetime (3 x).
RA_INTERVAL = 10.0
PREF64_LIFETIME = 3 * RA_INTERVAL
DUMMY_V4 = "192.0.0.8"
CLAT_PEER_V4 = "192.0.0.2"


# -- helpers ------------------------------------------------------------------------


def clat_log(lab: Lab) -> str:
    try:
        return Path(lab.path("clat.log")).read_text(errors="replace")
    except OSError:
        return ""


def diag(lab: Lab) -> str:
    """What to show when an assertion fails: the state and the log's tail."""
    return json.dumps(clat_state(lab)) + "\n--- clat.log ---\n" + clat_log(lab)[-3000:]


def alive(pid: int) -> bool:
    """Whether our child ``pid`` still runs (reaps it when it has exited)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return done == 0


def ping4_ok(lab: Lab, count: int = 1, wait: int = 2) -> bool:
    r = lab.exec("client6", ["ping", "-n", "-c", str(count), "-W", str(wait), SERVER4], check=False)
    return r.returncode == 0


def wait_ping4(lab: Lab, timeout: float) -> bool:
    """IPv4 by literal works again within ``timeout`` seconds (bounded retries)."""
    return wait_for(lambda: ping4_ok(lab), timeout=timeout, step=0.2)


def spawn_plat(lab: Lab) -> None:
    """As the lab starts it (topology.Lab._start_v6mostly), with the file it wrote."""
    lab.spawn(
        "plat",
        "plat",
        [
            sys.executable,
            "-m",
            "v6mostly",
            "plat",
            "--config",
            lab.path("plat.toml"),
            "--control-socket",
            lab.path("plat.sock"),
        ],
    )


def stop_process(pid: int, timeout: float = 10.0) -> None:
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not alive(pid), timeout=timeout), f"pid {pid} ignored SIGTERM"


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of its reaped children (the ``nft``, ``tc`` it runs)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def has_clat_route(lab: Lab) -> bool:
    return "dev clat0" in lab.exec("client6", ["ip", "-4", "route"]).stdout


def capture(lab: Lab, node: str, iface: str, name: str, bpf: str) -> tuple[int, str]:
    """Start tshark in ``node`` (stopped with SIGINT by the caller, and by the lab)."""
    path = lab.path(name + ".pcap")
    pid = lab.spawn(node, name, ["tshark", "-q", "-i", iface, "-f", bpf, "-w", path])
    # tshark says "Capturing on ..." once the capture runs.
    wait_for(lambda: "Capturing on" in Path(lab.path(name + ".log")).read_text(), timeout=10)
    time.sleep(0.3)
    return pid, path


def stop_capture(pid: int) -> None:
    # dumpcap reads the capture ring a block at a time (a block is handed over when
    # full or after a timeout): a packet of the last second is lost on a SIGINT.
    time.sleep(1.2)
    os.kill(pid, signal.SIGINT)
    wait_for(lambda: not alive(pid), timeout=10)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab per test with the CLAT active on client6."""
    require_root()
    with running_lab(LabConfig(queues=1)) as lab:
        spawn_clat(lab)
        assert wait_for(lambda: clat_state(lab).get("active"), timeout=30), diag(lab)
        # ipv4only.arpa may answer first (both are asked at start); the RA then wins.
        assert wait_for(
            lambda: str(clat_state(lab).get("pref64_source", "")).startswith("RA from"),
            timeout=15,
        ), diag(lab)
        assert wait_ping4(lab, 20), diag(lab)
        try:
            yield lab
        finally:
            # SIGCONT whatever a test may have left stopped, so that the lab's
            # SIGTERM clean-up reaches it.
            for pid in lab.pids.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGCONT)


# -- 1. PREF64 change, withdrawal, return ------------------------------------------------


def test_pref64_change_withdrawal_and_return(lab: Lab) -> None:
    # The network moves to a new Pref64: site.toml (router) and the PLAT, which takes
    # its pool6 from the site file.
    plat_toml = Path(lab.path("plat.toml")).read_text()
    assert f'site = "{lab.path("site.toml")}"' in plat_toml and "pool6" not in plat_toml
    site = Path(lab.path("site.toml"))
    text = site.read_text()
    assert f'pref64 = "{PREF64}"' in text
    site.write_text(text.replace(f'pref64 = "{PREF64}"', f'pref64 = "{NEW_PREF64}"'))
    os.kill(lab.pids["plat"], signal.SIGHUP)
    os.kill(lab.pids["router"], signal.SIGHUP)
    t0 = time.monotonic()
    assert wait_for(lambda: clat_state(lab).get("pref64") == NEW_PREF64, timeout=RA_INTERVAL + 1)
    took = time.monotonic() - t0
    st = clat_state(lab)
    assert st["active"] and st["pref64_source"].startswith("RA from fe80::"), diag(lab)
    assert wait_ping4(lab, 5), diag(lab)
    assert f"Pref64 {NEW_PREF64} from RA from fe80::" in clat_log(lab)
    # The old prefix is withdrawn by the router (lifetime 0 in its next RAs), not kept.
    assert "restarting the translator" in clat_log(lab), diag(lab)
    print(f"CLAT on the new Pref64 {took:.1f} s after the SIGHUP")

    # PREF64 withdrawn by the operator: advertise_pref64 = false and SIGHUP; the
    # router's next RAs carry it with lifetime 0 (RFC 8781 §4). The CLAT stops and
    # removes its route.
    site.write_text(
        site.read_text().replace("max_interval =", "advertise_pref64 = false\nmax_interval =")
    )
    os.kill(lab.pids["router"], signal.SIGHUP)
    assert wait_for(lambda: not clat_state(lab).get("active"), timeout=RA_INTERVAL + 1), diag(lab)
    st = clat_state(lab)
    assert st["pref64"] is None and "no Pref64" in st["reason"], st
    assert not has_clat_route(lab)
    assert "clat0" not in lab.exec("client6", ["ip", "link"]).stdout
    assert st["clat_ipv6"] is None
    assert "/128" not in lab.exec("client6", ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    assert not ping4_ok(lab)  # no IPv4 route at all: fails at once
    assert "withdrawn by RA from" in clat_log(lab)
    status = clat_status(lab)
    assert status.returncode == 0 and "eth0: idle (no Pref64" in status.stdout, status

    # Back again: the router announces it again; the CLAT resumes.
    site.write_text(site.read_text().replace("advertise_pref64 = false\n", ""))
    os.kill(lab.pids["router"], signal.SIGHUP)
    assert wait_for(lambda: clat_state(lab).get("active"), timeout=RA_INTERVAL + 1), diag(lab)
    assert clat_state(lab)["pref64"] == NEW_PREF64
    assert has_clat_route(lab)
    assert wait_ping4(lab, 5), diag(lab)


def test_ra_mtu_change_is_followed(lab: Lab) -> None:
    """The router announces MTU 1400 (RA MTU option, RFC 4861 §4.6.4): the uplink's
    IPv6 MTU becomes 1400 and the CLAT's IPv4 MTU 1380 (- 20), without a restart;
    DF datagrams up to it pass, larger ones are refused by the host's own stack, and
    TCP still carries 1 MB intact."""
    site = Path(lab.path("site.toml"))
    original = site.read_text()
    site.write_text(original.replace("max_interval =", "mtu = 1400\nmax_interval =", 1))
    os.kill(lab.pids["router"], signal.SIGHUP)
    try:
        assert wait_for(lambda: clat_state(lab).get("mtu") == 1380, RA_INTERVAL + 2), diag(lab)
        assert (
            lab.exec("client6", ["cat", "/proc/sys/net/ipv6/conf/eth0/mtu"]).stdout.strip()
            == "1400"
        )
        assert "mtu 1380 " in lab.exec("client6", ["ip", "link", "show", "clat0"]).stdout
        assert "IPv4 MTU 1480 -> 1380" in clat_log(lab)
        # A DF=1 UDP datagram of exactly the new MTU (1380 bytes IPv4, 1400 IPv6) passes.
        recv = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{SERVER4}", 7))
s.settimeout(8)
data, peer = s.recvfrom(65535)
print(len(data))
"""
        rx = subprocess.Popen(
            lab.cmd("inet4", [sys.executable, "-c", recv]), stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.5)
        pyexec(
            lab,
            "client6",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_PMTUDISC_DO: DF=1\n"
            f"s.sendto(bytes(1352), ('{SERVER4}', 7))\n",
        )
        out, _ = rx.communicate(timeout=15)
        assert out.strip() == "1352", out
        big = lab.exec(
            "client6",
            ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1353", SERVER4],
            check=False,
        )
        assert big.returncode != 0 and "mtu=1380" in (big.stdout + big.stderr), (
            big.stdout + big.stderr
        )
        r = lab.exec(
            "client6",
            ["sh", "-c", f"curl -sS --max-time 20 http://{SERVER4}/1m.bin | sha256sum"],
            check=False,
        )
        want = __import__("hashlib").sha256(bytes(range(256)) * 4096).hexdigest()
        assert r.stdout.split()[0] == want
    finally:
        site.write_text(original)
        os.kill(lab.pids["router"], signal.SIGHUP)


# -- 2. link down / up ----------------------------------------------------------------


def test_idle_clat_does_not_spin(lab: Lab) -> None:
    """Idle, the supervisor wakes about once a second: a SIGCHLD left by its own
    ``nft`` runs made it step again at once (a step every ~20 ms, most of a core)."""
    pid = lab.pids["clat"]
    before = cpu_seconds(pid)
    time.sleep(4)
    used = cpu_seconds(pid) - before
    assert used < 0.8, f"{used:.2f} s of CPU in 4 s idle"


def test_link_down_up_recovers(lab: Lab) -> None:
    addr = clat_state(lab)["clat_ipv6"]
    lab.exec("client6", ["ip", "link", "set", "eth0", "down"])
    try:
        assert wait_for(lambda: not clat_state(lab).get("active"), timeout=5), diag(lab)
        assert "link eth0 is down" in clat_state(lab)["reason"]
        assert not has_clat_route(lab)
    finally:
        lab.exec("client6", ["ip", "link", "set", "eth0", "up"])
    # The kernel flushed every IPv6 address of eth0; SLAAC brings the /64 back (RS on
    # link up), the CLAT re-adds its address with DAD and takes the route again.
    assert wait_for(lambda: clat_state(lab).get("active"), timeout=20), diag(lab)
    st = clat_state(lab)
    assert st["clat_ipv6"] == addr  # the stable IID: the same address again
    out = lab.exec("client6", ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    assert f"{addr}/128" in out, out
    assert wait_ping4(lab, 10), diag(lab)
    assert wait_for(lambda: "active" in clat_status(lab).stdout, timeout=3)


# -- 3. suspend-like pause (SLOW: ~40 s) --------------------------------------------------


def test_sigstop_longer_than_pref64_lifetime_then_sigcont_recovers(lab: Lab) -> None:
    """SLOW (~40 s): the whole CLAT (supervisor and worker, one process group) is
    stopped for longer than the PREF64 lifetime (3 x max_interval = 30 s)."""
    pgid = lab.pids["clat"]
    before = clat_state(lab)
    log_before = clat_log(lab)
    os.killpg(pgid, signal.SIGSTOP)
    try:
        time.sleep(PREF64_LIFETIME + 5)
        # Stopped: nobody translates, the state file is not updated.
        assert not ping4_ok(lab)
        assert time.time() - clat_state(lab)["updated"] > PREF64_LIFETIME
    finally:
        os.killpg(pgid, signal.SIGCONT)
    t0 = time.monotonic()
    # It notices the pause, solicits an RA and goes on; IPv4 works within seconds.
    assert wait_ping4(lab, 10), diag(lab)
    took = time.monotonic() - t0
    # The supervisor writes its state again (the worker may have answered first).
    assert wait_for(lambda: time.time() - clat_state(lab).get("updated", 0) < 2, timeout=5), diag(
        lab
    )
    st = clat_state(lab)
    assert st["active"] and st["pref64"] == PREF64, diag(lab)
    assert st["pref64_lifetime_left"] > PREF64_LIFETIME - RA_INTERVAL - 2, st
    assert st["clat_ipv6"] == before["clat_ipv6"]
    # The pause outlived the PREF64: the CLAT saw it expire and took the prefix from a
    # fresh RA (asked for with an RS: the one in use expired, or the pause was
    # noticed, "resumed after a pause"), with no stop in between.
    after = clat_log(lab)[len(log_before) :]
    assert "expired (lifetime" in after and "new PREF64 in RA from" in after, diag(lab)
    assert "stopped (" not in after, diag(lab)
    noticed = "resumed after a pause" in after
    print(f"IPv4 back {took:.1f} s after SIGCONT; pause noticed in the wait: {noticed}")


# -- 4. PLAT down ---------------------------------------------------------------------


def test_plat_down_ipv4_fails_cleanly_and_recovers(lab: Lab) -> None:
    # a) the PLAT gone (SIGTERM: it removes its TUN and routes): IPv4 fails at once
    # with an error the CLAT translates (no route to the Pref64 on the PLAT node).
    stop_process(lab.pids["plat"])
    t0 = time.monotonic()
    r = lab.exec("client6", ["ping", "-n", "-c", "2", "-W", "1", SERVER4], check=False)
    assert r.returncode != 0, r.stdout
    assert time.monotonic() - t0 < 6  # no hang
    print("PLAT gone, ping says:", r.stdout.strip().splitlines()[1:3])
    r = lab.exec("client6", ["curl", "-sS", "-m", "3", f"http://{SERVER4}/"], check=False)
    assert r.returncode != 0
    assert alive(lab.pids["clat"]) and clat_state(lab)["active"], diag(lab)
    r = lab.exec("client6", ["ping", "-6", "-n", "-c", "1", "-W", "2", PLAT_V6], check=False)
    assert r.returncode == 0, r.stdout
    spawn_plat(lab)
    assert wait_ping4(lab, 15), diag(lab) + plat_diag(lab)
    r = lab.exec("client6", ["curl", "-sS", "-m", "5", f"http://{SERVER4}/"], check=False)
    assert r.stdout == "hello from the IPv4-only Internet\n", r.stderr

    # b) the PLAT hangs (SIGSTOP its process group): IPv4 times out.
    plat = lab.pids["plat"]
    log_at = len(Path(lab.path("plat.log")).read_text())
    os.killpg(plat, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = lab.exec("client6", ["ping", "-n", "-c", "2", "-W", "1", SERVER4], check=False)
        assert r.returncode != 0 and " 100% packet loss" in r.stdout, r.stdout
        assert time.monotonic() - t0 < 6  # fails within ping's own timeout, no hang
        # The CLAT is alive and responsive: status answers with fresh state.
        assert alive(lab.pids["clat"])
        time.sleep(1.5)
        status = clat_status(lab)
        assert status.returncode == 0 and "eth0: active" in status.stdout, status
        assert time.time() - clat_state(lab)["updated"] < 3
        # IPv6 to the PLAT's client-side address keeps working (the kernel answers).
        r = lab.exec("client6", ["ping", "-6", "-n", "-c", "2", "-W", "2", PLAT_V6], check=False)
        assert " 0% packet loss" in r.stdout, r.stdout
    finally:
        os.killpg(plat, signal.SIGCONT)
    # The PLAT survives SIGSTOP/SIGCONT (its loop ignores the bogus siginfo CPython's
    # sigtimedwait may return then) and IPv4 recovers.
    if not wait_ping4(lab, 10):
        raise AssertionError(diag(lab) + plat_diag(lab))
    assert alive(plat)
    assert "Traceback" not in Path(lab.path("plat.log")).read_text()[log_at:]


def plat_diag(lab: Lab) -> str:
    m = {k: v for k, v in lab.metrics().items() if v and ("dropped" in k or "worker" in k)}
    ct = lab.exec("plat", ["conntrack", "-L"], check=False).stdout
    return f"\n--- plat.log ---\n{Path(lab.path('plat.log')).read_text()[-2000:]}\n{m}\n{ct}"


# -- 5. traceroute by IPv4 literal ----------------------------------------------------------


def traceroute_hops(out: str) -> list[tuple[list[str], int, int]]:
    """Each hop row: (the answering addresses, answers, unanswered probes ``*``)."""
    hops: list[tuple[list[str], int, int]] = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if not parts or not parts[0].isdigit():
            continue
        addrs = [p for p in parts[1:] if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", p)]
        hops.append((addrs, parts.count("ms"), parts.count("*")))
    return hops


def test_traceroute_by_ipv4_literal_lists_every_hop(lab: Lab) -> None:
    for argv in (["traceroute", "-I", "-n", SERVER4], ["traceroute", "-n", SERVER4]):
        r = lab.exec("client6", [*argv, "-w", "2", "-m", "8"], check=False, timeout=60)
        hops = traceroute_hops(r.stdout)
        # every probe of every hop answered: three answers, no "*"
        assert hops and all(n == 3 and not lost for _a, n, lost in hops), r.stdout
        # Hop 1 is the CLAT itself: the host's IPv4 default gateway 192.0.0.2 (RFC
        # 7335), which answers a TTL 1 packet as the first-hop IPv4 router; hop 2 is the
        # PLAT, an IPv6-only hop for the CLAT (its error comes from an IPv6 address
        # outside the Pref64): 192.0.0.8 (RFC 7600).
        assert [h[0] for h in hops] == [[CLAT_PEER_V4], [DUMMY_V4], [SERVER4]], r.stdout
        print(" ".join(argv), "\n", r.stdout)
    # A third run at once still gets the CLAT's answers (9 Time Exceeded to the host
    # within a second or two: more than the kernel-style burst of 6; see
    # clat.ICMP_ERROR_BURST).
    r = lab.exec("client6", ["traceroute", "-I", "-n", "-m", "1", "-w", "2", SERVER4], check=False)
    assert traceroute_hops(r.stdout) == [([CLAT_PEER_V4], 3, 0)], r.stdout

    # The error from the IPv6-only hop carries its IPv6 address (RFC 5837 Interface
    # Information object, class 2, IP address sub-object AFI 2). Hop 2 is the PLAT's
    # translator, answering a packet that reaches it with Hop Limit 1 from its own
    # address XLAT6. Its rate limit (per destination: burst 6, one per second) counts
    # every client behind the NAPT66 outer address as one destination, and the two
    # traceroutes above used those 6: wait for a token.
    time.sleep(2.5)
    code = f"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(3)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 2)
body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + b"x" * 32
c = sum(struct.unpack("!%dH" % (len(body) // 2), body))
c = (c & 0xFFFF) + (c >> 16); c = (c & 0xFFFF) + (c >> 16)
body = body[:2] + struct.pack("!H", ~c & 0xFFFF) + body[4:]
s.sendto(body, ("{SERVER4}", 0))
for _ in range(20):
    data, peer = s.recvfrom(4096)
    icmp = data[(data[0] & 15) * 4:]
    if icmp[0] == 11:
        print(peer[0], icmp.hex())
        break
"""
    out = pyexec(lab, "client6", code).split()
    assert out and out[0] == DUMMY_V4, out
    icmp = bytes.fromhex(out[1])
    length = icmp[5] * 4  # RFC 4884 length of the original datagram field
    assert length >= 128, icmp.hex()
    ext = icmp[8 + length :]
    assert ext and ext[0] >> 4 == 2, icmp.hex()  # extension structure version 2
    obj_len, class_num = int.from_bytes(ext[4:6], "big"), ext[6]
    assert class_num == 2, ext.hex()  # Interface Information (RFC 5837)
    obj = ext[4 : 4 + obj_len]
    want = ipaddress.IPv6Address(XLAT6).packed
    i = obj.find(want)
    assert i >= 4 and obj[i - 4 : i] == b"\x00\x02\x00\x00", obj.hex()  # AFI 2 = IPv6


# -- 6. ESP ---------------------------------------------------------------------------------


def test_esp_through_clat_and_plat(lab: Lab) -> None:
    """IP protocol 50 has no ports: the PLAT's NAPT66 snat maps it by address only
    (conntrack's generic tracker), so a crafted ESP packet goes out and its reply
    comes back."""
    spi_out, spi_in = b"\x00\x00\x10\x01", b"\x00\x00\x20\x02"
    rx = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
s.settimeout(8)
while True:
    data, peer = s.recvfrom(4096)
    p = data[(data[0] & 15) * 4:]
    if p[:4] == bytes.fromhex(sys.argv[1]):
        print(peer[0], p.hex(), flush=True)
        break
"""
    tx = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[1], 0))
"""
    out_payload = spi_out + b"\x00\x00\x00\x01" + b"esp-out" * 8 + b"\x00"
    in_payload = spi_in + b"\x00\x00\x00\x01" + b"esp-in" * 8
    cap_pid, cap = capture(lab, "plat", "c6", "esp-cap", "ip6 proto 50")
    # Out: client6 (IPv4 literal) -> CLAT -> PLAT (NAPT66 + SIIT) -> inet4.
    srv = subprocess.Popen(
        lab.cmd("inet4", [sys.executable, "-c", rx, spi_out.hex()]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    pyexec(lab, "client6", tx, SERVER4, out_payload.hex())
    got, err = srv.communicate(timeout=15)
    assert got.split() == ["198.51.100.1", out_payload.hex()], got + err
    # Back: inet4 -> PLAT (conntrack reply of the generic ESP "flow") -> CLAT -> client6.
    cli = subprocess.Popen(
        lab.cmd("client6", [sys.executable, "-c", rx, spi_in.hex()]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    pyexec(lab, "inet4", tx, "198.51.100.1", in_payload.hex())
    got, err = cli.communicate(timeout=15)
    assert got.split() == [SERVER4, in_payload.hex()], got + err
    stop_capture(cap_pid)
    # On the client link: IPv6 with next header 50, from the CLAT address to the
    # server's Pref64 address, and the reply.
    r = subprocess.run(
        ["tshark", "-r", cap, "-T", "fields", "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "ipv6.nxt"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    rows = [ln.split("\t") for ln in r.stdout.splitlines()]
    clat6 = clat_state(lab)["clat_ipv6"]
    assert [clat6, server6(), "50"] in rows, r.stdout + r.stderr
    assert [server6(), clat6, "50"] in rows, r.stdout + r.stderr
