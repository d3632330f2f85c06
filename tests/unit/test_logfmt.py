"""Log line formats: plain, journald (no timestamp, syslog priority prefix), JSON."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from v6mostly.logfmt import formatter


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("v6mostly.router", level, __file__, 1, msg, None, None)


def test_plain_text_has_a_timestamp() -> None:
    line = formatter("text", {}).format(_record(logging.INFO, "router running"))
    assert line.endswith(" v6mostly v6mostly.router INFO: router running")
    assert line[:4].isdigit()


def test_under_journald_no_timestamp_and_a_priority_prefix(tmp_path: Path) -> None:
    with open(tmp_path / "journal", "w") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        f = formatter("text", env, stream.fileno())
        # Inherited by a process whose stderr is elsewhere: plain lines.
        assert not isinstance(
            formatter("text", {"JOURNAL_STREAM": "1:2"}, stream.fileno()), type(f)
        )
    assert f.format(_record(logging.WARNING, "pool lan0 exhausted")) == (
        "<4>v6mostly.router: pool lan0 exhausted"
    )
    assert f.format(_record(logging.INFO, "a\nb")) == "<6>v6mostly.router: a\n<6>b"


def test_json_lines() -> None:
    out = json.loads(formatter("json", {}).format(_record(logging.ERROR, "x = 1")))
    assert out["level"] == "error" and out["logger"] == "v6mostly.router"
    assert out["msg"] == "x = 1" and out["ts"].endswith("Z") and isinstance(out["pid"], int)
