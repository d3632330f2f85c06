"""The ``virtio_net_hdr`` a TUN device opened with ``IFF_VNET_HDR`` puts before each packet.

Theory of operation
-------------------
With offloads turned on (``TUNSETOFFLOAD``), the kernel hands the TUN reader
TCP "super-packets" of up to 64 KB (GSO) whose transport checksum is only
*partial*: the checksum field holds the folded one's-complement sum of the
pseudo-header, not yet complemented, and ``csum_start``/``csum_offset`` say
where the rest of the sum starts and where the result goes (``NEEDS_CSUM``).
Whoever finally sends the segments completes the sum. A translator therefore
must, after translating the IP header of such a packet:

* write the new pseudo-header sum (new addresses, same L4 length) into the
  checksum field instead of updating a finished checksum;
* move ``csum_start`` to the new transport offset, shift ``hdr_len`` by the
  change in IP header length, and swap ``gso_type`` TCPV4 <-> TCPV6.

When a super-packet cannot be translated as one (an IPv4 one with DF=0, one
whose translation would exceed 65535 bytes, one that would become an ICMP
error) it is cut into ordinary packets with finished checksums first
(:func:`segment`), exactly as the kernel's software GSO would, and each is
translated on its own. A packet with only ``NEEDS_CSUM`` can likewise have its
checksum finished in software (:func:`finish_checksum`).

The header is in host byte order (legacy virtio, no ``TUNSETVNETLE``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .checksum import ones_add, ones_sum

VNET_HDR_LEN = 10
HDR = struct.Struct("=BBHHHH")

F_NEEDS_CSUM = 1
F_DATA_VALID = 2

GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

_TCP = 6
_UDP = 17
_H16 = struct.Struct("!H")
_H32 = struct.Struct("!I")


class VnetError(ValueError):
    """A virtio_net_hdr that does not describe the packet it precedes."""


@dataclass(frozen=True)
class VnetHeader:
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @classmethod
    def from_wire(cls, data: bytes | bytearray | memoryview, pos: int = 0) -> VnetHeader:
        return cls(*HDR.unpack_from(data, pos))

    def to_wire(self) -> bytes:
        return HDR.pack(
            self.flags,
            self.gso_type,
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        )


def _l3(buf: bytearray, start: int, end: int) -> tuple[int, int, int]:
    """(IP version, transport offset, transport protocol) of a packet without extension headers."""
    if end - start < 20:
        raise VnetError("packet shorter than an IP header")
    v = buf[start] >> 4
    if v == 4:
        ihl = (buf[start] & 15) * 4
        if ihl < 20 or end - start < ihl:
            raise VnetError("bad IPv4 header length")
        return 4, start + ihl, buf[start + 9]
    if v == 6 and end - start >= 40:
        return 6, start + 40, buf[start + 6]
    raise VnetError("not an IPv4/IPv6 packet without extension headers")


def _pseudo_sum(buf: bytearray, start: int, version: int, proto: int, l4len: int) -> int:
    if version == 4:
        s = ones_sum(buf[start + 12 : start + 20])
    else:
        s = ones_sum(buf[start + 8 : start + 40])
        s = ones_add(s, l4len >> 16)
    return ones_add(ones_add(s, proto), l4len & 0xFFFF)


def after_translation(hdr: VnetHeader, buf: bytearray, out_start: int, out_end: int) -> VnetHeader:
    """Fix the partial checksum in the translated packet and return its new header.

    ``hdr`` is the header the input packet came with; the packet at
    ``buf[out_start:out_end]`` is its translation (no extension headers).
    """
    if not hdr.flags & F_NEEDS_CSUM:
        # Nothing partial: a finished checksum the translator already updated.
        # DATA_VALID is not passed on, so the receiver verifies our work.
        return VnetHeader()
    version, l4, proto = _l3(buf, out_start, out_end)
    pos = l4 + hdr.csum_offset
    if pos + 2 > out_end:
        raise VnetError("csum_offset points past the packet")
    partial = _pseudo_sum(buf, out_start, version, proto, out_end - l4)
    _H16.pack_into(buf, pos, partial)
    gso_type = hdr.gso_type
    base = gso_type & ~GSO_ECN
    if base in (GSO_TCPV4, GSO_TCPV6):
        gso_type = (GSO_TCPV6 if version == 6 else GSO_TCPV4) | (gso_type & GSO_ECN)
    hdr_len = hdr.hdr_len
    if hdr_len:
        # hdr_len counts IP + transport headers; the IP header changed size.
        tl = (buf[l4 + 12] >> 4) * 4 if proto == _TCP else 8
        hdr_len = l4 - out_start + tl
    return VnetHeader(
        F_NEEDS_CSUM, gso_type, hdr_len, hdr.gso_size, l4 - out_start, hdr.csum_offset
    )


def finish_checksum(hdr: VnetHeader, buf: bytearray, start: int, end: int) -> None:
    """Complete a ``NEEDS_CSUM`` checksum in software, as a NIC would."""
    cs = start + hdr.csum_start
    pos = cs + hdr.csum_offset
    if not start <= cs < end or pos + 2 > end:
        raise VnetError("csum_start/csum_offset outside the packet")
    c = ~ones_sum(buf[cs:end]) & 0xFFFF
    if c == 0 and hdr.csum_offset == 6:  # UDP: zero means "no checksum" (RFC 768)
        c = 0xFFFF
    _H16.pack_into(buf, pos, c)


def _ipv4_header_checksum(seg: bytearray, ihl: int) -> None:
    seg[10:12] = b"\0\0"
    _H16.pack_into(seg, 10, ~ones_sum(seg[:ihl]) & 0xFFFF)


def segment(hdr: VnetHeader, buf: bytearray, start: int, end: int) -> list[bytearray]:
    """Cut a GSO super-packet into ordinary packets with finished checksums.

    RFC 793 segmentation as the kernel's software GSO does it: each segment
    carries ``gso_size`` bytes of payload, sequence numbers advance, FIN and
    PSH stay on the last segment, CWR on the first; IPv4 Identifications
    count up. UDP (``GSO_UDP_L4``) gets one datagram per segment.
    """
    version, l4, proto = _l3(buf, start, end)
    base = hdr.gso_type & ~GSO_ECN
    if base in (GSO_TCPV4, GSO_TCPV6):
        if proto != _TCP or end - l4 < 20:
            raise VnetError("TCP GSO type on a packet that is not TCP")
        tl = (buf[l4 + 12] >> 4) * 4
    elif base == GSO_UDP_L4:
        if proto != _UDP:
            raise VnetError("UDP GSO type on a packet that is not UDP")
        tl = 8
    else:
        raise VnetError(f"unsupported gso_type {hdr.gso_type}")
    mss = hdr.gso_size
    if mss <= 0:
        raise VnetError("gso_size 0 on a GSO packet")
    hl = l4 - start + tl
    if start + hl > end:
        raise VnetError("headers longer than the packet")
    head = buf[start : start + hl]
    payload = memoryview(buf)[start + hl : end]
    n = max(1, -(-len(payload) // mss))
    out: list[bytearray] = []
    seq = _H32.unpack_from(head, l4 - start + 4)[0] if proto == _TCP else 0
    flags = head[l4 - start + 13] if proto == _TCP else 0
    ip_id = _H16.unpack_from(head, 4)[0] if version == 4 else 0
    for i in range(n):
        chunk = payload[i * mss : (i + 1) * mss]
        seg = bytearray(head)
        seg += chunk
        t = l4 - start
        if version == 4:
            _H16.pack_into(seg, 2, len(seg))
            _H16.pack_into(seg, 4, (ip_id + i) & 0xFFFF)
            _ipv4_header_checksum(seg, t)
        else:
            _H16.pack_into(seg, 4, len(seg) - 40)
        l4len = len(seg) - t
        if proto == _TCP:
            _H32.pack_into(seg, t + 4, (seq + i * mss) & 0xFFFFFFFF)
            f = flags
            if i != n - 1:
                f &= ~0x09  # FIN, PSH only on the last segment
            if i != 0:
                f &= ~0x80  # CWR only on the first
            seg[t + 13] = f
            cpos = t + 16
        else:
            _H16.pack_into(seg, t + 4, l4len)
            cpos = t + 6
        seg[cpos : cpos + 2] = b"\0\0"
        c = ~ones_add(ones_sum(seg[t:]), _pseudo_sum(seg, 0, version, proto, l4len)) & 0xFFFF
        if c == 0 and proto == _UDP:
            c = 0xFFFF
        _H16.pack_into(seg, cpos, c)
        out.append(seg)
    return out
