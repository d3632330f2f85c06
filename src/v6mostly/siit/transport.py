"""Transport-layer steps shared by the outer packet and the packet inside an ICMP error.

RFC 7915 §4.3/§5.3 translate the packet quoted in an ICMP error "the same way"
as an outer one, so the checksum rules live here once: TCP/UDP get the
pseudo-header delta (RFC 1624), ICMP echo changes type and gains (IPv4 ->
IPv6) or loses (IPv6 -> IPv4) the ICMPv6 pseudo-header.
"""

from __future__ import annotations

from ..wire.checksum import checksum, pseudo_sum_v6, update_at


def update_tcp_udp(buf: bytearray, l4: int, end: int, proto: int, delta: int) -> None:
    """RFC 7915 §4.5/§5.5: adjust a TCP/UDP checksum for the address change.

    A zero UDP checksum ("none") and a header cut off by truncation are left alone.
    """
    if proto == 6:
        if end - l4 >= 18:
            update_at(buf, l4 + 16, delta, False)
    elif proto == 17 and end - l4 >= 8 and (buf[l4 + 6] or buf[l4 + 7]):
        update_at(buf, l4 + 6, delta, True)


def echo_4to6(buf: bytearray, l4: int, src6: bytes, dst6: bytes, length: int) -> None:
    """RFC 7915 §4.2: Echo Request/Reply 8/0 -> 128/129, adding the pseudo-header.

    ``length`` is the ICMPv6 message length of the whole (untruncated) message.
    """
    itype = buf[l4]
    ntype = 128 if itype == 8 else 129
    buf[l4] = ntype
    d = (pseudo_sum_v6(src6, dst6, 58, length) + ((ntype - itype) << 8)) % 0xFFFF
    update_at(buf, l4 + 2, d, False)


def echo_6to4(buf: bytearray, l4: int, end: int, src6: bytes, dst6: bytes, length: int) -> None:
    """RFC 7915 §5.2: Echo Request/Reply 128/129 -> 8/0, removing the pseudo-header.

    ICMPv4 has no pseudo-header, so an all-zero message (an echo reply with id,
    sequence and data all zero) must carry 0xffff, which an incremental update
    cannot tell from 0x0000; such a result is recomputed from the bytes.
    """
    itype = buf[l4]
    ntype = 8 if itype == 128 else 0
    buf[l4] = ntype
    d = (((ntype - itype) << 8) - pseudo_sum_v6(src6, dst6, 58, length)) % 0xFFFF
    update_at(buf, l4 + 2, d, False)
    if not (buf[l4 + 2] or buf[l4 + 3]):
        x = checksum(buf[l4:end])
        buf[l4 + 2] = x >> 8
        buf[l4 + 3] = x & 0xFF
