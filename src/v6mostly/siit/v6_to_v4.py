"""RFC 7915 §5: translating from IPv6 to IPv4.

The fast path walks the extension headers (§5.1: hop-by-hop, destination
options and routing headers are skipped, a Fragment Header becomes the IPv4
fragment fields), then writes the 20-byte IPv4 header just in front of the
transport header, so the packet starts 20 bytes later than it did and nothing
moves. ICMPv6 errors and the ICMPv6 errors the translator sends go to
``icmp_errors``; RFC 7757 §4.3 hairpinning runs the result through
``v4_to_v6`` again.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..wire.checksum import checksum, pseudo_sum_v4, update_at
from . import icmp_errors, v4_to_v6
from .tables import EXT_FRAGMENT, EXT_HBH, EXT_ROUTING, WALKED_EXT
from .transport import echo_6to4
from .verdict import P_ICMP, P_OTHER, P_TCP, P_UDP, Drop

if TYPE_CHECKING:
    from .translator import Translator

_V6 = struct.Struct("!IHBB")
_V4 = struct.Struct("!BBHHHBBH")
_H = struct.Struct("!H")
_PROTO_CLASS = {6: P_TCP, 17: P_UDP, 1: P_ICMP}
_from_bytes = int.from_bytes


class ExtWalk:
    """Result of walking IPv6 extension headers (slow path only; the fast path inlines it)."""

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


def translate_6to4(xl: Translator, buf: bytearray, start: int, end: int) -> tuple[int, int]:
    """RFC 7915 §5.1 for ``buf[start:end]``."""
    size = end - start
    if size < 40:
        return xl.drop(Drop.TRUNCATED)
    vtf, plen, nh, hlim = _V6.unpack_from(buf, start)
    if plen == 0 and nh == 0:
        return xl.drop(Drop.JUMBOGRAM)  # RFC 2675: cannot be expressed in IPv4
    if 40 + plen > size:
        return xl.drop(Drop.TRUNCATED)
    end = start + 40 + plen
    frag_pos = -1
    l4 = start + 40
    if nh in WALKED_EXT:
        w = walk_extensions(buf, start, end, nh, True)
        if w.error is not None:
            return _ext_error(xl, buf, start, end, w)
        nh, l4, frag_pos = w.nh, w.l4, w.frag_pos

    # Multicast is not translated (RFC 7915 §1.3) and gets no ICMPv6 error from
    # us (RFC 4443 §2.4 (e.3)): e.g. the kernel's own MLD reports on the TUN.
    if buf[start + 24] == 0xFF:
        return xl.drop(Drop.MULTICAST)
    if hlim <= 1:
        return _icmp6_from_translator(
            xl, buf, start, end, 3, 0, b"\x00\x00\x00\x00", Drop.TTL_EXPIRED
        )
    if xl.decrement_ttl:
        hlim -= 1

    if frag_pos >= 0:
        fword = _H.unpack_from(buf, frag_pos + 2)[0]
        offset = fword >> 3
        more = fword & 1
        is_frag = offset or more
    else:
        offset = 0
        is_frag = 0

    payload = end - l4
    if nh == 58:
        if is_frag:
            return xl.drop(Drop.FRAGMENTED_ICMP)
        if payload < 8:
            return xl.drop(Drop.MALFORMED)
        itype = buf[l4]
        if itype != 128 and itype != 129:
            ident = _H.unpack_from(buf, frag_pos + 6)[0] if frag_pos >= 0 else -1
            return icmp_errors.translate_icmpv6(xl, bytes(buf[start:end]), l4 - start, hlim, ident)

    mv = xl._mv if buf is xl._mv_owner else xl.view(buf)
    key = mv[start + 8 : start + 40].tobytes()
    m = xl.map64.get(key)
    if m is None:
        m = xl.resolve64(key)
    if type(m) is not tuple:
        return xl.drop(m)  # type: ignore[arg-type]
    addrs, delta, hairpin = m
    neutral = delta == 0

    total = 20 + payload
    if total > xl.ipv4_mtu:
        # RFC 7915 §5.1: too big for the IPv4 next hop: Packet Too Big, MTU + 20.
        mtu = (min(xl.ipv4_mtu + 20, 0xFFFF)).to_bytes(4, "big")
        return _icmp6_from_translator(xl, buf, start, end, 2, 0, mtu, Drop.PACKET_TOO_BIG)

    proto = 1 if nh == 58 else nh
    if offset == 0:
        if proto == 6:
            if payload < 20:
                return xl.drop(Drop.MALFORMED)
            if not neutral:
                update_at(buf, l4 + 16, delta, False)
        elif proto == 17:
            if payload < 8:
                return xl.drop(Drop.MALFORMED)
            c = l4 + 6
            if not (buf[c] or buf[c + 1]):
                # A zero UDP checksum is not allowed in IPv6 (RFC 8200 §8.1); compute it.
                if is_frag:
                    return xl.drop(Drop.UDP_ZERO_CHECKSUM_FRAGMENT)
                new = (
                    checksum(buf[l4:end], pseudo_sum_v4(addrs[:4], addrs[4:], 17, payload))
                    or 0xFFFF
                )
                _H.pack_into(buf, c, new)
            elif not neutral:
                update_at(buf, c, delta, True)
        elif proto == 1:
            echo_6to4(buf, l4, end, key[:16], key[16:], payload)

    # RFC 7915 §5.1 Identification / Flags.
    if frag_pos >= 0:
        ident = _H.unpack_from(buf, frag_pos + 6)[0]
        flags = (offset & 0x1FFF) | (0x2000 if more else 0)
    else:
        ident = xl.next_ip_id()
        flags = 0x4000 if total > 1260 else 0
    tos = 0 if xl.reset_tc else (vtf >> 20) & 0xFF
    o = l4 - 20
    _V4.pack_into(buf, o, 0x45, tos, total, ident, flags, hlim, proto, 0)
    buf[o + 12 : o + 20] = addrs
    x = _from_bytes(mv[o : o + 20], "big") % 0xFFFF  # RFC 791 header checksum
    x = 0xFFFF - (x or 0xFFFF)
    buf[o + 10] = x >> 8
    buf[o + 11] = x & 0xFF

    if hairpin:
        # RFC 7757 §4.3: the destination is an EAM'd IPv6 node: translate back.
        return v4_to_v6.translate_4to6(xl, buf, o, end, True)
    i = 4 + _PROTO_CLASS.get(proto, P_OTHER)
    xl.c_packets[i] += 1
    xl.c_octets[i] += end - o
    return o, end


def _ext_error(xl: Translator, buf: bytearray, start: int, end: int, w: ExtWalk) -> tuple[int, int]:
    reason = w.error
    assert reason is not None
    if reason == Drop.SEGMENTS_LEFT or reason == Drop.HOP_BY_HOP_NOT_FIRST:
        ptr = w.pointer.to_bytes(4, "big")
        return _icmp6_from_translator(xl, buf, start, end, 4, 0, ptr, reason)
    if reason == Drop.EXTENSION_AFTER_FRAGMENT:
        return _icmp6_from_translator(xl, buf, start, end, 1, 1, b"\x00\x00\x00\x00", reason)
    return xl.drop(reason)


def _icmp6_from_translator(
    xl: Translator,
    buf: bytearray,
    start: int,
    end: int,
    itype: int,
    code: int,
    rest: bytes,
    reason: Drop,
) -> tuple[int, int]:
    pkt = icmp_errors.icmpv6_error_from_translator(xl, bytes(buf[start:end]), itype, code, rest)
    return xl.emit_error(pkt, reason, 6)
