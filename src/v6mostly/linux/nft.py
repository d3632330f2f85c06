"""The PLAT's nftables table: NAPT66, stateful filtering, notrack, conntrack timeouts.

``render_plat_table`` is pure (settings in, ruleset text out) so ``--dry-run``
and the tests see exactly what is applied. ``apply``/``delete``/``exists`` run
``nft``; the table is ours alone (``inet v6mostly_<tun>``) and nothing else in
the ruleset is touched.

The design is the RubyKaigi NOC's: client IPv6 sources are NAPT'd (SNAT with
port mapping, RFC 6146-like behaviour built from conntrack) to the translator's
"outer" IPv6 addresses, which the stateless translator maps 1:1 (EAM) to the
IPv4 outer addresses. The IPv4 side is stateless, hence ``notrack``.

Clients reach IPv4 addresses through the Pref64, and so also the PLAT host's
own (``Pref64::192.0.2.1`` is 192.0.2.1, a local address here): translated
traffic that the kernel would deliver locally (input hook, ``iifname`` the TUN)
is dropped and counted (``denied_to_host``) unless its destination is listed in
``[napt66] reachable_host_addresses``. The host's own IPv6 flows through its
NAT64 (replies de-NATed to a local address) still pass: they are conntrack
``established``, while the translated IPv4 side is untracked.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass

from ..config import Settings
from ..errors import V6mostlyError


class NftError(V6mostlyError):
    pass


def table_name(tun: str) -> str:
    return "v6mostly_" + tun.replace("-", "_").replace(".", "_")


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


#: The named counters of the table (exported as metrics).
COUNTERS = ("denied_to_plat", "denied_from_plat", "denied_ipv4_not_outer", "denied_to_host")


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
        "        ip daddr @outer4 notrack",
        f'        iifname "{tun}" ip saddr @outer4 notrack',
    ]
    if own4:
        lines.append(f'        iifname "{tun}" ip saddr {own4} notrack')
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
            'ct timeout set "udp_oneshot" accept'
        )
    lines += [
        f"        ip6 saddr @inside6 ip6 daddr {pref} ct state new accept",
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


#: RFC 7335: the IPv4 Service Continuity Prefix, the CLAT's own IPv4 addresses.
CLAT_V4_NET = "192.0.0.0/29"


def render_clat_table(tun: str) -> str:
    """The CLAT's table: no 192.0.0.0/29 source ever leaves on another interface.

    NetworkManager puts the 192.0.0.x /32 on the uplink itself and Apple devices
    leaked such sources onto venue LANs; here the addresses live on the TUN only,
    and this rule catches (and counts) whatever would leak anyway.
    """
    name = table_name(tun)
    return "\n".join(
        [
            f"table inet {name} {{",
            "    counter leaked_clat_source { }",
            "    chain postrouting {",
            "        type filter hook postrouting priority filter; policy accept;",
            f'        ip saddr {CLAT_V4_NET} oifname != "{tun}" counter name leaked_clat_source drop',
            "    }",
            "}",
            "",
        ]
    )


def read_named_counters(tun: str) -> dict[str, int]:
    """Packets of every named counter in the table of ``tun`` ({} when there is none)."""
    r = _nft(["-j", "list", "counters", "table", "inet", table_name(tun)])
    if r.returncode != 0:
        return {}
    try:
        data = json.loads(r.stdout)
    except ValueError:
        return {}
    out: dict[str, int] = {}
    for item in data.get("nftables", []):
        c = item.get("counter")
        if c and "name" in c:
            out[str(c["name"])] = int(c.get("packets", 0))
    return out


def _nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["nft", *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        raise NftError("nft not found: install the nftables package") from None


def exists(tun: str) -> bool:
    return _nft(["list", "table", "inet", table_name(tun)]).returncode == 0


def apply(text: str) -> None:
    r = _nft(["-f", "-"], text)
    if r.returncode != 0:
        raise NftError("nft refused the ruleset: " + r.stderr.strip().replace("\n", " | "))


def delete(tun: str) -> None:
    _nft(["delete", "table", "inet", table_name(tun)])


@dataclass
class NftCounters:
    denied_to_plat: int = 0
    denied_from_plat: int = 0
    denied_ipv4_not_outer: int = 0
    denied_to_host: int = 0


def read_counters(tun: str) -> NftCounters:
    r = _nft(["-j", "list", "counters", "table", "inet", table_name(tun)])
    out = NftCounters()
    if r.returncode != 0:
        return out
    try:
        data = json.loads(r.stdout)
    except ValueError:
        return out
    for item in data.get("nftables", []):
        c = item.get("counter")
        if c and c.get("name") in COUNTERS:
            setattr(out, c["name"], int(c.get("packets", 0)))
    return out
