"""Neighbor Advertisements for the CLAT address, as its owner sends them (RFC 4861 §7.2.4).

Linux answers a *unicast* Neighbor Solicitation with Override clear and without
the target link-layer option (``ndisc_recv_ns``: both only for multicast
solicitations). Apple devices behind Cisco WLCs lost IPv4 over exactly such
answers for CLAT addresses. So the CLAT answers unicast NS for its address
itself: RFC 4861 §7.2.4 "the Target Link-Layer Address option ... MUST be
included if the solicitation's IP Destination Address is a multicast address
... [and] SHOULD be included [otherwise]"; "the Override flag SHOULD be set"
for an address that is not anycast or proxied; Solicited is set in answer to
an NS; the source is the target address itself. Multicast solicitations (and
DAD) stay with the kernel, which answers them the same way.
"""

from __future__ import annotations

import struct

from ..wire.checksum import checksum, pseudo_sum_v6

ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20


def answer_ns(pkt: bytes, own: bytes, mac: bytes) -> bytes | None:
    """The NA for a valid unicast NS (a whole IPv6 packet) whose target is ``own``; else None.

    RFC 4861 §7.1.1 validity: hop limit 255, ICMPv6 checksum, code 0, at least 24
    bytes, target not multicast, options with non-zero lengths, no source
    link-layer option from the unspecified address.
    """
    if len(pkt) < 64 or pkt[0] >> 4 != 6 or pkt[6] != 58 or pkt[7] != 255:
        return None
    plen = int.from_bytes(pkt[4:6], "big")
    if 40 + plen > len(pkt) or plen < 24:
        return None
    src, dst = pkt[8:24], pkt[24:40]
    icmp = pkt[40 : 40 + plen]
    if icmp[0] != ND_NEIGHBOR_SOLICIT or icmp[1] != 0 or icmp[8:24] != own or dst != own:
        return None
    if checksum(icmp, pseudo_sum_v6(src, dst, 58, plen)) != 0:
        return None
    p = 24
    has_sllao = False
    while p < plen:
        if p + 2 > plen or icmp[p + 1] == 0:
            return None
        has_sllao = has_sllao or icmp[p] == OPT_SOURCE_LLADDR
        p += icmp[p + 1] * 8
    if p != plen:
        return None
    if not any(src):
        return None  # DAD solicitations are multicast: the kernel's
    if has_sllao and src[0] == 0xFF:
        return None
    body = bytearray(
        struct.pack("!BBHB3x", ND_NEIGHBOR_ADVERT, 0, 0, NA_SOLICITED | NA_OVERRIDE)
        + own
        + bytes((OPT_TARGET_LLADDR, 1))
        + mac[:6]
    )
    body[2:4] = checksum(body, pseudo_sum_v6(own, src, 58, len(body))).to_bytes(2, "big")
    hdr = struct.pack("!IHBB", 0x60000000, len(body), 58, 255) + own + src
    return hdr + bytes(body)
