"""TUN devices: create or attach, one file descriptor per queue, offloads.

``open_tun`` returns a :class:`Tun` holding one fd per queue (``IFF_MULTI_QUEUE``)
and tells whether the kernel accepted ``IFF_VNET_HDR`` plus ``TUNSETOFFLOAD``.
Link settings (MTU, txqueuelen, up) go through pyroute2.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
from dataclasses import dataclass, field

from ..errors import V6mostlyError

log = logging.getLogger("v6mostly.tun")

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNGETFEATURES = 0x800454CF
TUNSETVNETHDRSZ = 0x400454D8

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

_OFFLOAD_NAMES = {
    TUN_F_CSUM: "csum",
    TUN_F_TSO4: "tso4",
    TUN_F_TSO6: "tso6",
    TUN_F_TSO_ECN: "tso_ecn",
    TUN_F_USO4: "uso4",
    TUN_F_USO6: "uso6",
}


class TunError(V6mostlyError):
    pass


@dataclass
class Tun:
    name: str
    fds: list[int]
    vnet: bool
    offloads: int
    created: bool
    notes: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        """``offload`` (vnet header with TSO) or ``plain``."""
        return "offload" if self.vnet and self.offloads & TUN_F_TSO4 else "plain"

    def offload_names(self) -> list[str]:
        return [n for bit, n in _OFFLOAD_NAMES.items() if self.offloads & bit]

    def steer(self) -> str | None:
        """Both directions of a flow on one queue (``linux/steering.py``): None when set
        (or one queue only), else why not, for one log line."""
        if len(self.fds) < 2:
            return None
        from . import steering

        return steering.attach(self.fds[0])

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def _ifreq(name: str, flags: int) -> bytes:
    return struct.pack("16sH22x", name.encode(), flags)


def _attach(name: str, flags: int) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def _set_offload(fd: int, want: int) -> int:
    """Ask for the offloads in ``want``; return the subset the kernel accepted."""
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, want)
        return want
    except OSError:
        pass
    # Older kernels refuse USO: retry without it, then with checksum only.
    for w in (want & ~(TUN_F_USO4 | TUN_F_USO6), TUN_F_CSUM):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, w)
            return w
        except OSError:
            continue
    return 0


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def open_tun(name: str, queues: int, offload: bool = True, tap: bool = False) -> Tun:
    """Create (or attach to) TUN ``name`` with ``queues`` queues (a TAP with ``tap``:
    frames with an Ethernet header).

    With ``offload`` the queues are opened with ``IFF_VNET_HDR`` and TSO/USO
    offloads; when the kernel refuses, the device falls back to plain packets.
    """
    if not name or len(name) > 15 or "/" in name or " " in name:
        raise TunError(f"tun name {name!r}: expected 1-15 characters without '/' or spaces")
    if queues < 1:
        raise TunError(f"queues = {queues}: expected at least 1")
    created = not link_exists(name)
    flags = (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI | IFF_MULTI_QUEUE
    notes: list[str] = []
    vnet = False
    if offload:
        try:
            fds = [_attach(name, flags | IFF_VNET_HDR)]
            vnet = True
        except OSError as e:
            notes.append(f"IFF_VNET_HDR refused ({e.strerror}); plain packets")
            fds = []
    else:
        fds = []
    try:
        if not fds:
            fds = [_attach(name, flags)]
        for _ in range(queues - 1):
            fds.append(_attach(name, flags | (IFF_VNET_HDR if vnet else 0)))
    except OSError as e:
        for fd in fds:
            os.close(fd)
        raise TunError(f"tun {name}: cannot open queue: {e.strerror}") from None
    offloads = 0
    if vnet:
        want = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6
        offloads = _set_offload(fds[0], want)
        for fd in fds[1:]:
            _set_offload(fd, offloads)
        missing = [n for bit, n in _OFFLOAD_NAMES.items() if want & bit and not offloads & bit]
        if missing:
            notes.append("kernel refused offloads: " + ", ".join(missing))
    return Tun(name, fds, vnet, offloads, created, notes)


def configure_link(name: str, mtu: int, txqueuelen: int) -> None:
    """Set MTU and txqueuelen and bring the link up (pyroute2)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise TunError(f"tun {name}: link vanished")
        ipr.link("set", index=idx[0], mtu=mtu, txqlen=txqueuelen, state="up")


def set_rps(name: str, cpus: int | None = None, off: bool = False) -> str | None:
    """Spread the kernel's processing of packets written into the TUN over all CPUs (RPS).

    A TUN write runs the whole forwarding path (routing, nftables, segmentation,
    checksums for links without offloads) in the writer's context, on the
    worker's CPU. Receive Packet Steering hands it to the backlog of a CPU chosen
    by the flow's hash (another one for about half of the flows on 2 CPUs), so the
    worker goes back to translating. ``off``: back to no RPS. Returns an error
    text, or None.
    """
    n = cpus or os.cpu_count() or 1
    if n < 2:
        return None
    mask = "0" if off else f"{(1 << n) - 1:x}"
    base = f"/sys/class/net/{name}/queues"
    try:
        queues = [q for q in os.listdir(base) if q.startswith("rx-")]
        for q in queues:
            with open(f"{base}/{q}/rps_cpus", "w") as f:
                f.write(mask)
    except OSError as e:
        return f"cannot set RPS on {name}: {e.strerror}"
    return None


def delete_link(name: str) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if idx:
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=idx[0])
