"""Control flow: jumps, helper calls, exit, and labels.

A jump's `off` counts instructions (8-byte slots) from the one *after* the
jump: `off=0` falls through, `off=2` skips two slots. Counting by hand is
error-prone, so jumps here take a label name and `resolve_labels` (called by
`assemble`) computes the offsets:

    jeq(R0, 0, "out")       if r0 == 0 goto out
    ...
    label("out")
    exit_()

Conditions compare unsigned unless their name says signed (`jsgt`: signed
greater than). The 32-bit forms (`jeq32`...) compare only the low halves.

`call("map_lookup_elem")` calls a kernel helper. The calling convention:
arguments in R1 to R5, the result in R0; R1 to R5 are clobbered by the call,
R6 to R9 survive it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from .insn import (HELPER_NAMES, JMP, JMP32, JMP_OPS, S16, S32, AsmError, Insn, K, Reg, X,
                   to_s32)


Operand = "Reg | int"   # what a condition compares dst with
Target = "str | int"    # a label name, or an offset in slots


@dataclass(frozen=True)
class Label:
    """A position in the program; takes no space."""
    name: str

    @property
    def slots(self) -> int:
        return 0


def label(name: str) -> Label:
    return Label(name)


def jmp(op: str, dst: Reg, src: Reg | int, target: str | int, bits: int = 64) -> Insn:
    """The general form: jmp("jeq", R1, 0, "out") is `if r1 == 0 goto out`.
    `target` is a label name, or a raw offset in slots."""
    if op not in JMP_OPS or op in ("ja", "call", "exit"):
        raise AsmError(f"unknown condition {op!r}; one of: "
                       + ", ".join(o for o in JMP_OPS if o not in ("ja", "call", "exit")))
    cls = JMP if bits == 64 else JMP32
    if not isinstance(dst, Reg):
        raise AsmError(f"a jump compares a register, not {dst!r}")
    off, name = _target(target)
    if isinstance(src, Reg):
        return Insn(cls | JMP_OPS[op] | X, dst.num, src.num, off, 0, target=name)
    if not isinstance(src, int):
        raise AsmError(f"compare with a register or an int, not {src!r}")
    hi = S32[1] if bits == 64 else 0xFFFFFFFF
    if not S32[0] <= src <= hi:
        raise AsmError(f"{src} does not fit in a {'sign-extended ' if bits == 64 else ''}"
                       "32-bit immediate: put it in a register with ld_imm64() first")
    return Insn(cls | JMP_OPS[op] | K, dst.num, 0, off, to_s32(src), target=name)


def _target(target: str | int) -> tuple[int, str | None]:
    if isinstance(target, str):
        return 0, target
    if isinstance(target, int) and S16[0] <= target <= S16[1]:
        return target, None
    raise AsmError(f"a jump target is a label name or a 16-bit offset, not {target!r}")


def ja(target: str | int) -> Insn:
    """goto target, always."""
    off, name = _target(target)
    return Insn(JMP | JMP_OPS["ja"], 0, 0, off, target=name)


def jeq(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jeq", dst, src, target)      # ==
def jne(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jne", dst, src, target)      # !=
def jgt(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jgt", dst, src, target)      # >   unsigned
def jge(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jge", dst, src, target)      # >=  unsigned
def jlt(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jlt", dst, src, target)      # <   unsigned
def jle(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jle", dst, src, target)      # <=  unsigned
def jsgt(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jsgt", dst, src, target)    # >   signed
def jsge(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jsge", dst, src, target)    # >=  signed
def jslt(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jslt", dst, src, target)    # <   signed
def jsle(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jsle", dst, src, target)    # <=  signed
def jset(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jset", dst, src, target)    # if dst & src


def jeq32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jeq", dst, src, target, 32)
def jne32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jne", dst, src, target, 32)
def jgt32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jgt", dst, src, target, 32)
def jge32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jge", dst, src, target, 32)
def jlt32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jlt", dst, src, target, 32)
def jle32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jle", dst, src, target, 32)
def jsgt32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jsgt", dst, src, target, 32)
def jsge32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jsge", dst, src, target, 32)
def jslt32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jslt", dst, src, target, 32)
def jsle32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jsle", dst, src, target, 32)
def jset32(dst: Reg, src: Operand, target: Target) -> Insn: return jmp("jset", dst, src, target, 32)


def helper_id(helper: str | int) -> int:
    """The number of a helper: "map_lookup_elem", "bpf_map_lookup_elem" or 1."""
    if isinstance(helper, int):
        if not 0 < helper < (1 << 31):
            raise AsmError(f"{helper} is not a helper number")
        return helper
    name = helper[4:] if helper.startswith("bpf_") else helper
    if name not in HELPER_NAMES or name == "unspec":
        raise AsmError(f"unknown helper {helper!r} (see `bpftool feature probe` for the list)")
    return HELPER_NAMES.index(name)


def call(helper: str | int) -> Insn:
    """Call a kernel helper by name or number. Arguments go in R1..R5, the
    result comes back in R0, and R1..R5 hold garbage afterwards."""
    return Insn(JMP | JMP_OPS["call"], 0, 0, 0, helper_id(helper))


def exit_() -> Insn:
    """Return from the program; R0 is the return value."""
    return Insn(JMP | JMP_OPS["exit"])


# ------------------------------------------------------------- resolving --
def resolve_labels(items: Iterable[Insn | Label]) -> list[Insn]:
    """Drop the labels and give each jump to a label its offset:
    off = (slot of the label) - (slot of the jump + 1)."""
    items = list(items)
    where: dict[str, int] = {}
    slot = 0
    for it in items:
        if isinstance(it, Label):
            if it.name in where:
                raise AsmError(f"label {it.name!r} is defined twice")
            where[it.name] = slot
        slot += it.slots
    out, slot = [], 0
    for it in items:
        if isinstance(it, Label):
            continue
        if it.target is not None:
            if it.target not in where:
                raise AsmError(f"jump to label {it.target!r}, which is not defined")
            off = where[it.target] - (slot + 1)
            if not S16[0] <= off <= S16[1]:
                raise AsmError(f"label {it.target!r} is too far away ({off} slots)")
            it = replace(it, off=off, target=None)
        out.append(it)
        slot += it.slots
    return out
