"""The PLAT's NAPT66 state from the kernel's counters (no conntrack dump per scrape),
and port exhaustion made visible: with the outer port range cut to 10 ports, 50 UDP
flows from client6 to one IPv4 destination leave 40 bindings unmade; the metrics
count the insert failures and the PLAT logs them (rate limited)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_helpers import pyexec, require_root, wait_for
from v6mostly.lab.topology import PREF64, SERVER4, Lab, LabConfig, alive, running_lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    with running_lab(LabConfig(queues=1, router=False)) as lab:
        yield lab


def _server6() -> str:
    import ipaddress

    return str(ipaddress.IPv6Network(PREF64)[int(ipaddress.IPv4Address(SERVER4))])


def test_session_count_and_limit_come_from_the_kernel(lab: Lab) -> None:
    n0 = lab.metrics()["v6mostly_napt66_sessions"]
    code = f"""
import socket
for i in range(20):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"x", ("{_server6()}", 9))
    s.close()
"""
    pyexec(lab, "client6", code)
    m = lab.metrics()
    # 20 new UDP bindings (unreplied entries live 30 s): counted without a dump.
    assert m["v6mostly_napt66_sessions"] >= n0 + 20, m
    kernel = lab.exec("plat", ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout
    assert abs(m["v6mostly_napt66_sessions"] - int(kernel)) <= 2
    assert m["v6mostly_conntrack_max"] > 0
    assert m["v6mostly_conntrack_insert_failed_total"] == 0.0


def test_port_exhaustion_is_counted_and_logged(lab: Lab) -> None:
    conf = Path(lab.path("plat.toml"))
    text = conf.read_text()
    assert "[napt66]\n" in text
    conf.write_text(text.replace("[napt66]\n", "[napt66]\nport_min = 40000\nport_max = 40009\n", 1))
    pid = lab.pids["plat"]
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not alive(pid), 10)
    lab.spawn("plat", "plat", [sys.executable, "-m", "v6mostly", "plat", "--config", str(conf)])
    assert wait_for(lambda: "v6mostly_napt66_sessions" in str(lab.metrics()), 20)
    time.sleep(1.5)  # the PLAT's first conntrack reading is its baseline
    code = f"""
import socket
for i in range(50):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"x", ("{_server6()}", 7777))
    s.close()
"""
    pyexec(lab, "client6", code)
    assert wait_for(
        lambda: lab.metrics().get("v6mostly_conntrack_insert_failed_total", 0) >= 30, 5
    ), lab.metrics()
    log = Path(lab.path("plat.log"))
    assert wait_for(lambda: "insert failures (NAPT66 ports exhausted)" in log.read_text(), 5)
    assert log.read_text().count("insert failures (NAPT66 ports exhausted)") == 1
