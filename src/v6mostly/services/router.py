"""``v6mostly router``: DHCPv4 (option 108), Router Advertisements (PREF64) and DNS
(``ipv4only.arpa``) in one asyncio process, from one site configuration.

Each protocol core is sans-I/O (``dhcp4.server``, ``ra.advertiser``,
``dns.responder``); this module owns the sockets, the clock and the signals.
SIGTERM/SIGINT: a final RA with router lifetime 0 on every interface, close
the lease database, exit. SIGHUP: re-read the file; RA contents change at once
(a PREF64 that went away is withdrawn with lifetime 0), DHCP subnets and
classes are replaced (leases are kept).

The design: docs/architecture.md §3.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from ..control import ControlError, ControlServer
from ..dhcp4.leases import LeaseTable, MemoryStore
from ..dhcp4.policy import V6OnlyPolicy
from ..dhcp4.server import Dhcp4Server
from ..dns.responder import Responder
from ..errors import V6mostlyError
from ..site_config import SiteConfig, load_site
from ..storage.sqlite_leases import SqliteStore
from .control_handlers import ReloadState, router_handlers
from .router_dhcp import Dhcp4Service, interface_ipv4, make_limits, make_subnet
from .router_dns import DnsService
from .router_metrics import RouterCollector
from .router_ra import RaService
from .router_split import TrafficSplit

log = logging.getLogger("v6mostly.router")


# -- the router --------------------------------------------------------------------


SERVICES = ("dhcp4", "ra", "dns")


class Router:
    def __init__(self, cfg: SiteConfig, only: tuple[str, ...] = SERVICES) -> None:
        self.cfg = cfg
        self.only = only
        self.table: LeaseTable | None = None
        self.dhcp: Dhcp4Service | None = None
        self.ra: RaService | None = None
        self.dns: DnsService | None = None
        self.http: object | None = None
        self.store: SqliteStore | MemoryStore | None = None
        self.started = time.monotonic()
        self.reloads = ReloadState()
        self.control: ControlServer | None = None
        self.split = TrafficSplit()

    def build_dhcp(self, cfg: SiteConfig) -> Dhcp4Server | None:
        subs = [ic.dhcp4 for ic in cfg.interfaces if ic.dhcp4] + cfg.relayed
        if not subs:
            return None
        subnets = [make_subnet(d, interface_ipv4) for d in subs]
        if self.table is None:
            # load_site checked that the directory exists (it is never created silently).
            try:
                self.store = SqliteStore(cfg.lease_db, cfg.lease_sync)
            except Exception as e:
                raise V6mostlyError(f"lease database {cfg.lease_db}: {e}") from None
            self.table = LeaseTable(self.store)
        served = {ic.name for ic in cfg.interfaces}
        srv = Dhcp4Server(
            subnets, self.table, V6OnlyPolicy(cfg.classes), make_limits(cfg.dhcp4_limits), served
        )
        if self.dhcp is not None:
            srv.adopt(self.dhcp.server)  # SIGHUP: counters and per-client limits go on
        return srv

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self.build_dhcp(self.cfg) if "dhcp4" in self.only else None
        if server is not None:
            self.dhcp = Dhcp4Service(server)
            try:
                self.dhcp.open(loop)
            except OSError as e:
                raise V6mostlyError(f"dhcp4: cannot listen on port 67: {e.strerror}") from None
            log.info("dhcp4: serving %s", ", ".join(s.name for s in server.subnets))
        if self.cfg.traffic_split and self.only == SERVICES:
            self.split.apply([ic.name for ic in self.cfg.interfaces], self.cfg.pref64)
        self.ra = RaService(self.cfg.interfaces if "ra" in self.only else [], self.cfg.pref64)
        try:
            self.ra.open(loop)
        except OSError as e:
            raise V6mostlyError(f"ra: cannot open the ICMPv6 socket: {e.strerror}") from None
        if self.ra.ifs:
            log.info(
                "ra: advertising on %s (PREF64 %s)",
                ", ".join(r.name for r in self.ra.ifs.values()),
                self.cfg.pref64,
            )
        if self.cfg.dns and "dns" in self.only:
            d = self.cfg.dns
            resp = Responder(
                [self.cfg.pref64],
                d.allow,
                forward=d.upstream is not None,
                dns64=d.dns64,
                rate=d.rate,
                burst=d.burst,
                prefix_rate=d.prefix_rate,
                prefix_burst=d.prefix_burst,
                max_udp_size=d.max_udp_size,
                chaos_version=d.chaos_version,
                chaos_id=d.chaos_id,
            )
            self.dns = DnsService(
                resp,
                d.listen,
                d.port,
                d.upstream,
                d.tcp_max_connections,
                d.tcp_max_per_client,
                d.tcp_idle_timeout,
            )
            try:
                await self.dns.open()
            except OSError as e:
                raise V6mostlyError(
                    f"dns: cannot listen on {', '.join(d.listen)} port {d.port}: {e.strerror}"
                ) from None
            log.info("dns: answering on %s port %d", ", ".join(d.listen), d.port)
        if self.cfg.metrics_listen:
            from ..config_reader import listen_address
            from ..metrics import serve, standard_registry

            reg = standard_registry()
            reg.register(RouterCollector(self))
            host, port = listen_address(self.cfg.metrics_listen)
            try:
                self.http = serve(reg, host, port)
            except OSError as e:
                raise V6mostlyError(
                    f"metrics listen {self.cfg.metrics_listen}: {e.strerror}"
                ) from None

    def reload(self) -> None:
        ok, message = self._reload()
        self.reloads.done(ok, message)

    def _reload(self) -> tuple[bool, str]:
        """Apply the file; (applied, what happened, naming what needs a restart)."""
        try:
            new = load_site(self.cfg.source, check_lease_db="dhcp4" in self.only)
            server = self.build_dhcp(new) if "dhcp4" in self.only else None
        except V6mostlyError as e:
            log.error("SIGHUP: keeping the running configuration: %s", e)
            return False, f"keeping the running configuration: {e}"
        restart = needs_restart(self.cfg, new)
        if self.dhcp is not None and server is not None:
            server.stats = self.dhcp.server.stats
            self.dhcp.server = server
        if self.ra is not None:
            self.ra.update(new.interfaces, new.pref64)
        if self.dns is not None and new.dns is not None:
            self.dns.responder.set_pref64([new.pref64])
        self.cfg = new
        if new.traffic_split and self.only == SERVICES:
            self.split.apply([ic.name for ic in new.interfaces], new.pref64)
        else:
            self.split.remove()
        if restart:
            log.warning("SIGHUP: applied; not applied until a restart: %s", "; ".join(restart))
            return True, "applied; needs a restart: " + "; ".join(restart)
        log.info("SIGHUP: configuration reloaded")
        return True, f"{new.source} applied"

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
        self.split.remove()
        loop = asyncio.get_event_loop()
        if self.ra is not None:
            self.ra.stop(loop)
        if self.dhcp is not None:
            self.dhcp.close(loop)
        if self.dns is not None:
            self.dns.close()
        if self.http is not None:
            shutdown = getattr(self.http, "shutdown", None)
            if shutdown is not None:
                shutdown()
        if self.store is not None:
            self.store.close()
        log.info("stopped")


def needs_restart(old: SiteConfig, new: SiteConfig) -> list[str]:
    """What a SIGHUP cannot apply: sockets opened at start (interfaces, DNS listeners
    and their limits), the metrics endpoint, the lease database."""
    out = []
    before, after = [i.name for i in old.interfaces], [i.name for i in new.interfaces]
    if before != after:
        out.append(f"interfaces {before} -> {after}")
    if old.dns != new.dns:
        out.append("[dns] (ACL, upstream, listeners, limits)")
    if old.metrics_listen != new.metrics_listen:
        out.append("[metrics] listen")
    if (old.lease_db, old.lease_sync) != (new.lease_db, new.lease_sync):
        out.append("[dhcp4] lease_db / sync")
    return out


async def _main(cfg: SiteConfig, only: tuple[str, ...], control_path: str | None = None) -> int:
    router = Router(cfg, only)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, router.reload)
    try:
        await router.start()
        if control_path:
            try:
                router.control = ControlServer(control_path, router_handlers(router))
            except ControlError as e:
                log.warning("%s: v6mostly ctl cannot reach this instance", e)
        log.info("router running")
        await stop.wait()
    finally:
        router.stop()
    return 0


def serve_forever(
    cfg: SiteConfig, only: tuple[str, ...] = SERVICES, control_path: str | None = None
) -> int:
    return asyncio.run(_main(cfg, only, control_path))
