"""RFC 7757 Explicit Address Mapping table.

RFC 7757 §3.2: "The EAM entries ... are matched using the longest-prefix match
algorithm" in both directions, and §3.3: EAM "MUST" take precedence over the
RFC 6052 algorithmic mapping. An entry maps an IPv6 prefix to an IPv4 prefix
and the IPv4 suffix bits are copied right after the IPv6 prefix (the IPv6
suffix may be longer; its remaining bits are zero, RFC 7757 §3.2).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import AddressError


@dataclass(frozen=True)
class EamEntry:
    v6: ipaddress.IPv6Network
    v4: ipaddress.IPv4Network

    @classmethod
    def parse(cls, v6: str, v4: str) -> EamEntry:
        try:
            n6 = ipaddress.IPv6Network(v6, strict=False)
        except ValueError as e:
            raise AddressError(f"EAM IPv6 side {v6!r} is not an IPv6 prefix ({e})") from None
        try:
            n4 = ipaddress.IPv4Network(v4, strict=False)
        except ValueError as e:
            raise AddressError(f"EAM IPv4 side {v4!r} is not an IPv4 prefix ({e})") from None
        if 128 - n6.prefixlen < 32 - n4.prefixlen:
            raise AddressError(
                f"EAM {n6}={n4}: the IPv6 suffix ({128 - n6.prefixlen} bits) is shorter than "
                f"the IPv4 suffix ({32 - n4.prefixlen} bits); RFC 7757 §3.2 needs room for it"
            )
        return cls(n6, n4)

    @classmethod
    def parse_pair(cls, text: str) -> EamEntry:
        """Parse ``IPV6PFX=IPV4PFX``."""
        if "=" not in text:
            raise AddressError(f"EAM {text!r} must be written IPV6PREFIX=IPV4PREFIX")
        a, b = text.split("=", 1)
        return cls.parse(a.strip(), b.strip())


class EamTable:
    """Longest-prefix-match table in both directions, on ``bytes`` addresses."""

    __slots__ = ("_by4", "_by6", "_lens4", "_lens6", "entries")

    def __init__(self, entries: list[EamEntry] | None = None) -> None:
        self.entries: list[EamEntry] = []
        self._by6: dict[int, dict[int, EamEntry]] = {}
        self._by4: dict[int, dict[int, EamEntry]] = {}
        self._lens6: list[int] = []
        self._lens4: list[int] = []
        for e in entries or []:
            self.add(e)

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def add(self, e: EamEntry) -> None:
        for other in self.entries:
            if other.v6 == e.v6 or other.v4 == e.v4:
                raise AddressError(f"EAM {e.v6}={e.v4} collides with {other.v6}={other.v4}")
        self.entries.append(e)
        k6 = int(e.v6.network_address) >> (128 - e.v6.prefixlen)
        k4 = int(e.v4.network_address) >> (32 - e.v4.prefixlen)
        self._by6.setdefault(e.v6.prefixlen, {})[k6] = e
        self._by4.setdefault(e.v4.prefixlen, {})[k4] = e
        self._lens6 = sorted(self._by6, reverse=True)
        self._lens4 = sorted(self._by4, reverse=True)

    def v6_to_v4(self, v6: bytes | bytearray) -> bytes | None:
        """RFC 7757 §3.3: the IPv4 address for ``v6``, or None when no entry covers it."""
        n = int.from_bytes(v6, "big")
        for plen in self._lens6:
            e = self._by6[plen].get(n >> (128 - plen))
            if e is not None:
                shift = 128 - plen - (32 - e.v4.prefixlen)
                suffix = (n & ((1 << (128 - plen)) - 1)) >> shift
                return (int(e.v4.network_address) | suffix).to_bytes(4, "big")
        return None

    def v4_to_v6(self, v4: bytes | bytearray) -> bytes | None:
        """RFC 7757 §3.3: the IPv6 address for ``v4``, or None when no entry covers it."""
        n = int.from_bytes(v4, "big")
        for plen in self._lens4:
            e = self._by4[plen].get(n >> (32 - plen))
            if e is not None:
                shift = 128 - e.v6.prefixlen - (32 - plen)
                suffix = (n & ((1 << (32 - plen)) - 1)) << shift
                return (int(e.v6.network_address) | suffix).to_bytes(16, "big")
        return None

    def has_v4(self, v4: bytes | bytearray) -> bool:
        """Whether ``v4`` is on the IPv6 side of some entry (RFC 7757 §4.3 hairpinning)."""
        if not self._lens4:
            return False
        n = int.from_bytes(v4, "big")
        return any((n >> (32 - plen)) in self._by4[plen] for plen in self._lens4)
