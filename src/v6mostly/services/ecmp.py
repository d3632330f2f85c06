"""``v6mostly ecmp``: the Pref64 over several PLATs through a resilient nexthop group.

bird2 (BGP + BFD to every PLAT) exports the multipath Pref64 route into ``learn_table``;
it cannot program nexthop objects. This daemon keeps, in step with that route: one nexthop
object per gateway (ids ``group_id+1``...), a group ``type resilient`` of exactly those,
and ``PREFIX nhid GROUP`` in ``table``. Members come and go by replacing the group, so only
their buckets move (a returning PLAT takes buckets idle for ``idle_timer``): the other
PLATs keep their flows, hence their NAPT66 state. Every pass (route, link and nexthop
events; every 0.5 s) reads the kernel back: it flushes the nexthops of a link that goes
down or loses carrier itself. ``plan`` is the sans-I/O decision (kernel state and wanted
gateways in, actions out). Exit leaves route, group and hash sysctls in place (a restart
must not move a flow); ``--cleanup`` removes them and restores the sysctls.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..control import ControlError, ControlServer, default_path
from ..ecmp_config import EcmpSettings, load_ecmp
from ..errors import V6mostlyError
from ..linux import nexthop as nh

log = logging.getLogger("v6mostly.ecmp")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGIO}
RECONCILE_EVERY = 0.5
RETRY_REFUSED = 2.0
_UNUSABLE = nh.RTNH_F_DEAD | nh.RTNH_F_LINKDOWN


# -- the decision core (sans-I/O) ----------------------------------------------------------


@dataclass(frozen=True, order=True)
class Gateway:
    address: str
    oif: int


@dataclass(frozen=True)
class Group:
    members: tuple[int, ...]
    resilient: bool = True
    buckets: int = 0
    idle_timer: float = 0.0
    unbalanced_timer: float = 0.0


@dataclass(frozen=True)
class Current:
    """The kernel's: member objects (None: not a gateway), group, route's nhid (None: no
    route, 0: a route without a nexthop object)."""

    members: dict[int, Gateway | None] = dataclasses.field(default_factory=dict)
    group: Group | None = None
    route_nhid: int | None = None

    def gateways(self) -> set[Gateway]:
        """The gateways the group sends to now."""
        if self.group is None:
            return set()
        return {g for i in self.group.members if (g := self.members.get(i)) is not None}


@dataclass(frozen=True)
class SetNexthop:
    id: int
    gateway: Gateway


@dataclass(frozen=True)
class SetGroup:
    members: tuple[int, ...]


@dataclass(frozen=True)
class DeleteNexthop:
    id: int
    why: str = ""


@dataclass(frozen=True)
class SetRoute:
    pass


@dataclass(frozen=True)
class DeleteRoute:
    pass


Action = SetNexthop | SetGroup | DeleteNexthop | SetRoute | DeleteRoute


def assign_ids(desired: Iterable[Gateway], cur: Current, p: EcmpSettings) -> dict[Gateway, int]:
    """A member id per gateway: a gateway keeps the id it has (its buckets stay with it);
    a new one takes the lowest id no object holds, then the lowest of a stale object."""
    want = sorted(set(desired))
    grouped = set(cur.group.members) if cur.group else set()
    ids: dict[Gateway, int] = {}
    for i in sorted(cur.members, key=lambda i: (i not in grouped, i)):
        g = cur.members[i]
        if g is not None and g in want and g not in ids:
            ids[g] = i
    taken = set(ids.values())
    free = [i for i in p.member_ids if i not in cur.members] + [
        i for i in p.member_ids if i in cur.members and i not in taken
    ]
    for g in want:
        if g not in ids:
            if not free:
                break  # more gateways than member ids: the lowest ones are served
            ids[g] = free.pop(0)
    return ids


def plan(desired: Iterable[Gateway], cur: Current, p: EcmpSettings) -> list[Action]:
    """The kernel changes that make ``cur`` the group of ``desired``, in a safe order:
    new member objects, the group (a replace: only the changed members' buckets move),
    the route, then stale objects. No gateway: route, group and members go."""
    want = set(desired)
    out: list[Action] = []
    if not want:
        if cur.route_nhid == p.group_id:
            out.append(DeleteRoute())
        if cur.group is not None:
            out.append(DeleteNexthop(p.group_id, "no member left"))
        out += [DeleteNexthop(i, "no member left") for i in sorted(cur.members)]
        return out
    ids = assign_ids(want, cur, p)
    for g, i in sorted(ids.items(), key=lambda x: x[1]):
        if cur.members.get(i) != g:
            out.append(SetNexthop(i, g))
    members = tuple(sorted(ids.values()))
    g0 = cur.group
    recreate = g0 is not None and (not g0.resilient or g0.buckets != p.buckets)
    if recreate:
        # The kernel changes neither a group's type nor its bucket count: a new group
        # (its deletion takes the route along; it is put back just after).
        out.append(DeleteNexthop(p.group_id, "type or bucket count changed"))
    if (
        g0 is None
        or recreate
        or g0.members != members
        or (g0.idle_timer, g0.unbalanced_timer) != (p.idle_timer, p.unbalanced_timer)
    ):
        out.append(SetGroup(members))
    if recreate or cur.route_nhid != p.group_id:
        out.append(SetRoute())
    out += [DeleteNexthop(i, "stale") for i in sorted(cur.members) if i not in members]
    return out


@dataclass(frozen=True)
class Change:
    kind: str  # added | removed
    gateway: Gateway
    reason: str  # bgp | link | flush | start


REASONS = {
    "bgp": "BGP route change",
    "link": "link state",
    "flush": "link flush: the kernel removed the nexthop with its link",
    "start": "found at start",
}


def explain(
    before: set[Gateway] | None,
    kernel: set[Gateway],
    after: set[Gateway],
    learned: set[Gateway],
    learned_before: set[Gateway],
) -> list[Change]:
    """Membership changes of one pass, with why: ``before`` the members after the last
    pass (None at start), ``kernel`` the members found now, ``after`` the members now,
    ``learned`` (``learned_before``) the gateways of bird2's route now (last pass)."""
    out: list[Change] = []
    if before is None:
        out += [Change("added", g, "start") for g in sorted(kernel)]
        before = kernel
    out += [Change("removed", g, "flush") for g in sorted(before - kernel)]
    for g in sorted(kernel - after):
        out.append(Change("removed", g, "link" if g in learned else "bgp"))
    for g in sorted(after - kernel):
        out.append(Change("added", g, "bgp" if g not in learned_before else "link"))
    return out


def describe(a: Action, s: EcmpSettings, ifname: Any = str) -> str:
    """An action as the ``ip`` command that does the same (dry run, debug lines)."""
    if isinstance(a, SetNexthop):
        return f"ip nexthop replace id {a.id} via {a.gateway.address} dev {ifname(a.gateway.oif)}"
    if isinstance(a, SetGroup):
        return (
            f"ip nexthop replace id {s.group_id} group {'/'.join(map(str, a.members))} "
            f"type resilient buckets {s.buckets} idle_timer {s.idle_timer} "
            f"unbalanced_timer {s.unbalanced_timer}"
        )
    if isinstance(a, DeleteNexthop):
        return f"ip nexthop del id {a.id}" + (f"  # {a.why}" if a.why else "")
    if isinstance(a, SetRoute):
        return f"ip -6 route replace {s.prefix} nhid {s.group_id} table {s.table}"
    return f"ip -6 route del {s.prefix} table {s.table}"


# -- the kernel adapter ---------------------------------------------------------------------


def ifname(oif: int) -> str:
    try:
        return socket.if_indextoname(oif)
    except OSError:
        return f"if{oif}"


def gw_text(g: Gateway) -> str:
    return f"{g.address} dev {ifname(g.oif)}"


@dataclass
class Observed:  # bird2's gateways, those of them with a live link, the kernel's state
    learned: set[Gateway]
    usable: set[Gateway]
    current: Current


def read_state(n: nh.Netlink, s: EcmpSettings) -> Observed:
    learned: set[Gateway] = set()
    usable: set[Gateway] = set()
    for addr, oif, flags in nh.learned_gateways(n, s.learn_table, s.prefix) or ():
        learned.add(Gateway(addr, oif))
        if not flags & _UNUSABLE:
            usable.add(Gateway(addr, oif))
    members: dict[int, Gateway | None] = {}
    group = None
    for o in n.dump():
        if o.id == s.group_id:
            res = bool(o.group) and o.group_type == nh.NEXTHOP_GRP_TYPE_RES
            group = Group(o.group, res, o.buckets, o.idle_timer, o.unbalanced_timer)
        elif o.id in s.member_ids:
            members[o.id] = Gateway(o.gateway, o.oif) if o.gateway and not o.group else None
    return Observed(learned, usable, Current(members, group, nh.route_nhid(n, s.table, s.prefix)))


class Sysctls:
    """Set /proc/sys values, remembering the old ones for ``restore``."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.old: dict[str, str] = {}

    def apply(self) -> None:
        for k, v in self.values.items():
            path = f"/proc/sys/{k}"
            try:
                with open(path) as f:
                    old = f.read().strip()
                if old not in (v, str(int(v, 0))):
                    with open(path, "w") as f:
                        f.write(v)
                    self.old[k] = old
                    log.info("sysctl %s=%s (was %s)", k.replace("/", "."), v, old)
            except OSError as e:
                raise V6mostlyError(f"sysctl {k.replace('/', '.')}: {e.strerror}") from None

    def restore(self) -> None:
        for k, v in self.old.items():
            with contextlib.suppress(OSError), open(f"/proc/sys/{k}", "w") as f:
                f.write(v)
                log.info("sysctl %s=%s restored", k.replace("/", "."), v)


class Controller:
    def __init__(self, s: EcmpSettings) -> None:
        self.s = s
        self.n = nh.Netlink()
        self.members: set[Gateway] | None = None  # after the last pass; None before the first
        self.learned: set[Gateway] = set()
        #: gateways whose nexthop the kernel refused (e.g. no carrier): why, when
        self.refused: dict[Gateway, tuple[str, float]] = {}
        self.quiet: set[Gateway] = set()  # refused before: a new refusal is not logged
        self.changes: dict[tuple[str, str], int] = {}
        self.last_change = 0.0
        self.passes = 0
        self.errors = 0
        self.started = time.monotonic()
        self.last_error, self.erred = "", False

    def reconcile(self) -> None:
        self.erred = False
        o = read_state(self.n, self.s)
        kernel = o.current.gateways()
        now = time.monotonic()
        for g in list(self.refused):
            if g not in o.usable or now - self.refused[g][1] >= RETRY_REFUSED:
                del self.refused[g]  # tried again (not logged again while it fails)
                self.quiet.add(g)
        desired = {g for g in o.usable if g not in self.refused}
        cur = o.current
        attempted = False
        for _ in range(3):
            actions = plan(desired, cur, self.s)
            attempted = attempted or bool(actions)
            bad = self._apply(actions)
            if not bad:
                break
            desired -= bad
            cur = read_state(self.n, self.s).current
        self.quiet &= self.refused.keys()
        if not self.erred:
            self.last_error = ""
        after = read_state(self.n, self.s).current.gateways() if attempted else kernel
        for c in explain(self.members, kernel, after, o.learned, self.learned):
            self._log_change(c, after)
        if self.members and not after:
            msg = "no member left: route %s table %d removed with group %d"
            log.warning(msg, self.s.prefix, self.s.table, self.s.group_id)
        elif self.members is not None and not self.members and after:
            log.info("route %s nhid %d table %d back", self.s.prefix, self.s.group_id, self.s.table)
        self.members = after
        self.learned = o.learned
        self.passes += 1

    def guarded(self) -> None:
        """A pass whose failure is a log line (counted), never the daemon's end."""
        try:
            self.reconcile()
        except (OSError, V6mostlyError) as e:
            self.errors += 1
            self._error(f"reconcile: {e}")

    def _error(self, text: str) -> None:
        """Log an error once while it repeats (a pass every 0.5 s)."""
        if text != self.last_error:
            log.error("%s (retrying every pass)", text)
        self.last_error, self.erred = text, True

    def handlers(self) -> dict[str, Any]:
        """``v6mostly ctl status`` / ``stats``."""
        s = self.s

        def status(req: dict[str, Any]) -> dict[str, Any]:
            return {
                "config": s.source,
                "uptime_s": round(time.monotonic() - self.started),
                "pref64": f"{s.prefix} (table {s.learn_table} -> nhid {s.group_id} table {s.table})",
                "group": f"resilient, {s.buckets} buckets, idle_timer {s.idle_timer} s",
                "members": ", ".join(gw_text(g) for g in sorted(self.members or ())) or "none",
                "left_out": {gw_text(g): why for g, (why, _) in self.refused.items()},
            }

        def stats(req: dict[str, Any]) -> dict[str, Any]:
            c = {f"{k}_{r}": v for (k, r), v in sorted(self.changes.items())}
            return {"counters": {"passes": self.passes, "errors": self.errors, **c}}

        return {"status": status, "stats": stats}

    def _apply(self, actions: list[Action]) -> set[Gateway]:
        """Carry the actions out; the gateways whose nexthop the kernel refused."""
        bad: set[Gateway] = set()
        for a in actions:
            log.debug("%s", describe(a, self.s, ifname))
            try:
                self._do(a)
            except nh.NexthopError as e:
                self.errors += 1
                if isinstance(a, SetNexthop):
                    if a.gateway not in self.quiet:
                        log.warning("gateway %s left out: %s", gw_text(a.gateway), e)
                    self.refused[a.gateway] = (str(e), time.monotonic())
                    bad.add(a.gateway)
                else:
                    self._error(str(e))
                return bad
        return bad

    def _do(self, a: Action) -> None:
        s = self.s
        if isinstance(a, SetNexthop):
            self.n.replace_gateway(a.id, a.gateway.address, a.gateway.oif)
        elif isinstance(a, SetGroup):
            args = (s.buckets, s.idle_timer, s.unbalanced_timer)
            self.n.replace_resilient_group(s.group_id, a.members, *args)
        elif isinstance(a, DeleteNexthop):
            self.n.delete(a.id)
        elif isinstance(a, SetRoute):
            self.n.replace_route(s.prefix, s.table, s.group_id)
        else:
            self.n.delete_route(s.prefix, s.table)

    def _log_change(self, c: Change, after: set[Gateway]) -> None:
        self.changes[c.kind, c.reason] = self.changes.get((c.kind, c.reason), 0) + 1
        self.last_change = time.time()
        now = ", ".join(gw_text(g) for g in sorted(after)) or "none"
        msg = "%s gateway %s; members now: %s (%s)"
        log.info(msg, c.kind, gw_text(c.gateway), now, REASONS[c.reason])

    def cleanup(self) -> None:
        for a in plan((), read_state(self.n, self.s).current, self.s):
            log.info("cleanup: %s", describe(a, self.s, ifname))
            try:
                self._do(a)
            except nh.NexthopError as e:
                log.warning("cleanup: %s", e)

    def close(self) -> None:
        self.n.close()


class EcmpCollector:
    """Members, buckets per member (a bucket dump at scrape time), changes."""

    def __init__(self, c: Controller) -> None:
        self.c = c

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.c
        n_members = len(c.members or ())
        yield GaugeMetricFamily("v6mostly_ecmp_members", "PLATs in the group", value=n_members)
        b = GaugeMetricFamily(
            "v6mostly_ecmp_member_buckets",
            "Buckets of the resilient group per member",
            labels=["gateway", "dev", "id"],
        )
        try:
            with nh.Netlink() as n:
                ids = {o.id: o for o in n.dump() if o.id in c.s.member_ids and o.gateway}
                count: dict[int, int] = {}
                for bk in n.buckets(c.s.group_id):
                    count[bk.nh_id] = count.get(bk.nh_id, 0) + 1
            for i, o in sorted(ids.items()):
                b.add_metric([str(o.gateway), ifname(o.oif), str(i)], count.get(i, 0))
        except (OSError, V6mostlyError) as e:
            log.debug("bucket dump: %s", e)
        yield b
        ch = CounterMetricFamily(
            "v6mostly_ecmp_changes", "Member changes", labels=["kind", "reason"]
        )
        for (kind, reason), v in sorted(c.changes.items()):
            ch.add_metric([kind, reason], v)
        yield ch
        yield GaugeMetricFamily(
            "v6mostly_ecmp_last_change_timestamp_seconds",
            "When the membership last changed (0: not since start)",
            value=c.last_change,
        )
        yield CounterMetricFamily("v6mostly_ecmp_errors", "Kernel requests refused", value=c.errors)


# -- the daemon -------------------------------------------------------------------------------


def dry_run_text(s: EcmpSettings) -> str:
    lines = [
        f"# v6mostly ecmp --dry-run ({s.source})",
        f"follow {s.prefix} in table {s.learn_table} (bird2's BGP routes)",
        f"group {s.group_id} type resilient buckets {s.buckets} idle_timer {s.idle_timer} "
        f"unbalanced_timer {s.unbalanced_timer}; members ids {s.member_ids.start}.."
        f"{s.member_ids.stop - 1}",
        f"route {s.prefix} nhid {s.group_id} table {s.table}",
    ]
    lines += [f"sysctl {k.replace('/', '.')}={v}" for k, v in s.sysctls().items()] or [
        "# hash = kernel: multipath hash sysctls left alone"
    ]
    if s.metrics_listen:
        lines.append(f"metrics: http://{s.metrics_listen}/metrics")
    try:
        with nh.Netlink() as n:
            o = read_state(n, s)
    except (OSError, V6mostlyError) as e:
        lines.append(f"# kernel state not readable here ({e}): no plan")
        return "\n".join(lines)
    lines.append("learned now: " + (", ".join(gw_text(g) for g in sorted(o.learned)) or "no route"))
    actions = plan(o.usable, o.current, s)
    lines += [describe(a, s, ifname) for a in actions] or ["# in step: nothing to do"]
    return "\n".join(lines)


def relevant(prefixlen: int) -> Any:
    def check(mtype: int, raw: bytes) -> bool:
        if mtype in (nh.RTM_NEWNEXTHOP, nh.RTM_DELNEXTHOP, nh.RTM_NEWLINK, nh.RTM_DELLINK):
            return True
        if mtype in (nh.RTM_NEWROUTE, nh.RTM_DELROUTE) and len(raw) >= 18:
            return raw[16] == socket.AF_INET6 and raw[17] == prefixlen
        return False

    return check


def serve_forever(s: EcmpSettings, cleanup: bool = False, control_path: str = "") -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    sysctls = Sysctls(s.sysctls())
    sysctls.apply()
    c = Controller(s)
    events = nh.EventSocket()
    fd = events.fileno()
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    http = None
    control = None
    check = relevant(s.prefix.prefixlen)
    what = (s.prefix, s.learn_table, s.group_id, s.buckets, s.table)
    try:
        log.info("following %s in table %d: group %d (resilient, %d buckets) in table %d", *what)
        c.reconcile()
        if s.metrics_listen:
            from ..metrics import serve_endpoint, standard_registry

            reg = standard_registry()
            reg.register(EcmpCollector(c))
            http = serve_endpoint(reg, s.metrics_listen)
        if control_path:
            try:
                control = ControlServer(control_path, c.handlers())
            except ControlError as e:
                log.warning("%s: v6mostly ctl cannot reach this instance", e)
        while True:
            info = signal.sigtimedwait(_SIGNALS, RECONCILE_EVERY)
            if info is None or info.si_signo not in _SIGNALS:
                events.drain()
                c.guarded()
            elif info.si_signo == signal.SIGIO:
                if events.drain(check):
                    c.guarded()
            elif info.si_signo == signal.SIGHUP:
                log.info("SIGHUP: configuration changes need a restart; reconciling")
                c.guarded()
            else:
                log.info("%s: stopping", signal.Signals(info.si_signo).name)
                break
    finally:
        events.close()
        if control is not None:
            control.close()
        if http is not None:
            getattr(http, "shutdown", lambda: None)()
        if cleanup:
            c.cleanup()
            sysctls.restore()
            log.info("cleaned up: route, group and members removed")
        else:
            msg = "leaving route %s nhid %d (table %d), its group and the hash sysctls in place"
            log.info(msg + ": a restart must not move flows (--cleanup removes them)", *what[::2])
        c.close()
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "ecmp", help="keep a resilient nexthop group for the Pref64 over the PLATs bird2 learned"
    )
    p.add_argument("--config", required=True, help="ecmp TOML file")
    p.add_argument("--dry-run", action="store_true", help="validate, print what would be done")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="at exit remove the route, group and members (default: leave them in place)",
    )
    p.add_argument(
        "--control-socket",
        default=default_path("ecmp"),
        metavar="PATH",
        help=f"for v6mostly ctl status/stats (default {default_path('ecmp')}; '' = none)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    try:
        s = load_ecmp(args.config)
        if args.dry_run:
            print(dry_run_text(s))
            return 0
        if not logging.getLogger().handlers:  # cli.py sets up the log format first
            logging.basicConfig(format="%(name)s %(levelname)s: %(message)s", stream=sys.stderr)
        logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
        return serve_forever(s, args.cleanup, getattr(args, "control_socket", ""))
    except V6mostlyError as e:
        print(f"v6mostly: error: {e}", file=sys.stderr)
        return 2
