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

IPv6-only hops (draft-ietf-v6ops-icmpext-xlat-v6only-source): an ICMPv6 error
whose source has no IPv4 mapping leaves from ``icmp_source_dummy`` (192.0.0.8 in
the CLAT, RFC 7600) when set, else from the RFC 6791 pool; with
``icmp_ext_node_id`` the hop's IPv6 address rides along in an RFC 5837
Interface Information Object, appended to the error's own RFC 4884 extension
structure when it has a valid one, else in a new structure.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..addr.special import v4_not_forwardable, v6_illegal_source
from ..wire.checksum import checksum, pseudo_sum_v6, sum_delta
from .headers import walk_extensions
from .tables import (
    AFI_IPV6,
    CLASS_INTERFACE_INFORMATION,
    EXT_VERSION,
    ICMPV4_ERRORS,
    ICMPV4_NODE_ID_TYPES,
    IFINFO_IPADDR,
    IFINFO_ROLE_INCOMING,
    V4_TO_V6_POINTER,
    V4_UNREACH_CODES,
    V6_TO_V4_POINTER,
    V6_UNREACH_CODES,
    plateau_below,
)
from .transport import echo_4to6, echo_6to4, update_tcp_udp
from .verdict import DIR_4TO6, DIR_6TO4, P_ICMP, Drop

if TYPE_CHECKING:
    from .translator import Translator

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_H = struct.Struct("!H")
#: RFC 4884 object header (Length, Class-Num, C-Type); also AFI + Reserved of RFC 5837 §4.2.
_OBJ = struct.Struct("!HBB")
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
    if _is_icmp_error_v4(pkt) or v4_not_forwardable(pkt[12:16]):
        return None  # RFC 1812 §4.3.2.7: never about an ICMP error or to a non-unicast source
    if not xl.allow_icmp_error(pkt[12:16]):
        return None  # RFC 1812 §4.3.2.8: rate limited
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
    if v6_illegal_source(dst) or (pkt[6] == 58 and len(pkt) > 40 and pkt[40] < 128):
        return None  # RFC 4443 §2.4 (e): not about an ICMPv6 error, not to multicast
    if not xl.allow_icmp_error(dst):
        return None  # RFC 4443 §2.4 (f): rate limited
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


def interface_information_v6(addr6: bytes) -> bytes:
    """RFC 5837 §4: an Interface Information Object naming an IPv6 address only.

    draft-ietf-v6ops-icmpext-xlat-v6only-source: "When adding the Node Identification
    Extension Object, the translator MUST include the IP Address Sub-Object containing
    the original IPv6 source address of the packet." The object used here is RFC 5837's
    (Class-Num 2; C-Type: Interface Role 0, "the IP interface upon which a datagram
    arrived", with only the IP Addr bit set), whose IP Address Sub-Object has the same
    layout: AFI (2 = IPv6), 16 reserved bits, the address. 24 bytes.
    """
    ctype = IFINFO_ROLE_INCOMING | IFINFO_IPADDR
    return _OBJ.pack(24, CLASS_INTERFACE_INFORMATION, ctype) + _OBJ.pack(AFI_IPV6, 0, 0) + addr6


def extension_structure(objects: bytes) -> bytes:
    """RFC 4884 §7: an Extension Header (version 2) and its objects, checksummed.

    Checksum: "The one's complement of the one's complement sum of the data structure,
    with the checksum field replaced by zero for the purpose of computing the checksum."
    """
    ext = bytearray((EXT_VERSION << 4, 0, 0, 0)) + objects
    _H.pack_into(ext, 2, checksum(ext))
    return bytes(ext)


def _extension_objects(ext: bytes) -> bytes | None:
    """The objects of a valid RFC 4884 extension structure (version 2, correct
    checksum, object lengths that add up), or None."""
    n = len(ext)
    if n < 4 or ext[0] >> 4 != EXT_VERSION or checksum(ext) != 0:
        return None
    i = 4
    while i < n:
        if i + 4 > n:
            return None
        olen = ext[i] << 8 | ext[i + 1]
        if olen < 4 or i + olen > n:
            return None
        i += olen
    return ext[4:]


def _with_node_id(ext: bytes, obj: bytes) -> bytes:
    """The extension structure to send: ``obj`` appended to the error's own one.

    draft-ietf-v6ops-icmpext-xlat-v6only-source, Appendix: "If the original ICMPv6
    message already contains an ICMP Extension Structure, the translator SHOULD append
    a Node Identification Extension object containing the IP Address Sub-Object to that
    structure." A structure that is not valid RFC 4884 (unknown version, bad checksum,
    inconsistent lengths) cannot be appended to, and no receiver would read it: it is
    replaced by a new structure holding ``obj`` alone.
    """
    objects = _extension_objects(ext) if ext else None
    return extension_structure((objects or b"") + obj)


# -- IPv4 -> IPv6 ------------------------------------------------------------------------


def inner_4to6(xl: Translator, data: bytes, hairpin: bool) -> bytes | Drop:
    """RFC 7915 §4.3: the IPv6 form of the (possibly truncated) IPv4 packet in an error."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return Drop.INNER_MALFORMED
    ihl = (data[0] & 15) << 2
    if ihl < 20 or len(data) < ihl:
        return Drop.INNER_MALFORMED
    _, tos, total, ident, frag, ttl, proto, _, src4, dst4 = _V4.unpack_from(data)
    if v4_not_forwardable(src4) or v4_not_forwardable(dst4):
        return Drop.INNER_NOT_FORWARDABLE
    src6 = xl.v4_to_v6_addr(src4)
    if src6 is None:
        return Drop.INNER_UNTRANSLATABLE_SOURCE
    dst6 = xl.v4_to_v6_pool6(dst4) if hairpin else xl.v4_to_v6_addr(dst4)
    if dst6 is None:
        return Drop.INNER_UNTRANSLATABLE_DESTINATION
    offset = frag & 0x1FFF
    is_frag = frag & 0x3FFF
    payload = bytearray(data[ihl:])
    n = len(payload)
    nh = 58 if proto == 1 else proto
    if offset == 0:
        if proto == 1:
            if n >= 4:
                if payload[0] != 8 and payload[0] != 0:
                    return Drop.ICMP_ERROR_IN_ICMP_ERROR
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


def translate_icmpv4_message(
    xl: Translator, buf: bytearray, start: int, end: int, ihl: int, ttl: int, hairpin: bool
) -> tuple[int, int]:
    """RFC 7915 §4.2: an ICMPv4 message that is not an unfragmented echo."""
    if buf[start + 6] & 0x3F or buf[start + 7]:
        # The ICMPv6 checksum covers a pseudo-header with the whole message's length,
        # which a translator that does not reassemble cannot know.
        return xl.drop(Drop.FRAGMENTED_ICMP)
    if end - start - ihl < 8:
        return xl.drop(Drop.MALFORMED)
    return translate_icmpv4(xl, bytes(buf[start:end]), ihl, ttl, hairpin)


def _icmpv4_type_4to6(icmp: bytes) -> tuple[int, int, bytes, bool] | None:
    """RFC 7915 §4.2: ICMPv4 error type/code -> (ICMPv6 type, code, rest, extensions?)."""
    t, c = icmp[0], icmp[1]
    if t == 3:
        if c == 2:
            return 4, 1, b"\x00\x00\x00\x06", False  # pointer to Next Header
        if c == 4:
            return 2, 0, _Z4, False
        if c in V4_UNREACH_CODES:
            nt, nc = V4_UNREACH_CODES[c]
            return nt, nc, _Z4, True
        return None
    if t == 11:
        return 3, c, _Z4, True
    if t == 12 and c in (0, 2):
        ptr = V4_TO_V6_POINTER.get(icmp[4])
        return None if ptr is None else (4, 0, ptr.to_bytes(4, "big"), False)
    return None  # source quench, redirect, ...


def translate_icmpv4(
    xl: Translator, pkt: bytes, ihl: int, ttl: int, hairpin: bool
) -> tuple[int, int]:
    """RFC 7915 §4.2/§4.3: translate an ICMPv4 message other than an echo."""
    icmp = pkt[ihl:]
    t = icmp[0]
    if t not in ICMPV4_ERRORS:
        # Informational messages other than echo are silently dropped.
        return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)
    if checksum(icmp) != 0:
        return xl.drop(Drop.BAD_ICMP_CHECKSUM)
    mapped = _icmpv4_type_4to6(icmp)
    if mapped is None:
        return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)
    nt, nc, rest, ext_ok = mapped

    dst4 = pkt[16:20]
    if xl.ipv4_address == dst4:
        return xl.drop(Drop.TO_TRANSLATOR)  # an error about one of our own: consumed
    if v4_not_forwardable(dst4):
        return xl.drop(Drop.NOT_FORWARDABLE_DESTINATION)
    dst6 = xl.v4_to_v6_addr(dst4)
    if dst6 is None:
        return xl.drop(Drop.UNTRANSLATABLE_DESTINATION)
    # The reporting router's address is translated even from 0/8 or 127/8 (Jool's
    # corpus expects it): the error is for the IPv6 node, and dropping it would
    # break its Path MTU Discovery; it is never a destination.
    src4 = pkt[12:16]
    src6 = xl.v4_to_v6_pool6(src4) if hairpin else xl.v4_to_v6_addr(src4)
    if src6 is None:
        src6 = xl.pool6791_v6.pick(dst6)  # RFC 6791, the other way round
        if src6 is None:
            return xl.drop(Drop.NO_TRANSLATOR_ADDRESS)

    orig, ext = _split_extension(icmp[8:], icmp[5] * 4)
    inner = inner_4to6(xl, orig, hairpin)
    if type(inner) is not bytes:
        return xl.drop(inner)  # type: ignore[arg-type]
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


def inner_6to4(xl: Translator, data: bytes) -> bytes | Drop:
    """RFC 7915 §5.3: the IPv4 form of the (possibly truncated) IPv6 packet in an error."""
    if len(data) < 40 or data[0] >> 4 != 6:
        return Drop.INNER_MALFORMED
    vtf, plen, nh, hlim, src6, dst6 = _V6.unpack_from(data)
    w = walk_extensions(data, 0, len(data), nh, False)
    if w.error is not None:
        return Drop.INNER_MALFORMED
    src4 = xl.v6_to_v4_addr(src6)
    if src4 is None:
        return Drop.INNER_UNTRANSLATABLE_SOURCE
    dst4 = xl.v6_to_v4_addr(dst6)
    if dst4 is None:
        return Drop.INNER_UNTRANSLATABLE_DESTINATION
    if v4_not_forwardable(src4) or v4_not_forwardable(dst4):
        return Drop.INNER_NOT_FORWARDABLE
    ext_len = w.l4 - 40
    upper_len = plen - ext_len
    if upper_len < 0:
        return Drop.INNER_MALFORMED
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
                    return Drop.ICMP_ERROR_IN_ICMP_ERROR
                echo_6to4(payload, 0, n, src6, dst6, upper_len)
        else:
            update_tcp_udp(payload, 0, n, proto, sum_delta(src4 + dst4, src6 + dst6))
    tos = 0 if xl.reset_tc else (vtf >> 20) & 0xFF
    hdr = bytearray(_V4.pack(0x45, tos, total & 0xFFFF, ident, flags, hlim, proto, 0, src4, dst4))
    _H.pack_into(hdr, 10, checksum(hdr))
    return bytes(hdr) + bytes(payload)


def translate_icmpv6_message(
    xl: Translator, buf: bytearray, start: int, end: int, l4: int, hlim: int, frag_pos: int
) -> tuple[int, int]:
    """RFC 7915 §5.2: an ICMPv6 message that is not an unfragmented echo."""
    if frag_pos >= 0:
        if buf[frag_pos + 2] or buf[frag_pos + 3] & 0xF9:
            return xl.drop(Drop.FRAGMENTED_ICMP)  # offset != 0 or MF: see translate_icmpv4_message
        ident = buf[frag_pos + 6] << 8 | buf[frag_pos + 7]
    else:
        ident = -1
    if end - l4 < 8:
        return xl.drop(Drop.MALFORMED)
    return translate_icmpv6(xl, bytes(buf[start:end]), l4 - start, hlim, ident)


def _icmpv6_type_6to4(icmp: bytes) -> tuple[int, int, bytes, bool] | None:
    """RFC 7915 §5.2: ICMPv6 error type/code -> (ICMPv4 type, code, rest, extensions?)."""
    t, c = icmp[0], icmp[1]
    if t == 1:
        if c not in V6_UNREACH_CODES:
            return None
        nt, nc = V6_UNREACH_CODES[c]
        return nt, nc, _Z4, True
    if t == 2:
        return 3, 4, _Z4, False
    if t == 3:
        return 11, c, _Z4, True
    if t == 4 and c == 0:
        ptr = V6_TO_V4_POINTER.get(int.from_bytes(icmp[4:8], "big"))
        return None if ptr is None else (12, 0, bytes((ptr, 0, 0, 0)), False)
    if t == 4 and c == 1:
        return 3, 2, _Z4, False  # unrecognized Next Header -> protocol unreachable
    return None


def translate_icmpv6(
    xl: Translator, pkt: bytes, l4off: int, hlim: int, ident: int
) -> tuple[int, int]:
    """RFC 7915 §5.2/§5.3: translate an ICMPv6 message other than an echo.

    ``ident`` is the Fragment Header's Identification (low 16 bits), or -1.
    """
    icmp = pkt[l4off:]
    t = icmp[0]
    src6, dst6 = pkt[8:24], pkt[24:40]
    if t > 4:
        return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)  # ND, MLD and other informational types
    if checksum(icmp, pseudo_sum_v6(src6, dst6, 58, len(icmp))) != 0:
        return xl.drop(Drop.BAD_ICMP_CHECKSUM)
    mapped = _icmpv6_type_6to4(icmp)
    if mapped is None:
        return xl.drop(Drop.UNTRANSLATABLE_ICMP_TYPE)
    nt, nc, rest, ext_ok = mapped

    if xl.ipv6_address == dst6:
        return xl.drop(Drop.TO_TRANSLATOR)  # an error about one of our own: consumed
    via_pool6 = False
    dst4 = xl.eam.v6_to_v4(dst6) if xl.eam else None
    if dst4 is None and xl.pool6 is not None:
        dst4 = xl.pool6.extract(dst6)
        via_pool6 = True
    if dst4 is None:
        return xl.drop(Drop.UNTRANSLATABLE_DESTINATION)
    if v4_not_forwardable(dst4):
        return xl.drop(Drop.NOT_FORWARDABLE_DESTINATION)
    src4 = xl.v6_to_v4_addr(src6)
    node_id = b""
    if src4 is None or v4_not_forwardable(src4):
        # An IPv6-only hop (no mapping, or one to an address never forwarded).
        # draft-ietf-v6ops-icmpext-xlat-v6only-source §4.1: "Whenever a translator
        # translates an ICMPv6 Destination Unreachable, ICMPv6 Time Exceeded or ICMPv6
        # Packet Too Big ... to the corresponding ICMPv4 ... message, and the IPv6 source
        # address in the outermost IPv6 header is untranslatable, the translator SHOULD
        # use the dummy IPv4 address (192.0.0.8) as the IPv4 source address for the
        # translated packet." Without a dummy configured: RFC 6791 §4, a pool address.
        src4 = xl.icmp_source_dummy or xl.pool6791_v4.pick(dst4)
        if src4 is None:
            return xl.drop(Drop.NO_TRANSLATOR_ADDRESS)
        if xl.icmp_ext_node_id and nt in ICMPV4_NODE_ID_TYPES:
            # Ibid.: "To preserve the original IPv6 source address of the packet, the
            # translator SHOULD append a Node Identification Object ... with an IP
            # Address Sub-Object containing the IPv6 source address of the original
            # ICMPv6 packet." (and "MUST NOT add the extension if the packet's IPv6
            # source address is translatable": only on this branch).
            node_id = interface_information_v6(src6)

    orig, ext = _split_extension(icmp[8:], icmp[4] * 8 if t in (1, 3) else 0)
    inner = inner_6to4(xl, orig)
    if type(inner) is not bytes:
        return xl.drop(inner)  # type: ignore[arg-type]
    if not ext_ok:
        ext = b""
    if node_id:
        # RFC 4884: with an extension the "original datagram" field "MUST
        # contain at least 128 octets" (zero padded), its length in 32-bit words goes in
        # the sixth octet ("The length attribute MUST be specified when the ICMP
        # Extension Structure is appended"), and the message stays within 576 bytes.
        merged = _with_node_id(ext, node_id)
        data, units = _attach_extension(inner, merged, 4, LIMIT_V4 - 28)
        if units == 0:
            # The error's own objects and ours do not fit beside 128 bytes of the
            # original datagram: the hop's address is kept, the other objects go.
            data, units = _attach_extension(inner, extension_structure(node_id), 4, LIMIT_V4 - 28)
    else:
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
    if via_pool6 and xl.hairpinning and xl.eam and xl.eam.has_v4(dst4):
        # RFC 7757 §4.3: only a destination reached through pool6 whose IPv4 form
        # is an EAM'd node is hairpinned (Jool's "intrinsic" hairpinning).
        return xl.hairpin(out)
    return xl.emit(DIR_6TO4, P_ICMP, [out])
