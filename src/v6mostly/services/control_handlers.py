"""What ``v6mostly ctl`` asks a translator (plat/siit) or a CLAT: handlers for the
control socket (:mod:`v6mostly.control`), built from what the services export.

They read shared counters and state; a reload is handed to the main loop with
SIGHUP and its outcome awaited (``ReloadState``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..control import Handler
from ..explain import explain


def file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


@dataclass
class ReloadState:
    """The outcome of the last SIGHUP, for ``ctl reload`` to wait on."""

    generation: int = 0
    ok: bool = True
    message: str = ""
    cond: threading.Condition = field(default_factory=threading.Condition)

    def done(self, ok: bool, message: str) -> None:
        with self.cond:
            self.generation += 1
            self.ok, self.message = ok, message
            self.cond.notify_all()

    def request(self, timeout: float = 15.0) -> dict[str, Any]:
        """Send SIGHUP to this process and wait for the main loop to finish it."""
        with self.cond:
            gen = self.generation
            os.kill(os.getpid(), signal.SIGHUP)
            if not self.cond.wait_for(lambda: self.generation > gen, timeout):
                return {
                    "reloaded": False,
                    "message": f"no answer from the main loop in {timeout:.0f} s",
                }
            return {"reloaded": self.ok, "message": self.message}


def counters_answer(counters: dict[str, int], req: dict[str, Any]) -> dict[str, Any]:
    """``stats``: every counter; with ``explain`` its meaning and advice too."""
    if not req.get("explain"):
        return {"counters": counters}
    rows = []
    for name, value in counters.items():
        e = explain(name)
        rows.append(
            {
                "name": name,
                "value": value,
                "meaning": e[0] if e else "",
                "advice": e[1] if e else "",
            }
        )
    return {"counters": counters, "explained": rows}


def napt66_sessions(
    outer6: set[str], pool6: str | None, client: str | None, limit: int
) -> dict[str, Any]:
    """``sessions``: the NAPT66 bindings in conntrack (a dump, on demand only).

    ``age`` comes from the entry's start timestamp (the PLAT turns on
    ``nf_conntrack_timestamp``); entries made before that have none (None)."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    pref = ipaddress.IPv6Network(pool6) if pool6 else None
    rows: list[dict[str, Any]] = []
    total = 0
    now_ns = time.time_ns()
    with Conntrack(nfgen_family=socket.AF_INET6) as ct:
        for m in ct.dump():
            raw_o, raw_r = m.get_attr("CTA_TUPLE_ORIG"), m.get_attr("CTA_TUPLE_REPLY")
            if raw_o is None or raw_r is None:
                continue
            o = NFCTAttrTuple.from_netlink(socket.AF_INET6, raw_o)
            r = NFCTAttrTuple.from_netlink(socket.AF_INET6, raw_r)
            if r.daddr not in outer6:
                continue
            if client is not None and o.saddr != client:
                continue
            total += 1
            if len(rows) >= limit:
                continue
            dst4 = None
            if pref is not None and pref.prefixlen == 96:
                a = ipaddress.IPv6Address(o.daddr)
                if a in pref:
                    dst4 = str(ipaddress.IPv4Address(int(a) & 0xFFFFFFFF))
            ts = m.get_attr("CTA_TIMESTAMP")
            start = ts.get_attr("CTA_TIMESTAMP_START") if ts is not None else None
            rows.append(
                {
                    "proto": {6: "tcp", 17: "udp", 58: "icmpv6"}.get(o.proto, str(o.proto)),
                    "client": o.saddr,
                    "client_port": o.sport if o.proto in (6, 17) else o.icmp_id,
                    "destination": o.daddr,
                    "destination_ipv4": dst4,
                    "destination_port": o.dport if o.proto in (6, 17) else None,
                    "outer": r.daddr,
                    "outer_port": r.dport if o.proto in (6, 17) else r.icmp_id,
                    "age": max(0, (now_ns - start) // 1_000_000_000) if start else None,
                    "expires_in": m.get_attr("CTA_TIMEOUT"),
                }
            )
    return {"sessions": rows, "total": total, "shown": len(rows)}


def site_file_of(config: str) -> str | None:
    """The ``site = "..."`` a plat.toml takes its Pref64 from (None: its own pool6)."""
    import tomllib

    try:
        with open(config, "rb") as f:
            site = tomllib.load(f).get("site")
    except (OSError, ValueError):
        return None
    return site if isinstance(site, str) else None


def uptime(started: float) -> float:
    return round(time.monotonic() - started, 1)


def translator_handlers(svc: Any) -> dict[str, Handler]:
    """``ctl`` for ``plat``/``siit`` (``services.translator.TranslatorService``)."""
    from ..linux import conntrack, nft

    def status(req: dict[str, Any]) -> dict[str, Any]:
        assert svc.dp is not None and svc.tun is not None
        t = svc.s.translator
        site = site_file_of(svc.s.source)
        return {
            "daemon": "plat" if svc.plat else "siit",
            "pid": os.getpid(),
            "config": svc.s.source,
            "config_sha256": file_digest(svc.s.source),
            "uptime_s": uptime(svc.started),
            "pref64": t.pool6,
            "pref64_source": f"[site] pref64 of {site}" if site else "[translator] pool6",
            "eam_entries": len(t.eam),
            "tun": svc.tun.name,
            "mode": svc.tun.mode,
            "workers": svc.dp.alive(),
            "queues": len(svc.tun.fds),
            "worker_restarts": svc.dp.restarts,
            "mtu": svc.dp.counters.link_mtu,
            "fastpath": svc.fast is not None,
            "ha": svc.ha.status() if svc.ha is not None else None,
        }

    def stats(req: dict[str, Any]) -> dict[str, Any]:
        assert svc.dp is not None and svc.tun is not None
        st, extra = svc.dp.counters.total()
        c: dict[str, int] = {**st.as_dict(), **extra}
        fp = svc.fast_counters()
        c["fastpath_packets"], c["fastpath_octets"], c["fastpath_superpackets"] = fp
        if svc.plat:
            c.update(vars(nft.read_counters(svc.tun.name)))
            c.update({f"conntrack_{k}": v for k, v in conntrack.stats().items()})
        return counters_answer(c, req)

    def sessions(req: dict[str, Any]) -> dict[str, Any]:
        if not svc.plat or svc.s.napt66 is None:
            return {"sessions": [], "total": 0, "shown": 0, "note": "no NAPT66 (siit)"}
        n = svc.s.napt66
        outer = {str(o.ipv6) for o in n.outer}
        if n.private_egress:
            outer.add(str(n.private_egress.outer.ipv6))
        client = req.get("client")
        return napt66_sessions(
            outer, svc.s.translator.pool6, str(client) if client else None,
            int(req.get("limit", 1000)),
        )  # fmt: skip

    def reload(req: dict[str, Any]) -> dict[str, Any]:
        rs: ReloadState = svc.reloads
        return rs.request()

    return {"status": status, "stats": stats, "sessions": sessions, "reload": reload}


def clat_handlers(svc: Any) -> dict[str, Handler]:
    """``ctl`` for a CLAT (``services.clat.ClatService``): status, stats, reload
    (SIGHUP re-checks the link and the Pref64)."""
    from ..linux import nft
    from .clat import _now

    def status(req: dict[str, Any]) -> dict[str, Any]:
        st = svc.state(_now())
        st.pop("counters", None)
        st.pop("sysctls", None)
        return {
            "daemon": f"clat@{svc.s.interface}",
            "config": svc.s.source,
            "uptime_s": uptime(svc.started),
            **st,
        }

    def stats(req: dict[str, Any]) -> dict[str, Any]:
        st, extra = svc.counters.total()
        c: dict[str, int] = {**st.as_dict(), **extra}
        if svc.active is not None:
            c.update(nft.read_named_counters(svc.s.tun))
            if svc.active.fast is not None:
                fp = svc.active.fast.counters()
                c["fastpath_packets"], c["fastpath_octets"], c["fastpath_superpackets"] = fp
        return counters_answer(c, req)

    def reload(req: dict[str, Any]) -> dict[str, Any]:
        rs: ReloadState = svc.reloads
        return rs.request()

    return {"status": status, "stats": stats, "reload": reload}


def router_handlers(router: Any) -> dict[str, Handler]:
    """``ctl`` for the router (``services.router.Router``): status, leases [--v6only],
    stats, reload."""
    import ipaddress as ip

    def status(req: dict[str, Any]) -> dict[str, Any]:
        cfg = router.cfg
        table = router.table
        return {
            "daemon": "router",
            "pid": os.getpid(),
            "config": cfg.source,
            "config_sha256": file_digest(cfg.source),
            "uptime_s": uptime(router.started),
            "pref64": str(cfg.pref64),
            "pref64_source": "[site] pref64",
            "services": list(router.only),
            "interfaces": [ic.name for ic in cfg.interfaces],
            "leases": len(table.by_addr) if table is not None else None,
        }

    def leases(req: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        if req.get("v6only"):
            if router.dhcp is None:
                return {"clients": []}
            rows = [
                {
                    "client_id": key.hex(),
                    "mac": d.mac,
                    "subnet": d.subnet,
                    "told_ipv6_only": d.v6only,
                    "seconds_ago": round(now - d.time, 1),
                    "why": d.why,
                }
                for key, d in reversed(router.dhcp.server.decisions.items())
            ]
            return {"clients": rows}
        table = router.table
        out = []
        for a, lease in sorted((table.by_addr if table is not None else {}).items()):
            out.append(
                {
                    "address": str(ip.IPv4Address(a)),
                    "mac": lease.mac,
                    "client_id": lease.client_key.hex(),
                    "subnet": lease.subnet,
                    "state": lease.state,
                    "expires_in": round(lease.expires - now),
                    "hostname": lease.hostname,
                }
            )
        return {"leases": out}

    def stats(req: dict[str, Any]) -> dict[str, Any]:
        c: dict[str, int] = {}
        if router.dhcp is not None:
            st = router.dhcp.server.stats
            for k, v in st.requests.items():
                c[f"dhcp4_requests_{k}"] = v
            for k, v in st.replies.items():
                c[f"dhcp4_replies_{k}"] = v
            for k, v in st.dropped.items():
                c[f"dhcp4_dropped_{k}"] = v
            for k, v in st.exhausted.items():
                c[f"dhcp4_pool_exhausted_{k}"] = v
            c["dhcp4_offers_v6only"] = st.offers_v6only
            c["dhcp4_acks_v6only"] = st.acks_v6only
            c["dhcp4_malformed"] = st.malformed
            c["dhcp4_option82_ignored"] = st.option82_ignored
        if router.ra is not None:
            for rif in router.ra.ifs.values():
                c[f"ra_sent_{rif.name}"] = rif.sent
                c[f"ra_solicits_{rif.name}"] = rif.solicits
                for why, n in list(rif.invalid.items()):
                    c[f"ra_solicits_invalid_{rif.name}_{why}"] = n
        if router.dns is not None:
            for k, v in list(router.dns.responder.counts.items()):
                c[f"dns_{k}"] = v
        return counters_answer(c, req)

    def reload(req: dict[str, Any]) -> dict[str, Any]:
        rs: ReloadState = router.reloads
        return rs.request()

    return {"status": status, "leases": leases, "stats": stats, "reload": reload}
