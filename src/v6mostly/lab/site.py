"""``lab up --site``: the IPv6-mostly site of the RubyKaigi report, in namespaces.

::

    legacy  eth0 --+                 plat (router node)
    mostly  eth0 --+-- l-NODE ports  lan0 bridge 2001:db8:1::1/64, 192.0.2.1/24
    v6only  eth0 --+                 [v6mostly router: RA + PREF64, DHCPv4 + option 108, DNS64]
                                     [v6mostly plat: NAT64, TUN nat64]
                                     [nft table v6mostly_lab_site: NAT44 + counters]
                                     i4 203.0.113.1/24 ---- inet4 203.0.113.10 (HTTP, DNS)
                                     i6 2001:db8:2::1/64 -- inet6 2001:db8:2::10 (HTTP)

Three clients share one L2 with the router's LAN interface:

* ``legacy`` runs dhcpcd without option 108 in its request: it gets a lease in
  192.0.2.0/24 (RFC 8925 §3.3: the server sends 108 only to clients that ask)
  and IPv4 reaches the Internet through NAT44 (nftables masquerade out of
  ``i4``), next to the NAT64;
* ``mostly`` runs dhcpcd with ``option ipv6_only_preferred``: the server answers
  with option 108, dhcpcd configures no IPv4, and ``v6mostly clat`` takes the
  IPv4 default route (CLAT -> PLAT, RFC 6877);
* ``v6only`` runs no DHCPv4 at all and reaches IPv4-only names through DNS64.

All three get SLAAC addresses, the default route and PREF64 from the router's
RAs and reach ``inet6`` natively. Each DHCP client runs in its own mount
namespace with tmpfs over /run and /var/lib/dhcpcd and no hook script
(``-c /bin/true``), so the host's lease files and resolv.conf are never
touched; each client's resolv.conf is ``/etc/netns/NAME/resolv.conf``.

``plan.plan_lab`` plans this site (names, addresses, files, processes and the
readiness checks between them); ``apply.apply_plan`` builds it.

The traffic split (native IPv6 / IPv4 via NAT64 / native IPv4 via NAT44) comes
from counters the services export: the PLAT's ``v6mostly_translated_bytes``
and the per-family forwarding counters of the lab's own nftables table.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .topology import (
    LAN4_NET,
    LAN_BRIDGE,
    SITE_TABLE,
)

if TYPE_CHECKING:
    from .topology import Lab

INET6_GW = "2001:db8:2::1"
INET6_NET = "2001:db8:2::/64"
#: on every address: the lab's Prometheus (in the plat node) scrapes it over the LAN
CLAT_METRICS = "[::]:9465"
TUN = "nat64"  # the PLAT's TUN (plat_config)

#: dhcpcd.conf of each client that runs DHCPv4 (IPv6 is left to the kernel's SLAAC).
DHCPCD_CONF = {
    "legacy": "noipv6rs\nnoipv6\nnoarp\noption subnet_mask, routers, domain_name_servers\n",
    "mostly": "noipv6rs\nnoipv6\nnoarp\noption subnet_mask, routers, domain_name_servers\n"
    "option ipv6_only_preferred\n",
}

#: dhcpcd in a private mount namespace: tmpfs over /run and its lease directory.
_DHCPCD = (
    "mount -t tmpfs none /run && "
    "{ [ ! -d /var/lib/dhcpcd ] || mount -t tmpfs none /var/lib/dhcpcd; } && "
    'printf "%s" "$1" > /run/dhcpcd.conf && '
    "exec dhcpcd -B -d -4 -f /run/dhcpcd.conf -c /bin/true eth0"
)


def site_nft(tun: str = TUN) -> str:
    """NAT44 for the legacy clients beside the NAT64, and per-family counters of
    what the router forwards for the LAN (the translator's own traffic excluded:
    the PLAT counts that itself)."""
    lan = LAN_BRIDGE
    return f"""table inet {SITE_TABLE} {{
    # v6mostly lab: NAT44 next to the NAT64, and the site's traffic split
    counter native6_out {{ }}
    counter native6_in {{ }}
    counter native4_out {{ }}
    counter native4_in {{ }}
    counter to_nat64 {{ }}
    counter from_nat64 {{ }}

    chain forward {{
        type filter hook forward priority filter - 1; policy accept;
        iifname "{lan}" oifname "{tun}" counter name "to_nat64"
        iifname "{tun}" oifname "{lan}" counter name "from_nat64"
        iifname "{lan}" oifname != "{tun}" meta nfproto ipv6 counter name "native6_out"
        iifname != "{tun}" oifname "{lan}" meta nfproto ipv6 counter name "native6_in"
        iifname "{lan}" meta nfproto ipv4 counter name "native4_out"
        oifname "{lan}" meta nfproto ipv4 counter name "native4_in"
    }}

    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "i4" ip saddr {LAN4_NET} masquerade
    }}
}}
"""


def _start_inet6(lab: Lab) -> None:
    """The IPv6 server's processes, as the lab's plan lists them (``apply.start``
    starts them through here: a seam where a test makes the build fail half way)."""
    assert lab.plan is not None
    for p in lab.plan.processes:
        if p.node == "inet6":
            lab.spawn(p.node, p.name, list(p.argv))


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _http_ok(lab: Lab, node: str, url: str) -> bool:
    r = lab.exec(
        node, ["curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}", url], check=False
    )
    return r.stdout.strip() == "200"


# -- what each client got -------------------------------------------------------------


def clat_state(lab: Lab) -> dict[str, Any]:
    try:
        with open(lab.path("clat/clat-eth0.json")) as f:
            return dict(json.load(f))
    except (OSError, ValueError):
        return {}


def _addrs(lab: Lab, node: str, family: str) -> list[dict[str, Any]]:
    r = lab.exec(node, ["ip", "-j", family, "addr", "show", "dev", "eth0"], check=False)
    try:
        data = json.loads(r.stdout or "[]")
    except ValueError:
        return []
    return [a for link in data for a in link.get("addr_info", [])]


def client_ipv4(lab: Lab, node: str) -> list[str]:
    """IPv4 addresses on the client's LAN interface (a DHCPv4 lease)."""
    return [f"{a['local']}/{a['prefixlen']}" for a in _addrs(lab, node, "-4")]


def client_ipv6(lab: Lab, node: str) -> list[str]:
    """Global IPv6 addresses on the client's LAN interface (SLAAC; the CLAT's own is
    the deprecated /128)."""
    return [
        f"{a['local']}/{a['prefixlen']}"
        for a in _addrs(lab, node, "-6")
        if a.get("scope") == "global"
    ]


def default_route(lab: Lab, node: str, family: str) -> str:
    """The default route (without the word ``default``), or ""."""
    r = lab.exec(node, ["ip", family, "route", "show", "default"], check=False)
    return " ".join(r.stdout.split()).removeprefix("default ")


@dataclass
class ClientReport:
    node: str
    dhcp4: str  # what dhcpcd logged (or "not run")
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    route4: str = ""
    route6: str = ""
    pref64: str = ""


def _dhcp_line(lab: Lab, node: str) -> str:
    if node not in DHCPCD_CONF:
        return "not run (no DHCPv4 client)"
    log = _read(lab.path(f"dhcpcd-{node}.log"))
    for needle in ("IPv6-Only Preferred received", "leased "):
        for line in log.splitlines():
            if needle in line:
                return line.split(": ", 1)[-1].strip() if ": " in line else line.strip()
    return "nothing yet"


def client_report(lab: Lab, node: str, pref64: bool = True) -> ClientReport:
    rep = ClientReport(
        node,
        _dhcp_line(lab, node),
        client_ipv4(lab, node),
        client_ipv6(lab, node),
        default_route(lab, node, "-4"),
        default_route(lab, node, "-6"),
    )
    if pref64:
        r = lab.exec(
            node,
            [sys.executable, "-m", "v6mostly", "pref64", "discover", "--interface", "eth0"],
            check=False,
        )
        rep.pref64 = r.stdout.strip() or r.stderr.strip()
    return rep


# -- the traffic split ---------------------------------------------------------------


def site_counters(lab: Lab) -> dict[str, tuple[int, int]]:
    """The lab table's counters: name -> (packets, bytes)."""
    r = lab.exec("plat", ["nft", "-j", "list", "counters", "table", "inet", SITE_TABLE])
    out: dict[str, tuple[int, int]] = {}
    for obj in json.loads(r.stdout).get("nftables", []):
        c = obj.get("counter")
        if c:
            out[c["name"]] = (int(c["packets"]), int(c["bytes"]))
    return out


@dataclass
class TrafficSplit:
    native6: int  # bytes of IPv6 the router forwarded for the LAN, not through the translator
    nat64: int  # bytes the PLAT translated (both directions, as written)
    nat44: int  # bytes of IPv4 the router forwarded for the LAN (masqueraded out of i4)

    @property
    def total(self) -> int:
        return self.native6 + self.nat64 + self.nat44

    def share(self, part: int) -> float:
        return part / self.total if self.total else 0.0

    def rows(self) -> list[tuple[str, int, float]]:
        return [
            ("native IPv6", self.native6, self.share(self.native6)),
            ("IPv4 via NAT64", self.nat64, self.share(self.nat64)),
            ("native IPv4 via NAT44", self.nat44, self.share(self.nat44)),
        ]


def traffic_split(lab: Lab) -> TrafficSplit:
    c = site_counters(lab)
    m = lab.metrics()
    # the workers' bytes and the in-kernel fast path's (linux/fastpath*.py)
    nat64 = sum(
        v
        for k, v in m.items()
        if k.startswith(("v6mostly_translated_bytes", "v6mostly_fastpath_octets"))
    )
    return TrafficSplit(
        native6=c["native6_out"][1] + c["native6_in"][1],
        nat64=int(nat64),
        nat44=c["native4_out"][1] + c["native4_in"][1],
    )


def in_pref64(addr: str, pref64: str) -> bool:
    try:
        return ipaddress.IPv6Address(addr) in ipaddress.IPv6Network(pref64)
    except ValueError:
        return False
