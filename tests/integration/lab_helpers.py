"""Shared pieces of the namespace-lab integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from v6mostly.lab.topology import Lab, LabConfig, namespaces, running_lab


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (CI runs as root): run `make test` as root")


def module_lab(config: LabConfig) -> Iterator[Lab]:
    """The body of a module's lab fixture: a lab for its tests, checked gone afterwards."""
    require_root()
    with running_lab(config) as lab:
        yield lab
    assert namespaces(lab.id) == [], "lab namespaces left behind"


def metric(lab: Lab, name: str, **labels: str) -> float:
    """A metric from the PLAT's endpoint; counters may be named with or without _total."""
    m = lab.metrics()
    names = (name, name + "_total")
    if labels:
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return sum(m.get(f"{n}{{{want}}}", 0.0) for n in names)
    return sum(v for k, v in m.items() if k in names or k.split("{")[0] in names)


def stop(p: subprocess.Popen[Any], resend: float = 0.0) -> int:
    """SIGTERM a daemon the test started; its exit status (SIGKILL after 10 s, and the
    timeout raised: one SIGTERM must stop our own daemons).

    ``resend``: for a third-party program that can lose a SIGTERM (dhcpcd 9.4 while it
    still sets up a lease: its hook running, its listener starting), SIGTERM again every
    ``resend`` seconds; after 10 s its process group (helpers included; it was started
    with ``start_new_session``) is SIGKILLed, without raising."""
    deadline = time.monotonic() + 10
    while True:
        p.send_signal(signal.SIGTERM)
        left = deadline - time.monotonic()
        try:
            return p.wait(min(resend, left) if resend else left)
        except subprocess.TimeoutExpired:
            if resend and time.monotonic() < deadline:
                continue
            if not resend:
                p.kill()
                p.wait()
                raise
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        return p.wait(10)


def wait_for(cond: object, timeout: float = 10.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(step)
    return False


def rps_cpus(lab: Lab) -> int:
    """The PLAT TUN's first queue's RPS mask (0: RPS off)."""
    r = lab.exec("plat", ["cat", "/sys/class/net/nat64/queues/rx-0/rps_cpus"])
    return int(r.stdout.strip().replace(",", ""), 16)


def rps_during(lab: Lab, node: str, argv: list[str], seconds: float = 8.0) -> list[int]:
    """Run ``argv`` in ``node`` (it must end by itself) and sample ``rps_cpus`` while it
    runs, at most ``seconds``; the samples."""
    seen = []
    p = subprocess.Popen(lab.cmd(node, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + seconds
        while p.poll() is None and time.monotonic() < deadline:
            seen.append(rps_cpus(lab))
            time.sleep(0.3)
    finally:
        stop(p)
    return seen


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


class NamespaceSet:
    """The one namespace harness of the tests that build their own topology (the
    router tests, the attack labs, the service tests): namespaces named
    ``PREFIX-ID-ROLE`` with a per-run id, lo up, DAD off; veth pairs between them;
    ``close()`` kills every process in them and deletes them, also after a failure.
    (The product's lab, ``v6mostly.lab``, is the other, bigger harness.)"""

    def __init__(self, prefix: str, run_id: str | None = None) -> None:
        require_root()
        self.prefix = prefix
        self.id = run_id or os.urandom(3).hex()
        self.roles: list[str] = []

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{self.id}-{role}"

    def add(self, *roles: str) -> None:
        for role in roles:
            subprocess.run(["ip", "netns", "add", self.ns(role)], check=True)
            self.roles.append(role)
            for argv in (
                ("ip", "link", "set", "lo", "up"),
                ("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"),
                ("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"),
            ):
                nsrun(self.ns(role), *argv)

    def veth(self, a: str, a_if: str, b: str, b_if: str, up: bool = True) -> None:
        subprocess.run(
            [*("ip", "-n", self.ns(a), "link", "add", a_if, "type", "veth"),
             *("peer", "name", b_if, "netns", self.ns(b))],
            check=True,
        )  # fmt: skip
        if up:
            nsrun(self.ns(a), "ip", "link", "set", a_if, "up")
            nsrun(self.ns(b), "ip", "link", "set", b_if, "up")

    def close(self) -> None:
        for role in self.roles:
            ns = self.ns(role)
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
            ).stdout
            for p in pids.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(p), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    def all_gone(self) -> bool:
        return all(
            subprocess.run(["ip", "netns", "pids", self.ns(r)], capture_output=True).returncode != 0
            for r in self.roles
        )


@contextlib.contextmanager
def throwaway_netns(prefix: str) -> Iterator[str]:
    """One namespace with lo up, named with a per-run suffix; removed with every process
    in it at the end, also on failure."""
    nss = NamespaceSet(prefix.rstrip("-"))
    try:
        nss.add("ns")
        yield nss.ns("ns")
    finally:
        nss.close()
