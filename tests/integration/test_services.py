"""`v6mostly siit` and `v6mostly plat` as processes: start, refuse, replace, reload, clean up.

Each test runs the service in a namespace of its own (per-run name, removed
at the end, also on failure).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_helpers import nsrun, require_root, stop, throwaway_netns, wait_for
from v6mostly.lab.topology import Lab, LabConfig, running_lab, server6

pytestmark = pytest.mark.integration


@pytest.fixture
def netns() -> Iterator[str]:
    with throwaway_netns("v6m-svc-") as name:
        yield name


def start(ns: str, *argv: str, log: Path) -> subprocess.Popen[bytes]:
    f = log.open("wb")
    try:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "v6mostly", *argv],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    finally:
        f.close()


def link_up(ns: str, dev: str) -> bool:
    return "UP" in nsrun(ns, "ip", "-br", "link", "show", dev).stdout


def test_siit_from_flags_brings_tun_up_without_routes(netns: str, tmp_path: Path) -> None:
    log = tmp_path / "siit.log"
    p = start(
        netns,
        "siit",
        "--tun",
        "xl0",
        "--pool6",
        "2001:db8:64::/96",
        "--eam",
        "2001:db8:46::/120=198.51.100.0/24",
        "--queues",
        "2",
        log=log,
    )
    try:
        assert wait_for(lambda: link_up(netns, "xl0")), log.read_text()
        assert wait_for(lambda: "2 worker(s) running" in log.read_text())
        # Only the kernel's own link-local route: the TUN drops into existing routing.
        assert "2001:db8" not in nsrun(netns, "ip", "-6", "route").stdout
        assert "xl0" not in nsrun(netns, "ip", "-4", "route").stdout
        assert "mtu 1500" in nsrun(netns, "ip", "link", "show", "xl0").stdout
        assert "qlen 10000" in nsrun(netns, "ip", "link", "show", "xl0").stdout
    finally:
        assert stop(p) == 0
    assert nsrun(netns, "ip", "link", "show", "xl0").returncode != 0  # the TUN is gone
    assert "cleaned up" in log.read_text()


def _plat_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "plat.toml"
    conf.write_text(Lab("x", LabConfig(queues=1, metrics=False)).plat_config())
    return conf


def test_plat_refuses_existing_table_then_replaces_and_cleans_up(
    netns: str, tmp_path: Path
) -> None:
    conf = _plat_conf(tmp_path)
    nsrun(netns, "nft", "add", "table", "inet", "v6mostly_nat64")
    r = nsrun(netns, sys.executable, "-m", "v6mostly", "plat", "--config", str(conf))
    assert r.returncode == 2
    assert "v6mostly: error: nftables table inet v6mostly_nat64 already exists" in r.stderr
    assert "--replace" in r.stderr and "Traceback" not in r.stderr
    before = nsrun(netns, "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip()
    log = tmp_path / "plat.log"
    p = start(netns, "plat", "--config", str(conf), "--replace", log=log)
    try:
        assert wait_for(lambda: "worker(s) running" in log.read_text()), log.read_text()
        assert "2001:db8:64::/96 dev nat64" in nsrun(netns, "ip", "-6", "route").stdout
        assert "198.51.100.1 dev nat64" in nsrun(netns, "ip", "-4", "route").stdout
        assert (
            "snat ip6 to" in nsrun(netns, "nft", "list", "table", "inet", "v6mostly_nat64").stdout
        )
        assert nsrun(netns, "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "1"
    finally:
        assert stop(p) == 0
    assert nsrun(netns, "nft", "list", "tables").stdout.strip() == ""
    assert "nat64" not in nsrun(netns, "ip", "-6", "route").stdout
    assert "nat64" not in nsrun(netns, "ip", "-4", "route").stdout
    assert nsrun(netns, "ip", "link", "show", "nat64").returncode != 0
    assert nsrun(netns, "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == before


def test_plat_refuses_existing_tun(netns: str, tmp_path: Path) -> None:
    nsrun(netns, "ip", "tuntap", "add", "nat64", "mode", "tun")
    r = nsrun(
        netns, sys.executable, "-m", "v6mostly", "plat", "--config", str(_plat_conf(tmp_path))
    )
    assert r.returncode == 2 and "link nat64 already exists" in r.stderr
    assert nsrun(netns, "nft", "list", "tables").stdout.strip() == ""


def test_sighup_reloads_eam_without_dropping_flows() -> None:
    require_root()
    with running_lab(LabConfig(queues=2)) as lab:
        conf = Path(lab.path("plat.toml"))
        text = conf.read_text().replace(
            'eam = [{ ipv6 = "2001:db8:46::1/128", ipv4 = "198.51.100.1/32" }]',
            'eam = [{ ipv6 = "2001:db8:46::1/128", ipv4 = "198.51.100.1/32" },'
            ' { ipv6 = "2001:db8:1::300/128", ipv4 = "198.51.100.30/32" }]',
        )
        conf.write_text(text)
        ping = subprocess.Popen(
            lab.cmd("client6", ["ping", "-c", "60", "-i", "0.05", "-W", "2", server6()]),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        os.kill(lab.pids["plat"], signal.SIGHUP)
        out, _ = ping.communicate(timeout=30)
        assert " 0% packet loss" in out, out
        log = Path(lab.path("plat.log")).read_text()
        assert "configuration reloaded (2 EAM entries)" in log
        assert "198.51.100.30 dev nat64" in lab.exec("plat", ["ip", "-4", "route"]).stdout


def test_bad_sighup_config_keeps_running() -> None:
    require_root()
    with running_lab(LabConfig(queues=1)) as lab:
        conf = Path(lab.path("plat.toml"))
        conf.write_text(conf.read_text().replace("queues = 1", "queues = -4"))
        os.kill(lab.pids["plat"], signal.SIGHUP)
        assert wait_for(
            lambda: "keeping the running configuration" in Path(lab.path("plat.log")).read_text()
        )
        r = lab.exec("client6", ["ping", "-c", "2", "-W", "2", server6()])
        assert " 0% packet loss" in r.stdout
