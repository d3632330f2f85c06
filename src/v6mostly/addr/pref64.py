"""RFC 6052 §4.1 checksum neutrality of a Pref64::/n.

A translation is checksum neutral when the IPv6 pseudo-header sums to the same
one's-complement value as the IPv4 one, so TCP/UDP checksums need no update.
For an IPv4-embedded address that holds for every IPv4 address exactly when
the IPv4 bytes sit on 16-bit boundaries (/32 and /96) and the rest of the
address (prefix, u-octet, zero suffix) sums to zero (0xffff in one's
complement). At /40 to /64 the IPv4 bytes straddle word boundaries, so the sum
changes with the address (a byte moved across a word boundary counts 256
times more or less) and no such prefix is neutral for all IPv4 addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import AddressError
from ..wire.checksum import ones_sum
from .rfc6052 import validate_pref64


def prefix_sum(net: ipaddress.IPv6Network) -> int:
    """One's-complement sum of the prefix bits (rest zero), 0..0xffff."""
    return ones_sum(net.network_address.packed)


def is_neutral(net: ipaddress.IPv6Network) -> bool:
    """RFC 6052 §4.1: whether every address embedded in ``net`` is checksum neutral."""
    return net.prefixlen in (32, 96) and prefix_sum(net) in (0, 0xFFFF)


def neutrality_reason(net: ipaddress.IPv6Network) -> str:
    if net.prefixlen not in (32, 96):
        return (
            f"/{net.prefixlen}: the IPv4 bytes are not 16-bit aligned, so the checksum "
            "delta depends on the IPv4 address; only /32 and /96 can be neutral"
        )
    s = prefix_sum(net)
    if s in (0, 0xFFFF):
        return "the prefix sums to 0xffff (one's-complement zero): neutral"
    return f"the prefix sums to 0x{s:04x}, not 0xffff: not neutral"


@dataclass(frozen=True)
class NeutralProposal:
    prefix: ipaddress.IPv6Network
    group: int
    value: int


def propose_neutral(
    base: ipaddress.IPv6Network, length: int | None = None
) -> list[NeutralProposal]:
    """Neutral Pref64s derived from ``base`` by filling one free 16-bit group.

    The target length is ``length`` or, by default, the base's own length when
    that is /32 or /96, else /96. A free group is a zero group after the base's
    significant bits and inside the target prefix; group 4 (bits 64-79) holds
    the u-octet, which must stay zero, so only values below 0x100 fit there.
    """
    target = length or (base.prefixlen if base.prefixlen in (32, 96) else 96)
    if target not in (32, 96) or target < base.prefixlen:
        return []
    words = [int.from_bytes(base.network_address.packed[i : i + 2], "big") for i in range(0, 16, 2)]
    last_nonzero = max((i for i, w in enumerate(words) if w), default=-1)
    first_free = last_nonzero + 1
    if base.prefixlen < target:  # an allocation to carve the Pref64 from: keep its bits
        first_free = max(first_free, (base.prefixlen + 15) // 16)
    s = ones_sum(base.network_address.packed)
    fill = (0xFFFF - s) % 0xFFFF if s not in (0, 0xFFFF) else 0
    out: list[NeutralProposal] = []
    if fill == 0:
        p = ipaddress.IPv6Network((base.network_address, target))
        if is_neutral(p):
            return [NeutralProposal(p, -1, 0)]
    for g in range(first_free, target // 16):
        value = fill if fill else 0xFFFF
        if g == 4 and value > 0xFF:
            continue
        w = list(words)
        w[g] = value
        addr = ipaddress.IPv6Address(b"".join(x.to_bytes(2, "big") for x in w))
        net = ipaddress.IPv6Network((addr, target))
        try:
            validate_pref64(net)
        except AddressError:
            continue
        if is_neutral(net):
            out.append(NeutralProposal(net, g, value))
    return out
