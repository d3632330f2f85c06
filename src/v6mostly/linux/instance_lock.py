"""One daemon per job: an abstract Unix socket per (network namespace, interface).

Two DHCPv4 servers on one link both answered, each from its own lease database
(their sockets can share the port). ``claim("dhcp4", "lan0")`` binds and listens
on the abstract address ``@v6mostly-dhcp4-lan0``. Abstract Unix addresses belong
to the network namespace, so the same interface name in another namespace is
another link; they need no file (a hardened unit with a read-only /run can hold
one), and the kernel frees them with the process, so a SIGKILLed daemon leaves
nothing behind. A second claim fails with the holder's pid (``SO_PEERCRED``).
"""

from __future__ import annotations

import contextlib
import socket
import struct

from ..errors import V6mostlyError

SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)


class InstanceLocked(V6mostlyError):
    pass


def lock_address(kind: str, name: str) -> str:
    return f"\0v6mostly-{kind}-{name}"


def claim(kind: str, name: str) -> socket.socket:
    """Hold the lock for ``kind`` on ``name`` (close the socket to release it)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.bind(lock_address(kind, name))
        s.listen(1)
        return s
    except OSError:
        s.close()
    holder = ""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(OSError, struct.error):
        c.settimeout(1.0)
        c.connect(lock_address(kind, name))
        pid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, 12))[0]
        holder = f" (pid {pid})"
    c.close()
    raise InstanceLocked(f"interface {name}: another {kind} server{holder} serves it already")
