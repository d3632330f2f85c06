"""The [ha] section of plat.toml (issue 12): every mistake is one line naming the
file, the key, the value and the rule."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from v6mostly.config import Outer
from v6mostly.errors import ConfigError
from v6mostly.ha.config import BgpSession, HaPeer, HaSettings, OuterPair, parse_ha

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

OWN = [Outer(V6("2001:db8:46::1"), V4("198.51.100.1"))]
PREF64 = ipaddress.IPv6Network("2001:db8:64::/96")
INSIDE = [ipaddress.IPv6Network("2001:db8:1::/64")]

BASE: dict[str, Any] = {
    "node": "plat1",
    "asn": 64601,
    "sync_interface": "sync0",
    "sync_address": "2001:db8:ff::1",
    "peer": [
        {
            "name": "plat2",
            "outer": [{"ipv6": "2001:db8:46::2", "ipv4": "198.51.100.2"}],
            "sync_address": "2001:db8:ff::2",
        }
    ],
    "bgp": [
        {"role": "downstream", "neighbor": "2001:db8:a1::1", "asn": 64500},
        {"role": "upstream", "neighbor": "203.0.113.1", "asn": 64700},
    ],
}


def parse(table: dict[str, Any], own: list[Outer] | None = None) -> HaSettings:
    return parse_ha(
        "plat.toml",
        table,
        own_outer=OWN if own is None else own,
        pref64=PREF64,
        inside=INSIDE,
        udp_oneshot_ports=[53, 123],
    )


def test_parsed_values_and_defaults() -> None:
    ha = parse(copy.deepcopy(BASE))
    assert ha == HaSettings(
        node="plat1",
        asn=64601,
        router_id=V4("198.51.100.1"),
        own_outer=(OuterPair(V6("2001:db8:46::1"), V4("198.51.100.1")),),
        peers=(
            HaPeer(
                "plat2",
                (OuterPair(V6("2001:db8:46::2"), V4("198.51.100.2")),),
                V6("2001:db8:ff::2"),
            ),
        ),
        bgp=(
            BgpSession("downstream", V6("2001:db8:a1::1"), 64500, None, True),
            BgpSession("upstream", V4("203.0.113.1"), 64700, None, True),
        ),
        sync_interface="sync0",
        sync_address=V6("2001:db8:ff::1"),
        prepend=3,
        bfd_interval_ms=100,
        bird_config="/etc/bird/bird.conf",
        bird_socket="/run/bird/bird.ctl",
        conntrackd_config="/etc/conntrackd/conntrackd.conf",
        conntrackd_socket="/run/conntrackd.ctl",
        conntrackd_lock="/run/lock/conntrack.lock",
        pref64=PREF64,
        inside=tuple(INSIDE),
        udp_oneshot_ports=(53, 123),
    )
    assert ha.peer_outer() == (OuterPair(V6("2001:db8:46::2"), V4("198.51.100.2")),)


def test_every_key_set() -> None:
    t = copy.deepcopy(BASE)
    t.update(
        router_id="192.0.2.7",
        sync_address="192.0.2.1",
        prepend=0,
        bfd=False,
        bfd_interval=10,
        bird_config="/tmp/b.conf",
        bird_socket="/tmp/b.ctl",
        conntrackd_config="/tmp/c.conf",
        conntrackd_socket="/tmp/c.ctl",
        conntrackd_lock="/tmp/c.lock",
    )
    t["peer"][0]["sync_address"] = "192.0.2.2"
    t["peer"].append(
        {
            "name": "plat-3_x",
            "outer": [
                {"ipv6": "2001:db8:46::3", "ipv4": "198.51.100.3"},
                {"ipv6": "2001:db8:46::4", "ipv4": "198.51.100.4"},
            ],
            "sync_address": "192.0.2.3",
        }
    )
    t["bgp"].append(
        {"role": "downstream", "neighbor": "fe80::1", "asn": 64501, "interface": "d0", "bfd": True}
    )
    t["bgp"].append({"role": "downstream", "neighbor": "fe80::1", "asn": 64502, "interface": "d1"})
    ha = parse(t)
    assert ha.router_id == V4("192.0.2.7")
    assert ha.sync_address == V4("192.0.2.1")
    assert (ha.prepend, ha.bfd_interval_ms) == (0, 10)
    assert (ha.bird_config, ha.bird_socket) == ("/tmp/b.conf", "/tmp/b.ctl")
    assert (ha.conntrackd_config, ha.conntrackd_socket, ha.conntrackd_lock) == (
        "/tmp/c.conf",
        "/tmp/c.ctl",
        "/tmp/c.lock",
    )
    assert [p.name for p in ha.peers] == ["plat2", "plat-3_x"]
    assert [str(o.ipv4) for o in ha.peer_outer()] == [
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
    ]
    assert [(s.bfd, s.interface) for s in ha.bgp] == [
        (False, None),
        (False, None),
        (True, "d0"),
        (False, "d1"),
    ]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation of BASE: ``path`` like "peer.0.name"; value None deletes the key."""

    def apply(t: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = t
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        key: Any = int(last) if isinstance(node, list) else last
        if value is None:
            del node[key]
        else:
            node[key] = value

    return apply


def _append(path: str, item: Any) -> Callable[[dict[str, Any]], None]:
    def apply(t: dict[str, Any]) -> None:
        t[path].append(item)

    return apply


PEER2 = {
    "name": "plat3",
    "outer": [{"ipv6": "2001:db8:46::3", "ipv4": "198.51.100.3"}],
    "sync_address": "2001:db8:ff::3",
}


def _peer2(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(PEER2), **changes}


ERRORS = [
    # [ha] itself
    (_set("nodes", "x"), 'plat.toml: [ha] nodes = "x": unknown key (did you mean "node"?)'),
    (_set("node", None), "plat.toml: [ha] node: missing (this node's name among its peers)"),
    (_set("node", 1), "plat.toml: [ha] node = 1: expected a string"),
    (
        _set("node", "plat 1"),
        'plat.toml: [ha] node = "plat 1": expected a name of 1-32 letters, digits, - and _',
    ),
    (
        _set("node", ""),
        'plat.toml: [ha] node = "": expected a name of 1-32 letters, digits, - and _',
    ),
    (_set("asn", None), "plat.toml: [ha] asn: missing (an AS number)"),
    (_set("asn", 0), "plat.toml: [ha] asn = 0: expected an AS number from 1 to 4294967295"),
    (
        _set("asn", 4294967296),
        "plat.toml: [ha] asn = 4294967296: expected an AS number from 1 to 4294967295",
    ),
    (_set("asn", "64601"), 'plat.toml: [ha] asn = "64601": expected an integer'),
    (
        _set("router_id", "2001:db8::1"),
        'plat.toml: [ha] router_id = "2001:db8::1": expected an IPv4 address',
    ),
    (_set("sync_interface", None), "plat.toml: [ha] sync_interface: missing (an interface name)"),
    (
        _set("sync_interface", "a-very-long-interface"),
        'plat.toml: [ha] sync_interface = "a-very-long-interface": expected an interface name '
        "of 1-15 characters",
    ),
    (_set("sync_address", None), "plat.toml: [ha] sync_address: missing (an IPv4 or IPv6 address)"),
    (
        _set("sync_address", "sync1"),
        'plat.toml: [ha] sync_address = "sync1": expected an IPv4 or IPv6 address',
    ),
    (_set("prepend", 11), "plat.toml: [ha] prepend = 11: expected an integer from 0 to 10"),
    (_set("prepend", -1), "plat.toml: [ha] prepend = -1: expected an integer from 0 to 10"),
    (_set("bfd", "yes"), 'plat.toml: [ha] bfd = "yes": expected true or false'),
    (
        _set("bfd_interval", 9),
        "plat.toml: [ha] bfd_interval = 9: expected an integer from 10 to 10000",
    ),
    (
        _set("bfd_interval", 10001),
        "plat.toml: [ha] bfd_interval = 10001: expected an integer from 10 to 10000",
    ),
    (
        _set("bird_config", "bird.conf"),
        'plat.toml: [ha] bird_config = "bird.conf": expected an absolute path',
    ),
    (
        _set("bird_socket", "run/b.ctl"),
        'plat.toml: [ha] bird_socket = "run/b.ctl": expected an absolute path',
    ),
    (
        _set("conntrackd_config", "c.conf"),
        'plat.toml: [ha] conntrackd_config = "c.conf": expected an absolute path',
    ),
    (
        _set("conntrackd_socket", "c.ctl"),
        'plat.toml: [ha] conntrackd_socket = "c.ctl": expected an absolute path',
    ),
    (
        _set("conntrackd_lock", "c.lock"),
        'plat.toml: [ha] conntrackd_lock = "c.lock": expected an absolute path',
    ),
    # [[ha.peer]]
    (
        _set("peer", None),
        "plat.toml: [ha] peer: missing (expected at least one [[ha.peer]]: the other PLATs)",
    ),
    (
        _set("peer", []),
        "plat.toml: [ha] peer: missing (expected at least one [[ha.peer]]: the other PLATs)",
    ),
    (_set("peer", {"name": "x"}), 'plat.toml: [ha] peer = { name = "x" }: expected a list'),
    (_set("peer.0", "plat2"), 'plat.toml: [ha] peer[0] = "plat2": expected a [[ha.peer]] table'),
    (_set("peer.0.asn", 1), "plat.toml: [ha] peer[0].asn = 1: unknown key"),
    (
        _set("peer.0.nam", "x"),
        'plat.toml: [ha] peer[0].nam = "x": unknown key (did you mean "name"?)',
    ),
    (
        _set("peer.0.name", None),
        "plat.toml: [ha] peer[0].name: missing (this node's name among its peers)",
    ),
    (
        _set("peer.0.name", "plat/2"),
        'plat.toml: [ha] peer[0].name = "plat/2": expected a name of 1-32 letters, digits, - and _',
    ),
    (
        _set("peer.0.name", "plat1"),
        'plat.toml: [ha] peer[0].name = "plat1": is this node\'s own name ([ha] node = "plat1")',
    ),
    (
        _append("peer", _peer2(name="plat2")),
        'plat.toml: [ha] peer[1].name = "plat2": duplicate peer name',
    ),
    (
        _set("peer.0.outer", None),
        "plat.toml: [ha] peer[0].outer = []: expected at least one { ipv6, ipv4 } outer address pair",
    ),
    (
        _set("peer.0.outer.0.ipv5", "x"),
        'plat.toml: [ha] peer[0].outer[0].ipv5 = "x": unknown key (expected ipv6, ipv4)',
    ),
    (
        _set("peer.0.outer.0.ipv4", None),
        'plat.toml: [ha] peer[0].outer[0] = { ipv6 = "2001:db8:46::2" }: '
        'expected { ipv6 = "ADDR", ipv4 = "ADDR" }',
    ),
    (
        _set("peer.0.outer.0", "198.51.100.2"),
        'plat.toml: [ha] peer[0].outer[0] = "198.51.100.2": expected { ipv6 = "ADDR", ipv4 = "ADDR" }',
    ),
    (
        _set("peer.0.outer.0.ipv4", "2001:db8::2"),
        'plat.toml: [ha] peer[0].outer[0].ipv4 = "2001:db8::2": expected an IPv4 address',
    ),
    (
        _set("peer.0.outer.0.ipv6", "2001:db8:46::1"),
        'plat.toml: [ha] peer[0].outer[0].ipv6 = "2001:db8:46::1": already an outer address '
        "of this node (plat1)",
    ),
    (
        _set("peer.0.outer.0.ipv4", "198.51.100.1"),
        'plat.toml: [ha] peer[0].outer[0].ipv4 = "198.51.100.1": already an outer address '
        "of this node (plat1)",
    ),
    (
        _append("peer", _peer2(outer=[{"ipv6": "2001:db8:46::3", "ipv4": "198.51.100.2"}])),
        'plat.toml: [ha] peer[1].outer[0].ipv4 = "198.51.100.2": already an outer address '
        'of peer "plat2"',
    ),
    (
        _set(
            "peer.0.outer",
            [
                {"ipv6": "2001:db8:46::2", "ipv4": "198.51.100.2"},
                {"ipv6": "2001:db8:46::2", "ipv4": "198.51.100.3"},
            ],
        ),
        'plat.toml: [ha] peer[0].outer[1].ipv6 = "2001:db8:46::2": already an outer address '
        'of peer "plat2"',
    ),
    (
        _set("peer.0.sync_address", None),
        "plat.toml: [ha] peer[0].sync_address: missing (an IPv4 or IPv6 address)",
    ),
    (
        _set("peer.0.sync_address", "192.0.2.2"),
        'plat.toml: [ha] peer[0].sync_address = "192.0.2.2": expected an IPv6 address, like '
        '[ha] sync_address = "2001:db8:ff::1" (one address family on the sync link)',
    ),
    (
        _set("peer.0.sync_address", "2001:db8:ff::1"),
        'plat.toml: [ha] peer[0].sync_address = "2001:db8:ff::1": already the sync address '
        "of this node (plat1)",
    ),
    (
        _append("peer", _peer2(sync_address="2001:db8:ff::2")),
        'plat.toml: [ha] peer[1].sync_address = "2001:db8:ff::2": already the sync address '
        'of peer "plat2"',
    ),
    # [[ha.bgp]]
    (
        _set("bgp", None),
        'plat.toml: [ha] bgp: missing (expected [[ha.bgp]] sessions: at least one role = "downstream" '
        'and one role = "upstream")',
    ),
    (_set("bgp.0", 1), "plat.toml: [ha] bgp[0] = 1: expected a [[ha.bgp]] table"),
    (
        _set("bgp.0.neighbour", "x"),
        'plat.toml: [ha] bgp[0].neighbour = "x": unknown key (did you mean "neighbor"?)',
    ),
    (
        _set("bgp.0.role", None),
        'plat.toml: [ha] bgp[0].role: missing (expected "downstream" or "upstream")',
    ),
    (
        _set("bgp.0.role", "down"),
        'plat.toml: [ha] bgp[0].role = "down": expected "downstream" or "upstream"',
    ),
    (
        _set("bgp.0.neighbor", None),
        "plat.toml: [ha] bgp[0].neighbor: missing (an IPv4 or IPv6 address)",
    ),
    (
        _set("bgp.0.neighbor", "core1"),
        'plat.toml: [ha] bgp[0].neighbor = "core1": expected an IPv4 or IPv6 address',
    ),
    (
        _set("bgp.0.neighbor", "192.0.2.1"),
        'plat.toml: [ha] bgp[0].neighbor = "192.0.2.1": a downstream session\'s neighbor must be '
        "an IPv6 address (the session carries the IPv6 channel: the Pref64)",
    ),
    (
        _set("bgp.1.neighbor", "2001:db8::1"),
        'plat.toml: [ha] bgp[1].neighbor = "2001:db8::1": an upstream session\'s neighbor must be '
        "an IPv4 address (the session carries the IPv4 channel: the outer /32s)",
    ),
    (_set("bgp.0.asn", None), "plat.toml: [ha] bgp[0].asn: missing (an AS number)"),
    (
        _set("bgp.0.asn", 0),
        "plat.toml: [ha] bgp[0].asn = 0: expected an AS number from 1 to 4294967295",
    ),
    (
        _set("bgp.1.asn", 64601),
        "plat.toml: [ha] bgp[1].asn = 64601: is this PLAT's own AS number ([ha] asn); "
        "only eBGP sessions are supported",
    ),
    (
        _set("bgp.0.interface", "eth0 "),
        'plat.toml: [ha] bgp[0].interface = "eth0 ": expected an interface name of 1-15 characters',
    ),
    (
        _set("bgp.0.neighbor", "fe80::1"),
        'plat.toml: [ha] bgp[0].neighbor = "fe80::1": a link-local neighbor needs '
        'interface = "NAME" (the link it is on)',
    ),
    (_set("bgp.0.bfd", 1), "plat.toml: [ha] bgp[0].bfd = 1: expected true or false"),
    (
        _append("bgp", {"role": "downstream", "neighbor": "2001:db8:a1:0::1", "asn": 64501}),
        'plat.toml: [ha] bgp[2].neighbor = "2001:db8:a1::1": duplicate neighbor',
    ),
    (
        _append(
            "bgp", {"role": "upstream", "neighbor": "203.0.113.1", "asn": 64701, "interface": "u1"}
        ),
        'plat.toml: [ha] bgp[2].neighbor = "203.0.113.1": duplicate neighbor',
    ),
    (
        lambda t: t["bgp"].extend(
            [
                {"role": "downstream", "neighbor": "fe80::1", "asn": 64501, "interface": "d0"},
                {"role": "downstream", "neighbor": "fe80::1", "asn": 64502, "interface": "d0"},
            ]
        ),
        'plat.toml: [ha] bgp[3].neighbor = "fe80::1": duplicate neighbor on d0',
    ),
    (
        lambda t: t["bgp"].pop(0),
        'plat.toml: [ha] bgp: expected at least one [[ha.bgp]] with role = "downstream" '
        "(it announces the Pref64 to the ECMP router)",
    ),
    (
        lambda t: t["bgp"].pop(1),
        'plat.toml: [ha] bgp: expected at least one [[ha.bgp]] with role = "upstream" '
        "(it announces the outer /32s toward the IPv4 Internet)",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_errors(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    t = copy.deepcopy(BASE)
    mutate(t)
    with pytest.raises(ConfigError) as e:
        parse(t)
    assert str(e.value) == message
    assert "\n" not in str(e.value)


def test_needs_pool6_and_own_outer() -> None:
    with pytest.raises(ConfigError) as e:
        parse_ha(
            "plat.toml",
            copy.deepcopy(BASE),
            own_outer=OWN,
            pref64=None,
            inside=INSIDE,
            udp_oneshot_ports=[],
        )
    assert str(e.value) == (
        "plat.toml: [ha]: needs [translator] pool6 (the Pref64 every PLAT announces)"
    )
    with pytest.raises(ConfigError) as e:
        parse(copy.deepcopy(BASE), own=[])
    assert str(e.value) == "plat.toml: [ha]: needs at least one [napt66] outer address pair"


def test_ha_must_be_a_table() -> None:
    with pytest.raises(ConfigError) as e:
        parse_ha(
            "plat.toml",
            ["plat1"],  # type: ignore[arg-type]  # as a TOML file may have it
            own_outer=OWN,
            pref64=PREF64,
            inside=INSIDE,
            udp_oneshot_ports=[],
        )
    assert str(e.value) == "plat.toml: [ha]: expected a table"


def test_link_local_neighbor_with_interface() -> None:
    t = copy.deepcopy(BASE)
    t["bgp"][0].update(neighbor="fe80::1", interface="d0")
    assert parse(t).bgp[0] == BgpSession("downstream", V6("fe80::1"), 64500, "d0", True)
