"""The C loop for the CLAT (``FastPath.run`` with ``out6``) against the pure-Python core.

IPv4 results go back into the TUN queue (a datagram socket pair stands in for it), IPv6
results leave through ``out6``: a TAP (``eth`` = ``clat_loops.ETH_IPV6``; another socket
pair) whose frames must be what ``clat_loops._tap_parts`` makes of the Python path's, or a
raw IPv6 socket (``eth`` None), tested for real in a network namespace of its own (a
forked child, root only) with the packets captured as they leave its veth uplink. Then the
CLAT's worker loops themselves (``clat_vnet_loop``, ``clat_loop``) in a child, with a burst
that mixes packets C takes, packets Python translates and a Neighbor Solicitation to answer
(the adaptive poll on: its time counter shows the C loop ran).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from v6mostly.siit import accel

if not accel.available():
    pytest.skip(accel.status(), allow_module_level=True)

from scapy.all import ICMP, IP, TCP, UDP, ICMPv6EchoRequest, IPv6, raw

from tests.unit.test_accel_differential import loop_setup, vnet_frames, worker_handle
from tests.unit.test_clat_service import ns
from tests.unit.test_vnet import partial
from tests.unit.xlat_cases import C4, C6, CONFIGS, S4, S6
from v6mostly.clat.nd import answer_ns
from v6mostly.services.clat_loops import ETH_IPV6, _tap_parts, clat_loop, clat_vnet_loop
from v6mostly.services.dataplane import SharedCounters
from v6mostly.services.worker_loops import (
    BUFSIZE,
    W_GSO,
    W_NA,
    W_SEGS,
    W_WERR,
    WORKER_COUNTERS,
    Poll,
)
from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig
from v6mostly.siit.verdict import Stats
from v6mostly.wire import vnet

MAC = bytes.fromhex("020000c1a701")


def recv_all(*socks: socket.socket) -> list[tuple[int, bytes]]:
    """Whatever the sockets hold now: (index of the socket, datagram), in socket order."""
    out = []
    for i, s in enumerate(socks):
        while True:
            try:
                out.append((i, s.recv(70000, socket.MSG_DONTWAIT)))
            except BlockingIOError:
                break
    return out


def v4_burst() -> list[bytes]:
    return [
        raw(IP(src=S4, dst=C4) / UDP(sport=53, dport=7) / bytes(36)),
        raw(IP(src=S4, dst=C4, flags="DF") / TCP(flags="A") / bytes(1400)),
        raw(IP(src=S4, dst=C4) / ICMP(type=0, id=1, seq=1) / bytes(56)),
    ]


def v6_burst() -> list[bytes]:
    return [
        raw(IPv6(src=C6, dst=S6) / UDP(sport=5353, dport=53) / bytes(16)),
        raw(IPv6(src=C6, dst=S6) / TCP(flags="A") / bytes(1200)),
        raw(IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=1, seq=1, data=bytes(56))),
    ]


# -- out6 a TAP --------------------------------------------------------------------------


def test_tap_plain_burst_both_ways() -> None:
    """Without vnet headers: IPv4 in -> IPv6 out into the TAP (a zero header and the
    Ethernet header first), IPv6 in -> IPv4 back into the TUN queue."""
    a, b, xl, ref, w, buf, token = loop_setup()
    ta, tb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    assert xl.accel is not None
    pkts = [p for pair in zip(v4_burst(), v6_burst(), strict=True) for p in pair]
    for pkt in pkts:
        b.send(pkt)
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 256, ta.fileno(), ETH_IPV6) == -1
    want_tap = [bytes(10) + ETH_IPV6 + ref.translate(p).packets[0] for p in v4_burst()]
    want_tun = [ref.translate(p).packets[0] for p in v6_burst()]
    assert recv_all(b, tb) == [(0, x) for x in want_tun] + [(1, x) for x in want_tap]
    assert xl.stats.as_dict() == ref.stats.as_dict() and xl.ip_id == ref.ip_id
    assert w[W_WERR] == 0
    for s in (a, b, ta, tb):
        s.close()


@pytest.mark.parametrize("cfg", ["properties", "wkp_dec_reset", "p40"])
def test_tap_vnet_frames_as_the_python_loop_writes_them(cfg: str) -> None:
    """Offload mode: each frame of ``vnet_frames`` (no offload, DATA_VALID, partial
    checksums right and wrong, GSO, mutated) through ``run(vnet=True, out6=TAP)`` and, for
    what it returns, the worker's ``handle_vnet_packet``, against the pure core; IPv6
    frames land in the TAP as ``_tap_parts`` lays them out (csum_start and hdr_len + 14)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ta, tb = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    xl = Translator(
        TranslatorConfig(**CONFIGS[cfg]),
        stats=Stats(memoryview(bytearray(8 * Stats.SIZE)).cast("Q")),
    )
    py = Translator(TranslatorConfig(**CONFIGS[cfg]))
    py.translate_into = py.translate_python  # type: ignore[method-assign]
    assert xl.accel is not None
    w_c = memoryview(bytearray(8 * len(WORKER_COUNTERS))).cast("Q")
    w_py = [0] * len(WORKER_COUNTERS)
    buf = bytearray(BUFSIZE)
    token = memoryview(buf)[HEADROOM:]

    def placed(frames: list[bytes]) -> list[tuple[int, bytes]]:
        """Where the CLAT's Python loop writes each frame: TUN (0) or TAP (1)."""
        return [
            (1, b"".join(bytes(x) for x in _tap_parts(f))) if f[10] >> 4 == 6 else (0, f)
            for f in frames
        ]

    taken = taken_v6 = taken_csum = taken_gso = 0
    xl.accel.set_gso_counters(W_GSO, W_SEGS)  # super-packets through C as well
    for frame in vnet_frames():
        b.send(frame)
        n = xl.accel.run(a.fileno(), buf, token, w_c, W_WERR, True, 1, ta.fileno(), ETH_IPV6)
        if n >= 0:
            got = placed(worker_handle(xl, buf, n, w_c))
        else:
            taken += 1
            got = recv_all(b, tb)
            assert len(got) == 1, frame.hex()
            taken_gso += frame[1] != 0
            if got[0][0] == 1:
                taken_v6 += 1
                taken_csum += got[0][1][0] == vnet.F_NEEDS_CSUM
        ref = bytearray(HEADROOM) + frame + bytes(64)
        want = placed(worker_handle(py, ref, len(frame), w_py))
        assert got == want, frame.hex()
        assert xl.ip_id == py.ip_id
    assert xl.stats.as_dict() == py.stats.as_dict()
    assert list(w_c) == w_py
    if cfg == "properties":
        assert taken > 50 and taken_v6 > 20 and taken_csum > 5, (taken, taken_v6, taken_csum)
        assert taken_gso > 20, taken_gso
    for s in (a, b, ta, tb):
        s.close()


def test_tap_needs_csum_header_layout() -> None:
    """A NEEDS_CSUM IPv4 packet with hdr_len: the TAP frame's header is the translated
    frame's with csum_start and hdr_len 14 bytes further, then ETH_IPV6, then IPv6."""
    a, b, xl, _ref, w, buf, token = loop_setup()
    ta, tb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    assert xl.accel is not None
    pkt = raw(IP(src=S4, dst=C4, flags="DF") / TCP(flags="A") / bytes(600))
    body, l4, off = partial(pkt)
    hdr = vnet.VnetHeader(vnet.F_NEEDS_CSUM, 0, l4 + 20, 0, l4, off)
    b.send(hdr.to_wire() + body)
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, True, 256, ta.fileno(), ETH_IPV6) == -1
    got = recv_all(b, tb)
    py = Translator(TranslatorConfig(**CONFIGS["properties"]))
    frame = bytearray(HEADROOM) + hdr.to_wire() + body + bytes(64)
    frames = worker_handle(py, frame, 10 + len(body), [0] * len(WORKER_COUNTERS))
    assert len(frames) == 1 and frames[0][10] >> 4 == 6
    assert got == [(1, b"".join(bytes(x) for x in _tap_parts(frames[0])))]
    tap = got[0][1]
    assert vnet.HDR.unpack(tap[:10]) == (vnet.F_NEEDS_CSUM, 0, 40 + 20 + 14, 0, 40 + 14, 16)
    assert tap[10:24] == ETH_IPV6 and tap[24:] == bytes(frames[0][10:])
    for s in (a, b, ta, tb):
        s.close()


def test_tap_header_past_65535_goes_to_python() -> None:
    """hdr_len + 14 past 65535 has no TAP header (``_tap_parts``: struct.error, a worker
    error there): C returns the frame as read, without translating or counting it."""
    a, b, xl, _ref, w, buf, token = loop_setup()
    ta, tb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    assert xl.accel is not None
    body, l4, off = partial(raw(IP(src=S4, dst=C4, flags="DF") / TCP(flags="A") / bytes(60)))
    frame = vnet.VnetHeader(vnet.F_NEEDS_CSUM, 0, 65510, 0, l4, off).to_wire() + body
    before = xl.stats.as_dict()
    b.send(frame)
    n = xl.accel.run(a.fileno(), buf, token, w, W_WERR, True, 256, ta.fileno(), ETH_IPV6)
    assert n == len(frame) and bytes(buf[HEADROOM : HEADROOM + n]) == frame
    assert recv_all(b, tb) == [] and xl.stats.as_dict() == before
    b.send(frame)  # without the TAP the header fits: C takes it
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, True, 256) == -1
    assert len(recv_all(b)) == 1
    for s in (a, b, ta, tb):
        s.close()


@pytest.mark.parametrize("vnet_mode", [False, True])
def test_declined_packets_come_back_untouched(vnet_mode: bool) -> None:
    """An ICMP error and a Neighbor Solicitation: returned to Python as read, nothing
    written on either side."""
    a, b, xl, _ref, w, buf, token = loop_setup()
    ta, tb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    assert xl.accel is not None
    hdr = bytes(10) if vnet_mode else b""
    err = raw(IP(src=S4, dst=C4) / ICMP(type=3, code=3) / IP(src=C4, dst=S4) / UDP())
    for pkt in (err, ns(src=S6, dst=C6, tgt=C6)):
        b.send(hdr + pkt)
        n = xl.accel.run(a.fileno(), buf, token, w, W_WERR, vnet_mode, 256, ta.fileno(), ETH_IPV6)
        assert n == len(hdr) + len(pkt)
        assert bytes(buf[HEADROOM : HEADROOM + n]) == hdr + pkt
        assert recv_all(b, tb) == []
    for s in (a, b, ta, tb):
        s.close()


def test_failing_out6_counts_write_errors() -> None:
    """A TAP whose peer is gone, a closed descriptor, and a raw-socket send the socket
    refuses (an AF_UNIX one: no IPv6 destination) count w[werr]; IPv4 still goes out."""
    a, b, xl, ref, w, buf, token = loop_setup()
    assert xl.accel is not None
    ta, tb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tb.close()
    closed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    closed_fd = closed.fileno()
    closed.close()
    v4, v6 = v4_burst()[0], v6_burst()[0]
    for out6, eth in ((ta.fileno(), ETH_IPV6), (closed_fd, ETH_IPV6), (ta.fileno(), None)):
        before = w[W_WERR]
        b.send(v4)
        b.send(v6)
        assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 256, out6, eth) == -1
        assert w[W_WERR] == before + 1
        assert recv_all(b) == [(0, ref.translate(v6).packets[0])]
        ref.translate(v4)
    assert xl.stats.as_dict() == ref.stats.as_dict()
    with pytest.raises(ValueError, match="eth"):
        xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 256, ta.fileno(), b"short")
    for s in (a, b, ta):
        s.close()


# -- out6 a raw IPv6 socket, in a network namespace of its own -----------------------------

CLONE_NEWNET = 0x40000000


#: The namespace's uplink: a veth pair, 2001:db8::/32 routed out of it to a neighbour that
#: is only a permanent entry (the packets go nowhere; a packet socket sees them leave).
NETNS_SETUP = (
    "link add v0 type veth peer name v1",
    "link set v1 up",
    "link set v0 up",
    "-6 addr add 2001:db8:ffff::1/128 dev v0 nodad",
    "-6 neigh add fe80::1 lladdr 02:00:00:00:00:01 dev v0 nud permanent",
    "-6 route add 2001:db8::/32 via fe80::1 dev v0",
)
UPLINK = "v0"


def in_netns(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child in a new network namespace (``NETNS_SETUP``); its
    assertion errors come back here."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) for a network namespace")
    r, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            for cmd in NETNS_SETUP:
                subprocess.run(["ip", *cmd.split()], check=True)
            body()
        except BaseException:
            os.write(wr, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(wr)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, report


def capture() -> socket.socket:
    """What leaves through the uplink (ETH_P_ALL: only such a socket sees outgoing)."""
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
    cap.bind((UPLINK, 3))
    return cap


def captured(cap: socket.socket, count: int) -> list[bytes]:
    """The next ``count`` unicast IPv6 packets sent out of the uplink (not the kernel's
    own multicast: MLD, Router Solicitations)."""
    out: list[bytes] = []
    cap.settimeout(2)
    while len(out) < count:
        data, addr = cap.recvfrom(70000)
        if addr[2] == socket.PACKET_OUTGOING and addr[1] == 0x86DD and data[24] != 0xFF:
            out.append(data)
    return out


def test_raw_socket_out6() -> None:
    """IPv4 -> IPv6 sent by C through a raw IPv6 socket (to the packet's destination), as
    clat_loop's ``sendto``; IPv6 -> IPv4 back into the TUN queue."""

    def body() -> None:
        a, b, xl, ref, w, buf, token = loop_setup()
        assert xl.accel is not None
        rawsock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        rawsock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, UPLINK.encode())
        cap = capture()
        v4s = v4_burst()
        for pkt in [*v4s, *v6_burst()]:
            b.send(pkt)
        n = xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 256, rawsock.fileno(), None)
        assert n == -1 and w[W_WERR] == 0
        assert captured(cap, len(v4s)) == [ref.translate(p).packets[0] for p in v4s]
        assert recv_all(b) == [(0, ref.translate(p).packets[0]) for p in v6_burst()]
        assert xl.stats.as_dict() == ref.stats.as_dict()

    in_netns(body)


# -- the CLAT's worker loops with the C loop -------------------------------------------------


def start_worker(loop: Any, fd: int, xl: Translator, w: memoryview) -> int:
    Poll(2000, 50).apply(xl, w)  # counts poll_spin_us: only the C loop polls
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            loop(fd, xl, w)
        finally:
            os._exit(1)
    return pid


def stop_worker(pid: int) -> None:
    time.sleep(0.1)  # the poll after the last packet is counted when it ends
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def burst() -> tuple[list[bytes], bytes]:
    """Packets for C, an ICMP error for Python, a Neighbor Solicitation for the CLAT address
    (C6); and that address."""
    err = raw(IP(src=S4, dst=C4) / ICMP(type=3, code=3) / IP(src=C4, dst=S4) / UDP())
    pkts = [*v4_burst(), *v6_burst(), err, ns(src=S6, dst=C6, tgt=C6), *v4_burst()]
    return pkts, ipaddress.IPv6Address(C6).packed


def expected(pkts: list[bytes], own6: bytes) -> list[bytes]:
    ref = Translator(TranslatorConfig(**CONFIGS["properties"]))
    out = []
    for p in pkts:
        na = answer_ns(p, own6, MAC)
        out += [na] if na is not None else list(ref.translate(p).packets)
    return out


def test_clat_vnet_loop_uses_the_c_loop() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ta, tb = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    counters = SharedCounters(1)
    xl = Translator(TranslatorConfig(**CONFIGS["properties"]), stats=counters.stats(0))
    pkts, own6 = burst()
    loop = clat_vnet_loop({a.fileno(): ta.fileno()}, own6, MAC)
    pid = start_worker(loop, a.fileno(), xl, counters.worker(0))
    try:
        for p in pkts:
            b.send(bytes(10) + p)
        want = [
            (1, bytes(10) + ETH_IPV6 + x) if x[0] >> 4 == 6 else (0, bytes(10) + x)
            for x in expected(pkts, own6)
        ]
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 5
        while len(got) < len(want) and time.monotonic() < deadline:
            got += recv_all(b, tb)
            time.sleep(0.01)
        assert len(got) == len(want)  # two queues, each in order:
        assert [x for x in got if x[0] == 0] == [x for x in want if x[0] == 0]
        assert [x for x in got if x[0] == 1] == [x for x in want if x[0] == 1]
    finally:
        stop_worker(pid)
    total, extra = counters.total()
    assert extra["neighbor_advertisements"] == 1 and extra["worker_errors"] == 0
    assert counters.worker(0)[W_NA] == 1 and extra["poll_spin_us"] > 0
    assert sum(total.packets) >= len(pkts) - 1
    for s in (a, b, ta, tb):
        s.close()


def test_clat_loop_uses_the_c_loop() -> None:
    """``clat_loop`` with its raw socket on a veth uplink, in a namespace of its own."""

    def body() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        counters = SharedCounters(1)
        xl = Translator(TranslatorConfig(**CONFIGS["properties"]), stats=counters.stats(0))
        assert xl.accel is not None
        pkts, own6 = burst()
        cap = capture()
        want = expected(pkts, own6)
        pid = start_worker(clat_loop(UPLINK, own6, MAC), a.fileno(), xl, counters.worker(0))
        try:
            for p in pkts:
                b.send(p)
            want6 = [x for x in want if x[0] >> 4 == 6]
            assert captured(cap, len(want6)) == want6
            b.settimeout(2)
            want4 = [x for x in want if x[0] >> 4 == 4]
            assert [b.recv(70000) for _ in want4] == want4
        finally:
            stop_worker(pid)
        _, extra = counters.total()
        assert extra["neighbor_advertisements"] == 1 and extra["worker_errors"] == 0
        assert extra["poll_spin_us"] > 0

    in_netns(body)
