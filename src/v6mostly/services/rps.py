"""``[tun] rps = "auto"``: Receive Packet Steering on the TUN only while bulk traffic flows.

A worker's write into the TUN runs the kernel's whole forwarding path for the
packet (routing, nftables, segmentation of a super-packet) in the worker's own
context. RPS hands that to another CPU's backlog, so the worker goes back to
reading: it pays for TCP super-packets. For a lone packet it costs a wake-up of
another CPU instead: measured in the lab (bench/e2e.py, 2 CPUs), ping through
the PLAT 0.46 ms with RPS, 0.39 ms without (TAYGA 0.26 ms); the same holds for
TAYGA (0.084 -> 0.27 ms on a quiet machine).

The in-kernel fast path (``linux/fastpath.py``) hands its translated packets to
the TUN's ingress too, where RPS spreads them the same way: there it splits a
download's forwarding and the client's TCP input from the server's sending
(same-run A/B, 5 rounds, TCP down: 0.93x kernel forwarding with RPS, 0.80x
without).

``auto`` (the default) turns RPS on when the workers read, or the fast path
translates, at least ``ON_RATE`` GSO super-packets per second, and off again once the rate has stayed
under ``OFF_RATE`` for ``OFF_AFTER`` seconds; ``true`` and ``false`` pin it.
:class:`RpsAuto` is the decision (no I/O, no clock: the service gives it the
counter and the time once a second); the service writes ``rps_cpus``
(``linux/tun.set_rps``) and logs each change.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Super-packets per second that turn RPS on (a single TCP flow at ~1 Gbit/s
#: with 64 KB super-packets reads about 2,000 per second).
ON_RATE = 500.0
#: ... and the rate it must stay under, for OFF_AFTER seconds, to turn off.
OFF_RATE = 100.0
OFF_AFTER = 5.0


@dataclass
class RpsAuto:
    """Decides from the ``gso_superpackets`` counter; :meth:`update` returns the new
    state when it changes (True: on, False: off), else None."""

    on: bool = False
    on_rate: float = ON_RATE
    off_rate: float = OFF_RATE
    off_after: float = OFF_AFTER
    _count: int | None = None
    _t: float = 0.0
    _quiet_since: float | None = None

    def update(self, count: int, now: float) -> bool | None:
        prev, t0 = self._count, self._t
        self._count, self._t = count, now
        if prev is None or now <= t0 or count < prev:  # first sample, or counters restarted
            return None
        rate = (count - prev) / (now - t0)
        if not self.on:
            if rate >= self.on_rate:
                self.on, self._quiet_since = True, None
                return True
            return None
        if rate >= self.off_rate:
            self._quiet_since = None
            return None
        if self._quiet_since is None:
            self._quiet_since = t0
        if now - self._quiet_since >= self.off_after:
            self.on, self._quiet_since = False, None
            return False
        return None
