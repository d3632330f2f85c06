"""``v6mostly router --dry-run``: what the site file makes the router serve."""

from __future__ import annotations

from ..dhcp4.policy import ClientClass, TextMatch
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
    if cfg.classes:
        out.append("classes (in order; the first that matches and sets v6only decides 108):")
    for c in cfg.classes:
        out += _class_lines(c)
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


def _class_lines(c: ClientClass) -> list[str]:
    if c.v6only is None:
        what = "no 108 decision (the subnet's default applies)"
    elif c.v6only:
        what = f"option 108 on, rollout {c.rollout_percent}% (v6only = true; overrides the subnet's default)"
    else:
        what = "option 108 off (v6only = false; overrides the subnet's default)"
    match = []
    for key, m in (
        ("circuit_id", c.circuit_id),
        ("remote_id", c.remote_id),
        ("vendor_class", c.vendor_class),
    ):
        if m is not None:
            match.append(f"{key} {_text_match(m)}")
    if c.mac_prefixes:
        match.append("mac_prefix " + " or ".join(p.hex(":") for p in c.mac_prefixes))
    if c.subnets:
        match.append("subnet " + " or ".join(c.subnets))
    return [f"class {c.name}: {what}", f"    when {' and '.join(match)}"]


def _text_match(m: TextMatch) -> str:
    parts = []
    if m.equals is not None:
        parts.append(f'== "{m.equals}"')
    if m.contains is not None:
        parts.append(f'contains "{m.contains}"')
    if m.prefix is not None:
        parts.append(f'starts with "{m.prefix}"')
    if m.split is not None:
        sep, index, value = m.split
        parts.append(f'split("{sep}")[{index}] == "{value}"')
    return " and ".join(parts)


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
