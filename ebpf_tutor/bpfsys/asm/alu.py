"""Arithmetic and logic: the ALU64 and ALU (32-bit) instruction classes.

Each operation comes in four forms:

    add(R1, 5)      r1 += 5       64-bit, immediate   (class ALU64, source K)
    add(R1, R2)     r1 += r2      64-bit, register    (class ALU64, source X)
    add32(R1, 5)    w1 += 5       32-bit, immediate   (class ALU)
    add32(R1, R2)   w1 += w2      32-bit, register

A 32-bit operation works on the low halves ("w1" is the low 32 bits of r1)
and sets the upper half of the destination to zero. A 64-bit operation
sign-extends its 32-bit immediate first, so `mov(R1, -1)` gives all 64 bits
set, and 0xffffffff is not a valid 64-bit immediate (use `mov32` or
`ld_imm64`).

Division by zero does not fault: x / 0 is 0 and x % 0 is x.
"""
from __future__ import annotations

from .insn import ALU, ALU64, ALU_OPS, S32, TO_BE, TO_LE, AsmError, Insn, K, Reg, X, to_s32


def alu(op: str, dst: Reg, src: Reg | int, bits: int = 64) -> Insn:
    """The general form: alu("add", R1, R2) is r1 += r2; bits is 64 or 32."""
    if op not in ALU_OPS or op in ("neg", "end"):
        raise AsmError(f"unknown ALU operation {op!r}; one of: "
                       + ", ".join(o for o in ALU_OPS if o not in ("neg", "end")))
    if bits not in (32, 64):
        raise AsmError(f"bits must be 64 or 32, not {bits}")
    cls = ALU64 if bits == 64 else ALU
    _need_reg(dst, "destination")
    if isinstance(src, Reg):
        return Insn(cls | ALU_OPS[op] | X, dst.num, src.num)
    return Insn(cls | ALU_OPS[op] | K, dst.num, 0, 0, _imm(src, bits))


def _need_reg(r: object, what: str) -> None:
    if not isinstance(r, Reg):
        raise AsmError(f"the {what} must be a register (R0..R10), not {r!r}")


def _imm(value: int, bits: int) -> int:
    """The imm field for a value: 64-bit operations sign-extend it, so the
    value must fit in a signed 32-bit number; 32-bit ones take any 32-bit pattern."""
    if not isinstance(value, int):
        raise AsmError(f"an operand must be a register or an int, not {value!r}")
    lo = S32[0]
    hi = S32[1] if bits == 64 else 0xFFFFFFFF
    if not lo <= value <= hi:
        raise AsmError(f"{value} does not fit in a {'sign-extended ' if bits == 64 else ''}"
                       f"32-bit immediate" + ("; load it with ld_imm64()" if bits == 64 else ""))
    return to_s32(value)


# 64-bit forms
def mov(dst: Reg, src: Reg | int) -> Insn: return alu("mov", dst, src)
def add(dst: Reg, src: Reg | int) -> Insn: return alu("add", dst, src)
def sub(dst: Reg, src: Reg | int) -> Insn: return alu("sub", dst, src)
def mul(dst: Reg, src: Reg | int) -> Insn: return alu("mul", dst, src)
def div(dst: Reg, src: Reg | int) -> Insn: return alu("div", dst, src)
def mod(dst: Reg, src: Reg | int) -> Insn: return alu("mod", dst, src)
def or_(dst: Reg, src: Reg | int) -> Insn: return alu("or", dst, src)
def and_(dst: Reg, src: Reg | int) -> Insn: return alu("and", dst, src)
def xor(dst: Reg, src: Reg | int) -> Insn: return alu("xor", dst, src)
def lsh(dst: Reg, src: Reg | int) -> Insn: return alu("lsh", dst, src)
def rsh(dst: Reg, src: Reg | int) -> Insn: return alu("rsh", dst, src)
def arsh(dst: Reg, src: Reg | int) -> Insn: return alu("arsh", dst, src)


# 32-bit forms
def mov32(dst: Reg, src: Reg | int) -> Insn: return alu("mov", dst, src, 32)
def add32(dst: Reg, src: Reg | int) -> Insn: return alu("add", dst, src, 32)
def sub32(dst: Reg, src: Reg | int) -> Insn: return alu("sub", dst, src, 32)
def mul32(dst: Reg, src: Reg | int) -> Insn: return alu("mul", dst, src, 32)
def div32(dst: Reg, src: Reg | int) -> Insn: return alu("div", dst, src, 32)
def mod32(dst: Reg, src: Reg | int) -> Insn: return alu("mod", dst, src, 32)
def or32(dst: Reg, src: Reg | int) -> Insn: return alu("or", dst, src, 32)
def and32(dst: Reg, src: Reg | int) -> Insn: return alu("and", dst, src, 32)
def xor32(dst: Reg, src: Reg | int) -> Insn: return alu("xor", dst, src, 32)
def lsh32(dst: Reg, src: Reg | int) -> Insn: return alu("lsh", dst, src, 32)
def rsh32(dst: Reg, src: Reg | int) -> Insn: return alu("rsh", dst, src, 32)
def arsh32(dst: Reg, src: Reg | int) -> Insn: return alu("arsh", dst, src, 32)


def neg(dst: Reg) -> Insn:
    """r = -r (64-bit)."""
    _need_reg(dst, "destination")
    return Insn(ALU64 | ALU_OPS["neg"], dst.num)


def neg32(dst: Reg) -> Insn:
    """w = -w, upper half cleared."""
    _need_reg(dst, "destination")
    return Insn(ALU | ALU_OPS["neg"], dst.num)


# ------------------------------------------------------------ byte order --
def _end(dst: Reg, bits: int, opcode: int) -> Insn:
    _need_reg(dst, "destination")
    if bits not in (16, 32, 64):
        raise AsmError(f"byte-order conversions take 16, 32 or 64 bits, not {bits}")
    return Insn(opcode, dst.num, 0, 0, bits)


def to_be(dst: Reg, bits: int) -> Insn:
    """Convert the low `bits` of dst between host order and big-endian
    (network order), clearing the rest: on a little-endian machine this swaps
    bytes, on a big-endian one it only truncates. `be16` in the disassembly."""
    return _end(dst, bits, ALU | ALU_OPS["end"] | TO_BE)


def to_le(dst: Reg, bits: int) -> Insn:
    """The same for little-endian: a swap on big-endian machines only."""
    return _end(dst, bits, ALU | ALU_OPS["end"] | TO_LE)


def bswap(dst: Reg, bits: int) -> Insn:
    """Swap the bytes of the low `bits` unconditionally (class ALU64, kernel 6.6+)."""
    return _end(dst, bits, ALU64 | ALU_OPS["end"])
