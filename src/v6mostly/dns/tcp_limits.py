"""Admission of DNS-over-TCP connections (unbound's ``incoming-num-tcp`` and
``tcp-idle-timeout``), sans-I/O: the adapter asks at accept and reports activity.

Theory of operation: every accepted connection is checked before a byte is read:
the client's address must be in the ACL (the caller checks), the client must hold
fewer than ``max_per_client`` connections, and the total must stay under
``max_total``. When the total is full, the connection idle the longest (waiting
for a query, not working on one) is evicted to make room, so idle connections,
however many addresses they come from, can delay but not lock out a client that
is asking something; when every slot is busy the newcomer is refused.
RFC 7766 §6.2.3: a server "MAY close idle connections"; §6.2.1.1 asks servers to
manage them under load. The idle deadline itself is the adapter's read timeout,
``idle_timeout`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Conn:
    client: str
    last: float
    busy: bool = False


@dataclass
class Admission:
    ok: bool
    outcome: str  # "tcp_accepted" | "tcp_refused_per_client" | "tcp_refused_total"
    evict: list[int] = field(default_factory=list)


class TcpLimits:
    def __init__(self, max_total: int, max_per_client: int, idle_timeout: float) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.idle_timeout = idle_timeout
        self.conns: dict[int, _Conn] = {}
        self.per_client: dict[str, int] = {}

    def admit(self, cid: int, client: str, now: float) -> Admission:
        """May connection ``cid`` from ``client`` stay? If so it is recorded; the
        connections listed in ``evict`` are forgotten and the caller closes them."""
        if self.per_client.get(client, 0) >= self.max_per_client:
            return Admission(False, "tcp_refused_per_client")
        evict: list[int] = []
        if len(self.conns) >= self.max_total:
            idle = [(c.last, k) for k, c in self.conns.items() if not c.busy]
            if not idle:
                return Admission(False, "tcp_refused_total")
            victim = min(idle)[1]
            self.release(victim)
            evict.append(victim)
        self.conns[cid] = _Conn(client, now)
        self.per_client[client] = self.per_client.get(client, 0) + 1
        return Admission(True, "tcp_accepted", evict)

    def busy(self, cid: int, now: float) -> None:
        """A query has arrived on ``cid``: not evictable until ``idle``."""
        c = self.conns.get(cid)
        if c is not None:
            c.busy, c.last = True, now

    def idle(self, cid: int, now: float) -> None:
        """The answer has gone out: ``cid`` waits for the next query."""
        c = self.conns.get(cid)
        if c is not None:
            c.busy, c.last = False, now

    def release(self, cid: int) -> None:
        """``cid`` is closed (idempotent)."""
        c = self.conns.pop(cid, None)
        if c is None:
            return
        n = self.per_client.get(c.client, 0) - 1
        if n > 0:
            self.per_client[c.client] = n
        else:
            self.per_client.pop(c.client, None)
