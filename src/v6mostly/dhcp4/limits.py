"""Per-client protections of the DHCPv4 server (time is a parameter).

Theory of operation
-------------------
* **Message rate** (Kea's ``limits`` hook, ``rate-limit`` per client class):
  each client (option 61, else htype + chaddr: ``Message.client_key``) has a
  token bucket of ``burst`` tokens refilled at ``rate`` per second; a message
  that finds the bucket empty is dropped before it is decided.
* **DECLINEs** (RFC 2131 §4.3.3 lets a client mark an address unusable; Kea
  honours every one, so one MAC in a loop burned an address per DECLINE):
  at most ``max_declines`` DECLINEs of a client are honoured per
  ``decline_window``. One more is not honoured (the address stays leased to
  that client) and the client gets no new address until the window has
  passed since its oldest honoured DECLINE.
* **Offer hold**: how long an OFFERed address is kept for the client's
  REQUEST (RFC 2131 §4.3.1 leaves it to the server); short, so DISCOVERs
  without REQUESTs cannot hold a pool for long.

Memory is bounded: at most ``max_clients`` clients are tracked; when full,
clients whose state has run out (a full bucket, no DECLINE in the window)
are forgotten first, then the oldest.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientLimits:
    offer_hold_time: float = 10.0
    client_rate: float = 10.0
    client_burst: float = 20.0
    max_declines: int = 3
    decline_window: float = 3600.0
    max_clients: int = 65536


class RateLimiter:
    """Token buckets keyed by client."""

    def __init__(self, rate: float, burst: float, max_clients: int = 65536) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        #: key -> (tokens, time of the last update)
        self.buckets: dict[bytes, tuple[float, float]] = {}

    def allow(self, key: bytes, now: float) -> bool:
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) >= self.max_clients:
                self._prune(now)
            tokens = self.burst
        else:
            tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            return False
        self.buckets[key] = (tokens - 1.0, now)
        return True

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate
        for k in [k for k, (_, t) in self.buckets.items() if now - t >= full]:
            del self.buckets[k]
        while len(self.buckets) >= self.max_clients:
            del self.buckets[next(iter(self.buckets))]


class DeclineLimiter:
    """Honoured DECLINEs per client within a sliding window."""

    def __init__(self, max_declines: int, window: float, max_clients: int = 65536) -> None:
        self.max = max_declines
        self.window = window
        self.max_clients = max_clients
        self.seen: dict[bytes, deque[float]] = {}

    def _recent(self, key: bytes, now: float) -> deque[float] | None:
        d = self.seen.get(key)
        if d is None:
            return None
        while d and d[0] <= now - self.window:
            d.popleft()
        if not d:
            del self.seen[key]
            return None
        return d

    def allow(self, key: bytes, now: float) -> bool:
        """May this DECLINE be honoured? (Records it if so.)"""
        d = self._recent(key, now)
        if d is not None and len(d) >= self.max:
            return False
        if self.max <= 0:
            return False
        if d is None:
            if len(self.seen) >= self.max_clients:
                self._prune(now)
            d = self.seen[key] = deque()
        d.append(now)
        return True

    def blocked(self, key: bytes, now: float) -> bool:
        """Has this client used up its DECLINEs (so it gets no new address for now)?"""
        if self.max <= 0:
            return False
        d = self._recent(key, now)
        return d is not None and len(d) >= self.max

    def _prune(self, now: float) -> None:
        for k in list(self.seen):
            self._recent(k, now)
        while len(self.seen) >= self.max_clients:
            del self.seen[next(iter(self.seen))]
