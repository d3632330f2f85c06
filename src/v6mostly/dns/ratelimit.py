"""Rate limits for the DNS responder: one token bucket per client *address*
(unbound's ``ip-ratelimit``) under a higher ceiling per client *prefix* (/64 for
IPv6, /24 for IPv4), and a throttle for the log lines that report refusals.

Theory of operation: a query first spends a token from its address's bucket; a
query refused there never touches the prefix bucket, so one flooding host spends
at most its own ``rate`` of the prefix's ``prefix_rate`` and its neighbours in
the same /64 keep being answered. The prefix ceiling bounds a host that rotates
through many addresses of its /64 (privacy addresses cost nothing).

Memory is bounded: each table keeps at most ``max_entries`` keys, least recently
seen evicted first (an evicted key starts again with a full burst). Time is a
parameter (``now``, seconds on any monotonic clock).
"""

from __future__ import annotations

import ipaddress

from ..buckets import TokenBuckets

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TokenBucket(TokenBuckets[str]):
    """Token buckets keyed by a string (a client address or prefix)."""


def prefix_key(client: IPAddress) -> str:
    """The client's prefix: /64 for IPv6 (one LAN, one host's privacy addresses), /24 for IPv4."""
    plen = 64 if client.version == 6 else 24
    return str(ipaddress.ip_network((client, plen), strict=False))


class ClientRateLimit:
    """Per-address buckets under a per-prefix ceiling. ``check`` returns ``""`` when
    the query may go on, else the outcome: ``"rate_limited"`` (the address) or
    ``"rate_limited_prefix"`` (the prefix)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        prefix_rate: float,
        prefix_burst: float,
        max_entries: int = 100_000,
    ) -> None:
        self.address = TokenBucket(rate, burst, max_entries)
        self.prefix = TokenBucket(prefix_rate, prefix_burst, max_entries)

    def check(self, client: IPAddress, now: float) -> str:
        pkey = prefix_key(client)
        if not self.prefix.peek(pkey, now):
            return "rate_limited_prefix"
        if not self.address.allow(str(client), now):
            return "rate_limited"
        self.prefix.allow(pkey, now)
        return ""


class LogThrottle:
    """At most one log line per ``interval`` seconds per key, carrying how many
    events it stands for: ``note(key, now)`` returns that count when a line is
    due, else 0."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.pending: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def note(self, key: str, now: float) -> int:
        n = self.pending.get(key, 0) + 1
        last = self.last.get(key)
        if last is not None and now - last < self.interval:
            self.pending[key] = n
            return 0
        self.last[key] = now
        self.pending[key] = 0
        return n
