"""The CLAT's worker loops (RFC 6877): ``clat_loop`` (plain TUN, IPv6 out through a raw
socket on the uplink) and ``clat_vnet_loop`` (offload mode, IPv6 out through an egress TAP).

They are ``run_plain``/``run_vnet`` of :mod:`.worker_loops` with a second way out: IPv4
results go back into the TUN (delivered to the host), IPv6 results leave for the uplink. As
there, the bodies are inlined (no shared call per packet), the C loop (``FastPath.run`` with
``out6``, ``siit/_accel.c``) takes the common packets after each one Python handles, and a
worker told to stop finishes the packet in hand first (``stop_between_packets``). What the C
loop returns goes through the same Python path as a packet read here, including the answer
to a Neighbor Solicitation for the CLAT address.

The design: docs/architecture.md §2.
"""

from __future__ import annotations

import os
import socket

from ..siit.translator import HEADROOM, Translator
from ..siit.verdict import SLOW, Drop
from ..wire import vnet
from .worker_loops import (
    _AGAIN,
    _EMPTY,
    _ZERO_HDR,
    BUFSIZE,
    LOOP,
    W_EXC,
    W_NA,
    W_WERR,
    WorkerLoop,
    _read_failed,
    _unpack_hdr,
    c_reader,
    handle_vnet_packet,
)


def clat_loop(uplink: str, own6: bytes, mac: bytes) -> WorkerLoop:
    """The CLAT's worker loop (RFC 6877): IPv4 from the host's applications and the
    IPv6 the uplink's tc filter redirects both arrive on the TUN; IPv4 results go
    back into the TUN (delivered to the host), IPv6 results leave through a raw
    socket on the uplink, as locally generated packets (no forwarding on the host,
    the kernel routes and resolves neighbours). A unicast Neighbor Solicitation for
    the CLAT address ``own6`` (the translator drops it as an ICMPv6 type it does
    not translate, leaving the buffer as read) is answered as its owner would.

    With the C loop (see ``worker_loops.run_plain``), IPv6 results go out of the same
    raw socket from C (``out6``, ``eth`` None: a ``sendto`` to the packet's destination).
    """
    from ..clat.nd import answer_ns

    def run(fd: int, xl: Translator, w: memoryview) -> None:
        raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, uplink.encode())
        raw_fd = raw.fileno()
        sendto = raw.sendto
        ntop = socket.inet_ntop
        af6 = socket.AF_INET6
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        start = HEADROOM
        rd = [mv[start:]]
        LOOP.enter(rd)
        # The C loop: IPv4 results into the TUN, IPv6 ones out of the raw socket.
        c_read = c_reader(xl, w, fd, buf, rd, False, raw_fd)
        readv = os.readv
        write = os.write
        translate_into = xl.translate_into
        pending = xl.pending
        untranslatable_icmp = int(Drop.UNTRANSLATABLE_ICMP_TYPE)
        # Without the C loop ``n`` is always _EMPTY here: one blocking read per packet;
        # with it, _EMPTY makes the C loop's first read the blocking one.
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
                    outs: list[bytes | memoryview] = [mv[s:e2]]
                elif s == SLOW:
                    outs = list(pending)
                    pending.clear()
                else:
                    outs = []
                    if e2 == untranslatable_icmp:
                        na = answer_ns(bytes(buf[start : start + n]), own6, mac)
                        if na is not None:
                            w[W_NA] += 1
                            outs.append(na)
                for p in outs:
                    try:
                        if p[0] >> 4 == 6:
                            sendto(p, (ntop(af6, p[24:40]), 0))
                        else:
                            write(fd, p)
                    except OSError:
                        w[W_WERR] += 1
            except Exception:  # a packet must never take the worker down
                w[W_EXC] += 1
                pending.clear()
            n = _EMPTY if c_read is None else _AGAIN

    return run


#: The Ethernet header before IPv6 written into the CLAT's egress TAP. The tc
#: program there strips it and fills in the real one (``bpf_redirect_neigh``); the
#: destination only must not be multicast. (The C loop writes it too: ``eth``.)
ETH_IPV6 = bytes.fromhex("02000000000102000000000286dd")


def _tap_parts(frame: bytes | bytearray | memoryview) -> list[bytes | bytearray | memoryview]:
    """A translated frame (vnet header + IPv6) as TAP iovecs: header offsets count
    the Ethernet header on a TAP (``csum_start``, ``hdr_len``). ``siit/_accel.c``
    does the same for the frames the C loop writes there."""
    flags, gso_type, hdr_len, gso_size, cs, co = _unpack_hdr(frame, 0)
    if not flags and not gso_type:
        return [_ZERO_HDR, ETH_IPV6, frame[10:]]
    if flags & vnet.F_NEEDS_CSUM:
        cs += 14
    if hdr_len:
        hdr_len += 14
    return [vnet.HDR.pack(flags, gso_type, hdr_len, gso_size, cs, co), ETH_IPV6, frame[10:]]


def clat_vnet_loop(tap_for: dict[int, int], own6: bytes, mac: bytes) -> WorkerLoop:
    """The CLAT's worker loop with offloads (RFC 6877): like ``run_vnet``, but IPv6
    results go into the egress TAP queue paired with the TUN queue (``tap_for``),
    whose tc program sends them out of the uplink, super-packets whole
    (:mod:`v6mostly.linux.bpf`). IPv4 results go back into the TUN (delivered to
    the host). A unicast Neighbor Solicitation for ``own6`` is answered as its
    owner would (the translator drops it, leaving the buffer as read).

    With the C loop (see ``worker_loops.run_plain``), IPv6 results go into the same
    TAP queue from C (``out6``, ``eth`` ETH_IPV6: the frames ``_tap_parts`` gives).
    """
    from ..clat.nd import answer_ns

    def run(fd: int, xl: Translator, w: memoryview) -> None:
        tapfd = tap_for[fd]
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        rd = [mv[HEADROOM:]]
        LOOP.enter(rd)
        # The C loop: IPv6 results into the TAP queue.
        c_read = c_reader(xl, w, fd, buf, rd, True, tapfd, ETH_IPV6)
        readv = os.readv
        write = os.write
        writev = os.writev
        H = vnet.VNET_HDR_LEN
        zero = _ZERO_HDR
        zero_eth = _ZERO_HDR + ETH_IPV6
        translate_into = xl.translate_into
        pending = xl.pending
        start = HEADROOM + H

        def out(frame: bytes | bytearray | memoryview) -> None:
            try:
                if frame[H] >> 4 == 6:
                    writev(tapfd, _tap_parts(frame))
                else:
                    write(fd, frame)
            except OSError:
                w[W_WERR] += 1

        def dropped(end: int) -> None:
            # Off the hot path: is it a unicast NS for the CLAT address?
            if end - start >= 64 and buf[start] >> 4 == 6 and buf[start + 6] == 58:
                na = answer_ns(bytes(buf[start:end]), own6, mac)
                if na is not None:
                    w[W_NA] += 1
                    out(zero + na)

        # Without the C loop ``n`` is always _EMPTY here: one blocking read per packet;
        # with it, _EMPTY makes the C loop's first read the blocking one.
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
                if buf[HEADROOM] == 0 and buf[HEADROOM + 1] == 0:
                    s, e2 = translate_into(buf, start, HEADROOM + n)
                    if s >= 0:
                        try:
                            if buf[s] >> 4 == 6:
                                writev(tapfd, [zero_eth, mv[s:e2]])
                            else:
                                buf[s - H : s] = zero
                                write(fd, mv[s - H : e2])
                        except OSError:
                            w[W_WERR] += 1
                    elif s == SLOW:
                        for p in pending:
                            out(zero + p)
                        pending.clear()
                    else:
                        dropped(HEADROOM + n)
                else:
                    frames = handle_vnet_packet(xl, buf, n, w)
                    if not frames:
                        dropped(HEADROOM + n)
                    for frame in frames:
                        out(frame)
            except Exception:  # a packet must never take the worker down
                w[W_EXC] += 1
                pending.clear()
            n = _EMPTY if c_read is None else _AGAIN

    return run
