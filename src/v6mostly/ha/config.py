"""The ``[ha]`` section of plat.toml: this PLAT among its peers behind ECMP (issue 12).

Every error is one line naming the file, the key, the value and the rule, like the
rest of plat.toml (:mod:`v6mostly.config_reader`). Keys of the ``[[ha.peer]]`` and
``[[ha.bgp]]`` tables are named as TOML addresses them: ``[ha] peer[0].name``,
``[ha] bgp[1].neighbor``.

Example::

    [ha]
    node = "plat1"
    asn = 64601
    sync_interface = "sync0"
    sync_address = "2001:db8:ff::1"

    [[ha.peer]]
    name = "plat2"
    outer = [{ ipv6 = "2001:db8:46::2", ipv4 = "198.51.100.2" }]
    sync_address = "2001:db8:ff::2"

    [[ha.bgp]]
    role = "downstream"
    neighbor = "2001:db8:a1::1"
    asn = 64500

    [[ha.bgp]]
    role = "upstream"
    neighbor = "203.0.113.1"
    asn = 64700
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..config_reader import Reader, check_ifname, inline_keys
from ..config_reader import address as _address
from ..errors import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ROLES = ("downstream", "upstream")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_NAME_RULE = "expected a name of 1-32 letters, digits, - and _"
ASN_MAX = 4_294_967_295

DEFAULTS = {
    "bird_config": "/etc/bird/bird.conf",
    "bird_socket": "/run/bird/bird.ctl",
    "conntrackd_config": "/etc/conntrackd/conntrackd.conf",
    "conntrackd_socket": "/run/conntrackd.ctl",
    "conntrackd_lock": "/run/lock/conntrack.lock",
}


@dataclass(frozen=True)
class OuterPair:
    ipv6: ipaddress.IPv6Address
    ipv4: ipaddress.IPv4Address


@dataclass(frozen=True)
class HaPeer:
    name: str
    outer: tuple[OuterPair, ...]
    sync_address: Address


@dataclass(frozen=True)
class BgpSession:
    role: str  # "downstream" | "upstream"
    neighbor: Address
    asn: int
    interface: str | None
    bfd: bool


@dataclass(frozen=True)
class HaSettings:
    node: str
    asn: int
    router_id: ipaddress.IPv4Address
    own_outer: tuple[OuterPair, ...]
    peers: tuple[HaPeer, ...]
    bgp: tuple[BgpSession, ...]
    sync_interface: str
    sync_address: Address
    prepend: int
    bfd_interval_ms: int
    bird_config: str
    bird_socket: str
    conntrackd_config: str
    conntrackd_socket: str
    conntrackd_lock: str
    pref64: ipaddress.IPv6Network
    inside: tuple[ipaddress.IPv6Network, ...]
    udp_oneshot_ports: tuple[int, ...]
    #: replicate the NAPT66 bindings with conntrackd (false: the report's setup, where
    #: a flow whose PLAT fails dies; for comparison, or to run conntrackd yourself)
    state_sync: bool = True

    def peer_outer(self) -> tuple[OuterPair, ...]:
        """Every peer's outer address pairs, in file order."""
        return tuple(o for p in self.peers for o in p.outer)


class _Pair(Protocol):
    """An outer address pair as [napt66] has it (:class:`v6mostly.config.Outer`)."""

    @property
    def ipv6(self) -> ipaddress.IPv6Address: ...

    @property
    def ipv4(self) -> ipaddress.IPv4Address: ...


class _ItemReader(Reader):
    """A reader for one table of an ``[[ha.X]]`` array: keys read ``[ha] X[i].key``."""

    def __init__(self, source: str, prefix: str, table: dict[str, Any]) -> None:
        super().__init__(source, "ha", table)
        self.prefix = prefix

    def where(self, key: str) -> str:
        return f"{self.source}: [ha] {self.prefix}.{key}"


def parse_ha(
    source: str,
    table: dict[str, Any],
    *,
    own_outer: Sequence[_Pair],
    pref64: ipaddress.IPv6Network | None,
    inside: Sequence[ipaddress.IPv6Network],
    udp_oneshot_ports: Sequence[int],
) -> HaSettings:
    """Validate the ``[ha]`` table of ``source`` (``table`` = the parsed ``[ha]``).

    ``own_outer``, ``inside`` and ``udp_oneshot_ports`` come from [napt66] and
    ``pref64`` from [translator] pool6, all already validated.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [ha]: expected a table")
    r = Reader(source, "ha", table)
    if pref64 is None:
        raise ConfigError(
            f"{source}: [ha]: needs [translator] pool6 (the Pref64 every PLAT announces)"
        )
    own = tuple(OuterPair(o.ipv6, o.ipv4) for o in own_outer)
    if not own:
        raise ConfigError(f"{source}: [ha]: needs at least one [napt66] outer address pair")
    node = _name(r, "node", r.get("node", str, None))
    asn = _asn(r, "asn", r.get("asn", int, None))
    rid_text = r.address("router_id", 4)
    router_id = ipaddress.IPv4Address(rid_text) if rid_text else own[0].ipv4
    sync_interface = _ifname(r, "sync_interface", r.get("sync_interface", str, None))
    sync_address = _any_address(r, "sync_address", r.get("sync_address", str, None))
    prepend = r.integer("prepend", 3, 0, 10)
    bfd = r.get("bfd", bool, True)
    bfd_interval = r.integer("bfd_interval", 100, 10, 10_000)
    state_sync = r.get("state_sync", bool, True)
    paths = {k: _path(r, k, r.get(k, str, v)) for k, v in DEFAULTS.items()}
    peers = _peers(r, r.get("peer", list, None), node, own, sync_address)
    sessions = _sessions(r, r.get("bgp", list, None), asn, bfd)
    r.finish()
    return HaSettings(
        node=node,
        asn=asn,
        router_id=router_id,
        own_outer=own,
        peers=peers,
        bgp=sessions,
        sync_interface=sync_interface,
        sync_address=sync_address,
        prepend=prepend,
        bfd_interval_ms=bfd_interval,
        pref64=pref64,
        inside=tuple(inside),
        udp_oneshot_ports=tuple(udp_oneshot_ports),
        state_sync=state_sync,
        **paths,
    )


def _required(r: Reader, key: str, value: Any, what: str) -> Any:
    if value is None:
        raise ConfigError(f"{r.where(key)}: missing ({what})")
    return value


def _name(r: Reader, key: str, value: str | None) -> str:
    v = _required(r, key, value, "this node's name among its peers")
    if not _NAME.fullmatch(v):
        raise r.fail(key, v, _NAME_RULE)
    return str(v)


def _asn(r: Reader, key: str, value: int | None) -> int:
    v = _required(r, key, value, "an AS number")
    if not 1 <= v <= ASN_MAX:
        raise r.fail(key, v, f"expected an AS number from 1 to {ASN_MAX}")
    return int(v)


def _ifname(r: Reader, key: str, value: Any) -> str:
    return check_ifname(r, key, _required(r, key, value, "an interface name"))


def _any_address(r: Reader, key: str, value: Any) -> Address:
    v = _required(r, key, value, "an IPv4 or IPv6 address")
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        raise r.fail(key, v, "expected an IPv4 or IPv6 address") from None


def _path(r: Reader, key: str, value: str) -> str:
    if not value.startswith("/"):
        raise r.fail(key, value, "expected an absolute path")
    return value


def _outer(r: Reader, key: str, items: list[Any] | None) -> tuple[OuterPair, ...]:
    if not items:
        raise r.fail(key, items or [], "expected at least one { ipv6, ipv4 } outer address pair")
    out = []
    for i, item in enumerate(items):
        k = f"{key}[{i}]"
        if isinstance(item, dict):
            inline_keys(r, k, item, ("ipv6", "ipv4"))
        if not isinstance(item, dict) or set(item) != {"ipv6", "ipv4"}:
            raise r.fail(k, item, 'expected { ipv6 = "ADDR", ipv4 = "ADDR" }')
        out.append(
            OuterPair(
                ipaddress.IPv6Address(_address(r, k + ".ipv6", item["ipv6"], 6)),
                ipaddress.IPv4Address(_address(r, k + ".ipv4", item["ipv4"], 4)),
            )
        )
    return tuple(out)


def _peers(
    r: Reader,
    items: list[Any] | None,
    node: str,
    own: tuple[OuterPair, ...],
    sync_address: Address,
) -> tuple[HaPeer, ...]:
    if not items:
        raise ConfigError(
            f"{r.where('peer')}: missing (expected at least one [[ha.peer]]: the other PLATs)"
        )
    # Every outer address belongs to exactly one PLAT: who has it so far.
    owner: dict[Address, str] = {}
    for o in own:
        owner.setdefault(o.ipv6, f"this node ({node})")
        owner.setdefault(o.ipv4, f"this node ({node})")
    syncs: dict[Address, str] = {sync_address: f"this node ({node})"}
    names: set[str] = set()
    peers = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise r.fail(f"peer[{i}]", item, "expected a [[ha.peer]] table")
        p = _ItemReader(r.source, f"peer[{i}]", item)
        name = _name(p, "name", p.get("name", str, None))
        if name == node:
            raise p.fail("name", name, f'is this node\'s own name ([ha] node = "{node}")')
        if name in names:
            raise p.fail("name", name, "duplicate peer name")
        names.add(name)
        outer = _outer(p, "outer", p.get("outer", list, None))
        for j, o in enumerate(outer):
            for fam, a in (("ipv6", o.ipv6), ("ipv4", o.ipv4)):
                if a in owner:
                    raise p.fail(
                        f"outer[{j}].{fam}", str(a), f"already an outer address of {owner[a]}"
                    )
                owner[a] = f'peer "{name}"'
        sync = _any_address(p, "sync_address", p.get("sync_address", str, None))
        if sync.version != sync_address.version:
            raise p.fail(
                "sync_address",
                str(sync),
                f"expected an IPv{sync_address.version} address, like [ha] sync_address "
                f'= "{sync_address}" (one address family on the sync link)',
            )
        if sync in syncs:
            raise p.fail("sync_address", str(sync), f"already the sync address of {syncs[sync]}")
        syncs[sync] = f'peer "{name}"'
        p.finish()
        peers.append(HaPeer(name, outer, sync))
    return tuple(peers)


def _sessions(
    r: Reader, items: list[Any] | None, asn: int, bfd_default: bool
) -> tuple[BgpSession, ...]:
    if not items:
        raise ConfigError(
            f"{r.where('bgp')}: missing (expected [[ha.bgp]] sessions: at least one "
            'role = "downstream" and one role = "upstream")'
        )
    seen: set[tuple[Address, str | None]] = set()
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise r.fail(f"bgp[{i}]", item, "expected a [[ha.bgp]] table")
        b = _ItemReader(r.source, f"bgp[{i}]", item)
        role = _required(b, "role", b.get("role", str, None), 'expected "downstream" or "upstream"')
        if role not in ROLES:
            raise b.fail("role", role, 'expected "downstream" or "upstream"')
        neighbor = _any_address(b, "neighbor", b.get("neighbor", str, None))
        if role == "upstream" and neighbor.version != 4:
            raise b.fail(
                "neighbor",
                str(neighbor),
                "an upstream session's neighbor must be an IPv4 address (the session "
                "carries the IPv4 channel: the outer /32s)",
            )
        if role == "downstream" and neighbor.version != 6:
            raise b.fail(
                "neighbor",
                str(neighbor),
                "a downstream session's neighbor must be an IPv6 address (the session "
                "carries the IPv6 channel: the Pref64)",
            )
        peer_asn = _asn(b, "asn", b.get("asn", int, None))
        if peer_asn == asn:
            raise b.fail(
                "asn",
                peer_asn,
                "is this PLAT's own AS number ([ha] asn); only eBGP sessions are supported",
            )
        iface_value = b.get("interface", str, None)
        iface = None if iface_value is None else _ifname(b, "interface", iface_value)
        if neighbor.is_link_local and iface is None:
            raise b.fail(
                "neighbor",
                str(neighbor),
                'a link-local neighbor needs interface = "NAME" (the link it is on)',
            )
        key = (neighbor, iface if neighbor.is_link_local else None)
        if key in seen:
            where = f" on {iface}" if key[1] else ""
            raise b.fail("neighbor", str(neighbor), f"duplicate neighbor{where}")
        seen.add(key)
        bfd = b.get("bfd", bool, bfd_default)
        b.finish()
        out.append(BgpSession(role, neighbor, peer_asn, iface, bfd))
    for role in ROLES:
        if not any(s.role == role for s in out):
            raise ConfigError(
                f'{r.where("bgp")}: expected at least one [[ha.bgp]] with role = "{role}" '
                + (
                    "(it announces the Pref64 to the ECMP router)"
                    if role == "downstream"
                    else "(it announces the outer /32s toward the IPv4 Internet)"
                )
            )
    return tuple(out)
