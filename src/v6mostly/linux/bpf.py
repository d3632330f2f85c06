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
import struct

from ..errors import V6mostlyError

#: bpf(2) system call numbers.
_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361}
BPF_PROG_LOAD = 5
_CMD_NAMES = {5: "BPF_PROG_LOAD", 10: "BPF_PROG_TEST_RUN"}
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


def install_redirect_neigh(tun: str, uplink: str) -> bool:
    """Attach the program to ``tun``'s ingress (adding ``clsact``): IPv6 from the
    TUN leaves through ``uplink``. Returns True when the qdisc was added here."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        t = ipr.link_lookup(ifname=tun)
        u = ipr.link_lookup(ifname=uplink)
        if not t or not u:
            raise BpfError(f"redirect {tun} -> {uplink}: link not found")
        fd = load_sched_cls(redirect_neigh_program(u[0]))
        try:
            added = False
            try:
                ipr.tc("add", "clsact", t[0])
                added = True
            except NetlinkError as e:
                if e.code != 17:  # EEXIST: someone's clsact is there already
                    raise BpfError(f"tc qdisc add dev {tun} clsact: {e}") from None
            try:
                ipr.tc(
                    "add-filter",
                    "bpf",
                    t[0],
                    parent=0xFFFFFFF2,  # clsact ingress (ffff:fff2)
                    protocol=ETH_P_IPV6,
                    prio=PREF,
                    fd=fd,
                    name=PROG_NAME,
                    direct_action=True,
                )
            except NetlinkError as e:
                if added:
                    with contextlib.suppress(NetlinkError):
                        ipr.tc("del", "clsact", t[0])
                raise BpfError(f"tc filter add dev {tun} ingress bpf: {e}") from None
            return added
        finally:
            os.close(fd)  # the filter holds its own reference
