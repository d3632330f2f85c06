"""Walking IPv4 options and IPv6 extension headers (both directions use these).

RFC 7915 §4.1: an IPv4 packet with an unexpired source route option is not
translated; §5.1: hop-by-hop, destination options and routing headers are
skipped, a Fragment Header becomes the IPv4 fragment fields, and a routing
header with Segments Left != 0 stops the translation.
"""

from __future__ import annotations

from .tables import EXT_FRAGMENT, EXT_HBH, EXT_ROUTING, WALKED_EXT
from .verdict import Drop


def has_unexpired_source_route(buf: bytes | bytearray, p: int, end: int) -> bool:
    """RFC 7915 §4.1: an LSRR/SSRR option whose pointer has not run past its length."""
    while p < end:
        opt = buf[p]
        if opt == 0:
            return False
        if opt == 1:
            p += 1
            continue
        if p + 2 >= end:
            return False
        ln = buf[p + 1]
        if ln < 2:
            return False
        if (opt == 131 or opt == 137) and buf[p + 2] <= ln:
            return True
        p += ln
    return False


class ExtWalk:
    """Result of walking IPv6 extension headers."""

    __slots__ = ("error", "frag_pos", "l4", "nh", "pointer")

    def __init__(self) -> None:
        self.nh = 0
        self.l4 = 0
        self.frag_pos = -1
        self.error: Drop | None = None
        self.pointer = 0


def walk_extensions(buf: bytes | bytearray, start: int, end: int, nh: int, strict: bool) -> ExtWalk:
    """RFC 7915 §5.1: find the upper-layer header after hop-by-hop/routing/dest-opts/fragment.

    With ``strict`` (an outer packet) a routing header with Segments Left != 0
    and extension headers after a Fragment Header are errors; for the
    packet inside an ICMP error (truncated, quoted) the walk just stops.
    """
    w = ExtWalk()
    p = start + 40
    while nh in WALKED_EXT:
        if nh == EXT_FRAGMENT:
            if p + 8 > end:
                w.error = Drop.TRUNCATED
                break
            w.frag_pos = p
            nh = buf[p]
            p += 8
            if (buf[p - 6] << 8 | buf[p - 5]) & 0xFFF8:
                break  # not a first fragment: what follows is payload
            continue
        if w.frag_pos >= 0 and strict:
            # An extension header after the Fragment Header cannot be expressed in
            # IPv4 (it would become IPv4 payload): refuse, as Jool does.
            w.error = Drop.EXTENSION_AFTER_FRAGMENT
            break
        if p + 8 > end:
            w.error = Drop.TRUNCATED
            break
        if nh == EXT_HBH and p != start + 40 and strict:
            w.error = Drop.HOP_BY_HOP_NOT_FIRST
            w.pointer = p - start
            break
        if nh == EXT_ROUTING and buf[p + 3] != 0 and strict:
            # RFC 7915 §5.1: "If a Routing header with a non-zero Segments Left field is
            # present, then the packet MUST NOT be translated" -> Parameter Problem.
            w.error = Drop.SEGMENTS_LEFT
            w.pointer = p + 3 - start
            break
        hl = (buf[p + 1] + 1) << 3
        nh = buf[p]
        p += hl
    if p > end and w.error is None:
        w.error = Drop.TRUNCATED
    w.nh = nh
    w.l4 = p
    return w
