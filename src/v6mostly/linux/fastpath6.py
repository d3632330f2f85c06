"""The fast path's other half: IPv6 TCP and UDP into the TUN, translated to IPv4 by tc.

Why: the download's ACKs and the upload's data (IPv6 client, IPv4 server) otherwise wake
a worker per packet or super-packet: each is copied out of the TUN and back in, and a
TCP download through the PLAT was bound by the CPU those wake-ups ran on (perf: the
only CPU without idle time; kernel forwarding had 15 % idle).

What: a second ``clsact`` egress filter on the TUN (``linux/fastpath.py`` builds and
installs both) runs this program on each IPv6 packet the kernel routes into the TUN,
after NAPT66 has rewritten its source. For the common case it does what the worker does
(RFC 7915 §5.1, the same bytes but the Identification: ``tests/unit/test_fastpath.py``
compares it with the pure-Python core) and hands the IPv4 packet to the TUN's ingress.
Every other packet goes to the workers:

* no extension header: TCP, or UDP with a non-zero checksum, right after the IPv6
  header; the whole skb is the packet; a payload length (not a jumbogram);
* Hop Limit > 1 and not a multicast destination;
* not a super-packet: the IPv4 packet fits the IPv4 MTU (else Packet Too Big is the
  worker's); a super-packet goes whole, as the worker's write does (``gso``);
* the destination is in the *EAM map* (every IPv6 address of the EAM entries whose IPv4
  form is forwarded, and its IPv4 form), or is not the translator's own address and
  lies under pool6 with its IPv4 address in the pool6 bitmap (RFC 6052 §3.1, forwarded,
  outside every EAM entry: so no RFC 7757 §4.3 hairpinning here); the source likewise.
  There is no IPv6-to-IPv4 fast path when an EAM entry's IPv6 side overlaps pool6 (the
  EAM entry would win in the core) or pool6 could hold an illegal source (§5.1).

The IPv4 header (§5.1): version 4, IHL 5, the traffic class as TOS (0 with
``reset_traffic_class``), the total length, an Identification from a counter all CPUs
share (an atomic fetch-and-add, so that no two packets of a flow get the same one while
the counter goes round: RFC 6864 §4.1; the workers count up in slices of their own), DF
when the packet is over 1260 bytes, the Hop Limit (one less with
``decrement_ttl``) as TTL, the protocol, the header checksum, the addresses.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..addr.special import v4_multicast, v4_not_forwardable, v6_illegal_source
from .bpf_asm import FP as _FP
from .bpf_asm import Asm
from .fastpath import (
    _F_MARK_MANGLED_0,
    _F_PSEUDO_HDR,
    _H4,
    _H6,
    _KEY,
    _SKB_GSO_SIZE,
    _SKB_LEN,
    _SKB_PROTOCOL,
    ETH_P_IPV6,
    finish,
    header_sum,
    in_bitmap,
    load,
    lookup,
    rewrite,
)
from .fastpath_tables import MAX_DESTINATIONS, addresses

if TYPE_CHECKING:
    from ..siit.translator import Translator

_CSUM_DIFF = 28
#: ``lock *(u32 *)(dst + off) += src`` with the old value back in ``src``
#: (BPF_STX | BPF_ATOMIC | BPF_W, imm BPF_ADD | BPF_FETCH).
_ATOMIC_FETCH_ADD_W = (0xC3, 0x01)
#: RFC 7915 §5.1: DF is set on a translated packet larger than this.
DF_OVER = 1260


@dataclass(frozen=True)
class Settings6:
    """What the IPv6-to-IPv4 program bakes in."""

    #: pool6's leading bytes (those before the first IPv4 byte) and the IPv4 bytes' places.
    head: bytes
    positions: tuple[int, int, int, int]
    ipv4_mtu: int
    decrement_ttl: bool
    reset_tc: bool
    own6: bytes | None
    ifindex: int
    base: int = 0


def eam_map(xl: Translator) -> dict[bytes, bytes] | str:
    """The EAM map's contents (IPv6 address to IPv4), or why there is no IPv6-to-IPv4
    fast path for translator ``xl``."""
    pool6 = xl.pool6
    if pool6 is None:
        return "no pool6"
    if v6_illegal_source(pool6.embed_unchecked(bytes(4))) or pool6.network.overlaps(
        ipaddress.IPv6Network("fe80::/10")
    ):
        return f"pool6 {pool6.network} holds illegal IPv6 sources"
    out: dict[bytes, bytes] = {}
    entries = xl.eam.entries if xl.eam else []
    for e in entries:
        if e.v6.overlaps(pool6.network):
            return f"EAM entry {e.v6} overlaps pool6 {pool6.network}"
    total = sum(e.v6.num_addresses for e in entries)
    if total > MAX_DESTINATIONS:
        return f"{total} EAM addresses, more than the map's {MAX_DESTINATIONS}"
    for addr in addresses([e.v6 for e in entries]):
        v6 = addr.packed
        v4 = xl.v6_to_v4_addr(v6)
        if v4 is None or v6_illegal_source(v6) or v6 == xl.ipv6_address or v6[0] == 0xFF:
            continue
        if v4_multicast(v4) or v4_not_forwardable(v4):
            continue
        out[v6] = v4
    return out


def program6(s: Settings6, eam: int, pool6: int, counters: int, ident: int) -> bytes:
    """The IPv6-to-IPv4 fast path as eBPF bytecode (the module doc says what it takes)."""
    a = Asm()
    b = s.base
    a.alux("mov", 6, 1)  # r6 = skb
    a.ldx(4, 2, 6, _SKB_PROTOCOL)
    a.jmp("jne", 2, struct.unpack("<H", struct.pack("!H", ETH_P_IPV6))[0], "pass")
    # the IPv6 header and the first 8 bytes of TCP/UDP onto the stack
    load(a, b, _H6, 48)
    a.ldx(1, 2, _FP, _H6)
    a.alu("rsh", 2, 4)
    a.jmp("jne", 2, 6, "pass")  # not version 6 (never routed)
    a.ldx(2, 2, _FP, _H6 + 4)
    a.be(2, 16)
    a.jmp("jeq", 2, 0, "pass")  # a jumbogram, or nothing after the header
    a.alu("add", 2, b + 40)
    a.ldx(4, 3, 6, _SKB_LEN)
    a.jmpx("jne", 2, 3, "pass")  # the skb is the packet: no trailer, not truncated
    # TCP (checksum at 16) or UDP (at 6, never zero here) right after the header
    a.ldx(1, 2, _FP, _H6 + 6)
    a.alu("mov", 7, b + 20 + 16)
    a.alu("mov", 8, _F_PSEUDO_HDR)
    a.jmp("jeq", 2, 6, "transport")
    a.jmp("jne", 2, 17, "pass")
    a.ldx(2, 2, _FP, _H6 + 40 + 6)
    a.jmp("jeq", 2, 0, "pass")
    a.alu("mov", 7, b + 20 + 6)
    a.alu("mov", 8, _F_PSEUDO_HDR | _F_MARK_MANGLED_0)
    a.label("transport")
    a.ldx(1, 2, _FP, _H6 + 7)
    a.jmp("jle", 2, 1, "pass")  # Hop Limit 0 or 1: Time Exceeded is the worker's
    a.ldx(1, 2, _FP, _H6 + 24)
    a.jmp("jeq", 2, 0xFF, "pass")  # multicast: not translated (§1.3)
    # the size: a lone packet over the IPv4 MTU gets Packet Too Big from a worker
    a.ldx(4, 3, 6, _SKB_GSO_SIZE)
    a.jmp("jne", 3, 0, "sized")
    a.ldx(2, 2, _FP, _H6 + 4)
    a.be(2, 16)
    a.alu("add", 2, 20)
    a.jmp("jgt", 2, s.ipv4_mtu, "pass")
    a.label("sized")
    # the pool6 bitmap (r9)
    a.st(4, _FP, _KEY, 0)
    lookup(a, pool6)
    a.alux("mov", 9, 0)
    # the destination: an EAM address, else (not the translator's own) through pool6
    lookup(a, eam, miss="dst_pool6", key=_H6 + 24)
    a.ldx(4, 2, 0, 0)
    a.stx(4, _FP, _H4 + 16, 2)
    a.ja("source")
    a.label("dst_pool6")
    if s.own6 is not None:
        for i in range(0, 16, 4):
            a.ldx(4, 2, _FP, _H6 + 24 + i)
            a.jmp("jne", 2, struct.unpack("<I", s.own6[i : i + 4])[0], "not_own")
        a.ja("pass")  # answered by the worker
        a.label("not_own")
    _extract(a, s, _H6 + 24, _H4 + 16)
    a.label("source")
    lookup(a, eam, miss="src_pool6", key=_H6 + 8)
    a.ldx(4, 2, 0, 0)
    a.stx(4, _FP, _H4 + 12, 2)
    a.ja("header")
    a.label("src_pool6")
    _extract(a, s, _H6 + 8, _H4 + 12)
    a.label("header")
    _v4_header(a, s, ident)
    rewrite(a, b, (_H6 + 8, 32), (_H4 + 12, 8), 0x0800, (_H4, 20))
    finish(a, counters, s.ifindex, 1)
    return a.assemble()


def _extract(a: Asm, s: Settings6, v6: int, v4: int) -> None:
    """The IPv4 address in the IPv6 address at ``fp + v6`` (RFC 6052 §2.2) to ``fp + v4``
    if it is under pool6 and its /16 is set in the bitmap (r9); else pass."""
    for i, byte in enumerate(s.head):
        a.ldx(1, 2, _FP, v6 + i)
        a.jmp("jne", 2, byte, "pass")
    for i, pos in enumerate(s.positions):
        a.ldx(1, 2, _FP, v6 + pos)
        a.stx(1, _FP, v4 + i, 2)
    in_bitmap(a, v4)


def _v4_header(a: Asm, s: Settings6, ident: int) -> None:
    """The 20-byte IPv4 header at ``fp + _H4`` (the addresses are there already)."""
    a.st(1, _FP, _H4, 0x45)
    if s.reset_tc:
        a.st(1, _FP, _H4 + 1, 0)
    else:  # the traffic class: the low nibble of byte 0 and the high nibble of byte 1
        a.ldx(1, 2, _FP, _H6)
        a.alu("and", 2, 0xF)
        a.alu("lsh", 2, 4)
        a.ldx(1, 3, _FP, _H6 + 1)
        a.alu("rsh", 3, 4)
        a.alux("or", 2, 3)
        a.stx(1, _FP, _H4 + 1, 2)
    a.ldx(2, 2, _FP, _H6 + 4)
    a.be(2, 16)
    a.alu("add", 2, 20)
    a.st(2, _FP, _H4 + 6, 0)
    a.jmp("jle", 2, DF_OVER, "no_df")
    a.st(1, _FP, _H4 + 6, 0x40)
    a.label("no_df")
    a.be(2, 16)
    a.stx(2, _FP, _H4 + 2, 2)
    a.st(4, _FP, _KEY, 0)
    lookup(a, ident)
    a.alu("mov", 1, 1)
    a.emit(_ATOMIC_FETCH_ADD_W[0], 0, 1, 0, _ATOMIC_FETCH_ADD_W[1])
    a.alu("add", 1, 1)  # the next value, as the workers' next_ip_id
    a.be(1, 16)
    a.stx(2, _FP, _H4 + 4, 1)
    a.ldx(1, 2, _FP, _H6 + 7)
    if s.decrement_ttl:
        a.alu("sub", 2, 1)
    a.stx(1, _FP, _H4 + 8, 2)
    a.ldx(1, 2, _FP, _H6 + 6)
    a.stx(1, _FP, _H4 + 9, 2)
    a.st(2, _FP, _H4 + 10, 0)
    # the header checksum: the complement of the folded 16-bit one's complement sum
    header_sum(a, _H4)
    a.alu("mov", 1, 0xFFFF)
    a.alux("sub", 1, 0)
    a.stx(2, _FP, _H4 + 10, 1)


def settings6(xl: Translator, ifindex: int, base: int) -> Settings6:
    from ..addr.rfc6052 import V4_POSITIONS

    assert xl.pool6 is not None
    positions = V4_POSITIONS[xl.pool6.length]
    return Settings6(
        head=xl.pool6.embed_unchecked(bytes(4))[: positions[0]],
        positions=positions,
        ipv4_mtu=xl.ipv4_mtu,
        decrement_ttl=xl.decrement_ttl,
        reset_tc=xl.reset_tc,
        own6=xl.ipv6_address,
        ifindex=ifindex,
        base=base,
    )
