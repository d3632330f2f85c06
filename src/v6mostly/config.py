"""TOML configuration of ``v6mostly siit`` and ``v6mostly plat``.

Every error names the file, the key, the value and the rule, in one line::

    plat.toml: [translator] pool6 = "64:ff9b::/96": ... violates RFC 6052 §3.1

Example (``v6mostly plat``)::

    [tun]
    name = "nat64"          # created at start, removed at exit
    mtu = 1500
    queues = 0              # 0 = one worker per CPU
    offload = true          # IFF_VNET_HDR + TSO/USO; falls back to plain packets
    txqueuelen = 10000
    rps = "auto"            # spread the kernel's share of each packet over all CPUs:
                            # "auto" while bulk (GSO) traffic flows, or true / false
    poll_us = 100           # after a packet, poll the queue this long before sleeping
    poll_cpu = 5            # ... spending at most this % of a CPU per worker on it
    fastpath = true         # IPv4/IPv6 TCP/UDP into the TUN translated by tc in the kernel
                            # (linux/fastpath*.py); the workers do all the rest
    udp_gro_forwarding = true   # rx-udp-gro-forwarding on this namespace's interfaces:
                            # a UDP burst of one flow is translated once (linux/gro.py)

    [translator]
    pool6 = "2001:db8:64::/96"
    ipv4_address = "198.51.100.254"    # source of the translator's own ICMPv4 errors
    ipv6_address = "2001:db8:46::fffe" # source of its own ICMPv6 errors
    pool6791 = ["198.51.100.253"]
    eam = [{ ipv6 = "2001:db8:46::10/128", ipv4 = "198.51.100.10/32" }]
    decrement_ttl = false   # true: TAYGA/Jool behaviour (the box shows as two hops)
    icmp_ratelimit_ms = 1000    # per source of the offending packets (0 = off)
    icmp_ratelimit_burst = 6
    icmp_msgs_per_sec = 1000    # all ICMP errors of the translator (0 = off),
    icmp_msgs_burst = 50        # shared out among the workers

    [napt66]
    inside = ["2001:db8:1::/64"]       # client prefixes that may open flows
    outer = [{ ipv6 = "2001:db8:46::1", ipv4 = "198.51.100.1" }]
    udp_oneshot_ports = [53, 123]
    udp_oneshot_timeout = 10
    # private_egress = { ipv6 = "2001:db8:46::2", ipv4 = "198.51.100.2",
    #                    destinations = ["10.0.0.0/8"] }
    reachable_host_addresses = []  # this host's IPv4 addresses clients may reach
                                   # through the Pref64 (e.g. ["192.0.2.1"])

    [routing]
    table = 0               # policy routing table for traffic leaving the TUN (0 = none)

    [metrics]
    listen = "127.0.0.1:9464"   # "" = no endpoint

The design: docs/architecture.md §4.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .addr.rfc6052 import parse_prefix, validate_pref64
from .config_reader import (
    Reader,
    check_ifname,
    inline_keys,
    parse_listen,
    parse_metrics,
    read_toml,
)
from .config_reader import address as _address
from .config_reader import network as _network
from .config_reader import section as _section
from .errors import AddressError, ConfigError
from .siit.ratelimit import (
    DEFAULT_BURST,
    DEFAULT_GLOBAL_BURST,
    DEFAULT_INTERVAL_MS,
    DEFAULT_RATE,
)
from .siit.translator import Translator, TranslatorConfig

if TYPE_CHECKING:
    from .ha.config import HaSettings

_Reader = Reader


@dataclass
class TunSettings:
    name: str = "nat64"
    mtu: int = 1500
    queues: int = 0
    offload: bool = True
    txqueuelen: int = 10000
    #: Receive Packet Steering on the TUN's queues: the kernel's work for the
    #: packets the workers write runs on other CPUs too. "auto": while bulk
    #: (GSO) traffic flows (services/rps.py); "on"; "off".
    rps: str = "auto"
    #: The adaptive poll of the C loop (services/worker_loops.Poll): microseconds after
    #: a packet, and the most of a CPU (percent, per worker) it may spend.
    poll_us: int = 100
    poll_cpu: int = 5
    #: The in-kernel fast path (linux/fastpath.py, fastpath6.py): IPv4 and IPv6 TCP and UDP
    #: routed into the TUN are translated by tc programs on its egress, not by the workers.
    fastpath: bool = True
    #: ``rx-udp-gro-forwarding`` turned on (and back off at stop) on the namespace's
    #: other interfaces (linux/gro.py): forwarded UDP of one flow is merged by GRO.
    udp_gro_forwarding: bool = True

    def queue_count(self) -> int:
        return self.queues or (os.cpu_count() or 1)


@dataclass
class Outer:
    ipv6: ipaddress.IPv6Address
    ipv4: ipaddress.IPv4Address


@dataclass
class PrivateEgress:
    outer: Outer
    destinations: list[ipaddress.IPv4Network]


@dataclass
class Napt66Settings:
    inside: list[ipaddress.IPv6Network] = field(default_factory=list)
    outer: list[Outer] = field(default_factory=list)
    udp_oneshot_ports: list[int] = field(default_factory=lambda: [53, 123])
    udp_oneshot_timeout: int = 10
    private_egress: PrivateEgress | None = None
    port_min: int = 1024
    port_max: int = 65535
    #: This host's own IPv4 addresses that clients may reach through the Pref64;
    #: translated traffic to any other local address is dropped (and counted).
    reachable_host_addresses: list[ipaddress.IPv4Network] = field(default_factory=list)


@dataclass
class Settings:
    source: str
    tun: TunSettings
    translator: TranslatorConfig
    napt66: Napt66Settings | None
    routing_table: int = 0
    metrics_listen: str = ""
    manage_routes: bool = True
    #: ``[ha]``: this PLAT in a group behind ECMP (bird2, conntrackd); see v6mostly.ha
    ha: HaSettings | None = None

    def pref64(self) -> ipaddress.IPv6Network | None:
        return ipaddress.IPv6Network(self.translator.pool6) if self.translator.pool6 else None


def parse_translator(r: _Reader) -> TranslatorConfig:
    pool6 = r.get("pool6", str, None)
    if pool6 is not None:
        try:
            net = parse_prefix(pool6)
            validate_pref64(net)
        except AddressError as e:
            raise r.fail("pool6", pool6, str(e)) from None
        pool6 = str(net)
    eam: list[tuple[str, str]] = []
    for i, item in enumerate(r.get("eam", list, [])):
        k = f"eam[{i}]"
        if isinstance(item, dict):
            inline_keys(r, k, item, ("ipv6", "ipv4"))
        if not isinstance(item, dict) or set(item) != {"ipv6", "ipv4"}:
            raise r.fail(k, item, 'expected { ipv6 = "PREFIX", ipv4 = "PREFIX" }')
        eam.append(
            (_network(r, k + ".ipv6", item["ipv6"], 6), _network(r, k + ".ipv4", item["ipv4"], 4))
        )
    pool6791 = r.get("pool6791", list, [])
    p4: list[str] = []
    p6: list[str] = []
    for i, item in enumerate(pool6791):
        k = f"pool6791[{i}]"
        if not isinstance(item, str):
            raise r.fail(k, item, "expected an address or prefix string")
        try:
            n = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise r.fail(k, item, "expected an IPv4 or IPv6 address or prefix") from None
        (p4 if n.version == 4 else p6).append(str(n))
    cfg = TranslatorConfig(
        pool6=pool6,
        eam=eam,
        pool6791_v4=p4,
        pool6791_v6=p6,
        ipv4_address=r.address("ipv4_address", 4),
        ipv6_address=r.address("ipv6_address", 6),
        lowest_ipv6_mtu=r.integer("lowest_ipv6_mtu", 1280, 1280, 65535),
        amend_udp_checksum_zero=r.get("amend_udp_checksum_zero", bool, True),
        reset_traffic_class=r.get("reset_traffic_class", bool, False),
        hairpinning=r.get("hairpinning", bool, True),
        decrement_ttl=r.get("decrement_ttl", bool, False),
        icmp_ratelimit_ms=r.integer("icmp_ratelimit_ms", DEFAULT_INTERVAL_MS, 0, 3_600_000),
        icmp_ratelimit_burst=r.integer("icmp_ratelimit_burst", DEFAULT_BURST, 1, 1_000_000),
        icmp_msgs_per_sec=r.integer("icmp_msgs_per_sec", DEFAULT_RATE, 0, 10_000_000),
        icmp_msgs_burst=r.integer("icmp_msgs_burst", DEFAULT_GLOBAL_BURST, 1, 10_000_000),
    )
    r.finish()
    try:
        Translator(cfg)
    except ConfigError as e:
        raise ConfigError(f"{r.source}: [translator] {e}") from None
    return cfg


def _rps(r: _Reader) -> str:
    v = r.table.get("rps", "auto")
    r.used.add("rps")
    if v is True or v is False:
        return "on" if v else "off"
    if v != "auto":
        raise r.fail("rps", v, 'expected true, false or "auto"')
    return "auto"


def parse_tun(r: _Reader) -> TunSettings:
    name = check_ifname(r, "name", r.get("name", str, "nat64"))
    t = TunSettings(
        name=name,
        mtu=r.integer("mtu", 1500, 1280, 65535),
        queues=r.integer("queues", 0, 0, 256),
        offload=r.get("offload", bool, True),
        txqueuelen=r.integer("txqueuelen", 10000, 1, 1_000_000),
        rps=_rps(r),
        poll_us=r.integer("poll_us", 100, 0, 10_000),
        poll_cpu=r.integer("poll_cpu", 5, 0, 100),
        fastpath=r.get("fastpath", bool, True),
        udp_gro_forwarding=r.get("udp_gro_forwarding", bool, True),
    )
    r.finish()
    return t


def _outer(r: _Reader, key: str, item: Any, allowed: tuple[str, ...] = ("ipv6", "ipv4")) -> Outer:
    if isinstance(item, dict):
        inline_keys(r, key, item, allowed)
    if not isinstance(item, dict) or not {"ipv6", "ipv4"} <= set(item):
        raise r.fail(key, item, 'expected { ipv6 = "ADDR", ipv4 = "ADDR" }')
    return Outer(
        ipaddress.IPv6Address(_address(r, key + ".ipv6", item["ipv6"], 6)),
        ipaddress.IPv4Address(_address(r, key + ".ipv4", item["ipv4"], 4)),
    )


def parse_napt66(r: _Reader) -> Napt66Settings:
    inside = [
        ipaddress.IPv6Network(_network(r, f"inside[{i}]", x, 6))
        for i, x in enumerate(r.get("inside", list, []))
    ]
    if not inside:
        raise r.fail("inside", [], "expected at least one client IPv6 prefix")
    outer = [_outer(r, f"outer[{i}]", x) for i, x in enumerate(r.get("outer", list, []))]
    if not outer:
        raise r.fail("outer", [], "expected at least one { ipv6, ipv4 } outer address pair")
    ports = r.get("udp_oneshot_ports", list, [53, 123])
    for i, p in enumerate(ports):
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 65535:
            raise r.fail(f"udp_oneshot_ports[{i}]", p, "expected a port from 1 to 65535")
    pe = r.get("private_egress", dict, None)
    private = None
    if pe is not None:
        dests = pe.get("destinations", [])
        if not isinstance(dests, list) or not dests:
            raise r.fail("private_egress.destinations", dests, "expected a list of IPv4 prefixes")
        private = PrivateEgress(
            _outer(r, "private_egress", pe, ("ipv6", "ipv4", "destinations")),
            [
                ipaddress.IPv4Network(_network(r, f"private_egress.destinations[{i}]", d, 4))
                for i, d in enumerate(dests)
            ],
        )
    reachable = []
    for i, a in enumerate(r.get("reachable_host_addresses", list, [])):
        k = f"reachable_host_addresses[{i}]"
        if not isinstance(a, str):
            raise r.fail(k, a, "expected an IPv4 address or prefix string")
        reachable.append(ipaddress.IPv4Network(_network(r, k, a, 4)))
    s = Napt66Settings(
        reachable_host_addresses=reachable,
        inside=inside,
        outer=outer,
        udp_oneshot_ports=list(ports),
        udp_oneshot_timeout=r.integer("udp_oneshot_timeout", 10, 1, 3600),
        private_egress=private,
        port_min=r.integer("port_min", 1024, 1, 65535),
        port_max=r.integer("port_max", 65535, 1, 65535),
    )
    if s.port_min > s.port_max:
        raise r.fail("port_min", s.port_min, f"expected at most port_max ({s.port_max})")
    r.finish()
    return s


def check_outer_mapping(source: str, s: Napt66Settings, t: TranslatorConfig) -> None:
    """Each outer IPv6 address must translate to its IPv4 partner (an EAM entry)."""
    xl = Translator(t)
    pairs = list(s.outer) + ([s.private_egress.outer] if s.private_egress else [])
    for i, o in enumerate(pairs):
        got = xl.v6_to_v4_addr(o.ipv6.packed)
        if got != o.ipv4.packed:
            shown = ipaddress.IPv4Address(got) if got else "nothing"
            raise ConfigError(
                f'{source}: [napt66] outer[{i}] = {{ ipv6 = "{o.ipv6}", ipv4 = "{o.ipv4}" }}: '
                f"the translator maps {o.ipv6} to {shown}; add an [translator] eam entry "
                f'{{ ipv6 = "{o.ipv6}/128", ipv4 = "{o.ipv4}/32" }}'
            )


def check_inside(source: str, s: Napt66Settings, t: TranslatorConfig) -> None:
    """Client prefixes and the Pref64 are disjoint: an address in the Pref64 is an
    IPv4 destination (RFC 6052 §2.2), never a client."""
    if t.pool6 is None:
        return
    pool6 = ipaddress.IPv6Network(t.pool6)
    r = _Reader(source, "napt66", {})
    for i, n in enumerate(s.inside):
        if n.overlaps(pool6):
            raise r.fail(
                f"inside[{i}]",
                str(n),
                f"overlaps the Pref64 (pool6 {pool6}): addresses in it are translated IPv4 "
                "destinations (RFC 6052 §2.2), not clients",
            )


def check_private_egress(source: str, s: Napt66Settings, t: TranslatorConfig) -> None:
    """Private destinations must be expressible in the Pref64 (RFC 6052 §3.1)."""
    if s.private_egress is None or t.pool6 is None:
        return
    from .addr.rfc6052 import Pref64

    p = Pref64(t.pool6)
    for i, d in enumerate(s.private_egress.destinations):
        if p.embed(d.network_address.packed) is None:
            raise ConfigError(
                f'{source}: [napt66] private_egress.destinations[{i}] = "{d}": not reachable '
                f"through pool6 {t.pool6}: the Well-Known Prefix must not carry non-global "
                "IPv4 addresses (RFC 6052 §3.1); use a network-specific Pref64"
            )


def check_reachable_host(source: str, s: Napt66Settings, t: TranslatorConfig) -> None:
    """A listed host address must be expressible in the Pref64 (RFC 6052 §3.1)."""
    if t.pool6 is None:
        return
    from .addr.rfc6052 import Pref64

    p = Pref64(t.pool6)
    for i, a in enumerate(s.reachable_host_addresses):
        if p.embed(a.network_address.packed) is None:
            raise ConfigError(
                f'{source}: [napt66] reachable_host_addresses[{i}] = "{a}": not reachable '
                f"through pool6 {t.pool6}: the Well-Known Prefix must not carry non-global "
                "IPv4 addresses (RFC 6052 §3.1); use a network-specific Pref64"
            )


def load(path: str, plat: bool) -> Settings:
    """Read and validate a ``siit`` (``plat=False``) or ``plat`` configuration file."""
    data = read_toml(path)
    site = data.pop("site", None)
    if site is not None:
        # The Pref64 is written once, in the site configuration (v6mostly router).
        if not isinstance(site, str):
            raise ConfigError(f"{path}: site = {site!r}: expected the path of a site.toml")
        from .site_config import load_site

        here = os.path.dirname(os.path.abspath(path))
        spath = site if os.path.isabs(site) else os.path.join(here, site)
        pref = str(load_site(spath, check_lease_db=False).pref64)
        tr_table = data.setdefault("translator", {})
        if isinstance(tr_table, dict):
            if "pool6" in tr_table and str(tr_table["pool6"]) != pref:
                raise ConfigError(
                    f'{path}: [translator] pool6 = "{tr_table["pool6"]}": differs from the '
                    f"site's pref64 {pref} ({spath}); write it once, in the site file"
                )
            tr_table["pool6"] = pref
    known = {"tun", "translator", "metrics", "routing"} | ({"napt66", "ha"} if plat else set())
    for k in data:
        if k not in known:
            raise ConfigError(f"{path}: [{k}]: unknown section (expected one of {sorted(known)})")
    tun = parse_tun(_section(path, data, "tun"))
    tr = _section(path, data, "translator")
    translator = parse_translator(tr)
    napt = parse_napt66(_section(path, data, "napt66")) if plat else None
    if napt is not None:
        check_inside(path, napt, translator)
        check_outer_mapping(path, napt, translator)
        check_private_egress(path, napt, translator)
        check_reachable_host(path, napt, translator)
        # Every client of the site reaches the translator from an outer address: the
        # per-destination ICMP error bucket must not be one for the whole site.
        translator = dataclasses.replace(
            translator, icmp_ratelimit_shared=tuple(str(o.ipv6) for o in napt.outer)
        )
    ha = None
    if napt is not None and "ha" in data:
        ha, translator = _parse_ha(path, data["ha"], napt, translator)
    rt = _section(path, data, "routing")
    table = rt.integer("table", 0, 0, 0xFFFFFFFF)
    manage = rt.get("routes", bool, plat)
    rt.finish()
    listen = parse_metrics(path, data)
    return Settings(path, tun, translator, napt, table, listen, manage, ha)


def _parse_ha(
    path: str, table: Any, napt: Napt66Settings, t: TranslatorConfig
) -> tuple[HaSettings, TranslatorConfig]:
    """[ha]; every peer's outer pair becomes an EAM entry too: any PLAT of the group
    translates for any outer address (its NAPT66 bindings arrive by conntrackd)."""
    from .ha.config import OuterPair, parse_ha

    if t.pool6 is None:
        raise ConfigError(f"{path}: [ha]: needs the Pref64 ([translator] pool6 or site = ...)")
    ha = parse_ha(
        path,
        table,
        own_outer=tuple(OuterPair(o.ipv6, o.ipv4) for o in napt.outer),
        pref64=ipaddress.IPv6Network(t.pool6),
        inside=tuple(napt.inside),
        udp_oneshot_ports=tuple(napt.udp_oneshot_ports),
    )
    eam = list(t.eam)
    have6 = {ipaddress.IPv6Network(a) for a, _ in eam}
    for o in ha.peer_outer():
        if ipaddress.IPv6Network(f"{o.ipv6}/128") not in have6:
            eam.append((f"{o.ipv6}/128", f"{o.ipv4}/32"))
    shared = (*t.icmp_ratelimit_shared, *(str(o.ipv6) for o in ha.peer_outer()))
    return ha, dataclasses.replace(t, eam=eam, icmp_ratelimit_shared=shared)


# -- v6mostly clat ---------------------------------------------------------------------


@dataclass
class ClatSettings:
    """``v6mostly clat``: the client side of 464XLAT (RFC 6877) on one uplink.

    Example (``clat.toml``)::

        [clat]
        interface = "wlan0"
        tun = "clat0"                # created when active, removed when idle or at exit
        # pref64 = "64:ff9b::/96"   # pin it; otherwise RA PREF64 (RFC 8781), then RFC 7050
        # address = "2001:db8:1::c1a7"  # the CLAT's IPv6 address; default: a stable,
        #                                 # checksum-neutral IID in the uplink's SLAAC /64
        # dns = "2001:db8:1::53"     # resolver for ipv4only.arpa (default: /etc/resolv.conf)
        # queues = 0                 # translator workers; 0 = one per CPU (at most 4)
        # offload = true             # GSO super-packets both ways (needs tc BPF); false:
        #                            # one packet at a time, IPv6 out through a raw socket
        # poll_us = 100              # adaptive poll after a packet (as [tun] of plat.toml)
        # poll_cpu = 5               # at most this % of a CPU per worker
        # fastpath = true            # TCP/UDP translated by tc in the kernel both ways
        #                            # (services/clat_fast.py); the workers do the rest

        [metrics]
        listen = "127.0.0.1:9465"
    """

    source: str
    interface: str
    tun: str = "clat0"
    pref64: ipaddress.IPv6Network | None = None
    address: ipaddress.IPv6Address | None = None
    dns: str | None = None
    metrics_listen: str = ""
    state_dir: str = "/run/v6mostly"
    queues: int = 0
    offload: bool = True
    poll_us: int = 100
    poll_cpu: int = 5
    fastpath: bool = True

    @property
    def worker_count(self) -> int:
        return self.queues or min(4, os.cpu_count() or 1)


def parse_clat(r: _Reader, source: str, metrics_listen: str) -> ClatSettings:
    iface = check_ifname(r, "interface", r.get("interface", str, ""))
    tun = check_ifname(r, "tun", r.get("tun", str, "clat0"))
    pref = r.get("pref64", str, None)
    pref64 = None
    if pref is not None:
        try:
            pref64 = parse_prefix(pref)
            validate_pref64(pref64)
        except AddressError as e:
            raise r.fail("pref64", pref, str(e)) from None
    addr = r.address("address", 6)
    dns = r.get("dns", str, None)
    if dns is not None:
        try:
            dns = str(ipaddress.ip_address(dns))
        except ValueError:
            raise r.fail("dns", dns, "expected the IPv4 or IPv6 address of a resolver") from None
    queues = r.integer("queues", 0, 0, 64)
    offload = r.get("offload", bool, True)
    poll_us = r.integer("poll_us", 100, 0, 10_000)
    poll_cpu = r.integer("poll_cpu", 5, 0, 100)
    fastpath = r.get("fastpath", bool, True)
    r.finish()
    return ClatSettings(
        source,
        iface,
        tun,
        pref64,
        ipaddress.IPv6Address(addr) if addr else None,
        dns,
        metrics_listen,
        queues=queues,
        offload=offload,
        poll_us=poll_us,
        poll_cpu=poll_cpu,
        fastpath=fastpath,
    )


def load_clat(path: str) -> ClatSettings:
    """Read and validate a ``clat.toml``."""
    data = read_toml(path)
    for k in data:
        if k not in ("clat", "metrics"):
            raise ConfigError(
                f"{path}: [{k}]: unknown section (expected one of ['clat', 'metrics'])"
            )
    listen = parse_metrics(path, data)
    return parse_clat(_section(path, data, "clat"), path, listen)


def clat_from_flags(
    interface: str,
    tun: str,
    pref64: str | None,
    address: str | None,
    dns: str | None,
    metrics: str | None,
) -> ClatSettings:
    """The same validation for command-line flags (errors name the flag)."""
    table: dict[str, Any] = {"interface": interface, "tun": tun}
    for k, v in (("pref64", pref64), ("address", address), ("dns", dns)):
        if v is not None:
            table[k] = v
    listen = ""
    if metrics:
        parse_listen(_Reader("--metrics", "metrics", {}), metrics)
        listen = metrics
    return parse_clat(_Reader("command line", "clat", table), "<command line>", listen)
