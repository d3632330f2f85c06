"""Router Advertisement messages and options (RFC 4861 §4.2, §4.6), both ways.

Options: source link-layer address (1), prefix information (3), MTU (5),
route information (24, RFC 4191), RDNSS (25) and DNSSL (31) (RFC 8106) and
PREF64 (38, RFC 8781). ``RouterAdvert.from_wire`` parses what ``to_wire``
writes (and what other routers send: unknown options are kept as raw bytes);
malformed input raises :class:`RaError`. The ICMPv6 checksum is left zero:
the kernel fills it for raw ICMPv6 sockets (RFC 3542 §3.1).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from ..errors import V6mostlyError
from ..wire.dnsname import decode_names, encode_names

ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134

OPT_SLLA = 1
OPT_PIO = 3
OPT_MTU = 5
OPT_RIO = 24
OPT_RDNSS = 25
OPT_DNSSL = 31
OPT_PREF64 = 38

#: RFC 8781 §4: Prefix Length Code <-> prefix length.
PLC_OF_LENGTH = {96: 0, 64: 1, 56: 2, 48: 3, 40: 4, 32: 5}
LENGTH_OF_PLC = {v: k for k, v in PLC_OF_LENGTH.items()}
#: RFC 8781 §4: the scaled lifetime is 13 bits of 8-second units.
PREF64_MAX_LIFETIME = 8191 * 8  # 65528

PREF = {"low": 3, "medium": 0, "high": 1}
PREF_NAME = {v: k for k, v in PREF.items()}


class RaError(V6mostlyError):
    pass


@dataclass
class Prefix:
    prefix: ipaddress.IPv6Network
    valid: int = 86400
    preferred: int = 14400
    on_link: bool = True
    autonomous: bool = True


@dataclass
class Route:
    prefix: ipaddress.IPv6Network
    lifetime: int = 1800
    preference: str = "medium"


@dataclass
class Pref64:
    prefix: ipaddress.IPv6Network
    lifetime: int = 1800  # seconds; sent in 8-second units, rounded up

    def scaled(self) -> int:
        return min(8191, -(-self.lifetime // 8))


@dataclass
class RouterAdvert:
    cur_hop_limit: int = 64
    managed: bool = False
    other: bool = False
    preference: str = "medium"
    router_lifetime: int = 1800
    reachable_time: int = 0
    retrans_timer: int = 0
    source_lladdr: bytes | None = None
    mtu: int | None = None
    prefixes: list[Prefix] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    rdnss: list[ipaddress.IPv6Address] = field(default_factory=list)
    rdnss_lifetime: int = 1800
    dnssl: list[str] = field(default_factory=list)
    dnssl_lifetime: int = 1800
    pref64: list[Pref64] = field(default_factory=list)
    unknown: list[tuple[int, bytes]] = field(default_factory=list)

    # -- to wire ----------------------------------------------------------------------

    def to_wire(self) -> bytes:
        flags = (0x80 if self.managed else 0) | (0x40 if self.other else 0)
        flags |= PREF[self.preference] << 3
        out = bytearray(
            struct.pack(
                "!BBHBBHII",
                ND_ROUTER_ADVERT,
                0,
                0,
                self.cur_hop_limit,
                flags,
                self.router_lifetime,
                self.reachable_time,
                self.retrans_timer,
            )
        )
        if self.source_lladdr:
            out += _opt(OPT_SLLA, self.source_lladdr)
        if self.mtu:
            out += _opt(OPT_MTU, struct.pack("!HI", 0, self.mtu))
        for p in self.prefixes:
            f = (0x80 if p.on_link else 0) | (0x40 if p.autonomous else 0)
            body = struct.pack("!BBIII", p.prefix.prefixlen, f, p.valid, p.preferred, 0)
            out += _opt(OPT_PIO, body + p.prefix.network_address.packed)
        for r in self.routes:
            n = r.prefix.prefixlen
            plen = 0 if n == 0 else 8 if n <= 64 else 16
            body = struct.pack("!BBI", n, PREF[r.preference] << 3, r.lifetime)
            out += _opt(OPT_RIO, body + r.prefix.network_address.packed[:plen])
        if self.rdnss:
            body = struct.pack("!HI", 0, self.rdnss_lifetime)
            out += _opt(OPT_RDNSS, body + b"".join(a.packed for a in self.rdnss))
        if self.dnssl:
            body = struct.pack("!HI", 0, self.dnssl_lifetime) + _names(self.dnssl)
            out += _opt(OPT_DNSSL, body)
        for p64 in self.pref64:
            plc = PLC_OF_LENGTH[p64.prefix.prefixlen]
            body = (
                struct.pack("!H", p64.scaled() << 3 | plc) + p64.prefix.network_address.packed[:12]
            )
            out += _opt(OPT_PREF64, body)
        for code, raw in self.unknown:
            out += _opt(code, raw)
        return bytes(out)

    # -- from wire --------------------------------------------------------------------

    @classmethod
    def from_wire(cls, data: bytes) -> RouterAdvert:
        if len(data) < 16:
            raise RaError("RA shorter than 16 bytes")
        t, code, _ck, hop, flags, life, reach, retrans = struct.unpack_from("!BBHBBHII", data)
        if t != ND_ROUTER_ADVERT or code != 0:
            raise RaError(f"ICMPv6 type {t} code {code} is not a Router Advertisement")
        ra = cls(
            cur_hop_limit=hop,
            managed=bool(flags & 0x80),
            other=bool(flags & 0x40),
            preference=PREF_NAME.get((flags >> 3) & 3, "medium"),
            router_lifetime=life,
            reachable_time=reach,
            retrans_timer=retrans,
        )
        for otype, body in iter_options(data, 16):
            ra._parse_option(otype, body)
        return ra

    @classmethod
    def from_options(cls, data: bytes) -> RouterAdvert:
        """The options alone, as the kernel hands RA options to userspace
        (RTM_NEWNDUSEROPT); the header fields keep their defaults."""
        ra = cls()
        for otype, body in iter_options(data, 0):
            ra._parse_option(otype, body)
        return ra

    def _parse_option(self, otype: int, body: bytes) -> None:
        if otype == OPT_SLLA:
            self.source_lladdr = body.rstrip(b"\0") or body
        elif otype == OPT_MTU:
            if len(body) != 6:
                raise RaError("MTU option: bad length")
            self.mtu = struct.unpack("!I", body[2:6])[0]
        elif otype == OPT_PIO:
            if len(body) != 30:
                raise RaError("prefix information option: bad length")
            n, f, valid, pref, _r = struct.unpack_from("!BBIII", body)
            if n > 128:
                raise RaError(f"prefix information option: prefix length {n}")
            net = ipaddress.IPv6Network((body[14:30], n), strict=False)
            self.prefixes.append(Prefix(net, valid, pref, bool(f & 0x80), bool(f & 0x40)))
        elif otype == OPT_RIO:
            if len(body) < 6:
                raise RaError("route information option: too short")
            n, f, life = struct.unpack_from("!BBI", body)
            if n > 128:
                raise RaError(f"route information option: prefix length {n}")
            raw = body[6:].ljust(16, b"\0")[:16]
            net = ipaddress.IPv6Network((raw, n), strict=False)
            self.routes.append(Route(net, life, PREF_NAME.get((f >> 3) & 3, "medium")))
        elif otype == OPT_RDNSS:
            if len(body) < 22 or (len(body) - 6) % 16:
                raise RaError("RDNSS option: bad length")
            self.rdnss_lifetime = struct.unpack_from("!I", body, 2)[0]
            self.rdnss += [ipaddress.IPv6Address(body[i : i + 16]) for i in range(6, len(body), 16)]
        elif otype == OPT_DNSSL:
            if len(body) < 6:
                raise RaError("DNSSL option: too short")
            self.dnssl_lifetime = struct.unpack_from("!I", body, 2)[0]
            self.dnssl += _parse_names(body[6:])
        elif otype == OPT_PREF64:
            if len(body) != 14:
                raise RaError("PREF64 option: length must be 2 (RFC 8781 §4)")
            word = struct.unpack_from("!H", body)[0]
            plc = word & 7
            if plc not in LENGTH_OF_PLC:
                raise RaError(f"PREF64 option: PLC {plc} is reserved (RFC 8781 §4)")
            n = LENGTH_OF_PLC[plc]
            net = ipaddress.IPv6Network((body[2:14] + bytes(4), n), strict=False)
            self.pref64.append(Pref64(net, (word >> 3) * 8))
        else:
            self.unknown.append((otype, body))


def iter_options(data: bytes, pos: int) -> list[tuple[int, bytes]]:
    """(type, body) of each ND option; RFC 4861 §4.6: a zero length is invalid."""
    out = []
    while pos < len(data):
        if pos + 2 > len(data):
            raise RaError("truncated option")
        otype, n = data[pos], data[pos + 1]
        if n == 0:
            raise RaError(f"option {otype} with length 0 (RFC 4861 §4.6)")
        end = pos + 8 * n
        if end > len(data):
            raise RaError(f"option {otype} runs past the message")
        out.append((otype, data[pos + 2 : end]))
        pos = end
    return out


def _opt(code: int, body: bytes) -> bytes:
    total = 2 + len(body)
    pad = -total % 8
    return bytes([code, (total + pad) // 8]) + body + bytes(pad)


def _names(names: list[str]) -> bytes:
    try:
        return encode_names(names)
    except ValueError as e:
        raise RaError(f"DNSSL: {e}") from None


def _parse_names(raw: bytes) -> list[str]:
    try:
        return decode_names(raw)
    except ValueError as e:
        raise RaError(f"DNSSL: {e}") from None


def router_solicit_invalid(data: bytes, hop_limit: int | None, source: str) -> str | None:
    """RFC 4861 §6.1.1: why a Router Solicitation must be silently discarded, or None.

    "The IP Hop Limit field has a value of 255" (a solicitation from off-link
    would have been forwarded), "ICMP Code is 0", "ICMP length (derived from the
    IP length) is 8 or more octets", "All included options have a length that is
    greater than zero", and "If the IP source address is the unspecified address,
    there is no source link-layer address option in the message." The kernel has
    already checked the ICMP checksum. ``hop_limit`` None: the caller could not
    learn it (the check is then skipped).
    """
    if len(data) < 8:
        return "short"
    if data[0] != ND_ROUTER_SOLICIT:
        return "not_solicitation"
    if data[1] != 0:
        return "code"
    if hop_limit is not None and hop_limit != 255:
        return "hop_limit"
    try:
        opts = iter_options(data, 8)
    except RaError:
        return "options"
    if source.split("%")[0] == "::" and any(t == OPT_SLLA for t, _ in opts):
        return "slla_from_unspecified"
    return None


def router_solicit_ok(data: bytes) -> bool:
    """The checks of :func:`router_solicit_invalid` that need only the ICMP message."""
    return router_solicit_invalid(data, None, "fe80::") is None
