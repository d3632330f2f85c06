"""The lab's plan (``lab/plan.py``): everything ``lab up`` builds, as data, checked without root."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from v6mostly.config import load
from v6mostly.lab.plan import (
    NS_SYSCTLS,
    Address,
    LabPlan,
    Link,
    Offload,
    Process,
    Route,
    Sysctl,
    Wait,
    plan_lab,
)
from v6mostly.lab.site import DHCPCD_CONF, site_nft
from v6mostly.lab.topology import (
    ALL_NODES,
    CLIENT,
    CLIENT_B,
    LAN_BRIDGE,
    NODES,
    PLAT_V4,
    PLAT_V6,
    PREF64,
    SERVER4,
    SERVER6,
    SERVER6_NATIVE,
    SITE_CLIENTS,
    SITE_NODES,
    Lab,
    LabConfig,
    LabError,
)
from v6mostly.site_config import load_site

ID = "abc123"
DIR = f"/run/v6mostly-lab/{ID}"
PY = "/usr/bin/python3"


def plan(**kw: object) -> LabPlan:
    return plan_lab(LabConfig(**kw), ID, DIR, python=PY)  # type: ignore[arg-type]


def addrs(p: LabPlan, node: str, ifname: str) -> list[str]:
    return [
        f"{a.address}/{a.prefixlen}" for a in p.addresses if (a.node, a.ifname) == (node, ifname)
    ]


def write_all(p: LabPlan, root: Path) -> dict[str, Path]:
    """The plan's files under ``root`` (their absolute paths re-rooted), the
    lab's own paths inside them rewritten to match."""
    out: dict[str, Path] = {}
    for f in p.files:
        dst = root / f.path.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(f.content, bytes):
            dst.write_bytes(f.content)
        else:
            dst.write_text(f.content.replace(DIR, str(root / DIR.lstrip("/"))))
        out[os.path.basename(f.path)] = dst
    return out


def test_names_carry_the_lab_id() -> None:
    p = plan()
    assert [n.node for n in p.namespaces] == list(NODES)
    assert [n.name for n in p.namespaces] == [f"v6m-{ID}-{n}" for n in NODES]
    assert all(n.sysctls == NS_SYSCTLS for n in p.namespaces)
    assert all(f.path.startswith(DIR + "/") or f"v6m-{ID}-" in f.path for f in p.files)
    site = plan(site=True)
    assert [n.node for n in site.namespaces] == list(SITE_NODES)
    assert {n.name for n in site.namespaces} == {f"v6m-{ID}-{n}" for n in SITE_NODES}
    assert set(SITE_NODES) <= set(ALL_NODES)
    # the same names as the Lab uses
    lab = Lab(ID, LabConfig(site=True))
    assert [lab.ns(n.node) for n in site.namespaces] == [n.name for n in site.namespaces]
    assert lab.etc_dir_of("mostly") == f"/etc/netns/v6m-{ID}-mostly"


def test_standard_links_addresses_routes() -> None:
    p = plan()
    assert p.links == [
        Link("plat", "c6", "veth", "client6", "eth0"),
        Link("plat", "i4", "veth", "inet4", "eth0"),
    ]
    assert addrs(p, "plat", "c6") == [f"{PLAT_V6}/64", "192.0.2.1/24"]
    assert addrs(p, "plat", "i4") == [f"{PLAT_V4}/24"]
    assert addrs(p, "client6", "eth0") == [f"{CLIENT}/64", f"{CLIENT_B}/64"]
    assert addrs(p, "inet4", "eth0") == [f"{SERVER4}/24"]
    assert p.routes == [
        Route("client6", "::/0", PLAT_V6, "eth0"),
        Route("inet4", "198.51.100.0/24", PLAT_V4, "eth0"),
    ]
    assert Sysctl("client6", "net.ipv6.conf.eth0.accept_ra=1") in p.sysctls
    assert {
        (s.node, s.mtu) for s in p.states if s.ifname in ("i4", "eth0") and s.node != "client6"
    } == {
        ("plat", 1500),
        ("inet4", 1500),
    }
    assert (
        Offload("plat", "c6", "tx") in p.offloads and Offload("client6", "eth0", "rx") in p.offloads
    )
    assert plan(verify_checksums=False, nic_like=False).offloads == []
    # the PLAT's uplink in NAPI mode, polled in a thread (LabConfig.nic_like), by default
    assert [o for o in p.offloads if o.on] == [
        Offload("plat", "i4", "gro", on=True),
        Offload("plat", "i4", "rx-udp-gro-forwarding", on=True),
    ]
    assert [" ".join(c.argv) for c in p.commands if "threaded" in " ".join(c.argv)] == [
        "sh -c echo 1 > /sys/class/net/i4/threaded",
    ]
    assert plan(ipv4_mtu=1280).states[2].mtu == 1280


def test_translator_none_is_native_ipv6() -> None:
    p = plan(translator="none")
    assert addrs(p, "plat", "i4") == [f"{PLAT_V4}/24", "2001:db8:2::1/64"]
    assert addrs(p, "inet4", "eth0") == [f"{SERVER4}/24", f"{SERVER6_NATIVE}/64"]
    assert Route("inet4", "2001:db8:1::/64", "2001:db8:2::1", "eth0") in p.routes
    assert Sysctl("plat", "net.ipv6.conf.all.forwarding=1") in p.sysctls
    assert [x.name for x in p.processes] == ["http", "iperf3", "dns", "router"]
    assert "--bind" in p.processes[0].argv and SERVER6_NATIVE in p.processes[0].argv


def test_processes_in_order() -> None:
    p = plan()
    assert [(x.node, x.name) for x in p.processes] == [
        ("inet4", "http"),
        ("inet4", "iperf3"),
        ("inet4", "dns"),
        ("plat", "router"),
        ("plat", "plat"),
    ]
    assert p.processes[3].argv == (
        PY, "-m", "v6mostly", "router", "--config", f"{DIR}/site.toml",
        "--control-socket", f"{DIR}/router.sock",
    )  # fmt: skip
    assert p.processes[4].argv == (
        PY, "-m", "v6mostly", "plat", "--config", f"{DIR}/plat.toml",
        "--control-socket", f"{DIR}/plat.sock",
    )  # fmt: skip
    assert p.start[-1] == Wait("ready", "client6", 20.0)
    assert [x.name for x in plan(router=False).processes] == ["http", "iperf3", "dns", "plat"]


def test_site_toml_and_plat_toml_parse(tmp_path: Path) -> None:
    p = plan()
    files = write_all(p, tmp_path)
    site = load_site(str(files["site.toml"]), check_lease_db=False)
    assert [i.name for i in site.interfaces] == ["c6"]
    s = load(str(files["plat.toml"]), plat=True)
    assert str(s.pref64()) == PREF64
    assert p.file(f"/etc/netns/v6m-{ID}-client6/resolv.conf").content == f"nameserver {PLAT_V6}\n"
    assert p.file(f"{DIR}/www/1m.bin").content == bytes(range(256)) * 4096
    # the same text as the Lab's own renderers
    lab = Lab(ID)
    assert p.file(f"{DIR}/plat.toml").content == lab.plat_config(f"{DIR}/site.toml")
    assert p.file(f"{DIR}/site.toml").content == lab.site_config()


def test_tayga_plan() -> None:
    p = plan(translator="tayga")
    assert [x.name for x in p.processes][-1] == "tayga"
    cmds = [c.argv for c in p.commands if "threaded" not in " ".join(c.argv)]
    assert cmds[0] == ("tayga", "--config", f"{DIR}/tayga.conf", "--mktun")
    assert ("ip", "route", "add", PREF64, "dev", "nat64") in cmds
    assert cmds[-1] == ("nft", "-f", f"{DIR}/nft.conf")
    nft = p.file(f"{DIR}/nft.conf").content
    assert isinstance(nft, str) and "table" in nft
    assert f"prefix {PREF64}\n" in str(p.file(f"{DIR}/tayga.conf").content)
    assert f"{DIR}/tayga" in p.dirs


def test_site_plan(tmp_path: Path) -> None:
    p = plan(site=True)
    assert p.links[0] == Link("plat", LAN_BRIDGE, "bridge")
    for node in SITE_CLIENTS:
        assert Link("plat", f"l-{node}", "veth", node, "eth0") in p.links
        assert any(s.ifname == f"l-{node}" and s.master == LAN_BRIDGE for s in p.states)
        assert Sysctl(node, "net.ipv6.conf.eth0.accept_ra=1") in p.sysctls
        rc = p.file(f"/etc/netns/v6m-{ID}-{node}/resolv.conf").content
        assert rc == f"nameserver {PLAT_V6}\nsearch example.net\n"
    assert addrs(p, "plat", LAN_BRIDGE) == [f"{PLAT_V6}/64", "192.0.2.1/24"]
    assert addrs(p, "inet6", "eth0") == [f"{SERVER6}/64"]
    assert Route("inet6", "::/0", "2001:db8:2::1", "eth0") in p.routes
    assert p.file(f"{DIR}/site-nft.conf").content == site_nft()
    assert p.commands[0].argv == ("nft", "-f", f"{DIR}/site-nft.conf")
    assert len(p.offloads) == 10
    files = write_all(p, tmp_path)
    site = load_site(str(files["site.toml"]), check_lease_db=False)
    assert [i.name for i in site.interfaces] == [LAN_BRIDGE]
    s = load(str(files["plat.toml"]), plat=True)  # the Pref64 comes from the site file
    assert str(s.pref64()) == PREF64
    tomllib.loads(str(p.file(f"{DIR}/plat.toml").content))


def test_site_processes_and_waits_in_order() -> None:
    p = plan(site=True)
    steps = [
        (x.node, x.name) if isinstance(x, Process) else ("wait", x.kind, x.node) for x in p.start
    ]
    assert steps == [
        ("inet4", "http"),
        ("inet4", "iperf3"),
        ("inet4", "dns"),
        ("inet6", "http6"),
        ("plat", "router"),
        ("plat", "plat"),
        ("wait", "ready", "v6only"),
        ("legacy", "dhcpcd-legacy"),
        ("mostly", "dhcpcd-mostly"),
        ("wait", "dhcp4-lease", "legacy"),
        ("wait", "log", "mostly"),
        ("mostly", "clat"),
        ("wait", "clat-active", "mostly"),
        ("wait", "http", "mostly"),
    ]
    dns = p.processes[2].argv
    assert "--host-record=www6.example.net,2001:db8:2::10" in dns
    assert p.processes[6].argv[-1] == DHCPCD_CONF["legacy"]
    assert p.processes[-1].argv[-2:] == ("--metrics", "[::]:9465")


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(LabError, match="needs the router"):
        plan(site=True, translator="tayga")
    with pytest.raises(LabError, match="needs the router"):
        plan(site=True, router=False)
    with pytest.raises(LabError, match="expected v6mostly"):
        plan(translator="jool")


def test_plan_is_pure(tmp_path: Path) -> None:
    """Planning writes nothing and is the same twice."""
    before = set(os.listdir(tmp_path))
    d = str(tmp_path / "lab")
    a = plan_lab(LabConfig(site=True), ID, d)
    assert a == plan_lab(LabConfig(site=True), ID, d)
    assert set(os.listdir(tmp_path)) == before
    assert all(isinstance(x, (Address, Route)) for x in [*a.addresses, *a.routes])


def test_cli_plan() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "v6mostly", "lab", "plan", "--site", "--lab", ID, "--contents"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    for want in (f"v6m-{ID}-mostly", "bridge lan0", "dhcpcd-mostly", "wait clat-active", "[site]"):
        assert want in r.stdout, want
