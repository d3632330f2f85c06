"""The lab as data: what ``lab up`` will build, computed without touching the system.

``plan_lab(config, lab_id, lab_dir)`` returns a ``LabPlan``: the namespaces
(every name carries the lab's id), the links (veth pairs, a bridge and its
ports), the addresses, link states and routes of every node, sysctls, ethtool
offload settings, the files to write with their contents (resolv.conf under
/etc/netns, site.toml, plat.toml, ...), other commands (nft, TAYGA's TUN) and
the processes to start, in order, with the readiness checks between them.
``apply.apply_plan`` executes such a plan; ``v6mostly lab plan`` prints one.
Like ``linux/netlink.py``: a pure plan, then apply (here the undo is
``topology.destroy``, which works from the names alone).

The one thing read from outside is TAYGA's nftables table, rendered through the
project's own loader from the planned plat.toml (written to a temporary file).
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from dataclasses import dataclass, field

from .topology import (
    CLIENT,
    CLIENT_B,
    CLIENT_NET,
    HA_NODES,
    LAN4_ROUTER,
    LAN_BRIDGE,
    NODES,
    OUTER4,
    OUTER6,
    PLAT_V4,
    PLAT_V6,
    PREF64,
    PREFIX,
    SERVER4,
    SERVER6,
    SERVER6_NAME,
    SERVER6_NATIVE,
    SERVER_NAME,
    SITE_CLIENTS,
    SITE_NODES,
    XLAT4,
    XLAT6,
    LabConfig,
    LabError,
    dnsmasq_argv,
)

#: set in every namespace as it is created
NS_SYSCTLS = (
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.accept_ra=0",
    "net.ipv6.conf.default.accept_ra=0",
    # No ICMP rate limits in the lab: a traceroute's parallel probes would
    # otherwise lose answers (a lab choice; real hosts keep their limits).
    "net.ipv4.icmp_ratelimit=0",
    "net.ipv6.icmp.ratelimit=0",
)
NATIVE_GW6 = "2001:db8:2::1"  # plat's i4 with translator "none"; plat's i6 in the site lab
WWW_INDEX = "hello from the IPv4-only Internet\n"
WWW6_INDEX = "hello from the IPv6 Internet\n"
WWW_1M = bytes(range(256)) * 4096


@dataclass(frozen=True)
class Namespace:
    node: str
    name: str  # v6m-ID-NODE
    sysctls: tuple[str, ...] = NS_SYSCTLS


@dataclass(frozen=True)
class Link:
    """A veth pair (``peer`` in ``peer_node``) or a bridge (without STP, forward
    delay or multicast snooping: the CLAT's and the kernel's ND must reach every
    port at once)."""

    node: str
    ifname: str
    kind: str  # veth | bridge
    peer_node: str = ""
    peer: str = ""

    def describe(self) -> str:
        if self.kind == "bridge":
            return f"{self.node}: bridge {self.ifname} (no STP, no forward delay, no multicast snooping)"
        return f"{self.node}: veth {self.ifname} <-> {self.peer_node}: {self.peer}"


@dataclass(frozen=True)
class LinkState:
    """Bring a link up (after its addresses), with an MTU and a bridge master."""

    node: str
    ifname: str
    mtu: int = 0
    master: str = ""

    def describe(self) -> str:
        extra = (f" mtu {self.mtu}" if self.mtu else "") + (
            f" master {self.master}" if self.master else ""
        )
        return f"{self.node}: {self.ifname} up{extra}"


@dataclass(frozen=True)
class Address:
    node: str
    ifname: str
    address: str
    prefixlen: int

    def describe(self) -> str:
        return f"{self.node}: {self.ifname} {self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class Route:
    node: str
    dst: str
    gateway: str
    ifname: str

    def describe(self) -> str:
        return f"{self.node}: {self.dst} via {self.gateway} dev {self.ifname}"


@dataclass(frozen=True)
class Sysctl:
    node: str
    setting: str  # key=value

    def describe(self) -> str:
        return f"{self.node}: {self.setting}"


@dataclass(frozen=True)
class Offload:
    """``ethtool -K IFNAME FEATURE off`` (checksum offload: verify every checksum), or
    ``on`` (GRO: a veth in NAPI mode)."""

    node: str
    ifname: str
    feature: str  # rx | tx | gro | rx-udp-gro-forwarding
    on: bool = False

    @property
    def state(self) -> str:
        return "on" if self.on else "off"

    def describe(self) -> str:
        return f"{self.node}: ethtool -K {self.ifname} {self.feature} {self.state}"


@dataclass(frozen=True)
class File:
    path: str
    content: str | bytes

    def describe(self) -> str:
        if isinstance(self.content, bytes):
            return f"{self.path} ({len(self.content)} bytes)"
        return f"{self.path} ({len(self.content.splitlines())} lines)"


@dataclass(frozen=True)
class Command:
    node: str
    argv: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.node}: {shlex.join(self.argv)}"


@dataclass(frozen=True)
class Process:
    node: str
    name: str  # its log is NAME.log in the lab's directory
    argv: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.node}: {self.name}: {shlex.join(self.argv)}"


@dataclass(frozen=True)
class Wait:
    """A readiness check between processes. ``kind``: ``ready`` (curl through the
    translator from ``node``), ``dhcp4-lease`` (an IPv4 address on ``node``),
    ``log`` (``arg`` appears in ``log``.log), ``clat-active`` (the CLAT's state
    file), ``http`` (``arg``, a URL, answers 200 from ``node``)."""

    kind: str
    node: str
    timeout: float
    what: str = ""  # the error message when it times out
    log: str = ""  # whose log to show then
    arg: str = ""

    def describe(self) -> str:
        return f"wait {self.kind} {self.node} {self.arg} (up to {self.timeout:.0f} s)".replace(
            "  ", " "
        )


@dataclass
class LabPlan:
    id: str
    dir: str
    config: LabConfig
    namespaces: list[Namespace] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)
    states: list[LinkState] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    sysctls: list[Sysctl] = field(default_factory=list)
    offloads: list[Offload] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    files: list[File] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    #: started in this order; each Wait holds until its check passes
    start: list[Process | Wait] = field(default_factory=list)

    @property
    def processes(self) -> list[Process]:
        return [p for p in self.start if isinstance(p, Process)]

    def ns(self, node: str) -> str:
        for n in self.namespaces:
            if n.node == node:
                return n.name
        raise LabError(f"no node {node!r} in lab {self.id}")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def file(self, path: str) -> File:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    # -- building (small helpers that keep plan_lab readable) -----------------------

    def addr(self, node: str, ifname: str, cidr: str) -> None:
        a, plen = cidr.split("/")
        self.addresses.append(Address(node, ifname, a, int(plen)))

    def write(self, path: str, content: str | bytes) -> None:
        self.files.append(File(path, content))

    def run(self, node: str, *argv: str) -> None:
        self.commands.append(Command(node, tuple(argv)))

    def spawn(self, node: str, name: str, *argv: str) -> None:
        self.start.append(Process(node, name, tuple(argv)))

    def describe(self) -> list[str]:
        c = self.config
        out = [
            f"lab {self.id} ({'site, ' if c.site else ''}{c.translator}, "
            f"queues {c.queues or 'auto'}, offload {'on' if c.offload else 'off'}) in {self.dir}"
        ]
        sections: list[tuple[str, list[str]]] = [
            ("namespaces", [f"{n.node}: {n.name}" for n in self.namespaces]),
            ("links", [x.describe() for x in self.links]),
            ("addresses", [x.describe() for x in self.addresses]),
            ("links up", [x.describe() for x in self.states]),
            ("routes", [x.describe() for x in self.routes]),
            ("sysctls (every namespace)", list(NS_SYSCTLS)),
            ("sysctls", [x.describe() for x in self.sysctls]),
            ("offloads", [x.describe() for x in self.offloads]),
            ("files", [x.describe() for x in self.files]),
            ("commands", [x.describe() for x in self.commands]),
            ("processes", [x.describe() for x in self.start]),
        ]
        for title, lines in sections:
            if lines:
                out.append(f"{title}:")
                out += [f"  {ln}" for ln in lines]
        return out


def ns_name(lab_id: str, node: str) -> str:
    return f"{PREFIX}{lab_id}-{node}"


def etc_dir(lab_id: str, node: str) -> str:
    """What ``ip netns exec`` mounts over /etc in ``node`` (resolv.conf)."""
    return f"/etc/netns/{ns_name(lab_id, node)}"


def plan_lab(config: LabConfig, lab_id: str, lab_dir: str, python: str = sys.executable) -> LabPlan:
    """Everything ``lab up`` does, as data (the standard lab or ``config.site``)."""
    cfg = config
    if cfg.translator not in ("v6mostly", "tayga", "none"):
        raise LabError(f"translator {cfg.translator!r}: expected v6mostly, tayga or none")
    if cfg.site and (not cfg.router or cfg.translator != "v6mostly"):
        raise LabError("lab up --site needs the router and the v6mostly translator")
    if cfg.ha and (cfg.ha not in ("resilient", "plain") or cfg.site):
        raise LabError(f"ha {cfg.ha!r}: expected resilient or plain, without --site")
    p = LabPlan(lab_id, lab_dir, cfg)
    nodes = HA_NODES if cfg.ha else SITE_NODES if cfg.site else NODES
    p.namespaces = [Namespace(n, ns_name(lab_id, n)) for n in nodes]
    if cfg.ha:
        from .ha import plan_ha

        plan_ha(p, python)
    elif cfg.site:
        _plan_site(p, python)
    else:
        _plan_standard(p, python)
    return p


def _plan_standard(p: LabPlan, python: str) -> None:
    cfg = p.config
    none = cfg.translator == "none"
    p.links += [
        Link("plat", "c6", "veth", "client6", "eth0"),
        Link("plat", "i4", "veth", "inet4", "eth0"),
    ]
    p.states.append(LinkState("plat", "lo"))
    p.addr("plat", "c6", f"{PLAT_V6}/64")
    if cfg.router:
        p.addr("plat", "c6", f"{LAN4_ROUTER}/24")
    p.addr("plat", "i4", f"{PLAT_V4}/24")
    if none:
        p.addr("plat", "i4", f"{NATIVE_GW6}/64")
    p.states += [LinkState("plat", "c6"), LinkState("plat", "i4", mtu=cfg.ipv4_mtu)]
    p.states.append(LinkState("client6", "lo"))
    p.addr("client6", "eth0", f"{CLIENT}/64")
    p.addr("client6", "eth0", f"{CLIENT_B}/64")
    p.states.append(LinkState("client6", "eth0"))
    p.routes.append(Route("client6", "::/0", PLAT_V6, "eth0"))
    if cfg.router:
        # The client listens to our RAs (SLAAC, PREF64, RDNSS) and resolves through
        # the router's DNS: /etc/netns/NAME/ is what `ip netns exec` mounts over /etc.
        p.sysctls.append(Sysctl("client6", "net.ipv6.conf.eth0.accept_ra=1"))
        p.write(f"{etc_dir(p.id, 'client6')}/resolv.conf", f"nameserver {PLAT_V6}\n")
    p.states.append(LinkState("inet4", "lo"))
    p.addr("inet4", "eth0", f"{SERVER4}/24")
    if none:
        p.addr("inet4", "eth0", f"{SERVER6_NATIVE}/64")
    p.states.append(LinkState("inet4", "eth0", mtu=cfg.ipv4_mtu))
    p.routes.append(Route("inet4", "198.51.100.0/24", PLAT_V4, "eth0"))
    if none:
        p.routes.append(Route("inet4", CLIENT_NET, NATIVE_GW6, "eth0"))
    if cfg.verify_checksums:
        p.offloads += [
            Offload("client6", "eth0", "rx"),
            Offload("inet4", "eth0", "rx"),
            Offload("plat", "c6", "tx"),
            Offload("plat", "i4", "tx"),
        ]
    if cfg.nic_like:
        # The PLAT's uplink receives like a NIC: in NAPI mode (GRO on) with the poll in a
        # thread of its own, apart from the sender's send (a veth's default runs the
        # whole receive path inside the sender's sendmsg()). A veth takes that path
        # only for what its GRO could merge (see LabConfig.nic_like).
        # rx-udp-gro-forwarding too, for every translator: the same packets take the
        # thread whichever translator runs (v6mostly's would turn it on by itself).
        p.offloads.append(Offload("plat", "i4", "gro", on=True))
        p.offloads.append(Offload("plat", "i4", "rx-udp-gro-forwarding", on=True))
        p.run("plat", "sh", "-c", "echo 1 > /sys/class/net/i4/threaded")
    _plan_servers(p, python)
    if cfg.router:
        _plan_router(p, python)
    if cfg.translator == "v6mostly":
        _plan_v6mostly(p, python)
    elif cfg.translator == "tayga":
        _plan_tayga(p)
    else:
        p.sysctls.append(Sysctl("plat", "net.ipv6.conf.all.forwarding=1"))
    p.start.append(Wait("ready", "client6", 20.0))


def _plan_servers(p: LabPlan, python: str, extra_records: tuple[str, ...] = ()) -> None:
    www = p.path("www")
    p.dirs.append(www)
    p.write(os.path.join(www, "index.html"), WWW_INDEX)
    p.write(os.path.join(www, "1m.bin"), WWW_1M)
    bind = SERVER6_NATIVE if p.config.translator == "none" else SERVER4
    p.spawn("inet4", "http", python, "-m", "http.server", "80", "--bind", bind, "--directory", www)
    p.spawn("inet4", "iperf3", "iperf3", "-s")
    records = [f"{SERVER_NAME},{SERVER4}", *extra_records]
    dns = dnsmasq_argv(p.path("dnsmasq.pid"), SERVER4, records, local="example.net")
    p.spawn("inet4", "dns", *dns)


def _plan_router(p: LabPlan, python: str) -> None:
    from .configs import site_toml

    conf = p.path("site.toml")
    p.write(conf, site_toml(p.id, p.config.site, p.path("leases.sqlite")))
    argv = ["router", "--config", conf, "--control-socket", p.path("router.sock")]
    p.spawn("plat", "router", python, "-m", "v6mostly", *argv)


def _plan_v6mostly(p: LabPlan, python: str) -> None:
    from .configs import plat_toml

    conf = p.path("plat.toml")
    site = p.path("site.toml") if p.config.router else None
    p.write(conf, plat_toml(p.id, p.config, site))
    argv = ["plat", "--config", conf, "--control-socket", p.path("plat.sock")]
    p.spawn("plat", "plat", python, "-m", "v6mostly", *argv)


def _tayga_nft(plat_conf: str) -> str:
    """The NAPT66 table in front of TAYGA, rendered from the PLAT's file."""
    from ..config import load
    from ..services.plat_rules import render_plat_table

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "plat.toml")
        with open(path, "w") as f:
            f.write(plat_conf)
        return render_plat_table(load(path, plat=True))


def _plan_tayga(p: LabPlan) -> None:
    """TAYGA as the translator, behind the same NAPT66 table."""
    from .configs import plat_toml

    conf = plat_toml(p.id, p.config, None)
    p.write(p.path("plat.toml"), conf)
    data = p.path("tayga")
    p.dirs.append(data)
    tconf = p.path("tayga.conf")
    p.write(
        tconf,
        f"tun-device nat64\nipv4-addr {XLAT4}\nipv6-addr {XLAT6}\n"
        f"prefix {PREF64}\nmap {OUTER4} {OUTER6}\ndata-dir {data}\n",
    )
    p.run("plat", "tayga", "--config", tconf, "--mktun")
    p.run("plat", "ip", "link", "set", "nat64", "up", "txqueuelen", "10000")
    if p.config.rps is True:
        mask = f"{(1 << (os.cpu_count() or 1)) - 1:x}"
        p.run("plat", "sh", "-c", f"echo {mask} > /sys/class/net/nat64/queues/rx-0/rps_cpus")
    for r in (PREF64, f"{OUTER4}/32", f"{XLAT4}/32", f"{XLAT6}/128"):
        p.run("plat", "ip", "route", "add", r, "dev", "nat64")
    p.sysctls.append(Sysctl("plat", "net.ipv4.ip_forward=1"))
    p.sysctls.append(Sysctl("plat", "net.ipv6.conf.all.forwarding=1"))
    p.write(p.path("nft.conf"), _tayga_nft(conf))
    p.run("plat", "nft", "-f", p.path("nft.conf"))
    p.spawn("plat", "tayga", "tayga", "--config", tconf, "--nodetach")


def _plan_site(p: LabPlan, python: str) -> None:
    """``lab up --site``: see ``site.py``."""
    from .site import _DHCPCD, CLAT_METRICS, DHCPCD_CONF, INET6_GW, site_nft

    cfg = p.config
    p.states.append(LinkState("plat", "lo"))
    p.links.append(Link("plat", LAN_BRIDGE, "bridge"))
    for node in SITE_CLIENTS:
        p.links.append(Link("plat", f"l-{node}", "veth", node, "eth0"))
        p.states.append(LinkState("plat", f"l-{node}", master=LAN_BRIDGE))
    p.links += [
        Link("plat", "i4", "veth", "inet4", "eth0"),
        Link("plat", "i6", "veth", "inet6", "eth0"),
    ]
    p.addr("plat", LAN_BRIDGE, f"{PLAT_V6}/64")
    p.addr("plat", LAN_BRIDGE, f"{LAN4_ROUTER}/24")
    p.addr("plat", "i4", f"{PLAT_V4}/24")
    p.addr("plat", "i6", f"{INET6_GW}/64")
    p.states += [
        LinkState("plat", LAN_BRIDGE),
        LinkState("plat", "i4", mtu=cfg.ipv4_mtu),
        LinkState("plat", "i6"),
    ]
    for node in SITE_CLIENTS:
        p.states += [LinkState(node, "lo"), LinkState(node, "eth0")]
        p.sysctls.append(Sysctl(node, "net.ipv6.conf.eth0.accept_ra=1"))
        p.write(f"{etc_dir(p.id, node)}/resolv.conf", f"nameserver {PLAT_V6}\nsearch example.net\n")
    p.states.append(LinkState("inet4", "lo"))
    p.addr("inet4", "eth0", f"{SERVER4}/24")
    p.states.append(LinkState("inet4", "eth0", mtu=cfg.ipv4_mtu))
    p.routes.append(Route("inet4", "198.51.100.0/24", PLAT_V4, "eth0"))
    p.states.append(LinkState("inet6", "lo"))
    p.addr("inet6", "eth0", f"{SERVER6}/64")
    p.states.append(LinkState("inet6", "eth0"))
    p.routes.append(Route("inet6", "::/0", INET6_GW, "eth0"))
    if cfg.verify_checksums:
        for node in (*SITE_CLIENTS, "inet4", "inet6"):
            p.offloads.append(Offload(node, "eth0", "rx"))
        for port in (*(f"l-{n}" for n in SITE_CLIENTS), "i4", "i6"):
            p.offloads.append(Offload("plat", port, "tx"))
    # NAT44 (and the counters) before anything forwards.
    p.sysctls.append(Sysctl("plat", "net.ipv4.ip_forward=1"))
    p.sysctls.append(Sysctl("plat", "net.ipv6.conf.all.forwarding=1"))
    p.write(p.path("site-nft.conf"), site_nft())
    p.run("plat", "nft", "-f", p.path("site-nft.conf"))
    _plan_servers(p, python, extra_records=(f"{SERVER6_NAME},{SERVER6}",))
    www6 = p.path("www6")
    p.dirs.append(www6)
    p.write(os.path.join(www6, "index.html"), WWW6_INDEX)
    p.spawn(
        "inet6", "http6", python, "-m", "http.server", "80", "--bind", SERVER6, "--directory", www6
    )
    _plan_router(p, python)
    _plan_v6mostly(p, python)
    # v6only: SLAAC, RA default route, DNS64 address via the PLAT
    p.start.append(Wait("ready", "v6only", 30.0))
    for node in ("legacy", "mostly"):
        p.spawn(node, f"dhcpcd-{node}", "sh", "-c", _DHCPCD, "sh", DHCPCD_CONF[node])
    p.start += [
        Wait("dhcp4-lease", "legacy", 30, "legacy: no DHCPv4 lease", "dhcpcd-legacy"),
        Wait("log", "mostly", 30, "mostly: dhcpcd saw no option 108", "dhcpcd-mostly",
             "IPv6-Only Preferred received"),
    ]  # fmt: skip
    p.spawn(
        "mostly", "clat", python, "-m", "v6mostly", "clat", "--interface", "eth0",
        "--state-dir", p.path("clat"), "--metrics", CLAT_METRICS,
    )  # fmt: skip
    p.start += [
        Wait("clat-active", "mostly", 30, "mostly: CLAT not active", "clat"),
        Wait("http", "mostly", 20, "mostly: no IPv4 through CLAT -> PLAT", "clat",
             f"http://{SERVER4}/"),
    ]  # fmt: skip
