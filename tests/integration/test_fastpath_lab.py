"""The PLAT's in-kernel fast path (linux/fastpath.py) in the namespace lab.

A download from the IPv4-only server (and an upload to it, linux/fastpath6) is
translated by the tc programs on the TUN's egress, not by the workers, and arrives intact at a client that verifies checksums
(the lab turns checksum offload off); ping and everything else still goes to the
workers; a reload (SIGHUP) or a new TUN MTU puts a rebuilt program in place with the
counters going on; with ``fastpath = false`` the workers translate the download.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from collections.abc import Iterator

import pytest

from tests.integration.lab_helpers import (
    metric,
    module_lab,
    require_root,
    rps_cpus,
    rps_during,
    wait_for,
)
from v6mostly.lab.topology import Lab, LabConfig, running_lab, server6

pytestmark = pytest.mark.integration

S6 = server6()
FAST = "v6mostly_fastpath_packets"
WORKER_TCP_4TO6 = {"direction": "4to6", "protocol": "tcp"}
WORKER_TCP_6TO4 = {"direction": "6to4", "protocol": "tcp"}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab(LabConfig(queues=2))


def download(lab: Lab, seconds: int = 2) -> int:
    r = lab.exec("client6", ["iperf3", "-J", "-c", S6, "-t", str(seconds), "-R"], timeout=40)
    return int(json.loads(r.stdout)["end"]["sum_received"]["bytes"])


def program_id(lab: Lab) -> int | None:
    out = lab.exec("plat", ["tc", "filter", "show", "dev", "nat64", "egress"]).stdout
    m = re.search(r"v6m_plat_fast.* id (\d+)", out)
    return int(m.group(1)) if m else None


def test_the_download_is_translated_in_the_kernel(lab: Lab) -> None:
    assert program_id(lab) is not None
    fast0 = metric(lab, FAST, direction="4to6")
    worker0 = metric(lab, "v6mostly_translated_packets", **WORKER_TCP_4TO6)
    acks0 = metric(lab, FAST, direction="6to4")
    ack_workers0 = metric(lab, "v6mostly_translated_packets", **WORKER_TCP_6TO4)
    assert download(lab) > 10_000_000
    fast = metric(lab, FAST, direction="4to6") - fast0
    worker = metric(lab, "v6mostly_translated_packets", **WORKER_TCP_4TO6) - worker0
    assert fast > 1000, fast
    assert worker * 100 < fast, (worker, fast)
    # the download's ACKs (IPv6 to IPv4) take the fast path too (linux/fastpath6)
    acks = metric(lab, FAST, direction="6to4") - acks0
    ack_workers = metric(lab, "v6mostly_translated_packets", **WORKER_TCP_6TO4) - ack_workers0
    assert acks > 1000 and ack_workers * 100 < acks, (acks, ack_workers)
    assert metric(lab, "v6mostly_fastpath_octets") > 10_000_000
    assert metric(lab, "v6mostly_fastpath_superpackets") > 100  # the lab's TUN has offloads


def test_the_upload_is_translated_in_the_kernel(lab: Lab) -> None:
    """IPv6 to IPv4 (linux/fastpath6): the upload's data after NAPT66, and the
    download's ACKs, do not wake the workers; the server verifies every checksum."""
    out = lab.exec("plat", ["tc", "filter", "show", "dev", "nat64", "egress"]).stdout
    assert "v6m_plat_fast6" in out, out
    fast0 = metric(lab, FAST, direction="6to4")
    worker0 = metric(lab, "v6mostly_translated_packets", **WORKER_TCP_6TO4)
    r = lab.exec("client6", ["iperf3", "-J", "-c", S6, "-t", "2"], timeout=40)
    assert int(json.loads(r.stdout)["end"]["sum_received"]["bytes"]) > 10_000_000
    fast = metric(lab, FAST, direction="6to4") - fast0
    worker = metric(lab, "v6mostly_translated_packets", **WORKER_TCP_6TO4) - worker0
    assert fast > 1000, fast
    assert worker * 100 < fast, (worker, fast)


def test_rps_auto_follows_a_download(lab: Lab) -> None:
    """rps = "auto" counts the fast path's super-packets: RPS splits a download's
    IPv6 forwarding and the client's TCP input from the server's sending."""

    assert wait_for(lambda: rps_cpus(lab) == 0, timeout=15)
    seen = rps_during(lab, "client6", ["iperf3", "-c", S6, "-t", "5", "-R"])
    assert any(seen), "RPS never turned on during a download"


def test_a_file_arrives_intact(lab: Lab) -> None:
    fast0 = metric(lab, FAST)
    r = lab.exec("client6", ["sh", "-c", f"curl -sS -m 20 http://[{S6}]/1m.bin | sha256sum"])
    assert r.stdout.split()[0] == hashlib.sha256(bytes(range(256)) * 4096).hexdigest()
    assert metric(lab, FAST) - fast0 > 10


def test_ping_still_goes_to_the_workers(lab: Lab) -> None:
    """The echo replies (IPv4 to IPv6) are the workers': their ICMP count takes all three."""
    icmp0 = metric(lab, "v6mostly_translated_packets", direction="4to6", protocol="icmp")
    r = lab.exec("client6", ["ping", "-c", "3", "-i", "0.2", "-W", "2", S6])
    assert " 0% packet loss" in r.stdout
    assert metric(lab, "v6mostly_translated_packets", direction="4to6", protocol="icmp") >= (
        icmp0 + 3
    )


def test_reload_and_a_new_mtu_rebuild_it(lab: Lab) -> None:
    first = program_id(lab)
    before = metric(lab, FAST)
    os.kill(lab.pids["plat"], signal.SIGHUP)
    assert wait_for(lambda: program_id(lab) not in (None, first), timeout=10)
    second = program_id(lab)
    assert metric(lab, FAST) >= before  # the counters go on across the new program
    assert download(lab, 1) > 1_000_000
    assert metric(lab, FAST) > before
    lab.exec("plat", ["ip", "link", "set", "nat64", "mtu", "1400"])
    try:
        assert wait_for(lambda: program_id(lab) not in (None, second), timeout=10)
        # 1480-byte IPv4 packets no longer fit the TUN (the kernel's Fragmentation
        # Needed on the way in), the server's TCP adapts, the download completes.
        r = lab.exec(
            "client6",
            ["curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{size_download}",
             f"http://[{S6}]/1m.bin"],
        )  # fmt: skip
        assert r.stdout == "1048576"
    finally:
        lab.exec("plat", ["ip", "link", "set", "nat64", "mtu", "1500"])


def test_switched_off_the_workers_translate_the_download() -> None:
    require_root()
    with running_lab(LabConfig(queues=1, fastpath=False)) as lab:
        assert program_id(lab) is None
        worker0 = metric(lab, "v6mostly_translated_packets", **WORKER_TCP_4TO6)
        assert download(lab) > 10_000_000
        assert metric(lab, "v6mostly_translated_packets", **WORKER_TCP_4TO6) - worker0 > 1000
        assert metric(lab, FAST) == 0
