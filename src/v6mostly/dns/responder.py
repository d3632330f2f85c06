"""``ipv4only.arpa`` (RFC 7050 / RFC 8880), an ACL, a rate limit and optional DNS64 (RFC 6147).

Sans-I/O: ``Responder.handle(wire, client, now)`` returns a :class:`Decision`:
an answer to send, a query to forward upstream, or a drop. The service owns
the sockets and the upstream queries; for DNS64 it hands the upstream's
answers back to :func:`synthesize`.

RFC 7050 §2.2/RFC 8880 §7.2: a node discovers Pref64 by asking AAAA for
``ipv4only.arpa``; the answer is 192.0.0.170 and 192.0.0.171 embedded in each
Pref64 (RFC 6052). The A answer is the two IPv4 addresses themselves.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..addr.rfc6052 import Pref64

IPV4ONLY = dns.name.from_text("ipv4only.arpa.")
WELL_KNOWN_V4 = (ipaddress.IPv4Address("192.0.0.170"), ipaddress.IPv4Address("192.0.0.171"))

#: RFC 6147 §5.1.4: AAAA in ::ffff:0:0/96 count as no AAAA at all.
MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
#: A records never synthesized (RFC 6147 §5.1.4 leaves the list to the operator;
#: these are the ones that can never be reached through a NAT64).
DEFAULT_EXCLUDE = [
    ipaddress.IPv4Network("0.0.0.0/8"),
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv4Network("169.254.0.0/16"),
    ipaddress.IPv4Network("255.255.255.255/32"),
]


@dataclass
class Decision:
    kind: str  # "answer" | "forward" | "drop"
    wire: bytes = b""
    query: dns.message.Message | None = None
    reason: str = ""


class TokenBucket:
    """Per-client rate limit: ``rate`` queries/s with a ``burst``; time is a parameter."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.state: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self.state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self.state[key] = (tokens, now)
            return False
        self.state[key] = (tokens - 1, now)
        if len(self.state) > 100_000:  # bound the memory
            self.state.clear()
        return True


@dataclass
class Responder:
    pref64: list[ipaddress.IPv6Network]
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    forward: bool = True
    dns64: bool = False
    ttl: int = 300
    rate: float = 50.0
    burst: float = 100.0
    exclude: list[ipaddress.IPv4Network] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.rate, self.burst)
        self._p64 = [Pref64(str(p)) for p in self.pref64]
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def allowed(self, client: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(client in n for n in self.allow if n.version == client.version)

    def handle(
        self, wire: bytes, client: ipaddress.IPv4Address | ipaddress.IPv6Address, now: float
    ) -> Decision:
        if not self.allowed(client):
            self._count("refused_acl")
            return Decision("drop", reason="client not in the allowed prefixes")
        key = (
            str(client)
            if client.version == 4
            else str(ipaddress.IPv6Network((client, 64), strict=False))
        )
        if not self.bucket.allow(key, now):
            self._count("rate_limited")
            return Decision("drop", reason="rate limited")
        try:
            q = dns.message.from_wire(wire)
        except Exception:  # dnspython raises many types for garbage; all mean "malformed"
            self._count("malformed")
            return Decision("drop", reason="malformed query")
        if q.flags & dns.flags.QR or len(q.question) != 1 or q.opcode() != 0:
            self._count("malformed")
            return Decision("answer", self._error(q, dns.rcode.FORMERR))
        qq = q.question[0]
        if qq.name == IPV4ONLY:
            self._count("ipv4only")
            return Decision("answer", self._ipv4only(q, qq.rdtype))
        if not self.forward:
            self._count("refused")
            return Decision("answer", self._error(q, dns.rcode.REFUSED))
        self._count("forwarded")
        return Decision("forward", query=q)

    def _error(self, q: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
        r = dns.message.make_response(q)
        r.set_rcode(rcode)
        return r.to_wire()

    def _ipv4only(self, q: dns.message.Message, rdtype: int) -> bytes:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        if rdtype == dns.rdatatype.A:
            r.answer.append(
                dns.rrset.from_text_list(
                    IPV4ONLY, self.ttl, "IN", "A", [str(a) for a in WELL_KNOWN_V4]
                )
            )
        elif rdtype == dns.rdatatype.AAAA:
            texts = []
            for p in self._p64:
                for a in WELL_KNOWN_V4:
                    # RFC 8880 §7.1: the well-known addresses are embedded even with the WKP.
                    texts.append(str(ipaddress.IPv6Address(p.embed_unchecked(a.packed))))
            r.answer.append(dns.rrset.from_text_list(IPV4ONLY, self.ttl, "IN", "AAAA", texts))
        return r.to_wire()

    # -- DNS64 (RFC 6147 §5.1) ------------------------------------------------------------

    def needs_synthesis(self, q: dns.message.Message, aaaa_response: dns.message.Message) -> bool:
        """RFC 6147 §5.1.1/§5.1.2/§5.1.4: synthesize when the AAAA answer is NOERROR
        without usable AAAA (NODATA, or only ::ffff:0:0/96), not for NXDOMAIN or errors."""
        if not self.dns64 or q.question[0].rdtype != dns.rdatatype.AAAA:
            return False
        if aaaa_response.rcode() != dns.rcode.NOERROR:
            return False
        return not any(
            rrset.rdtype == dns.rdatatype.AAAA
            and any(ipaddress.IPv6Address(rd.address) not in MAPPED for rd in rrset)
            for rrset in aaaa_response.answer
        )

    def synthesize(
        self, q: dns.message.Message, a_response: dns.message.Message
    ) -> dns.message.Message:
        """The AAAA response made from the A response (RFC 6147 §5.1.7): CNAMEs kept,
        each A embedded in the first Pref64, TTL the smaller of the A TTL and ours."""
        r = dns.message.make_response(q)
        r.set_rcode(a_response.rcode())
        p = self._p64[0]
        for rrset in a_response.answer:
            if rrset.rdtype == dns.rdatatype.CNAME:
                r.answer.append(rrset)
            elif rrset.rdtype == dns.rdatatype.A:
                texts = []
                for rd in rrset:
                    a = ipaddress.IPv4Address(rd.address)
                    if any(a in n for n in self.exclude):
                        continue
                    out = p.embed(a.packed)
                    if out is not None:
                        texts.append(str(ipaddress.IPv6Address(out)))
                if texts:
                    ttl = min(rrset.ttl, self.ttl)
                    r.answer.append(dns.rrset.from_text_list(rrset.name, ttl, "IN", "AAAA", texts))
        self._count("dns64_synthesized")
        return r
