"""``[tun] udp_gro_forwarding`` (linux/gro.py) in the namespace lab, with real iperf3.

The lab's PLAT uplink receives like a NIC (``LabConfig.nic_like``: GRO on, threaded
NAPI), so a UDP flood of one flow from the Internet reaches the PLAT in bursts its GRO
can merge. Checked: the PLAT turns the feature on for its links at start and back off
at stop; a 64-byte UDP flood downstream is merged and translated by the fast path as
super-packets; every datagram that arrives has a valid checksum (the endpoints verify
them: checksum offload is off on the lab's veths) and the floods arrive in full, in
order, both ways.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.lab_helpers import metric, module_lab, require_root, wait_for
from v6mostly.lab.topology import Lab, LabConfig, alive, running_lab, server6
from v6mostly.linux.gro import FEATURE

pytestmark = pytest.mark.integration

S6 = server6()
LINKS = ("c6", "i4")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab(LabConfig(queues=2))


def feature_on(lab: Lab, ifname: str) -> bool:
    out = lab.exec("plat", ["ethtool", "-k", ifname]).stdout
    line = next(ln for ln in out.splitlines() if ln.strip().startswith(FEATURE + ":"))
    return line.split(":")[1].split()[0] == "on"


def plat_log(lab: Lab) -> str:
    with open(lab.path("plat.log")) as f:
        return f.read()


def udp_counter(lab: Lab, node: str, name: str) -> int:
    r = lab.exec(node, ["nstat", "-az", "--json"])
    d: dict[str, Any] = json.loads(r.stdout)
    return int(next(iter(d.values())).get(name, 0))


def flood(lab: Lab, *extra: str) -> dict[str, Any]:
    """Three seconds of 64-byte UDP at 20 Mbit/s (about 39,000 datagrams a second)."""
    argv = ["iperf3", "-J", "-c", S6, "-u", "-l", "64", "-b", "20M", "-t", "3", *extra]
    r = lab.exec("client6", argv, timeout=40)
    end = json.loads(r.stdout)["end"]
    s: dict[str, Any] = end["sum"]
    s["out_of_order"] = sum(st["udp"].get("out_of_order", 0) for st in end["streams"])
    return s


def test_the_plat_turns_it_on_for_its_links(lab: Lab) -> None:
    # c6 by the PLAT; i4 by the lab (LabConfig.nic_like), so the PLAT leaves it alone
    assert all(feature_on(lab, i) for i in LINKS)
    assert "UDP GRO forwarding on: c6\n" in plat_log(lab)


def test_a_download_flood_is_merged_and_arrives_intact(lab: Lab) -> None:
    sup0 = metric(lab, "v6mostly_fastpath_superpackets", direction="4to6")
    pk0 = metric(lab, "v6mostly_fastpath_packets", direction="4to6")
    bad0 = udp_counter(lab, "client6", "Udp6InCsumErrors")
    s = flood(lab, "-R")
    assert s["packets"] > 50_000 and s["lost_percent"] < 2.0, s
    assert s["out_of_order"] == 0, s
    assert udp_counter(lab, "client6", "Udp6InCsumErrors") == bad0
    merged = metric(lab, "v6mostly_fastpath_superpackets", direction="4to6") - sup0
    # fewer translations than datagrams: GRO merged bursts before the fast path
    assert merged > 100, merged
    assert metric(lab, "v6mostly_fastpath_packets", direction="4to6") - pk0 < s["packets"]


def test_an_upload_flood_arrives_intact(lab: Lab) -> None:
    """Upstream the client's veth stays a plain one (``LabConfig.nic_like``: the uplink
    only), so nothing is merged there; the feature must not change the flood."""
    bad0 = udp_counter(lab, "inet4", "UdpInCsumErrors")
    s = flood(lab)
    assert s["packets"] > 50_000 and s["lost_percent"] < 2.0, s
    assert s["out_of_order"] == 0, s
    assert udp_counter(lab, "inet4", "UdpInCsumErrors") == bad0


def test_zz_stop_turns_it_back_off(lab: Lab) -> None:
    pid = lab.pids["plat"]
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not alive(pid), timeout=15)
    assert not feature_on(lab, "c6")  # the PLAT's change undone
    assert feature_on(lab, "i4")  # the lab's own setting left as the PLAT found it


def test_switched_off_it_is_left_alone() -> None:
    require_root()
    with running_lab(LabConfig(queues=1, udp_gro_forwarding=False, router=False)) as lab:
        assert not feature_on(lab, "c6")
        assert "UDP GRO forwarding on" not in plat_log(lab)
