"""Shared pieces of the namespace-lab integration tests."""

from __future__ import annotations

import os
import time

import pytest

from v6mostly.lab.topology import Lab


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (CI runs as root): run `make test` as root")


def metric(lab: Lab, name: str, **labels: str) -> float:
    """A metric from the PLAT's endpoint; counters may be named with or without _total."""
    m = lab.metrics()
    names = (name, name + "_total")
    if labels:
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return sum(m.get(f"{n}{{{want}}}", 0.0) for n in names)
    return sum(v for k, v in m.items() if k in names or k.split("{")[0] in names)


def wait_for(cond: object, timeout: float = 10.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(step)
    return False


def pyexec(lab: Lab, node: str, code: str, *args: str, timeout: float = 30) -> str:
    """Run a Python snippet inside a node with this interpreter; return stdout."""
    import sys

    r = lab.exec(node, [sys.executable, "-c", code, *args], check=False, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"snippet failed in {node}: {r.stderr.strip()[-800:]}")
    return r.stdout
