"""`v6mostly router` against real clients in namespaces: dhcpcd, dhclient, udhcpc,
the kernel's SLAAC, tshark and dig.

Topology per test: a router namespace (lan0: 198.51.100.1/24, 2001:db8:1::1/64)
and a client namespace (eth0), joined by a veth; names carry a per-run id and
are removed at the end, also on failure. Every DHCP client runs in its own
mount namespace (`ip netns exec` gives one) with tmpfs over /run and its lease
directory, and with our own hook script, so the host's resolv.conf and lease
files are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.lab_helpers import NamespaceSet, require_root, stop, wait_for
from v6mostly.lab.topology import dnsmasq_argv
from v6mostly.metrics import parse_exposition

pytestmark = pytest.mark.integration

SITE = """
[site]
pref64 = "2001:db8:64::/96"

[[interface]]
name = "lan0"
prefixes = ["2001:db8:1::/64"]
rdnss = ["2001:db8:1::1"]
dnssl = ["example.net"]
max_interval = 4
pref64_lifetime = 600

[interface.dhcp4]
subnet = "198.51.100.0/24"
pool = ["198.51.100.100-198.51.100.199"]
routers = ["198.51.100.1"]
dns = ["198.51.100.1"]
lease_time = {lease_time}
v6only = true
v6only_wait = 300

[[class]]
name = "legacy-lab"
mac_prefix = ["02:00:5e"]
v6only = false

[dhcp4]
lease_db = "{dir}/leases.sqlite"

[dns]
listen = ["2001:db8:1::1", "198.51.100.1"]
allow = ["2001:db8:1::/64", "198.51.100.0/24"]
{dns_extra}

[metrics]
listen = "127.0.0.1:9466"
"""


@dataclass
class Site:
    nss: NamespaceSet
    dir: Path
    router: subprocess.Popen[bytes] | None = None

    @property
    def id(self) -> str:
        return self.nss.id

    @property
    def rtr(self) -> str:
        return self.nss.ns("rtr")

    @property
    def cl(self) -> str:
        return self.nss.ns("cl")

    def run(
        self, ns: str, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} in {ns}: {r.stderr or r.stdout}")
        return r

    def start_router(self) -> None:
        log = (self.dir / "router.log").open("ab")
        self.router = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.rtr,
                sys.executable,
                "-m",
                "v6mostly",
                "router",
                "--config",
                str(self.dir / "site.toml"),
                "--control-socket",
                str(self.dir / "router.sock"),
                "-v",  # one log line per DHCP decision
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        assert wait_for(lambda: "router running" in self.log()), self.log()

    def log(self) -> str:
        return (self.dir / "router.log").read_text()

    def metrics(self) -> dict[str, float]:
        r = self.run(self.rtr, "curl", "-s", "http://127.0.0.1:9466/metrics", check=False)
        return parse_exposition(r.stdout)

    def client(self, script: str, name: str) -> subprocess.Popen[str]:
        """A DHCP client in the client namespace with private /run and lease dirs."""
        wrapped = (
            "mount -t tmpfs none /run && mount -t tmpfs none /var/lib/dhcpcd && "
            "mount -t tmpfs none /var/lib/dhcp 2>/dev/null; exec " + script
        )
        f = (self.dir / f"{name}.out").open("w")
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.cl, "sh", "-c", wrapped],
            stdout=f,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        f.close()
        return p

    def out(self, name: str) -> str:
        p = self.dir / f"{name}.out"
        return p.read_text() if p.exists() else ""


def _cleanup(site: Site) -> None:
    site.nss.close()


def site_text(tmp_path: Path, lease_time: int = 3600, dns_extra: str = "") -> str:
    return SITE.format(dir=tmp_path, lease_time=lease_time, dns_extra=dns_extra)


def make_site(
    tmp_path: Path, lease_time: int = 3600, client_mac: str | None = None, dns_extra: str = ""
) -> Site:
    s = Site(NamespaceSet("v6m"), tmp_path)
    (tmp_path / "site.toml").write_text(site_text(tmp_path, lease_time, dns_extra))
    try:
        s.nss.add("rtr", "cl")
        s.nss.veth("rtr", "lan0", "cl", "eth0", up=False)
        s.run(s.rtr, "ip", "addr", "add", "198.51.100.1/24", "dev", "lan0")
        s.run(s.rtr, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "lan0")
        s.run(s.rtr, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        s.run(s.rtr, "ip", "link", "set", "lan0", "up")
        if client_mac:
            s.run(s.cl, "ip", "link", "set", "eth0", "address", client_mac)
        s.run(s.cl, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=2")
        s.run(s.cl, "ip", "link", "set", "eth0", "up")
    except BaseException:
        s.nss.close()  # nothing left behind when the build fails half way
        raise
    return s


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    require_root()
    s = make_site(tmp_path)
    try:
        s.start_router()
        yield s
    finally:
        _cleanup(s)
    assert subprocess.run(["ip", "netns", "pids", s.rtr], capture_output=True).returncode != 0


HOOK = """#!/bin/sh
echo "reason=$reason$1 ip=$new_ip_address$ip v6only=$new_v6_only_preferred" >> {log}
# udhcpc passes the event as $1 and expects the script to configure the address
case "$1" in
  bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;;
  deconfig) ip -4 addr flush dev "$interface" ;;
esac
exit 0
"""


def hook(site: Site, name: str) -> Path:
    p = site.dir / f"{name}-hook.sh"
    p.write_text(HOOK.format(log=site.dir / f"{name}.hook"))
    p.chmod(0o755)
    return p


def test_dhcpcd_gets_ipv6_only_preferred_and_no_ipv4(site: Site) -> None:
    conf = site.dir / "dhcpcd.conf"
    conf.write_text("option ipv6_only_preferred\nnoipv6rs\nnoipv6\n")
    p = site.client(f"dhcpcd -B -d -4 -f {conf} -c {hook(site, 'dhcpcd')} eth0", "dhcpcd")
    try:
        assert wait_for(
            lambda: "IPv6-Only Preferred received (300 seconds)" in site.out("dhcpcd"), 20
        ), site.out("dhcpcd")
        time.sleep(2)  # give it the time to (wrongly) configure anything
        addrs = site.run(site.cl, "ip", "-4", "addr", "show", "dev", "eth0").stdout
        assert "inet " not in addrs  # no IPv4 address, and no 169.254 IPv4LL either
        assert "told IPv6-only for 300 s on lan0 (option 108, RFC 8925; subnet lan0)" in site.log()
        assert site.metrics()['v6mostly_dhcp4_clients{path="ipv6_only"}'] == 1
        assert site.metrics()['v6mostly_dhcp4_clients_seen{asks_108="yes"}'] == 1
    finally:
        stop(p, resend=0.5)
    assert "IPv4LL disabled" in site.out("dhcpcd")
    m = site.metrics()
    assert m['v6mostly_dhcp4_offers_total{v6only="yes"}'] >= 1
    assert m['v6mostly_dhcp4_leases_in_use{subnet="lan0"}'] == 0


def test_dhclient_hook_runs_with_reason_v6only(site: Site) -> None:
    conf = site.dir / "dhclient.conf"
    conf.write_text("request subnet-mask, routers, domain-name-servers, v6-only-preferred;\n")
    d = site.dir
    p = site.client(
        f"dhclient -d -4 -v -cf {conf} -lf {d}/dhclient.leases -pf {d}/dhclient.pid "
        f"-sf {hook(site, 'dhclient')} eth0",
        "dhclient",
    )
    try:
        assert wait_for(lambda: "reason=V6ONLY" in _read(d / "dhclient.hook"), 20), site.out(
            "dhclient"
        )
    finally:
        stop(p, resend=0.5)
    assert "v6 only preferred for 300" in site.out("dhclient")


def _read(p: Path) -> str:
    return p.read_text() if p.exists() else ""


def test_udhcpc_legacy_client_gets_a_lease_renews_and_releases(site: Site) -> None:
    p = site.client(
        f"busybox udhcpc -i eth0 -f -s {hook(site, 'udhcpc')} -x hostname:legacy", "udhcpc"
    )
    hook_log = site.dir / "udhcpc.hook"
    try:
        assert wait_for(lambda: "ip=198.51.100.1" in _read(hook_log), 20), site.out("udhcpc")
        assert wait_for(
            lambda: site.metrics().get('v6mostly_dhcp4_leases_in_use{subnet="lan0"}') == 1
        )
        os.kill(p.pid, signal.SIGUSR1)  # udhcpc: renew
        assert wait_for(
            lambda: site.metrics().get('v6mostly_dhcp4_requests_total{type="REQUEST"}', 0) >= 2
        )
        os.kill(p.pid, signal.SIGUSR2)  # udhcpc: release
        assert wait_for(
            lambda: site.metrics().get('v6mostly_dhcp4_requests_total{type="RELEASE"}', 0) == 1
        )
        assert site.metrics()['v6mostly_dhcp4_leases_in_use{subnet="lan0"}'] == 0
    finally:
        p.kill()
        p.wait(10)
    assert "lease of 198.51.100." in site.out("udhcpc")


def test_opt_out_class_client_asking_for_108_gets_a_lease(tmp_path: Path) -> None:
    require_root()
    s = make_site(tmp_path, client_mac="02:00:5e:00:00:01")
    try:
        s.start_router()
        conf = s.dir / "dhcpcd.conf"
        conf.write_text("option ipv6_only_preferred\nnoipv6rs\nnoipv6\nnoarp\n")
        p = s.client(f"dhcpcd -B -d -4 -f {conf} -c {hook(s, 'dhcpcd')} eth0", "dhcpcd")
        try:
            assert wait_for(lambda: "leased 198.51.100." in s.out("dhcpcd"), 20), s.out("dhcpcd")
            assert "IPv6-Only Preferred" not in s.out("dhcpcd")
            assert "198.51.100." in s.run(s.cl, "ip", "-4", "addr").stdout
            _ctl_checks(s)
            assert "lease given: 198.51.100." in s.log() and "02:00:5e:00:00:01 on lan0" in s.log()
            assert "(no option 108: class legacy-lab: v6only off)" in s.log()
        finally:
            stop(p, resend=0.5)
    finally:
        _cleanup(s)


def _ctl(s: Site, *args: str) -> subprocess.CompletedProcess[str]:
    sock = str(s.dir / "router.sock")
    argv = [sys.executable, "-m", "v6mostly", "ctl", "--socket", sock, *args]
    return s.run(s.rtr, *argv, check=False)


def _ctl_checks(s: Site) -> None:
    """`v6mostly ctl` against the running router: who has which lease, why a client
    was not told IPv6-only, counters, and a reload naming what needs a restart."""
    st = json.loads(_ctl(s, "--json", "status").stdout)[str(s.dir / "router.sock")]
    assert st["daemon"] == "router" and st["pref64"] == "2001:db8:64::/96"
    assert st["interfaces"] == ["lan0"] and st["leases"] == 1
    out = _ctl(s, "leases").stdout
    assert "router: 1 lease(s)" in out and "02:00:5e:00:00:01  lan0" in out, out
    out = _ctl(s, "leases", "--v6only").stdout
    assert "02:00:5e:00:00:01  lan0       not IPv6-only" in out, out
    assert "(class legacy-lab: v6only off)" in out
    m = s.metrics()
    assert m['v6mostly_dhcp4_pool_size{subnet="lan0"}'] == 100
    assert m['v6mostly_dhcp4_clients{path="dual_stack"}'] == 1
    assert m['v6mostly_dhcp4_clients{path="ipv6_only"}'] == 0
    assert m['v6mostly_dhcp4_clients_seen{asks_108="yes"}'] == 1  # asked, class said no
    key = 'v6mostly_dhcp4_v6only_decisions_total{reason="class legacy-lab: v6only off",told_ipv6_only="no"}'
    assert m[key] >= 1, {k: v for k, v in m.items() if "decisions" in k}
    assert m['v6mostly_ra_send_errors_total{interface="lan0"}'] == 0
    assert m["process_open_fds"] > 0 and any(k.startswith("v6mostly_build_info{") for k in m)
    out = _ctl(s, "stats", "--all").stdout
    assert "dhcp4_requests_DISCOVER" in out and "dns_ipv4only" in out, out
    r = _ctl(s, "reload")
    assert r.returncode == 0 and "router: reloaded: " in r.stdout and "applied" in r.stdout
    conf = s.dir / "site.toml"
    conf.write_text(
        conf.read_text().replace('allow = ["2001:db8:1::/64"', 'allow = ["2001:db8:1::/60"')
    )
    r = _ctl(s, "reload")
    assert r.returncode == 0 and "needs a restart: [dns]" in r.stdout, r.stdout
    conf.write_text(conf.read_text().replace("[dns]", "[dns]\nbogus = 1"))
    r = _ctl(s, "reload")
    assert r.returncode == 1 and "NOT reloaded: keeping the running configuration" in r.stdout


def test_a_second_dhcp4_server_on_the_same_link_refuses_to_start(site: Site) -> None:
    """Two DHCPv4 servers on one link both answered, from two lease databases: the
    second one now exits at start, naming the first."""
    other = site.dir / "other.toml"
    other.write_text(
        (site.dir / "site.toml")
        .read_text()
        .replace("leases.sqlite", "other.sqlite")
        .replace("127.0.0.1:9466", "127.0.0.1:9476")
        .replace("[dns]", "[dns]\nport = 5353")
    )
    argv = [sys.executable, "-m", "v6mostly", "dhcp4", "--config", str(other),
            "--control-socket", str(site.dir / "other.sock")]  # fmt: skip
    r = site.run(site.rtr, *argv, check=False, timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "interface lan0: another dhcp4 server (pid " in r.stderr, r.stderr
    assert site.router is not None and site.router.poll() is None  # the first one runs on


def test_ra_pref64_decoded_by_tshark_and_slaac_default_route(site: Site) -> None:
    fields = (
        "icmpv6.opt.pref64.prefix",
        "icmpv6.opt.pref64.plc",
        "icmpv6.opt.pref64.scaled_lifetime",
        "icmpv6.opt.prefix",
    )
    rows = _capture_ras(site, 8, fields=fields)
    assert rows, "no RA captured"
    prefix, plc, scaled, pio = rows[0]
    assert prefix == "2001:db8:64::" and int(plc, 0) == 0 and int(scaled, 0) == 75  # 600 s / 8
    assert pio == "2001:db8:1::"
    addrs = site.run(site.cl, "ip", "-6", "addr", "show", "dev", "eth0").stdout
    assert "2001:db8:1:0:" in addrs  # SLAAC from our PIO
    route = site.run(site.cl, "ip", "-6", "route", "show", "default").stdout
    assert "via fe80::" in route and "dev eth0" in route


def test_dig_ipv4only_arpa_udp_and_tcp(site: Site) -> None:
    # the client's address comes from our RA (SLAAC)
    assert wait_for(lambda: "2001:db8:1:0:" in site.run(site.cl, "ip", "-6", "addr").stdout, 15)
    for extra in ([], ["+tcp"]):
        r = site.run(site.cl, "dig", "+short", *extra, "@2001:db8:1::1", "ipv4only.arpa", "AAAA")
        assert sorted(r.stdout.split()) == ["2001:db8:64::c000:aa", "2001:db8:64::c000:ab"]
    r = site.run(site.cl, "ip", "addr", "add", "198.51.100.50/24", "dev", "eth0")
    r = site.run(site.cl, "dig", "@198.51.100.1", "www.example.net", "A")
    assert "status: REFUSED" in r.stdout  # no upstream configured: not an open resolver


def test_leases_survive_kill_9(tmp_path: Path) -> None:
    require_root()
    s = make_site(tmp_path)
    try:
        s.start_router()
        p = s.client(f"busybox udhcpc -i eth0 -f -n -q -s {hook(s, 'a')}", "a")
        p.wait(20)
        assert "ip=198.51.100.100" in _read(s.dir / "a.hook")
        assert s.router is not None
        s.router.send_signal(signal.SIGKILL)
        s.router.wait(5)
        subprocess.run(["ip", "netns", "exec", s.rtr, "true"])
        rows = list(
            sqlite3.connect(s.dir / "leases.sqlite").execute("SELECT address, state FROM leases")
        )
        assert rows == [(int.from_bytes(bytes([198, 51, 100, 100]), "big"), "bound")]
        (s.dir / "router.log").write_text("")
        s.start_router()
        s.run(s.cl, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:77")
        p = s.client(f"busybox udhcpc -i eth0 -f -n -q -s {hook(s, 'b')}", "b")
        p.wait(20)
        assert "ip=198.51.100.101" in _read(s.dir / "b.hook")  # .100 is still taken
    finally:
        _cleanup(s)


def test_router_dry_run_and_config_error(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(site_text(tmp_path))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "v6mostly",
            "router",
            "--config",
            str(tmp_path / "site.toml"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    assert "PREF64 2001:db8:64::/96 lifetime 600 s (scaled 75)" in r.stdout
    assert "option 108 (V6ONLY_WAIT 300 s)" in r.stdout
    bad = site_text(tmp_path).replace("v6only_wait = 300", "v6only_wait = 30")
    (tmp_path / "bad.toml").write_text(bad)
    r = subprocess.run(
        [sys.executable, "-m", "v6mostly", "router", "--config", str(tmp_path / "bad.toml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f'v6mostly: error: {tmp_path}/bad.toml: [interface "lan0" dhcp4] v6only_wait = 30: '
        "RFC 8925 §3.4: at least MIN_V6ONLY_WAIT (300 s)"
    )


RA_FIELDS = (
    "icmpv6.opt.pref64.prefix",
    "icmpv6.opt.pref64.scaled_lifetime",
    "icmpv6.nd.ra.router_lifetime",
)


def _capture_ras(
    site: Site, seconds: int, during: object = None, fields: tuple[str, ...] = RA_FIELDS
) -> list[list[str]]:
    """Capture on the client for ``seconds`` (calling ``during`` meanwhile); the RAs as
    tshark decodes them, one row of ``fields`` per RA."""
    pcap = site.dir / f"ra-{time.monotonic_ns()}.pcap"
    cap = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            site.cl,
            "tshark",
            "-q",
            "-i",
            "eth0",
            "-a",
            f"duration:{seconds}",
            "-f",
            "icmp6",
            "-w",
            str(pcap),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # tshark writes the file header once it captures: wait for that, not a fixed time
    # (on a loaded machine its start-up alone can take seconds).
    wait_for(lambda: pcap.exists() and pcap.stat().st_size > 0, 20)
    time.sleep(0.5)
    if callable(during):
        during()
    cap.wait(seconds + 40)
    argv = ["tshark", "-r", str(pcap), "-Y", "icmpv6.type == 134", "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()]


def test_sighup_withdraws_the_old_pref64_and_stop_sends_lifetime_zero(site: Site) -> None:
    conf = site.dir / "site.toml"
    conf.write_text(
        conf.read_text().replace('pref64 = "2001:db8:64::/96"', 'pref64 = "2001:db8:65::/96"')
    )
    assert site.router is not None
    rows = _capture_ras(site, 8, lambda: os.kill(site.router.pid, signal.SIGHUP))  # type: ignore[union-attr]
    seen = [(r[0], r[1]) for r in rows]
    # the withdrawn prefix with lifetime 0 next to the new one (tshark joins them with ",")
    assert any(p == "2001:db8:65::,2001:db8:64::" and lt.endswith(",0") for p, lt in seen), seen
    assert "SIGHUP: configuration reloaded" in site.log()
    rows = _capture_ras(site, 4, lambda: site.router.terminate())  # type: ignore[union-attr]
    assert rows and rows[-1][2] == "0", rows  # the final RA: router lifetime 0


def test_sighup_applies_interface_changes_to_the_next_ras(site: Site) -> None:
    """[[interface]]: a new DNSSL and RDNSS go out in the RAs right after the reload."""
    conf = site.dir / "site.toml"
    conf.write_text(
        conf.read_text()
        .replace('dnssl = ["example.net"]', 'dnssl = ["reloaded.example"]')
        .replace('rdnss = ["2001:db8:1::1"]', 'rdnss = ["2001:db8:1::53"]')
    )
    r = []

    def reload() -> None:
        r.append(_ctl(site, "reload"))

    fields = ("icmpv6.opt.dnssl", "icmpv6.opt.rdnss")
    rows = _capture_ras(site, 6, reload, fields=fields)
    assert r and r[0].returncode == 0 and "applied" in r[0].stdout, r
    assert any("reloaded.example" in row[0] and "2001:db8:1::53" in row[1] for row in rows), rows


def test_sighup_applies_class_changes(tmp_path: Path) -> None:
    """[[class]]: the legacy class turned to v6only = true; the same client, asking for
    108 again, is now told IPv6-only (before the reload it got a lease)."""
    require_root()
    s = make_site(tmp_path, client_mac="02:00:5e:00:00:01")
    try:
        s.start_router()
        conf = s.dir / "dhcpcd.conf"
        conf.write_text("option ipv6_only_preferred\nnoipv6rs\nnoipv6\nnoarp\n")
        cmd = f"dhcpcd -B -d -4 -f {conf} -c {hook(s, 'dhcpcd')} eth0"
        p = s.client(cmd, "dhcpcd")
        try:
            assert wait_for(lambda: "leased 198.51.100." in s.out("dhcpcd"), 20), s.out("dhcpcd")
        finally:
            stop(p, resend=0.5)
        site_toml = s.dir / "site.toml"
        text = site_toml.read_text()
        assert 'mac_prefix = ["02:00:5e"]\nv6only = false' in text
        site_toml.write_text(
            text.replace(
                'mac_prefix = ["02:00:5e"]\nv6only = false',
                'mac_prefix = ["02:00:5e"]\nv6only = true',
            )
        )
        r = _ctl(s, "reload")
        assert r.returncode == 0 and "applied" in r.stdout, r.stdout + r.stderr
        s.run(s.cl, "ip", "-4", "addr", "flush", "dev", "eth0")
        p = s.client(cmd, "dhcpcd2")
        try:
            assert wait_for(lambda: "IPv6-Only Preferred received" in s.out("dhcpcd2"), 20), s.out(
                "dhcpcd2"
            )
        finally:
            stop(p, resend=0.5)
        out = _ctl(s, "leases", "--v6only").stdout
        assert "02:00:5e:00:00:01  lan0       IPv6-only" in out and "(class legacy-lab)" in out, out
    finally:
        _cleanup(s)


def test_dns_forwarding_and_dns64_with_a_real_upstream(tmp_path: Path) -> None:
    require_root()
    s = make_site(tmp_path, dns_extra='upstream = "127.0.0.1"\ndns64 = true')
    try:
        argv = dnsmasq_argv(
            f"{tmp_path}/dnsmasq.pid",
            "127.0.0.1",
            ["v4only.example.net,203.0.113.7", "dual.example.net,203.0.113.8,2001:db8:2::8"],
            local="example.net",  # NODATA, not REFUSED, for the AAAA of a v4-only name
        )
        up = subprocess.Popen(
            ["ip", "netns", "exec", s.rtr, *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        s.start_router()
        assert wait_for(lambda: "2001:db8:1:0:" in s.run(s.cl, "ip", "-6", "addr").stdout, 15)
        dig = ["dig", "+short", "+time=2", "@2001:db8:1::1"]
        assert s.run(s.cl, *dig, "v4only.example.net", "A").stdout.split() == ["203.0.113.7"]
        assert s.run(s.cl, *dig, "v4only.example.net", "AAAA").stdout.split() == [
            "2001:db8:64::cb00:7107"
        ]
        assert s.run(s.cl, *dig, "dual.example.net", "AAAA").stdout.split() == ["2001:db8:2::8"]
        up.kill()
        up.wait()
    finally:
        _cleanup(s)
