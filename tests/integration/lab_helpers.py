"""Shared pieces of the namespace-lab integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

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


def nsrun(ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace ``ns``; never raises on its exit code."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def throwaway_netns(prefix: str) -> Iterator[str]:
    """A namespace with lo up, named with a per-run suffix; removed with every process
    in it at the end, also on failure."""
    require_root()
    name = prefix + os.urandom(3).hex()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        nsrun(name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
        for p in pids.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], check=False)
