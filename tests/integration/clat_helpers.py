"""Running `v6mostly clat` on the lab's client, for the CLAT integration tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from v6mostly.lab.topology import Lab


def clat_state(lab: Lab) -> dict[str, Any]:
    """What the CLAT wrote to its state file ({} before it did)."""
    try:
        return dict(json.loads(Path(lab.path("clat/clat-eth0.json")).read_text()))
    except (OSError, ValueError):
        return {}


def spawn_clat(lab: Lab, *extra: str) -> None:
    """The CLAT on client6's eth0, its state under the lab's directory."""
    lab.spawn(
        "client6",
        "clat",
        [sys.executable, "-m", "v6mostly", "clat", "--interface", "eth0",
         "--state-dir", lab.path("clat"), *extra],
    )  # fmt: skip


def clat_status(lab: Lab) -> subprocess.CompletedProcess[str]:
    """`v6mostly clat status eth0`, as an operator runs it."""
    argv = [sys.executable, "-m", "v6mostly", "clat", "status", "eth0"]
    return lab.exec("client6", [*argv, "--state-dir", lab.path("clat")], check=False, timeout=10)
