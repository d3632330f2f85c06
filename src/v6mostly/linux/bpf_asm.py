"""A minimal eBPF assembler: the instructions the in-kernel fast path (``fastpath.py``) uses,
with jumps to named labels and map references. No compiler at install or at run time: the
program is a sequence of these calls, assembled when the fast path is built.
"""

from __future__ import annotations

import struct

# opcodes: class | size/op | source
_LDX, _ST, _STX, _ALU64, _JMP = 0x01, 0x02, 0x03, 0x07, 0x05
_MEM = 0x60
_SIZE = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}
_ALU = {"add": 0x00, "sub": 0x10, "or": 0x40, "and": 0x50, "lsh": 0x60, "rsh": 0x70, "mov": 0xB0}
_J = {"ja": 0x00, "jeq": 0x10, "jgt": 0x20, "jne": 0x50, "jle": 0xB0}
_K, _X = 0x00, 0x08
_BE = 0xDC  # BPF_ALU | BPF_END | BPF_TO_BE
#: the frame pointer register
FP = 10


class Asm:
    """A minimal eBPF assembler: instructions in order, jumps to named labels."""

    def __init__(self) -> None:
        self.insns: list[tuple[int, int, int, int | str, int]] = []
        self.labels: dict[str, int] = {}

    def emit(self, code: int, dst: int = 0, src: int = 0, off: int | str = 0, imm: int = 0) -> None:
        self.insns.append((code, dst, src, off, imm))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def alu(self, op: str, dst: int, imm: int) -> None:
        self.emit(_ALU64 | _ALU[op] | _K, dst, imm=imm)

    def alux(self, op: str, dst: int, src: int) -> None:
        self.emit(_ALU64 | _ALU[op] | _X, dst, src)

    def be(self, dst: int, bits: int) -> None:
        self.emit(_BE, dst, imm=bits)

    def ldx(self, size: int, dst: int, src: int, off: int) -> None:
        self.emit(_LDX | _MEM | _SIZE[size], dst, src, off)

    def stx(self, size: int, dst: int, off: int, src: int) -> None:
        self.emit(_STX | _MEM | _SIZE[size], dst, src, off)

    def st(self, size: int, dst: int, off: int, imm: int) -> None:
        self.emit(_ST | _MEM | _SIZE[size], dst, 0, off, imm)

    def jmp(self, op: str, dst: int, imm: int, target: str) -> None:
        self.emit(_JMP | _J[op] | _K, dst, 0, target, imm)

    def jmpx(self, op: str, dst: int, src: int, target: str) -> None:
        self.emit(_JMP | _J[op] | _X, dst, src, target)

    def ja(self, target: str) -> None:
        self.emit(_JMP | _J["ja"], off=target)

    def call(self, helper: int) -> None:
        self.emit(_JMP | 0x80, imm=helper)

    def exit(self) -> None:
        self.emit(_JMP | 0x90)

    def ld_map(self, dst: int, fd: int) -> None:
        """``dst = map`` (BPF_LD | BPF_IMM | BPF_DW with BPF_PSEUDO_MAP_FD): two slots."""
        self.emit(0x18, dst, 1, 0, fd)
        self.emit(0, 0, 0, 0, 0)

    def assemble(self) -> bytes:
        out = []
        for i, (code, dst, src, off, imm) in enumerate(self.insns):
            if isinstance(off, str):
                off = self.labels[off] - i - 1
            if imm >= 2**31:
                imm -= 2**32
            out.append(struct.pack("<BBhi", code, (src << 4) | dst, off, imm))
        return b"".join(out)
