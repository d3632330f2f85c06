"""What a data-plane worker runs: the packet loops, and stopping between packets.

``run_plain`` and ``run_vnet`` (the TUN's plain and offload modes) read a
packet into one preallocated buffer, translate it in place and write it back;
the CLAT's loops (``clat_loops``) do the same, sending IPv6 out of the uplink. The
bodies are deliberately inlined (a shared call per packet costs ~54 ns here).
A worker told to stop (SIGTERM) finishes the packet in hand first (see
``stop_between_packets``). The supervisor (``dataplane``) forks, counts and
restarts the workers.

The design: docs/architecture.md §2.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from ..siit.translator import HEADROOM, Translator
from ..siit.verdict import SLOW
from ..wire import vnet

#: Per-worker counters beyond the translator's own.
WORKER_COUNTERS = (
    "gso_superpackets",  # super-packets read (gso_type != NONE)
    "gso_segments",  # segments those super-packets stand for
    "gso_software_segmented",  # super-packets cut into packets in software
    "checksums_finished",  # NEEDS_CSUM checksums completed in software
    "tun_write_errors",
    "tun_read_errors",
    "worker_errors",  # unexpected exceptions while handling a packet (packet dropped)
    "vnet_errors",  # inconsistent virtio_net_hdr (packet dropped)
    "neighbor_advertisements",  # CLAT: unicast NS for its address answered
    "poll_hits",  # packets the adaptive poll found (no wake-up for them), C loop only
    "poll_spin_us",  # microseconds spent in the adaptive poll
)
W_GSO, W_SEGS, W_SWSEG, W_CSUM, W_WERR, W_RERR, W_EXC, W_VNET, W_NA, W_POLL_HITS, W_POLL_US = range(
    len(WORKER_COUNTERS)
)

BUFSIZE = 65536 + 256

#: A worker's packet loop: (queue fd, translator, worker counters); returns never.
WorkerLoop = Callable[[int, Translator, memoryview], None]


def _write_all(fd: int, data: bytes | bytearray | memoryview, w: memoryview) -> None:
    try:
        os.write(fd, data)
    except OSError:
        w[W_WERR] += 1


def _read_failed(e: OSError, w: memoryview) -> None:
    """A failed TUN read (off the hot path): retry on EAGAIN/EINTR, count the rest;
    a descriptor that is gone ends the worker (the supervisor restarts it)."""
    if e.errno in (errno.EAGAIN, errno.EINTR):
        return
    w[W_RERR] += 1
    if e.errno in (errno.EBADF, errno.EBADFD):
        raise e


def run_plain(fd: int, xl: Translator, w: memoryview) -> None:
    """The worker loop without vnet headers. Returns never; exits by exception.

    With the C accelerator (``siit/accel.py``), ``FastPath.run`` reads, translates and
    writes in C, GIL released, until the queue is empty (-1), a packet needs Python (its
    length) or its budget is used up (-2). After "empty" its first read is the blocking
    one (the packet that wakes the worker is sent before any Python runs); after a packet
    Python handled, no read of it blocks. ``stop_between_packets`` works as without it:
    interrupted in the blocking read, the C loop runs the handlers with the read buffer
    held, as ``os.readv`` does, and it raises BufferError on the stop handler's read-only
    buffer.
    """
    buf = bytearray(BUFSIZE)
    mv = memoryview(buf)
    start = HEADROOM
    rd = [mv[start:]]
    LOOP.enter(rd)
    c_read = c_reader(xl, w, fd, buf, rd, False)
    readv = os.readv
    write = os.write
    translate_into = xl.translate_into
    pending = xl.pending
    # Without the C loop ``n`` is always _EMPTY here: one blocking read per packet; with
    # it, _EMPTY makes the C loop's first read the blocking one.
    n = _EMPTY
    while True:
        if n < 0 and c_read is not None:
            n = c_read(n)
            continue
        if n == _EMPTY:
            try:
                n = readv(fd, rd)
            except OSError as e:
                _read_failed(e, w)
                continue
        try:
            s, e2 = translate_into(buf, start, start + n)
            if s >= 0:
                try:
                    write(fd, mv[s:e2])
                except OSError:
                    w[W_WERR] += 1
            elif s == SLOW:
                for p in pending:
                    _write_all(fd, p, w)
                pending.clear()
        except Exception:  # a packet must never take the worker down
            w[W_EXC] += 1
            pending.clear()
        n = _EMPTY if c_read is None else _AGAIN


#: Packets the C loop handles before it lets Python run (signal handlers) again.
C_BUDGET = 256
#: ``FastPath.run`` results: the queue is empty; call again.
_EMPTY = -1
_AGAIN = -2


@dataclass(frozen=True)
class Poll:
    """The adaptive poll of the C loop (``[tun] poll_us`` / ``poll_cpu``): after a packet,
    keep reading without blocking for up to ``us`` microseconds (the answer of a ping or
    the next packet of a burst is then taken without a wake-up), spending at most
    ``cpu_percent`` of a CPU per worker on it, counted per second."""

    us: int = 0
    cpu_percent: int = 0

    def apply(self, xl: Translator, w: memoryview) -> None:
        if self.us and _c_loop(xl, w) and xl.accel is not None:
            xl.accel.set_poll(self.us * 1000, self.cpu_percent * 10_000_000, W_POLL_HITS, W_POLL_US)


#: No adaptive poll (the default of ``Dataplane``).
NO_POLL = Poll()


def _c_loop(xl: Translator, w: memoryview) -> bool:
    """Whether the C loop (``siit/accel.py``) can run this worker: the extension is in use
    and the counters are shared memory (it counts with the GIL released)."""
    return (
        xl.accel is not None
        and isinstance(xl.c_packets, memoryview)
        and isinstance(xl.c_octets, memoryview)
        and isinstance(w, memoryview)
    )


def c_reader(
    xl: Translator,
    w: memoryview,
    fd: int,
    buf: bytearray,
    rd: list[Any],
    vnet_mode: bool,
    out6: int = -1,
    eth: bytes | None = None,
) -> Callable[[int], int] | None:
    """The C loop as a worker's reader, or None (pure Python: one ``readv`` per packet).

    ``read(n)``, with the previous result ``n`` (_EMPTY: its first read is the blocking
    one; _AGAIN: none blocks), returns the next: a packet for Python (its length),
    _EMPTY or _AGAIN. A failed read is counted (``_read_failed``) and reads as _EMPTY.
    ``out6``/``eth``: where IPv6 results go (the CLAT; ``FastPath.run``). The C loop is
    also told where to count the GSO super-packets it translates."""
    if not _c_loop(xl, w) or xl.accel is None:
        return None
    run = xl.accel.run
    xl.accel.set_gso_counters(W_GSO, W_SEGS)

    def read(n: int) -> int:
        try:
            return run(fd, buf, rd[0], w, W_WERR, vnet_mode, C_BUDGET, out6, eth, n == _EMPTY)
        except OSError as e:
            _read_failed(e, w)
            return _EMPTY

    return read


_ZERO_HDR = bytes(vnet.VNET_HDR_LEN)


def handle_vnet_packet(
    xl: Translator, buf: bytearray, n: int, w: MutableSequence[int] | memoryview
) -> list[bytes | bytearray | memoryview]:
    """Translate one packet read with its vnet header at ``buf[20:30]``.

    Returns the frames to write (each starting with a vnet header). Pure apart
    from counting; the worker loop and the tests share it.
    """
    H = vnet.VNET_HDR_LEN
    hpos = HEADROOM
    start = hpos + H
    end = hpos + n
    if n < H + 1:
        return []
    fields = _unpack_hdr(buf, hpos)
    if fields[1]:  # a GSO super-packet: count it and the segments it carries
        hl, gso_size = fields[2], fields[3]
        w[W_GSO] += 1
        if gso_size:
            w[W_SEGS] += max(1, -(-(end - start - hl) // gso_size))
        # The kernel cuts it into gso_size segments after we write it: the
        # translator's next-hop MTU checks (Packet Too Big) are not for it.
        xl.gso = True
    try:
        fast = _vnet_fast(xl, buf, n, fields)
        if fast is not None:
            return fast
        hdr = vnet.VnetHeader(*fields)
        out: list[bytes | bytearray | memoryview] = []
        try:
            if hdr.flags & vnet.F_NEEDS_CSUM and not _fast_ok(xl, buf, start, end, fields):
                if hdr.gso_type != vnet.GSO_NONE:
                    w[W_SWSEG] += 1
                    xl.gso = False  # the segments are ordinary packets
                    for seg in vnet.segment(hdr, buf, start, end):
                        out.extend(_translate_plain(xl, seg))
                    return out
                w[W_CSUM] += 1
                vnet.finish_checksum(hdr, buf, start, end)
                hdr = vnet.VnetHeader()
            elif hdr.gso_type != vnet.GSO_NONE and not hdr.flags & vnet.F_NEEDS_CSUM:
                raise vnet.VnetError("GSO packet without NEEDS_CSUM")
        except vnet.VnetError:
            w[W_VNET] += 1
            return []
        s, e = xl.translate_into(buf, start, end)
        if s >= 0:
            try:
                nh = vnet.after_translation(hdr, buf, s, e)
            except vnet.VnetError:
                w[W_VNET] += 1
                return []
            vnet.HDR.pack_into(
                buf,
                s - H,
                nh.flags,
                nh.gso_type,
                nh.hdr_len,
                nh.gso_size,
                nh.csum_start,
                nh.csum_offset,
            )
            out.append(memoryview(buf)[s - H : e])
        elif s == SLOW:
            out.extend(_ZERO_HDR + p for p in xl.pending)
            xl.pending.clear()
        return out
    finally:
        if fields[1]:
            xl.gso = False


_unpack_hdr = vnet.HDR.unpack_from
_pack_hdr = vnet.HDR.pack_into


def _vnet_fast(
    xl: Translator, buf: bytearray, n: int, fields: tuple[int, int, int, int, int, int]
) -> list[bytes | bytearray | memoryview] | None:
    """The common partial-checksum case without allocations (``None``: not applicable).

    The field holds the pseudo-header sum P, not a checksum. Complementing it
    first makes the translator's RFC 1624 update (``~(~C + d)``) yield ``~(P + d)``;
    complementing the result gives ``P + d``: the new pseudo-header sum, as the
    IPv4 and IPv6 pseudo-headers add the same length and protocol words.
    """
    start = HEADROOM + 10
    end = HEADROOM + n
    flags, gso_type, hdr_len, gso_size, cs, co = fields
    if flags != vnet.F_NEEDS_CSUM or n < 50:
        return None
    v = buf[start] >> 4
    if v == 4:
        l3 = (buf[start] & 15) << 2
        proto = buf[start + 9]
        if buf[start + 8] <= 1 or not (
            buf[start + 6] & 0x40 or _seg_len(buf, start, end, fields) + 20 <= xl.frag_mtu
        ):
            return None
        out_l3 = 40
    elif v == 6:
        l3 = 40
        proto = buf[start + 6]
        if buf[start + 7] <= 1 or end - start - 20 > 65535:
            return None
        out_l3 = 20
    else:
        return None
    if cs != l3 or not ((proto == 6 and co == 16) or (proto == 17 and co == 6)):
        return None
    pos = start + l3 + co
    if pos + 2 > end:
        return None
    c = (buf[pos] << 8 | buf[pos + 1]) ^ 0xFFFF
    if c == 0:
        return None  # would read as "no UDP checksum": take the general path
    buf[pos] = c >> 8
    buf[pos + 1] = c & 0xFF
    s, e = xl.translate_into(buf, start, end)
    if s < 0:
        if s == SLOW:
            out: list[bytes | bytearray | memoryview] = [_ZERO_HDR + p for p in xl.pending]
            xl.pending.clear()
            return out
        return []
    if buf[s] >> 4 == 6 and buf[s + 6] != proto:
        out_l3 = 48  # a Fragment Header was added
    p2 = s + out_l3 + co
    buf[p2] ^= 0xFF
    buf[p2 + 1] ^= 0xFF
    if gso_type:
        base = gso_type & 0x7F
        if base == vnet.GSO_TCPV4:
            gso_type = (gso_type & vnet.GSO_ECN) | vnet.GSO_TCPV6
        elif base == vnet.GSO_TCPV6:
            gso_type = (gso_type & vnet.GSO_ECN) | vnet.GSO_TCPV4
    if hdr_len:
        hdr_len += out_l3 - l3
    _pack_hdr(buf, s - 10, flags, gso_type, hdr_len, gso_size, out_l3, co)
    return [memoryview(buf)[s - 10 : e]]


_GSO_KNOWN = (vnet.GSO_TCPV4, vnet.GSO_TCPV6, vnet.GSO_UDP_L4)


def _seg_len(
    buf: bytearray, start: int, end: int, fields: tuple[int, int, int, int, int, int]
) -> int:
    """The largest IP packet this is, or (a GSO super-packet) will be cut into: its
    L3 and L4 headers plus ``gso_size`` (``csum_start`` is where L4 starts)."""
    gso_type, gso_size, l4 = fields[1] & 0x7F, fields[3], fields[4]
    if gso_type not in _GSO_KNOWN or not gso_size or start + l4 + 13 > end:
        return end - start  # not a super-packet, or one the general path will refuse
    l4_len = (buf[start + l4 + 12] >> 4) * 4 if gso_type != vnet.GSO_UDP_L4 else 8
    return min(end - start, l4 + l4_len + gso_size)


def _fast_ok(
    xl: Translator,
    buf: bytearray,
    start: int,
    end: int,
    fields: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0),
) -> bool:
    """Can this partial-checksum packet be translated as one packet?"""
    v = buf[start] >> 4
    if v == 4:
        if end - start < 20:
            return False
        if buf[start + 8] <= 1 or buf[start + 9] not in (6, 17):
            return False
        # DF=0 may be fragmented by the translator (RFC 7915 §4): a super-packet goes
        # whole only when each of its segments fits the lowest IPv6 MTU.
        return bool(buf[start + 6] & 0x40) or _seg_len(buf, start, end, fields) + 20 <= (
            xl.frag_mtu
        )
    if v == 6:
        if end - start < 40 or buf[start + 7] <= 1 or buf[start + 6] not in (6, 17):
            return False
        return end - start - 20 <= 65535
    return False


def _translate_plain(xl: Translator, pkt: bytearray) -> list[bytes | bytearray | memoryview]:
    buf = bytearray(HEADROOM + vnet.VNET_HDR_LEN) + pkt
    s, e = xl.translate_into(buf, HEADROOM + vnet.VNET_HDR_LEN, len(buf))
    if s >= 0:
        buf[s - vnet.VNET_HDR_LEN : s] = _ZERO_HDR
        return [memoryview(buf)[s - vnet.VNET_HDR_LEN : e]]
    if s == SLOW:
        out: list[bytes | bytearray | memoryview] = [_ZERO_HDR + p for p in xl.pending]
        xl.pending.clear()
        return out
    return []


def run_vnet(fd: int, xl: Translator, w: memoryview) -> None:
    """The worker loop with vnet headers (offload mode)."""
    buf = bytearray(BUFSIZE)
    mv = memoryview(buf)
    rd = [mv[HEADROOM:]]
    LOOP.enter(rd)
    c_read = c_reader(xl, w, fd, buf, rd, True)
    readv = os.readv
    write = os.write
    H = vnet.VNET_HDR_LEN
    zero = _ZERO_HDR
    translate_into = xl.translate_into
    pending = xl.pending
    start = HEADROOM + H
    # Without the C loop ``n`` is always _EMPTY here: one blocking read per packet; with
    # it, _EMPTY makes the C loop's first read the blocking one.
    n = _EMPTY
    while True:
        if n < 0 and c_read is not None:
            n = c_read(n)  # the C loop (see ``run_plain``)
            continue
        if n == _EMPTY:
            try:
                n = readv(fd, rd)
            except OSError as e:
                _read_failed(e, w)
                continue
        try:
            if buf[HEADROOM] == 0 and buf[HEADROOM + 1] == 0:
                # No offload on this packet: the plain fast path plus a zero header.
                s, e2 = translate_into(buf, start, HEADROOM + n)
                if s >= 0:
                    buf[s - H : s] = zero
                    try:
                        write(fd, mv[s - H : e2])
                    except OSError:
                        w[W_WERR] += 1
                elif s == SLOW:
                    for p in pending:
                        _write_all(fd, zero + p, w)
                    pending.clear()
            else:
                for frame in handle_vnet_packet(xl, buf, n, w):
                    _write_all(fd, frame, w)
        except Exception:  # a packet must never take the worker down
            w[W_EXC] += 1
            pending.clear()
        n = _EMPTY if c_read is None else _AGAIN


class _Loop:
    """What a worker's stop handler needs to know about the loop it interrupts."""

    def __init__(self) -> None:
        self.rd: list[Any] | None = None
        self.base = 0
        self.stopping = False

    def enter(self, rd: list[Any]) -> None:
        self.rd = rd
        self.base = self.refs()
        self.stopping = False

    def refs(self) -> int:
        assert self.rd is not None
        return sys.getrefcount(self.rd[0])

    def in_readv(self) -> bool:
        """True while ``os.readv`` holds the read buffer: the call is inside the kernel
        (a signal handler then runs only because the blocking read was interrupted,
        EINTR, before anything was read). ``os.readv`` holds a buffer export on the
        memoryview for exactly the duration of the call, one more reference to it."""
        return self.rd is not None and self.refs() > self.base


LOOP = _Loop()
#: A read-only buffer: ``os.readv`` refuses it (BufferError) before any syscall.
_STOP_BUFFER = b"\0"


def stop_between_packets(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGINT in a worker: stop without losing the packet in hand.

    Blocked in ``readv`` (nothing read): leave now. Anywhere else (a packet is
    being translated or written, or the loop is between calls): let it finish;
    the next ``readv`` raises BufferError on the read-only buffer instead of
    reading, and the worker exits cleanly (``_worker_entry``).
    """
    LOOP.stopping = True
    if LOOP.rd is None or LOOP.in_readv():
        raise SystemExit(0)
    LOOP.rd[0] = _STOP_BUFFER
