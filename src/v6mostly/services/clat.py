"""``v6mostly clat``: the client side of 464XLAT (RFC 6877) for a Linux host.

Theory of operation
-------------------
The supervisor watches the uplink and decides, every second or on an event, whether it runs:

* a **Pref64**: pinned (``--pref64``), else from RA PREF64 options (RFC 8781)
  as the kernel hands them to userspace (``RTM_NEWNDUSEROPT``), else RFC 7050
  (``ipv4only.arpa``); the choice, its lifetime, withdrawal and the DNS
  re-checks live in the sans-I/O :class:`~v6mostly.clat.Pref64Tracker`;
* **no native IPv4 default route** (the host was told IPv6-only by DHCPv4
  option 108, RFC 8925, or has no IPv4 at all): with native IPv4 the CLAT stays
  idle and says why; if native IPv4 appears later it steps back, if it goes
  it takes over;
* a global /64 on the uplink, for the CLAT's own IPv6 address.

Active, it holds:

* a TUN (``clat0``) with 192.0.0.1 and peer 192.0.0.2 (RFC 7335) and the IPv4
  default route; no 192.0.0.x address ever on the uplink, and an nftables
  table that drops (and counts) any 192.0.0.0/29 source leaving elsewhere;
* a dedicated IPv6 address (RFC 6877 §6.3) on the uplink: a stable IID in its
  SLAAC /64, checksum-neutral with 192.0.0.1, *deprecated* so the host's own
  connections never pick it as a source. It is a real address, so the kernel
  runs DAD (a collision picks the next candidate) and answers multicast and
  unicast Neighbor Solicitations as its owner (source = the address, S and O
  set, target link-layer option) and ping6; ``ndisc_notify`` makes it send an
  unsolicited NA once DAD is done. A tc filter on the uplink hands every other
  packet for the address to the TUN (:mod:`v6mostly.linux.tc`);
* workers translating with the SIIT core (EAM 192.0.0.1 = the CLAT address, the rest
  through the Pref64; ``clat_loops.py``): IPv4 results go back into the TUN, IPv6
  results out of the uplink (an egress TAP, else a raw socket).

The IPv4 MTU of the TUN is the uplink's IPv6 MTU - 20 and follows it (RA MTU options).

Time for lifetimes is ``CLOCK_BOOTTIME``: a PREF64 lifetime runs on while the host sleeps
(``CLOCK_MONOTONIC`` stops in suspend, so a CLAT using it would think a stale prefix still valid
after resume). A pause the loop notices (it woke up much later than it asked to: suspend/resume,
SIGSTOP/SIGCONT, a frozen VM) is handled like a link change: Router Solicitations at once, the
known prefixes must be re-advertised, DNS discovery is re-checked (Apple's CLAT did not come
back after resume). The state (Pref64 and source, addresses, MTU, active or why not, counters)
goes to ``/run/v6mostly/clat-IF.json`` (``clat status``); ``clat-IF.sock`` beside it answers
``v6mostly ctl``. SIGTERM removes everything; a start after SIGKILL removes what the killed one
left (named in its state file) and takes over.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from ..clat import Pref64Changed, Pref64Refused, Pref64Tracker, neutral_clat_address
from ..clat.address import ipv4_mtu_for
from ..config import ClatSettings
from ..control import ControlError, ControlServer
from ..errors import V6mostlyError
from ..linux import hostnet, ndisc, netlink, nft, tc, tun
from ..linux.tun import Tun
from .clat_egress import close_egress, egress_name, open_egress
from .clat_fast import CLAT_PEER_V4, CLAT_V4, ClatFast, translator_factory
from .clat_loops import clat_loop, clat_vnet_loop
from .control_handlers import ReloadState, clat_handlers
from .dataplane import Dataplane, SharedCounters
from .worker_loops import Poll

log = logging.getLogger("v6mostly.clat")

#: Metric of the CLAT's IPv4 default route (a native one, if it comes, is preferred
#: until the supervisor steps back).
ROUTE_METRIC = 2048
#: The loop woke up this much later than it asked: the host slept or the process was
#: stopped (handled as a link change).
PAUSE_SLACK = 5.0
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


class ClatError(V6mostlyError):
    pass


def _now() -> float:
    """The clock of Pref64 lifetimes: CLOCK_BOOTTIME counts the time the host slept."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class Active:
    """What the CLAT has set up while it runs (undone in reverse)."""

    address: ipaddress.IPv6Address
    prefix: ipaddress.IPv6Network
    mtu: int
    tun: tun.Tun
    dp: Dataplane
    qdisc_added: bool
    #: The egress TAP (offload mode), or None: IPv6 leaves through a raw socket.
    tap: Tun | None = None
    #: The in-kernel fast path (services/clat_fast), or None (``fastpath = false``).
    fast: ClatFast | None = None

    @property
    def egress(self) -> str:
        if self.tap is None:
            return "raw socket (one packet at a time)"
        return f"TAP {self.tap.name} + tc bpf redirect_neigh (GSO super-packets)"


class ClatService:
    def __init__(self, s: ClatSettings) -> None:
        self.s = s
        self.tracker = Pref64Tracker(s.pref64)
        self.active: Active | None = None
        self.reason = "starting"
        self.listener: ndisc.UserOptListener | None = None
        # The IPv6 next hop (the uplink) has 20 bytes more MTU than clat0.
        self.counters = SharedCounters(s.worker_count, ipv6_extra=20)
        #: The in-kernel fast path; its counters last as long as the service.
        self.fast = ClatFast(s.tun, s.interface) if s.fastpath else None
        self.ifindex = 0
        self.link_up = False
        self.mac = b""
        self.attempt = 0
        self.sysctls: dict[str, str] = {}
        self.http: object | None = None
        #: After a failed start: no new try before ``retry_at`` (doubling back-off).
        self.retry_at = 0.0
        self.backoff = 0.0
        self.control: ControlServer | None = None
        self.reloads = ReloadState()
        self.started = time.monotonic()

    @property
    def state_path(self) -> str:
        return os.path.join(self.s.state_dir, f"clat-{self.s.interface}.json")

    # -- start / stop -------------------------------------------------------------

    def start(self) -> None:
        s = self.s
        idx = hostnet.link_index(s.interface)
        if idx is None:
            raise ClatError(f"interface {s.interface}: no such interface")
        self.ifindex = idx
        if s.tun == s.interface:
            raise ClatError(f"tun {s.tun}: must not be the uplink itself")
        self.take_over()
        self.listener = ndisc.UserOptListener()
        now = _now()
        self.tracker.start(now)
        self.link_up, self.mac = hostnet.link_state(s.interface)
        self._log_events()
        if s.metrics_listen:
            self._start_metrics()
        try:
            self.control = ControlServer(self.control_path, clat_handlers(self))
        except ControlError as e:
            log.warning("%s: v6mostly ctl cannot reach this instance", e)

    @property
    def control_path(self) -> str:
        return os.path.join(self.s.state_dir, f"clat-{self.s.interface}.sock")

    def take_over(self) -> None:
        """Remove what a killed instance left (its state file names its address)."""
        s = self.s
        old: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError), open(self.state_path) as f:
            old = json.load(f)
        left = []
        for name in (s.tun, egress_name(s.tun)):
            if tun.link_exists(name):
                tun.delete_link(name)
                left.append(f"link {name}")
        if nft.exists(s.tun):
            nft.delete(s.tun)
            left.append(f"nftables table inet {nft.table_name(s.tun)}")
        tc.remove_redirect(s.interface, bool(old.get("qdisc_added")))
        if old.get("clat_ipv6"):
            hostnet.del_address(s.interface, str(old["clat_ipv6"]))
            left.append(f"address {old['clat_ipv6']}")
        for k, v in (old.get("sysctls") or {}).items():
            with contextlib.suppress(OSError):
                netlink.write_sysctl(k, v)
        if left:
            log.warning("took over from a previous instance: removed %s", ", ".join(left))

    def stop(self) -> None:
        if self.listener is None:
            return  # never started (e.g. no such interface): nothing to undo
        self.deactivate("stopping")
        if self.fast is not None:
            self.fast.close()
        if self.control is not None:
            self.control.close()
        self.listener.close()
        shutdown = getattr(self.http, "shutdown", None)
        if shutdown is not None:
            shutdown()
        with contextlib.suppress(OSError):
            os.unlink(self.state_path)
        log.info("cleaned up")

    # -- the loop -----------------------------------------------------------------

    def run(self) -> None:
        while True:
            self.step(_now())
            nd = self.tracker.next_deadline()
            start = _now()
            until = start + (1.0 if nd is None else max(0.05, min(1.0, nd - start)))
            if not self.wait(until):
                return

    def wait(self, until: float) -> bool:
        """Wait for signals until ``until`` (or a pause, a SIGHUP); False on SIGTERM/SIGINT.

        SIGCHLD only reaps: every ``step`` runs ``nft`` (its counters), whose exit
        leaves a SIGCHLD pending, and stepping again on it made the loop spin
        (a step every ~20 ms instead of every second)."""
        for _ in range(10_000):  # bounded: each pass takes a signal or ends the wait
            before = _now()
            left = until - before
            if left <= 0:
                return True
            info = signal.sigtimedwait(_SIGNALS, left)
            paused = self.check_pause(before, left, _now())
            signo = info.si_signo if info is not None else None
            if signo not in _SIGNALS:
                # None: the time is up. Anything else is the uninitialised siginfo
                # CPython's sigtimedwait returns when the wait was interrupted
                # (SIGSTOP/SIGCONT, the freezer at suspend) and the time ran out
                # meanwhile: no signal was taken (seen with CPython 3.11).
                if paused:
                    return True
                continue
            if signo == signal.SIGCHLD:
                if self.active is not None:
                    self.active.dp.reap()
                if paused:
                    return True
            elif signo == signal.SIGHUP:
                log.info("SIGHUP: re-checking the link and the Pref64")
                self.tracker.on_link_change(_now())
                self.reloads.done(
                    True, "re-checking the link and the Pref64 (the CLAT re-reads no file)"
                )
                return True
            else:
                log.info("%s: stopping", signal.Signals(signo).name)
                return False
        return True

    def check_pause(self, before: float, wait: float, now: float) -> bool:
        """After a wait of ``wait`` s from ``before``: a pause (suspend, SIGSTOP) when it
        ended much later. Then the network may have changed or gone: re-solicit and
        re-confirm as after a link change (what arrived meanwhile is still read)."""
        slept = now - before
        if slept <= wait + PAUSE_SLACK:
            return False
        log.warning(
            "resumed after a pause of %.0f s (suspend or stop): soliciting a fresh RA", slept
        )
        self.tracker.on_link_change(now)
        return True

    def step(self, now: float) -> None:
        """One pass: read events, update the tracker, reconcile, write the state file."""
        s = self.s
        up, mac = hostnet.link_state(s.interface)
        if up != self.link_up:
            log.info("link %s %s", s.interface, "up" if up else "down")
            self.link_up, self.mac = up, mac or self.mac
            if up:
                self.tracker.on_link_change(now)
        if self.listener is not None:
            for o in self.listener.drain():
                if o.ifindex != self.ifindex:
                    continue
                for p in o.ra.pref64:
                    self.tracker.on_ra_pref64(p.prefix, p.lifetime, o.router, now)
        self.tracker.tick(now)
        if up and self.tracker.rs_due(now):
            with contextlib.suppress(OSError):
                ndisc.send_router_solicitation(s.interface)
            self.tracker.on_rs_sent(now)
        if up and self.tracker.dns_query_due(now):
            self._query_dns(now)
        self._log_events()
        self.reconcile(now)
        self.write_state(now)

    def _query_dns(self, now: float) -> None:
        """RFC 7050 §3, only while no RA carries PREF64."""
        from .discover import from_ipv4only_arpa

        self.tracker.on_dns_query_sent(now)
        found = from_ipv4only_arpa(self.s.dns, 2.0)
        now = _now()
        if found:
            self.tracker.on_dns_result([f.prefix for f in found], 300, now)
        else:
            self.tracker.on_dns_failure(now)

    def _log_events(self) -> None:
        for ev in self.tracker.events():
            if isinstance(ev, Pref64Changed):
                if ev.new is None:
                    log.warning("Pref64 %s gone (%s)", ev.old, ev.reason)
                else:
                    log.info(
                        "Pref64 %s from %s (%s)%s",
                        ev.new,
                        ev.origin,
                        ev.reason,
                        f"; was {ev.old}" if ev.old and ev.old != ev.new else "",
                    )
            elif isinstance(ev, Pref64Refused):
                log.error("Pref64 %s from %s refused: %s", ev.prefix, ev.origin, ev.why)
            else:
                log.warning("ipv4only.arpa failed (%d in a row); keeping %s", ev.failures, ev.kept)

    # -- reconcile ----------------------------------------------------------------

    def why_idle(self) -> str | None:
        """None when the CLAT should run, else the reason it does not."""
        if not self.link_up:
            return f"link {self.s.interface} is down"
        if self.tracker.current() is None:
            return "no Pref64 (no RA PREF64, no ipv4only.arpa answer)"
        native = hostnet.native_ipv4_default(self.s.tun)
        if native is not None:
            return f"native IPv4: default route via {native}"
        return None

    def reconcile(self, now: float) -> None:
        why = self.why_idle()
        if why is not None:
            if self.active is not None:
                self.deactivate(why)
            elif why != self.reason:
                log.info("idle: %s", why)
            self.reason = why
            return
        cur = self.tracker.current()
        assert cur is not None
        a = self.active
        if a is None:
            if now < self.retry_at:
                return
            try:
                self.activate(cur.prefix)
                self.backoff = 0.0
            except (V6mostlyError, OSError) as e:
                why = f"cannot start: {e}"
                self.backoff = min(60.0, self.backoff * 2 or 2.0)
                self.retry_at = now + self.backoff
                log.error("%s (next try in %.0f s)", why, self.backoff)
                self.deactivate(why)
            return
        if a.prefix != cur.prefix:
            log.info("Pref64 now %s: restarting the translator", cur.prefix)
            a.prefix = cur.prefix
            a.dp.replace_all(self._factory(a.address, cur.prefix))
            if a.fast is not None:
                a.fast.apply(self._factory(a.address, cur.prefix), self.counters)
        flags = hostnet.address_flags(self.s.interface, str(a.address))
        if flags is None:
            # Link down flushed it (keep_addr_on_down = 0): add it again, with DAD.
            log.info("CLAT address %s gone from %s: adding it again", a.address, self.s.interface)
            self.deactivate("address lost")
            return
        mtu = ipv4_mtu_for(hostnet.ipv6_mtu(self.s.interface))
        if mtu != a.mtu:
            log.info("uplink IPv6 MTU changed: %s IPv4 MTU %d -> %d", self.s.tun, a.mtu, mtu)
            tun.configure_link(self.s.tun, mtu, 1000)
            if a.tap is not None:
                tun.configure_link(a.tap.name, mtu + 20, 1000)
            a.dp.set_link_mtu(mtu)
            a.mtu = mtu
            if a.fast is not None:
                a.fast.apply(self._factory(a.address, a.prefix), self.counters)

    def _factory(self, address: ipaddress.IPv6Address, pref64: ipaddress.IPv6Network) -> Any:
        own6 = hostnet.source_address(self.s.interface, str(address))
        return translator_factory(address, pref64, own6)

    def choose_address(self) -> tuple[ipaddress.IPv6Address, ipaddress.IPv6Network]:
        s = self.s
        prefixes = hostnet.uplink_prefixes(s.interface, set())
        if s.address is not None:
            net = ipaddress.IPv6Network(f"{s.address}/64", strict=False)
            return s.address, net
        if not prefixes:
            raise ClatError(f"no global /64 on {s.interface} for the CLAT address")
        net = prefixes[0]
        seed = self.mac + s.interface.encode()
        return neutral_clat_address(net, seed, attempt=self.attempt), net

    def add_with_dad(self) -> ipaddress.IPv6Address:
        """Add the CLAT address and wait for DAD; a collision takes the next candidate."""
        s = self.s
        for _ in range(8):
            addr, _net = self.choose_address()
            hostnet.add_deprecated_address(s.interface, str(addr))
            deadline = time.monotonic() + 5.0
            flags = hostnet.address_flags(s.interface, str(addr))
            while (
                flags is not None
                and flags & hostnet.IFA_F_TENTATIVE
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
                flags = hostnet.address_flags(s.interface, str(addr))
            if flags is not None and not flags & (
                hostnet.IFA_F_TENTATIVE | hostnet.IFA_F_DADFAILED
            ):
                log.info("CLAT address %s on %s (DAD done)", addr, s.interface)
                return addr
            hostnet.del_address(s.interface, str(addr))
            if s.address is not None:
                raise ClatError(f"address {addr}: duplicate address detected on {s.interface}")
            log.warning("CLAT address %s: DAD failed (in use on the link); next candidate", addr)
            self.attempt += 1
        raise ClatError(f"no CLAT address passed DAD on {s.interface}")

    def activate(self, pref64: ipaddress.IPv6Network) -> None:
        s = self.s
        # ndisc_notify: an unsolicited NA once DAD is done (RFC 4861 §7.2.6).
        key = f"net/ipv6/conf/{s.interface}/ndisc_notify"
        with contextlib.suppress(OSError):
            self.sysctls.setdefault(key, netlink.read_sysctl(key))
            netlink.write_sysctl(key, "1")
        addr = self.add_with_dad()
        mtu = ipv4_mtu_for(hostnet.ipv6_mtu(s.interface))
        t: tun.Tun | None = None
        tap: Tun | None = None
        added = False
        try:
            tap = open_egress(s.tun, s.interface, s.worker_count, mtu + 20) if s.offload else None
            t = tun.open_tun(s.tun, s.worker_count, offload=tap is not None)
            if err := t.steer():
                log.warning("tun %s: %s (the kernel's own queue choice)", s.tun, err)
            tun.configure_link(s.tun, mtu, 1000)
            # No IPv6 on the TUN: no RS or MLD of its own (the translator drops them anyway).
            with contextlib.suppress(OSError, V6mostlyError):
                netlink.write_sysctl(f"net/ipv6/conf/{s.tun}/disable_ipv6", "1")
            with hostnet.iproute() as ipr:
                idx = ipr.link_lookup(ifname=s.tun)[0]
                ipr.addr("add", index=idx, local=CLAT_V4, address=CLAT_PEER_V4, prefixlen=32)
                ipr.route("add", dst="0.0.0.0/0", oif=idx, prefsrc=CLAT_V4, priority=ROUTE_METRIC)
            nft.apply(nft.render_clat_table(s.tun))
            added = tc.install_redirect(s.interface, str(addr), s.tun)
            self.counters.link_mtu = mtu
            mac = hostnet.link_state(s.interface)[1]
            if tap is not None and t.mode == "offload":
                loop = clat_vnet_loop(dict(zip(t.fds, tap.fds, strict=True)), addr.packed, mac)
            else:
                if tap is not None:  # the TUN refused offloads: no use for the TAP
                    log.warning("%s: no offloads (%s); IPv6 through a raw socket", s.tun, t.notes)
                    close_egress(tap)
                    tap = None
                loop = clat_loop(s.interface, addr.packed, mac)
            poll = Poll(s.poll_us, s.poll_cpu)
            dp = Dataplane(t, self._factory(addr, pref64), self.counters, loop, poll)
            dp.start()
            fast = self.fast
            if fast is not None:
                fast.apply(self._factory(addr, pref64), self.counters)
        except BaseException:
            if self.fast is not None:
                self.fast.off()
            tc.remove_redirect(s.interface, added)
            if t is not None:
                t.close()
            if tap is not None:
                close_egress(tap)
            tun.delete_link(s.tun)
            nft.delete(s.tun)
            hostnet.del_address(s.interface, str(addr))
            raise
        self.active = a = Active(addr, pref64, mtu, t, dp, added, tap, fast)
        self.reason = "active"
        log.info(
            "active: %s %s peer %s, IPv4 MTU %d, CLAT address %s, Pref64 %s, %d worker(s), "
            "IPv6 out: %s",
            s.tun,
            CLAT_V4,
            CLAT_PEER_V4,
            mtu,
            addr,
            pref64,
            len(t.fds),
            a.egress,
        )

    def deactivate(self, why: str) -> None:
        a, self.active = self.active, None
        s = self.s
        if a is not None:
            if a.fast is not None:
                a.fast.off()
            a.dp.stop()
            tc.remove_redirect(s.interface, a.qdisc_added)
            a.tun.close()
            tun.delete_link(s.tun)  # its address and routes go with it
            if a.tap is not None:
                close_egress(a.tap)
            nft.delete(s.tun)
            hostnet.del_address(s.interface, str(a.address))
            log.info("stopped (%s): route, %s, address %s removed", why, s.tun, a.address)
        for k, v in self.sysctls.items():
            with contextlib.suppress(OSError):
                netlink.write_sysctl(k, v)
        self.sysctls.clear()
        self.reason = why

    # -- state and metrics --------------------------------------------------------

    def state(self, now: float) -> dict[str, Any]:
        cur = self.tracker.current()
        a = self.active
        st, extra = self.counters.total()
        counters = {k: v for k, v in st.as_dict().items() if v}
        counters.update({k: v for k, v in extra.items() if v})
        if a is not None:
            counters.update(nft.read_named_counters(self.s.tun))
            if a.fast is not None:
                fp = dict(
                    zip(("packets", "octets", "superpackets"), a.fast.counters(), strict=True)
                )
                counters.update({f"fastpath_{k}": v for k, v in fp.items() if v})
        return {
            "interface": self.s.interface,
            "tun": self.s.tun,
            "pid": os.getpid(),
            "active": a is not None,
            "reason": self.reason,
            "pref64": str(cur.prefix) if cur else None,
            "pref64_source": cur.origin if cur else None,
            "pref64_lifetime_left": cur.remaining(now) if cur else None,
            "clat_ipv6": str(a.address) if a else None,
            "ipv4": CLAT_V4 if a else None,
            "ipv4_peer": CLAT_PEER_V4 if a else None,
            "mtu": a.mtu if a else None,
            "workers": len(a.tun.fds) if a else None,
            "egress": a.egress if a else None,
            "qdisc_added": a.qdisc_added if a else False,
            "sysctls": dict(self.sysctls),
            "counters": counters,
            "updated": time.time(),
        }

    def write_state(self, now: float) -> None:
        os.makedirs(self.s.state_dir, exist_ok=True)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state(now), f, indent=1)
        os.replace(tmp, self.state_path)

    def _start_metrics(self) -> None:
        from ..metrics import ClatCollector, serve_endpoint, standard_registry

        reg = standard_registry()
        reg.register(
            ClatCollector(
                self.counters,
                lambda: self.active is not None,
                lambda: nft.read_named_counters(self.s.tun),
                self._fast_counters if self.s.fastpath else None,
            )
        )
        self.http = serve_endpoint(reg, self.s.metrics_listen)

    def _fast_counters(self, direction: int) -> tuple[int, int, int]:
        return self.fast.counters(direction) if self.fast is not None else (0, 0, 0)


def serve_forever(s: ClatSettings) -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS | {signal.SIGUSR1})
    svc = ClatService(s)
    try:
        svc.start()
        svc.run()
    finally:
        svc.stop()
    return 0
