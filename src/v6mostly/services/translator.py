"""``v6mostly siit`` and ``v6mostly plat``: the SIIT core on a TUN device.

Start-up order: check for conflicts, open the TUN queues, set the link up,
apply routes/rules/sysctls, apply the nftables table (PLAT), fork workers,
serve metrics. Exit (SIGTERM/SIGINT) undoes it in reverse. SIGHUP re-reads the
configuration file and applies what can change without dropping flows: EAM
entries and other translator settings (workers replaced one at a time), the
nftables table (rules and set elements replaced in one transaction, the table,
its hooks and counters kept; NAPT bindings live in conntrack and survive),
routes for added EAM entries. Changing the TUN or the metrics
address needs a restart and is logged as such.

The TUN's MTU is the translator's next-hop MTU on both sides (RFC 7915 §4.2,
§5.2: the MTU in translated Packet Too Big / Fragmentation Needed messages is
clamped to it). The supervisor watches RTM_NEWLINK for the TUN (a netlink
socket that raises SIGIO) and hands a changed MTU to the running workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import time

from .. import config as config_mod
from ..config import Settings
from ..control import ControlError, ControlServer
from ..errors import ConfigError, V6mostlyError
from ..linux import conntrack, fastpath, gro, netlink, nft, tun
from ..linux.bpf import BpfError
from ..siit.translator import Translator, TranslatorConfig
from ..siit.verdict import Stats
from . import plat_rules
from .control_handlers import ReloadState, translator_handlers
from .dataplane import Dataplane, SharedCounters, TranslatorFactory, apply_link_mtu
from .ha_runtime import HaRuntime
from .ha_runtime import dry_run_text as ha_dry_run_text
from .rps import RpsAuto
from .worker_loops import Poll

log = logging.getLogger("v6mostly.service")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGIO}
#: Blocked in the supervisor, handled by the workers (which unblock it).
_WORKER_SIGNALS = {signal.SIGUSR1}


def dry_run_text(s: Settings, plat: bool) -> str:
    t = s.tun
    lines = [
        f"# v6mostly {'plat' if plat else 'siit'} --dry-run ({s.source})",
        f"tun {t.name}: mtu {t.mtu}, txqueuelen {t.txqueuelen}, {t.queue_count()} queue(s), "
        f"offload {'on (falls back to plain if refused)' if t.offload else 'off'}, "
        f"RPS {t.rps}",
        f"translator: pool6 {s.translator.pool6 or '-'}, "
        + (
            "eam " + ", ".join(f"{a}={b}" for a, b in s.translator.eam)
            if s.translator.eam
            else "no eam"
        ),
        "ttl: "
        + (
            "decrement (TAYGA/Jool: the translator is a hop of its own)"
            if s.translator.decrement_ttl
            else "copy (the kernel decrements into and out of the TUN)"
        ),
        _ratelimit_text(s.translator, t.queue_count()),
        f"next-hop mtu: the TUN's ({t.mtu}, followed at run time)",
        "fast path: "
        + (
            "on (IPv4 TCP/UDP into the TUN translated by a tc program; the rest by the workers)"
            if t.fastpath
            else "off (fastpath = false: the workers translate every packet)"
        ),
        "UDP GRO forwarding: "
        + (
            "turned on where off on this namespace's interfaces (undone at stop)"
            if t.udp_gro_forwarding
            else "left as it is (udp_gro_forwarding = false)"
        ),
    ]
    pl = plat_rules.plan(s)
    lines += pl.describe(t.name) or [
        "# no routes (routes = false): the TUN drops into your routing"
    ]
    if plat and s.napt66 is not None:
        reach = s.napt66.reachable_host_addresses
        lines.append(
            "host addresses reachable through the Pref64: "
            + (
                ", ".join(str(a.network_address) if a.prefixlen == 32 else str(a) for a in reach)
                if reach
                else "none (dropped, counted as denied_to_host)"
            )
        )
    if plat:
        lines += ["", "# nft -f -", plat_rules.render_plat_table(s)]
    if plat and s.ha is not None:
        lines.append(ha_dry_run_text(s.ha, t.name))
    if s.metrics_listen:
        lines.append(f"metrics: http://{s.metrics_listen}/metrics")
    return "\n".join(lines)


def share(total: int | float, workers: int) -> int:
    """One worker's part of a global ICMP-error allowance: ``total / workers``
    rounded up, at least 1 (0 stays 0: the bucket is off)."""
    if total <= 0:
        return 0
    return max(1, -(-int(total) // workers))


def _ratelimit_text(cfg: TranslatorConfig, workers: int) -> str:
    per_src = (
        f"{cfg.icmp_ratelimit_burst} then 1 per {cfg.icmp_ratelimit_ms} ms per source"
        if cfg.icmp_ratelimit_ms
        else "no per-source limit"
    )
    total = (
        f"{cfg.icmp_msgs_per_sec}/s burst {cfg.icmp_msgs_burst} in all "
        f"({share(cfg.icmp_msgs_per_sec, workers)}/s burst "
        f"{share(cfg.icmp_msgs_burst, workers)} per worker)"
        if cfg.icmp_msgs_per_sec
        else "no global limit"
    )
    return f"icmp errors: {per_src}; {total}"


def worker_config(
    cfg: TranslatorConfig, index: int, count: int, generation: int
) -> TranslatorConfig:
    """The settings of worker ``index`` of ``count`` (its ``generation``-th spawn).

    * RFC 6864 §4.1: the IPv4 Identification space is cut into ``2 * count``
      slices; the worker uses slice ``index`` or ``index + count`` (alternating
      with each spawn, so a replacement never shares IDs with the worker it
      replaces while both read the queue), from a random start.
    * The global ICMP-error bucket is shared out: each worker gets
      ``icmp_msgs_per_sec / count`` and ``icmp_msgs_burst / count``, rounded
      up, so all workers together stay within the configured cap. The
      per-source bucket is each worker's own (a flow stays on one queue).
    """
    return dataclasses.replace(
        cfg,
        ip_id_slice=(index + count * (generation % 2), 2 * count),
        ip_id_seed=int.from_bytes(os.urandom(2), "big"),
        icmp_msgs_per_sec=share(cfg.icmp_msgs_per_sec, count),
        icmp_msgs_burst=share(cfg.icmp_msgs_burst, count) or cfg.icmp_msgs_burst,
    )


def _translator_factory(s: Settings) -> TranslatorFactory:
    cfg = s.translator

    def make(stats: Stats, index: int, count: int, generation: int) -> Translator:
        # time.monotonic: the ICMP-error rate limit sees real time (the core has no clock).
        return Translator(worker_config(cfg, index, count, generation), stats, time.monotonic)

    return make


class TranslatorService:
    def __init__(
        self, s: Settings, plat: bool, replace: bool = False, control_path: str | None = None
    ) -> None:
        self.s = s
        self.plat = plat
        self.replace = replace
        self.tun: tun.Tun | None = None
        self.applied: netlink.Applied | None = None
        self.nft_applied = False
        self.dp: Dataplane | None = None
        self.http: object | None = None
        self.watch: netlink.LinkWatch | None = None
        #: NAPT66 port / table exhaustion, logged at most once a minute.
        self.exhaustion = conntrack.ExhaustionWatch()
        self.started = time.monotonic()
        self.reloads = ReloadState()
        self.control_path = control_path
        self.control: ControlServer | None = None
        #: [ha]: bird's file and conntrackd's process (services/ha_runtime.py)
        self.ha: HaRuntime | None = None
        self.rps_auto: RpsAuto | None = None
        #: the in-kernel fast path on the TUN's egress (linux/fastpath.py)
        self.fast: fastpath.FastPath | None = None
        self.fast_qdisc = False
        #: the counter map every fast path since start counts in (its own descriptor)
        self.fast_counts: int | None = None
        #: the interfaces whose rx-udp-gro-forwarding we turned on (linux/gro.py)
        self.gro_changed: list[str] = []

    # -- start ---------------------------------------------------------------------

    def check_conflicts(self) -> None:
        s = self.s
        problems = []
        if tun.link_exists(s.tun.name):
            problems.append(f"link {s.tun.name} already exists")
        if self.plat and nft.exists(s.tun.name):
            problems.append(f"nftables table inet {nft.table_name(s.tun.name)} already exists")
        problems += netlink.conflicts(plat_rules.plan(s))
        if problems and not self.replace:
            raise V6mostlyError(
                "; ".join(problems) + " (another instance running? stop it or use --replace)"
            )
        if problems:
            log.warning("replacing: %s", "; ".join(problems))
            if tun.link_exists(s.tun.name):
                tun.delete_link(s.tun.name)
            if self.plat:
                nft.delete(s.tun.name)

    def start(self) -> None:
        s = self.s
        self.check_conflicts()
        q = s.tun.queue_count()
        self.tun = t = tun.open_tun(s.tun.name, q, s.tun.offload)
        for note in t.notes:
            log.warning("tun %s: %s", t.name, note)
        err = t.steer()
        if err:
            log.warning("tun %s: %s (the kernel's own queue choice)", t.name, err)
        tun.configure_link(t.name, s.tun.mtu, s.tun.txqueuelen)
        if s.tun.rps == "on":
            err = tun.set_rps(t.name)
            if err:
                log.warning("%s (continuing without RPS)", err)
        self.rps_auto = RpsAuto() if s.tun.rps == "auto" and t.vnet else None
        log.info(
            "tun %s up: %d queue(s), mode %s%s, mtu %d",
            t.name,
            q,
            t.mode,
            f" ({', '.join(t.offload_names())})" if t.offloads else "",
            s.tun.mtu,
        )
        if s.tun.udp_gro_forwarding:
            self.gro_changed, notes = gro.enable(gro.candidates(t.name))
            for note in notes:
                log.warning("%s (UDP GRO forwarding stays off there)", note)
            if self.gro_changed:
                log.info("UDP GRO forwarding on: %s", ", ".join(self.gro_changed))
        self.applied = netlink.Applied(t.name)
        self.applied.apply(plat_rules.plan(s), replace=self.replace)
        if self.plat:
            nft.apply(plat_rules.render_plat_table(s))
            self.nft_applied = True
            log.info("nftables table inet %s applied", nft.table_name(t.name))
            try:  # session ages for ``ctl sessions`` (conntrack is loaded by now)
                self.applied.apply(netlink.Plan(sysctls=dict(plat_rules.CONNTRACK_SYSCTLS)))
            except netlink.NetlinkError as e:
                log.warning("%s (ctl sessions shows no ages)", e)
            if s.ha is not None:
                self.ha = HaRuntime(s.ha, t.name)
                self.ha.start()
        counters = SharedCounters(q)
        mtu = netlink.link_mtu(t.name)
        counters.link_mtu = mtu
        self.watch = netlink.LinkWatch(t.name, mtu)
        self.dp = Dataplane(
            t, _translator_factory(s), counters, poll=Poll(s.tun.poll_us, s.tun.poll_cpu)
        )
        self.apply_fastpath()  # before the workers: ready means ready with it
        self.dp.start()
        log.info("%d worker(s) running", q)
        if s.metrics_listen:
            self._start_metrics()
        if self.control_path:
            try:
                self.control = ControlServer(self.control_path, translator_handlers(self))
            except ControlError as e:
                log.warning("%s: v6mostly ctl cannot reach this instance", e)

    def apply_fastpath(self) -> None:
        """(Re)build the fast path for the running configuration and TUN MTU, and put it
        on the TUN in place of the old one. On failure the workers do all the work."""
        if not self.s.tun.fastpath or self.tun is None or self.dp is None:
            return
        xl = _translator_factory(self.s)(Stats(), 0, 1, 0)
        apply_link_mtu(xl, self.dp.counters.link_mtu, self.dp.counters.ipv6_extra)
        old, self.fast = self.fast, None
        try:
            idx = socket.if_nametoindex(self.tun.name)
            fast = fastpath.build(xl, idx, counters=self.fast_counts)
        except OSError as e:  # the TUN is gone
            fast = f"{self.tun.name}: {e.strerror}"
        if isinstance(fast, str):
            log.warning("fast path off (%s): the workers translate every packet", fast)
            fastpath.uninstall(self.tun.name, False)
        else:
            try:
                self.fast_qdisc |= fastpath.install(self.tun.name, fast)
                self.fast = fast
                if self.fast_counts is None:
                    self.fast_counts = os.dup(fast.maps.counters)
                log.info(
                    "fast path on: IPv4 TCP/UDP into %s translated in the kernel "
                    "(%d destination(s), next-hop mtu %d); IPv6 TCP/UDP %s",
                    self.tun.name,
                    fast.destinations,
                    xl.ipv6_mtu,
                    "too" if fast.prog6 is not None else f"by the workers ({fast.why6})",
                )
            except BpfError as e:
                fast.close()
                log.warning("fast path off (%s): the workers translate every packet", e)
        if old is not None:
            old.close()

    def fast_counters(self, direction: int | None = None) -> tuple[int, int, int]:
        """Packets, octets and super-packets the fast path translated since start, in
        one direction (an index of ``fastpath.DIRECTIONS``) or both."""
        if self.fast_counts is None:
            return (0, 0, 0)
        try:
            return fastpath.read_counters(self.fast_counts, direction)
        except BpfError:
            return (0, 0, 0)

    def _start_metrics(self) -> None:
        from ..metrics import DataplaneCollector, serve_endpoint, standard_registry

        assert self.dp is not None and self.tun is not None
        reg = standard_registry()
        napt66 = False
        counters = None
        if self.plat and self.s.napt66:
            napt66 = True
            name = self.tun.name

            def counters() -> dict[str, int]:
                return vars(nft.read_counters(name))

        fast = self.fast_counters if self.s.tun.fastpath else None
        reg.register(DataplaneCollector(self.dp, self.tun.mode, napt66, counters, fast))
        self.http = serve_endpoint(reg, self.s.metrics_listen)

    # -- run -----------------------------------------------------------------------

    def reload(self) -> None:
        ok, message = self._reload()
        self.reloads.done(ok, message)

    def _reload(self) -> tuple[bool, str]:
        """Re-read the file and apply it; (applied, what happened) for ``ctl reload``."""
        if self.s.source.startswith("<"):
            log.info("SIGHUP: no configuration file to re-read")
            return False, "no configuration file to re-read (started from flags)"
        try:
            new = config_mod.load(self.s.source, self.plat)
        except ConfigError as e:
            log.error("SIGHUP: keeping the running configuration: %s", e)
            return False, f"keeping the running configuration: {e}"
        note = ""
        if new.tun != self.s.tun or new.metrics_listen != self.s.metrics_listen:
            note = "; [tun] and [metrics] changes need a restart (not applied)"
            log.warning("SIGHUP: [tun] and [metrics] changes need a restart; applying the rest")
        assert self.dp is not None and self.tun is not None and self.applied is not None
        old_plan = plat_rules.plan(self.s)
        new_plan = plat_rules.plan(new)
        # The routes and rules into the TUN follow the file: [translator] EAM and
        # pool6, [napt66] private egress, [routing] table.
        gone = netlink.Plan(
            routes=[r for r in old_plan.routes if r not in new_plan.routes],
            rules=[x for x in old_plan.rules if x not in new_plan.rules],
        )
        added = netlink.Plan(
            routes=[r for r in new_plan.routes if r not in old_plan.routes],
            rules=[x for x in new_plan.rules if x not in old_plan.rules],
        )
        if gone.routes or gone.rules:
            self.applied.withdraw(gone)
        if added.routes or added.rules:
            self.applied.apply(added, replace=True)
        new.tun = self.s.tun
        new.metrics_listen = self.s.metrics_listen
        if (new.ha is None) != (self.ha is None):
            note += "; adding or removing [ha] needs a restart (not applied)"
            log.warning("SIGHUP: adding or removing [ha] needs a restart")
            new.ha = self.s.ha
        if self.plat:
            # One transaction; the table, its hooks, sets and counters stay.
            nft.apply(plat_rules.render_reload(self.s, new))
        if self.ha is not None and new.ha is not None and new.ha != self.s.ha:
            try:
                ha_note = self.ha.reload(new.ha)
            except V6mostlyError as e:
                log.error("SIGHUP: [ha]: %s", e)
                ha_note = f"[ha] not applied: {e}"
            if ha_note:
                note += f"; {ha_note}"
        self.s = new
        self.dp.replace_all(_translator_factory(new))
        self.apply_fastpath()
        log.info("SIGHUP: configuration reloaded (%d EAM entries)", len(new.translator.eam))
        return True, f"{new.source} applied ({len(new.translator.eam)} EAM entries){note}"

    def follow_mtu(self) -> None:
        """Hand a changed TUN MTU to the workers (RFC 7915 §4.2/§5.2 clamps)."""
        assert self.dp is not None and self.watch is not None
        mtu = self.watch.poll()
        if mtu is None:
            return
        note = " (below 1280: IPv6 side kept at 1280)" if mtu < 1280 else ""
        log.info("tun %s: mtu now %d; next-hop MTU of the translator%s", self.watch.dev, mtu, note)
        self.dp.set_link_mtu(mtu)
        self.apply_fastpath()

    def follow_rps(self, auto: RpsAuto) -> None:
        """``rps = "auto"``: RPS on while bulk traffic flows (services/rps.py)."""
        assert self.dp is not None and self.tun is not None
        # super-packets read by the workers and translated by the fast path alike
        bulk = self.dp.counters.total()[1]["gso_superpackets"] + self.fast_counters()[2]
        change = auto.update(bulk, time.monotonic())
        if change is None:
            return
        err = tun.set_rps(self.tun.name, off=not change)
        if err:
            log.warning('%s; rps = "auto" gives up', err)
            self.rps_auto = None
        else:
            log.info(
                "tun %s: RPS %s (bulk traffic %s)",
                self.tun.name,
                "on" if change else "off",
                "flows" if change else "stopped",
            )

    def run(self) -> None:
        assert self.dp is not None
        while True:
            info = signal.sigtimedwait(_SIGNALS, 1.0)
            # After SIGSTOP/SIGCONT CPython 3.11 may return an uninitialised siginfo
            # when the wait was interrupted: a number outside the set is no signal.
            if info is None or info.si_signo not in _SIGNALS:
                if self.watch is not None:
                    self.follow_mtu()  # a missed SIGIO costs at most a second
                if self.ha is not None:
                    self.ha.tick()
                if self.rps_auto is not None:
                    self.follow_rps(self.rps_auto)
                if self.plat:
                    self.exhaustion.update(
                        conntrack.stats(), time.monotonic(), conntrack.entries(), conntrack.limit()
                    )
                continue
            if info.si_signo == signal.SIGCHLD:
                if self.ha is not None:
                    self.ha.reap()  # its own child first: dp.reap collects any pid
                self.dp.reap()
            elif info.si_signo == signal.SIGIO:
                self.follow_mtu()
            elif info.si_signo == signal.SIGHUP:
                self.reload()
            else:
                log.info("%s: stopping", signal.Signals(info.si_signo).name)
                return

    # -- stop ----------------------------------------------------------------------

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.ha is not None:
            self.ha.stop()
        if self.fast is not None and self.tun is not None:
            fastpath.uninstall(self.tun.name, self.fast_qdisc)
            self.fast.close()
            self.fast = None
        if self.fast_counts is not None:
            os.close(self.fast_counts)
            self.fast_counts = None
        gro.disable(self.gro_changed)
        self.gro_changed = []
        if self.dp is not None:
            self.dp.stop()
            log.info("workers stopped")
        if self.watch is not None:
            self.watch.close()
        if self.http is not None:
            shutdown = getattr(self.http, "shutdown", None)
            if shutdown is not None:
                shutdown()
        if self.nft_applied and self.tun is not None:
            nft.delete(self.tun.name)
        if self.applied is not None:
            self.applied.undo()
        if self.tun is not None:
            created = self.tun.created
            self.tun.close()
            if created:
                tun.delete_link(self.tun.name)
        log.info("cleaned up")


def serve_forever(s: Settings, plat: bool, replace: bool, control_path: str | None = None) -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS | _WORKER_SIGNALS)
    svc = TranslatorService(s, plat, replace, control_path)
    try:
        svc.start()
        svc.run()
    finally:
        svc.stop()
    return 0
