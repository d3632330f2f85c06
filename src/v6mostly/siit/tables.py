"""Lookup tables of RFC 7915 (module level, built once)."""

from __future__ import annotations

# RFC 7915 §4.2: ICMPv4 Destination Unreachable codes -> (ICMPv6 type, code).
# Code 2 (protocol unreachable) becomes a Parameter Problem pointing at Next Header,
# code 4 (fragmentation needed) becomes Packet Too Big; both are special-cased.
V4_UNREACH_CODES: dict[int, tuple[int, int]] = {
    0: (1, 0),
    1: (1, 0),
    3: (1, 4),
    5: (1, 0),
    6: (1, 0),
    7: (1, 0),
    8: (1, 0),
    9: (1, 1),
    10: (1, 1),
    11: (1, 0),
    12: (1, 0),
    13: (1, 1),
    15: (1, 1),
}

# RFC 7915 §4.2 Figure 3: ICMPv4 Parameter Problem pointer -> ICMPv6 pointer.
V4_TO_V6_POINTER: dict[int, int] = {0: 0, 1: 1, 2: 4, 3: 4, 8: 7, 9: 6}
for _i in range(12, 16):
    V4_TO_V6_POINTER[_i] = 8
for _i in range(16, 20):
    V4_TO_V6_POINTER[_i] = 24

# RFC 7915 §5.2: ICMPv6 Destination Unreachable codes -> ICMPv4 (type, code).
V6_UNREACH_CODES: dict[int, tuple[int, int]] = {
    0: (3, 1),
    1: (3, 10),
    2: (3, 1),
    3: (3, 1),
    4: (3, 3),
}

# RFC 7915 §5.2 Figure 6: ICMPv6 Parameter Problem pointer -> ICMPv4 pointer.
V6_TO_V4_POINTER: dict[int, int] = {0: 0, 1: 1, 4: 2, 5: 2, 6: 9, 7: 8}
for _i in range(8, 24):
    V6_TO_V4_POINTER[_i] = 12
for _i in range(24, 40):
    V6_TO_V4_POINTER[_i] = 16

# RFC 1191 §7 plateau table, for an ICMPv4 Fragmentation Needed with MTU 0.
PLATEAUS = (65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)

# ICMP error types (those that quote a packet).
ICMPV4_ERRORS = frozenset((3, 4, 5, 11, 12))
ICMPV6_ERRORS = frozenset((1, 2, 3, 4))

# IPv6 extension headers walked by RFC 7915 §5.1: hop-by-hop, routing, fragment, dest options.
EXT_HBH = 0
EXT_ROUTING = 43
EXT_FRAGMENT = 44
EXT_DSTOPTS = 60
WALKED_EXT = frozenset((EXT_HBH, EXT_ROUTING, EXT_FRAGMENT, EXT_DSTOPTS))


def plateau_below(total_length: int) -> int:
    """RFC 7915 §4.2: "the greatest plateau value that is less than the returned Total Length"."""
    for p in PLATEAUS:
        if p < total_length:
            return p
    return 68


# -- ICMP extensions of translated ICMPv6 errors from IPv6-only hops -------------------
# (draft-ietf-v6ops-icmpext-xlat-v6only-source; RFC 7600, RFC 5837, RFC 4884)

#: RFC 7600 (IANA special-purpose registry): the "IPv4 dummy address" 192.0.0.8,
#: the CLAT's ``icmp_source_dummy``.
DUMMY_IPV4 = "192.0.0.8"

#: ICMPv4 types whose translation may carry the node identification object: Destination
#: Unreachable (3, also from Packet Too Big) and Time Exceeded (11), the messages the
#: draft lists and RFC 5837 §4 defines its object for.
ICMPV4_NODE_ID_TYPES = frozenset((3, 11))

#: RFC 4884 §7: Extension Header "Version: 4 bits ... This is version 2".
EXT_VERSION = 2
#: RFC 5837 §4: Interface Information Object, Class-Num 2.
CLASS_INTERFACE_INFORMATION = 2
#: RFC 5837 §4.1 C-Type: Interface Role in bits 0-1 (0 = the incoming IP interface),
#: then Reserved (2-3), ifIndex (4), IP Addr (5), name (6), MTU (7).
IFINFO_ROLE_INCOMING = 0 << 6
IFINFO_IPADDR = 0x04
#: RFC 5837 §4.2: the IP Address Sub-Object's AFI, from IANA's Address Family Numbers.
AFI_IPV6 = 2
