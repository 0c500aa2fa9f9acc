"""Memory: loads (LDX), stores (STX, ST), atomics, and the wide loads (LD).

The argument order follows the kernel's own macros (BPF_LDX_MEM and
friends in `include/linux/filter.h`), size first:

    ldx(U32, R2, R1, 4)     r2 = *(u32 *)(r1 + 4)
    stx(U64, R10, R1, -8)   *(u64 *)(r10 - 8) = r1
    st(U32, R10, -4, 0)     *(u32 *)(r10 - 4) = 0
    ld_imm64(R1, 1 << 40)   r1 = 0x10000000000         (two 8-byte slots)
    ld_map_fd(R1, fd)       r1 = the map behind fd     (the kernel swaps in its address)

Loads of less than 8 bytes zero-extend. Every pointer register has a type
in the verifier's eyes (stack, context, packet, map value...), and whether a
load or store is allowed depends on it, and on the offset and size.
"""
from __future__ import annotations

from .insn import (ABS, ATOMIC, DW, IND, LD, LD_IMM64, LDX, MEM, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE,
                   S16, ST, STX, AsmError, B, H, Insn, Reg, W, to_s32)

U8, U16, U32, U64 = B, H, W, DW   # access sizes, named as C names them


def _check(size: int, off: int, *regs: Reg) -> None:
    if size not in (U8, U16, U32, U64):
        raise AsmError("the size must be one of U8, U16, U32, U64")
    if not isinstance(off, int) or not S16[0] <= off <= S16[1]:
        raise AsmError(f"offset {off!r} does not fit in the signed 16-bit off field")
    for r in regs:
        if not isinstance(r, Reg):
            raise AsmError(f"expected a register (R0..R10), got {r!r}")


def ldx(size: int, dst: Reg, src: Reg, off: int = 0) -> Insn:
    """dst = *(size *)(src + off)"""
    _check(size, off, dst, src)
    return Insn(LDX | size | MEM, dst.num, src.num, off)


def stx(size: int, dst: Reg, src: Reg, off: int = 0) -> Insn:
    """*(size *)(dst + off) = src"""
    _check(size, off, dst, src)
    return Insn(STX | size | MEM, dst.num, src.num, off)


def st(size: int, dst: Reg, off: int, imm: int) -> Insn:
    """*(size *)(dst + off) = imm (a 32-bit immediate, sign-extended for U64)"""
    _check(size, off, dst)
    if not -(1 << 31) <= imm <= 0xFFFFFFFF:
        raise AsmError(f"{imm} does not fit in a 32-bit immediate")
    return Insn(ST | size | MEM, dst.num, 0, off, to_s32(imm))


def atomic_add(size: int, dst: Reg, src: Reg, off: int = 0) -> Insn:
    """lock *(size *)(dst + off) += src: an add that concurrent CPUs cannot
    interleave (U32 or U64). The classic way to bump a counter in a map."""
    _check(size, off, dst, src)
    if size not in (U32, U64):
        raise AsmError("atomic operations work on U32 or U64")
    return Insn(STX | size | ATOMIC, dst.num, src.num, off, 0)   # imm 0 = BPF_ADD


def ld_imm64(dst: Reg, value: int) -> Insn:
    """dst = a full 64-bit constant. Two slots: imm holds the low 32 bits,
    the second slot's imm the high 32 bits."""
    _check(U64, 0, dst)
    if not -(1 << 63) <= value < (1 << 64):
        raise AsmError(f"{value} does not fit in 64 bits")
    value &= (1 << 64) - 1
    return Insn(LD_IMM64, dst.num, 0, 0, to_s32(value), to_s32(value >> 32))


def ld_map_fd(dst: Reg, map_fd: int) -> Insn:
    """dst = pointer to the map whose file descriptor is map_fd. src=1
    (BPF_PSEUDO_MAP_FD) tells the kernel to replace the fd by the map's
    address at load time; bpftool later shows it as map[id:N]."""
    _check(U64, 0, dst)
    return Insn(LD_IMM64, dst.num, PSEUDO_MAP_FD, 0, map_fd, 0)


def ld_map_value(dst: Reg, map_fd: int, offset: int = 0) -> Insn:
    """dst = address of byte `offset` of the value of an array map's entry 0
    (BPF_PSEUDO_MAP_VALUE: how global variables work)."""
    _check(U64, 0, dst)
    return Insn(LD_IMM64, dst.num, PSEUDO_MAP_VALUE, 0, map_fd, offset)


def ld_abs(size: int, offset: int) -> Insn:
    """r0 = packet bytes at `offset`, in network order converted to host
    order (socket filters only: the classic BPF packet load). An offset past
    the end makes the program return 0 at once."""
    _check(size, 0)
    return Insn(LD | size | ABS, 0, 0, 0, offset)


def ld_ind(size: int, src: Reg, offset: int) -> Insn:
    """r0 = packet bytes at src + offset (like ld_abs, indexed)."""
    _check(size, 0, src)
    return Insn(LD | size | IND, 0, src.num, 0, offset)
