"""The data plane: one worker process per TUN queue running the SIIT core.

Theory of operation
-------------------
The supervisor opens every queue of the TUN device, then forks one worker per
queue. A worker owns one queue fd and loops ``readv -> translate_into ->
write`` on one preallocated buffer (the packet is read at offset 20, or 30 with
a 10-byte ``virtio_net_hdr`` before it, so either translation fits in place).

Counters live in one anonymous shared mapping: each worker has a slot of
``Stats.SIZE + len(WORKER_COUNTERS)`` 64-bit integers and its translator counts
straight into it, so the supervisor (and the Prometheus collector in it) adds
up all workers at any moment, and a restarted worker keeps counting where its
predecessor stopped.

A worker that dies is restarted (counted, logged). SIGTERM/SIGINT stop the
workers; SIGHUP hands them a new configuration by replacing them one at a
time. A replacement loses no packet: the new worker is forked on the same
queue fd *before* the old one is told to stop (two readers of one queue: each
packet goes to one of them), and a worker stops only between packets — its
SIGTERM handler raises at once only when the signal interrupted a blocking
``readv`` (nothing read yet); otherwise it swaps the read buffer for a
read-only one, so the packet in hand is written and the *next* ``readv``
fails before reading anything (see ``stop_between_packets``). The hot loops
carry no flag test for this.

Each worker's translator gets its own slice of the IPv4 Identification space
(RFC 6864 §4.1: no two workers emit the same ID; a replacement takes the other
half of its worker's slice, so it never overlaps the worker it replaces) with a
random start, an equal share of the global ICMP-error allowance, and the TUN
MTU, which the supervisor updates at run time through shared memory and
SIGUSR1.

The design: docs/architecture.md §2.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import signal
import sys
import time
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass
from types import FrameType
from typing import Protocol, cast

from ..linux.tun import Tun
from ..siit import accel
from ..siit.translator import Translator
from ..siit.verdict import Stats
from .worker_loops import (
    LOOP,
    NO_POLL,
    WORKER_COUNTERS,
    Poll,
    WorkerLoop,
    run_plain,
    run_vnet,
    stop_between_packets,
)

log = logging.getLogger("v6mostly.dataplane")


class SharedCounters:
    """Counter slots in anonymous shared memory, inherited by forked workers.

    After the slots, one control word: the TUN MTU the workers should use.
    ``ipv6_extra``: the IPv6 next hop's MTU is the TUN's plus this (a CLAT: its TUN
    carries IPv4 with an MTU 20 below the uplink's IPv6 MTU; a PLAT/SIIT: 0, the TUN
    is the next hop of both sides).
    """

    def __init__(self, slots: int, ipv6_extra: int = 0) -> None:
        self.slots = slots
        self.ipv6_extra = ipv6_extra
        self.width = Stats.SIZE + len(WORKER_COUNTERS)
        self._mm = mmap.mmap(-1, 8 * (self.width * slots + 1))
        self._view = memoryview(self._mm).cast("Q")

    @property
    def link_mtu(self) -> int:
        """The TUN MTU (0: not set); written by the supervisor, read by workers on SIGUSR1."""
        return int(self._view[self.width * self.slots])

    @link_mtu.setter
    def link_mtu(self, value: int) -> None:
        self._view[self.width * self.slots] = value

    def slot(self, i: int) -> memoryview:
        return self._view[i * self.width : (i + 1) * self.width]

    def stats(self, i: int) -> Stats:
        return Stats(cast(MutableSequence[int], self.slot(i)[: Stats.SIZE]))

    def worker(self, i: int) -> memoryview:
        return self.slot(i)[Stats.SIZE :]

    def total(self) -> tuple[Stats, dict[str, int]]:
        st = Stats()
        extra = dict.fromkeys(WORKER_COUNTERS, 0)
        for i in range(self.slots):
            st.merge(self.stats(i))
            w = self.worker(i)
            for j, name in enumerate(WORKER_COUNTERS):
                extra[name] += w[j]
        return st, extra


def _follow_mtu(
    xl: Translator, counters: SharedCounters
) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        apply_link_mtu(xl, counters.link_mtu, counters.ipv6_extra)

    return handler


def apply_link_mtu(xl: Translator, mtu: int, ipv6_extra: int = 0) -> None:
    """The TUN's MTU is the next-hop MTU of both sides (RFC 7915 §4.2, §5.2), the
    IPv6 one ``ipv6_extra`` more (a CLAT); an IPv6 link cannot go below 1280 (the
    kernel turns IPv6 off on it then)."""
    if mtu:
        xl.set_link_mtu(max(mtu + ipv6_extra, 1280), max(min(mtu, 65535), 68))


@dataclass
class WorkerSpec:
    index: int
    fd: int
    pid: int = 0
    started: float = 0.0
    #: Spawns of this worker so far: its IPv4 ID slice alternates with the parity.
    generation: int = 0


class TranslatorFactory(Protocol):
    def __call__(self, stats: Stats, index: int, count: int, generation: int) -> Translator: ...


def _worker_entry(
    fd: int,
    vnet_mode: bool,
    xl: Translator,
    w: memoryview,
    counters: SharedCounters,
    loop: WorkerLoop | None = None,
    poll: Poll = NO_POLL,
) -> None:
    signal.signal(signal.SIGTERM, stop_between_packets)
    signal.signal(signal.SIGINT, stop_between_packets)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGIO, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _follow_mtu(xl, counters))
    apply_link_mtu(xl, counters.link_mtu, counters.ipv6_extra)
    poll.apply(xl, w)
    signal.pthread_sigmask(
        signal.SIG_UNBLOCK,
        {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1},
    )
    try:
        if loop is not None:
            loop(fd, xl, w)
        elif vnet_mode:
            run_vnet(fd, xl, w)
        else:
            run_plain(fd, xl, w)
    except BufferError:
        if not LOOP.stopping:
            raise
        # the stop handler's read-only buffer: stopped between packets


class Dataplane:
    """Forks, watches and restarts the workers of one TUN device."""

    def __init__(
        self,
        tun: Tun,
        make_translator: TranslatorFactory,
        counters: SharedCounters,
        loop: WorkerLoop | None = None,
        poll: Poll = NO_POLL,
    ) -> None:
        self.loop = loop
        self.poll = poll
        self.tun = tun
        self.make_translator = make_translator
        self.counters = counters
        self.workers = [WorkerSpec(i, fd) for i, fd in enumerate(tun.fds)]
        self.restarts = 0
        self.stopping = False

    def _spawn(self, ws: WorkerSpec) -> None:
        xl = self.make_translator(
            self.counters.stats(ws.index), ws.index, len(self.workers), ws.generation
        )
        ws.generation += 1
        w = self.counters.worker(ws.index)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _worker_entry(ws.fd, self.tun.vnet, xl, w, self.counters, self.loop, self.poll)
            except SystemExit:
                code = 0
            except BaseException:
                log.exception("worker %d crashed", ws.index)
                code = 1
            os._exit(code)
        ws.pid = pid
        ws.started = time.monotonic()
        log.debug("worker %d started, pid %d", ws.index, pid)

    def start(self) -> None:
        # One line per data plane: the C accelerator in use, switched off or not built.
        status = accel.status()
        (log.info if accel.available() else log.warning)("%s", status)
        for ws in self.workers:
            self._spawn(ws)

    def reap(self) -> None:
        """Collect dead workers and restart them (unless stopping)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for ws in self.workers:
                if ws.pid == pid:
                    ws.pid = 0
                    if self.stopping:
                        break
                    self.restarts += 1
                    how = (
                        f"signal {os.WTERMSIG(status)}"
                        if os.WIFSIGNALED(status)
                        else f"exit {os.WEXITSTATUS(status)}"
                    )
                    log.warning("worker %d (pid %d) died (%s); restarting", ws.index, pid, how)
                    if time.monotonic() - ws.started < 1.0:
                        time.sleep(0.5)  # do not spin on a worker that dies at once
                    self._spawn(ws)
                    break

    def replace_all(self, make_translator: TranslatorFactory) -> None:
        """Swap in a new configuration, one worker at a time, without losing a packet:
        the new worker reads the queue before the old one stops (between packets)."""
        self.make_translator = make_translator
        for ws in self.workers:
            old = ws.pid
            self._spawn(ws)
            if old:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old, signal.SIGTERM)
                if _wait_pid(old, 2.0) is None:
                    log.warning("worker %d (pid %d) did not stop in 2 s: killed", ws.index, old)

    def set_link_mtu(self, mtu: int) -> None:
        """Hand a new TUN MTU to the running workers (and to the ones spawned later)."""
        self.counters.link_mtu = mtu
        for ws in self.workers:
            if ws.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ws.pid, signal.SIGUSR1)

    def stop(self, timeout: float = 3.0) -> None:
        self.stopping = True
        for ws in self.workers:
            if ws.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ws.pid, signal.SIGTERM)
        for ws in self.workers:
            if ws.pid:
                _wait_pid(ws.pid, timeout)
                ws.pid = 0

    def alive(self) -> int:
        return sum(1 for ws in self.workers if ws.pid)


#: How often a worker told to stop is told again (``_wait_pid``).
RESIGNAL_S = 0.05


def _wait_pid(pid: int, timeout: float) -> int | None:
    """Wait for ``pid``, already sent SIGTERM, to exit; SIGKILL it after ``timeout``.
    Returns its wait status (0 as well when it was reaped elsewhere), or None: killed.

    SIGTERM is sent again every ``RESIGNAL_S``. A signal that lands after the worker's
    last check for signals and before its blocking read starts is handled only when that
    read returns, so a worker on an idle queue would sleep through it: the next one
    interrupts the read (EINTR) and the worker leaves (``stop_between_packets``; once
    asked, it only leaves, whatever the number of signals)."""
    start = time.monotonic()
    resent = start
    while (now := time.monotonic()) < start + timeout:
        try:
            p, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if p:
            return status
        if now - resent >= RESIGNAL_S:
            resent = now
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        time.sleep(0.002)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    return None
