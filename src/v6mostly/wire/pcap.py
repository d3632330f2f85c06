"""Classic libpcap files: read any common link type, write LINKTYPE_RAW (101).

Only file-like objects are touched; opening files is the caller's business.
pcapng is not read (convert with ``editcap -F pcap in.pcapng out.pcap``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import PcapError

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_MAGICS = {
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\x3c\x4d": (">", 1),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
}


@dataclass
class Record:
    ts_ns: int
    packet: bytes  # the IP packet (link header removed); b"" if not IP
    linktype: int


def _ip_from_ethertype(etype: int, data: bytes, off: int) -> bytes:
    while etype in (0x8100, 0x88A8) and len(data) >= off + 4:
        etype = int.from_bytes(data[off + 2 : off + 4], "big")
        off += 4
    if etype in (0x0800, 0x86DD):
        return data[off:]
    return b""


def strip_link(linktype: int, data: bytes) -> bytes:
    """The IP packet inside a frame of ``linktype``, or b"" when it carries no IP."""
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return data
    if linktype == LINKTYPE_ETHERNET:
        return (
            _ip_from_ethertype(int.from_bytes(data[12:14], "big"), data, 14)
            if len(data) >= 14
            else b""
        )
    if linktype == LINKTYPE_LINUX_SLL:
        return (
            _ip_from_ethertype(int.from_bytes(data[14:16], "big"), data, 16)
            if len(data) >= 16
            else b""
        )
    if linktype == LINKTYPE_LINUX_SLL2:
        return (
            _ip_from_ethertype(int.from_bytes(data[0:2], "big"), data, 20)
            if len(data) >= 20
            else b""
        )
    if linktype == LINKTYPE_NULL:
        return data[4:] if len(data) > 4 else b""
    raise PcapError(f"link type {linktype} is not supported (use RAW, Ethernet, Linux SLL or NULL)")


def read_pcap(f: BinaryIO, name: str = "<pcap>") -> Iterator[Record]:
    """Yield the records of a classic pcap file, link headers stripped."""
    hdr = f.read(24)
    if len(hdr) < 24:
        raise PcapError(f"{name}: too short for a pcap file header")
    magic = hdr[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        raise PcapError(f"{name}: is pcapng; convert it with 'editcap -F pcap {name} out.pcap'")
    if magic not in _MAGICS:
        raise PcapError(f"{name}: not a pcap file (magic {magic.hex()})")
    endian, mult = _MAGICS[magic]
    linktype = struct.unpack(endian + "I", hdr[20:24])[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    n = 0
    while True:
        rh = f.read(16)
        if not rh:
            return
        if len(rh) < 16:
            raise PcapError(f"{name}: record {n + 1} header is truncated")
        sec, frac, incl, _orig = rec.unpack(rh)
        if incl > 0x40000:
            raise PcapError(f"{name}: record {n + 1} claims {incl} bytes; the file is damaged")
        data = f.read(incl)
        if len(data) < incl:
            raise PcapError(f"{name}: record {n + 1} is truncated")
        n += 1
        yield Record(sec * 1_000_000_000 + frac * mult, strip_link(linktype, data), linktype)


class PcapWriter:
    """Write raw IP packets (LINKTYPE_RAW) with microsecond timestamps."""

    def __init__(self, f: BinaryIO, snaplen: int = 262144) -> None:
        self._f = f
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_RAW))

    def write(self, packet: bytes, ts_ns: int = 0) -> None:
        sec, ns = divmod(ts_ns, 1_000_000_000)
        self._f.write(struct.pack("<IIII", sec, ns // 1000, len(packet), len(packet)))
        self._f.write(packet)
