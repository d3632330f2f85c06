"""A tc program that sends IPv6 written into the CLAT's TUN out of the uplink.

The CLAT writes the IPv6 packets it translated back into its TUN, with their
virtio-net headers, so a 64 KB TCP super-packet stays one packet. On the TUN's
``clsact`` ingress a five-instruction eBPF program calls
``bpf_redirect_neigh(uplink)``: the kernel looks the destination up in the FIB
(as for a locally sent packet, output interface the uplink), fills in the
neighbour's link-layer address (resolving it if needed) and queues the packet on
the uplink, where it is segmented in hardware or software. No IPv6 forwarding on
the host, no proxy ND, and none of the per-packet cost of a raw socket (which
cannot take a super-packet). The filter matches IPv6 only (``protocol ipv6``);
IPv4 written into the TUN goes up the stack as before.

There is no maintained Python library for loading eBPF bytecode without a
compiler, and the program is five fixed instructions, so they are assembled
here (``struct``) and loaded with the ``bpf(2)`` system call; pyroute2 attaches
the resulting file descriptor as a ``cls_bpf`` filter in direct-action mode.

The design: docs/architecture.md §2.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import socket
import struct

from ..errors import V6mostlyError

#: bpf(2) system call numbers.
_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361}
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM = 0, 1, 2
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
_CMD_NAMES = {
    0: "BPF_MAP_CREATE",
    1: "BPF_MAP_LOOKUP_ELEM",
    2: "BPF_MAP_UPDATE_ELEM",
    5: "BPF_PROG_LOAD",
    10: "BPF_PROG_TEST_RUN",
}
BPF_PROG_TYPE_SCHED_CLS = 3
#: enum bpf_func_id: BPF_FUNC_redirect_neigh (Linux 5.10).
BPF_FUNC_REDIRECT_NEIGH = 152
ETH_P_IPV6 = 0x86DD
#: Our filter's preference on the TUN's ingress.
PREF = 49160
PROG_NAME = "v6m_clat_out"


class BpfError(V6mostlyError):
    pass


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def redirect_neigh_program(ifindex: int) -> bytes:
    """``return bpf_redirect_neigh(ifindex, NULL, 0, 0);`` as eBPF bytecode.

    Returns TC_ACT_REDIRECT (7), or TC_ACT_SHOT (2) when the redirect cannot be
    set up (the packet is dropped, as a failed send would be).
    """
    mov64_imm = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
    call = 0x85  # BPF_JMP | BPF_CALL
    exit_ = 0x95  # BPF_JMP | BPF_EXIT
    if not 0 < ifindex < 2**31:
        raise BpfError(f"ifindex {ifindex}: out of range")
    return b"".join(
        (
            insn(mov64_imm, dst=1, imm=ifindex),
            insn(mov64_imm, dst=2, imm=0),
            insn(mov64_imm, dst=3, imm=0),
            insn(mov64_imm, dst=4, imm=0),
            insn(call, imm=BPF_FUNC_REDIRECT_NEIGH),
            insn(exit_),
        )
    )


def _syscall_number() -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise BpfError(f"bpf(2): unknown system call number on {platform.machine()}")
    return nr


def bpf_syscall(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """``bpf(cmd, attr, sizeof attr)``; BpfError naming the command when it fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    r = int(libc.syscall(_syscall_number(), cmd, attr, len(attr)))
    if r < 0:
        raise BpfError(f"bpf({_CMD_NAMES.get(cmd, cmd)}): {os.strerror(ctypes.get_errno())}")
    return r


def load_program(insns: bytes, prog_type: int, name: str) -> int:
    """Load an eBPF program of ``prog_type``; return its file descriptor.

    The first attempt asks for no verifier log; a refused program is loaded again
    with the log on, for the line that says why."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"Dual MIT/GPL")

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = struct.pack(
            "<IIQQIIQII16s",
            prog_type,
            len(insns) // 8,
            ctypes.addressof(code),
            ctypes.addressof(lic),
            1 if log is not None else 0,
            len(log) if log is not None else 0,
            ctypes.addressof(log) if log is not None else 0,
            0,
            0,
            name.encode()[:15],
        )
        abuf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
        return bpf_syscall(BPF_PROG_LOAD, abuf)

    try:
        return attempt(None)
    except BpfError as first:
        log = ctypes.create_string_buffer(1 << 20)
        try:
            return attempt(log)
        except BpfError as e:
            lines = log.value.decode(errors="replace").strip().splitlines()
            detail = [x for x in lines if not x.startswith(("processed ", "verification time"))]
            raise BpfError(f"{e}: {detail[-1]}" if detail else str(first)) from None


def load_sched_cls(insns: bytes, name: str = PROG_NAME) -> int:
    """Load a ``BPF_PROG_TYPE_SCHED_CLS`` program; return its file descriptor."""
    return load_program(insns, BPF_PROG_TYPE_SCHED_CLS, name)


#: clsact's two hooks (parents ffff:fff2 and ffff:fff3)
CLSACT_INGRESS, CLSACT_EGRESS = 0xFFFFFFF2, 0xFFFFFFF3


def attach_cls_bpf(dev: str, fd: int, parent: int, protocol: int, pref: int, name: str) -> bool:
    """Put program ``fd`` on ``dev``'s clsact hook ``parent`` as a direct-action ``cls_bpf``
    filter for ``protocol`` at preference ``pref``, in place of an earlier filter there
    (adding ``clsact`` if needed). Returns True when the qdisc was added here; the filter
    holds its own reference to the program."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    where = "ingress" if parent == CLSACT_INGRESS else "egress"
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=dev)
        if not idx:
            raise BpfError(f"tc filter on {dev}: link not found")
        added = False
        try:
            ipr.tc("add", "clsact", idx[0])
            added = True
        except NetlinkError as e:
            if e.code != 17:  # EEXIST: someone's clsact is there already
                raise BpfError(f"tc qdisc add dev {dev} clsact: {e}") from None
        with contextlib.suppress(NetlinkError):
            ipr.tc("del-filter", "bpf", idx[0], parent=parent, protocol=protocol, prio=pref)
        try:
            ipr.tc(
                "add-filter",
                "bpf",
                idx[0],
                parent=parent,
                protocol=protocol,
                prio=pref,
                fd=fd,
                name=name,
                direct_action=True,
            )
        except NetlinkError as e:
            if added:
                with contextlib.suppress(NetlinkError):
                    ipr.tc("del", "clsact", idx[0])
            raise BpfError(f"tc filter add dev {dev} {where} bpf: {e}") from None
        return added


def detach_cls_bpf(dev: str, parent: int, protocol: int, pref: int, remove_qdisc: bool) -> None:
    """Take the filter at ``pref`` (and ``clsact``, if it was added here) off ``dev``.
    Never raises: the link may be gone already."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with contextlib.suppress(NetlinkError, OSError), IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=dev)
        if not idx:
            return
        with contextlib.suppress(NetlinkError):
            ipr.tc("del-filter", "bpf", idx[0], parent=parent, protocol=protocol, prio=pref)
        if remove_qdisc:
            ipr.tc("del", "clsact", idx[0])


def install_redirect_neigh(tun: str, uplink: str) -> bool:
    """Attach the program to ``tun``'s ingress (adding ``clsact``): IPv6 from the
    TUN leaves through ``uplink``. Returns True when the qdisc was added here."""
    u = socket_ifindex(uplink)
    if u is None:
        raise BpfError(f"redirect {tun} -> {uplink}: link not found")
    fd = load_sched_cls(redirect_neigh_program(u))
    try:
        return attach_cls_bpf(tun, fd, CLSACT_INGRESS, ETH_P_IPV6, PREF, PROG_NAME)
    finally:
        os.close(fd)  # the filter holds its own reference


def socket_ifindex(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


# -- maps ---------------------------------------------------------------------------


def map_create(map_type: int, key_size: int, value_size: int, entries: int, name: str) -> int:
    attr = struct.pack(
        "<IIIIIII16s", map_type, key_size, value_size, entries, 0, 0, 0, name.encode()[:15]
    )
    abuf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    return bpf_syscall(BPF_MAP_CREATE, abuf)


def _elem(cmd: int, fd: int, key: bytes, value: ctypes.Array[ctypes.c_char]) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    attr = struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(value), 0)
    abuf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    bpf_syscall(cmd, abuf)


def map_update(fd: int, key: bytes, value: bytes) -> None:
    _elem(BPF_MAP_UPDATE_ELEM, fd, key, ctypes.create_string_buffer(value, len(value)))


def map_lookup(fd: int, key: bytes, size: int) -> bytes:
    v = ctypes.create_string_buffer(size)
    _elem(BPF_MAP_LOOKUP_ELEM, fd, key, v)
    return v.raw


def possible_cpus() -> int:
    """What a per-CPU map's value is a multiple of (``/sys/devices/system/cpu/possible``)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n
