"""Which Pref64 the CLAT translates with, and why (RFC 6877 §6.3, RFC 8781, RFC 7050), sans-I/O.

Theory of operation. Three sources, strongest first:

1. **pinned** (``--pref64``): always wins, never expires. Validated once at
   configuration time; a bad one raises :class:`AddressError` (exit 2).
2. **RA PREF64 options** (RFC 8781 §4): each (router, prefix) is valid until
   ``now + lifetime``; lifetime 0 withdraws it. When several are valid, the one
   *first advertised most recently* wins (a new prefix replaces the old while the
   router still announces the old one with a shrinking lifetime, and refreshes of
   the old one do not flip back; with several PREF64 options in one RA, the last
   new one wins). Withdrawal or expiry falls back to the next valid RA prefix.
3. **RFC 7050 discovery** (``ipv4only.arpa`` AAAA): used only while no RA on this
   link has carried PREF64 since the last link change (RFC 9872 prefers RFC 8781
   to RFC 7050). So a prefix withdrawn by the router, or expired, stops the CLAT
   (issue 9) instead of falling back to DNS; a link change re-opens DNS
   discovery. An answer may reveal several Pref64s (RFC 7050 §3); the first
   valid one in answer order is used. It is re-checked when the answer's TTL runs out (clamped to
   [``DNS_MIN_RECHECK``, ``DNS_MAX_RECHECK``]) and at once after a link change.
   A resolver *failure* keeps the last good prefix (it has no lifetime of its
   own) and retries with backoff (5 s doubling to 300 s); only a successful
   answer replaces it: another prefix, or none (no AAAA: no DNS64 here, or only
   prefixes that fail validation). A link change keeps it too, so a CLAT that
   resumes on the same network works at once (Apple's CLAT did not come back).

Every candidate is checked with :func:`validate_pref64` (RFC 6052 §2.2/§3.1,
RFC 8215); a failing one is refused (:class:`Pref64Refused`, once per source,
origin and prefix until the next link change) and never used.

After a link change (and at :meth:`Pref64Tracker.start`), a Router Solicitation is
due (RFC 4861 §6.3.7: up to 3, 4 s apart, until a PREF64 RA arrives), and the RA
prefixes learned before it are *unconfirmed*: one not re-advertised within
``RA_CONFIRM_WINDOW`` seconds is dropped (the host may be on another network).
An RS is also due when the RA prefix in use expires (a resumed host asks at once).

Time is a parameter (aioquic style). The driver loop::

    tracker.start(now)
    while True:
        sleep until tracker.next_deadline() (or an input arrives)
        tracker.tick(now)            # or on_ra_pref64 / on_dns_* / on_link_change
        for ev in tracker.events(): log ev (each names its source); reconfigure
        if tracker.rs_due(now): send RS; tracker.on_rs_sent(now)
        if tracker.dns_query_due(now): start query; tracker.on_dns_query_sent(now)

:meth:`Pref64Tracker.current` gives the selection as of the last call; call
``tick`` at ``next_deadline()`` so it never outlives an expiry.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from ..addr.rfc6052 import validate_pref64
from ..errors import AddressError, V6mostlyError

IPv6Network = ipaddress.IPv6Network

#: RFC 4861 §10 host constants.
MAX_RTR_SOLICITATIONS = 3
RTR_SOLICITATION_INTERVAL = 4.0
#: After a link change, an RA prefix not re-advertised within this many seconds is
#: dropped: the whole RS sequence (RFC 4861 §6.3.7) has gone unanswered.
RA_CONFIRM_WINDOW = MAX_RTR_SOLICITATIONS * RTR_SOLICITATION_INTERVAL
#: DNS re-check interval limits (seconds) around the answer's TTL.
DNS_MIN_RECHECK = 30.0
DNS_MAX_RECHECK = 86400.0
#: Retry after a resolver failure: 5 s, doubling, at most 300 s.
DNS_RETRY_FIRST = 5.0
DNS_RETRY_MAX = 300.0
#: A query neither answered nor reported failed within this long counts as failed.
DNS_QUERY_TIMEOUT = 30.0

PINNED_ORIGIN = "--pref64"
DNS_ORIGIN = "ipv4only.arpa (RFC 7050)"


class Pref64Source(StrEnum):
    PINNED = "pinned"
    RA = "ra"
    DNS = "dns"


@dataclass(frozen=True)
class Pref64Choice:
    """The Pref64 in use. ``expires`` is absolute (RA only); None never expires by itself."""

    prefix: IPv6Network
    source: Pref64Source
    #: Where it came from: ``--pref64``, ``RA from fe80::1``, ``ipv4only.arpa (RFC 7050)``.
    origin: str
    expires: float | None = None

    def remaining(self, now: float) -> float | None:
        """Seconds of lifetime left (RA), or None (pinned, DNS)."""
        return None if self.expires is None else max(0.0, self.expires - now)

    def describe(self, now: float) -> str:
        left = self.remaining(now)
        tail = "" if left is None else f", {left:.0f} s left"
        return f"{self.prefix} from {self.origin}{tail}"


@dataclass(frozen=True)
class Pref64Changed:
    """The selection changed: a new prefix, none any more, or the same prefix from
    another source (``prefix_changed`` tells whether the translator must change)."""

    at: float
    old: IPv6Network | None
    new: IPv6Network | None
    #: Source and origin of ``new`` (None / "" when there is none).
    source: Pref64Source | None
    origin: str
    reason: str
    #: Non-fatal remarks of :func:`validate_pref64` about ``new``.
    notes: tuple[str, ...] = ()

    @property
    def prefix_changed(self) -> bool:
        return self.old != self.new


@dataclass(frozen=True)
class Pref64Refused:
    """A candidate failed RFC 6052 validation and is not used."""

    at: float
    prefix: IPv6Network
    source: Pref64Source
    origin: str
    why: str


@dataclass(frozen=True)
class DnsRetry:
    """The ipv4only.arpa query failed; the next is due at ``retry_at``; ``kept`` is
    the last good prefix, kept meanwhile."""

    at: float
    failures: int
    retry_at: float
    kept: IPv6Network | None


Pref64Event = Pref64Changed | Pref64Refused | DnsRetry


@dataclass
class _RaEntry:
    expires: float
    lifetime: int
    order: int
    notes: tuple[str, ...]
    confirmed: bool = True


def _validate(prefix: IPv6Network) -> tuple[str, ...] | str:
    """The notes of a valid prefix, or the reason it is refused (a str)."""
    try:
        return tuple(validate_pref64(prefix))
    except AddressError as e:
        return str(e)


class Pref64Tracker:
    """Chooses the CLAT's Pref64 from ``--pref64``, RA PREF64 and ipv4only.arpa (module doc)."""

    def __init__(self, pinned: IPv6Network | None = None) -> None:
        self._pinned: IPv6Network | None = None
        self._pinned_notes: tuple[str, ...] = ()
        if pinned is not None:
            self._pinned, self._pinned_notes = pinned, self._check_pin(pinned)
        self._ra: dict[tuple[str, IPv6Network], _RaEntry] = {}
        self._ra_signalled = False
        self._order = 0
        self._confirm_by: float | None = None
        self._dns: IPv6Network | None = None
        self._dns_notes: tuple[str, ...] = ()
        self._dns_next: float | None = None
        self._dns_in_flight: float | None = None
        self._dns_failures = 0
        self._rs_left = 0
        self._rs_next = 0.0
        self._selected: Pref64Choice | None = None
        self._refused_seen: set[tuple[Pref64Source, str, IPv6Network]] = set()
        self._events: list[Pref64Event] = []
        self._last_reason = "not started"
        #: How many candidates were refused (every time, not only the first report).
        self.refused_count = 0

    # -- configuration ----------------------------------------------------------------

    @staticmethod
    def _check_pin(prefix: IPv6Network) -> tuple[str, ...]:
        checked = _validate(prefix)
        if isinstance(checked, str):
            raise AddressError(f"--pref64 {prefix}: {checked}")
        return checked

    def set_pinned(self, prefix: IPv6Network | None, now: float) -> None:
        """Pin (or unpin with None) the Pref64, e.g. on a configuration reload.

        Raises :class:`AddressError` for a prefix that fails RFC 6052 checks."""
        notes = self._check_pin(prefix) if prefix is not None else ()
        self._expire(now)
        self._pinned, self._pinned_notes = prefix, notes
        self._reselect(now, "pinned by configuration" if prefix else "pin removed")

    # -- inputs -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: an RS is due and (without RA PREF64) an ipv4only.arpa query."""
        self._link_reset(now)
        self._reselect(now, "start")

    def on_link_change(self, now: float) -> None:
        """Link up again, or resumed from sleep: re-solicit, re-query, re-confirm."""
        self._expire(now)
        self._link_reset(now)
        for entry in self._ra.values():
            entry.confirmed = False
        self._confirm_by = now + RA_CONFIRM_WINDOW if self._ra else None
        self._reselect(now, "link change")

    def _link_reset(self, now: float) -> None:
        self._ra_signalled = False
        self._rs_left = MAX_RTR_SOLICITATIONS
        self._rs_next = now
        self._dns_next = now
        self._dns_in_flight = None
        self._dns_failures = 0
        self._refused_seen.clear()

    def on_ra_pref64(self, prefix: IPv6Network, lifetime_s: int, router: str, now: float) -> None:
        """One PREF64 option (RFC 8781 §4) of an RA from ``router``; 0 withdraws it."""
        if lifetime_s < 0:
            raise V6mostlyError(f"PREF64 lifetime {lifetime_s!r}: expected seconds >= 0")
        self._expire(now)
        self._ra_signalled = True
        self._rs_left = 0  # RFC 4861 §6.3.7: an RA ends the solicitation
        origin = f"RA from {router}"
        checked = _validate(prefix)
        if isinstance(checked, str):
            self._refuse(now, prefix, Pref64Source.RA, origin, checked)
            self._reselect(now, f"PREF64 {prefix} in {origin} refused")
            return
        key = (router, prefix)
        if lifetime_s == 0:
            gone = self._ra.pop(key, None)
            how = "withdrawn" if gone else "withdrawal of an unknown prefix"
            self._reselect(now, f"{how} by {origin} (lifetime 0, RFC 8781 §4)")
            return
        entry = self._ra.get(key)
        if entry is None:
            self._order += 1
            self._ra[key] = _RaEntry(now + lifetime_s, lifetime_s, self._order, checked)
            reason = f"new PREF64 in {origin} (lifetime {lifetime_s} s)"
        else:
            entry.expires, entry.lifetime, entry.confirmed = now + lifetime_s, lifetime_s, True
            reason = f"PREF64 refreshed by {origin} (lifetime {lifetime_s} s)"
        self._reselect(now, reason)

    def on_dns_query_sent(self, now: float) -> None:
        self._dns_in_flight = now + DNS_QUERY_TIMEOUT

    def on_dns_result(self, prefixes: list[IPv6Network], ttl_s: int, now: float) -> None:
        """A successful ipv4only.arpa answer (RFC 7050 §3): the Pref64s it revealed,
        in answer order, possibly none (no AAAA: no DNS64, so no NAT64 here)."""
        if ttl_s < 0:
            raise V6mostlyError(f"ipv4only.arpa TTL {ttl_s!r}: expected seconds >= 0")
        self._expire(now)
        self._dns_in_flight = None
        self._dns_failures = 0
        self._dns_next = now + min(DNS_MAX_RECHECK, max(DNS_MIN_RECHECK, float(ttl_s)))
        chosen: tuple[IPv6Network, tuple[str, ...]] | None = None
        for p in prefixes:
            checked = _validate(p)
            if isinstance(checked, str):
                self._refuse(now, p, Pref64Source.DNS, DNS_ORIGIN, checked)
            elif chosen is None:
                chosen = (p, checked)
        if chosen is not None:
            self._dns, self._dns_notes = chosen
            reason = f"{DNS_ORIGIN} answered {chosen[0]} (TTL {ttl_s} s)"
        else:
            self._dns, self._dns_notes = None, ()
            reason = (
                f"{DNS_ORIGIN} answered only refused prefixes"
                if prefixes
                else f"{DNS_ORIGIN} has no AAAA: no DNS64/NAT64 here"
            )
        self._reselect(now, reason)

    def on_dns_failure(self, now: float) -> None:
        """The resolver failed (timeout, SERVFAIL, unreachable): keep the last good
        prefix, retry with backoff."""
        self._expire(now)
        self._dns_fail(now)

    def _dns_fail(self, now: float) -> None:
        self._dns_in_flight = None
        self._dns_failures += 1
        delay = min(DNS_RETRY_MAX, DNS_RETRY_FIRST * 2 ** min(self._dns_failures - 1, 16))
        self._dns_next = now + delay
        self._events.append(DnsRetry(now, self._dns_failures, self._dns_next, self._dns))

    def tick(self, now: float) -> None:
        """Apply expiries and timeouts due by ``now``."""
        self._expire(now)

    # -- outputs ----------------------------------------------------------------------

    def events(self) -> list[Pref64Event]:
        """The events since the last call (drained)."""
        out, self._events = self._events, []
        return out

    def current(self) -> Pref64Choice | None:
        return self._selected

    @property
    def why_none(self) -> str:
        """Why there is no Pref64 (for ``clat status``); "" while there is one."""
        if self._selected is not None:
            return ""
        last = self._last_reason
        if self._ra_signalled:
            return f"no valid PREF64 in RAs on this link (last: {last})"
        if self._dns_failures:
            return (
                f"no PREF64 in RAs; {DNS_ORIGIN} failing ({self._dns_failures} failures, "
                f"next try at {self._dns_next:.0f}; last: {last})"
            )
        return f"no PREF64 in RAs and none from {DNS_ORIGIN} (last: {last})"

    def rs_due(self, now: float) -> bool:
        return self._rs_left > 0 and now >= self._rs_next

    def on_rs_sent(self, now: float) -> None:
        self._rs_left = max(0, self._rs_left - 1)
        self._rs_next = now + RTR_SOLICITATION_INTERVAL

    def dns_wanted(self) -> bool:
        """Whether RFC 7050 discovery is in use: not pinned, no PREF64 RA on this link."""
        return self._pinned is None and not self._ra_signalled

    def dns_query_due(self, now: float) -> bool:
        return (
            self.dns_wanted()
            and self._dns_in_flight is None
            and self._dns_next is not None
            and now >= self._dns_next
        )

    def next_deadline(self) -> float | None:
        """When ``tick`` must run next (or an RS / a query falls due); None: no timer."""
        times = [e.expires for e in self._ra.values()]
        if self._confirm_by is not None:
            times.append(self._confirm_by)
        if self._rs_left > 0:
            times.append(self._rs_next)
        if self._dns_in_flight is not None:
            times.append(self._dns_in_flight)
        elif self.dns_wanted() and self._dns_next is not None:
            times.append(self._dns_next)
        return min(times, default=None)

    # -- internals --------------------------------------------------------------------

    def _refuse(
        self, now: float, prefix: IPv6Network, source: Pref64Source, origin: str, why: str
    ) -> None:
        self.refused_count += 1
        key = (source, origin, prefix)
        if key not in self._refused_seen:
            self._refused_seen.add(key)
            self._events.append(Pref64Refused(now, prefix, source, origin, why))

    def _expire(self, now: float) -> None:
        reasons: list[str] = []
        sel = self._selected
        for (router, prefix), e in list(self._ra.items()):
            if now >= e.expires:
                why = f"PREF64 {prefix} from RA from {router} expired (lifetime {e.lifetime} s)"
            elif not e.confirmed and self._confirm_by is not None and now >= self._confirm_by:
                why = (
                    f"PREF64 {prefix} from RA from {router} not re-advertised within "
                    f"{RA_CONFIRM_WINDOW:.0f} s of the link change"
                )
            else:
                continue
            del self._ra[(router, prefix)]
            if sel is not None and (sel.source, sel.prefix, sel.origin) == (
                Pref64Source.RA,
                prefix,
                f"RA from {router}",
            ):
                reasons.insert(0, why)
                self._rs_left, self._rs_next = MAX_RTR_SOLICITATIONS, now  # ask at once
            else:
                reasons.append(why)
        if self._confirm_by is not None and now >= self._confirm_by:
            self._confirm_by = None
        if self._dns_in_flight is not None and now >= self._dns_in_flight:
            self._dns_fail(now)
        if reasons:
            self._reselect(now, reasons[0])

    def _select(self) -> tuple[Pref64Choice, tuple[str, ...]] | None:
        if self._pinned is not None:
            return Pref64Choice(
                self._pinned, Pref64Source.PINNED, PINNED_ORIGIN
            ), self._pinned_notes
        if self._ra:
            (router, prefix), e = max(self._ra.items(), key=lambda kv: kv[1].order)
            choice = Pref64Choice(prefix, Pref64Source.RA, f"RA from {router}", e.expires)
            return choice, e.notes
        if self.dns_wanted() and self._dns is not None:
            return Pref64Choice(self._dns, Pref64Source.DNS, DNS_ORIGIN), self._dns_notes
        return None

    def _reselect(self, now: float, reason: str) -> None:
        picked = self._select()
        old = self._selected
        new = picked[0] if picked else None
        self._last_reason = reason
        same = (
            old is not None
            and new is not None
            and (old.prefix, old.source, old.origin) == (new.prefix, new.source, new.origin)
        )
        self._selected = new
        if same or (old is None and new is None):
            return
        self._events.append(
            Pref64Changed(
                now,
                old.prefix if old else None,
                new.prefix if new else None,
                new.source if new else None,
                new.origin if new else "",
                reason,
                picked[1] if picked else (),
            )
        )
