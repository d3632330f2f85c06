"""One daemon per job: a lock file per (network namespace, interface).

Two DHCPv4 servers on one link both answered, each from its own lease database
(their sockets can share the port). ``claim("dhcp4", "lan0")`` takes an
exclusive ``flock`` on ``/run/v6mostly/lock/dhcp4-NETNS-lan0.lock`` (NETNS: the
inode of this process's network namespace, so the same interface name in another
namespace is another link) and keeps it until the process exits; a second claim
fails with the holder's pid. The kernel drops the lock with the process, so a
SIGKILLed daemon leaves nothing that blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from ..errors import V6mostlyError

LOCK_DIR = "/run/v6mostly/lock"


class InstanceLocked(V6mostlyError):
    pass


def _netns() -> int:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


def lock_path(kind: str, name: str, lock_dir: str = LOCK_DIR) -> str:
    return os.path.join(lock_dir, f"{kind}-{_netns()}-{name}.lock")


def claim(kind: str, name: str, lock_dir: str = LOCK_DIR) -> int:
    """Hold the lock for ``kind`` on ``name``; returns its fd (close it to release)."""
    os.makedirs(lock_dir, mode=0o755, exist_ok=True)
    path = lock_path(kind, name, lock_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = f" (pid {int(os.pread(fd, 32, 0).split()[0])})"
        os.close(fd)
        raise InstanceLocked(
            f"interface {name}: another {kind} server{holder} serves it already ({path})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
