"""A small assembler for eBPF: write instructions as Python calls.

    from ebpf_tutor.bpfsys.asm import *

    prog = [
        mov(R0, 0),            # r0 = 0
        jeq(R1, 0, "out"),     # if r1 == 0 goto out
        mov(R0, 1),
        label("out"),
        exit_(),               # return r0
    ]
    code = assemble(prog)      # bytes, 8 per instruction slot
    print(listing(prog))       # the same in the kernel's notation

One concern per module:

- insn  the 8-byte format, registers, opcodes, encode/decode, disassembly
- alu   arithmetic and logic, 64 and 32 bits, byte order
- mem   loads, stores, atomics, 64-bit immediates and map references
- jump  jumps, helper calls, exit, labels

A program is a list of instructions and labels; nested lists are flattened,
so pieces of a program can be built by small functions and spliced in.
"""
from __future__ import annotations

import sys
from typing import Iterable, Union

from .alu import (add, add32, alu, and32, and_, arsh, arsh32, bswap, div, div32, lsh, lsh32, mod,
                  mod32, mov, mov32, mul, mul32, neg, neg32, or32, or_, rsh, rsh32, sub, sub32,
                  to_be, to_le, xor, xor32)
from .insn import (FP, HELPER_NAMES, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, AsmError, Insn,
                   Reg, decode, disasm, disasm_insn, encode, helper_name)
from .jump import (Label, call, exit_, helper_id, ja, jeq, jeq32, jge, jge32, jgt, jgt32, jle,
                   jle32, jlt, jlt32, jmp, jne, jne32, jset, jset32, jsge, jsge32, jsgt, jsgt32,
                   jsle, jsle32, jslt, jslt32, label, resolve_labels)
from .mem import (U8, U16, U32, U64, atomic_add, ld_abs, ld_imm64, ld_ind, ld_map_fd, ld_map_value,
                  ldx, st, stx)

Item = Union[Insn, Label, Iterable]   # an instruction, a label, or a list of them


def flatten(program: Iterable[Item]) -> list[Insn | Label]:
    """The program as one flat list (nested lists and tuples spliced in)."""
    out: list[Insn | Label] = []
    for it in program:
        if isinstance(it, (Insn, Label)):
            out.append(it)
        elif isinstance(it, (list, tuple)):
            out.extend(flatten(it))
        else:
            raise AsmError(f"not an instruction or a label: {it!r}")
    return out


def resolve(program: Iterable[Item]) -> list[Insn]:
    """Instructions with every label turned into a jump offset."""
    return resolve_labels(flatten(program))


def assemble(program: Iterable[Item], byteorder: str = sys.byteorder) -> bytes:
    """The bytecode the kernel loads: 8 bytes per slot, labels resolved."""
    return encode(resolve(program), byteorder)


def listing(program: Iterable[Item]) -> str:
    """The program as text with slot numbers, as the verifier log numbers
    instructions, and with the labels shown where they are (jumps still
    show their offsets: `goto pc+3` means skip 3 slots)."""
    items = flatten(program)
    resolved = iter(resolve_labels(items))
    lines, slot = [], 0
    for it in items:
        if isinstance(it, Label):
            lines.append(f"{it.name}:")
            continue
        insn = next(resolved)
        lines.append(f"{slot:4d}: {disasm_insn(insn)}")
        slot += insn.slots
    return "\n".join(lines)


__all__ = [
    # registers and format
    "R0", "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10", "FP", "Reg", "Insn",
    "AsmError", "encode", "decode", "disasm", "disasm_insn", "HELPER_NAMES", "helper_name",
    # ALU
    "alu", "mov", "add", "sub", "mul", "div", "mod", "or_", "and_", "xor", "lsh", "rsh", "arsh",
    "neg", "mov32", "add32", "sub32", "mul32", "div32", "mod32", "or32", "and32", "xor32",
    "lsh32", "rsh32", "arsh32", "neg32", "to_be", "to_le", "bswap",
    # memory
    "U8", "U16", "U32", "U64", "ldx", "stx", "st", "atomic_add", "ld_imm64", "ld_map_fd",
    "ld_map_value", "ld_abs", "ld_ind",
    # jumps
    "jmp", "ja", "jeq", "jne", "jgt", "jge", "jlt", "jle", "jsgt", "jsge", "jslt", "jsle", "jset",
    "jeq32", "jne32", "jgt32", "jge32", "jlt32", "jle32", "jsgt32", "jsge32", "jslt32",
    "jsle32", "jset32", "call", "exit_", "label", "Label", "helper_id", "resolve_labels",
    # whole programs
    "flatten", "resolve", "assemble", "listing",
]
