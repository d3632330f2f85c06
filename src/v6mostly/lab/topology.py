"""A whole IPv6-mostly site in network namespaces.

::

    client6                      plat                              inet4
    eth0 2001:db8:1::100/64 ---- c6 2001:db8:1::1/64
         2001:db8:1::101/64      [v6mostly plat, TUN nat64]
                                 i4 203.0.113.1/24 --------------- eth0 203.0.113.10/24
                                                                   HTTP :80, iperf3 :5201,
                                                                   DNS :53 (www.example.net A)

Pref64 2001:db8:64::/96 (network-specific; the WKP may not carry documentation
addresses, RFC 6052 §3.1). NAPT66 maps 2001:db8:1::/64 to the outer IPv6
address 2001:db8:46::1, which the translator maps (EAM) to 198.51.100.1.

Every name carries the lab's id (``v6m-ID-NODE``); the lab's state (process
ids, config, logs) lives in ``/run/v6mostly-lab/ID/``. ``down`` kills every
process inside the lab's namespaces and deletes them, which removes their
links, TUN devices, routes and nftables tables too; it works from the names
alone, so it also cleans up after a crash.

``lab up --site`` (``LabConfig.site``) builds the whole IPv6-mostly site
instead: clients ``legacy``, ``mostly`` (CLAT) and ``v6only`` on one bridged
LAN, NAT44 beside the NAT64, and an IPv6 server ``inet6``; see ``site.py``.

``up`` first plans (``plan.plan_lab``: names, links, addresses, routes,
sysctls, files and processes, as data; ``v6mostly lab plan`` prints it), then
applies that plan (``apply.apply_plan``).

The translator can be ``v6mostly`` (default), ``tayga`` (Debian's TAYGA behind
the same NAPT66 table, for comparison) or ``none`` (plain IPv6 forwarding to a
server that also has IPv6: the ceiling).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ..errors import V6mostlyError

if TYPE_CHECKING:
    from .plan import LabPlan

RUN_DIR = "/run/v6mostly-lab"
PREFIX = "v6m-"
NODES = ("client6", "plat", "inet4")
#: ``lab up --site``: three clients on one LAN (a bridge in the router node).
SITE_CLIENTS = ("legacy", "mostly", "v6only")
SITE_NODES = (*SITE_CLIENTS, "plat", "inet4", "inet6")
#: ``lab up --ha``: clients -> core (bird2 + ECMP controller) -> plat1/plat2 -> edge -> inet4
HA_NODES = ("hclient", "core", "plat1", "plat2", "edge", "inet4")
ALL_NODES = (*NODES, *SITE_CLIENTS, "inet6", "hclient", "core", "plat1", "plat2", "edge")

PREF64 = "2001:db8:64::/96"
CLIENT_NET = "2001:db8:1::/64"
CLIENT = "2001:db8:1::100"
CLIENT_B = "2001:db8:1::101"
PLAT_V6 = "2001:db8:1::1"
PLAT_V4 = "203.0.113.1"
SERVER4 = "203.0.113.10"
SERVER6_NATIVE = "2001:db8:2::10"  # only with translator "none"
OUTER6 = "2001:db8:46::1"
OUTER4 = "198.51.100.1"
XLAT6 = "2001:db8:46::fffe"
XLAT4 = "198.51.100.254"
SERVER_NAME = "www.example.net"
METRICS = "127.0.0.1:9464"
ROUTER_METRICS = "127.0.0.1:9466"
LAN4_ROUTER = "192.0.2.1"  # the client link's IPv4 (legacy clients), inside the lab only
LAN4_NET = "192.0.2.0/24"
LAN_BRIDGE = "lan0"  # the site lab's client LAN, in the plat node
SERVER6 = "2001:db8:2::10"  # the site lab's IPv6 server (inet6)
SERVER6_NAME = "www6.example.net"
SITE_TABLE = "v6mostly_lab_site"  # NAT44 and per-family forwarding counters


def server6() -> str:
    """The IPv4-only server's address as the IPv6-only client sees it (RFC 6052)."""
    net = ipaddress.IPv6Network(PREF64)
    return str(net.network_address + int(ipaddress.IPv4Address(SERVER4)))


class LabError(V6mostlyError):
    pass


def run(
    cmd: Sequence[str], check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LabError(f"{cmd[0]}: not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(cmd)}: timed out after {timeout} s") from None
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


@dataclass
class LabConfig:
    translator: str = "v6mostly"  # v6mostly | tayga | none
    queues: int = 0
    offload: bool = True
    ipv4_mtu: int = 1500  # MTU of the plat - inet4 link
    #: Turn checksum offload off on the endpoints (rx) and the router (tx), so
    #: that every checksum is really verified (a veth trusts offloaded ones).
    verify_checksums: bool = True
    metrics: bool = True
    #: Run ``v6mostly router`` on the client link: RAs with PIO and PREF64, DHCPv4
    #: with option 108 (192.0.2.0/24 for legacy clients), DNS with ipv4only.arpa
    #: and DNS64 (upstream: the IPv4-only Internet's DNS server).
    router: bool = True
    #: RPS on the translator's TUN: ``[tun] rps`` of the PLAT (True, False or "auto",
    #: v6mostly's default); tayga's TUN gets it when True.
    rps: bool | str = "auto"
    #: ``[tun] poll_us`` of the PLAT (the adaptive poll of the C loop; 0 = off).
    poll_us: int = 100
    #: ``[tun] fastpath`` of the PLAT (the in-kernel fast path for IPv4 TCP/UDP).
    fastpath: bool = True
    #: ``[tun] udp_gro_forwarding`` of the PLAT (rx-udp-gro-forwarding on its links).
    udp_gro_forwarding: bool = True
    #: The PLAT's uplink veth (``i4``, from the IPv4 Internet) receives like a NIC: GRO
    #: on (NAPI mode) and the NAPI poll in a thread (``/sys/class/net/i4/threaded``),
    #: so that a burst can queue up and be merged while the sender sends, as behind a
    #: NIC. For every translator, with rx-udp-gro-forwarding on that link too: a veth
    #: whose peer has TSO hands its NAPI only packets of local sockets, and only when it
    #: has that feature (``veth_skb_is_eligible_for_gro``), so every plane gets the
    #: same path (the ICMP replies of a ping too). The client
    #: side stays a plain veth: there the thread would split one client's packets
    #: between two paths (the eligible ones through it, the others not), and reorder
    #: them (a traceroute's probes lost hop answers), which a NIC's queue does not.
    nic_like: bool = True
    #: The whole IPv6-mostly site (see ``site.py``): clients ``legacy`` (dhcpcd without
    #: option 108: native IPv4 through NAT44), ``mostly`` (dhcpcd with option 108, then
    #: ``v6mostly clat``) and ``v6only`` on one bridged LAN, plus ``inet6``. Needs
    #: ``router`` and the ``v6mostly`` translator.
    site: bool = False
    #: Two PLATs behind ECMP (see ``ha.py``): ``resilient`` (bird2, the ECMP
    #: controller's resilient next-hop group, conntrackd) or ``plain`` (the report's
    #: setup: bird2's plain ECMP route, no state sync); "" = no HA lab.
    ha: str = ""


@dataclass
class Lab:
    id: str
    config: LabConfig = field(default_factory=LabConfig)
    pids: dict[str, int] = field(default_factory=dict)
    #: what ``up`` built (``plan.plan_lab``); None for a lab loaded from its state
    plan: LabPlan | None = field(default=None, repr=False, compare=False)

    # -- names -------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        if self.config.ha:
            return HA_NODES
        return SITE_NODES if self.config.site else NODES

    def ns(self, node: str) -> str:
        if node not in self.nodes:
            raise LabError(f"no node {node!r} (nodes: {', '.join(self.nodes)})")
        return f"{PREFIX}{self.id}-{node}"

    @property
    def dir(self) -> str:
        return os.path.join(RUN_DIR, self.id)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # -- running commands ----------------------------------------------------------

    def cmd(self, node: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(node), *argv]

    def exec(
        self, node: str, argv: Sequence[str], check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return run(self.cmd(node, argv), check=check, timeout=timeout)

    def spawn(self, node: str, name: str, argv: Sequence[str]) -> int:
        log = open(self.path(name + ".log"), "ab")  # noqa: SIM115
        p = subprocess.Popen(
            self.cmd(node, argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pids[name] = p.pid
        return p.pid

    # -- building ------------------------------------------------------------------

    def save(self) -> None:
        with open(self.path("state.json"), "w") as f:
            json.dump({"id": self.id, "config": asdict(self.config), "pids": self.pids}, f)

    def up(self) -> None:
        if self.config.site and (not self.config.router or self.config.translator != "v6mostly"):
            raise LabError("lab up --site needs the router and the v6mostly translator")
        os.makedirs(self.dir, exist_ok=True)
        for node in self.nodes:
            if os.path.exists(f"/run/netns/{self.ns(node)}"):
                raise LabError(f"namespace {self.ns(node)} already exists (lab {self.id} is up?)")
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        """Plan (``plan.py``: names, addresses, files, processes), then apply (``apply.py``)."""
        from .apply import apply_plan
        from .plan import plan_lab

        apply_plan(self, plan_lab(self.config, self.id, self.dir))

    @property
    def etc_dir(self) -> str:
        return self.etc_dir_of("client6")

    def etc_dir_of(self, node: str) -> str:
        """What ``ip netns exec`` mounts over /etc in ``node`` (resolv.conf)."""
        from .plan import etc_dir

        self.ns(node)  # a node of this lab
        return etc_dir(self.id, node)

    def site_config(self) -> str:
        """The router's site file (``configs.site_toml``)."""
        from .configs import site_toml

        return site_toml(self.id, self.config.site, self.path("leases.sqlite"))

    def plat_config(self, site: str | None = None) -> str:
        """The PLAT's file; with ``site`` the Pref64 comes from the site file (written once)."""
        from .configs import plat_toml

        return plat_toml(self.id, self.config, site)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the translator runs and the servers listen."""
        deadline = time.monotonic() + timeout
        target = SERVER6_NATIVE if self.config.translator == "none" else server6()
        client = "v6only" if self.config.site else "client6"
        if self.config.ha:
            client = "hclient"
        last = ""
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if not alive(pid):
                    raise LabError(
                        f"{name} exited at start; see {self.path(name + '.log')}: "
                        + tail(self.path(name + ".log"))
                    )
            r = self.exec(
                client,
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-m",
                    "1",
                    "-w",
                    "%{http_code}",
                    f"http://[{target}]/",
                ],
                check=False,
            )
            if r.stdout.strip() == "200":
                return
            last = r.stderr.strip() or r.stdout.strip()
            time.sleep(0.2)
        raise LabError(f"lab {self.id} not ready after {timeout:.0f} s (curl: {last})")

    # -- inspecting ----------------------------------------------------------------

    def metrics(self, node: str = "plat", listen: str = METRICS) -> dict[str, float]:
        """A daemon's Prometheus metrics (the PLAT's), read from inside its namespace."""
        from ..metrics import parse_exposition

        r = self.exec(node, [sys.executable, "-c", _SCRAPE, listen], check=False)
        return parse_exposition(r.stdout)

    def status(self) -> str:
        lines = [
            f"lab {self.id} ({'site, ' if self.config.site else ''}{self.config.translator}, queues {self.config.queues or 'auto'}, "
            f"offload {'on' if self.config.offload else 'off'})"
        ]
        for node in self.nodes:
            ns = self.ns(node)
            present = os.path.exists(f"/run/netns/{ns}")
            lines.append(f"  {node:8} {ns}: {'up' if present else 'MISSING'}")
            if present:
                r = self.exec(node, ["ip", "-br", "addr"], check=False)
                for ln in r.stdout.splitlines():
                    if not ln.startswith("lo "):
                        lines.append("           " + " ".join(ln.split()))
        for name, pid in sorted(self.pids.items()):
            lines.append(f"  process {name:8} pid {pid}: {'running' if alive(pid) else 'EXITED'}")
        return "\n".join(lines)

    # -- tearing down --------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything of this lab. Returns what was removed."""
        return destroy(self.id)


_SCRAPE = (
    "import sys, urllib.request\n"
    "try:\n"
    "    print(urllib.request.urlopen('http://' + sys.argv[1] + '/metrics', timeout=3).read().decode())\n"
    "except OSError as e:\n"
    "    sys.exit(str(e))\n"
)


def ns_cpu_seconds(ns: str) -> float:
    """user+sys CPU seconds of every process in namespace ``ns`` (benchmarks)."""
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    ticks = 0
    for tok in r.stdout.split():
        try:
            with open(f"/proc/{tok}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def dnsmasq_argv(pid_file: str, listen: str, records: list[str], local: str = "") -> list[str]:
    """A dnsmasq that answers only its own host records (no /etc files, no upstream)."""
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        f"--pid-file={pid_file}",
        "--bind-interfaces",
        f"--listen-address={listen}",
        "--log-facility=-",
    ]
    if local:
        argv.append(f"--local=/{local}/")
    return argv + [f"--host-record={r}" for r in records]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours still "exists": reap it
    try:
        p, _ = os.waitpid(pid, os.WNOHANG)
        return p == 0
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def tail(path: str, n: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-n:])
    except OSError:
        return ""


def new_id() -> str:
    return secrets.token_hex(3)


def namespaces(lab_id: str | None = None) -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    pre = f"{PREFIX}{lab_id}-" if lab_id else PREFIX
    return sorted(n for n in names if n.startswith(pre))


def lab_ids() -> list[str]:
    ids = {n[len(PREFIX) :].rsplit("-", 1)[0] for n in namespaces()}
    with contextlib.suppress(FileNotFoundError):
        ids |= set(os.listdir(RUN_DIR))
    return sorted(ids)


def load_lab(lab_id: str) -> Lab:
    try:
        with open(os.path.join(RUN_DIR, lab_id, "state.json")) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return Lab(lab_id)
    return Lab(d["id"], LabConfig(**d.get("config", {})), dict(d.get("pids", {})))


def destroy(lab_id: str) -> list[str]:
    """Kill every process in the lab's namespaces and delete them (crash-safe)."""
    from pyroute2 import netns

    removed: list[str] = []
    nss = namespaces(lab_id)
    for ns in nss:
        r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
        for tok in r.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(tok), signal.SIGTERM)
    # Give the PLAT a moment to undo its own state, then make sure.
    deadline = time.monotonic() + 3
    for ns in nss:
        while time.monotonic() < deadline:
            r = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
            )
            if not r.stdout.split():
                break
            time.sleep(0.05)
        r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
        for tok in r.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(tok), signal.SIGKILL)
    lab = load_lab(lab_id)
    for pid in lab.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    for ns in nss:
        with contextlib.suppress(OSError):
            netns.remove(ns)
            removed.append(ns)
    shutil.rmtree(os.path.join(RUN_DIR, lab_id), ignore_errors=True)
    for node in ALL_NODES:
        shutil.rmtree(f"/etc/netns/{PREFIX}{lab_id}-{node}", ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir("/etc/netns")  # only when empty: it was ours
    return removed


@contextlib.contextmanager
def running_lab(config: LabConfig | None = None, lab_id: str | None = None) -> Iterator[Lab]:
    """A lab that exists for the ``with`` block and is removed after it, also on error."""
    lab = Lab(lab_id or new_id(), config or LabConfig())
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
