"""RFC 6052: IPv4-embedded IPv6 addresses.

RFC 6052 §2.2: "IPv4-embedded IPv6 addresses are composed of a variable-length
prefix, the embedded IPv4 address, and a variable-length suffix" with the
prefix length one of 32, 40, 48, 56, 64 or 96, and "Bits 64 to 71 of the
address are reserved ... [they] MUST be set to zero" (the u-octet).

Here addresses travel as 16-byte/4-byte ``bytes``; ``Pref64`` precomputes the
byte slices for its length so that embed/extract are a few slice operations.
"""

from __future__ import annotations

import ipaddress

from ..errors import AddressError

ALLOWED_LENGTHS = (32, 40, 48, 56, 64, 96)

#: RFC 6052 §2.1 Well-Known Prefix.
WKP = ipaddress.IPv6Network("64:ff9b::/96")
#: RFC 8215 local-use IPv4/IPv6 translation prefix.
LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")

# Where the four IPv4 bytes go for each prefix length (RFC 6052 §2.2 figure 1).
V4_POSITIONS: dict[int, tuple[int, int, int, int]] = {
    32: (4, 5, 6, 7),
    40: (5, 6, 7, 9),
    48: (6, 7, 9, 10),
    56: (7, 9, 10, 11),
    64: (9, 10, 11, 12),
    96: (12, 13, 14, 15),
}


def _is_global_v4(v4: bytes) -> bool:
    addr = ipaddress.IPv4Address(v4)
    return addr.is_global and not addr.is_multicast


class Pref64:
    """A Pref64::/n with fast embed/extract.

    The algorithm only; policy (which prefix, EAM precedence) is in the translator.
    """

    __slots__ = ("_head", "_pos", "_prefix", "_wkp", "length", "network")

    def __init__(self, network: ipaddress.IPv6Network | str) -> None:
        net = ipaddress.IPv6Network(network, strict=False) if isinstance(network, str) else network
        if net.prefixlen not in ALLOWED_LENGTHS:
            raise AddressError(
                f"prefix {net} has length /{net.prefixlen}; RFC 6052 §2.2 allows only "
                "/32, /40, /48, /56, /64 and /96"
            )
        self.network = net
        self.length = net.prefixlen
        self._prefix = net.network_address.packed
        self._pos = V4_POSITIONS[self.length]
        self._head = self._prefix[: self._pos[0]]
        self._wkp = net == WKP

    def __repr__(self) -> str:
        return f"Pref64('{self.network}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pref64) and other.network == self.network

    def __hash__(self) -> int:
        return hash(self.network)

    def embed(self, v4: bytes) -> bytes | None:
        """RFC 6052 §2.3: the IPv6 address for IPv4 ``v4``; None if RFC 6052 §3.1 forbids it."""
        if self._wkp and not _is_global_v4(v4):
            return None
        return self.embed_unchecked(v4)

    def embed_unchecked(self, v4: bytes) -> bytes:
        """RFC 6052 §2.2 layout without the §3.1 rule: for ``ipv4only.arpa``'s
        192.0.0.170/171, which RFC 8880 §7.1 embeds in the Well-Known Prefix too."""
        n = self.length
        if n == 96:
            return self._head + v4
        if n == 32:
            return self._head + v4 + b"\x00" * 8
        if n == 64:
            return self._head + v4 + b"\x00" * 3
        if n == 40:
            return self._head + v4[:3] + b"\x00" + v4[3:] + b"\x00" * 6
        if n == 48:
            return self._head + v4[:2] + b"\x00" + v4[2:] + b"\x00" * 5
        return self._head + v4[:1] + b"\x00" + v4[1:] + b"\x00" * 4  # /56

    def extract(self, v6: bytes) -> bytes | None:
        """RFC 6052 §2.3: the IPv4 address inside ``v6``, or None if ``v6`` is not under the prefix.

        The suffix and u-octet are ignored on input (be liberal in what you accept).
        """
        v4 = self.extract_unchecked(v6)
        if v4 is not None and self._wkp and not _is_global_v4(v4):
            return None
        return v4

    def extract_unchecked(self, v6: bytes) -> bytes | None:
        """RFC 6052 §2.2 layout without the §3.1 rule (the counterpart of
        :meth:`embed_unchecked`, e.g. to find 192.0.0.170 in an ipv4only.arpa answer)."""
        head = self._head
        if v6[: len(head)] != head:
            return None
        n = self.length
        if n == 96:
            v4 = v6[12:16]
        elif n == 32:
            v4 = v6[4:8]
        elif n == 64:
            v4 = v6[9:13]
        elif n == 40:
            v4 = v6[5:8] + v6[9:10]
        elif n == 48:
            v4 = v6[6:8] + v6[9:11]
        else:
            v4 = v6[7:8] + v6[9:12]
        return bytes(v4)


def embed_ipv4(prefix: str | ipaddress.IPv6Network, v4: str | ipaddress.IPv4Address) -> str:
    """Text convenience: ``embed_ipv4('64:ff9b::/96', '192.0.2.33') == '64:ff9b::c000:221'``."""
    p = Pref64(prefix if isinstance(prefix, ipaddress.IPv6Network) else str(prefix))
    out = p.embed(ipaddress.IPv4Address(v4).packed)
    if out is None:
        raise AddressError(
            f"{v4} is not a global IPv4 address; RFC 6052 §3.1 forbids it with {p.network}"
        )
    return str(ipaddress.IPv6Address(out))


def extract_ipv4(prefix: str | ipaddress.IPv6Network, v6: str | ipaddress.IPv6Address) -> str:
    """Text convenience, the inverse of :func:`embed_ipv4`."""
    p = Pref64(prefix if isinstance(prefix, ipaddress.IPv6Network) else str(prefix))
    out = p.extract(ipaddress.IPv6Address(v6).packed)
    if out is None:
        raise AddressError(f"{v6} is not an IPv4-embedded address under {p.network}")
    return str(ipaddress.IPv4Address(out))


def parse_prefix(text: str) -> ipaddress.IPv6Network:
    """Parse ``text`` as an IPv6 prefix with a clear error."""
    try:
        net = ipaddress.IPv6Network(text, strict=True)
    except ValueError as e:
        raise AddressError(f"{text!r} is not an IPv6 prefix ({e})") from None
    if "/" not in text:
        raise AddressError(
            f"{text!r} has no prefix length; write it as PREFIX/LEN, e.g. 64:ff9b::/96"
        )
    return net


def validate_pref64(
    network: ipaddress.IPv6Network | str, ipv4: ipaddress.IPv4Network | None = None
) -> list[str]:
    """Check a Pref64::/n against RFC 6052 §2.2/§3.1 and RFC 8215.

    Raises :class:`AddressError` naming the violated rule; returns a list of
    notes (non-fatal remarks) when the prefix is acceptable.
    """
    net = parse_prefix(network) if isinstance(network, str) else network
    notes: list[str] = []
    if net.prefixlen not in ALLOWED_LENGTHS:
        raise AddressError(
            f"prefix {net} has length /{net.prefixlen}; RFC 6052 §2.2 allows only "
            "/32, /40, /48, /56, /64 and /96"
        )
    packed = net.network_address.packed
    if net.prefixlen > 64 and packed[8] != 0:
        raise AddressError(
            f"prefix {net} sets bits 64-71 (the u-octet, here 0x{packed[8]:02x}); "
            "RFC 6052 §2.2 says they MUST be zero"
        )
    if net.network_address.is_multicast:
        raise AddressError(f"prefix {net} is multicast; a Pref64 must be unicast (RFC 6052 §2.2)")
    if net.overlaps(WKP) and net != WKP:
        raise AddressError(
            f"prefix {net} overlaps the Well-Known Prefix 64:ff9b::/96 without being it; "
            "RFC 6052 §2.1 reserves 64:ff9b::/96 for the WKP itself"
        )
    if net == WKP:
        notes.append(
            "the Well-Known Prefix (RFC 6052 §2.1): only global IPv4 addresses may be embedded"
        )
        if ipv4 is not None and not (ipv4.is_global and not ipv4.is_multicast):
            raise AddressError(
                f"pref64 {net} with non-global IPv4 {ipv4} violates RFC 6052 §3.1 "
                "(the Well-Known Prefix MUST NOT be used to represent non-global IPv4 addresses)"
            )
    elif net.subnet_of(LOCAL_USE):
        notes.append(
            "inside the local-use prefix 64:ff9b:1::/48 (RFC 8215): allowed, including non-global IPv4"
        )
    return notes
