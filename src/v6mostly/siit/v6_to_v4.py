"""RFC 7915 §5: translating from IPv6 to IPv4.

The fast path walks the extension headers (§5.1: hop-by-hop, destination
options and routing headers are skipped, a Fragment Header becomes the IPv4
fragment fields), then writes the 20-byte IPv4 header just in front of the
transport header, so the packet starts 20 bytes later than it did and nothing
moves. It reads as the steps of §5.1 in order; every branch off it is a
function named after the step it takes: extension-header errors
(``extension_header_error``), the Hop Limit (``hop_limit_expired``), ICMPv6
other than echo (§5.2/§5.3, in ``icmp_errors``), refused addresses
(``refuse``: §5.1 illegal sources, RFC 1812 §5.3.7, §5.4 errors, the
translator's own address), Packet Too Big (``too_big_for_ipv4``) and the
zero UDP checksum. RFC 7757 §4.3 hairpinning runs the result through
``v4_to_v6`` again.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..addr.special import v6_illegal_source
from ..wire.checksum import checksum, pseudo_sum_v4, update_at
from . import icmp_errors, local, v4_to_v6
from .headers import ExtWalk, walk_extensions
from .tables import WALKED_EXT
from .transport import echo_6to4
from .verdict import P_ICMP, P_OTHER, P_TCP, P_UDP, Drop

if TYPE_CHECKING:
    from .translator import Translator

_V6 = struct.Struct("!IHBB")
_V4 = struct.Struct("!BBHHHBBH")
_H = struct.Struct("!H")
#: Counter class by protocol number (a tuple index is cheaper than a dict lookup).
_PROTO_CLASS = tuple(
    P_TCP if p == 6 else P_UDP if p == 17 else P_ICMP if p == 1 else P_OTHER for p in range(256)
)
_from_bytes = int.from_bytes
_Z4 = b"\x00\x00\x00\x00"


def translate_6to4(xl: Translator, buf: bytearray, start: int, end: int) -> tuple[int, int]:
    """RFC 7915 §5.1 for ``buf[start:end]``."""
    # -- the IPv6 header and its extension headers (§5.1) -------------------------------
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
            return extension_header_error(xl, buf, start, end, w)
        nh, l4, frag_pos = w.nh, w.l4, w.frag_pos

    # -- scope: multicast is not translated (§1.3) and gets no ICMPv6 error (RFC 4443
    # §2.4 (e.3)): e.g. the kernel's own MLD reports on the TUN ------------------------
    if buf[start + 24] == 0xFF:
        return xl.drop(Drop.MULTICAST)

    # -- §5.1 "Hop Limit" --------------------------------------------------------------
    if hlim <= 1 and xl.expire_6to4:
        return hop_limit_expired(xl, buf, start, end)
    if xl.decrement_ttl and hlim > 1:
        hlim -= 1

    # -- §5.1 fragment fields ----------------------------------------------------------
    if frag_pos >= 0:
        fword = _H.unpack_from(buf, frag_pos + 2)[0]
        offset = fword >> 3
        more = fword & 1
        is_frag = offset or more
    else:
        offset = 0
        is_frag = 0

    # -- §5.2/§5.3: ICMPv6 other than an unfragmented echo -----------------------------
    payload = end - l4
    if nh == 58 and (is_frag or payload < 8 or (buf[l4] != 128 and buf[l4] != 129)):
        return icmp_errors.translate_icmpv6_message(xl, buf, start, end, l4, hlim, frag_pos)

    # -- §5.1 "Source Address" / "Destination Address" (RFC 6052, RFC 7757) -----------
    mv = xl._mv if buf is xl._mv_owner else xl.view(buf)
    key = mv[start + 8 : start + 40].tobytes()
    m = xl.map64.get(key)
    if m is None:
        m = xl.resolve64(key)
    if type(m) is not tuple:
        return refuse(xl, buf, start, end, m)  # type: ignore[arg-type]
    addrs, delta, hairpin = m

    # -- §5.1: too big for the IPv4 next hop -------------------------------------------
    total = 20 + payload
    if total > xl.ipv4_mtu and not xl.gso:
        return too_big_for_ipv4(xl, buf, start, end)

    # -- §5.5 transport-layer headers: only a first fragment carries one ---------------
    proto = 1 if nh == 58 else nh
    if offset == 0:
        refused = translate_transport(xl, buf, l4, end, proto, key, addrs, delta, is_frag)
        if refused is not None:
            return refused

    # -- §5.1 "Identification" / "Flags" ---------------------------------------------
    if frag_pos >= 0:
        ident = _H.unpack_from(buf, frag_pos + 6)[0]
        flags = (offset & 0x1FFF) | (0x2000 if more else 0)
    else:
        ident = xl.ip_id + 1  # Translator.next_ip_id, inlined
        if ident == xl.ip_id_end:
            ident = xl.ip_id_base
        xl.ip_id = ident
        flags = 0x4000 if total > 1260 else 0

    # -- §5.1 the IPv4 header, written just in front of the transport header ----------
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
    i = 4 + _PROTO_CLASS[proto]
    xl.c_packets[i] += 1
    xl.c_octets[i] += end - o
    return o, end


# -- the steps off the fast path -------------------------------------------------------


def extension_header_error(
    xl: Translator, buf: bytearray, start: int, end: int, w: ExtWalk
) -> tuple[int, int]:
    """§5.1: a routing header with Segments Left != 0 or a misplaced hop-by-hop header
    -> Parameter Problem pointing at it; an extension header after a Fragment Header
    -> "Communication with Destination Administratively Prohibited"."""
    reason = w.error
    assert reason is not None
    if reason == Drop.SEGMENTS_LEFT or reason == Drop.HOP_BY_HOP_NOT_FIRST:
        ptr = w.pointer.to_bytes(4, "big")
        return send_error(xl, buf, start, end, 4, 0, ptr, reason)
    if reason == Drop.EXTENSION_AFTER_FRAGMENT:
        return send_error(xl, buf, start, end, 1, 1, _Z4, reason)
    return xl.drop(reason)


def hop_limit_expired(xl: Translator, buf: bytearray, start: int, end: int) -> tuple[int, int]:
    """§5.1 "Hop Limit": Time Exceeded from the translator — unless the packet is for it
    (a host accepts a packet addressed to itself whatever its hop limit) or is never
    forwarded anyway (§5.1 illegal sources, RFC 1812 §5.3.7: silently discarded)."""
    key = bytes(buf[start + 8 : start + 40])
    m = xl.map64.get(key)
    if m is None:
        m = xl.resolve64(key)
    if m is Drop.TO_TRANSLATOR:
        return local.answer_ipv6(xl, bytes(buf[start:end]))
    if m in _NEVER_FORWARDED:
        return xl.drop(m)
    return send_error(xl, buf, start, end, 3, 0, _Z4, Drop.TTL_EXPIRED)


_NEVER_FORWARDED = (Drop.NOT_FORWARDABLE_DESTINATION, Drop.NOT_FORWARDABLE_SOURCE, Drop.MULTICAST)


def refuse(xl: Translator, buf: bytearray, start: int, end: int, reason: Drop) -> tuple[int, int]:
    """A packet whose addresses are not translated.

    * §5.1: "If the translator gets an illegal source address (e.g., ::1, etc.),
      the translator SHOULD silently drop the packet"; IPv4 destinations that
      are not forwardable (RFC 1812 §5.3.7) and multicast: silently dropped too.
    * For the translator's own address: answered as a host does (``local``).
    * Untranslatable: RFC 7915 §5.4 "If the IPv6 packet is discarded, then the
      translator SHOULD send back an ICMPv6 error message to the original sender
      of the packet, unless the discarded packet is itself an ICMPv6 message. The
      ICMPv6 message, if sent, has a Type of 1 (Destination Unreachable) and a
      Code of 1 (Communication with Destination Administratively Prohibited)".
    """
    if reason == Drop.TO_TRANSLATOR:
        return local.answer_ipv6(xl, bytes(buf[start:end]))
    if (
        reason == Drop.UNTRANSLATABLE_DESTINATION or reason == Drop.UNTRANSLATABLE_SOURCE
    ) and not _is_icmpv6(buf, start, end):
        return send_error(xl, buf, start, end, 1, 1, _Z4, reason)
    return xl.drop(reason)


def _is_icmpv6(buf: bytearray, start: int, end: int) -> bool:
    nh = buf[start + 6]
    if nh in WALKED_EXT:
        nh = walk_extensions(buf, start, end, nh, False).nh
    return nh == 58


def too_big_for_ipv4(xl: Translator, buf: bytearray, start: int, end: int) -> tuple[int, int]:
    """§5.1: too big for the IPv4 next hop: Packet Too Big with that MTU + 20."""
    mtu = (min(xl.ipv4_mtu + 20, 0xFFFF)).to_bytes(4, "big")
    return send_error(xl, buf, start, end, 2, 0, mtu, Drop.PACKET_TOO_BIG)


def translate_transport(
    xl: Translator,
    buf: bytearray,
    l4: int,
    end: int,
    proto: int,
    key: bytes,
    addrs: bytes,
    delta: int,
    is_frag: int,
) -> tuple[int, int] | None:
    """§5.5 "Transport-Layer Header Translation": the TCP/UDP checksum follows the
    pseudo-header change (RFC 1624; no work for a checksum-neutral mapping), an ICMPv6
    echo becomes ICMPv4 (§5.2) and loses the pseudo-header (``key``: the IPv6
    addresses). ``None``: done, translation goes on."""
    if proto == 6:
        if end - l4 < 20:
            return xl.drop(Drop.MALFORMED)
        if delta:
            update_at(buf, l4 + 16, delta, False)
    elif proto == 17:
        if end - l4 < 8:
            return xl.drop(Drop.MALFORMED)
        c = l4 + 6
        if not (buf[c] or buf[c + 1]):
            if is_frag:
                return xl.drop(Drop.UDP_ZERO_CHECKSUM_FRAGMENT)
            udp_zero_checksum(buf, l4, end, addrs)
        elif delta:
            update_at(buf, c, delta, True)
    elif proto == 1:
        echo_6to4(buf, l4, end, key[:16], key[16:], end - l4)
    return None


def udp_zero_checksum(buf: bytearray, l4: int, end: int, addrs: bytes) -> None:
    """A zero UDP checksum is not allowed in IPv6 (RFC 8200 §8.1), but one may arrive
    from a local sender: compute the IPv4 one rather than pass "no checksum" on."""
    new = checksum(buf[l4:end], pseudo_sum_v4(addrs[:4], addrs[4:], 17, end - l4)) or 0xFFFF
    _H.pack_into(buf, l4 + 6, new)


def send_error(
    xl: Translator,
    buf: bytearray,
    start: int,
    end: int,
    itype: int,
    code: int,
    rest: bytes,
    reason: Drop,
) -> tuple[int, int]:
    """Drop the packet under ``reason`` and answer with our own ICMPv6 error (rate limited)."""
    if v6_illegal_source(buf[start + 8 : start + 24]):
        return xl.drop(reason)  # RFC 4443 §2.4 (e.5): never to ::, ::1, multicast, link-local
    pkt = icmp_errors.icmpv6_error_from_translator(xl, bytes(buf[start:end]), itype, code, rest)
    return xl.emit_error(pkt, reason, 6)
