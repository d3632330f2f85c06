"""Two PLATs behind ECMP (``lab up --ha``): both carry traffic, a flow survives the
loss of its PLAT, a PLAT coming back moves no running flow; and the report's setup
(``--ha-plain``: plain ECMP, no state sync) in the same file, as the baseline.

Runs as root in namespaces the lab creates and removes (also on failure)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_helpers import require_root
from v6mostly.lab.ha import CLIENTS, IDLE_TIMER, PLATS, pref64_paths
from v6mostly.lab.ha_failover import (
    clients_by_plat,
    ctl_json,
    failover,
    flows_across_revive,
)
from v6mostly.lab.ha_probe import max_gap
from v6mostly.lab.topology import Lab, LabConfig, namespaces, running_lab, server6

pytestmark = pytest.mark.integration

#: what the failover tests measured, printed at the end of the module (README figures)
FIGURES: dict[str, object] = {}


@pytest.fixture(scope="module")
def halab() -> Iterator[Lab]:
    require_root()
    with running_lab(LabConfig(ha="resilient", queues=1)) as lab:
        yield lab
    print("\nHA figures:", json.dumps(FIGURES, indent=1), file=sys.stderr)


def curl_from(lab: Lab, sources: list[str]) -> list[str]:
    """One short HTTP request from each source; the sources that got 200."""
    code = (
        "import sys, socket\n"
        "ok = []\n"
        "for src in sys.argv[2:]:\n"
        "    try:\n"
        "        s = socket.create_connection((sys.argv[1], 80), 5, (src, 0))\n"
        "        s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
        "        if s.recv(64).startswith(b'HTTP/1.0 200'): ok.append(src)\n"
        "        s.close()\n"
        "    except OSError:\n"
        "        pass\n"
        "print(' '.join(ok))\n"
    )
    r = lab.exec("hclient", [sys.executable, "-c", code, server6(), *sources], timeout=120)
    return r.stdout.split()


def translated(lab: Lab, node: str) -> float:
    m = lab.metrics(node)
    return sum(
        v
        for k, v in m.items()
        if k.startswith(("v6mostly_translated_packets_total{", "v6mostly_fastpath_packets_total{"))
        and "6to4" in k
    )


def test_both_plats_carry_traffic_and_each_client_stays_on_one(halab: Lab) -> None:
    lab = halab
    assert pref64_paths(lab) == 2
    before = {p: translated(lab, p) for p in PLATS}
    for _ in range(2):  # two flows per client: each stays on its PLAT
        assert sorted(curl_from(lab, list(CLIENTS))) == sorted(CLIENTS)
    where = clients_by_plat(lab)
    assert where["plat1"] and where["plat2"], where
    assert not where["plat1"] & where["plat2"], where  # no client on both
    assert where["plat1"] | where["plat2"] == set(CLIENTS)
    for p in PLATS:  # each PLAT's own counters saw its share
        assert translated(lab, p) - before[p] >= 2 * len(where[p]), p
    FIGURES["spread"] = {p: len(where[p]) for p in PLATS}
    st = ctl_json(lab, "plat1", "status")
    assert st["ha"]["node"] == "plat1" and st["ha"]["conntrackd_pid"], st


def test_sighup_applies_ha(halab: Lab) -> None:
    """[ha] prepend changed on plat2: the bird file is rewritten, bird reconfigured, and
    the edge sees plat2's path to plat1's /32 with the new AS path."""
    lab = halab
    conf = Path(lab.path("plat2.toml"))
    good = conf.read_text()

    def plat2_path_to_plat1() -> str:
        r = lab.exec("edge", ["birdc", "-s", lab.path("edge-bird.ctl"), "show", "route",
                              "for", "198.51.100.1", "all"])  # fmt: skip
        paths = [ln for ln in r.stdout.splitlines() if "BGP.as_path:" in ln]
        return next((x.split(":", 1)[1].strip() for x in paths if "64602" in x), r.stdout)

    assert plat2_path_to_plat1() == " ".join(["64602"] * 4)  # 3 prepends + eBGP's own
    conf.write_text(good.replace("bfd_interval = ", "prepend = 5\nbfd_interval = ", 1))
    try:
        r = lab.exec("plat2", [sys.executable, "-m", "v6mostly", "ctl", "--socket",
                               lab.path("plat2.sock"), "reload"], check=False)  # fmt: skip
        assert r.returncode == 0 and "bird configuration rewritten" in r.stdout, r.stdout
        deadline = time.monotonic() + 10
        while plat2_path_to_plat1() != " ".join(["64602"] * 6) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert plat2_path_to_plat1() == " ".join(["64602"] * 6)
        st = ctl_json(lab, "plat2", "status")
        assert st["ha"]["bird"].startswith("bird: "), st["ha"]
    finally:
        conf.write_text(good)
        lab.exec("plat2", [sys.executable, "-m", "v6mostly", "ctl", "--socket",
                           lab.path("plat2.sock"), "reload"], check=False)  # fmt: skip


def test_failover_keeps_every_flow(halab: Lab) -> None:
    """20 long TCP flows and a UDP stream; plat1 dies (processes killed, links down)."""
    lab = halab
    res = failover(lab, list(CLIENTS[:20]), seconds=10.0, kill_at=3.0)
    FIGURES["failover"] = res.summary()
    on1 = res.count("plat1")
    assert on1 > 0 and res.count("plat2") > 0, res.summary()
    lost = [f for f in res.flows if not f.ok]
    assert not lost, [(f.source, f.plat, f.error) for f in lost]
    # plat2's flows never paused (a pause would be a TCP retransmission timeout, >= 1 s)
    assert max(res.outages("plat2")) < 1.0, res.summary()
    assert res.udp_received > res.udp_sent * 0.8, res.summary()
    assert pref64_paths(lab) == 1


def test_recovery_moves_no_running_flow(halab: Lab) -> None:
    """plat1 returns while 20 flows run over plat2: none moves (their buckets are
    busy); after the idle timer, new flows use plat1 again."""
    lab = halab
    assert pref64_paths(lab) == 1
    probe = (
        "table inet probe {\n"
        "  set movers { type ipv6_addr; elements = { " + ", ".join(CLIENTS[20:]) + " }; }\n"
        "  chain pre { type filter hook prerouting priority -400; "
        "ip6 saddr @movers counter; }\n}\n"
    )
    # counts, from before plat1 is back, any packet of these flows reaching it
    subprocess.run(lab.cmd("plat1", ["nft", "-f", "-"]), input=probe, text=True, check=True)
    rows, took = flows_across_revive(lab, list(CLIENTS[20:]), 14)
    assert len(rows) == 20 and all(r["status"] == 200 and not r["error"] for r in rows), rows
    moved = lab.exec("plat1", ["nft", "list", "table", "inet", "probe"]).stdout
    assert "packets 0 bytes 0" in moved, moved  # not one packet of them reached plat1
    FIGURES["recovery"] = {
        "core_uses_plat1_after_s": round(took, 2),
        "running_flows_moved": 0,
        "max_pause_ms": round(max(max_gap(r["times"]) for r in rows) * 1000),
    }
    time.sleep(IDLE_TIMER + 1)
    assert sorted(curl_from(lab, list(CLIENTS))) == sorted(CLIENTS)
    where = clients_by_plat(lab)
    assert where["plat1"], where  # new flows use plat1 again
    FIGURES["after_recovery_spread"] = {p: len(where[p]) for p in PLATS}


def test_flows_that_moved_survive_their_plat_coming_back(halab: Lab) -> None:
    """plat1 dies and comes back while its flows run on plat2 with plat1's outer
    address: conntrackd's resync gives plat1 their bindings back (from plat2's kernel
    table) before it announces again, so the replies that return to plat1 still match."""
    lab = halab
    assert pref64_paths(lab) == 2
    res = failover(lab, list(CLIENTS[:20]), seconds=22.0, kill_at=3.0, revive_at=7.0)
    FIGURES["failover_and_return"] = res.summary()
    assert res.count("plat1") > 0 and res.revive_s > 0, res.summary()
    lost = [f for f in res.flows if not f.ok]
    assert not lost, [(f.source, f.plat, f.error) for f in lost]
    assert pref64_paths(lab) == 2
    log = Path(lab.path("plat1.log")).read_text()
    assert "conntrackd resync: " in log and "announcing the Pref64" in log


def test_baseline_plain_ecmp_without_sync_loses_flows() -> None:
    """The report's setup: the flows on the dead PLAT die, and so do flows that a
    returning PLAT takes over."""
    require_root()
    with running_lab(LabConfig(ha="plain", queues=1)) as lab:
        assert pref64_paths(lab) == 2
        res = failover(lab, list(CLIENTS[:20]), seconds=10.0, kill_at=3.0)
        FIGURES["baseline_failover"] = res.summary()
        assert res.count("plat1") > 0
        assert res.survived("plat1") < res.count("plat1"), res.summary()
        assert res.survived("plat2") == res.count("plat2"), res.summary()
        # Recovery: plain ECMP re-hashes, the flows that move to plat1 have no state there.
        rows, _ = flows_across_revive(lab, list(CLIENTS[20:]), 12)
        died = [r["source"] for r in rows if r["status"] != 200 or r["error"]]
        FIGURES["baseline_recovery"] = {"flows": len(rows), "died": len(died)}
        assert len(rows) == 20 and died, FIGURES["baseline_recovery"]
        lab_id, lab_dir = lab.id, lab.dir
    # nothing left: namespaces, bird, conntrackd, the controller
    assert namespaces(lab_id) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert lab_dir not in ps, [ln for ln in ps.splitlines() if lab_dir in ln]
    print("\nbaseline:", json.dumps(FIGURES.get("baseline_failover")), file=sys.stderr)
