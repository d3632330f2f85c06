"""The site's traffic split, counted where the router forwards for its LAN.

The RubyKaigi report's dashboard ("Downstream Inbound Traffic per Protocol")
shows native IPv6, IPv4 via NAT64 and native IPv4 side by side. The router sees
all three on its served (client) interfaces, so it keeps one nftables table,
``inet v6mostly_router_split``, with a counter per path and direction in a
forward chain (counters only: the chain accepts everything and decides nothing):

* ``nat64_out`` / ``nat64_in``: IPv6 to / from the Pref64 (the NAT64 path, in
  IPv6 bytes as they cross the LAN);
* ``native6_out`` / ``native6_in``: all other IPv6;
* ``native4_out`` / ``native4_in``: IPv4 (legacy clients, NAT44 or routed).

Exported as ``v6mostly_site_traffic_{bytes,packets}_total{path, direction}``.
Needs CAP_NET_ADMIN; without it (or without nftables) the router logs once and
runs on without the split. The table is removed at stop; when the served interfaces
or the Pref64 change (SIGHUP) its rules are replaced and its counters kept.
"""

from __future__ import annotations

import ipaddress
import logging

from ..linux import nft

log = logging.getLogger("v6mostly.router")

TABLE = "v6mostly_router_split"
#: counter name -> (path label, direction label)
PATHS = {
    "native6_out": ("native_ipv6", "out"),
    "native6_in": ("native_ipv6", "in"),
    "nat64_out": ("ipv4_via_nat64", "out"),
    "nat64_in": ("ipv4_via_nat64", "in"),
    "native4_out": ("native_ipv4", "out"),
    "native4_in": ("native_ipv4", "in"),
}


#: The table's chains (flushed and rewritten together on a change).
CHAINS = ("forward", "lan_out", "lan_in")


def render(interfaces: list[str], pref64: ipaddress.IPv6Network) -> str:
    lans = "{ " + ", ".join(f'"{i}"' for i in interfaces) + " }"
    counters = "\n".join(f"    counter {c} {{ }}" for c in PATHS)
    return f"""table inet {TABLE} {{
{counters}

    # Each packet forwarded reads its interface names twice (in, out); the chains
    # below decide the path with one or two comparisons, and count once per LAN crossing.
    chain forward {{
        type filter hook forward priority filter - 2; policy accept;
        iifname {lans} jump lan_out
        oifname {lans} jump lan_in
    }}

    chain lan_out {{
        meta nfproto ipv4 counter name "native4_out" return
        ip6 daddr {pref64} counter name "nat64_out" return
        counter name "native6_out"
    }}

    chain lan_in {{
        meta nfproto ipv4 counter name "native4_in" return
        ip6 saddr {pref64} counter name "nat64_in" return
        counter name "native6_in"
    }}
}}
"""


class TrafficSplit:
    """The table's life: apply, re-apply on change, read, remove."""

    def __init__(self) -> None:
        self.active = False
        self.applied: tuple[tuple[str, ...], str] | None = None

    def apply(self, interfaces: list[str], pref64: ipaddress.IPv6Network) -> None:
        key = (tuple(interfaces), str(pref64))
        if not interfaces or key == self.applied:
            return
        text = render(interfaces, pref64)
        if self.applied is not None:
            # One transaction: the rules are replaced, the counters keep counting.
            text = "".join(f"flush chain inet {TABLE} {c}\n" for c in CHAINS) + text
        try:
            nft.apply(text)
        except nft.NftError as e:
            log.warning("traffic split not counted (needs CAP_NET_ADMIN and nftables): %s", e)
            self.active = False
            return
        self.applied = key
        self.active = True

    def read(self) -> dict[str, tuple[int, int]]:
        return nft.table_counters(TABLE) if self.active else {}

    def remove(self) -> None:
        if self.applied is not None:
            nft.delete_table(TABLE)
        self.applied = None
        self.active = False
