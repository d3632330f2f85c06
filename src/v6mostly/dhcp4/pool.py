"""Free-address bookkeeping of one subnet: allocation in O(log n), never a scan.

Theory of operation
-------------------
The lease table is the truth (an address is free when it has no lease or its
lease has expired, ``LeaseTable.is_free``). This module only keeps two
*candidate* structures next to it, so that finding a free address does not
walk the pool (a full /16 used to cost a 65 534-step scan per DISCOVER):

* ``queue``: a FIFO of addresses believed free, in pool order at the start,
  then in the order they came back (the least recently used address is given
  out first, so a released address is not handed to the next client at once,
  which is what the old cursor did too). ``queued`` mirrors it as a set so an
  address is never queued twice.
* ``expiries``: a heap of ``(expires, address)``, one entry per lease written
  in this subnet. When a lease's time passes, its address goes back to the
  queue; entries of leases that were renewed or replaced are stale and skipped.

Entries are checked against the table when they come out (lazy deletion):
an address taken meanwhile by another path (a client asking for it with
option 50, a reservation) is simply dropped from the queue and comes back
through ``expiries`` or ``freed`` later. Each address enters the queue once
per time it becomes free and the heap once per lease write, so the cost per
allocation is amortised O(log n) whatever the pool size and whether it is
full. Time is a parameter, as everywhere in the core.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

#: is_free(address, now) from the lease table
IsFree = Callable[[int, float], bool]


class FreePool:
    def __init__(
        self,
        ranges: list[tuple[int, int]],
        excluded: set[int],
        held: Callable[[int], float | None],
    ) -> None:
        """``ranges``: inclusive address ranges; ``excluded``: addresses never given
        from the pool (reservations); ``held(a)``: the expiry of the lease at ``a``,
        or ``None`` (the table as it is now, e.g. loaded from disk)."""
        self.ranges = ranges
        self.held = held
        self.excluded = excluded
        self.size = sum(hi - lo + 1 for lo, hi in ranges)
        self.queue: deque[int] = deque()
        self.queued: set[int] = set()
        self.expiries: list[tuple[float, int]] = []
        for lo, hi in ranges:
            for a in range(lo, hi + 1):
                if a in excluded:
                    continue
                exp = held(a)
                if exp is None:
                    self.queue.append(a)
                    self.queued.add(a)
                else:
                    self.expiries.append((exp, a))
        heapq.heapify(self.expiries)

    def contains(self, a: int) -> bool:
        return a not in self.excluded and any(lo <= a <= hi for lo, hi in self.ranges)

    def take(self, now: float, is_free: IsFree) -> int | None:
        """The next free address (not yet written to the table: the caller does that
        and then calls ``leased``), or ``None`` when the pool is exhausted."""
        self._expire(now, is_free)
        q = self.queue
        while q:
            a = q.popleft()
            self.queued.discard(a)
            if is_free(a, now):
                return a
        return None

    def leased(self, a: int, expires: float) -> None:
        """A lease was written at ``a`` (offered, bound or declined) until ``expires``."""
        if self.contains(a):
            heapq.heappush(self.expiries, (expires, a))
            if len(self.expiries) > 4 * self.size + 1024:
                self._compact()

    def freed(self, a: int) -> None:
        """The lease at ``a`` was removed (RELEASE, option 108, another server chosen)."""
        if a not in self.queued and self.contains(a):
            self.queue.append(a)
            self.queued.add(a)

    def _expire(self, now: float, is_free: IsFree) -> None:
        h = self.expiries
        while h and h[0][0] <= now:
            _, a = heapq.heappop(h)
            if a not in self.queued and is_free(a, now):
                self.queue.append(a)
                self.queued.add(a)

    def _compact(self) -> None:
        """Renewals leave stale heap entries: keep one per address, the table's."""
        entries = []
        for a in {a for _, a in self.expiries}:
            exp = self.held(a)
            if exp is not None:
                entries.append((exp, a))
            elif a not in self.queued:
                self.queue.append(a)
                self.queued.add(a)
        heapq.heapify(entries)
        self.expiries = entries
