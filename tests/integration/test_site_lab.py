"""The site lab (`v6mostly lab up --site`): legacy, mostly and v6only clients side by side.

One module-scoped lab: ``legacy`` (dhcpcd without option 108: a 192.0.2.x lease,
IPv4 through NAT44), ``mostly`` (dhcpcd with option 108: no IPv4 lease, then
``v6mostly clat``: IPv4 literals through CLAT -> PLAT), ``v6only`` (no DHCPv4:
DNS64), all with SLAAC and native IPv6 to ``inet6``. Every path of ``lab demo
--site`` is asserted here, and the traffic split computed from the PLAT's
metrics and the router's nftables counters.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_helpers import require_root, wait_for
from v6mostly.lab import site as site_mod
from v6mostly.lab.site import (
    clat_state,
    client_ipv4,
    client_ipv6,
    default_route,
    site_counters,
    traffic_split,
)
from v6mostly.lab.topology import (
    CLIENT_NET,
    LAN4_ROUTER,
    PLAT_V4,
    PREF64,
    ROUTER_METRICS,
    SERVER4,
    SERVER6,
    SERVER6_NAME,
    SERVER_NAME,
    SITE_CLIENTS,
    Lab,
    LabConfig,
    LabError,
    alive,
    namespaces,
    running_lab,
)
from v6mostly.metrics import parse_exposition

pytestmark = pytest.mark.integration

HELLO4 = "hello from the IPv4-only Internet\n"
HELLO6 = "hello from the IPv6 Internet\n"


def _digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "absent"


def _host_dhcp_files() -> list[str]:
    return sorted(os.listdir("/var/lib/dhcpcd")) if os.path.isdir("/var/lib/dhcpcd") else []


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    resolv, leases = _digest("/etc/resolv.conf"), _host_dhcp_files()
    with running_lab(LabConfig(queues=1, site=True)) as lab:
        yield lab
    # lab down: no namespace, no process, no /etc/netns file left; the host's
    # resolv.conf and dhcpcd lease directory untouched.
    assert namespaces(lab.id) == []
    assert not os.path.exists(lab.dir)
    assert not any(os.path.exists(lab.etc_dir_of(n)) for n in SITE_CLIENTS)
    for pid in lab.pids.values():
        assert wait_for(lambda p=pid: not alive(p), 5), pid
    assert _digest("/etc/resolv.conf") == resolv
    assert _host_dhcp_files() == leases


def curl(lab: Lab, node: str, url: str, *opts: str) -> str:
    r = lab.exec(node, ["curl", "-sS", "--max-time", "10", *opts, url], check=False)
    assert r.returncode == 0, f"{node}: curl {url}: {r.stderr}"
    return r.stdout


def router_metrics(lab: Lab) -> dict[str, float]:
    r = lab.exec("plat", ["curl", "-s", f"http://{ROUTER_METRICS}/metrics"], check=False)
    return parse_exposition(r.stdout)


def log(lab: Lab, name: str) -> str:
    p = Path(lab.path(name + ".log"))
    return p.read_text(errors="replace") if p.exists() else ""


def test_every_client_has_slaac_and_the_ra_default_route(lab: Lab) -> None:
    for node in SITE_CLIENTS:
        v6 = [a for a in client_ipv6(lab, node) if a.endswith("/64")]
        assert v6 and all(
            ipaddress.IPv6Interface(a) in ipaddress.IPv6Network(CLIENT_NET) for a in v6
        )
        route = default_route(lab, node, "-6")
        assert route.startswith("via fe80::") and "proto ra" in route, (node, route)


def test_legacy_gets_a_lease_and_reaches_the_ipv4_server_through_nat44(lab: Lab) -> None:
    addrs = client_ipv4(lab, "legacy")
    assert len(addrs) == 1 and ipaddress.IPv4Interface(addrs[0]) in ipaddress.IPv4Network(
        "192.0.2.0/24"
    ), addrs
    out = log(lab, "dhcpcd-legacy")
    assert f"leased {addrs[0].split('/')[0]}" in out and "IPv6-Only Preferred" not in out
    assert default_route(lab, "legacy", "-4").startswith(f"via {LAN4_ROUTER} dev eth0")
    before = site_counters(lab)["native4_out"]
    assert curl(lab, "legacy", f"http://{SERVER4}/") == HELLO4
    after = site_counters(lab)["native4_out"]
    assert after[0] > before[0] and after[1] > before[1]
    # Masqueraded: the server saw the router's IPv4 side, not 192.0.2.x.
    assert wait_for(lambda: f"{PLAT_V4} - -" in log(lab, "http"), 5), log(lab, "http")[-500:]
    assert "192.0.2." not in log(lab, "http")
    r = lab.exec("plat", ["nft", "list", "table", "inet", site_mod.SITE_TABLE])
    assert 'oifname "i4" ip saddr 192.0.2.0/24 masquerade' in r.stdout


def test_mostly_gets_no_ipv4_lease_and_its_clat_carries_ipv4_literals(lab: Lab) -> None:
    out = log(lab, "dhcpcd-mostly")
    assert "IPv6-Only Preferred received (300 seconds)" in out, out[-2000:]
    assert "leased " not in out
    assert client_ipv4(lab, "mostly") == []
    assert router_metrics(lab)['v6mostly_dhcp4_offers_total{v6only="yes"}'] >= 1
    st = clat_state(lab)
    assert st.get("active") and st["pref64"] == PREF64, st
    assert default_route(lab, "mostly", "-4").startswith("dev clat0")
    m0 = lab.metrics()
    assert curl(lab, "mostly", f"http://{SERVER4}/") == HELLO4
    r = lab.exec("mostly", ["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER4], check=False)
    assert " 0% packet loss" in r.stdout, r.stdout + r.stderr
    m1 = lab.metrics()
    key = 'v6mostly_fastpath_packets_total{direction="6to4"}'  # TCP: the in-kernel fast path
    assert m1[key] > m0[key]


def test_v6only_resolves_the_ipv4_only_name_to_the_pref64_and_curls_it(lab: Lab) -> None:
    assert client_ipv4(lab, "v6only") == []
    assert not Path(lab.path("dhcpcd-v6only.log")).exists()
    r = lab.exec("v6only", ["dig", "+short", "+time=2", SERVER_NAME, "AAAA"])
    addr = r.stdout.strip()
    assert ipaddress.IPv6Address(addr) in ipaddress.IPv6Network(PREF64), addr
    assert ipaddress.IPv6Address(addr).packed[-4:] == ipaddress.IPv4Address(SERVER4).packed
    assert curl(lab, "v6only", f"http://{SERVER_NAME}/") == HELLO4


def test_all_clients_reach_inet6_natively(lab: Lab) -> None:
    r = lab.exec("v6only", ["dig", "+short", "+time=2", SERVER6_NAME, "AAAA"])
    assert r.stdout.strip() == SERVER6  # a real AAAA: no synthesis
    for node in SITE_CLIENTS:
        before = site_counters(lab)["native6_out"]
        assert curl(lab, node, f"http://{SERVER6_NAME}/", "-6") == HELLO6
        assert site_counters(lab)["native6_out"][1] > before[1]
        # Native: the server sees the client's own SLAAC address.
        src = next(a for a in client_ipv6(lab, node) if a.endswith("/64")).split("/")[0]
        assert wait_for(lambda s=src: s in log(lab, "http6"), 5), (node, log(lab, "http6")[-500:])


def test_traceroute_by_ipv4_literal_from_mostly(lab: Lab) -> None:
    r = lab.exec(
        "mostly", ["traceroute", "-n", "-q", "1", "-w", "2", "-m", "8", SERVER4], timeout=60
    )
    hops = [ln.split()[1] for ln in r.stdout.splitlines()[1:] if len(ln.split()) > 1]
    assert hops[-1] == SERVER4, r.stdout
    assert "*" not in hops, r.stdout
    assert "192.0.0.8" in hops, r.stdout  # the IPv6-only hop (RFC 7600 dummy address)


def test_concurrent_traceroutes_through_the_plat_all_answered(lab: Lab) -> None:
    """Behind NAPT66 every client reaches the PLAT's translator from the same outer
    address: three traceroutes at once (UDP and ICMP by IPv4 literal from ``mostly``,
    traceroute6 to the server's Pref64 address from ``v6only``), 3 probes per hop,
    are more than the kernel's per-destination burst of 6. The PLAT counts that
    address as many hosts (global bucket only): every probe is answered."""
    target6 = str(ipaddress.IPv6Network(PREF64)[int(ipaddress.IPv4Address(SERVER4))])
    runs = [
        ("mostly", ["traceroute", "-n", "-q", "3", "-w", "2", "-m", "8", SERVER4]),
        ("mostly", ["traceroute", "-I", "-n", "-q", "3", "-w", "2", "-m", "8", SERVER4]),
        ("v6only", ["traceroute", "-6", "-n", "-q", "3", "-w", "2", "-m", "8", target6]),
    ]
    procs = [
        subprocess.Popen(lab.cmd(node, argv), stdout=subprocess.PIPE, text=True)
        for node, argv in runs
    ]
    outs = [p.communicate(timeout=90)[0] for p in procs]
    for (node, argv), out in zip(runs, outs, strict=True):
        lines = out.splitlines()[1:]
        assert lines and argv[-1] in lines[-1], (node, out)
        assert "*" not in out, (node, argv, out)


NEW_PREF64 = "2001:db8:6464::/96"
RA_INTERVAL = 10.0  # the lab router's max_interval


def _ipv4_literal_ok(lab: Lab, node: str) -> bool:
    r = lab.exec(
        node, ["curl", "-sS", "--max-time", "3", f"http://{SERVER4}/"], check=False, timeout=10
    )
    return r.stdout == HELLO4


def _hup(lab: Lab, *names: str) -> None:
    for n in names:
        os.kill(lab.pids[n], signal.SIGHUP)


def test_y_pref64_moves_is_withdrawn_and_returns_across_the_site(lab: Lab) -> None:
    """The network moves to a new Pref64 (site.toml, SIGHUP to router and PLAT): the
    CLAT on ``mostly`` follows within one RA interval, DNS64 on ``v6only`` answers from
    the new prefix, ``legacy`` is untouched. Then the operator withdraws the PREF64
    (``advertise_pref64 = false``): the CLAT stops and removes its route, the others
    keep working; announced again, the CLAT resumes."""
    site = Path(lab.path("site.toml"))
    original = site.read_text()
    assert f'pref64 = "{PREF64}"' in original
    try:
        site.write_text(original.replace(f'pref64 = "{PREF64}"', f'pref64 = "{NEW_PREF64}"'))
        _hup(lab, "plat", "router")
        assert wait_for(lambda: clat_state(lab).get("pref64") == NEW_PREF64, RA_INTERVAL + 1)
        assert wait_for(lambda: _ipv4_literal_ok(lab, "mostly"), 10), log(lab, "clat")[-2000:]
        r = lab.exec("v6only", ["dig", "+short", "+time=2", SERVER_NAME, "AAAA"])
        addr = ipaddress.IPv6Address(r.stdout.strip())
        assert addr in ipaddress.IPv6Network(NEW_PREF64), addr
        assert curl(lab, "v6only", f"http://{SERVER_NAME}/") == HELLO4
        assert curl(lab, "legacy", f"http://{SERVER4}/") == HELLO4

        site.write_text(
            site.read_text().replace("max_interval =", "advertise_pref64 = false\nmax_interval =")
        )
        _hup(lab, "router")
        assert wait_for(lambda: not clat_state(lab).get("active"), RA_INTERVAL + 1), clat_state(lab)
        assert "no Pref64" in clat_state(lab)["reason"]
        assert default_route(lab, "mostly", "-4") == ""
        assert not _ipv4_literal_ok(lab, "mostly")
        assert curl(lab, "mostly", f"http://{SERVER6_NAME}/", "-6") == HELLO6
        assert curl(lab, "v6only", f"http://{SERVER_NAME}/") == HELLO4  # DNS64 needs no RA
        assert curl(lab, "legacy", f"http://{SERVER4}/") == HELLO4

        site.write_text(site.read_text().replace("advertise_pref64 = false\n", ""))
        _hup(lab, "router")
        assert wait_for(lambda: clat_state(lab).get("active"), RA_INTERVAL + 1), clat_state(lab)
        assert wait_for(lambda: _ipv4_literal_ok(lab, "mostly"), 10)
    finally:
        site.write_text(original)
        _hup(lab, "plat", "router")
    assert wait_for(lambda: clat_state(lab).get("pref64") == PREF64, RA_INTERVAL + 1)
    assert wait_for(lambda: _ipv4_literal_ok(lab, "mostly"), 10)


def test_zz_traffic_split_from_the_services_counters(lab: Lab) -> None:
    """Last: every path above moved bytes; the three parts add up to the total."""
    split = traffic_split(lab)
    assert split.native6 > 0 and split.nat64 > 0 and split.nat44 > 0, split
    assert split.total == split.native6 + split.nat64 + split.nat44
    rows = split.rows()
    assert [r[0] for r in rows] == ["native IPv6", "IPv4 via NAT64", "native IPv4 via NAT44"]
    assert sum(r[1] for r in rows) == split.total
    assert abs(sum(r[2] for r in rows) - 1.0) < 1e-9
    # NAT64 bytes (PLAT metrics) and the router's own view of the LAN <-> TUN traffic agree
    # in order of magnitude (IPv4 bytes are 20 per packet fewer than IPv6).
    c = site_counters(lab)
    lan_tun = c["to_nat64"][1] + c["from_nat64"][1]
    assert 0.5 * lan_tun < split.nat64 <= lan_tun, (split, c)
    # The router's own view (what an operator has without the lab's table): one metric
    # family, v6mostly_site_traffic_bytes_total{path, direction}, from its nftables
    # counters on the served interface; it agrees with the lab's per-family counters.
    m = router_metrics(lab)

    def path(p: str) -> float:
        return sum(
            v
            for k, v in m.items()
            if k.startswith("v6mostly_site_traffic_bytes_total{") and f'path="{p}"' in k
        )

    c = site_counters(lab)
    assert path("native_ipv6") > 0 and path("ipv4_via_nat64") > 0 and path("native_ipv4") > 0, m
    lab6 = c["native6_out"][1] + c["native6_in"][1]
    lab4 = c["native4_out"][1] + c["native4_in"][1]
    assert 0.9 * lab6 <= path("native_ipv6") <= 1.1 * lab6 + 10_000, (path("native_ipv6"), lab6)
    assert 0.9 * lab4 <= path("native_ipv4") <= 1.1 * lab4 + 10_000, (path("native_ipv4"), lab4)
    lan_tun = c["to_nat64"][1] + c["from_nat64"][1]
    assert 0.9 * lan_tun <= path("ipv4_via_nat64") <= 1.1 * lan_tun + 10_000


def test_lab_up_failure_removes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """A site build that fails half way (servers already running) leaves nothing."""
    require_root()

    def boom(lab: Lab) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(site_mod, "_start_inet6", boom)
    lab = Lab(os.urandom(3).hex(), LabConfig(site=True))
    with pytest.raises(RuntimeError, match="injected"):
        lab.up()
    assert namespaces(lab.id) == []
    assert not os.path.exists(lab.dir)
    assert "http" in lab.pids  # it had started processes, which are gone now
    for pid in lab.pids.values():
        assert wait_for(lambda p=pid: not alive(p), 5), pid
    with pytest.raises(LabError, match="needs the router"):
        Lab(os.urandom(3).hex(), LabConfig(site=True, translator="tayga")).up()


def test_lab_cli_up_site_and_down() -> None:
    """`v6mostly lab up --site` and `lab down` through the CLI."""
    require_root()
    lab_id = os.urandom(3).hex()
    v6m = [sys.executable, "-m", "v6mostly", "lab"]
    try:
        r = subprocess.run(
            [*v6m, "up", "--site", "--lab", lab_id], capture_output=True, text=True, timeout=180
        )
        assert r.returncode == 0, r.stderr
        assert "legacy" in r.stdout and "clat0" in r.stdout and "192.0.2." in r.stdout
    finally:
        d = subprocess.run([*v6m, "down", lab_id], capture_output=True, text=True, timeout=60)
    assert f"v6m-{lab_id}-mostly" in d.stdout
    assert namespaces(lab_id) == []
