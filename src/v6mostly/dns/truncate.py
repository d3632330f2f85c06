"""Fitting a response to its transport, so a UDP answer is never an amplifier.

RFC 1035 §4.2.1: "Messages carried by UDP are restricted to 512 bytes (not
counting the IP or UDP headers). Longer messages are truncated and the TC bit
is set in the header."
RFC 6891 §6.2.5: a requestor's OPT advertises the largest UDP payload it can
reassemble; "Values lower than 512 MUST be treated as equal to 512". A
responder may use a smaller size of its own: ours is ``max_udp_size``
(1232 by default, the DNS Flag Day 2020 value that fits a 1280-byte IPv6 MTU).
RFC 6891 §7: an OPT appears in a response only if the request had one;
RFC 3225 §3: its DO bit is copied from the query.
RFC 2181 §9: a truncated answer is retried over TCP, so the truncated message
carries the header and the question only (as unbound and BIND send it).
"""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message

#: RFC 1035 §4.2.1 (UDP without EDNS) and §4.2.2 (the TCP length field).
UDP_PLAIN = 512
TCP_MAX = 65535


def udp_size_limit(query: dns.message.Message | None, max_udp_size: int) -> int:
    """The largest UDP answer for this query: 512 without EDNS, else the client's
    advertised size (at least 512) capped by ours."""
    if query is None or query.edns < 0:
        return UDP_PLAIN
    return max(UDP_PLAIN, min(query.payload, max_udp_size))


def fit_response(
    response: dns.message.Message,
    query: dns.message.Message,
    max_udp_size: int,
    tcp: bool,
) -> tuple[bytes, bool]:
    """``response`` as wire bytes for its transport, and whether it was truncated.

    Over UDP the answer fits :func:`udp_size_limit`; beyond it the TC bit is set
    and only the header, the question and the OPT record are sent. The OPT of the
    response follows the query's (RFC 6891 §7) and advertises ``max_udp_size``."""
    if query.edns >= 0:
        flags = response.ednsflags if response.edns >= 0 else 0  # DO, extended rcode
        flags |= query.ednsflags & dns.flags.DO  # RFC 3225 §3: DO copied into the response
        response.use_edns(0, flags, max_udp_size, options=list(response.options))
    else:
        response.use_edns(False)
    limit = TCP_MAX if tcp else udp_size_limit(query, max_udp_size)
    try:
        return response.to_wire(max_size=limit), False
    except dns.exception.TooBig:
        pass
    short = dns.message.Message(id=response.id)
    short.flags = response.flags | dns.flags.TC
    if query.edns >= 0:
        short.use_edns(0, response.ednsflags, max_udp_size)
    short.set_rcode(response.rcode())
    short.question = list(response.question)
    try:
        return short.to_wire(max_size=limit), True
    except dns.exception.TooBig:  # a question too long to echo: the header alone
        short.question = []
        return short.to_wire(), True
