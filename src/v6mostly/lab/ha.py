"""``lab up --ha``: two PLATs behind ECMP, on the engines operators run (issue 12).

::

    hclient ---- core ---------- plat1 ---------- edge ---- inet4
    40 client    bird2 (BGP,  d0  bird2, conntrackd  u0   bird2      203.0.113.10
    addresses    BFD), v6mostly   v6mostly plat          (BGP, BFD)  HTTP, iperf3
    2001:db8:1:: ecmp            |sync0
                 \\-------------- plat2 ----------/

* ``core`` learns the Pref64 from both PLATs over BGP (+BFD); bird2 exports the
  routes into table 100, which ``v6mostly ecmp`` turns into a resilient next-hop
  group hashed on the IPv6 source address only.
* each PLAT announces its own outer /32 to ``edge`` plainly and its peer's with the
  AS path prepended, translates for both outer addresses (EAM), and replicates its
  NAPT66 bindings to the other over ``sync0`` with conntrackd (NOTRACK, kernel-table
  resync when a PLAT comes back).
* ``--ha-plain`` (``LabConfig.ha == "plain"``) is the RubyKaigi report's setup, the
  baseline: bird2 exports a plain multipath route into the main table, no controller,
  no state sync.

Addresses are documentation prefixes; every name carries the lab's id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .topology import HA_NODES, PREF64, SERVER4

if TYPE_CHECKING:
    from .plan import LabPlan
    from .topology import Lab

CLIENT_NET = "2001:db8:1::/64"
CORE_LAN = "2001:db8:1::1"
#: the 40 client source addresses on hclient (2001:db8:1::1000 ...)
CLIENTS = tuple(f"2001:db8:1::{0x1000 + i:x}" for i in range(40))
PLATS = ("plat1", "plat2")
#: per PLAT: core side, PLAT side of the downstream link; upstream link (edge, PLAT)
DOWN6 = {
    "plat1": ("2001:db8:a1::1", "2001:db8:a1::2"),
    "plat2": ("2001:db8:a2::1", "2001:db8:a2::2"),
}
UP4 = {"plat1": ("203.0.113.17", "203.0.113.18"), "plat2": ("203.0.113.21", "203.0.113.22")}
SYNC6 = {"plat1": "2001:db8:ff::1", "plat2": "2001:db8:ff::2"}
OUTER = {"plat1": ("2001:db8:46::1", "198.51.100.1"), "plat2": ("2001:db8:46::2", "198.51.100.2")}
XLAT = {
    "plat1": ("2001:db8:46::fffd", "198.51.100.253"),
    "plat2": ("2001:db8:46::fffe", "198.51.100.254"),
}
EDGE_LAN = "203.0.113.1"
ASN = {"core": 64500, "plat1": 64601, "plat2": 64602, "edge": 64700}
ROUTER_ID = {"core": "203.0.113.254", "plat1": "198.51.100.1", "plat2": "198.51.100.2",
             "edge": "203.0.113.1"}  # fmt: skip
LEARN_TABLE = 100
GROUP_ID = 6400
ECMP_METRICS = "127.0.0.1:9468"
#: a returning PLAT takes buckets idle this long (short, so that tests can see it)
IDLE_TIMER = 5
BFD_INTERVAL_MS = 100
FLOW_FILE = "flow.bin"
FLOW_SIZE = 8 * 1024 * 1024


def plat_toml(p: LabPlan, node: str) -> str:
    """One PLAT's file: its own outer pair, the peer's in [[ha.peer]]."""
    peer = PLATS[1 - PLATS.index(node)]
    o6, o4 = OUTER[node]
    x6, x4 = XLAT[node]
    sync = "" if p.config.ha == "resilient" else "state_sync = false\n"
    return f"""# v6mostly lab {p.id}: {node}, one of two PLATs behind ECMP
[tun]
name = "nat64"
queues = 1
offload = {str(p.config.offload).lower()}
rps = false

[translator]
pool6 = "{PREF64}"
ipv4_address = "{x4}"
ipv6_address = "{x6}"
eam = [{{ ipv6 = "{o6}/128", ipv4 = "{o4}/32" }}]

[napt66]
inside = ["{CLIENT_NET}"]
outer = [{{ ipv6 = "{o6}", ipv4 = "{o4}" }}]
udp_oneshot_ports = [53, 123]

[ha]
node = "{node}"
asn = {ASN[node]}
sync_interface = "sync0"
sync_address = "{SYNC6[node]}"
bfd_interval = {BFD_INTERVAL_MS}
{sync}bird_config = "{p.path(node + "-bird.conf")}"
bird_socket = "{p.path(node + "-bird.ctl")}"
conntrackd_config = "{p.path(node + "-conntrackd.conf")}"
conntrackd_socket = "{p.path(node + "-conntrackd.ctl")}"
conntrackd_lock = "{p.path(node + "-conntrackd.lock")}"

[[ha.peer]]
name = "{peer}"
outer = [{{ ipv6 = "{OUTER[peer][0]}", ipv4 = "{OUTER[peer][1]}" }}]
sync_address = "{SYNC6[peer]}"

[[ha.bgp]]
role = "downstream"
neighbor = "{DOWN6[node][0]}"
asn = {ASN["core"]}

[[ha.bgp]]
role = "upstream"
neighbor = "{UP4[node][0]}"
asn = {ASN["edge"]}

[metrics]
listen = "127.0.0.1:9464"
"""


def ecmp_toml() -> str:
    return f"""# the core router's ECMP controller: the Pref64 over both PLATs
[ecmp]
prefix = "{PREF64}"
learn_table = {LEARN_TABLE}
table = 254
group_id = {GROUP_ID}
buckets = 128
idle_timer = {IDLE_TIMER}
unbalanced_timer = 0
hash = "source"

[metrics]
listen = "{ECMP_METRICS}"
"""


def plan_ha(p: LabPlan, python: str) -> None:
    """Links, addresses, routes, files and processes of the HA lab."""
    from ..ha import bird
    from .plan import Link, LinkState, Offload, Route, Sysctl, Wait

    cfg = p.config
    for node in HA_NODES:
        p.states.append(LinkState(node, "lo"))
    # hclient -- core
    p.links.append(Link("core", "c0", "veth", "hclient", "eth0"))
    p.addr("core", "c0", f"{CORE_LAN}/64")
    for a in CLIENTS:
        p.addr("hclient", "eth0", f"{a}/64")
    p.states += [LinkState("core", "c0"), LinkState("hclient", "eth0")]
    p.routes.append(Route("hclient", "::/0", CORE_LAN, "eth0"))
    # core -- platN -- edge; plat1 -- plat2 (sync)
    for i, node in enumerate(PLATS, 1):
        core6, plat6 = DOWN6[node]
        edge4, plat4 = UP4[node]
        p.links.append(Link("core", f"p{i}", "veth", node, "d0"))
        p.links.append(Link(node, "u0", "veth", "edge", f"p{i}"))
        p.addr("core", f"p{i}", f"{core6}/64")
        p.addr(node, "d0", f"{plat6}/64")
        p.addr(node, "u0", f"{plat4}/30")
        p.addr("edge", f"p{i}", f"{edge4}/30")
        p.states += [LinkState("core", f"p{i}"), LinkState(node, "d0"), LinkState(node, "u0")]
        p.states.append(LinkState("edge", f"p{i}"))
        p.routes.append(Route(node, CLIENT_NET, core6, "d0"))
        p.routes.append(Route(node, "0.0.0.0/0", edge4, "u0"))
        p.sysctls += [
            Sysctl(node, "net.ipv6.conf.all.forwarding=1"),
            Sysctl(node, "net.ipv4.ip_forward=1"),
            # a revived box's links come back with their addresses (as a static
            # configuration would put them back)
            Sysctl(node, "net.ipv6.conf.all.keep_addr_on_down=1"),
        ]
    p.links.append(Link("plat1", "sync0", "veth", "plat2", "sync0"))
    for node in PLATS:
        p.addr(node, "sync0", f"{SYNC6[node]}/64")
        p.states.append(LinkState(node, "sync0"))
    # edge -- inet4
    p.links.append(Link("edge", "s0", "veth", "inet4", "eth0"))
    p.addr("edge", "s0", f"{EDGE_LAN}/28")
    p.addr("inet4", "eth0", f"{SERVER4}/28")
    p.states += [LinkState("edge", "s0"), LinkState("inet4", "eth0")]
    p.routes.append(Route("inet4", "0.0.0.0/0", EDGE_LAN, "eth0"))
    # Routers: forward; a dead link's routes are not used (the report's failure is a
    # PLAT that is gone, link and all); hash ECMP on the IPv6 source only.
    for node in ("core", "edge"):
        p.sysctls += [
            Sysctl(node, "net.ipv6.conf.all.forwarding=1"),
            Sysctl(node, "net.ipv4.ip_forward=1"),
            Sysctl(node, "net.ipv4.conf.all.ignore_routes_with_linkdown=1"),
            Sysctl(node, "net.ipv6.conf.all.ignore_routes_with_linkdown=1"),
        ]
    if cfg.ha == "plain":  # the controller sets these itself
        p.sysctls += [
            Sysctl("core", "net.ipv6.fib_multipath_hash_policy=3"),
            Sysctl("core", "net.ipv6.fib_multipath_hash_fields=0x1"),
        ]
    if cfg.verify_checksums:
        p.offloads += [Offload("hclient", "eth0", "rx"), Offload("inet4", "eth0", "rx")]
    # Files: the PLATs', the ECMP controller's and bird's on core and edge.
    for node in PLATS:
        p.write(p.path(f"{node}.toml"), plat_toml(p, node))
    p.write(p.path("ecmp.toml"), ecmp_toml())
    core_nb = [(DOWN6[n][1], ASN[n], None) for n in PLATS]
    table = LEARN_TABLE if cfg.ha == "resilient" else 254
    p.write(
        p.path("core-bird.conf"),
        bird.render_core(ROUTER_ID["core"], ASN["core"], core_nb, table, True, BFD_INTERVAL_MS),
    )
    edge_nb = [(UP4[n][1], ASN[n], None) for n in PLATS]
    p.write(
        p.path("edge-bird.conf"),
        bird.render_edge(ROUTER_ID["edge"], ASN["edge"], edge_nb, True, BFD_INTERVAL_MS),
    )
    # Processes: servers, PLATs (they write bird's files), bird everywhere, controller.
    www = p.path("www")
    p.dirs.append(www)
    p.write(os.path.join(www, "index.html"), "hello from the IPv4-only Internet\n")
    p.write(os.path.join(www, FLOW_FILE), flow_body())
    p.spawn("inet4", "http", python, "-m", "http.server", "80", "--bind", SERVER4,
            "--directory", www)  # fmt: skip
    p.spawn("inet4", "iperf3", "iperf3", "-s")
    for node in PLATS:
        p.spawn(node, node, python, "-m", "v6mostly", *plat_argv(p.path, node))
    for node in PLATS:
        p.start.append(Wait("log", node, 20, f"{node}: no bird configuration", node,
                            "bird configuration written"))  # fmt: skip
    for node in ("edge", *PLATS, "core"):
        p.spawn(node, f"bird-{node}", *bird_argv(p.path, node))
    if cfg.ha == "resilient":
        argv = ["ecmp", "--config", p.path("ecmp.toml"), "--control-socket", p.path("ecmp.sock")]
        p.spawn("core", "ecmp", python, "-m", "v6mostly", *argv)
    p.start.append(Wait("ecmp", "core", 40, "core: the Pref64 is not over both PLATs",
                        "bird-core", "2"))  # fmt: skip
    p.start.append(Wait("ready", "hclient", 20))


def plat_argv(path: Callable[[str], str], node: str) -> list[str]:
    """``v6mostly plat`` of one PLAT with the lab's files (after ``python -m v6mostly``)."""
    return ["plat", "--config", path(f"{node}.toml"), "--control-socket", path(f"{node}.sock")]


def bird_argv(path: Callable[[str], str], node: str) -> list[str]:
    """bird in the foreground with the lab's files (its log on stderr)."""
    return ["bird", "-f", "-c", path(f"{node}-bird.conf"), "-s", path(f"{node}-bird.ctl"),
            "-P", path(f"{node}-bird.pid")]  # fmt: skip


def flow_body() -> bytes:
    """What each long flow of the failover tests downloads (SHA-256 checked)."""
    return bytes(range(256)) * (FLOW_SIZE // 256)


def pref64_paths(lab: Lab) -> int:
    """How many next hops core's Pref64 route has now (group members or paths)."""
    r = lab.exec("core", ["ip", "-j", "-6", "route", "show", PREF64], check=False)
    try:
        routes = json.loads(r.stdout or "[]")
    except ValueError:
        return 0
    if not routes:
        return 0
    rt = routes[0]
    if "nhid" in rt:
        g = lab.exec("core", ["ip", "-j", "nexthop", "show", "id", str(rt["nhid"])], check=False)
        try:
            nh = json.loads(g.stdout or "[]")
        except ValueError:
            return 0
        return len(nh[0].get("group", [])) if nh else 0
    return len(rt.get("nexthops", [])) or (1 if rt.get("gateway") else 0)
