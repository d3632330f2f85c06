"""The CLAT's own IPv6 address and IPv4 MTU (RFC 6877 §6.3), sans-I/O.

Theory of operation. RFC 6877 §6.3 gives the CLAT a dedicated IPv6 prefix or,
without DHCPv6 Prefix Delegation, a dedicated IPv6 address for the translated
traffic (so it is told apart from the host's own IPv6). This module picks that
address: a stable interface identifier in the uplink's /64, derived from
``seed`` (e.g. the interface's MAC) and the /64 itself with SHA-256, in the
spirit of RFC 7217 (stable per network, different per network). ``attempt``
names the next candidate after a Duplicate Address Detection failure
(RFC 4862 §5.4.5), again stable, so a restart walks the same sequence.

The last 16-bit word of the IID is then chosen so that the address is
*checksum neutral* with the CLAT's IPv4 address (192.0.0.1, RFC 7335): the
one's-complement sum of its eight 16-bit words equals that of the IPv4
address's two words modulo 0xffff. The TCP/UDP/ICMPv6 pseudo-header sums then
agree (with a neutral Pref64, RFC 6052 §4.1), so translation needs no
transport checksum update (Android's clatd does the same).

The two zeros of one's complement. Sums are compared modulo 0xffff, where
0x0000 and 0xffff are the same number (+0 and -0, RFC 1071 §2). When the word
that makes a candidate neutral falls in that class (it would be 0x0000 or,
equally, 0xffff), the candidate is *skipped* rather than picking either
spelling: the chosen IID never ends in 0000 or ffff, so no implementation that
confuses +0 and -0 (a 16-bit comparison, RFC 1624's eqn. 2 pitfall) can
disagree about neutrality. Reserved IIDs (RFC 5453 registry: the all-zero
Subnet-Router anycast of RFC 4291 §2.6.1, the fdff:ffff:ffff:ff80-ffff anycast
range of RFC 2526, the 0200:5eff:fe00:0000-0200:5eff:feff:ffff IANA Ethernet
block) and the ISATAP form x?00:5efe:w.x.y.z (RFC 5214 §6.1) are skipped too.
"""

from __future__ import annotations

import hashlib
import ipaddress

from ..errors import AddressError, V6mostlyError
from ..wire.checksum import ones_sum

#: RFC 7335: the IPv4 service continuity prefix 192.0.0.0/29; 192.0.0.1 is the CLAT's.
CLAT_IPV4 = ipaddress.IPv4Address("192.0.0.1")
#: The IPv4 MTU never goes below IPv6's minimum link MTU (RFC 8200 §5) minus 20.
MIN_IPV4_MTU = 1260
#: The IPv6 header is 20 bytes larger than an option-less IPv4 header (RFC 7915 §4).
HEADER_GROWTH = 20

_DOMAIN = b"v6mostly clat iid v1\x00"


def is_reserved_iid(iid: int) -> bool:
    """Whether the 64-bit interface identifier ``iid`` must not be used for a host address.

    RFC 5453 / the IANA "Reserved IPv6 Interface Identifiers" registry, plus the
    ISATAP form of RFC 5214 §6.1 (u/g bits either way).
    """
    if iid == 0:  # RFC 4291 §2.6.1 Subnet-Router anycast
        return True
    if 0xFDFF_FFFF_FFFF_FF80 <= iid <= 0xFDFF_FFFF_FFFF_FFFF:  # RFC 2526 anycast
        return True
    if 0x0200_5EFF_FE00_0000 <= iid <= 0x0200_5EFF_FEFF_FFFF:  # RFC 4291 / RFC 6543
        return True
    return (iid >> 32) & 0xFCFF_FFFF == 0x0000_5EFE  # RFC 5214 §6.1 ISATAP


def is_checksum_neutral(v6: ipaddress.IPv6Address, v4: ipaddress.IPv4Address = CLAT_IPV4) -> bool:
    """Whether replacing ``v4`` by ``v6`` in a pseudo-header leaves its sum unchanged.

    Compared modulo 0xffff, so +0 (0x0000) and -0 (0xffff) are equal (RFC 1071 §2).
    """
    return (ones_sum(v6.packed) - ones_sum(v4.packed)) % 0xFFFF == 0


def _candidate(prefix: bytes, seed: bytes, attempt: int, counter: int) -> bytes:
    h = hashlib.sha256()
    h.update(_DOMAIN)
    h.update(prefix)
    h.update(len(seed).to_bytes(4, "big"))
    h.update(seed)
    h.update(attempt.to_bytes(8, "big"))
    h.update(counter.to_bytes(8, "big"))
    return h.digest()[:6]


def neutral_clat_address(
    prefix64: ipaddress.IPv6Network,
    seed: bytes,
    ipv4: ipaddress.IPv4Address = CLAT_IPV4,
    attempt: int = 0,
) -> ipaddress.IPv6Address:
    """RFC 6877 §6.3: the CLAT's dedicated address in the uplink's /64 ``prefix64``.

    Stable for a given (``prefix64``, ``seed``, ``ipv4``, ``attempt``); checksum
    neutral with ``ipv4``; never a reserved IID and never an IID ending in
    0000/ffff (see the module doc). After a DAD collision call again with
    ``attempt + 1``.
    """
    if prefix64.prefixlen != 64:
        raise AddressError(
            f"CLAT address prefix {prefix64}: expected the uplink's /64 "
            "(RFC 6877 §6.3 takes the address from the SLAAC /64)"
        )
    if not isinstance(attempt, int) or attempt < 0:
        raise V6mostlyError(f"CLAT address attempt {attempt!r}: expected an integer >= 0")
    head = prefix64.network_address.packed[:8]
    target = ones_sum(ipv4.packed)
    counter = 0
    while True:
        first = head + _candidate(head, seed, attempt, counter)
        counter += 1
        # (sum(first) + w) == sum(ipv4) (mod 0xffff)
        word = (target - ones_sum(first)) % 0xFFFF
        if word == 0:  # the +0/-0 class: skip (module doc)
            continue
        packed = first + word.to_bytes(2, "big")
        if is_reserved_iid(int.from_bytes(packed[8:], "big")):
            continue
        return ipaddress.IPv6Address(packed)


def ipv4_mtu_for(uplink_ipv6_mtu: int) -> int:
    """The CLAT interface's IPv4 MTU for an uplink IPv6 MTU: 20 bytes less (the
    project's rule; RFC 7915 §4 grows each packet by 20), never below 1260 (IPv6's
    1280 minimum, RFC 8200 §5, minus 20) nor above 65535.

    A value below 1280 (an RA MTU option a host ignores, RFC 4861 §6.3.4) gives 1260.
    """
    return max(MIN_IPV4_MTU, min(65535, uplink_ipv6_mtu - HEADER_GROWTH))
