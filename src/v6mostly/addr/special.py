"""Addresses a translator must never translate (policy, separate from the mapping).

RFC 1812 §5.3.7: "A router SHOULD NOT forward any packet that has an invalid
IP source address or a source address on network 0 ... [or] 127", and "An IP
destination address is invalid if it is among those defined as illegal
destinations in [INTRO:2] or is a Class E address (except 255.255.255.255)";
RFC 3927 §7: "A router MUST NOT forward a packet with an IPv4 Link-Local
source or destination address"; RFC 6890 marks 0.0.0.0/8, 127.0.0.0/8,
169.254.0.0/16, 240.0.0.0/4 and 255.255.255.255/32 "Forwardable: False".
Jool (``must_not_translate``) and TAYGA refuse the same set.

240.0.0.0/4 is refused in both directions (as TAYGA does): it is not
forwardable, and a translator that passes it one way only would map an IPv6
node to an address whose answers it then drops. 224.0.0.0/4 is multicast:
refused as a destination (``Drop.MULTICAST``) and, being no host's address,
as a source.

RFC 7915 §5.1: "If the translator gets an illegal source address (e.g., ::1,
etc.), the translator SHOULD silently drop the packet"; ``v6_illegal_source``
names those: unspecified, loopback, multicast and link-local.
"""

from __future__ import annotations

#: First octets whose whole /8 is never forwarded: 0/8, 127/8, 224/4 and 240/4.
_BAD_FIRST_OCTET = bytes(1 if o in (0, 127) or o >= 224 else 0 for o in range(256))


def v4_multicast(a: bytes | bytearray) -> bool:
    """224.0.0.0/4."""
    return 224 <= a[0] < 240


def v4_not_forwardable(a: bytes | bytearray) -> bool:
    """0/8, 127/8, 169.254/16, 240/4 (incl. 255.255.255.255) and 224/4 as a source."""
    return bool(_BAD_FIRST_OCTET[a[0]]) or (a[0] == 169 and a[1] == 254)


def v4_not_forwardable_destination(a: bytes | bytearray) -> bool:
    """A destination that is never forwarded and is not multicast (that has its own reason)."""
    o = a[0]
    return o == 0 or o == 127 or o >= 240 or (o == 169 and a[1] == 254)


def v6_illegal_source(a: bytes | bytearray) -> bool:
    """RFC 7915 §5.1 illegal IPv6 sources: ::, ::1, ff00::/8, fe80::/10."""
    if a[0] == 0xFF or (a[0] == 0xFE and a[1] & 0xC0 == 0x80):
        return True
    return not any(a[:15]) and a[15] <= 1
