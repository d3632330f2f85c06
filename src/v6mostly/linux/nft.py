"""The PLAT's nftables table: NAPT66, stateful filtering, notrack, conntrack timeouts.

``render_plat_table`` is pure (settings in, ruleset text out) so ``--dry-run``
and the tests see exactly what is applied. ``apply``/``delete``/``exists`` run
``nft``; the table is ours alone (``inet v6mostly_<tun>``) and nothing else in
the ruleset is touched.

The design is the RubyKaigi NOC's: client IPv6 sources are NAPT'd (SNAT with
port mapping, RFC 6146-like behaviour built from conntrack) to the translator's
"outer" IPv6 addresses, which the stateless translator maps 1:1 (EAM) to the
IPv4 outer addresses. The IPv4 side is stateless, hence ``notrack``.
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
        "    counter denied_to_plat { }",
        "    counter denied_from_plat { }",
        "    counter denied_ipv4_not_outer { }",
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
        if c and hasattr(out, c.get("name", "")):
            setattr(out, c["name"], int(c.get("packets", 0)))
    return out
