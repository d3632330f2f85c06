"""``v6mostly router --dry-run``: what the site file makes the router serve."""

from __future__ import annotations

from ..site_config import Dhcp4Subnet, SiteConfig
from .router_ra import make_ra


def dry_run_text(cfg: SiteConfig) -> str:
    out = [f"# v6mostly router --dry-run ({cfg.source})", f"Pref64 {cfg.pref64}"]
    for ic in cfg.interfaces:
        out.append(f"interface {ic.name}:")
        if ic.ra:
            ra = make_ra(ic, cfg.pref64, None)
            out.append(
                f"  RA every {ic.min_interval or max(3, round(0.33 * ic.max_interval))}-{ic.max_interval} s, "
                f"router lifetime {ic.router_lifetime} s, preference {ic.preference}"
            )
            for p64 in ra.pref64:
                out.append(
                    f"    PREF64 {p64.prefix} lifetime {p64.scaled() * 8} s (scaled {p64.scaled()})"
                )
            if not ra.pref64:
                out.append("    no PREF64 (advertise_pref64 = false; withdrawn if it was sent)")
            for p in ra.prefixes:
                out.append(f"    PIO {p.prefix} valid {p.valid} preferred {p.preferred} (SLAAC)")
            if ra.rdnss:
                out.append(f"    RDNSS {', '.join(map(str, ra.rdnss))}")
            if ra.dnssl:
                out.append(f"    DNSSL {', '.join(ra.dnssl)}")
            if ra.mtu:
                out.append(f"    MTU {ra.mtu}")
        if ic.dhcp4:
            out += _dhcp_lines(ic.dhcp4)
    for d in cfg.relayed:
        out.append(f"relayed subnet {d.name} (giaddr in {d.subnet}):")
        out += _dhcp_lines(d)
    for c in cfg.classes:
        what = {True: "option 108 on", False: "option 108 off", None: "no 108 decision"}[c.v6only]
        out.append(f"class {c.name}: {what}, rollout {c.rollout_percent}%")
    if cfg.dns:
        dc = cfg.dns
        out.append(
            f"DNS on {', '.join(dc.listen)} port {dc.port}: ipv4only.arpa from {cfg.pref64}; "
            f"others {'to ' + dc.upstream if dc.upstream else 'REFUSED'}; DNS64 "
            f"{'on' if dc.dns64 else 'off'}; clients {', '.join(map(str, dc.allow))}"
        )
    if cfg.metrics_listen:
        out.append(f"metrics: http://{cfg.metrics_listen}/metrics")
    return "\n".join(out)


def _dhcp_lines(d: Dhcp4Subnet) -> list[str]:
    pools = ", ".join(f"{a}-{b}" for a, b in d.pools) or "reservations only"
    v6 = (
        f"option 108 (V6ONLY_WAIT {d.v6only_wait} s) to clients asking for it"
        + (f", {d.v6only_rollout}% rollout" if d.v6only_rollout < 100 else "")
        if d.v6only
        else "no option 108 by default"
    )
    return [
        f"  DHCPv4 {d.subnet}: pool {pools}, lease {d.lease_time} s, routers "
        f"{', '.join(d.routers) or '-'}, DNS {', '.join(d.dns) or '-'}",
        f"    {v6}",
    ]


# -- DHCPv4 ------------------------------------------------------------------------
