"""The site configuration of ``v6mostly router`` (and the Pref64 the PLAT shares).

One file describes the site; the Pref64 is written once, in ``[site]``, and a
``plat.toml`` can take it from there (``site = "site.toml"`` at its top and no
``pool6``). Example::

    [site]
    pref64 = "64:ff9b::/96"

    [[interface]]
    name = "lan0"
    prefixes = ["2001:db8:1::/64"]          # PIO, SLAAC
    rdnss = ["2001:db8:1::1"]
    dnssl = ["example.net"]
    max_interval = 600                      # RA interval (RFC 4861 §6.2.1)

    [interface.dhcp4]
    subnet = "192.0.2.0/24"
    pool = ["192.0.2.100-192.0.2.199"]
    routers = ["192.0.2.1"]
    dns = ["192.0.2.1"]
    v6only = true                           # RFC 8925 option 108 by default here
    v6only_wait = 1800

    [[class]]
    name = "venue-ssid"
    circuit_id = { split = [":", 2, "RubyKaigi 2025"] }
    v6only = true

    [[class]]
    name = "printers"
    mac_prefix = ["00:1b:a9"]
    v6only = false                          # overrides the subnet, both ways

    [dhcp4]
    lease_db = "/var/lib/v6mostly/leases.sqlite"

    [dns]
    listen = ["2001:db8:1::1"]
    allow = ["2001:db8:1::/64", "192.0.2.0/24"]
    upstream = "2001:db8::53"               # absent: everything but ipv4only.arpa is REFUSED

    [metrics]
    listen = "127.0.0.1:9466"

Validation happens here, once, so ``--dry-run`` (the systemd pre-start check)
catches what would otherwise surface at run time; each mistake is one
``ConfigError`` line naming file, section, key, value and rule: unknown keys at
every level (inline tables too), names where addresses belong, domain names
that are not (RFC 1035 §2.3.4), pools holding the router's or server's own
address or overlapping another pool, a subnet described twice, classes that
match everyone, share a name or name a missing subnet, SLAAC prefixes that are
not /64, and a lease database whose directory does not exist.

The design: docs/architecture.md §4.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import dns.exception
import dns.name

from .addr.rfc6052 import parse_prefix, validate_pref64
from .config_reader import Reader as _Reader
from .config_reader import inline_keys, parse_metrics, read_toml
from .config_reader import network as _network
from .config_reader import section as _section
from .dhcp4.policy import MIN_V6ONLY_WAIT, ClientClass, TextMatch
from .errors import AddressError, ConfigError
from .ra.options import PLC_OF_LENGTH, PREF, PREF64_MAX_LIFETIME
from .site_types import (
    Dhcp4Limits as Dhcp4Limits,
)
from .site_types import (
    Dhcp4Subnet as Dhcp4Subnet,
)
from .site_types import (
    DnsConfig as DnsConfig,
)
from .site_types import (
    InterfaceConfig as InterfaceConfig,
)
from .site_types import (
    SiteConfig as SiteConfig,
)


def _list(r: _Reader, key: str, kind: type, default: list[Any] | None = None) -> list[Any]:
    v = r.get(key, list, default if default is not None else [])
    for i, x in enumerate(v):
        if not isinstance(x, kind):
            raise r.fail(
                f"{key}[{i}]", x, f"expected {'a string' if kind is str else kind.__name__}"
            )
    return list(v)


def _v4addr(r: _Reader, key: str, text: Any) -> ipaddress.IPv4Address:
    if not isinstance(text, str):
        raise r.fail(key, text, "expected an IPv4 address")
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise r.fail(key, text, "expected an IPv4 address") from None


def _mac(r: _Reader, key: str, text: Any) -> bytes:
    if not isinstance(text, str):
        raise r.fail(key, text, 'expected a MAC address like "02:00:00:00:00:01"')
    try:
        b = bytes.fromhex(text.replace(":", "").replace("-", ""))
    except ValueError:
        raise r.fail(key, text, 'expected a MAC address like "02:00:00:00:00:01"') from None
    if not 1 <= len(b) <= 16:
        raise r.fail(key, text, "expected 1-16 bytes")
    return b


def domain_name(r: _Reader, key: str, text: str) -> str:
    """A domain name as DHCPv4 option 15/119 (RFC 3397) and the RA DNSSL (RFC 8106
    §5.2) carry it: labels of 1-63 octets, at most 255 octets in all (RFC 1035 §2.3.4)."""
    rule = "expected a domain name"
    if "\\" in text:
        raise r.fail(key, text, f"{rule}: escapes are not supported")
    try:
        n = dns.name.from_text(text)
    except dns.name.EmptyLabel:
        raise r.fail(key, text, f"{rule}: empty label (RFC 1035 §3.1)") from None
    except dns.name.LabelTooLong:
        raise r.fail(key, text, f"{rule}: a label is over 63 octets (RFC 1035 §2.3.4)") from None
    except dns.name.NameTooLong:
        raise r.fail(key, text, f"{rule}: over 255 octets (RFC 1035 §2.3.4)") from None
    except dns.exception.DNSException as e:
        raise r.fail(key, text, f"{rule}: {e}") from None
    if n == dns.name.root:
        raise r.fail(key, text, f"{rule}: the root alone is not a search domain")
    return text


def parse_pref64(r: _Reader, key: str, text: Any) -> ipaddress.IPv6Network:
    if not isinstance(text, str):
        raise r.fail(key, text, "expected a prefix string")
    try:
        net = parse_prefix(text)
        validate_pref64(net)
    except AddressError as e:
        raise r.fail(key, text, str(e)) from None
    if net.prefixlen not in PLC_OF_LENGTH:
        raise r.fail(key, text, "PREF64 (RFC 8781 §4) carries only /32, /40, /48, /56, /64, /96")
    return net


def parse_dhcp4(r: _Reader, name: str, interface: str | None) -> Dhcp4Subnet:
    subnet_text = r.get("subnet", str, None)
    if subnet_text is None:
        raise r.fail("subnet", "", 'required: the IPv4 subnet, e.g. "192.0.2.0/24"')
    subnet = ipaddress.IPv4Network(_network(r, "subnet", subnet_text, 4))
    routers = [_v4addr(r, f"routers[{i}]", x) for i, x in enumerate(_list(r, "routers", str))]
    server = r.get("server_address", str, None)
    own = [(a, "routers") for a in routers]
    if server is not None:
        own.append((_v4addr(r, "server_address", server), "server_address"))
    pools: list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]] = []
    for i, p in enumerate(_list(r, "pool", str)):
        lo_t, sep, hi_t = p.partition("-")
        if not sep:
            raise r.fail(f"pool[{i}]", p, 'expected "FIRST-LAST"')
        lo, hi = _v4addr(r, f"pool[{i}]", lo_t.strip()), _v4addr(r, f"pool[{i}]", hi_t.strip())
        if not (lo in subnet and hi in subnet and lo <= hi):
            raise r.fail(f"pool[{i}]", p, f"expected a range inside {subnet}, first <= last")
        for a, whose in own:
            if lo <= a <= hi:
                raise r.fail(
                    f"pool[{i}]",
                    p,
                    f"contains {a}, the {'router' if whose == 'routers' else 'server'}'s own "
                    f"address ({whose}): it would be leased to a client",
                )
        for j, (lo2, hi2) in enumerate(pools):
            if lo <= hi2 and lo2 <= hi:
                raise r.fail(f"pool[{i}]", p, f"overlaps pool[{j}] {lo2}-{hi2}")
        pools.append((lo, hi))
    rs: dict[bytes, ipaddress.IPv4Address] = {}
    for i, item in enumerate(r.get("reservations", list, [])):
        k = f"reservations[{i}]"
        if isinstance(item, dict):
            inline_keys(r, k, item, ("mac", "client_id", "address"))
        if (
            not isinstance(item, dict)
            or "address" not in item
            or not ({"mac", "client_id"} & set(item))
        ):
            raise r.fail(k, item, '{ mac = "..." or client_id = "hex", address = "..." }')
        a = _v4addr(r, k + ".address", item["address"])
        if a not in subnet:
            raise r.fail(k + ".address", item["address"], f"expected an address in {subnet}")
        if "mac" in item:
            rs[_mac(r, k + ".mac", item["mac"])] = a
        else:
            rs[b"cid:" + _mac(r, k + ".client_id", item["client_id"])] = a
    wait = r.integer("v6only_wait", 1800, 0, 0xFFFFFFFF)
    if wait < MIN_V6ONLY_WAIT:
        raise r.fail(
            "v6only_wait", wait, f"RFC 8925 §3.4: at least MIN_V6ONLY_WAIT ({MIN_V6ONLY_WAIT} s)"
        )
    domain = r.get("domain", str, "")
    if domain:
        domain_name(r, "domain", domain)
    s = Dhcp4Subnet(
        name=name,
        subnet=subnet,
        pools=pools,
        routers=[str(a) for a in routers],
        dns=[str(_v4addr(r, f"dns[{i}]", x)) for i, x in enumerate(_list(r, "dns", str))],
        domain=domain,
        search=[domain_name(r, f"search[{i}]", x) for i, x in enumerate(_list(r, "search", str))],
        lease_time=r.integer("lease_time", 3600, 60, 0xFFFFFFFE),
        v6only=r.get("v6only", bool, False),
        v6only_wait=wait,
        v6only_rollout=r.integer("v6only_rollout", 100, 0, 100),
        server_address=server,
        reservations=rs,
        interface=interface,
        relays=[_v4addr(r, f"relays[{i}]", x) for i, x in enumerate(_list(r, "relays", str))],
    )
    if interface is None and not s.relays:
        raise r.fail(
            "relays", [], "a relayed subnet needs the relay agents' addresses (giaddr) it trusts"
        )
    if not s.pools and not rs:
        raise r.fail("pool", [], "expected at least one pool range or reservation")
    r.finish()
    return s


def _text_match(r: _Reader, key: str, v: Any) -> TextMatch | None:
    if v is None:
        return None
    if isinstance(v, str):
        return TextMatch(equals=v)
    kinds = ("equals", "contains", "prefix", "split")
    if isinstance(v, dict):
        inline_keys(r, key, v, kinds)
    if not isinstance(v, dict) or not v:
        raise r.fail(
            key, v, '"TEXT" or { equals | contains | prefix = "TEXT", split = [SEP, INDEX, VALUE] }'
        )
    for k in kinds[:3]:
        if k in v and not isinstance(v[k], str):
            raise r.fail(f"{key}.{k}", v[k], "expected a string")
    split = v.get("split")
    if split is not None and not (
        isinstance(split, list)
        and len(split) == 3
        and isinstance(split[0], str)
        and isinstance(split[1], int)
        and isinstance(split[2], str)
        and split[0]
    ):
        raise r.fail(
            key + ".split",
            split,
            'expected [SEPARATOR, INDEX, VALUE], e.g. [":", 2, "RubyKaigi 2025"]',
        )
    return TextMatch(
        equals=v.get("equals"),
        contains=v.get("contains"),
        prefix=v.get("prefix"),
        split=(split[0], split[1], split[2]) if split else None,
    )


def parse_class(r: _Reader) -> ClientClass:
    name = r.get("name", str, None)
    if not name:
        raise r.fail("name", "", "every [[class]] needs a name")
    v6only = r.get("v6only", bool, None)
    c = ClientClass(
        name=name,
        circuit_id=_text_match(r, "circuit_id", r.get("circuit_id", object, None)),
        remote_id=_text_match(r, "remote_id", r.get("remote_id", object, None)),
        vendor_class=_text_match(r, "vendor_class", r.get("vendor_class", object, None)),
        mac_prefixes=tuple(
            _mac(r, f"mac_prefix[{i}]", m) for i, m in enumerate(_list(r, "mac_prefix", str))
        ),
        subnets=tuple(_list(r, "subnets", str)),
        v6only=v6only,
        rollout_percent=r.integer("rollout_percent", 100, 0, 100),
    )
    r.finish()
    if not (c.circuit_id or c.remote_id or c.vendor_class or c.mac_prefixes or c.subnets):
        raise r.fail(
            "name",
            name,
            "no match criteria (circuit_id, remote_id, vendor_class, mac_prefix or subnets): "
            "the class would match every client",
        )
    return c


def parse_interface(source: str, i: int, t: Any, pref64_lifetime: int) -> InterfaceConfig:
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise ConfigError(f'{source}: [[interface]] #{i + 1}: needs name = "IFNAME"')
    name = t["name"]
    r = _Reader(source, f'interface "{name}"', t)
    r.get("name", str, name)
    pref = r.get("preference", str, "medium")
    if pref not in PREF:
        raise r.fail("preference", pref, "expected low, medium or high")
    mx = r.integer("max_interval", 600, 4, 1800)
    mn_raw = r.get("min_interval", int, 0)
    mn = float(mn_raw) if mn_raw else None
    if mn is not None and not 3 <= mn <= 0.75 * mx:
        raise r.fail(
            "min_interval", mn_raw, f"RFC 4861 §6.2.1: 3 to 0.75 x max_interval ({0.75 * mx:g})"
        )
    life = r.integer("pref64_lifetime", pref64_lifetime, 0, PREF64_MAX_LIFETIME)
    if life and life < mx:
        raise r.fail("pref64_lifetime", life, f"RFC 8781 §4.1: at least max_interval ({mx} s)")
    ic = InterfaceConfig(
        name=name,
        ra=r.get("ra", bool, True),
        max_interval=mx,
        min_interval=mn,
        router_lifetime=r.integer("router_lifetime", min(1800, 3 * mx), 0, 9000),
        preference=pref,
        managed=r.get("managed", bool, False),
        other=r.get("other", bool, False),
        mtu=r.integer("mtu", 0, 0, 65535),
        prefixes=[
            _slaac_prefix(r, f"prefixes[{i}]", p) for i, p in enumerate(_list(r, "prefixes", str))
        ],
        routes=[
            ipaddress.IPv6Network(_network(r, "routes", p, 6)) for p in _list(r, "routes", str)
        ],
        rdnss=[
            ipaddress.IPv6Address(_v6(r, f"rdnss[{i}]", a))
            for i, a in enumerate(_list(r, "rdnss", str))
        ],
        dnssl=[domain_name(r, f"dnssl[{i}]", x) for i, x in enumerate(_list(r, "dnssl", str))],
        pref64_lifetime=life,
        advertise_pref64=r.get("advertise_pref64", bool, True),
    )
    if ic.mtu and ic.mtu < 1280:
        raise r.fail("mtu", ic.mtu, "expected 0 (none) or at least 1280")
    d = r.get("dhcp4", dict, None)
    if d is not None:
        ic.dhcp4 = parse_dhcp4(_Reader(source, f'interface "{name}" dhcp4', d), name, name)
    r.finish()
    return ic


def _slaac_prefix(r: _Reader, key: str, text: str) -> ipaddress.IPv6Network:
    net = ipaddress.IPv6Network(_network(r, key, text, 6))
    if net.prefixlen != 64:
        raise r.fail(
            key, text, "a SLAAC prefix is a /64 (RFC 4862 §5.5.3 with the 64-bit IIDs of RFC 4291)"
        )
    return net


def _v6(r: _Reader, key: str, text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise r.fail(key, text, "expected an IPv6 address") from None


def load_site(path: str, check_lease_db: bool = True) -> SiteConfig:
    """Read and validate a site file. ``check_lease_db``: the router will open the
    lease database, so its directory must exist (a PLAT reading only the Pref64
    passes False)."""
    data = read_toml(path)
    known = {"site", "interface", "relayed", "class", "dhcp4", "dns", "metrics"}
    for k in data:
        if k not in known:
            raise ConfigError(f"{path}: [{k}]: unknown section (expected one of {sorted(known)})")
    site = _section(path, data, "site")
    p = site.get("pref64", str, None)
    if p is None:
        raise ConfigError(f"{path}: [site] pref64: required (the network's Pref64::/n)")
    pref64 = parse_pref64(site, "pref64", p)
    plife = site.integer("pref64_lifetime", 0, 0, PREF64_MAX_LIFETIME)
    split = site.get("traffic_split", bool, True)
    site.finish()
    ifs_raw = data.get("interface", [])
    if not isinstance(ifs_raw, list):
        raise ConfigError(f"{path}: interface: expected [[interface]] tables")
    interfaces = [parse_interface(path, i, t, plife) for i, t in enumerate(ifs_raw)]
    names = [i.name for i in interfaces]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: [[interface]]: an interface is listed twice")
    relayed = []
    for i, t in enumerate(_tables(path, data, "relayed")):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise ConfigError(f'{path}: [[relayed]] #{i + 1}: needs name = "NAME"')
        r = _Reader(path, f'relayed "{t["name"]}"', t)
        r.get("name", str, "")
        relayed.append(parse_dhcp4(r, t["name"], None))
    subnets = [(f'interface "{ic.name}" dhcp4', ic.dhcp4) for ic in interfaces if ic.dhcp4]
    subnets += [(f'relayed "{d.name}"', d) for d in relayed]
    check_subnets(path, subnets)
    classes = []
    for i, t in enumerate(_tables(path, data, "class")):
        if not isinstance(t, dict):
            raise ConfigError(f"{path}: [[class]] #{i + 1}: expected a table")
        classes.append(parse_class(_Reader(path, f"class #{i + 1}", t)))
    check_classes(path, classes, [d.name for _, d in subnets])
    d = _section(path, data, "dhcp4")
    lease_db = d.get("lease_db", str, "/var/lib/v6mostly/leases.sqlite")
    sync = d.get("sync", str, "normal")
    if sync not in ("normal", "full"):
        raise d.fail("sync", sync, "expected normal or full")
    limits = Dhcp4Limits(
        offer_hold_time=float(d.integer("offer_hold_time", 10, 1, 3600)),
        client_rate=float(d.integer("client_rate", 10, 1, 100_000)),
        client_burst=float(d.integer("client_burst", 20, 1, 100_000)),
        max_declines=d.integer("max_declines", 3, 0, 1_000_000),
        decline_window=float(d.integer("decline_window", 3600, 1, 86400 * 7)),
    )
    d.finish()
    if check_lease_db and subnets:
        where = os.path.dirname(lease_db) or "."
        if not os.path.isdir(where):
            raise d.fail(
                "lease_db",
                lease_db,
                f"directory {where} does not exist (the router does not create it; "
                "systemd: StateDirectory=v6mostly)",
            )
    dns_cfg = None
    if "dns" in data:
        r = _section(path, data, "dns")
        allow = []
        for i, a in enumerate(_list(r, "allow", str)):
            try:
                allow.append(ipaddress.ip_network(a))
            except ValueError:
                raise r.fail(f"allow[{i}]", a, "expected a prefix") from None
        if not allow:
            raise r.fail("allow", [], "expected the client prefixes (not an open resolver)")
        up = r.get("upstream", str, None)
        if up is not None:
            try:
                ipaddress.ip_address(up)
            except ValueError:
                raise r.fail("upstream", up, "expected an IP address") from None
        dns_cfg = DnsConfig(
            listen=[
                _listen_address(r, f"listen[{i}]", x) for i, x in enumerate(_list(r, "listen", str))
            ],
            port=r.integer("port", 53, 1, 65535),
            allow=allow,
            upstream=up,
            dns64=r.get("dns64", bool, False),
            rate=float(r.integer("rate", 50, 1, 1_000_000)),
            burst=float(r.integer("burst", 100, 1, 1_000_000)),
            prefix_rate=float(r.integer("prefix_rate", 500, 1, 10_000_000)),
            prefix_burst=float(r.integer("prefix_burst", 1000, 1, 10_000_000)),
            max_udp_size=r.integer("max_udp_size", 1232, 512, 4096),
            tcp_max_connections=r.integer("tcp_max_connections", 100, 1, 100_000),
            tcp_max_per_client=r.integer("tcp_max_per_client", 10, 1, 100_000),
            tcp_idle_timeout=float(r.integer("tcp_idle_timeout", 10, 1, 3600)),
            chaos_version=r.get("chaos_version", str, ""),
            chaos_id=r.get("chaos_id", str, ""),
        )
        if not dns_cfg.listen:
            raise r.fail("listen", [], "expected at least one address to listen on")
        r.finish()
    listen = parse_metrics(path, data)
    return SiteConfig(
        path, pref64, interfaces, relayed, classes, lease_db, sync, dns_cfg, listen, limits, split
    )


def _tables(path: str, data: dict[str, Any], name: str) -> list[Any]:
    v = data.get(name, [])
    if not isinstance(v, list):
        raise ConfigError(f"{path}: [{name}]: expected [[{name}]] tables")
    return v


def _listen_address(r: _Reader, key: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise r.fail(
            key, text, "expected an IPv4 or IPv6 address to listen on (not an interface name)"
        ) from None


def check_subnets(path: str, subnets: list[tuple[str, Dhcp4Subnet]]) -> None:
    """Each subnet is described once, under its own name, and no address is in two
    pools: two subnets handing out one address would lease it twice."""
    for j, (sec, d) in enumerate(subnets):
        r = _Reader(path, sec, {})
        for sec2, d2 in subnets[:j]:
            if d.name == d2.name:
                raise r.fail(
                    "name", d.name, f"[{sec2}] has this name; [[class]] subnets name one subnet"
                )
            if d.subnet == d2.subnet:
                raise r.fail(
                    "subnet", str(d.subnet), f"already served by [{sec2}]; describe a subnet once"
                )
            for i, (lo, hi) in enumerate(d.pools):
                for k, (lo2, hi2) in enumerate(d2.pools):
                    if lo <= hi2 and lo2 <= hi:
                        raise r.fail(
                            f"pool[{i}]",
                            f"{lo}-{hi}",
                            f"overlaps pool[{k}] {lo2}-{hi2} of [{sec2}]",
                        )


def check_classes(path: str, classes: list[ClientClass], subnet_names: list[str]) -> None:
    """Class names are unique and name only subnets that exist."""
    for j, c in enumerate(classes):
        r = _Reader(path, f"class #{j + 1}", {})
        for k, c2 in enumerate(classes[:j]):
            if c.name == c2.name:
                raise r.fail("name", c.name, f"class #{k + 1} has this name; names are unique")
        for i, sn in enumerate(c.subnets):
            if sn not in subnet_names:
                known = ", ".join(subnet_names) or "none"
                raise r.fail(
                    f"subnets[{i}]",
                    sn,
                    f"no such subnet (the subnets, by interface or [[relayed]] name: {known})",
                )
