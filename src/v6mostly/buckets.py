"""Keyed token buckets, the one implementation the cores share (sans-I/O).

Each key (a DNS client address or prefix, a DHCP client id) has a bucket of
``burst`` tokens refilled at ``rate`` per second; ``allow`` spends one when there
is one. Memory is bounded: at most ``max_entries`` keys, the least recently seen
forgotten first (a forgotten key starts again with a full bucket, which an outer
limit still caps). Time is a parameter (``now``, seconds on any monotonic clock).
The translator's ICMP error limiter (``siit.ratelimit``) is a different shape:
a per-peer interval bucket plus a global one, on the packet path.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class TokenBuckets(Generic[K]):
    def __init__(self, rate: float, burst: float, max_entries: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_entries = max_entries
        #: key -> (tokens, time of the last update); insertion order = least recently seen first
        self.state: dict[K, tuple[float, float]] = {}

    def _tokens(self, key: K, now: float) -> float:
        tokens, last = self.state.get(key, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - last) * self.rate)

    def peek(self, key: K, now: float) -> bool:
        """Would ``allow`` accept now? (no token spent)"""
        return self._tokens(key, now) >= 1

    def allow(self, key: K, now: float) -> bool:
        tokens = self._tokens(key, now)
        ok = tokens >= 1
        self.state.pop(key, None)  # re-inserted last: least recently seen first
        self.state[key] = (tokens - 1 if ok else tokens, now)
        while len(self.state) > self.max_entries:
            del self.state[next(iter(self.state))]
        return ok
