"""What the fast path's maps hold, from the translator's configuration
(``linux/fastpath.py`` builds the programs around them)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..addr.rfc6052 import V4_POSITIONS, WKP
from ..addr.special import v4_not_forwardable
from ..siit.verdict import DIR_NAMES
from .bpf import map_lookup, possible_cpus

if TYPE_CHECKING:
    from ..siit.translator import Translator

#: Per-CPU counters: packets, octets, super-packets; one entry per direction.
_COUNTERS = 3
DIRECTIONS = DIR_NAMES
#: The most destination addresses the map takes (the EAM entries' IPv4 side).
MAX_DESTINATIONS = 65536


@dataclass(frozen=True)
class Tables:
    destinations: dict[bytes, bytes]
    #: 8192 bytes, bit ``n & 7`` of byte ``n >> 3``: the /16 ``n`` maps through pool6
    #: (the destination map is searched first, as EAM comes before pool6).
    pool6_bitmap: bytes
    template: bytes
    positions: tuple[int, int, int, int]


def tables(xl: Translator) -> Tables | str:
    """The maps' contents for translator ``xl``, or why there is no fast path."""
    from ..siit.accel import wkp_table

    pool6 = xl.pool6
    if pool6 is None:
        return "no pool6"
    template = pool6.embed_unchecked(bytes(4))
    positions = V4_POSITIONS[pool6.length]
    eam_v4 = [e.v4 for e in xl.eam.entries] if xl.eam else []
    dst: dict[bytes, bytes] = {}
    for addr in addresses(eam_v4):
        key = addr.packed
        if key == xl.ipv4_address or v4_not_forwardable(key):
            continue
        v6 = xl.v4_to_v6_addr(key)
        if v6 is not None:
            dst[key] = v6
    if pool6.network == WKP:
        ok = bytearray(wkp_table())
    else:  # RFC 1812 §5.3.7: 0/8, 127/8, 169.254/16, 224/4, 240/4 (special.py)
        ok = bytearray(b"\x01") * 65536
        for first in (0, 127, *range(224, 256)):
            ok[first << 8 : (first + 1) << 8] = bytes(256)
        ok[169 << 8 | 254] = 0
    for net in eam_v4:
        first = int(net.network_address) >> 16
        last = int(net.broadcast_address) >> 16
        ok[first : last + 1] = bytes(last - first + 1)
    bits = bytearray(8192)
    for n in range(65536):
        if ok[n]:
            bits[n >> 3] |= 1 << (n & 7)
    # what the bitmap says, checked against the translator on one address in 61 blocks
    for n in range(0, 65536, 61):
        probe = bytes((n >> 8, n & 255, 1, 1))
        want = bytearray(template)
        for i, pos in enumerate(positions):
            want[pos] = probe[i]
        mapped = xl.v4_to_v6_addr(probe) == bytes(want) and not v4_not_forwardable(probe)
        if ok[n] and not mapped:
            return f"the pool6 bitmap does not agree with the translator on {n >> 8}.{n & 255}/16"
    return Tables(dst, bytes(bits), template, positions)


def addresses(
    nets: Iterable[ipaddress.IPv4Network] | Iterable[ipaddress.IPv6Network],
) -> Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    n = 0
    for net in nets:
        for addr in net:
            if n == MAX_DESTINATIONS:
                return
            n += 1
            yield addr


def read_counters(fd: int, direction: int | None = None) -> tuple[int, int, int]:
    """Packets, octets and super-packets a counter map holds, over all CPUs, for one
    direction (an index of ``DIRECTIONS``) or both."""
    n = possible_cpus()
    total = [0, 0, 0]
    for d in range(len(DIRECTIONS)) if direction is None else (direction,):
        raw = map_lookup(fd, struct.pack("<I", d), _COUNTERS * 8 * n)
        vals = struct.unpack(f"<{_COUNTERS * n}Q", raw)
        for i in range(_COUNTERS):
            total[i] += sum(vals[i::_COUNTERS])
    return total[0], total[1], total[2]
