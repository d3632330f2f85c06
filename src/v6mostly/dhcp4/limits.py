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

Memory is bounded: at most ``max_clients`` clients are tracked (rate: the
least recently seen forgotten first; DECLINEs: clients whose window has run out
first, then the oldest).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..buckets import TokenBuckets


@dataclass(frozen=True)
class ClientLimits:
    offer_hold_time: float = 10.0
    client_rate: float = 10.0
    client_burst: float = 20.0
    max_declines: int = 3
    decline_window: float = 3600.0
    max_clients: int = 65536


class RateLimiter(TokenBuckets[bytes]):
    """Token buckets keyed by client (the shared :class:`v6mostly.buckets.TokenBuckets`)."""

    def __init__(self, rate: float, burst: float, max_clients: int = 65536) -> None:
        super().__init__(rate, burst, max_clients)

    @property
    def buckets(self) -> dict[bytes, tuple[float, float]]:
        return self.state


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
