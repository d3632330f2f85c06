"""Fragments across the translator (RFC 7915 §4.1 "Fragment Header", §5.1.1).

IPv4 -> IPv6: a packet that is already a fragment gets a Fragment Header
carrying its offset, MF flag and Identification; a packet with DF=0 that would
exceed the lowest IPv6 MTU is split into IPv6 fragments ("the packet SHOULD be
fragmented so the resulting IPv6 packet (with Fragment Header added to each
fragment) will be less than or equal to 1280 bytes").
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .translator import Translator

_FRAG = struct.Struct("!BBHI")


def to_ipv6_fragments(
    xl: Translator,
    tc: int,
    nh: int,
    hlim: int,
    src6: bytes,
    dst6: bytes,
    payload: bytes,
    ident: int,
    offset8: int,
    mf: bool,
) -> list[bytes]:
    """The IPv6 packet(s), each with a Fragment Header, for an IPv4 payload."""
    mtu = xl.frag_mtu
    chunk = ((mtu - 48) // 8) * 8
    head = (0x60000000 | (tc << 20)).to_bytes(4, "big")
    tail = bytes((44, hlim)) + src6 + dst6
    out: list[bytes] = []
    n = len(payload)
    if 48 + n <= mtu:
        pieces = [(0, n)]
    else:
        pieces = [(i, min(n, i + chunk)) for i in range(0, n, chunk)]
    for a, b in pieces:
        last = b >= n
        more = mf if last else True
        off = offset8 + a // 8
        fh = _FRAG.pack(nh, 0, (off << 3) | (1 if more else 0), ident)
        out.append(head + (8 + b - a).to_bytes(2, "big") + tail + fh + payload[a:b])
    return out
