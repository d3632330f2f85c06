"""The kernel's conntrack statistics (per-CPU hex rows) and the exhaustion log."""

from __future__ import annotations

import logging

import pytest

from v6mostly.linux.conntrack import ExhaustionWatch, parse_stat

STAT = """entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000a000  00000001 00000000 00000000 00000002 00000000 00000000 00000000 00000000 000000ff 00000003 00000000 00000000  00000000 00000000 00000000 00000000
0000a000  00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000001 00000000 00000010 00000000  00000000 00000000 00000000 00000000
"""


def test_per_cpu_rows_are_summed_entries_taken_once() -> None:
    st = parse_stat(STAT)
    assert st["entries"] == 0xA000
    assert st["insert_failed"] == 0x100
    assert st["drop"] == 3 and st["early_drop"] == 16
    assert st["invalid"] == 3 and st["clashres"] == 1
    assert parse_stat("") == {}


def test_exhaustion_logged_once_a_minute_with_what_piled_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = ExhaustionWatch(every=60.0)
    base = {"insert_failed": 10, "drop": 0, "early_drop": 0}
    with caplog.at_level(logging.WARNING, "v6mostly.conntrack"):
        assert w.update(base, 0.0, 100, 1000) is False  # the first reading is the baseline
        assert w.update(dict(base), 1.0, 100, 1000) is False  # nothing new
        assert w.update({**base, "insert_failed": 50}, 2.0, 120, 1000) is True
        assert w.update({**base, "insert_failed": 70}, 30.0, 120, 1000) is False  # too soon
        assert w.update({**base, "insert_failed": 75, "drop": 2}, 62.5, 999, 1000) is True
        assert w.update({}, 200.0, None, None) is False  # no conntrack: nothing to say
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0].startswith("conntrack: 40 insert failures (NAPT66 ports exhausted), 0 new")
    assert "25 insert failures" in msgs[1] and "2 new connections dropped" in msgs[1]
    assert "999 of 1000 entries in use" in msgs[1]
    assert len(msgs) == 2


def test_metrics_endpoint_serves_and_shuts_down() -> None:
    """The exposition server (our own WSGI wrapper: prometheus-client's
    start_http_server returned None before 0.20, which crashed the PLAT)."""
    import urllib.request

    from prometheus_client import CollectorRegistry, Counter

    from v6mostly.metrics import serve

    reg = CollectorRegistry()
    Counter("v6mostly_test_events", "a test counter", registry=reg).inc(3)
    httpd = serve(reg, "127.0.0.1", 0)
    port = httpd.server_address[1]  # type: ignore[attr-defined]
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "v6mostly_test_events_total 3.0" in body
    httpd.shutdown()  # type: ignore[attr-defined]
