"""The adaptive poll and the blocking first read of the C loop (``Accel.set_poll``, ``[tun] poll_us`` / ``poll_cpu``):
after a packet, a packet that arrives within the window is taken without a blocking read,
and counted; the allowance per second bounds the time spent polling."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import raw

from tests.unit.test_accel_differential import C4, S4, loop_setup
from v6mostly.services.worker_loops import (
    LOOP,
    W_POLL_HITS,
    W_POLL_US,
    W_WERR,
    Poll,
    stop_between_packets,
)
from v6mostly.siit import accel

pytestmark = pytest.mark.skipif(not accel.available(), reason="C accelerator not in use")

PKT = raw(IP(src=S4, dst=C4) / UDP(sport=53, dport=99) / bytes(36))


def _send_later(sock: object, delay: float) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), sock.send(PKT)))  # type: ignore[attr-defined]
    t.start()
    return t


def test_poll_takes_a_packet_that_arrives_within_the_window() -> None:
    a, b, xl, ref, w, buf, token = loop_setup()
    assert xl.accel is not None
    Poll(us=1_000_000, cpu_percent=100).apply(xl, w)  # 1 s window, no allowance limit
    t = _send_later(b, 0.01)
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 1) == -2  # budget: 1 packet
    t.join()
    assert b.recv(70000) == ref.translate(PKT).packets[0]
    assert w[W_POLL_HITS] == 1 and w[W_POLL_US] > 0
    a.close()
    b.close()


def test_no_allowance_no_poll() -> None:
    a, b, xl, _ref, w, buf, token = loop_setup()
    assert xl.accel is not None
    xl.accel.set_poll(10**9, 0, W_POLL_HITS, W_POLL_US)  # a window, but 0 ns per second
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 256) == -1
    assert w[W_POLL_HITS] == 0
    Poll().apply(xl, w)  # poll_us = 0: set_poll is not even called
    a.close()
    b.close()


def test_set_poll_checks_its_arguments() -> None:
    a, b, xl, _ref, w, buf, token = loop_setup()
    assert xl.accel is not None
    with pytest.raises(ValueError, match="negative"):
        xl.accel.set_poll(-1, 0, 0, 0)
    xl.accel.set_poll(1000, 1000, 10_000, 10_001)  # counter indexes past the worker's
    with pytest.raises(ValueError, match="worker counters"):
        xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 1)
    a.close()
    b.close()


# -- the blocking first read (``block``): the packet that wakes a worker is sent from C ----


def test_blocking_first_read_translates_the_waking_packet() -> None:
    a, b, xl, ref, w, buf, token = loop_setup()
    assert xl.accel is not None
    t = _send_later(b, 0.05)
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 256, -1, None, True) == -1
    t.join()
    assert b.recv(70000) == ref.translate(PKT).packets[0]
    a.close()
    b.close()


def test_stop_while_blocked_leaves_at_once_and_otherwise_after_the_packet() -> None:
    """SIGTERM's handler (stop_between_packets) interrupting the C loop's blocking read
    raises SystemExit there, as from os.readv; a stop between calls swaps the buffer and
    the next call raises BufferError before reading."""
    a, b, xl, _ref, w, buf, token = loop_setup()
    assert xl.accel is not None
    rd = [token]
    old = signal.signal(signal.SIGALRM, stop_between_packets)
    try:
        LOOP.enter(rd)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(SystemExit):
            xl.accel.run(a.fileno(), buf, rd[0], w, W_WERR, False, 256, -1, None, True)
        LOOP.enter(rd)
        stop_between_packets(signal.SIGTERM, None)  # between calls: not in a read
        assert LOOP.stopping and rd[0] is not token
        b.send(PKT)
        with pytest.raises(BufferError):
            xl.accel.run(a.fileno(), buf, rd[0], w, W_WERR, False, 256, -1, None, True)
        assert a.recv(70000) == PKT  # not read: still queued
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        LOOP.rd, LOOP.stopping = None, False
        a.close()
        b.close()
