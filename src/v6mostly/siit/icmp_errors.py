"""ICMP errors: translating them (RFC 7915 §4.2/§4.3, §5.2/§5.3) and sending our own.

The packet quoted inside an ICMP error is translated "by the same steps"
(RFC 7915 §4.3: "the translator MUST translate the IP header of the
offending packet ... the same way as normal ... except that the TTL/Hop
Limit is not decremented"), on a copy, since it may be truncated.

RFC 4884 extensions: when the error carries an "original datagram" length,
the part after it is an extension structure. The translated original datagram
is cut to a multiple of the new unit (8 bytes for ICMPv6, 4 for ICMPv4),
zero-padded to the 128-byte minimum, and shortened further to keep the
extension whole within the size limit (1280 bytes for ICMPv6, 576 for
ICMPv4); when even 128 bytes do not fit, the extension is dropped and the
length set to zero (Jool's behaviour).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..wire.checksum import checksum, pseudo_sum_v6, sum_delta
from .tables import (
    ICMPV4_ERRORS,
    V4_TO_V6_POINTER,
    V4_UNREACH_CODES,
    V6_TO_V4_POINTER,
    V6_UNREACH_CODES,
    plateau_below,
)
from .transport import echo_4to6, echo_6to4, update_tcp_udp
from .verdict import DIR_4TO6, DIR_6TO4, P_ICMP, SLOW, Drop

if TYPE_CHECKING:
    from .translator import Translator

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_H = struct.Struct("!H")
_Z4 = b"\x00\x00\x00\x00"

#: Size limits of an ICMP error (RFC 7915 §4.3: 1280 for IPv6, RFC 1812 §4.3.2.3: 576).
LIMIT_V6 = 1280
LIMIT_V4 = 576


def build_v4(
    tos: int, ident: int, flags: int, ttl: int, proto: int, src: bytes, dst: bytes, payload: bytes
) -> bytes:
    total = 20 + len(payload)
    hdr = bytearray(_V4.pack(0x45, tos, total, ident, flags, ttl, proto, 0, src, dst))
    _H.pack_into(hdr, 10, checksum(hdr))
    return bytes(hdr) + payload


def build_v6(tc: int, plen: int, nh: int, hlim: int, src: bytes, dst: bytes) -> bytes:
    return _V6.pack(0x60000000 | (tc << 20), plen, nh, hlim, src, dst)


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


# -- errors the translator originates ------------------------------------------------


def _is_icmp_error_v4(pkt: bytes) -> bool:
    ihl = (pkt[0] & 15) << 2
    return (
        pkt[9] == 1
        and (pkt[6] & 0x1F) == 0
        and pkt[7] == 0
        and len(pkt) > ihl
        and pkt[ihl] in ICMPV4_ERRORS
    )


def icmpv4_error_from_translator(
    xl: Translator, pkt: bytes, itype: int, code: int, rest: bytes
) -> bytes | None:
    """An ICMPv4 error from the translator's own IPv4 address (RFC 1812 §4.3.2)."""
    src = xl.ipv4_address
    if src is None:
        return None
    if _is_icmp_error_v4(pkt) or pkt[12] == 0 or pkt[12] >= 224:
        return None  # RFC 1812 §4.3.2.7: never about an ICMP error or to a non-unicast source
    body = bytearray((itype, code, 0, 0)) + rest + pkt[: LIMIT_V4 - 28]
    _H.pack_into(body, 2, checksum(body))
    return build_v4(0, 0, 0, 64, 1, src, pkt[12:16], bytes(body))


def icmpv6_error_from_translator(
    xl: Translator, pkt: bytes, itype: int, code: int, rest: bytes
) -> bytes | None:
    """An ICMPv6 error from the translator's own IPv6 address (RFC 4443 §2.4)."""
    src = xl.ipv6_address
    if src is None:
        return None
    dst = pkt[8:24]
    if dst[0] == 0xFF or (pkt[6] == 58 and len(pkt) > 40 and pkt[40] < 128):
        return None  # RFC 4443 §2.4 (e): not about an ICMPv6 error, not to multicast
    body = bytearray((itype, code, 0, 0)) + rest + pkt[: LIMIT_V6 - 48]
    _H.pack_into(body, 2, checksum(body, pseudo_sum_v6(src, dst, 58, len(body))))
    return build_v6(0, len(body), 58, 64, src, dst) + bytes(body)


# -- RFC 4884 ---------------------------------------------------------------------------


def _split_extension(body: bytes, length_bytes: int) -> tuple[bytes, bytes]:
    """Split the ICMP payload into (original datagram, extension) per RFC 4884 §4."""
    if length_bytes == 0 or length_bytes > len(body):
        return body, b""
    return body[:length_bytes], body[length_bytes:]


def _attach_extension(inner: bytes, ext: bytes, unit: int, room: int) -> tuple[bytes, int]:
    """(data after the ICMP header, length field in ``unit``s)."""
    if ext:
        t = inner[: len(inner) // unit * unit]
        if len(t) < 128:
            t += bytes(128 - len(t))
        if len(t) + len(ext) > room:
            r = (room - len(ext)) // unit * unit
            t = t[:r] if r >= 128 else b""
        if t:
            return t + ext, len(t) // unit
    return inner[:room], 0


# -- IPv4 -> IPv6 ------------------------------------------------------------------------


def inner_4to6(xl: Translator, data: bytes, hairpin: bool) -> bytes | None:
    """RFC 7915 §4.3: the IPv6 form of the (possibly truncated) IPv4 packet in an error."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 15) << 2
    if ihl < 20 or len(data) < ihl:
        return None
    _, tos, total, ident, frag, ttl, proto, _, src4, dst4 = _V4.unpack_from(data)
    src6 = xl.v4_to_v6_addr(src4)
    dst6 = xl.v4_to_v6_pool6(dst4) if hairpin else xl.v4_to_v6_addr(dst4)
    if src6 is None or dst6 is None:
        return None
    offset = frag & 0x1FFF
    is_frag = frag & 0x3FFF
    payload = bytearray(data[ihl:])
    n = len(payload)
    nh = 58 if proto == 1 else proto
    if offset == 0:
        if proto == 1:
            if n >= 4:
                if payload[0] != 8 and payload[0] != 0:
                    return None  # an ICMP error inside an ICMP error
                echo_4to6(payload, 0, src6, dst6, max(total - ihl, 0))
        else:
            update_tcp_udp(payload, 0, n, proto, sum_delta(src6 + dst6, src4 + dst4))
    tc = 0 if xl.reset_tc else tos
    plen = max(total - ihl, 0)
    if is_frag:
        hdr = build_v6(tc, plen + 8, 44, ttl, src6, dst6)
        fh = struct.pack("!BBHI", nh, 0, (offset << 3) | (1 if frag & 0x2000 else 0), ident)
        return hdr + fh + bytes(payload)
    return build_v6(tc, plen, nh, ttl, src6, dst6) + bytes(payload)


def translate_icmpv4(
    xl: Translator, pkt: bytes, ihl: int, ttl: int, hairpin: bool
) -> tuple[int, int]:
    """RFC 7915 §4.2/§4.3: translate an ICMPv4 message other than an echo."""
    icmp = pkt[ihl:]
    t, c = icmp[0], icmp[1]
    if t not in ICMPV4_ERRORS:
        return xl.drop(
            Drop.UNTRANSLATABLE_ICMP_TYPE
        )  # info messages other than echo: silently dropped
    if checksum(icmp) != 0:
        return xl.drop(Drop.BAD_ICMP_CHECKSUM)
    rest = _Z4
    ext_ok = False
    if t == 3:
        if c == 2:
            nt, nc, rest = 4, 1, b"\x00\x00\x00\x06"  # pointer to Next Header
        elif c == 4:
            nt, nc = 2, 0
        elif c in V4_UNREACH_CODES:
            nt, nc = V4_UNREACH_CODES[c]
            ext_ok = True
        else:
            return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)
    elif t == 11:
        nt, nc = 3, c
        ext_ok = True
    elif t == 12 and c in (0, 2):
        ptr = V4_TO_V6_POINTER.get(icmp[4])
        if ptr is None:
            return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)
        nt, nc, rest = 4, 0, ptr.to_bytes(4, "big")
    else:
        return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)  # source quench, redirect, ...

    dst6 = xl.v4_to_v6_addr(pkt[16:20])
    if dst6 is None:
        return xl.drop(Drop.UNTRANSLATABLE_DESTINATION)
    src4 = pkt[12:16]
    src6 = xl.v4_to_v6_pool6(src4) if hairpin else xl.v4_to_v6_addr(src4)
    if src6 is None:
        src6 = xl.pool6791_v6.pick(dst6)  # RFC 6791, the other way round
        if src6 is None:
            return xl.drop(Drop.NO_TRANSLATOR_ADDRESS)

    orig, ext = _split_extension(icmp[8:], icmp[5] * 4 if t in (3, 11, 12) else 0)
    inner = inner_4to6(xl, orig, hairpin)
    if inner is None:
        return xl.drop(Drop.UNTRANSLATABLE_SOURCE)
    if nt == 2:
        # RFC 7915 §4.2: "minimum(advertised MTU+20, MTU_of_IPv6_nexthop,
        # (MTU_of_IPv4_nexthop)+20)"; MTU 0 -> RFC 1191 plateau; at least 1280.
        mtu4 = icmp[6] << 8 | icmp[7]
        if mtu4 == 0:
            mtu4 = plateau_below(orig[2] << 8 | orig[3] if len(orig) >= 4 else 0)
        mtu6 = max(min(mtu4 + 20, xl.ipv6_mtu, xl.ipv4_mtu + 20), 1280)
        rest = mtu6.to_bytes(4, "big")
    if not ext_ok:
        ext = b""
    data, units = _attach_extension(inner, ext, 8, LIMIT_V6 - 48)
    if nt in (1, 3):
        rest = bytes((units, 0, 0, 0))
    body = bytearray((nt, nc, 0, 0)) + rest + data
    _H.pack_into(body, 2, checksum(body, pseudo_sum_v6(src6, dst6, 58, len(body))))
    tc = 0 if xl.reset_tc else pkt[1]
    out = build_v6(tc, len(body), 58, ttl, src6, dst6) + bytes(body)
    if hairpin:
        xl.stats.hairpinned += 1
    return xl.emit(DIR_4TO6, P_ICMP, [out])


# -- IPv6 -> IPv4 ------------------------------------------------------------------------


def inner_6to4(xl: Translator, data: bytes) -> bytes | None:
    """RFC 7915 §5.3: the IPv4 form of the (possibly truncated) IPv6 packet in an error."""
    from .v6_to_v4 import walk_extensions

    if len(data) < 40 or data[0] >> 4 != 6:
        return None
    vtf, plen, nh, hlim, src6, dst6 = _V6.unpack_from(data)
    w = walk_extensions(data, 0, len(data), nh, False)
    if w.error is not None:
        return None
    src4 = xl.v6_to_v4_addr(src6)
    dst4 = xl.v6_to_v4_addr(dst6)
    if src4 is None or dst4 is None:
        return None
    ext_len = w.l4 - 40
    upper_len = plen - ext_len
    if upper_len < 0:
        return None
    total = 20 + upper_len
    nh = w.nh
    proto = 1 if nh == 58 else nh
    payload = bytearray(data[w.l4 :])
    n = len(payload)
    offset = 0
    if w.frag_pos >= 0:
        fword = data[w.frag_pos + 2] << 8 | data[w.frag_pos + 3]
        offset = fword >> 3
        ident = data[w.frag_pos + 6] << 8 | data[w.frag_pos + 7]
        flags = offset | (0x2000 if fword & 1 else 0)
    else:
        ident = xl.next_ip_id()
        flags = 0x4000 if total > 1260 else 0
    if offset == 0:
        if proto == 1:
            if n >= 4:
                if payload[0] != 128 and payload[0] != 129:
                    return None  # an ICMPv6 error inside an ICMPv6 error
                echo_6to4(payload, 0, n, src6, dst6, upper_len)
        else:
            update_tcp_udp(payload, 0, n, proto, sum_delta(src4 + dst4, src6 + dst6))
    tos = 0 if xl.reset_tc else (vtf >> 20) & 0xFF
    hdr = bytearray(_V4.pack(0x45, tos, total & 0xFFFF, ident, flags, hlim, proto, 0, src4, dst4))
    _H.pack_into(hdr, 10, checksum(hdr))
    return bytes(hdr) + bytes(payload)


def translate_icmpv6(
    xl: Translator, pkt: bytes, l4off: int, hlim: int, ident: int
) -> tuple[int, int]:
    """RFC 7915 §5.2/§5.3: translate an ICMPv6 message other than an echo.

    ``ident`` is the Fragment Header's Identification (low 16 bits), or -1.
    """
    icmp = pkt[l4off:]
    t, c = icmp[0], icmp[1]
    src6, dst6 = pkt[8:24], pkt[24:40]
    if t > 4:
        return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)  # ND, MLD and other informational types
    if checksum(icmp, pseudo_sum_v6(src6, dst6, 58, len(icmp))) != 0:
        return xl.drop(Drop.BAD_ICMP_CHECKSUM)
    rest = _Z4
    ext_ok = False
    if t == 1:
        if c not in V6_UNREACH_CODES:
            return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)
        nt, nc = V6_UNREACH_CODES[c]
        ext_ok = True
    elif t == 2:
        nt, nc = 3, 4
    elif t == 3:
        nt, nc = 11, c
        ext_ok = True
    elif t == 4 and c == 0:
        ptr = V6_TO_V4_POINTER.get(int.from_bytes(icmp[4:8], "big"))
        if ptr is None:
            return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)
        nt, nc, rest = 12, 0, bytes((ptr, 0, 0, 0))
    elif t == 4 and c == 1:
        nt, nc = 3, 2  # unrecognized Next Header -> protocol unreachable
    else:
        return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)

    dst4 = xl.v6_to_v4_addr(dst6)
    if dst4 is None:
        return xl.drop(Drop.UNTRANSLATABLE_DESTINATION)
    src4 = xl.v6_to_v4_addr(src6)
    if src4 is None:
        src4 = xl.pool6791_v4.pick(dst4)  # RFC 6791 §4
        if src4 is None:
            return xl.drop(Drop.NO_TRANSLATOR_ADDRESS)

    orig, ext = _split_extension(icmp[8:], icmp[4] * 8 if t in (1, 3) else 0)
    inner = inner_6to4(xl, orig)
    if inner is None:
        return xl.drop(Drop.UNTRANSLATABLE_SOURCE)
    if not ext_ok:
        ext = b""
    data, units = _attach_extension(inner, ext, 4, LIMIT_V4 - 28)
    if nt == 3 and nc == 4:
        # RFC 7915 §5.2: MTU - 20, but no more than either next hop allows.
        mtu6 = int.from_bytes(icmp[4:8], "big")
        mtu4 = max(min(mtu6 - 20, xl.ipv4_mtu, xl.ipv6_mtu - 20, 0xFFFF), 68)
        rest = bytes((0, units)) + mtu4.to_bytes(2, "big")
    elif nt in (3, 11):
        rest = bytes((0, units, 0, 0))
    body = bytearray((nt, nc, 0, 0)) + rest + data
    _H.pack_into(body, 2, checksum(body))
    tos = 0 if xl.reset_tc else (pkt[0] & 15) << 4 | pkt[1] >> 4
    out = build_v4(
        tos, ident if ident >= 0 else xl.next_ip_id(), 0, hlim, 1, src4, dst4, bytes(body)
    )
    if xl.hairpinning and xl.eam and xl.eam.has_v4(dst4):
        return _hairpin(xl, out)
    return xl.emit(DIR_6TO4, P_ICMP, [out])


def _hairpin(xl: Translator, pkt4: bytes) -> tuple[int, int]:
    """RFC 7757 §4.3: run an IPv4 packet we built back through IPv4 -> IPv6."""
    from .v4_to_v6 import translate_4to6

    buf = bytearray(20) + pkt4
    s, e = translate_4to6(xl, buf, 20, len(buf), True)
    if s >= 0:
        xl.pending.append(bytes(buf[s:e]))
        return SLOW, 1
    return s, e
