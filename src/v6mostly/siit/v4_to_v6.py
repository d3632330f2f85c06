"""RFC 7915 §4: translating from IPv4 to IPv6.

The fast path (TCP, UDP, ICMP echo; unfragmented; fits the MTU) rewrites the
packet in place: the IPv6 header is written over the IPv4 header and the
headroom in front of it, and the transport checksum gets an incremental update
(RFC 1624) for the pseudo-header change. It reads as the steps of RFC 7915 §4.1
in order; every branch off it is a function named after the step it takes:
the Hop Limit (``hop_limit_expired``), the source route option, ICMP messages
other than echo (§4.2/§4.3, in ``icmp_errors``), addresses that are refused
(``refuse``: RFC 1812 §5.3.7, §4.4 errors, the translator's own address),
Fragmentation Needed (``too_big_for_ipv6``), the zero UDP checksum (§4.5) and
fragments (§4 "Fragment Header", in ``fragment``).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..addr.special import v4_not_forwardable
from ..wire.checksum import checksum, pseudo_sum_v6, sum_delta, update_at
from . import fragment, icmp_errors, local
from .headers import has_unexpired_source_route
from .transport import echo_4to6
from .verdict import DIR_4TO6, P_ICMP, P_OTHER, P_TCP, P_UDP, Drop

if TYPE_CHECKING:
    from .translator import Translator

_V4 = struct.Struct("!BBHHHBBH")
_V6 = struct.Struct("!IHBB")
_H = struct.Struct("!H")
#: Counter class by protocol number (a tuple index is cheaper than a dict lookup).
_PROTO_CLASS = tuple(
    P_TCP if p == 6 else P_UDP if p == 17 else P_ICMP if p == 58 else P_OTHER for p in range(256)
)
_from_bytes = int.from_bytes
_Z4 = b"\x00\x00\x00\x00"


def translate_4to6(
    xl: Translator, buf: bytearray, start: int, end: int, hairpin: bool
) -> tuple[int, int]:
    """RFC 7915 §4.1 for ``buf[start:end]``; ``hairpin`` marks RFC 7757 §4.3's second pass."""
    # -- the IPv4 header as received (RFC 791) -------------------------------------------
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

    # -- scope: unicast only (RFC 7915 §1.3), never an ICMP error (RFC 1812 §4.3.2.7) ----
    d0 = buf[start + 16]
    if d0 >= 224:
        return xl.drop(Drop.MULTICAST if d0 < 240 else Drop.NOT_FORWARDABLE_DESTINATION)

    # -- §4.1 "Hop Limit" (see DESIGN.md for the TUN variant) ---------------------------
    if not hairpin:
        if ttl <= 1:
            return hop_limit_expired(xl, buf, start, end)
        if xl.decrement_ttl:
            ttl -= 1

    # -- §4.1: an unexpired source route option -> ICMP "source route failed" -----------
    if ihl > 20 and has_unexpired_source_route(buf, start + 20, l4):
        return send_error(xl, buf, start, end, 3, 5, _Z4, Drop.SOURCE_ROUTE)

    # -- §4.2/§4.3: ICMPv4 other than an unfragmented echo ------------------------------
    if proto == 1 and (frag & 0x3FFF or end - l4 < 8 or (buf[l4] != 8 and buf[l4] != 0)):
        return icmp_errors.translate_icmpv4_message(xl, buf, start, end, ihl, ttl, hairpin)

    # -- §4.1 "Source Address" / "Destination Address" (RFC 6052, RFC 7757) -------------
    m: tuple[bytes, int] | Drop | None
    if hairpin:
        m = hairpin_addresses(xl, buf, start)
        if type(m) is not tuple:
            return xl.drop(m)  # type: ignore[arg-type]
    else:
        key = mv[start + 12 : start + 20].tobytes()
        m = xl.map46.get(key)
        if m is None:
            m = xl.resolve46(key)
        if type(m) is not tuple:
            return refuse(xl, buf, start, end, m)  # type: ignore[arg-type]
    addrs, delta = m

    # -- §4: too big for the IPv6 next hop with DF set ----------------------------------
    payload = total - ihl
    is_frag = frag & 0x3FFF  # MF or a non-zero offset
    out_len = 40 + payload + (8 if is_frag else 0)
    df = frag & 0x4000
    if out_len > xl.ipv6_mtu and df and not xl.gso:
        return too_big_for_ipv6(xl, buf, start, end)

    # -- §4.5 transport-layer headers: only a first fragment carries one ----------------
    if not frag & 0x1FFF:
        refused = translate_transport(xl, buf, start, end, l4, proto, addrs, delta, is_frag)
        if refused is not None:
            return refused
    if proto == 1:
        proto = 58

    # -- §4 "Fragment Header": fragments, and DF=0 packets over the lowest IPv6 MTU -----
    # (a GSO super-packet reaches the core only when each of its segments fits: the
    # worker cuts the others first, so none is ever fragmented as a whole)
    tc = 0 if xl.reset_tc else tos
    if is_frag or (not df and out_len > xl.frag_mtu and not xl.gso):
        return to_fragments(xl, buf, l4, end, frag, tc, proto, ttl, ident, addrs)

    # -- §4.1 the IPv6 header, written over the IPv4 header and the headroom ------------
    o = l4 - 40
    _V6.pack_into(buf, o, 0x60000000 | (tc << 20), payload, proto, ttl)
    buf[o + 8 : o + 40] = addrs
    if hairpin:
        xl.stats.hairpinned += 1
    i = _PROTO_CLASS[proto]
    xl.c_packets[i] += 1
    xl.c_octets[i] += end - o
    return o, end


# -- the steps off the fast path -------------------------------------------------------


def hop_limit_expired(xl: Translator, buf: bytearray, start: int, end: int) -> tuple[int, int]:
    """§4.1 "Hop Limit": Time Exceeded from the translator — unless the packet is for it
    (a host accepts a packet addressed to itself whatever its TTL) or is never
    forwarded anyway (RFC 1812 §5.3.7: silently discarded)."""
    key = bytes(buf[start + 12 : start + 20])
    m = xl.map46.get(key)
    if m is None:
        m = xl.resolve46(key)
    if m is Drop.TO_TRANSLATOR:
        return local.answer_ipv4(xl, bytes(buf[start:end]))
    if m is Drop.NOT_FORWARDABLE_DESTINATION or m is Drop.NOT_FORWARDABLE_SOURCE:
        return xl.drop(m)
    return send_error(xl, buf, start, end, 11, 0, _Z4, Drop.TTL_EXPIRED)


def hairpin_addresses(xl: Translator, buf: bytearray, start: int) -> tuple[bytes, int] | Drop:
    """RFC 7757 §4.3: in the second pass the source goes through pool6 only."""
    dst6 = xl.v4_to_v6_addr(buf[start + 16 : start + 20])
    if dst6 is None:
        return Drop.UNTRANSLATABLE_DESTINATION
    src6 = xl.v4_to_v6_pool6(buf[start + 12 : start + 16])
    if src6 is None:
        return Drop.UNTRANSLATABLE_SOURCE
    addrs = src6 + dst6
    return addrs, sum_delta(addrs, buf[start + 12 : start + 20])


def refuse(xl: Translator, buf: bytearray, start: int, end: int, reason: Drop) -> tuple[int, int]:
    """A packet whose addresses are not translated.

    * Not forwardable (RFC 1812 §5.3.7, RFC 3927 §7): silently discarded.
    * For the translator's own address: answered as a host does (``local``).
    * Untranslatable (no EAM entry, outside what pool6 can carry): RFC 7915 §4.4
      "If the IPv4 packet is discarded, then the translator SHOULD be able to send
      back an ICMPv4 error message to the original sender of the packet, unless
      the discarded packet is itself an ICMPv4 message. The ICMPv4 message, if
      sent, has a Type of 3 (Destination Unreachable) and a Code of 13
      (Communication Administratively Prohibited)".
    """
    if reason == Drop.TO_TRANSLATOR:
        return local.answer_ipv4(xl, bytes(buf[start:end]))
    if (reason == Drop.UNTRANSLATABLE_DESTINATION or reason == Drop.UNTRANSLATABLE_SOURCE) and buf[
        start + 9
    ] != 1:
        return send_error(xl, buf, start, end, 3, 13, _Z4, reason)
    return xl.drop(reason)


def too_big_for_ipv6(xl: Translator, buf: bytearray, start: int, end: int) -> tuple[int, int]:
    """§4: DF set and too big for the IPv6 next hop: Fragmentation Needed, MTU - 20."""
    mtu = (xl.ipv6_mtu - 20).to_bytes(4, "big")
    return send_error(xl, buf, start, end, 3, 4, mtu, Drop.PACKET_TOO_BIG)


def translate_transport(
    xl: Translator,
    buf: bytearray,
    start: int,
    end: int,
    l4: int,
    proto: int,
    addrs: bytes,
    delta: int,
    is_frag: int,
) -> tuple[int, int] | None:
    """§4.5 "Transport-Layer Header Translation": the TCP/UDP checksum follows the
    pseudo-header change (RFC 1624; no work for a checksum-neutral mapping), an ICMP
    echo becomes ICMPv6 (§4.2). ``None``: done, translation goes on."""
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
            return udp_zero_checksum(xl, buf, start, end, l4, addrs, is_frag)
        if delta:
            update_at(buf, c, delta, True)
    elif proto == 1:
        echo_4to6(buf, l4, addrs[:16], addrs[16:], end - l4)
    return None


def udp_zero_checksum(
    xl: Translator, buf: bytearray, start: int, end: int, l4: int, addrs: bytes, is_frag: int
) -> tuple[int, int] | None:
    """§4.5: a zero UDP checksum is computed for an unfragmented packet (if configured),
    else the packet is dropped with ICMP "Communication Administratively Prohibited".
    ``None``: the checksum was filled in, translation goes on."""
    if is_frag:
        return send_error(xl, buf, start, end, 3, 13, _Z4, Drop.UDP_ZERO_CHECKSUM_FRAGMENT)
    if not xl.amend_udp:
        return send_error(xl, buf, start, end, 3, 13, _Z4, Drop.UDP_ZERO_CHECKSUM)
    n = end - l4
    new = checksum(buf[l4:end], pseudo_sum_v6(addrs[:16], addrs[16:], 17, n)) or 0xFFFF
    _H.pack_into(buf, l4 + 6, new)
    return None


def to_fragments(
    xl: Translator,
    buf: bytearray,
    l4: int,
    end: int,
    frag: int,
    tc: int,
    nh: int,
    ttl: int,
    ident: int,
    addrs: bytes,
) -> tuple[int, int]:
    """§4 "Fragment Header": an IPv4 fragment keeps its fields in a Fragment Header;
    a DF=0 packet over the lowest IPv6 MTU is split into IPv6 fragments."""
    pkts = fragment.to_ipv6_fragments(
        xl,
        tc,
        nh,
        ttl,
        addrs[:16],
        addrs[16:],
        bytes(buf[l4:end]),
        ident,
        frag & 0x1FFF,
        bool(frag & 0x2000),
    )
    return xl.emit(DIR_4TO6, _PROTO_CLASS[nh], pkts)


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
    """Drop the packet under ``reason`` and answer with our own ICMPv4 error (rate limited)."""
    if v4_not_forwardable(buf[start + 12 : start + 16]):
        return xl.drop(reason)  # never an error towards 0/8, 127/8, 169.254/16, 224/4, 240/4
    pkt = icmp_errors.icmpv4_error_from_translator(xl, bytes(buf[start:end]), itype, code, rest)
    return xl.emit_error(pkt, reason, 4)
