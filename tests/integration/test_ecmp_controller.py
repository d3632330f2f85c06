"""``v6mostly ecmp`` as a process on a router between two PLATs (issue 12).

A router namespace with a veth to each of two "PLAT" namespaces; bird2 is simulated by
writing the multipath Pref64 route into the learn table with ``ip -6 route replace``.
``ip`` is the oracle: ``ip -j nexthop show``, ``ip -j nexthop bucket show`` and the route
in the main table. Namespaces carry a per-run suffix and are removed in ``finally``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_helpers import NamespaceSet, nsrun, stop, wait_for

pytestmark = pytest.mark.integration

PREFIX = "2001:db8:64::/96"
GROUP = 6400
A_ID, B_ID = 6401, 6402
A_GW, B_GW = "2001:db8:a::2", "2001:db8:b::2"
BUCKETS = 16
#: ``v6mostly ecmp`` as cli.py runs it (its log format, then ``main``).
RUNNER = (
    "import argparse, logging, sys\n"
    "from v6mostly.logfmt import formatter\n"
    "from v6mostly.services import ecmp\n"
    "h = logging.StreamHandler(sys.stderr); h.setFormatter(formatter('text'))\n"
    "logging.getLogger().handlers[:] = [h]\n"
    "p = argparse.ArgumentParser(); ecmp.add_parser(p.add_subparsers(dest='cmd'))\n"
    "a = p.parse_args(['ecmp', *sys.argv[1:]]); a.log_format = 'text'\n"
    "sys.exit(ecmp.main(a))\n"
)
#: One UDP datagram from each of many sources (IPV6_FREEBIND: no address needed): with
#: the hash on the source alone, each source is one flow and marks its bucket busy.
TRAFFIC = (
    "import socket, sys\n"
    "for i in range(1, int(sys.argv[1]) + 1):\n"
    "    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
    "    s.setsockopt(socket.IPPROTO_IPV6, 78, 1)\n"
    "    s.bind((f'2001:db8:c::{i:x}', 0))\n"
    "    s.sendto(b'x', ('2001:db8:64::c633:6401', 9))\n"
    "    s.close()\n"
)


class Topo:
    def __init__(self, tmp_path: Path) -> None:
        self.nss = NamespaceSet("v6m-ecmp")
        self.tmp = tmp_path
        self.port = 9468 + int(self.nss.id, 16) % 500

    def build(self) -> None:
        self.nss.add("r", "p1", "p2")
        self.nss.veth("r", "a0", "p1", "e0")
        self.nss.veth("r", "b0", "p2", "e0")
        for role, dev, addr in (
            ("r", "a0", "2001:db8:a::1"),
            ("r", "b0", "2001:db8:b::1"),
            ("p1", "e0", A_GW),
            ("p2", "e0", B_GW),
        ):
            self.ip(role, "addr", "add", f"{addr}/64", "dev", dev, "nodad")

    @property
    def r(self) -> str:
        return self.nss.ns("r")

    def ip(self, role: str, *argv: str) -> str:
        res = nsrun(self.nss.ns(role), "ip", *argv)
        assert res.returncode == 0, f"ip {' '.join(argv)}: {res.stderr}"
        return res.stdout

    def learn(self, *gws: tuple[str, str]) -> None:
        """What bird2's kernel protocol does with the BGP routes (merge paths on)."""
        if not gws:
            nsrun(self.r, "ip", "-6", "route", "del", PREFIX, "table", "100")
            return
        hops = [w for gw, dev in gws for w in ("nexthop", "via", gw, "dev", dev)]
        self.ip("r", "-6", "route", "replace", PREFIX, "table", "100", *hops)

    def config(self, idle_timer: int) -> str:
        p = self.tmp / f"ecmp-{idle_timer}.toml"
        p.write_text(
            f'[ecmp]\nprefix = "{PREFIX}"\nlearn_table = 100\ntable = 254\n'
            f"group_id = {GROUP}\nbuckets = {BUCKETS}\nidle_timer = {idle_timer}\n"
            f'[metrics]\nlisten = "127.0.0.1:{self.port}"\n'
        )
        return str(p)

    def start(self, config: str, *flags: str, log: str = "ecmp.log") -> subprocess.Popen[bytes]:
        flags = ("--control-socket", str(self.tmp / "ecmp.sock"), *flags)
        with (self.tmp / log).open("wb") as f:
            return subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.r,
                    sys.executable,
                    "-c",
                    RUNNER,
                    "--config",
                    config,
                    *flags,
                ],
                stdout=f,
                stderr=subprocess.STDOUT,
            )

    def log(self, name: str = "ecmp.log") -> str:
        return (self.tmp / name).read_text()

    def members(self) -> list[int]:
        out = json.loads(self.ip("r", "-j", "nexthop", "show") or "[]")
        for o in out:
            if o["id"] == GROUP:
                return sorted(m["id"] for m in o["group"])
        return []

    def group(self) -> dict[str, object] | None:
        out = json.loads(self.ip("r", "-j", "nexthop", "show") or "[]")
        return next((o for o in out if o["id"] == GROUP), None)

    def buckets(self) -> dict[int, tuple[int, float]]:
        """index -> (member id, idle time in seconds)."""
        res = nsrun(self.r, "ip", "-j", "nexthop", "bucket", "show", "id", str(GROUP))
        if res.returncode != 0 or not res.stdout.strip():
            return {}
        return {
            b["bucket"]["index"]: (b["bucket"]["nhid"], float(b["bucket"]["idle_time"]))
            for b in json.loads(res.stdout)
        }

    def route(self) -> str:
        return self.ip("r", "-6", "route", "show", PREFIX, "table", "254")

    def traffic(self, sources: int = 128) -> None:
        res = nsrun(self.r, sys.executable, "-c", TRAFFIC, str(sources))
        assert res.returncode == 0, res.stderr

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
        res = nsrun(self.r, sys.executable, "-c", code)
        return res.stdout


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[Topo]:
    t = Topo(tmp_path)
    try:
        t.build()
        yield t
    finally:
        t.nss.close()
    assert t.nss.all_gone()


def per_member(b: dict[int, tuple[int, float]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for nhid, _idle in b.values():
        out[nhid] = out.get(nhid, 0) + 1
    return out


def test_group_follows_bgp_link_flush_and_survives_a_restart(topo: Topo) -> None:
    topo.learn((A_GW, "a0"), (B_GW, "b0"))
    p = topo.start(topo.config(idle_timer=60))
    try:
        assert wait_for(lambda: topo.members() == [A_ID, B_ID]), topo.log()
        g = topo.group()
        assert g is not None and g["type"] == "resilient"
        assert g["resilient_args"]["buckets"] == BUCKETS  # type: ignore[index]
        assert f"nhid {GROUP}" in topo.route()
        assert per_member(topo.buckets()) == {A_ID: BUCKETS // 2, B_ID: BUCKETS // 2}
        sysctl = nsrun(topo.r, "sysctl", "-n", "net.ipv6.fib_multipath_hash_policy")
        assert sysctl.stdout.strip() == "3"
        fields = nsrun(topo.r, "sysctl", "-n", "net.ipv6.fib_multipath_hash_fields")
        assert fields.stdout.strip() in ("1", "0x1")  # the source address alone
        assert wait_for(lambda: "v6mostly_ecmp_members 2.0" in topo.metrics())
        m = topo.metrics()
        assert f'v6mostly_ecmp_member_buckets{{dev="b0",gateway="{B_GW}",id="{B_ID}"}} 8.0' in m

        # bird2 withdraws B: only B's buckets move (to A); A's stay where they were.
        before = topo.buckets()
        topo.learn((A_GW, "a0"))
        assert wait_for(lambda: topo.members() == [A_ID]), topo.log()
        after = topo.buckets()
        for i, (nhid, _) in before.items():
            assert after[i][0] == A_ID, (i, nhid, before, after)
        assert f"nhid {GROUP}" in topo.route()
        assert wait_for(lambda: f"removed gateway {B_GW} dev b0" in topo.log())
        line = next(x for x in topo.log().splitlines() if f"removed gateway {B_GW}" in x)
        assert "members now: 2001:db8:a::2 dev a0 (BGP route change)" in line

        # Traffic from many sources keeps A's buckets busy: with a 60 s idle timer a
        # returning B takes none of them at once (only idle buckets may migrate).
        topo.traffic()
        busy = {i for i, (_, idle) in topo.buckets().items() if idle < 60}
        assert len(busy) > BUCKETS // 2
        topo.learn((A_GW, "a0"), (B_GW, "b0"))
        assert wait_for(lambda: topo.members() == [A_ID, B_ID]), topo.log()
        now = topo.buckets()
        on_b = {i for i, (nhid, _) in now.items() if nhid == B_ID}
        assert not on_b & busy, (on_b, busy)
        assert all(now[i][0] == A_ID for i in busy)

        # Carrier loss on B's link: the kernel flushes B's nexthop itself.
        topo.ip("p2", "link", "set", "e0", "down")
        assert wait_for(lambda: topo.members() == [A_ID]), topo.log()
        assert wait_for(lambda: "link flush" in topo.log()), topo.log()
        assert f"nhid {GROUP}" in topo.route()
        time.sleep(1.2)  # a few passes: B (linkdown in the learned route) stays out
        assert topo.members() == [A_ID]
        topo.ip("p2", "link", "set", "e0", "up")
        assert wait_for(lambda: topo.members() == [A_ID, B_ID], 15), topo.log()

        # No PLAT left: route and group go (and it is said); they come back with one.
        topo.learn()
        assert wait_for(lambda: topo.group() is None), topo.log()
        assert topo.route().strip() == ""
        assert "no member left" in topo.log()
        topo.learn((B_GW, "b0"))
        assert wait_for(lambda: topo.members() == [B_ID] or topo.members() == [A_ID])
        assert wait_for(lambda: f"nhid {GROUP}" in topo.route())
        topo.learn((A_GW, "a0"), (B_GW, "b0"))
        assert wait_for(lambda: len(topo.members()) == 2), topo.log()
        m = topo.metrics()
        assert 'v6mostly_ecmp_changes_total{kind="removed",reason="flush"} 1.0' in m
        ctl = subprocess.run(
            [
                sys.executable,
                "-m",
                "v6mostly",
                "ctl",
                "--socket",
                str(topo.tmp / "ecmp.sock"),
                "status",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert ctl.returncode == 0, ctl.stderr
        assert f"{A_GW} dev a0, {B_GW} dev b0" in ctl.stdout
        assert "v6mostly_ecmp_last_change_timestamp_seconds" in m
    finally:
        rc = stop(p)
    assert rc == 0, topo.log()
    # SIGTERM leaves route and group: a restart must not move a flow.
    assert "leaving route" in topo.log()
    kept = topo.buckets()
    assert len(topo.members()) == 2 and f"nhid {GROUP}" in topo.route()
    p = topo.start(topo.config(idle_timer=60), log="again.log")
    try:
        assert wait_for(lambda: "found at start" in topo.log("again.log")), topo.log("again.log")
        time.sleep(1.0)
        assert {i: n for i, (n, _) in topo.buckets().items()} == {
            i: n for i, (n, _) in kept.items()
        }
    finally:
        assert stop(p) == 0


def test_small_idle_timer_rebalances_and_cleanup_removes_everything(topo: Topo) -> None:
    topo.learn((A_GW, "a0"), (B_GW, "b0"))
    p = topo.start(topo.config(idle_timer=2), "--cleanup")
    try:
        assert wait_for(lambda: topo.members() == [A_ID, B_ID]), topo.log()
        g = topo.group()
        assert g is not None and g["resilient_args"]["idle_timer"] == 2  # type: ignore[index]
        topo.learn((A_GW, "a0"))
        assert wait_for(lambda: topo.members() == [A_ID]), topo.log()
        topo.traffic()
        topo.learn((A_GW, "a0"), (B_GW, "b0"))
        assert wait_for(lambda: topo.members() == [A_ID, B_ID]), topo.log()
        # Once the buckets have been idle for 2 s the kernel moves B's share back.
        assert wait_for(lambda: per_member(topo.buckets()).get(B_ID) == BUCKETS // 2, 15), (
            topo.buckets()
        )
    finally:
        rc = stop(p)
    assert rc == 0, topo.log()
    assert topo.group() is None and topo.members() == []
    assert topo.route().strip() == ""
    assert json.loads(topo.ip("r", "-j", "nexthop", "show") or "[]") == []
    sysctl = nsrun(topo.r, "sysctl", "-n", "net.ipv6.fib_multipath_hash_policy")
    assert sysctl.stdout.strip() == "0"


def test_dry_run_shows_the_plan_against_the_kernel(topo: Topo) -> None:
    topo.learn((A_GW, "a0"), (B_GW, "b0"))
    res = nsrun(topo.r, sys.executable, "-c", RUNNER, "--config", topo.config(30), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"ip nexthop replace id {A_ID} via {A_GW} dev a0" in res.stdout
    assert f"ip -6 route replace {PREFIX} nhid {GROUP} table 254" in res.stdout
    assert topo.group() is None  # nothing applied
