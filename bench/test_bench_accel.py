"""Per-packet time of 64-byte UDP both ways: the pure-Python core against the C accelerator
(issue 13). Run with `make bench` or `python -m pytest bench/test_bench_accel.py`.

* ``test_translate``: one in-place translation (``translate_python`` against the C
  ``translate_into``), the packet copied into the buffer first as a read does.
* ``test_loop`` (and ``test_loop_vnet_partial``, offload mode: a virtio-net header with a
  partial checksum, as a local sender's packets come): the worker's loop around it on a datagram socket pair standing in for a
  TUN queue (one packet per read and write): a burst of ``BURST`` packets queued, then
  read -> translate -> write for each, in Python (``os.readv``/``os.write`` as in
  ``run_plain``) or in C (``FastPath.run``, GIL released). The time is for the burst;
  the per-packet figure is the mean divided by ``BURST`` (printed in the test name's
  ``extra_info``). The queueing side (``send``) is outside the timing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from scapy.all import IP, UDP, IPv6, Raw, raw

from v6mostly.services.worker_loops import BUFSIZE, W_WERR, WORKER_COUNTERS, handle_vnet_packet
from v6mostly.siit import accel
from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig
from v6mostly.siit.verdict import Stats
from v6mostly.wire import vnet
from v6mostly.wire.checksum import pseudo_sum_v4, pseudo_sum_v6

pytestmark = pytest.mark.skipif(not accel.available(), reason=accel.status())

CONFIGS = {
    "wkp": TranslatorConfig(pool6="64:ff9b::/96", hairpinning=False),
    "eam": TranslatorConfig(
        pool6="2001:db8:46::/96", eam=[("2001:db8:64::/120", "203.0.113.0/24")], hairpinning=False
    ),
}
PACKETS = {
    ("wkp", "4to6"): IP(src="8.8.8.8", dst="9.9.9.9") / UDP(sport=53, dport=5353) / Raw(bytes(36)),
    ("wkp", "6to4"): IPv6(src="64:ff9b::909:909", dst="64:ff9b::808:808")
    / UDP(sport=5353, dport=53)
    / Raw(bytes(16)),
    ("eam", "4to6"): IP(src="198.51.100.10", dst="203.0.113.16")
    / UDP(sport=53, dport=5353)
    / Raw(bytes(36)),
    ("eam", "6to4"): IPv6(src="2001:db8:64::10", dst="2001:db8:46::c633:640a")
    / UDP(sport=5353, dport=53)
    / Raw(bytes(16)),
}
BURST = 64
CASES = [(c, d) for c, d in PACKETS]


def _translator(cfg: str) -> Translator:
    return Translator(CONFIGS[cfg], stats=Stats(memoryview(bytearray(8 * Stats.SIZE)).cast("Q")))


@pytest.mark.parametrize("impl", ["python", "c"])
@pytest.mark.parametrize(("cfg", "way"), CASES)
def test_translate(benchmark: Any, cfg: str, way: str, impl: str) -> None:
    xl = _translator(cfg)
    assert xl.accel is not None
    tr = xl.accel.translate_into if impl == "c" else xl.translate_python
    pkt = raw(PACKETS[(cfg, way)])
    assert len(pkt) == 64
    buf = bytearray(2048)
    end = HEADROOM + len(pkt)

    def one() -> None:
        buf[HEADROOM:end] = pkt
        tr(buf, HEADROOM, end)

    benchmark(one)
    assert sum(xl.stats.drops) == 0 and sum(xl.stats.packets) > 0


def _python_loop(xl: Translator, fd: int, buf: bytearray) -> Callable[[], None]:
    mv = memoryview(buf)
    rd = [mv[HEADROOM:]]
    readv, write, tr = os.readv, os.write, xl.translate_python

    def burst() -> None:
        for _ in range(BURST):
            n = readv(fd, rd)
            s, e = tr(buf, HEADROOM, HEADROOM + n)
            write(fd, mv[s:e])

    return burst


def _python_vnet_loop(xl: Translator, fd: int, buf: bytearray) -> Callable[[], None]:
    rd = [memoryview(buf)[HEADROOM:]]
    w = [0] * len(WORKER_COUNTERS)
    readv, write = os.readv, os.write

    def burst() -> None:
        for _ in range(BURST):
            n = readv(fd, rd)
            for f in handle_vnet_packet(xl, buf, n, w):
                write(fd, f)

    return burst


def _partial_frame(pkt: bytes) -> bytes:
    """The packet as the kernel hands a local sender's over: NEEDS_CSUM, pseudo-header sum."""
    b = bytearray(pkt)
    if b[0] >> 4 == 4:
        s, l3 = pseudo_sum_v4(bytes(b[12:16]), bytes(b[16:20]), 17, len(b) - 20), 20
    else:
        s, l3 = pseudo_sum_v6(bytes(b[8:24]), bytes(b[24:40]), 17, len(b) - 40), 40
    b[l3 + 6 : l3 + 8] = s.to_bytes(2, "big")
    return vnet.VnetHeader(vnet.F_NEEDS_CSUM, 0, 0, 0, l3, 6).to_wire() + bytes(b)


def _c_loop(xl: Translator, fd: int, buf: bytearray, vnet_mode: bool = False) -> Callable[[], None]:
    assert xl.accel is not None
    run = xl.accel.run
    token = memoryview(buf)[HEADROOM:]
    w = memoryview(bytearray(8 * len(WORKER_COUNTERS))).cast("Q")

    def burst() -> None:
        r = run(fd, buf, token, w, W_WERR, vnet_mode, BURST + 1)
        assert r == -1

    return burst


def _loop(benchmark: Any, cfg: str, way: str, impl: str, vnet_mode: bool) -> None:
    xl = _translator(cfg)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pkt = raw(PACKETS[(cfg, way)])
    buf = bytearray(BUFSIZE)
    if impl == "c":
        burst = _c_loop(xl, a.fileno(), buf, vnet_mode)
    else:
        burst = (_python_vnet_loop if vnet_mode else _python_loop)(xl, a.fileno(), buf)
    if vnet_mode:
        pkt = _partial_frame(pkt)

    def fill() -> None:
        while True:  # what the last burst wrote
            try:
                b.recv(70000, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
        for _ in range(BURST):
            b.send(pkt)

    benchmark.pedantic(burst, setup=fill, rounds=300, warmup_rounds=10)
    benchmark.extra_info["ns_per_packet"] = round(benchmark.stats.stats.mean / BURST * 1e9)
    assert xl.stats.packets[1 if way == "4to6" else 5] >= 300 * BURST
    a.close()
    b.close()


@pytest.mark.parametrize("impl", ["python", "c"])
@pytest.mark.parametrize(("cfg", "way"), CASES)
def test_loop(benchmark: Any, cfg: str, way: str, impl: str) -> None:
    _loop(benchmark, cfg, way, impl, False)


@pytest.mark.parametrize("impl", ["python", "c"])
@pytest.mark.parametrize("way", ["4to6", "6to4"])
def test_loop_vnet_partial(benchmark: Any, way: str, impl: str) -> None:
    _loop(benchmark, "wkp", way, impl, True)
