"""Rate limit of the ICMP errors the translator originates (sans-I/O).

RFC 4443 §2.4 (f): "an IPv6 node MUST limit the rate of ICMPv6 error messages
it originates"; RFC 1812 §4.3.2.8: "A router which sends ICMP Source Quench
messages MUST be able to limit the rate ... [and] SHOULD also be able to limit
the rate of other ICMP error messages". Without a limit a translator answering
every TTL-expiring packet is a 1:1 reflector towards spoofed sources.

Two token buckets, as the Linux kernel has them:

* one per destination of the error (the offending packet's source), refilled
  at one token every ``interval`` seconds up to ``burst`` tokens (the kernel's
  ``icmp_ratelimit`` = 1000 ms with ``XRLIM_BURST_FACTOR`` = 6);
* one global bucket of ``rate`` tokens per second up to ``global_burst``
  (the kernel's ``icmp_msgs_per_sec`` = 1000 and ``icmp_msgs_burst`` = 50).

An error is sent only when both have a token. Time is a parameter (``now``,
seconds on any monotonic clock); the per-address table is bounded. Addresses in
``shared`` stand for many hosts (a PLAT's NAPT66 outer addresses: every client of
the site is one of them to the translator): errors to them take only from the
global bucket, so one client's traceroute does not starve another's.
"""

from __future__ import annotations

#: Kernel defaults (net.ipv4.icmp_ratelimit / net.ipv6.icmp.ratelimit, burst factor,
#: net.ipv4.icmp_msgs_per_sec, net.ipv4.icmp_msgs_burst).
DEFAULT_INTERVAL_MS = 1000
DEFAULT_BURST = 6
DEFAULT_RATE = 1000
DEFAULT_GLOBAL_BURST = 50


class IcmpRateLimiter:
    """Per-address and global token buckets. ``0`` for an interval or rate turns that bucket off."""

    __slots__ = (
        "_global",
        "_global_at",
        "_peers",
        "burst",
        "global_burst",
        "interval",
        "max_peers",
        "rate",
        "shared",
    )

    def __init__(
        self,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        burst: int = DEFAULT_BURST,
        rate: float = DEFAULT_RATE,
        global_burst: int = DEFAULT_GLOBAL_BURST,
        max_peers: int = 4096,
        shared: frozenset[bytes] = frozenset(),
    ) -> None:
        self.interval = interval_ms / 1000.0
        self.burst = max(burst, 1)
        self.rate = float(rate)
        self.global_burst = max(global_burst, 1)
        self.max_peers = max_peers
        self.shared = shared
        #: address bytes -> (tokens, time of the last update)
        self._peers: dict[bytes, tuple[float, float]] = {}
        self._global = float(self.global_burst)
        self._global_at: float | None = None

    def allow(self, peer: bytes, now: float) -> bool:
        """Take a token for an error to ``peer`` at ``now``; False: suppress it."""
        if self.rate > 0:
            g = self._global
            if self._global_at is not None:
                g = min(float(self.global_burst), g + (now - self._global_at) * self.rate)
            self._global_at = now
            if g < 1.0:
                self._global = g
                return False
        else:
            g = 0.0
        if self.interval > 0 and peer not in self.shared:
            peers = self._peers
            state = peers.pop(peer, None)  # re-inserted last: the dict is an LRU
            if state is None:
                tokens = float(self.burst)
            else:
                tokens = min(float(self.burst), state[0] + (now - state[1]) / self.interval)
            if tokens < 1.0:
                peers[peer] = (tokens, now)
                if self.rate > 0:
                    self._global = g
                return False
            if len(peers) >= self.max_peers:
                # Forget the least recently seen address; it starts again with a full bucket,
                # which the global bucket still caps.
                del peers[next(iter(peers))]
            peers[peer] = (tokens - 1.0, now)
        if self.rate > 0:
            self._global = g - 1.0
        return True
