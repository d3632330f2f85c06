"""Packets addressed to the translator itself: answered as a host does, never translated.

A packet to the translator's own ``ipv4_address``/``ipv6_address`` would
otherwise be translated into a packet that routes straight back into the
translator and loops until its TTL runs out. A host receiving it answers an
echo request with an echo reply (RFC 792, RFC 4443 §4.2), a transport it
does not serve with a port unreachable (RFC 1122 §3.2.2.1, RFC 4443 §3.1
code 4) and an unknown protocol with protocol unreachable (ICMPv4 type 3
code 2) or a Parameter Problem code 1 pointing at the Next Header (RFC 4443
§3.4). ICMP messages other than echo requests, and fragments (nothing is
reassembled here), are consumed silently. Errors are rate limited like every
error the translator originates; echo replies are counted in ``local_replies``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..addr.special import v4_not_forwardable, v6_illegal_source
from ..wire.checksum import checksum, pseudo_sum_v6
from .headers import walk_extensions
from .icmp_errors import (
    build_v4,
    build_v6,
    icmpv4_error_from_translator,
    icmpv6_error_from_translator,
)
from .tables import WALKED_EXT
from .verdict import SLOW, Drop

if TYPE_CHECKING:
    from .translator import Translator

_H = struct.Struct("!H")
_Z4 = b"\x00\x00\x00\x00"
#: Hop limit of the translator's own packets (as for its ICMP errors).
HOP_LIMIT = 64


def _reply(xl: Translator, pkt: bytes) -> tuple[int, int]:
    xl.stats.local_replies += 1
    xl.pending.append(pkt)
    return SLOW, 1


def answer_ipv4(xl: Translator, pkt: bytes) -> tuple[int, int]:
    """Answer an IPv4 packet for ``xl.ipv4_address`` (``pkt`` is whole and checked)."""
    ihl = (pkt[0] & 15) << 2
    proto = pkt[9]
    src = pkt[12:16]
    if (pkt[6] & 0x3F or pkt[7]) or v4_not_forwardable(src):
        return xl.drop(Drop.TO_TRANSLATOR)
    if proto == 1:
        icmp = pkt[ihl:]
        if len(icmp) >= 8 and icmp[0] == 8 and icmp[1] == 0 and checksum(icmp) == 0:
            body = bytearray(icmp)
            body[0] = 0
            body[2] = body[3] = 0
            _H.pack_into(body, 2, checksum(body))
            return _reply(xl, build_v4(pkt[1], 0, 0, HOP_LIMIT, 1, pkt[16:20], src, bytes(body)))
        return xl.drop(Drop.TO_TRANSLATOR)
    code = 3 if proto == 6 or proto == 17 else 2  # port / protocol unreachable
    err = icmpv4_error_from_translator(xl, pkt, 3, code, _Z4)
    return xl.emit_error(err, Drop.TO_TRANSLATOR, 4)


def answer_ipv6(xl: Translator, pkt: bytes) -> tuple[int, int]:
    """Answer an IPv6 packet for ``xl.ipv6_address`` (``pkt`` is whole and checked)."""
    src = pkt[8:24]
    nh = pkt[6]
    l4 = 40
    nh_field = 6  # where the Next Header value that names the upper layer sits
    if nh in WALKED_EXT:
        w = walk_extensions(pkt, 0, len(pkt), nh, False)
        if w.error is not None or w.frag_pos >= 0:
            return xl.drop(Drop.TO_TRANSLATOR)  # malformed, or a fragment
        nh, l4 = w.nh, w.l4
        nh_field = _last_next_header_field(pkt, pkt[6])
    if v6_illegal_source(src):
        return xl.drop(Drop.TO_TRANSLATOR)
    if nh == 58:
        icmp = pkt[l4:]
        if (
            len(icmp) >= 8
            and icmp[0] == 128
            and icmp[1] == 0
            and checksum(icmp, pseudo_sum_v6(src, pkt[24:40], 58, len(icmp))) == 0
        ):
            own = pkt[24:40]
            body = bytearray(icmp)
            body[0] = 129
            body[2] = body[3] = 0
            _H.pack_into(body, 2, checksum(body, pseudo_sum_v6(own, src, 58, len(body))))
            tc = (pkt[0] & 15) << 4 | pkt[1] >> 4
            return _reply(xl, build_v6(tc, len(body), 58, HOP_LIMIT, own, src) + bytes(body))
        return xl.drop(Drop.TO_TRANSLATOR)
    if nh == 6 or nh == 17:
        err = icmpv6_error_from_translator(xl, pkt, 1, 4, _Z4)  # port unreachable
    else:
        # RFC 4443 §3.4 code 1 "unrecognized Next Header type encountered".
        err = icmpv6_error_from_translator(xl, pkt, 4, 1, nh_field.to_bytes(4, "big"))
    return xl.emit_error(err, Drop.TO_TRANSLATOR, 6)


def _last_next_header_field(pkt: bytes, nh: int) -> int:
    """The offset of the Next Header field that holds the upper-layer protocol."""
    field = 6
    p = 40
    while nh in WALKED_EXT and p + 2 <= len(pkt):
        field = p
        nh = pkt[p]
        p += (pkt[p + 1] + 1) << 3
    return field
