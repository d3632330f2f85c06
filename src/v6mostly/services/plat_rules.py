"""The PLAT's kernel state, derived from its settings: the routes, rules and sysctls
(a ``linux.netlink.Plan``) and the nftables table (NAPT66, stateful filtering,
notrack, conntrack timeouts) as text for ``nft -f``. The ``linux`` adapters apply
them and never see the settings object (docs/architecture.md §1, §2).

How the table works is told in :mod:`v6mostly.linux.nft`.
"""

from __future__ import annotations

import ipaddress
import socket

from ..config import Settings
from ..linux.netlink import Plan
from ..linux.nft import COUNTERS, NftError, table_name

#: The ct mark of NAPT66 flows in a group of PLATs ([ha]); conntrackd syncs only these
#: (the UDP one-shot flows, DNS and NTP, stay unmarked and local).
HA_CT_MARK = 0x6466

#: Start timestamps on conntrack entries: the age ``ctl sessions`` shows.
CONNTRACK_SYSCTLS = {"net/netfilter/nf_conntrack_timestamp": "1"}


def plan(s: Settings) -> Plan:
    """Routes into the TUN: Pref64, the IPv4 side of every EAM entry (the PLAT's
    outer addresses are EAM entries), the translator's own addresses."""
    p = Plan()
    if not s.manage_routes:
        return p
    p.sysctls = {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"}
    t = s.translator
    seen: set[str] = set()

    def add(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        if str(net) not in seen:
            seen.add(str(net))
            p.routes.append(net)

    if t.pool6:
        add(ipaddress.IPv6Network(t.pool6))
    for _v6, v4 in t.eam:
        add(ipaddress.IPv4Network(v4))
    if t.ipv4_address:
        add(ipaddress.IPv4Network(t.ipv4_address + "/32"))
    if t.ipv6_address:
        add(ipaddress.IPv6Network(t.ipv6_address + "/128"))
    if s.napt66 and s.napt66.private_egress:
        add(ipaddress.IPv4Network(str(s.napt66.private_egress.outer.ipv4) + "/32"))
    if s.routing_table:
        p.rules = [(socket.AF_INET, s.routing_table), (socket.AF_INET6, s.routing_table)]
    return p


def embed_prefix(pref64: ipaddress.IPv6Network, v4: ipaddress.IPv4Network) -> ipaddress.IPv6Network:
    """The IPv6 prefix covering ``v4`` embedded in ``pref64`` (RFC 6052 §2.2)."""
    from ..addr.rfc6052 import Pref64

    p = Pref64(str(pref64))
    out = p.embed(v4.network_address.packed)
    if out is None:  # pragma: no cover - Pref64 embeds any address
        raise NftError(f"cannot embed {v4} in {pref64}")
    n = pref64.prefixlen
    if n == 96:
        length = 96 + v4.prefixlen
    elif n == 64:
        length = 72 + v4.prefixlen  # the u-octet (bits 64-71) comes first
    else:
        length = n + v4.prefixlen
        if length > 64:
            length += 8  # the address is split around the u-octet
    return ipaddress.IPv6Network((ipaddress.IPv6Address(out), min(length, 128)), strict=False)


def _elements(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _set_names(s: Settings) -> list[str]:
    napt = s.napt66
    if napt is None:
        return []
    return (
        ["inside6", "outer4"]
        + (["private6"] if napt.private_egress else [])
        + (["reachable_host4"] if napt.reachable_host_addresses else [])
    )


def render_reload(old: Settings, new: Settings) -> str:
    """One transaction that turns the applied table for ``old`` into the one for ``new``.

    The table, its base chains (hooks), sets and counters stay; rules and set
    elements are replaced. Deleting and re-creating the table instead loses
    packets: for a moment after the commit, packets still traverse the old
    chains while the old sets' elements are already inactive, so a new flow's
    packet falls through to the ``denied_to_plat`` drop (measured: 3-4 packets
    of a 10,000/s UDP stream per reload). Re-declaring an existing counter,
    set or chain is a no-op in nftables, so the counters keep counting.
    """
    name = table_name(new.tun.name)
    before, after = _set_names(old), _set_names(new)
    lines = [f"flush table inet {name}"]
    lines += [f"flush set inet {name} {x}" for x in before if x in after]
    lines += [f"delete set inet {name} {x}" for x in before if x not in after]
    assert old.napt66 is not None and new.napt66 is not None
    if old.napt66.udp_oneshot_timeout != new.napt66.udp_oneshot_timeout:
        lines.append(f"delete ct timeout inet {name} udp_oneshot")
    return "\n".join(lines) + "\n" + render_plat_table(new)


def render_plat_table(s: Settings) -> str:
    napt = s.napt66
    if napt is None:
        raise NftError("no [napt66] section")
    pref = s.pref64()
    if pref is None:
        raise NftError(f"{s.source}: [translator] pool6: the PLAT needs a Pref64")
    tun = s.tun.name
    name = table_name(tun)
    outers4 = [str(o.ipv4) for o in napt.outer]
    if napt.private_egress:
        outers4.append(str(napt.private_egress.outer.ipv4))
    if s.ha is not None:  # a peer's bindings arrive by conntrackd; its traffic may follow
        outers4 += [str(o.ipv4) for o in s.ha.peer_outer()]
    # [ha]: NAPT66 flows carry a ct mark, the only entries conntrackd replicates
    mark = f" ct mark set {HA_CT_MARK:#x}" if s.ha is not None else ""
    # ... and conntrackd 1.4.7 cannot filter on marks or ports: the one-shot flows
    # raise no conntrack events, so conntrackd never sees (nor replicates) them
    quiet = " ct event set 0x0" if s.ha is not None else ""
    own4 = s.translator.ipv4_address
    own6 = s.translator.ipv6_address
    lines = [
        f"table inet {name} {{",
        "    # v6mostly PLAT: NAPT66 + stateful filter in front of the stateless translator",
        f"    set inside6 {{ type ipv6_addr; flags interval; elements = {_elements([str(p) for p in napt.inside])}; }}",
        f"    set outer4 {{ type ipv4_addr; elements = {_elements(outers4)}; }}",
    ]
    private6: list[str] = []
    if napt.private_egress:
        private6 = [str(embed_prefix(pref, d)) for d in napt.private_egress.destinations]
        lines.append(
            f"    set private6 {{ type ipv6_addr; flags interval; elements = {_elements(private6)}; }}"
        )
    t = napt.udp_oneshot_timeout
    lines += [
        f"    ct timeout udp_oneshot {{ protocol udp; l3proto ip6; policy = {{ unreplied : {t}, replied : {t} }}; }}",
    ]
    lines += [f"    counter {c} {{ }}" for c in COUNTERS]
    reach = [
        str(a.network_address) if a.prefixlen == 32 else str(a)
        for a in napt.reachable_host_addresses
    ]
    if reach:
        lines.append(
            f"    set reachable_host4 {{ type ipv4_addr; flags interval; elements = {_elements(reach)}; }}"
        )
    lines += [
        "",
        "    chain raw_prerouting {",
        "        type filter hook prerouting priority raw; policy accept;",
        "        # the IPv4 side of the translator is stateless: keep it out of conntrack",
        "        # (addresses before interface names: an IPv6 packet stops at the first match)",
        "        ip daddr @outer4 notrack",
        f'        ip saddr @outer4 iifname "{tun}" notrack',
    ]
    if own4:
        lines.append(f'        ip saddr {own4} iifname "{tun}" notrack')
    lines += [
        "    }",
        "",
        "    # what comes out of the translator is checked before routing, so that a",
        "    # packet with no route (an inbound flow to an outer address) is counted too",
        "    chain prerouting {",
        "        type filter hook prerouting priority filter; policy accept;",
        f'        iifname "{tun}" jump from_plat',
        "    }",
        "",
        "    chain forward {",
        "        type filter hook forward priority filter; policy accept;",
        f'        oifname "{tun}" jump to_plat',
        "    }",
        "",
        "    # translated traffic to this host's own addresses (Pref64::192.0.2.1 ...)",
        "    chain input {",
        "        type filter hook input priority filter; policy accept;",
        f'        iifname "{tun}" jump to_host',
        "    }",
        "",
        "    chain to_host {",
        "        # the host's own IPv6 flows through the PLAT: replies come back this way",
        "        meta nfproto ipv6 ct state established,related accept",
    ]
    if reach:
        lines.append("        ip daddr @reachable_host4 accept")
    lines += [
        '        counter name "denied_to_host" drop',
        "    }",
        "",
        "    chain to_plat {",
        "        ct state established,related accept",
    ]
    if napt.udp_oneshot_ports:
        ports = ", ".join(str(p) for p in napt.udp_oneshot_ports)
        lines.append(
            f"        ip6 saddr @inside6 ip6 daddr {pref} udp dport {{ {ports} }} ct state new "
            f'ct timeout set "udp_oneshot"{quiet} accept'
        )
    lines += [
        f"        ip6 saddr @inside6 ip6 daddr {pref} ct state new{mark} accept",
        "        # from outside, IPv4 may reach only the outer addresses",
        "        ip daddr @outer4 accept",
        '        meta nfproto ipv4 counter name "denied_ipv4_not_outer" drop',
        '        counter name "denied_to_plat" drop',
        "    }",
        "",
        "    chain from_plat {",
        "        meta nfproto ipv6 ct state established,related accept",
        "        ip saddr @outer4 accept",
    ]
    if own4:
        lines.append(f"        ip saddr {own4} accept")
    if own6:
        lines.append(f"        ip6 saddr {own6} meta l4proto ipv6-icmp accept")
    lines += [
        "        # a flow can be opened only from inside",
        '        counter name "denied_from_plat" drop',
        "    }",
        "",
        "    chain postrouting {",
        "        type nat hook postrouting priority srcnat; policy accept;",
    ]
    pr = f"{napt.port_min}-{napt.port_max}"
    if napt.private_egress:
        o6 = napt.private_egress.outer.ipv6
        lines += [
            f'        oifname "{tun}" ip6 saddr @inside6 ip6 daddr @private6 meta l4proto {{ tcp, udp }} snat ip6 to [{o6}]:{pr}',
            f'        oifname "{tun}" ip6 saddr @inside6 ip6 daddr @private6 snat ip6 to {o6}',
        ]
    n = len(napt.outer)
    for i, o in enumerate(napt.outer):
        sel = f" jhash ip6 saddr mod {n} == {i}" if n > 1 else ""
        lines += [
            f'        oifname "{tun}" ip6 saddr @inside6{sel} meta l4proto {{ tcp, udp }} snat ip6 to [{o.ipv6}]:{pr}',
            f'        oifname "{tun}" ip6 saddr @inside6{sel} snat ip6 to {o.ipv6}',
        ]
    lines += ["    }", "}", ""]
    return "\n".join(lines)
