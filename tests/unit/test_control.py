"""The control socket (``v6mostly ctl``): protocol, permissions, one instance per
path, and an explanation for every counter a daemon exports."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from v6mostly.control import ControlError, ControlServer, request
from v6mostly.explain import EXPLAIN, explain
from v6mostly.linux.nft import COUNTERS as NFT_COUNTERS
from v6mostly.services import control_handlers
from v6mostly.services.control_handlers import ReloadState, counters_answer
from v6mostly.services.worker_loops import WORKER_COUNTERS
from v6mostly.siit.verdict import Stats


def _raw(path: str, data: bytes) -> dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(data)
    out = s.makefile("rb").readline()
    s.close()
    return dict(json.loads(out))


def test_requests_answers_and_errors(tmp_path: Path) -> None:
    path = str(tmp_path / "d.sock")

    def boom(req: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("handler broke")

    srv = ControlServer(path, {"status": lambda r: {"x": r.get("arg", 1)}, "boom": boom})
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert request(path, "status") == {"ok": True, "x": 1}
        assert request(path, "status", arg=7) == {"ok": True, "x": 7}
        assert request(path, "nope") == {
            "ok": False,
            "error": "unknown command 'nope' (known: boom, status)",
        }
        assert request(path, "boom") == {"ok": False, "error": "RuntimeError: handler broke"}
        assert _raw(path, b"not json\n")["error"].startswith("bad request:")
        assert _raw(path, b'["status"]\n') == {
            "ok": False,
            "error": 'bad request: expected {"cmd": "..."}',
        }
        with pytest.raises(ControlError, match="another instance is running"):
            ControlServer(path, {})
    finally:
        srv.close()
    assert not os.path.exists(path)
    with pytest.raises(ControlError, match="no such socket"):
        request(path, "status")


def test_stale_socket_is_replaced_and_a_file_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # a socket file nobody listens on: left by a killed daemon
    srv = ControlServer(path, {"status": lambda r: {}})
    assert request(path, "status") == {"ok": True}
    srv.close()
    f = tmp_path / "plain"
    f.write_text("x")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        ControlServer(str(f), {})


def test_every_exported_counter_is_explained() -> None:
    names = [*Stats().as_dict(), *WORKER_COUNTERS, *NFT_COUNTERS, "leaked_clat_source"]
    missing = [n for n in names if explain(n) is None]
    assert missing == []
    assert explain("packets_4to6_udp") == EXPLAIN["packets_"]
    rows = counters_answer({"drop_fragmented_icmp": 3}, {"explain": True})["explained"]
    assert rows[0]["value"] == 3 and "lowest_ipv6_mtu" in rows[0]["advice"]
    assert "explained" not in counters_answer({"x": 1}, {})


def test_reload_waits_for_the_main_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    rs = ReloadState()
    sent = []

    def fake_kill(pid: int, sig: int) -> None:
        sent.append(sig)
        threading.Timer(0.05, rs.done, (False, "keeping the running configuration: x")).start()

    monkeypatch.setattr(control_handlers.os, "kill", fake_kill)
    assert rs.request(timeout=5) == {
        "reloaded": False,
        "message": "keeping the running configuration: x",
    }
    assert len(sent) == 1
    monkeypatch.setattr(control_handlers.os, "kill", lambda pid, sig: None)
    assert rs.request(timeout=0.1)["message"] == "no answer from the main loop in 0 s"


def test_router_reload_names_what_needs_a_restart(tmp_path: Path) -> None:
    from v6mostly.services.router import needs_restart
    from v6mostly.site_config import load_site

    base = (
        '[site]\npref64 = "64:ff9b::/96"\n[[interface]]\nname = "lan0"\n'
        '[dns]\nlisten = ["2001:db8:1::1"]\nallow = ["2001:db8:1::/64"]\n'
    )
    f = tmp_path / "site.toml"
    f.write_text(base)
    a = load_site(str(f))
    f.write_text(
        base.replace('allow = ["2001:db8:1::/64"]', 'allow = ["2001:db8:1::/60"]').replace(
            "[dns]", '[[interface]]\nname = "lan1"\n[dns]'
        )
    )
    b = load_site(str(f))
    assert needs_restart(a, a) == []
    assert needs_restart(a, b) == [
        "interfaces ['lan0'] -> ['lan0', 'lan1']",
        "[dns] (ACL, upstream, listeners, limits)",
    ]


def test_router_traffic_split_table_is_valid_nft() -> None:
    import ipaddress as ip

    from tests.unit.nft_check import nft_check
    from v6mostly.services.router_split import PATHS, render

    text = render(["lan0", "lan1"], ip.IPv6Network("64:ff9b::/96"))
    assert 'iifname { "lan0", "lan1" } jump lan_out' in text
    assert 'oifname { "lan0", "lan1" } jump lan_in' in text
    assert 'ip6 daddr 64:ff9b::/96 counter name "nat64_out" return' in text
    assert 'ip6 saddr 64:ff9b::/96 counter name "nat64_in" return' in text
    assert all(f"counter {c} {{ }}" in text for c in PATHS)
    nft_check(text)
