"""``v6mostly siit`` and ``v6mostly plat``: the SIIT core on a TUN device.

Start-up order: check for conflicts, open the TUN queues, set the link up,
apply routes/rules/sysctls, apply the nftables table (PLAT), fork workers,
serve metrics. Exit (SIGTERM/SIGINT) undoes it in reverse. SIGHUP re-reads the
configuration file and applies what can change without dropping flows: EAM
entries and other translator settings (workers replaced one at a time), the
nftables table (replaced atomically; NAPT bindings live in conntrack and
survive), routes for added EAM entries. Changing the TUN or the metrics
address needs a restart and is logged as such.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from .. import config as config_mod
from ..config import Settings
from ..errors import ConfigError, V6mostlyError
from ..linux import netlink, nft, tun
from ..siit.translator import Translator
from ..siit.verdict import Stats
from .dataplane import Dataplane, SharedCounters

log = logging.getLogger("v6mostly.service")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


def dry_run_text(s: Settings, plat: bool) -> str:
    t = s.tun
    lines = [
        f"# v6mostly {'plat' if plat else 'siit'} --dry-run ({s.source})",
        f"tun {t.name}: mtu {t.mtu}, txqueuelen {t.txqueuelen}, {t.queue_count()} queue(s), "
        f"offload {'on (falls back to plain if refused)' if t.offload else 'off'}, "
        f"RPS {'on' if t.rps else 'off'}",
        f"translator: pool6 {s.translator.pool6 or '-'}, "
        + (
            "eam " + ", ".join(f"{a}={b}" for a, b in s.translator.eam)
            if s.translator.eam
            else "no eam"
        ),
    ]
    pl = netlink.plan(s)
    lines += pl.describe(t.name) or [
        "# no routes (routes = false): the TUN drops into your routing"
    ]
    if plat:
        lines += ["", "# nft -f -", nft.render_plat_table(s)]
    if s.metrics_listen:
        lines.append(f"metrics: http://{s.metrics_listen}/metrics")
    return "\n".join(lines)


def _translator_factory(s: Settings) -> Callable[[Stats], Translator]:
    cfg = s.translator

    def make(stats: Stats) -> Translator:
        return Translator(cfg, stats)

    return make


class TranslatorService:
    def __init__(self, s: Settings, plat: bool, replace: bool = False) -> None:
        self.s = s
        self.plat = plat
        self.replace = replace
        self.tun: tun.Tun | None = None
        self.applied: netlink.Applied | None = None
        self.nft_applied = False
        self.dp: Dataplane | None = None
        self.http: object | None = None

    # -- start ---------------------------------------------------------------------

    def check_conflicts(self) -> None:
        s = self.s
        problems = []
        if tun.link_exists(s.tun.name):
            problems.append(f"link {s.tun.name} already exists")
        if self.plat and nft.exists(s.tun.name):
            problems.append(f"nftables table inet {nft.table_name(s.tun.name)} already exists")
        problems += netlink.conflicts(netlink.plan(s))
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
        tun.configure_link(t.name, s.tun.mtu, s.tun.txqueuelen)
        if s.tun.rps:
            err = tun.set_rps(t.name)
            if err:
                log.warning("%s (continuing without RPS)", err)
        log.info(
            "tun %s up: %d queue(s), mode %s%s, mtu %d",
            t.name,
            q,
            t.mode,
            f" ({', '.join(t.offload_names())})" if t.offloads else "",
            s.tun.mtu,
        )
        self.applied = netlink.Applied(t.name)
        self.applied.apply(netlink.plan(s), replace=self.replace)
        if self.plat:
            nft.apply(nft.render_plat_table(s))
            self.nft_applied = True
            log.info("nftables table inet %s applied", nft.table_name(t.name))
        counters = SharedCounters(q)
        self.dp = Dataplane(t, _translator_factory(s), counters)
        self.dp.start()
        log.info("%d worker(s) running", q)
        if s.metrics_listen:
            self._start_metrics()

    def _start_metrics(self) -> None:
        from prometheus_client.registry import CollectorRegistry

        from ..metrics import DataplaneCollector, napt66_sessions, serve

        assert self.dp is not None and self.tun is not None
        reg = CollectorRegistry()
        sessions = None
        counters = None
        if self.plat and self.s.napt66:
            outer6 = [str(o.ipv6) for o in self.s.napt66.outer]
            if self.s.napt66.private_egress:
                outer6.append(str(self.s.napt66.private_egress.outer.ipv6))

            def sessions() -> int | None:
                return napt66_sessions(outer6)

            name = self.tun.name

            def counters() -> dict[str, int]:
                return vars(nft.read_counters(name))

        reg.register(DataplaneCollector(self.dp, self.tun.mode, sessions, counters))
        host, port = config_mod.listen_address(self.s.metrics_listen)
        try:
            self.http = serve(reg, host, port)
        except OSError as e:
            raise V6mostlyError(f"metrics listen {self.s.metrics_listen}: {e.strerror}") from None
        log.info("metrics on http://%s/metrics", self.s.metrics_listen)

    # -- run -----------------------------------------------------------------------

    def reload(self) -> None:
        if self.s.source.startswith("<"):
            log.info("SIGHUP: no configuration file to re-read")
            return
        try:
            new = config_mod.load(self.s.source, self.plat)
        except ConfigError as e:
            log.error("SIGHUP: keeping the running configuration: %s", e)
            return
        if new.tun != self.s.tun or new.metrics_listen != self.s.metrics_listen:
            log.warning("SIGHUP: [tun] and [metrics] changes need a restart; applying the rest")
        assert self.dp is not None and self.tun is not None and self.applied is not None
        old_plan = netlink.plan(self.s)
        new_plan = netlink.plan(new)
        added = [r for r in new_plan.routes if r not in old_plan.routes]
        if added:
            self.applied.apply(netlink.Plan(routes=added), replace=True)
        new.tun = self.s.tun
        new.metrics_listen = self.s.metrics_listen
        if self.plat:
            text = nft.render_plat_table(new)
            name = nft.table_name(self.tun.name)
            # One transaction: the table is swapped atomically.
            nft.apply(f"table inet {name} {{}}\ndelete table inet {name}\n{text}")
        self.s = new
        self.dp.replace_all(_translator_factory(new))
        log.info("SIGHUP: configuration reloaded (%d EAM entries)", len(new.translator.eam))

    def run(self) -> None:
        assert self.dp is not None
        while True:
            info = signal.sigtimedwait(_SIGNALS, 1.0)
            if info is None:
                continue
            if info.si_signo == signal.SIGCHLD:
                self.dp.reap()
            elif info.si_signo == signal.SIGHUP:
                self.reload()
            else:
                log.info("%s: stopping", signal.Signals(info.si_signo).name)
                return

    # -- stop ----------------------------------------------------------------------

    def stop(self) -> None:
        if self.dp is not None:
            self.dp.stop()
            log.info("workers stopped")
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


def serve_forever(s: Settings, plat: bool, replace: bool) -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    svc = TranslatorService(s, plat, replace)
    try:
        svc.start()
        svc.run()
    finally:
        svc.stop()
    return 0
