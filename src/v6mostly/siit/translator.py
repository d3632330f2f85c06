"""The public face of the SIIT core (RFC 7915).

Theory of operation
-------------------
``Translator.translate_into(buf, start, end)`` translates the packet in
``buf[start:end]`` *in place*. The caller guarantees ``start >= HEADROOM`` (20
bytes), so an IPv4 packet can grow into an IPv6 one without moving its payload:
the 40-byte IPv6 header is written over the IPv4 header plus the headroom. The
call returns ``(out_start, out_end)`` for the common case, or a code in
``out_start``:

* ``SLOW`` (-1): the packet needed a slow path (ICMP error translation,
  fragmentation, an ICMP error of our own); the packets to send are in
  ``translator.pending`` (a list the caller empties).
* ``DROPPED`` (-2): the packet was dropped; ``out_end`` is the ``Drop`` reason.

``Translator.translate(packet)`` is the convenient allocating API on top,
returning a :class:`~v6mostly.siit.verdict.Verdict`.

``translate_into`` is the C fast path when the optional extension is built
(``siit/accel.py``): it translates the common packets itself and hands every
other one, untouched, to ``translate_python``, the pure-Python core, which is
the reference (the two give the same bytes and counters).

The translator holds only configuration, counters and an IPv4 Identification
counter: no clock, no sockets, no randomness. Counters live in ``stats``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..addr.eam import EamEntry, EamTable
from ..addr.pool6791 import Pool6791
from ..addr.pref64 import is_neutral
from ..addr.rfc6052 import Pref64
from ..addr.special import v4_multicast, v4_not_forwardable, v6_illegal_source
from ..errors import ConfigError
from ..wire.checksum import sum_delta
from . import accel, v4_to_v6, v6_to_v4
from .ratelimit import (
    DEFAULT_BURST,
    DEFAULT_GLOBAL_BURST,
    DEFAULT_INTERVAL_MS,
    DEFAULT_RATE,
    IcmpRateLimiter,
)
from .verdict import DROPPED, SLOW, Drop, Stats, Verdict

HEADROOM = 20
#: Bound once: a global name is found faster than a module attribute, per packet.
_translate_4to6 = v4_to_v6.translate_4to6
_translate_6to4 = v6_to_v4.translate_6to4
_T = TypeVar("_T")


@dataclass
class TranslatorConfig:
    """Settings of one SIIT instance. Addresses are text; :class:`Translator` parses them."""

    pool6: str | None = None
    eam: list[tuple[str, str]] = field(default_factory=list)
    pool6791_v4: list[str] = field(default_factory=list)
    pool6791_v6: list[str] = field(default_factory=list)
    #: The translator's own addresses: the source of ICMP errors it originates.
    ipv4_address: str | None = None
    ipv6_address: str | None = None
    #: RFC 7915 §4: IPv4 packets with DF=0 are fragmented to fit this.
    lowest_ipv6_mtu: int = 1280
    #: Next-hop MTUs on each side (the TUN device's MTU in a TUN deployment).
    ipv6_mtu: int = 65535
    ipv4_mtu: int = 65535
    #: RFC 7915 §4.5: compute the checksum of unfragmented zero-checksum UDP/IPv4.
    amend_udp_checksum_zero: bool = True
    #: Answer IPv6 packets that arrive with Hop Limit 1 with Time Exceeded (RFC 7915
    #: §5.1). Off in a CLAT: there the IPv4 side is the host itself, the packet's
    #: destination, which accepts it whatever its hop limit.
    expire_hop_limit_6to4: bool = True
    #: Decrement TTL/Hop Limit here (Jool style). Off in a TUN deployment, where
    #: the kernel already decrements on the way in and on the way out.
    decrement_ttl: bool = False
    #: RFC 7915 §4.1/§5.1 "Traffic Class"/"TOS": copy by default, or zero it.
    reset_traffic_class: bool = False
    #: RFC 7757 §4.3 hairpinning between two EAM'd IPv6 nodes.
    hairpinning: bool = True
    #: First IPv4 Identification used for IPv6 packets without a Fragment Header.
    ip_id_seed: int = 0
    #: ``(index, count)``: this instance uses only the ``index``-th of ``count`` equal
    #: slices of the 16-bit Identification space, so the workers of one data plane
    #: never emit the same ID (RFC 6864 §4.1); ``ip_id_seed`` is an offset in the slice.
    ip_id_slice: tuple[int, int] = (0, 1)
    #: Rate limit of the ICMP errors the translator originates (RFC 4443 §2.4 (f),
    #: RFC 1812 §4.3.2.8), kernel defaults: per destination one error every
    #: ``icmp_ratelimit_ms`` with bursts of ``icmp_ratelimit_burst``; in total at most
    #: ``icmp_msgs_per_sec`` with bursts of ``icmp_msgs_burst``. 0 turns a bucket off.
    icmp_ratelimit_ms: int = DEFAULT_INTERVAL_MS
    icmp_ratelimit_burst: int = DEFAULT_BURST
    icmp_msgs_per_sec: float = DEFAULT_RATE
    icmp_msgs_burst: int = DEFAULT_GLOBAL_BURST
    #: Destinations that stand for many hosts (the PLAT's NAPT66 outer IPv6
    #: addresses): errors to them take only from the global bucket.
    icmp_ratelimit_shared: tuple[str, ...] = ()
    #: draft-ietf-v6ops-icmpext-xlat-v6only-source: the IPv4 source of a translated
    #: ICMPv6 error whose IPv6 source has no IPv4 mapping (an IPv6-only hop); the CLAT
    #: sets the IPv4 dummy address of RFC 7600, ``tables.DUMMY_IPV4`` (192.0.0.8).
    #: It replaces the RFC 6791 pool (and the pool's fallback to ``ipv4_address``),
    #: so configuring it together with ``pool6791_v4`` entries is refused.
    icmp_source_dummy: str | None = None
    #: Append an RFC 5837 Interface Information Object carrying that hop's IPv6
    #: address (in an RFC 4884 extension structure) to such errors when they become
    #: ICMPv4 Destination Unreachable or Time Exceeded. Off in the SIIT/PLAT (the Jool
    #: corpus expects no extension); the CLAT turns it on.
    icmp_ext_node_id: bool = False


def _check_mtu(name: str, value: int, low: int) -> int:
    if not isinstance(value, int) or not low <= value <= 65535:
        raise ConfigError(f"{name} = {value!r}: expected an integer from {low} to 65535")
    return value


def _addr(name: str, text: str | None, version: int) -> bytes | None:
    if text is None:
        return None
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{name} = {text!r}: expected an IPv{version} address") from None
    if a.version != version:
        raise ConfigError(f"{name} = {text!r}: expected an IPv{version} address")
    return a.packed


class Translator:
    """A stateless IP/ICMP translator (RFC 7915) with RFC 6052, RFC 7757 and RFC 6791."""

    #: ``translate_into(buf, start, end)``: translate ``buf[start:end]`` in place
    #: (``start >= 20``), see the module doc. The C fast path when ``accel`` is set,
    #: else ``translate_python``.
    translate_into: Callable[[bytearray, int, int], tuple[int, int]]

    def __init__(
        self,
        config: TranslatorConfig | None = None,
        stats: Stats | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock`` (e.g. ``time.monotonic``) is read only when the translator is about
        to send an ICMP error of its own (the rate limit); without one, ``now`` (an
        attribute the caller may set, as ``translate(packet, now)`` does) is used.
        """
        cfg = config or TranslatorConfig()
        self.config = cfg
        self.pool6: Pref64 | None = Pref64(cfg.pool6) if cfg.pool6 else None
        self.eam = EamTable([EamEntry.parse(a, b) for a, b in cfg.eam])
        if self.pool6 is None and not self.eam:
            raise ConfigError(
                "pool6: no pool6 prefix and no EAM entry; nothing could be translated"
            )
        self.ipv4_address = _addr("ipv4_address", cfg.ipv4_address, 4)
        self.ipv6_address = _addr("ipv6_address", cfg.ipv6_address, 6)
        self.pool6791_v4 = Pool6791.parse(cfg.pool6791_v4, cfg.ipv4_address, 4)
        self.pool6791_v6 = Pool6791.parse(cfg.pool6791_v6, cfg.ipv6_address, 6)
        self.icmp_source_dummy = _addr("icmp_source_dummy", cfg.icmp_source_dummy, 4)
        if self.icmp_source_dummy is not None:
            if v4_not_forwardable(self.icmp_source_dummy):
                raise ConfigError(
                    f"icmp_source_dummy = {cfg.icmp_source_dummy!r}: an address that is never"
                    " forwarded (RFC 1812 §5.3.7) cannot be the source of an ICMP error;"
                    " the CLAT uses 192.0.0.8 (RFC 7600)"
                )
            if cfg.pool6791_v4:
                raise ConfigError(
                    f"icmp_source_dummy = {cfg.icmp_source_dummy!r} with pool6791_v4 ="
                    f" {cfg.pool6791_v4!r}: both name the source of ICMPv6 errors from"
                    " untranslatable sources (the dummy address replaces the RFC 6791 pool,"
                    " draft-ietf-v6ops-icmpext-xlat-v6only-source); set only one"
                )
        if not isinstance(cfg.icmp_ext_node_id, bool):
            raise ConfigError(
                f"icmp_ext_node_id = {cfg.icmp_ext_node_id!r}: expected true or false"
            )
        self.icmp_ext_node_id = cfg.icmp_ext_node_id
        self.lowest_ipv6_mtu = _check_mtu("lowest_ipv6_mtu", cfg.lowest_ipv6_mtu, 1280)
        self.accel: accel.FastPath | None = None
        self.ipv6_mtu = self.ipv4_mtu = self.frag_mtu = 0
        self.set_link_mtu(cfg.ipv6_mtu, cfg.ipv4_mtu)
        self.amend_udp = cfg.amend_udp_checksum_zero
        self.decrement_ttl = cfg.decrement_ttl
        self.expire_6to4 = cfg.expire_hop_limit_6to4
        self.reset_tc = cfg.reset_traffic_class
        self.hairpinning = cfg.hairpinning
        index, count = cfg.ip_id_slice
        if not (isinstance(count, int) and 1 <= count <= 65536 and 0 <= index < count):
            raise ConfigError(f"ip_id_slice = {cfg.ip_id_slice!r}: expected (index, count)")
        #: RFC 6864 §4.1: IDs from ``ip_id_base`` up to ``ip_id_end`` (excluded), cycled;
        #: ``ip_id`` is the last one used.
        self.ip_id_base = index * 65536 // count
        self.ip_id_end = (index + 1) * 65536 // count
        self.ip_id = self.ip_id_base + cfg.ip_id_seed % (self.ip_id_end - self.ip_id_base)
        self.ratelimit = IcmpRateLimiter(
            cfg.icmp_ratelimit_ms,
            cfg.icmp_ratelimit_burst,
            cfg.icmp_msgs_per_sec,
            cfg.icmp_msgs_burst,
            shared=frozenset(ipaddress.ip_address(a).packed for a in cfg.icmp_ratelimit_shared),
        )
        self.clock = clock
        #: The time when no ``clock`` is given (seconds, any origin).
        self.now = 0.0
        #: Set by a data plane around a GSO super-packet: the kernel cuts it into
        #: segments that fit the link, so the next-hop MTU checks do not apply.
        self.gso = False
        #: True when pool6 translation leaves TCP/UDP checksums unchanged (RFC 6052 §4.1).
        self.neutral = self.pool6 is not None and is_neutral(self.pool6.network) and not self.eam
        #: Address-pair caches of the fast path: key = the packet's address bytes,
        #: value = (translated address bytes, checksum delta) or a Drop reason.
        #: The mapping is a pure function of the configuration, so this is a memo,
        #: not state; it is bounded and cleared when full or reconfigured.
        self.map46: dict[bytes, tuple[bytes, int] | Drop] = {}
        self.map64: dict[bytes, tuple[bytes, int, bool] | Drop] = {}
        self.cache_limit = 65536
        self._mv_owner: bytearray | None = None
        self._mv: memoryview = memoryview(b"")
        self.pending: list[bytes] = []
        #: Set when the last slow path answered with our own ICMP error.
        self.last_error: Drop | None = None
        self.stats = stats if stats is not None else Stats()
        #: The fast path counts straight into these (the same lists as in ``stats``).
        self.c_packets = self.stats.packets
        self.c_octets = self.stats.octets
        #: The C fast path (``siit/accel.py``), or None and why (``accel_status``).
        self.accel, self.accel_status = accel.attach(self)
        self.translate_into = (
            self.accel.translate_into if self.accel is not None else self.translate_python
        )

    def set_link_mtu(self, ipv6_mtu: int, ipv4_mtu: int) -> None:
        """The MTUs of the IPv6 and IPv4 next hops (a TUN device's MTU, also at run time).

        RFC 7915 §4.2/§5.2 clamp the MTU of translated Packet Too Big and
        Fragmentation Needed messages to them; §4 fragments DF=0 packets to fit.
        """
        self.ipv6_mtu = _check_mtu("ipv6_mtu", ipv6_mtu, 1280)
        self.ipv4_mtu = _check_mtu("ipv4_mtu", ipv4_mtu, 68)
        #: RFC 7915 §4: DF=0 packets are fragmented to fit both of these.
        self.frag_mtu = min(self.lowest_ipv6_mtu, self.ipv6_mtu)
        if self.accel is not None:
            self.accel.set_mtu(self.ipv6_mtu, self.ipv4_mtu, self.frag_mtu)

    # -- address mapping (policy: EAM first, then pool6; RFC 7757 §3.3) ----------------

    def v4_to_v6_addr(self, v4: bytes | bytearray) -> bytes | None:
        if self.eam:
            a = self.eam.v4_to_v6(v4)
            if a is not None:
                return a
        p = self.pool6
        return p.embed(bytes(v4)) if p is not None else None

    def v4_to_v6_pool6(self, v4: bytes | bytearray) -> bytes | None:
        """RFC 7757 §4.3: in a hairpinned packet the source goes through pool6 only."""
        p = self.pool6
        return p.embed(bytes(v4)) if p is not None else None

    def v6_to_v4_addr(self, v6: bytes | bytearray) -> bytes | None:
        if self.eam:
            a = self.eam.v6_to_v4(v6)
            if a is not None:
                return a
        p = self.pool6
        return p.extract(bytes(v6)) if p is not None else None

    def view(self, buf: bytearray) -> memoryview:
        """A memoryview of the caller's buffer, kept while the same buffer comes back.

        The buffer must not be resized while the translator holds the view
        (TUN workers use one fixed buffer; ``translate`` makes a new one each call).
        """
        if buf is not self._mv_owner:
            self._mv_owner = buf
            self._mv = memoryview(buf)
        return self._mv

    def resolve46(self, key: bytes) -> tuple[bytes, int] | Drop:
        """Fast-path memo for IPv4 (src, dst) -> IPv6 (src, dst) and the checksum delta.

        Policy before mapping: the translator's own address (answered, not
        translated), addresses never forwarded (RFC 1812 §5.3.7; multicast and
        240/4 destinations are refused before the memo is asked).
        """
        src4, dst4 = key[0:4], key[4:8]
        r: tuple[bytes, int] | Drop
        if dst4 == self.ipv4_address:
            r = Drop.TO_TRANSLATOR
        elif v4_not_forwardable(dst4):
            r = Drop.NOT_FORWARDABLE_DESTINATION
        elif v4_not_forwardable(src4):
            r = Drop.NOT_FORWARDABLE_SOURCE
        else:
            dst6 = self.v4_to_v6_addr(dst4)
            src6 = self.v4_to_v6_addr(src4) if dst6 is not None else None
            if dst6 is None:
                r = Drop.UNTRANSLATABLE_DESTINATION
            elif src6 is None:
                r = Drop.UNTRANSLATABLE_SOURCE
            else:
                r = (src6 + dst6, sum_delta(src6 + dst6, key))
        return self._remember(self.map46, key, r)

    def resolve64(self, key: bytes) -> tuple[bytes, int, bool] | Drop:
        """Fast-path memo for IPv6 (src, dst) -> IPv4 (src, dst), delta, hairpin?

        RFC 7757 §4.3 hairpinning applies only to a destination translated
        through pool6 whose IPv4 form is on the IPv4 side of an EAM entry (Jool's
        "intrinsic" hairpinning); a destination found in the EAM table itself
        is an ordinary translation, whatever its IPv4 form.
        """
        src6, dst6 = key[0:16], key[16:32]
        r: tuple[bytes, int, bool] | Drop
        if dst6 == self.ipv6_address:
            return self._remember(self.map64, key, Drop.TO_TRANSLATOR)
        if v6_illegal_source(src6):
            return self._remember(self.map64, key, Drop.NOT_FORWARDABLE_SOURCE)
        eam = self.eam
        dst4 = eam.v6_to_v4(dst6) if eam else None
        via_pool6 = dst4 is None
        if dst4 is None and self.pool6 is not None:
            dst4 = self.pool6.extract(dst6)
            if dst4 is None:
                dst4 = self._never_forwarded_in_pool6(dst6)
        if dst4 is None:
            r = Drop.UNTRANSLATABLE_DESTINATION
        elif v4_multicast(dst4):
            r = Drop.MULTICAST
        elif v4_not_forwardable(dst4):
            r = Drop.NOT_FORWARDABLE_DESTINATION
        else:
            src4 = self.v6_to_v4_addr(src6) or self._never_forwarded_in_pool6(src6)
            if src4 is None:
                r = Drop.UNTRANSLATABLE_SOURCE
            elif v4_not_forwardable(src4):
                r = Drop.NOT_FORWARDABLE_SOURCE
            else:
                hp = bool(self.hairpinning and via_pool6 and eam and eam.has_v4(dst4))
                r = (src4 + dst4, sum_delta(src4 + dst4, key), hp)
        return self._remember(self.map64, key, r)

    def _never_forwarded_in_pool6(self, v6: bytes) -> bytes | None:
        """The IPv4 address in a pool6 address that RFC 6052 §3.1 refused, if it is one
        that is never forwarded anyway (then the packet is dropped silently, under that
        reason, rather than answered as untranslatable)."""
        p = self.pool6
        raw4 = p.extract_unchecked(v6) if p is not None else None
        if raw4 is not None and (v4_multicast(raw4) or v4_not_forwardable(raw4)):
            return raw4
        return None

    def hairpin(self, pkt4: bytes) -> tuple[int, int]:
        """RFC 7757 §4.3: run an IPv4 packet the translator built back through §4."""
        buf = bytearray(HEADROOM) + pkt4
        s, e = v4_to_v6.translate_4to6(self, buf, HEADROOM, len(buf), True)
        if s >= 0:
            self.pending.append(bytes(buf[s:e]))
            return SLOW, 1
        return s, e

    def _remember(self, cache: dict[bytes, _T], key: bytes, value: _T) -> _T:
        """Store in a bounded memo, emptying it when full (the mapping is pure)."""
        if len(cache) >= self.cache_limit:
            cache.clear()
        cache[key] = value
        return value

    def next_ip_id(self) -> int:
        """RFC 7915 §5.1 / RFC 6864 §4.1: the next Identification of this instance's slice."""
        i = self.ip_id + 1
        if i == self.ip_id_end:
            i = self.ip_id_base
        self.ip_id = i
        return i

    def allow_icmp_error(self, peer: bytes) -> bool:
        """Take a token for an ICMP error to ``peer``; count it when suppressed."""
        clock = self.clock
        if self.ratelimit.allow(peer, clock() if clock is not None else self.now):
            return True
        self.stats.misc[2] += 1
        return False

    # -- verdict helpers --------------------------------------------------------------

    def drop(self, reason: Drop) -> tuple[int, int]:
        self.stats.drops[reason] += 1
        return DROPPED, int(reason)

    def emit(self, direction: int, proto_class: int, packets: list[bytes]) -> tuple[int, int]:
        """Queue slow-path output for one translated input packet."""
        st = self.stats
        i = direction * 4 + proto_class
        st.packets[i] += 1
        st.octets[i] += sum(len(p) for p in packets)
        if len(packets) > 1:
            st.fragments_out += len(packets)
        self.pending.extend(packets)
        return SLOW, len(packets)

    def emit_error(self, packet: bytes | None, reason: Drop, family: int) -> tuple[int, int]:
        """Drop the input (counted under ``reason``) and queue our own ICMP error, if any."""
        self.stats.drops[reason] += 1
        if packet is None:
            return DROPPED, int(reason)
        self.last_error = reason
        self.stats.icmp_errors[0 if family == 4 else 1] += 1
        self.pending.append(packet)
        return SLOW, 1

    # -- public API -------------------------------------------------------------------

    def translate_python(self, buf: bytearray, start: int, end: int) -> tuple[int, int]:
        """Translate ``buf[start:end]`` in place (``start >= 20``) in Python: the reference
        core, and the fallback of the C fast path. See the module doc."""
        if end - start < 1:
            return self.drop(Drop.TRUNCATED)
        v = buf[start] >> 4
        try:
            if v == 4:
                return _translate_4to6(self, buf, start, end, False)
            if v == 6:
                return _translate_6to4(self, buf, start, end)
        except (IndexError, ValueError, OverflowError):  # pragma: no cover - defence in depth
            # Every length is checked before use; this only guards the invariant
            # "the core never raises on packet input" against a missed case.
            return self.drop(Drop.MALFORMED)
        return self.drop(Drop.NOT_IP)

    def translate(self, packet: bytes | bytearray, now: float | None = None) -> Verdict:
        """Translate one packet (allocating API). Never raises on packet content.

        ``now`` sets the time the ICMP error rate limit sees (without a ``clock``).
        """
        if now is not None:
            self.now = now
        buf = bytearray(HEADROOM) + packet
        self.pending.clear()
        self.last_error = None
        s, e = self.translate_into(buf, HEADROOM, len(buf))
        if s >= 0:
            return Verdict([bytes(buf[s:e])])
        out = list(self.pending)
        self.pending.clear()
        if s == DROPPED:
            return Verdict(out, drop=Drop(e))
        if self.last_error is not None:
            return Verdict(out, drop=self.last_error, icmp_error=True)
        return Verdict(out)
