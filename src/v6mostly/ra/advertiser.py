"""When to send Router Advertisements, and what (RFC 4861 §6.2.4-§6.2.6), sans-I/O.

Time and randomness are parameters (``now``, ``rand``), so the schedule is
tested on a virtual clock. The service asks ``next_time()``, sleeps until
then, and calls ``on_timer(now)``, which returns the RA to multicast (or
nothing yet). A Router Solicitation calls ``on_solicit(now)``, which moves the
next RA earlier as §6.2.6 allows: a random delay of up to
MAX_RA_DELAY_TIME, and never sooner than MIN_DELAY_BETWEEN_RAS after the
previous multicast RA.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from .options import PREF64_MAX_LIFETIME, Pref64, RouterAdvert

MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MAX_FINAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS = 3.0
MAX_RA_DELAY_TIME = 0.5
#: How many RAs carry a withdrawn PREF64 with lifetime 0.
WITHDRAW_COUNT = 3


def default_pref64_lifetime(max_interval: float) -> int:
    """RFC 8781 §4.1: 3 x MaxRtrAdvInterval, at most 65528 s."""
    return int(min(3 * max_interval, PREF64_MAX_LIFETIME))


@dataclass
class Advertiser:
    template: RouterAdvert
    max_interval: float = 600.0
    min_interval: float | None = None
    rand: Callable[[], float] = field(default=lambda: 0.5)
    sent: int = 0
    last_multicast: float = -1e18
    next_at: float = 0.0

    def __post_init__(self) -> None:
        if not 4 <= self.max_interval <= 1800:
            raise ValueError(f"max_interval {self.max_interval}: RFC 4861 §6.2.1 allows 4-1800 s")
        lo = (
            self.min_interval
            if self.min_interval is not None
            else max(3.0, 0.33 * self.max_interval)
        )
        if not 3 <= lo <= 0.75 * self.max_interval:
            raise ValueError(f"min_interval {lo}: RFC 4861 §6.2.1 wants 3 s to 0.75 x max_interval")
        self.min_interval = lo
        self._withdraw: list[Pref64] = []
        self._withdraw_left = 0

    def start(self, now: float) -> None:
        self.next_at = now

    def next_time(self) -> float:
        return self.next_at

    def _interval(self) -> float:
        assert self.min_interval is not None
        iv = self.min_interval + self.rand() * (self.max_interval - self.min_interval)
        if self.sent < MAX_INITIAL_RTR_ADVERTISEMENTS:
            iv = min(iv, MAX_INITIAL_RTR_ADVERT_INTERVAL)
        return iv

    def on_timer(self, now: float) -> bytes | None:
        if now < self.next_at:
            return None
        ra = self.current()
        self.sent += 1
        self.last_multicast = now
        self.next_at = now + self._interval()
        if self._withdraw_left:
            self._withdraw_left -= 1
            if not self._withdraw_left:
                self._withdraw = []
        return ra.to_wire()

    def on_solicit(self, now: float) -> None:
        delay = self.rand() * MAX_RA_DELAY_TIME
        when = max(now + delay, self.last_multicast + MIN_DELAY_BETWEEN_RAS)
        if when < self.next_at:
            self.next_at = when

    def current(self) -> RouterAdvert:
        ra = self.template
        if self._withdraw:
            ra = copy.copy(ra)
            ra.pref64 = list(ra.pref64) + [Pref64(p.prefix, 0) for p in self._withdraw]
        return ra

    def update(self, template: RouterAdvert, now: float) -> None:
        """New contents (e.g. a reload). A PREF64 that went away is withdrawn:
        sent with lifetime 0 in the next few RAs (RFC 8781 §4.2), starting soon."""
        old = {str(p.prefix) for p in self.template.pref64}
        new = {str(p.prefix) for p in template.pref64}
        gone = [p for p in self.template.pref64 if str(p.prefix) in old - new]
        self.template = template
        # A prefix announced again is no longer being withdrawn (never both at once).
        self._withdraw = [p for p in self._withdraw if str(p.prefix) not in new]
        if gone:
            self._withdraw += gone
            self._withdraw_left = WITHDRAW_COUNT
        elif not self._withdraw:
            self._withdraw_left = 0
        self.on_solicit(now)

    def final(self) -> bytes:
        """RFC 4861 §6.2.5: the RA a router sends when it stops: router lifetime 0."""
        ra = copy.copy(self.template)
        ra.router_lifetime = 0
        return ra.to_wire()
