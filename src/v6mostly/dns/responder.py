"""``ipv4only.arpa`` (RFC 7050 / RFC 8880), an ACL, a rate limit and optional DNS64 (RFC 6147).

Sans-I/O: ``Responder.handle(wire, client, now)`` returns a :class:`Decision`:
an answer to send, a query to forward upstream, or a drop. The service owns
the sockets and the upstream queries; for DNS64 it hands the upstream's
answers back to :func:`synthesize`.

RFC 7050 §2.2/RFC 8880 §7.2: a node discovers Pref64 by asking AAAA for
``ipv4only.arpa``; the answer is 192.0.0.170 and 192.0.0.171 embedded in each
Pref64 (RFC 6052). The A answer is the two IPv4 addresses themselves.

Under attack (the order of ``handle``): the ACL, then a token bucket per client
address under a ceiling per /64 (``ratelimit``), then the 12-byte header: a
response (QR=1) is dropped, an opcode other than QUERY gets NOTIMP, a message
dnspython cannot parse gets a header-only FORMERR (never larger than the query).
CHAOS is answered here or REFUSED, never forwarded. Every answer leaves through
``finish``, which fits UDP to 512 bytes or the client's EDNS size capped by
``max_udp_size`` and sets TC beyond it (``truncate``). Every outcome is a key in
``counts``; nothing raises on input.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..addr.rfc6052 import Pref64
from .ratelimit import ClientRateLimit, TokenBucket
from .truncate import fit_response

__all__ = ["Decision", "Responder", "TokenBucket", "header_only_error"]

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
    #: the key counted in ``Responder.counts`` (the metric's ``outcome`` label)
    outcome: str = ""
    truncated: bool = False


#: RFC 1035 §4.1.1 header: ID, flags (QR bit 15, Opcode bits 11-14, RD bit 8).
HEADER_LEN = 12
QR_BIT = 0x8000
#: CHAOS names (BIND's convention, RFC 4892 §2.2 for id.server).
CHAOS_VERSION = {dns.name.from_text(n) for n in ("version.bind.", "version.server.")}
CHAOS_ID = {dns.name.from_text(n) for n in ("id.server.", "hostname.bind.")}


#: every outcome counted, present from the start (at zero): the metrics thread iterates
#: ``counts`` while the event loop updates it, so its size must not change
OUTCOMES = (
    # drops
    "refused_acl",
    "rate_limited",
    "rate_limited_prefix",
    "malformed",
    "dropped_response",
    # answers
    "ipv4only",
    "refused",
    "refused_class",
    "formerr",
    "notimp",
    "badvers",
    "chaos",
    "chaos_refused",
    "truncated",
    # forwarding (the service counts the last two)
    "forwarded",
    "dns64_synthesized",
    "upstream_failed",
    "forward_overload",
    # TCP admission (the service)
    "tcp_refused_acl",
    "tcp_refused_per_client",
    "tcp_refused_total",
    "tcp_evicted",
    "tcp_accept_failed",
)


def header_only_error(wire: bytes, rcode: int) -> bytes:
    """A 12-byte response to a query that cannot be parsed (RFC 1035 §4.1.1: ID
    copied, QR set, Opcode and RD copied, counts zero). Never larger than the query."""
    flags = int.from_bytes(wire[2:4], "big")
    out = QR_BIT | (flags & 0x7800) | (flags & 0x0100) | (rcode & 0xF)
    return wire[0:2] + out.to_bytes(2, "big") + bytes(8)


@dataclass
class Responder:
    pref64: list[ipaddress.IPv6Network]
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    forward: bool = True
    dns64: bool = False
    ttl: int = 300
    #: per client address (unbound's ``ip-ratelimit``)
    rate: float = 50.0
    burst: float = 100.0
    exclude: list[ipaddress.IPv4Network] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    #: per client prefix (/64, /24): a higher ceiling
    prefix_rate: float = 500.0
    prefix_burst: float = 1000.0
    #: RFC 6891 §6.2.5: the largest UDP answer whatever the client advertises
    max_udp_size: int = 1232
    #: CHAOS TXT answers; "" answers REFUSED
    chaos_version: str = ""
    chaos_id: str = ""

    def __post_init__(self) -> None:
        self.limiter = ClientRateLimit(self.rate, self.burst, self.prefix_rate, self.prefix_burst)
        self.bucket = self.limiter.address  # the per-address table, for callers that peek
        self._p64 = [Pref64(str(p)) for p in self.pref64]
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def set_pref64(self, pref64: list[ipaddress.IPv6Network]) -> None:
        """A new Pref64 (SIGHUP); rate-limit state and counters are kept."""
        self.pref64 = list(pref64)
        self._p64 = [Pref64(str(p)) for p in self.pref64]

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    _count = count

    def allowed(self, client: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(client in n for n in self.allow if n.version == client.version)

    def _drop(self, outcome: str, reason: str) -> Decision:
        self.count(outcome)
        return Decision("drop", reason=reason, outcome=outcome)

    def _answer(
        self, q: dns.message.Message, r: dns.message.Message, outcome: str, tcp: bool
    ) -> Decision:
        self.count(outcome)
        wire, truncated = self.finish(q, r, tcp)
        return Decision("answer", wire, reason=outcome, outcome=outcome, truncated=truncated)

    def handle(
        self,
        wire: bytes,
        client: ipaddress.IPv4Address | ipaddress.IPv6Address,
        now: float,
        tcp: bool = False,
    ) -> Decision:
        """One query from ``client``; never raises on ``wire``."""
        if not self.allowed(client):
            return self._drop("refused_acl", "client not in the allowed prefixes")
        limited = self.limiter.check(client, now)
        if limited:
            return self._drop(limited, "rate limited")
        if len(wire) < HEADER_LEN:
            return self._drop("malformed", "shorter than a DNS header")
        flags = int.from_bytes(wire[2:4], "big")
        if flags & QR_BIT:
            # a response is never answered (no loops, no reflection): RFC 1035 §7.3 asks
            # resolvers to discard responses they did not ask for
            return self._drop("dropped_response", "a response (QR=1), not a query")
        if (flags >> 11) & 0xF != dns.opcode.QUERY:
            # RFC 1035 §4.1.1 rcode 4: "The name server does not support the requested
            # kind of query" (NOTIFY, UPDATE, IQUERY, ...)
            self.count("notimp")
            return Decision("answer", header_only_error(wire, dns.rcode.NOTIMP), outcome="notimp")
        try:
            q = dns.message.from_wire(wire)
        except Exception:  # dnspython raises many types for garbage; all mean "malformed"
            # RFC 1035 §4.1.1 rcode 1: "unable to interpret the query"
            self.count("formerr")
            return Decision("answer", header_only_error(wire, dns.rcode.FORMERR), outcome="formerr")
        try:
            return self._query(q, tcp)
        except Exception:  # defence in depth: an answer we cannot build is a FORMERR
            self.count("formerr")
            return Decision("answer", header_only_error(wire, dns.rcode.FORMERR), outcome="formerr")

    def _query(self, q: dns.message.Message, tcp: bool) -> Decision:
        if len(q.question) != 1:
            return self._answer(q, self._error(q, dns.rcode.FORMERR), "formerr", tcp)
        if q.edns > 0:
            # RFC 6891 §6.1.3: an EDNS version we do not implement gets BADVERS
            return self._answer(q, self._error(q, dns.rcode.BADVERS), "badvers", tcp)
        qq = q.question[0]
        if qq.rdclass == dns.rdataclass.CH:
            return self._chaos(q, tcp)
        if qq.rdclass != dns.rdataclass.IN:
            # HS, NONE, ANY: nothing of ours, and nothing to forward
            return self._answer(q, self._error(q, dns.rcode.REFUSED), "refused_class", tcp)
        if qq.name == IPV4ONLY:
            return self._answer(q, self._ipv4only(q, qq.rdtype), "ipv4only", tcp)
        if not self.forward:
            return self._answer(q, self._error(q, dns.rcode.REFUSED), "refused", tcp)
        self.count("forwarded")
        return Decision("forward", query=q, outcome="forwarded")

    def _chaos(self, q: dns.message.Message, tcp: bool) -> Decision:
        """CHAOS class is answered here or REFUSED, never forwarded: the upstream's
        version is not ours to disclose, and a CHAOS query has no business leaving."""
        qq = q.question[0]
        text = ""
        if qq.name in CHAOS_VERSION:
            text = self.chaos_version
        elif qq.name in CHAOS_ID:
            text = self.chaos_id
        if not text or qq.rdtype not in (dns.rdatatype.TXT, dns.rdatatype.ANY):
            return self._answer(q, self._error(q, dns.rcode.REFUSED), "chaos_refused", tcp)
        r = self._response(q)
        r.flags |= dns.flags.AA
        rd = dns.rdata.from_wire(
            dns.rdataclass.CH,
            dns.rdatatype.TXT,
            _txt(text),
            0,
            len(_txt(text)),
        )
        rrset = dns.rrset.RRset(qq.name, dns.rdataclass.CH, dns.rdatatype.TXT)
        rrset.add(rd, 0)
        r.answer.append(rrset)
        return self._answer(q, r, "chaos", tcp)

    def finish(
        self, q: dns.message.Message, r: dns.message.Message, tcp: bool
    ) -> tuple[bytes, bool]:
        """``r`` as bytes for its transport (UDP: fitted, TC beyond the limit);
        counts ``truncated``."""
        r.id = q.id
        wire, truncated = fit_response(r, q, self.max_udp_size, tcp)
        if truncated:
            self.count("truncated")
        return wire, truncated

    def _response(self, q: dns.message.Message) -> dns.message.Message:
        return dns.message.make_response(q, our_payload=self.max_udp_size)

    def _error(self, q: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
        r = self._response(q)
        r.set_rcode(rcode)
        return r

    def servfail(self, q: dns.message.Message) -> dns.message.Message:
        """The answer when the upstream fails."""
        return self._error(q, dns.rcode.SERVFAIL)

    def _ipv4only(self, q: dns.message.Message, rdtype: int) -> dns.message.Message:
        r = self._response(q)
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
        return r

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


def _txt(text: str) -> bytes:
    """One TXT rdata: <character-string>s of at most 255 bytes (RFC 1035 §3.3.14)."""
    raw = text.encode("utf-8", "replace")[:1024]
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return b"".join(bytes([len(c)]) + c for c in chunks)
