"""The PLAT's in-kernel fast path: IPv4 TCP and UDP into the TUN, translated by tc.

Why: a bulk download through the PLAT (IPv4 server, IPv6 client) is bound by the
worker's CPU. Each 64 KB super-packet is copied out of the TUN and back in, and
the kernel work that follows the write (forwarding, NAPT66, the client's TCP
receive and, through its ACK, the server's next send) runs in that one worker's
``write()`` (docs/profile-small-packets.md §5). Kernel forwarding has no such
serialisation point.

What: a ``clsact`` egress filter on the TUN (``[tun] fastpath``, on by default;
``plat`` and ``siit``) runs this program on each IPv4 packet the kernel routes
into the TUN, before it is queued for a worker. For the
common case it does what the worker would do (RFC 7915 §4.1, the same bytes:
``tests/unit/test_fastpath.py`` runs it on the conformance corpus and generated
packets with ``BPF_PROG_TEST_RUN`` and compares with the pure-Python core) and
hands the IPv6 packet to the TUN's *ingress* (``bpf_redirect(tun,
BPF_F_INGRESS)``), where it enters the IPv6 stack exactly as a packet a worker
writes does: conntrack and NAPT66 see it, the routes forward it, RPS spreads it.
Every other packet is left alone (``TC_ACT_UNSPEC``) and goes to the workers,
which stay the reference and the slow path:

* IPv4 header without options, a valid header checksum, not a fragment, TTL > 1,
  the whole skb is the packet (no trailer);
* TCP, or UDP with a non-zero checksum;
* the size: with DF no larger than the TUN's MTU once translated, without DF no
  larger than ``lowest_ipv6_mtu`` (a GSO super-packet: each segment; with DF the
  kernel's own forwarding checks its segments, as for the worker's write);
* the destination is in the *destination map* (a hash map the service fills with
  every forwardable address of the EAM entries and its IPv6 form, as the core
  maps it), or is not the translator's own address and maps through pool6; the
  source maps through pool6. An address maps through pool6 when its /16 is set
  in the *pool6 bitmap*: the /16s that map through pool6 as a whole (RFC 6052
  §3.1 for the Well-Known Prefix, RFC 1812 §5.3.7) and lie outside every EAM
  entry. The IPv6 form is pool6's address for 0.0.0.0 with the four bytes put
  where RFC 6052 §2.2 puts them for the prefix length.

The translation: ``bpf_skb_change_proto`` (20 bytes more room, a GSO type of
TCPV4 becomes TCPV6), the 40-byte IPv6 header stored over the old one, the
transport checksum updated for the pseudo-header (``bpf_l4_csum_replace`` with
``BPF_F_PSEUDO_HDR``, which also handles a partial checksum). Per-CPU counters
hold packets, octets and GSO super-packets (``rps = "auto"`` follows the last).

IPv6 TCP and UDP routed into the TUN get the same treatment from a second program on
the same hook (``linux/fastpath6.py``, built and installed with this one, sharing the
pool6 bitmap and the counters): an upload's data and a download's ACKs.

The program (about 230 instructions) is assembled here with ``linux/bpf_asm.Asm``,
like the smaller programs of ``linux/bpf.py`` and ``linux/steering.py``: no compiler
at run time or at install, nothing but the ``bpf(2)`` system call (``linux/bpf.py``)
and pyroute2 for the filter. It is rebuilt (and replaced
on the TUN) when the configuration or the TUN's MTU changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .bpf import (
    BPF_PROG_TEST_RUN,
    CLSACT_EGRESS,
    BpfError,
    attach_cls_bpf,
    bpf_syscall,
    detach_cls_bpf,
    load_sched_cls,
    map_create,
    map_update,
)
from .bpf_asm import FP as _FP
from .bpf_asm import Asm
from .fastpath_tables import _COUNTERS, DIRECTIONS, Tables, tables
from .fastpath_tables import read_counters as read_counters

if TYPE_CHECKING:
    from ..siit.translator import Translator
    from .fastpath6 import Settings6

BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY = 1, 2, 6
PROG_NAME = "v6m_plat_fast"
#: Our filters' preferences on the TUN's egress (IPv4, IPv6).
PREF, PREF6 = 49170, 49171
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
PROG6_NAME = "v6m_plat_fast6"
TC_ACT_UNSPEC, TC_ACT_SHOT = -1, 2

# helpers (enum bpf_func_id)
_LOOKUP, _STORE, _L4CSUM, _REDIRECT, _LOAD, _CSUM_DIFF, _CHANGE_PROTO = 1, 9, 11, 23, 26, 28, 31
_CHANGE_HEAD, _REDIRECT_NEIGH = 43, 152
_F_RECOMPUTE_CSUM, _F_INGRESS, _F_PSEUDO_HDR, _F_MARK_MANGLED_0 = 1, 1, 16, 32
# struct __sk_buff offsets
_SKB_LEN, _SKB_PROTOCOL, _SKB_GSO_SIZE = 0, 16, 176


@dataclass(frozen=True)
class Settings:
    """What the program bakes in (immediates); the maps hold the addresses."""

    #: pool6's address for 0.0.0.0 (RFC 6052 §2.2) and where the IPv4 bytes go in it.
    template: bytes
    positions: tuple[int, int, int, int]
    ipv6_mtu: int
    frag_mtu: int
    decrement_ttl: bool
    reset_tc: bool
    #: The translator's own IPv4 address (answered by the workers), if it has one.
    own4: bytes | None
    #: The TUN: the translated packet enters its ingress.
    ifindex: int
    #: Where the IP header starts: 0 on the TUN, 14 under BPF_PROG_TEST_RUN.
    base: int = 0
    #: Not 0: the translated packet leaves through this interface instead
    #: (``bpf_redirect_neigh``: the CLAT's IPv4 from the host out of its uplink).
    neigh: int = 0


@dataclass(frozen=True)
class Maps:
    dst: int
    pool6: int
    counters: int


# stack layout (offsets from the frame pointer)
_KEY, _H4, _H6 = -8, -48, -96


def program(s: Settings, m: Maps) -> bytes:
    """The fast path as eBPF bytecode (the module doc says what it takes and does)."""
    a = Asm()
    b = s.base
    a.alux("mov", 6, 1)  # r6 = skb
    a.ldx(4, 2, 6, _SKB_PROTOCOL)
    a.jmp("jne", 2, struct.unpack("<H", struct.pack("!H", ETH_P_IP))[0], "pass")
    # the IPv4 header and the first 8 bytes of TCP/UDP onto the stack
    load(a, b, _H4, 28)
    a.ldx(1, 2, _FP, _H4)
    a.jmp("jne", 2, 0x45, "pass")  # IPv4 without options
    a.ldx(2, 2, _FP, _H4 + 6)
    a.be(2, 16)
    a.alu("and", 2, 0x3FFF)
    a.jmp("jne", 2, 0, "pass")  # MF or an offset: a fragment
    a.ldx(1, 2, _FP, _H4 + 8)
    a.jmp("jle", 2, 1, "pass")  # TTL 0 or 1: Time Exceeded is the worker's
    a.ldx(2, 2, _FP, _H4 + 2)
    a.be(2, 16)
    a.alu("add", 2, b)
    a.ldx(4, 3, 6, _SKB_LEN)
    a.jmpx("jne", 2, 3, "pass")  # the skb is the packet: no trailer, not truncated
    # the header checksum: the 16-bit one's complement sum of a valid header is 0xffff
    header_sum(a, _H4)
    a.jmp("jne", 0, 0xFFFF, "pass")
    # TCP (checksum at 16) or UDP (at 6, never zero here: §4.5 is the worker's)
    a.ldx(1, 2, _FP, _H4 + 9)
    a.alu("mov", 7, b + 40 + 16)
    a.alu("mov", 8, _F_PSEUDO_HDR)
    a.jmp("jeq", 2, 6, "sized")
    a.jmp("jne", 2, 17, "pass")
    a.ldx(2, 2, _FP, _H4 + 26)
    a.jmp("jeq", 2, 0, "pass")
    a.alu("mov", 7, b + 40 + 6)
    a.alu("mov", 8, _F_PSEUDO_HDR | _F_MARK_MANGLED_0)
    a.label("sized")
    _size_check(a, s)
    # the pool6 bitmap (r9, kept across the calls below)
    a.st(4, _FP, _KEY, 0)
    lookup(a, m.pool6)
    a.alux("mov", 9, 0)
    # the destination: an EAM address (the map's IPv6 form), else through pool6
    a.ldx(4, 2, _FP, _H4 + 16)
    a.stx(4, _FP, _KEY, 2)
    lookup(a, m.dst, miss="dst_pool6")
    for i in range(0, 16, 4):
        a.ldx(4, 2, 0, i)
        a.stx(4, _FP, _H6 + 24 + i, 2)
    a.ja("source")
    a.label("dst_pool6")
    if s.own4 is not None:
        a.ldx(4, 2, _FP, _H4 + 16)
        a.jmp("jeq", 2, struct.unpack("<I", s.own4)[0], "pass")  # answered by the worker
    _pool6(a, s, _H4 + 16, _H6 + 24)
    a.label("source")  # an EAM address (the CLAT's own), else through pool6
    a.ldx(4, 2, _FP, _H4 + 12)
    a.stx(4, _FP, _KEY, 2)
    lookup(a, m.dst, miss="src_pool6")
    for i in range(0, 16, 4):
        a.ldx(4, 2, 0, i)
        a.stx(4, _FP, _H6 + 8 + i, 2)
    a.ja("header")
    a.label("src_pool6")
    _pool6(a, s, _H4 + 12, _H6 + 8)
    a.label("header")
    _v6_header(a, s)
    rewrite(a, b, (_H4 + 12, 8), (_H6 + 8, 32), 0x86DD, (_H6, 40))
    finish(a, m.counters, s.ifindex, 0, s.neigh)
    return a.assemble()


def header_sum(a: Asm, at: int) -> None:
    """r0 = the folded 16-bit one's complement sum of the 20-byte IPv4 header at ``fp + at``."""
    a.alu("mov", 1, 0)
    a.alu("mov", 2, 0)
    a.alux("mov", 3, _FP)
    a.alu("add", 3, at)
    a.alu("mov", 4, 20)
    a.alu("mov", 5, 0)
    a.call(_CSUM_DIFF)
    a.emit(0xBC, 0, 0)  # w0 = w0 (the 32-bit sum)
    for _ in range(2):
        a.alux("mov", 1, 0)
        a.alu("rsh", 1, 16)
        a.alu("and", 0, 0xFFFF)
        a.alux("add", 0, 1)


def rewrite(
    a: Asm,
    base: int,
    old: tuple[int, int],
    new: tuple[int, int],
    ethertype: int,
    header: tuple[int, int],
) -> None:
    """Turn the packet into the other family: the transport checksum's change (the
    addresses ``old`` to ``new``, stack offset and size: the length and the protocol sum
    the same), ``bpf_skb_change_proto``, the new IP ``header`` (stack offset and size)
    stored at ``base``, and the transport checksum (r7: where, r8: the flags) updated."""
    a.alux("mov", 1, _FP)
    a.alu("add", 1, old[0])
    a.alu("mov", 2, old[1])
    a.alux("mov", 3, _FP)
    a.alu("add", 3, new[0])
    a.alu("mov", 4, new[1])
    a.alu("mov", 5, 0)
    a.call(_CSUM_DIFF)
    a.alux("mov", 9, 0)
    # from here on the packet changes: a failure drops it (it is half translated)
    a.alux("mov", 1, 6)
    a.alu("mov", 2, struct.unpack("<H", struct.pack("!H", ethertype))[0])
    a.alu("mov", 3, 0)
    a.call(_CHANGE_PROTO)
    a.jmp("jne", 0, 0, "pass")  # nothing changed yet (no room): the worker's
    a.alux("mov", 1, 6)
    a.alu("mov", 2, base)
    a.alux("mov", 3, _FP)
    a.alu("add", 3, header[0])
    a.alu("mov", 4, header[1])
    a.alu("mov", 5, _F_RECOMPUTE_CSUM)
    a.call(_STORE)
    a.jmp("jne", 0, 0, "drop")
    a.alux("mov", 1, 6)
    a.alux("mov", 2, 7)
    a.alu("mov", 3, 0)
    a.alux("mov", 4, 9)
    a.alux("mov", 5, 8)
    a.call(_L4CSUM)
    a.jmp("jne", 0, 0, "drop")


def finish(a: Asm, counters: int, ifindex: int, direction: int, neigh: int = 0) -> None:
    """Count the translated packet (per CPU and ``direction``, an index of ``DIRECTIONS``:
    packets, octets, super-packets) and hand it to ``ifindex``'s ingress, or out of
    ``neigh`` if that is not 0; then the ``pass`` and ``drop`` exits."""
    a.st(4, _FP, _KEY, direction)
    lookup(a, counters, miss="redirect")
    a.ldx(8, 1, 0, 0)
    a.alu("add", 1, 1)
    a.stx(8, 0, 0, 1)
    a.ldx(4, 2, 6, _SKB_LEN)
    a.ldx(8, 1, 0, 8)
    a.alux("add", 1, 2)
    a.stx(8, 0, 8, 1)
    a.ldx(4, 2, 6, _SKB_GSO_SIZE)
    a.jmp("jeq", 2, 0, "redirect")
    a.ldx(8, 1, 0, 16)
    a.alu("add", 1, 1)
    a.stx(8, 0, 16, 1)
    a.label("redirect")
    if neigh:  # an Ethernet header first (from an L3 device): redirect_neigh fills it
        a.alux("mov", 1, 6)
        a.alu("mov", 2, 14)
        a.alu("mov", 3, 0)
        a.call(_CHANGE_HEAD)
        a.jmp("jne", 0, 0, "drop")
        a.st(2, _FP, _KEY, struct.unpack("<H", struct.pack("!H", 0x86DD))[0])
        a.alux("mov", 1, 6)
        a.alu("mov", 2, 12)
        a.alux("mov", 3, _FP)
        a.alu("add", 3, _KEY)
        a.alu("mov", 4, 2)
        a.alu("mov", 5, 0)
        a.call(_STORE)
        a.jmp("jne", 0, 0, "drop")
        a.alu("mov", 1, neigh)
        a.alu("mov", 2, 0)
        a.alu("mov", 3, 0)
        a.alu("mov", 4, 0)
        a.call(_REDIRECT_NEIGH)
    else:
        a.alu("mov", 1, ifindex)
        a.alu("mov", 2, _F_INGRESS)
        a.call(_REDIRECT)
    a.exit()
    a.label("pass")
    a.alu("mov", 0, TC_ACT_UNSPEC)
    a.exit()
    a.label("drop")
    a.alu("mov", 0, TC_ACT_SHOT)
    a.exit()


def load(a: Asm, base: int, to: int, n: int) -> None:
    """``bpf_skb_load_bytes(skb, base, fp + to, n)``; a short packet passes."""
    a.alux("mov", 1, 6)
    a.alu("mov", 2, base)
    a.alux("mov", 3, _FP)
    a.alu("add", 3, to)
    a.alu("mov", 4, n)
    a.call(_LOAD)
    a.jmp("jne", 0, 0, "pass")


def _pool6(a: Asm, s: Settings, v4: int, v6: int) -> None:
    """The IPv4 address at ``fp + v4`` through pool6 (RFC 6052 §2.2) to ``fp + v6``, if
    its /16 is set in the bitmap (r9); else pass."""
    in_bitmap(a, v4)
    for i in range(0, 16, 4):
        a.st(4, _FP, v6 + i, struct.unpack("<I", s.template[i : i + 4])[0])
    for i, pos in enumerate(s.positions):
        a.ldx(1, 2, _FP, v4 + i)
        a.stx(1, _FP, v6 + pos, 2)


def in_bitmap(a: Asm, v4: int) -> None:
    """Pass unless the /16 of the IPv4 address at ``fp + v4`` is set in the pool6 bitmap
    (r9): it maps through pool6, is forwarded and lies outside every EAM entry."""
    a.ldx(1, 2, _FP, v4)
    a.alu("lsh", 2, 5)
    a.ldx(1, 3, _FP, v4 + 1)
    a.alu("rsh", 3, 3)
    a.alux("or", 2, 3)  # (first octet << 8 | second) >> 3: the byte of the /16's bit
    a.alux("mov", 4, 9)
    a.alux("add", 4, 2)
    a.ldx(1, 2, 4, 0)
    a.ldx(1, 3, _FP, v4 + 1)
    a.alu("and", 3, 7)
    a.alux("rsh", 2, 3)
    a.alu("and", 2, 1)
    a.jmp("jeq", 2, 0, "pass")


def lookup(a: Asm, fd: int, miss: str = "pass", key: int = _KEY) -> None:
    """``r0 = bpf_map_lookup_elem(map, fp + key)``; not found jumps to ``miss``."""
    a.ld_map(1, fd)
    a.alux("mov", 2, _FP)
    a.alu("add", 2, key)
    a.call(_LOOKUP)
    a.jmp("jeq", 0, 0, miss)


def _size_check(a: Asm, s: Settings) -> None:
    """r2 = the size of the translated packet (a super-packet: of one segment); pass when
    it is over the limit: the TUN's MTU with DF, ``frag_mtu`` without (§4 fragments).
    With DF a super-packet goes whole: the kernel checks its segments after the
    translation, as it does after the worker's write."""
    b = s.base
    a.ldx(2, 2, _FP, _H4 + 6)
    a.be(2, 16)
    a.alu("and", 2, 0x4000)
    a.ldx(4, 3, 6, _SKB_GSO_SIZE)
    a.jmp("jeq", 3, 0, "one")
    a.jmp("jne", 2, 0, "fits")  # DF super-packet
    a.ldx(1, 2, _FP, _H4 + 9)
    a.jmp("jeq", 2, 17, "udp_seg")
    load(a, b + 32, _KEY, 1)  # TCP data offset
    a.ldx(1, 2, _FP, _KEY)
    a.alu("rsh", 2, 4)
    a.alu("lsh", 2, 2)
    a.ldx(4, 3, 6, _SKB_GSO_SIZE)
    a.alux("add", 2, 3)
    a.alu("add", 2, 40)
    a.ja("frag_limit")
    a.label("udp_seg")
    a.ldx(4, 2, 6, _SKB_GSO_SIZE)
    a.alu("add", 2, 48)
    a.ja("frag_limit")
    a.label("one")
    a.ldx(2, 3, _FP, _H4 + 2)
    a.be(3, 16)
    a.alu("add", 3, 20)
    a.jmp("jeq", 2, 0, "no_df")
    a.jmp("jgt", 3, s.ipv6_mtu, "pass")
    a.ja("fits")
    a.label("no_df")
    a.alux("mov", 2, 3)
    a.label("frag_limit")
    a.jmp("jgt", 2, s.frag_mtu, "pass")
    a.label("fits")


def _v6_header(a: Asm, s: Settings) -> None:
    """Version, traffic class, flow label 0, payload length, next header, hop limit."""
    if s.reset_tc:
        a.st(4, _FP, _H6, 0x60)
    else:
        a.ldx(1, 2, _FP, _H4 + 1)
        a.alux("mov", 3, 2)
        a.alu("rsh", 2, 4)
        a.alu("or", 2, 0x60)
        a.stx(1, _FP, _H6, 2)
        a.alu("and", 3, 0xF)
        a.alu("lsh", 3, 4)
        a.stx(1, _FP, _H6 + 1, 3)
        a.st(2, _FP, _H6 + 2, 0)
    a.ldx(2, 2, _FP, _H4 + 2)
    a.be(2, 16)
    a.alu("sub", 2, 20)
    a.be(2, 16)
    a.stx(2, _FP, _H6 + 4, 2)
    a.ldx(1, 2, _FP, _H4 + 9)
    a.stx(1, _FP, _H6 + 6, 2)
    a.ldx(1, 2, _FP, _H4 + 8)
    if s.decrement_ttl:
        a.alu("sub", 2, 1)
    a.stx(1, _FP, _H6 + 7, 2)


# -- the fast path on a TUN ---------------------------------------------------------


class FastPath:
    """The maps and the program (:func:`install` puts it on a TUN)."""

    def __init__(
        self,
        t: Tables,
        s: Settings,
        counters: int | None = None,
        six: tuple[dict[bytes, bytes], Settings6] | str = "not asked for",
    ) -> None:
        """``counters``: a counter map to go on counting in (an earlier fast path's, so
        that a rebuild does not start the counts again); a new one if None. ``six``: the
        EAM map and settings of the IPv6-to-IPv4 program (``linux/fastpath6``), or why
        there is none."""
        from .fastpath6 import program6

        self.fds: list[int] = []
        #: the IPv6-to-IPv4 program, or None (then ``why6`` says why)
        self.prog6: int | None = None
        self.why6 = six if isinstance(six, str) else ""
        try:
            dst = self._map(BPF_MAP_TYPE_HASH, 4, 16, max(1, len(t.destinations)), "v6m_fast_dst")
            bitmap = self._map(BPF_MAP_TYPE_ARRAY, 4, 8192, 1, "v6m_fast_pool6")
            if counters is None:
                cnt = self._map(
                    BPF_MAP_TYPE_PERCPU_ARRAY, 4, _COUNTERS * 8, len(DIRECTIONS), "v6m_fast_cnt"
                )
            else:
                cnt = os.dup(counters)
                self.fds.append(cnt)
            for k, v in t.destinations.items():
                map_update(dst, k, v)
            map_update(bitmap, b"\0\0\0\0", t.pool6_bitmap)
            self.maps = Maps(dst, bitmap, cnt)
            self.prog = load_sched_cls(program(s, self.maps), PROG_NAME)
            self.fds.append(self.prog)
            if not isinstance(six, str):
                eam6 = self._map(BPF_MAP_TYPE_HASH, 16, 4, max(1, len(six[0])), "v6m_fast_eam6")
                for k, v in six[0].items():
                    map_update(eam6, k, v)
                ident = self._map(BPF_MAP_TYPE_ARRAY, 4, 4, 1, "v6m_fast_ident")
                map_update(ident, b"\0\0\0\0", os.urandom(4))  # a random start, as a worker's
                code = program6(six[1], eam6, bitmap, cnt, ident)
                self.prog6 = load_sched_cls(code, PROG6_NAME)
                self.fds.append(self.prog6)
        except BaseException:
            self.close()
            raise
        self.destinations = len(t.destinations)

    def _map(self, kind: int, key: int, value: int, entries: int, name: str) -> int:
        fd = map_create(kind, key, value, entries, name)
        self.fds.append(fd)
        return fd

    def counters(self, direction: int | None = None) -> tuple[int, int, int]:
        return read_counters(self.maps.counters, direction)

    def test_run(self, pkt: bytes, gso_size: int = 0) -> tuple[int, bytes]:
        """Run the program on ``pkt`` (``BPF_PROG_TEST_RUN``: the kernel wants an Ethernet
        header first, the program must be built with ``base = 14``): its return value
        and the packet after it, without the Ethernet header."""
        six = pkt[:1] >= b"\x60"
        eth = b"\x02" * 12 + (b"\x86\xdd" if six else b"\x08\x00")
        prog = self.prog6 if six and self.prog6 is not None else self.prog
        data = ctypes.create_string_buffer(eth + pkt, len(eth) + len(pkt))
        out = ctypes.create_string_buffer(len(eth) + len(pkt) + 64)
        ctx = bytearray(192)
        struct.pack_into("<I", ctx, _SKB_GSO_SIZE, gso_size)
        cbuf = ctypes.create_string_buffer(bytes(ctx), len(ctx))
        attr = struct.pack(
            "<IIIIQQIIIIQQ",
            prog,
            0,
            len(data),
            len(out),
            ctypes.addressof(data),
            ctypes.addressof(out),
            1,
            0,
            len(ctx),
            0,
            ctypes.addressof(cbuf),
            0,
        )
        abuf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
        bpf_syscall(BPF_PROG_TEST_RUN, abuf)
        ret, _, size_out = struct.unpack_from("<iII", abuf.raw, 4)
        return ret, out.raw[len(eth) : size_out]

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def build(
    xl: Translator,
    ifindex: int,
    base: int = 0,
    counters: int | None = None,
    neigh: int = 0,
    base6: int | None = None,
) -> FastPath | str:
    """The fast path for translator ``xl`` on the TUN ``ifindex``, or why there is none
    (``counters``: see :class:`FastPath`). The PLAT's: both programs on the TUN's egress,
    their packets into its ingress. The CLAT's (``services/clat_fast``): ``neigh``, the
    uplink the IPv6 leaves by, and ``base6 = 14``, the IPv6 program on its ingress."""
    t = tables(xl)
    if isinstance(t, str):
        return t
    from .fastpath6 import eam_map, settings6

    eam6 = eam_map(xl)
    b6 = base if base6 is None else base6
    six = eam6 if isinstance(eam6, str) else (eam6, settings6(xl, ifindex, b6))
    s = Settings(
        template=t.template,
        positions=t.positions,
        ipv6_mtu=xl.ipv6_mtu,
        frag_mtu=xl.frag_mtu,
        decrement_ttl=xl.decrement_ttl,
        reset_tc=xl.reset_tc,
        own4=xl.ipv4_address,
        ifindex=ifindex,
        base=base,
        neigh=neigh,
    )
    try:
        return FastPath(t, s, counters, six)
    except (BpfError, OSError) as e:
        return str(e)


def install(tun: str, fast: FastPath) -> bool:
    """Put ``fast``'s program on ``tun``'s egress (adding ``clsact`` if needed), in place of
    an earlier one of ours. Returns True when the qdisc was added here."""
    added = attach_cls_bpf(tun, fast.prog, CLSACT_EGRESS, ETH_P_IP, PREF, PROG_NAME)
    if fast.prog6 is not None:
        attach_cls_bpf(tun, fast.prog6, CLSACT_EGRESS, ETH_P_IPV6, PREF6, PROG6_NAME)
    else:
        detach_cls_bpf(tun, CLSACT_EGRESS, ETH_P_IPV6, PREF6, False)
    return added


def uninstall(tun: str, remove_qdisc: bool) -> None:
    """Take our filter (and the qdisc, if we added it) off ``tun``. Never raises."""
    detach_cls_bpf(tun, CLSACT_EGRESS, ETH_P_IPV6, PREF6, False)
    detach_cls_bpf(tun, CLSACT_EGRESS, ETH_P_IP, PREF, remove_qdisc)
