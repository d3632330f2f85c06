"""RFC 7915 §4: translating from IPv4 to IPv6.

The fast path (TCP, UDP, ICMP echo; unfragmented; fits the MTU) rewrites the
packet in place: the IPv6 header is written over the IPv4 header and the
headroom in front of it, and the transport checksum gets an incremental update
(RFC 1624) for the pseudo-header change. Everything else branches off to a
slow path that builds new buffers: fragments (§4 "Fragment Header"), ICMP
errors (§4.2/§4.3), and the ICMPv4 errors the translator itself sends.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..wire.checksum import checksum, pseudo_sum_v6, sum_delta, update_at
from . import fragment, icmp_errors
from .transport import echo_4to6
from .verdict import DIR_4TO6, P_ICMP, P_OTHER, P_TCP, P_UDP, Drop

if TYPE_CHECKING:
    from .translator import Translator

_V4 = struct.Struct("!BBHHHBBH")
_V6 = struct.Struct("!IHBB")
_H = struct.Struct("!H")
_PROTO_CLASS = {6: P_TCP, 17: P_UDP, 58: P_ICMP}
_from_bytes = int.from_bytes


def translate_4to6(
    xl: Translator, buf: bytearray, start: int, end: int, hairpin: bool
) -> tuple[int, int]:
    """RFC 7915 §4.1 for ``buf[start:end]``; ``hairpin`` marks RFC 7757 §4.3's second pass."""
    size = end - start
    if size < 20:
        return xl.drop(Drop.TRUNCATED)
    vihl, tos, total, ident, frag, ttl, proto, _hcs = _V4.unpack_from(buf, start)
    ihl = (vihl & 15) << 2
    if ihl < 20 or total < ihl:
        return xl.drop(Drop.MALFORMED)
    if total > size:
        return xl.drop(Drop.TRUNCATED)
    mv = xl._mv if buf is xl._mv_owner else xl.view(buf)
    # RFC 791 header checksum: the sum of a valid header is 0xffff, i.e. 0 mod 0xffff.
    if _from_bytes(mv[start : start + ihl], "big") % 0xFFFF:
        return xl.drop(Drop.BAD_IPV4_HEADER_CHECKSUM)
    end = start + total
    l4 = start + ihl
    payload = total - ihl
    offset = frag & 0x1FFF
    is_frag = frag & 0x3FFF  # MF or a non-zero offset

    # Multicast and broadcast are not translated (RFC 7915 §1.3 scope: unicast),
    # and never answered with an ICMP error (RFC 1812 §4.3.2.7).
    if buf[start + 16] >= 224:
        return xl.drop(Drop.MULTICAST)
    # Hop limit (RFC 7915 §4.1 "Hop Limit"; see DESIGN.md for the TUN variant).
    if not hairpin:
        if ttl <= 1:
            return _icmp4_from_translator(
                xl, buf, start, end, 11, 0, b"\x00\x00\x00\x00", Drop.TTL_EXPIRED
            )
        if xl.decrement_ttl:
            ttl -= 1

    # RFC 7915 §4.1: an unexpired source route option -> ICMP "source route failed".
    if ihl > 20 and icmp_errors.has_unexpired_source_route(buf, start + 20, l4):
        return _icmp4_from_translator(
            xl, buf, start, end, 3, 5, b"\x00\x00\x00\x00", Drop.SOURCE_ROUTE
        )

    if proto == 1:
        if is_frag:
            return xl.drop(Drop.FRAGMENTED_ICMP)
        if payload < 8:
            return xl.drop(Drop.MALFORMED)
        itype = buf[l4]
        if itype != 8 and itype != 0:
            return icmp_errors.translate_icmpv4(xl, bytes(buf[start:end]), ihl, ttl, hairpin)

    if hairpin:
        dst6 = xl.v4_to_v6_addr(buf[start + 16 : start + 20])
        if dst6 is None:
            return xl.drop(Drop.UNTRANSLATABLE_DESTINATION)
        src6 = xl.v4_to_v6_pool6(buf[start + 12 : start + 16])
        if src6 is None:
            return xl.drop(Drop.UNTRANSLATABLE_SOURCE)
        addrs = src6 + dst6
        delta = sum_delta(addrs, buf[start + 12 : start + 20])
    else:
        key = mv[start + 12 : start + 20].tobytes()
        m = xl.map46.get(key)
        if m is None:
            m = xl.resolve46(key)
        if type(m) is not tuple:
            return xl.drop(m)  # type: ignore[arg-type]
        addrs, delta = m
    neutral = delta == 0

    out_len = 40 + payload + (8 if is_frag else 0)
    df = frag & 0x4000
    if out_len > xl.ipv6_mtu and df:
        # RFC 7915 §4: too big for the IPv6 next hop and DF set: Fragmentation Needed
        # with the MTU adjusted for the header difference.
        mtu = (xl.ipv6_mtu - 20).to_bytes(4, "big")
        return _icmp4_from_translator(xl, buf, start, end, 3, 4, mtu, Drop.PACKET_TOO_BIG)

    # Transport checksum (RFC 7915 §4.5). Only a first fragment carries the header.
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
                # RFC 7915 §4.5: zero UDP checksum.
                if is_frag:
                    return _icmp4_from_translator(
                        xl,
                        buf,
                        start,
                        end,
                        3,
                        13,
                        b"\x00\x00\x00\x00",
                        Drop.UDP_ZERO_CHECKSUM_FRAGMENT,
                    )
                if not xl.amend_udp:
                    return _icmp4_from_translator(
                        xl, buf, start, end, 3, 13, b"\x00\x00\x00\x00", Drop.UDP_ZERO_CHECKSUM
                    )
                new = (
                    checksum(buf[l4:end], pseudo_sum_v6(addrs[:16], addrs[16:], 17, payload))
                    or 0xFFFF
                )
                _H.pack_into(buf, c, new)
            elif not neutral:
                update_at(buf, c, delta, True)
        elif proto == 1:
            echo_4to6(buf, l4, addrs[:16], addrs[16:], payload)
            proto = 58

    nh = 58 if proto == 1 else proto
    tc = 0 if xl.reset_tc else tos
    if is_frag or (not df and out_len > xl.frag_mtu):
        pkts = fragment.to_ipv6_fragments(
            xl,
            tc,
            nh,
            ttl,
            addrs[:16],
            addrs[16:],
            bytes(buf[l4:end]),
            ident,
            offset,
            bool(frag & 0x2000),
        )
        return xl.emit(DIR_4TO6, _PROTO_CLASS.get(nh, P_OTHER), pkts)

    o = l4 - 40
    _V6.pack_into(buf, o, 0x60000000 | (tc << 20), payload, nh, ttl)
    buf[o + 8 : o + 40] = addrs
    if hairpin:
        xl.stats.hairpinned += 1
    i = _PROTO_CLASS.get(nh, P_OTHER)
    xl.c_packets[i] += 1
    xl.c_octets[i] += end - o
    return o, end


def _icmp4_from_translator(
    xl: Translator,
    buf: bytearray,
    start: int,
    end: int,
    itype: int,
    code: int,
    rest: bytes,
    reason: Drop,
) -> tuple[int, int]:
    pkt = icmp_errors.icmpv4_error_from_translator(xl, bytes(buf[start:end]), itype, code, rest)
    return xl.emit_error(pkt, reason, 4)
