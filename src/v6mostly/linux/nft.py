"""The PLAT's nftables table: NAPT66, stateful filtering, notrack, conntrack timeouts.

``services.plat_rules.render_plat_table`` renders it (settings in, ruleset text
out, so ``--dry-run`` and the tests see exactly what is applied); this module runs
``nft`` (``apply``/``delete``/``exists``, counters) and renders the CLAT's leak
table. The table is ours alone (``inet v6mostly_<tun>``) and nothing else in the
ruleset is touched.

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

import contextlib
import json
import subprocess
from dataclasses import dataclass

from ..errors import V6mostlyError


class NftError(V6mostlyError):
    pass


def table_name(tun: str) -> str:
    return "v6mostly_" + tun.replace("-", "_").replace(".", "_")


#: The named counters of the table (exported as metrics).
COUNTERS = ("denied_to_plat", "denied_from_plat", "denied_ipv4_not_outer", "denied_to_host")


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
    return {k: p for k, (p, _b) in table_counters(table_name(tun)).items()}


def table_counters(table: str) -> dict[str, tuple[int, int]]:
    """``{name: (packets, bytes)}`` of the named counters of ``inet TABLE`` ({} if absent)."""
    try:
        r = _nft(["-j", "list", "counters", "table", "inet", table])
    except NftError:
        return {}
    if r.returncode != 0:
        return {}
    try:
        data = json.loads(r.stdout)
    except ValueError:
        return {}
    out: dict[str, tuple[int, int]] = {}
    for item in data.get("nftables", []):
        c = item.get("counter")
        if c and "name" in c:
            out[str(c["name"])] = (int(c.get("packets", 0)), int(c.get("bytes", 0)))
    return out


def delete_table(table: str) -> None:
    """Remove ``inet TABLE`` if it exists (never raises)."""
    with contextlib.suppress(NftError):
        _nft(["delete", "table", "inet", table])


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
