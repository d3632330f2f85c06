"""RFC 6791: addresses for ICMP errors whose source cannot be translated.

RFC 6791 §4: when an ICMPv6 error comes from an IPv6 router whose address is
not IPv4-translatable, the translator uses an address from a pool. The same
idea is applied the other way (an IPv6 pool for ICMPv4 errors from
untranslatable IPv4 sources, as Jool does). An empty pool falls back to the
translator's own address. Selection is deterministic (a hash of the packet's
destination) so that one flow's errors come from one address: no randomness
in the core.
"""

from __future__ import annotations

import ipaddress

from ..errors import AddressError


class Pool6791:
    __slots__ = ("_addrs", "fallback")

    def __init__(self, addrs: list[bytes], fallback: bytes | None) -> None:
        self._addrs = addrs
        self.fallback = fallback

    @classmethod
    def parse(cls, items: list[str], fallback: str | None, family: int) -> Pool6791:
        out: list[bytes] = []
        for text in items:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError as e:
                raise AddressError(
                    f"RFC 6791 pool entry {text!r} is not an address or prefix ({e})"
                ) from None
            if net.version != family:
                raise AddressError(f"RFC 6791 pool entry {text!r} is not IPv{family}")
            if net.num_addresses > 65536:
                raise AddressError(
                    f"RFC 6791 pool entry {text!r} is too large (at most 65536 addresses)"
                )
            out.extend(a.packed for a in (net.hosts() if net.num_addresses > 2 else net))
        fb = ipaddress.ip_address(fallback).packed if fallback else None
        return cls(out, fb)

    def __len__(self) -> int:
        return len(self._addrs)

    def pick(self, key: bytes) -> bytes | None:
        """An address for an error sent toward ``key`` (the error's destination)."""
        addrs = self._addrs
        if not addrs:
            return self.fallback
        if len(addrs) == 1:
            return addrs[0]
        return addrs[int.from_bytes(key, "big") % len(addrs)]
