"""The instruction DSL: exact encodings, labels, disassembly in the kernel's
notation, and property tests: every instruction survives encode/decode, and
random straight-line programs compute in the kernel what a Python model of
the instruction set predicts."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from ebpf_tutor.bpfsys.asm import *
from ebpf_tutor.bpfsys.asm import insn as I
from tests.conftest import needs_root

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


# ------------------------------------------------------------ encodings --
@pytest.mark.parametrize("insn,hexbytes", [
    (mov(R0, 42), "b7 00 00 00 2a 00 00 00"),
    (mov(R1, R2), "bf 21 00 00 00 00 00 00"),
    (add32(R3, -1), "04 03 00 00 ff ff ff ff"),
    (ldx(U32, R2, R1, 4), "61 12 04 00 00 00 00 00"),
    (stx(U64, R10, R1, -8), "7b 1a f8 ff 00 00 00 00"),
    (st(U16, R10, -2, 0x1234), "6a 0a fe ff 34 12 00 00"),
    (atomic_add(U64, R0, R1), "db 10 00 00 00 00 00 00"),
    (to_be(R5, 16), "dc 05 00 00 10 00 00 00"),
    (jeq(R1, 0, 3), "15 01 03 00 00 00 00 00"),
    (jgt(R4, R3, -2), "2d 34 fe ff 00 00 00 00"),
    (call("map_lookup_elem"), "85 00 00 00 01 00 00 00"),
    (exit_(), "95 00 00 00 00 00 00 00"),
    (ld_imm64(R1, 0x1122334455667788), "18 01 00 00 88 77 66 55 00 00 00 00 44 33 22 11"),
    (ld_map_fd(R1, 7), "18 11 00 00 07 00 00 00 00 00 00 00 00 00 00 00"),
])
def test_known_encodings(insn, hexbytes):
    assert insn.encode("little").hex(" ") == hexbytes
    assert decode(bytes.fromhex(hexbytes), "little") == [insn]


def test_big_endian_swaps_register_nibbles_and_numbers():
    raw = stx(U64, R10, R1, -8).encode("big")
    assert raw.hex(" ") == "7b a1 ff f8 00 00 00 00"
    assert decode(raw, "big") == [stx(U64, R10, R1, -8)]


@pytest.mark.parametrize("insn,text", [
    (mov(R0, -1), "(b7) r0 = -1"),
    (mov32(R1, R2), "(bc) w1 = w2"),
    (add(R1, 8), "(07) r1 += 8"),
    (arsh32(R1, 3), "(c4) w1 s>>= 3"),
    (neg(R4), "(87) r4 = -r4"),
    (to_be(R0, 16), "(dc) r0 = be16 r0"),
    (to_le(R0, 32), "(d4) r0 = le32 r0"),
    (bswap(R0, 64), "(d7) r0 = bswap64 r0"),
    (ldx(U8, R3, R1, 23), "(71) r3 = *(u8 *)(r1 +23)"),
    (stx(U32, R10, R6, -4), "(63) *(u32 *)(r10 -4) = r6"),
    (st(U64, R10, -16, 0), "(7a) *(u64 *)(r10 -16) = 0"),
    (atomic_add(U64, R0, R1), "(db) lock *(u64 *)(r0 +0) += r1"),
    (ld_imm64(R1, 1 << 40), "(18) r1 = 0x10000000000"),
    (ld_map_fd(R1, 5), "(18) r1 = map[fd:5]"),
    (jne(R5, 0x800, 4), "(55) if r5 != 0x800 goto pc+4"),
    (jslt32(R1, R2, -3), "(ce) if w1 s< w2 goto pc-3"),
    (jeq(R1, -1, 1), "(15) if r1 == 0xffffffff goto pc+1"),
    (ja(2), "(05) goto pc+2"),
    (call("get_current_pid_tgid"), "(85) call bpf_get_current_pid_tgid#14"),
    (ld_abs(U16, 12), "(28) r0 = *(u16 *)skb[12]"),
    (exit_(), "(95) exit"),
])
def test_disassembly_uses_the_kernels_notation(insn, text):
    assert disasm_insn(insn) == text


def test_labels_resolve_forward_and_backward():
    prog = [mov(R0, 0), label("top"), add(R0, 1), jlt(R0, 3, "top"), ja("end"),
            ld_imm64(R1, 1 << 40), label("end"), exit_()]
    code = resolve(prog)
    assert code[2].off == -2            # back to slot 1 from slot 2
    assert code[3].off == 2             # skips the 2-slot ld_imm64
    assert listing(prog).splitlines()[1] == "top:"
    assert len(assemble(prog)) == 8 * 7


def test_nested_lists_are_spliced():
    part = [mov(R0, 1), [add(R0, 1)]]
    assert resolve([part, exit_()]) == [mov(R0, 1), add(R0, 1), exit_()]


@pytest.mark.parametrize("build,words", [
    (lambda: mov(R0, 0xFFFFFFFF), "sign-extended"),
    (lambda: jeq(R0, 1 << 32, "x"), "32-bit immediate"),
    (lambda: resolve([ja("nowhere"), exit_()]), "not defined"),
    (lambda: resolve([label("a"), label("a"), exit_()]), "defined twice"),
    (lambda: call("no_such_helper"), "unknown helper"),
    (lambda: ldx(U32, R0, R1, 1 << 15), "16-bit"),
    (lambda: mov(R0, "5"), "register or an int"),
    (lambda: mov(3, 5), "must be a register"),
    (lambda: Reg(11), "R11 does not exist"),
    (lambda: Insn(0x07, imm=1 << 31), "does not fit"),
    (lambda: ja("x").encode(), "not resolved"),
])
def test_mistakes_are_refused_with_a_reason(build, words):
    with pytest.raises(AsmError, match=words):
        build()


def test_32_bit_forms_accept_unsigned_immediates():
    assert mov32(R0, 0xFFFFFFFF).imm == -1
    assert jeq32(R0, 0xFFFFFFFF, 0).imm == -1


def test_helper_numbers_match_the_uapi_enum():
    assert helper_id("map_lookup_elem") == 1
    assert helper_id("bpf_get_current_pid_tgid") == 14
    assert helper_id("ringbuf_output") == 130
    assert helper_name(211) == "bpf_cgrp_storage_delete"
    assert helper_name(9999) == "unknown"


# ----------------------------------------------------- round trip (any) --
regs = hs.integers(0, 10).map(Reg)
imm32 = hs.integers(-(1 << 31), (1 << 31) - 1)
off16 = hs.integers(-(1 << 15), (1 << 15) - 1)
sizes = hs.sampled_from([U8, U16, U32, U64])
ALU_NAMES = ["add", "sub", "mul", "div", "or", "and", "lsh", "rsh", "mod", "xor", "mov", "arsh"]
JMP_NAMES = ["jeq", "jgt", "jge", "jset", "jne", "jsgt", "jsge", "jlt", "jle", "jslt", "jsle"]


@hs.composite
def instructions(draw) -> Insn:
    kind = draw(hs.sampled_from(["alu", "neg", "end", "ldx", "stx", "st", "atomic", "imm64",
                                 "map", "jmp", "ja", "call", "exit"]))
    if kind == "alu":
        src = draw(hs.one_of(regs, imm32))
        return alu(draw(hs.sampled_from(ALU_NAMES)), draw(regs), src, draw(hs.sampled_from([32, 64])))
    if kind == "neg":
        return draw(hs.sampled_from([neg, neg32]))(draw(regs))
    if kind == "end":
        return draw(hs.sampled_from([to_be, to_le, bswap]))(draw(regs), draw(hs.sampled_from([16, 32, 64])))
    if kind == "ldx":
        return ldx(draw(sizes), draw(regs), draw(regs), draw(off16))
    if kind == "stx":
        return stx(draw(sizes), draw(regs), draw(regs), draw(off16))
    if kind == "st":
        return st(draw(sizes), draw(regs), draw(off16), draw(imm32))
    if kind == "atomic":
        return atomic_add(draw(hs.sampled_from([U32, U64])), draw(regs), draw(regs), draw(off16))
    if kind == "imm64":
        return ld_imm64(draw(regs), draw(hs.integers(-(1 << 63), (1 << 64) - 1)))
    if kind == "map":
        return ld_map_fd(draw(regs), draw(hs.integers(0, (1 << 31) - 1)))
    if kind == "jmp":
        return jmp(draw(hs.sampled_from(JMP_NAMES)), draw(regs), draw(hs.one_of(regs, imm32)),
                   draw(off16), draw(hs.sampled_from([32, 64])))
    if kind == "ja":
        return ja(draw(off16))
    if kind == "call":
        return call(draw(hs.integers(1, len(HELPER_NAMES) - 1)))
    return exit_()


@settings(max_examples=300, deadline=None, database=None)
@given(hs.lists(instructions(), min_size=1, max_size=8), hs.sampled_from(["little", "big"]))
def test_encode_decode_round_trip(program, order):
    code = encode(program, order)
    assert len(code) == 8 * sum(i.slots for i in program)
    assert decode(code, order) == program
    text = disasm(code, order)
    assert len(text.splitlines()) == len(program)
    assert "unknown" not in text


@settings(max_examples=200, deadline=None, database=None)
@given(hs.binary(min_size=0, max_size=64).map(lambda b: b[: len(b) // 8 * 8]))
def test_decoding_arbitrary_bytes_never_crashes(code):
    try:
        insns = decode(code)
    except AsmError as e:                 # only a truncated ld_imm64 is refused
        assert "second slot" in str(e)
        return
    assert encode(insns) == code or any(i.opcode == I.LD_IMM64 for i in insns)
    for i in insns:
        assert disasm_insn(i).startswith(f"({i.opcode:02x})")


# ----------------------------------------- the kernel agrees with a model --
def _s32(x: int) -> int:
    x &= M32
    return x - (1 << 32) if x >> 31 else x


def _s64(x: int) -> int:
    x &= M64
    return x - (1 << 64) if x >> 63 else x


def _swap(x: int, nbytes: int) -> int:
    return int.from_bytes((x & ((1 << 8 * nbytes) - 1)).to_bytes(nbytes, "little"), "big")


def alu_model(op: str, bits: int, a: int, b: int) -> int:
    """What an ALU operation computes: a, b and the result are `bits` wide."""
    mask = M64 if bits == 64 else M32
    a, b = a & mask, b & mask
    shift = b & (bits - 1)                  # the kernel masks shift counts
    signed_a = _s64(a) if bits == 64 else _s32(a)
    r = {"add": a + b, "sub": a - b, "mul": a * b, "div": a // b if b else 0,
         "mod": a % b if b else a, "or": a | b, "and": a & b, "xor": a ^ b, "mov": b,
         "lsh": a << shift, "rsh": a >> shift, "arsh": signed_a >> shift}[op]
    return r & mask                          # a 32-bit result is zero-extended


def end_model(kind: str, nbits: int, x: int) -> int:
    """to_be/to_le convert between host order and big/little-endian (a swap
    when the orders differ, else a truncation); bswap always swaps."""
    swaps = kind == "bswap" or (kind == "to_be") == (sys.byteorder == "little")
    return _swap(x, nbits // 8) if swaps else x & ((1 << nbits) - 1)


@hs.composite
def alu_steps(draw):
    """One straight-line step: (instruction, function applying it to the model's registers)."""
    kind = draw(hs.sampled_from(["alu"] * 8 + ["neg", "end"]))
    dst = draw(hs.integers(0, 3))        # few registers: steps feed into each other
    bits = draw(hs.sampled_from([32, 64]))

    if kind == "neg":
        def effect(regs):
            regs[dst] = alu_model("sub", bits, 0, regs[dst])
        return (neg if bits == 64 else neg32)(Reg(dst)), effect
    if kind == "end":
        which = draw(hs.sampled_from(["to_be", "to_le", "bswap"]))
        nbits = draw(hs.sampled_from([16, 32, 64]))

        def effect(regs):
            regs[dst] = end_model(which, nbits, regs[dst])
        return {"to_be": to_be, "to_le": to_le, "bswap": bswap}[which](Reg(dst), nbits), effect
    op = draw(hs.sampled_from(ALU_NAMES))
    if draw(hs.booleans()):
        src = draw(hs.integers(0, 3))

        def effect(regs):
            regs[dst] = alu_model(op, bits, regs[dst], regs[src])
        return alu(op, Reg(dst), Reg(src), bits), effect
    if op in ("lsh", "rsh", "arsh"):
        imm = draw(hs.integers(0, bits - 1))       # the verifier refuses larger shifts
    elif op in ("div", "mod"):
        imm = draw(imm32.filter(bool))             # and division by a zero constant
    else:
        imm = draw(imm32)
    operand = _s64(imm) & M64                      # 64-bit ops sign-extend imm

    def effect(regs):
        regs[dst] = alu_model(op, bits, regs[dst], operand)
    return alu(op, Reg(dst), imm, bits), effect


def run_model(start: list[int], steps) -> list[int]:
    regs = list(start)
    for _, effect in steps:
        effect(regs)
    return regs


# register values: random, with the edge cases (0, -1, sign bits) often
values64 = hs.one_of(hs.integers(0, M64), hs.sampled_from([0, 1, 2, M64, M32, 1 << 31, 1 << 63]))


def result_program(start: list[int], steps) -> list:
    """Set R0-R5, run the steps, write R0-R5 into the first 48 bytes of the packet."""
    from ebpf_tutor.bpfsys import XDP_MD, XDP_PASS
    return [
        ldx(U32, R6, R1, XDP_MD["data"]),
        ldx(U32, R7, R1, XDP_MD["data_end"]),
        [ld_imm64(Reg(r), v) for r, v in enumerate(start)],
        [insn for insn, _ in steps],
        mov(R8, R6), add(R8, 48),
        jgt(R8, R7, "out"),
        [stx(U64, R6, Reg(r), 8 * r) for r in range(6)],
        label("out"),
        mov(R0, XDP_PASS),
        exit_(),
    ]


@needs_root
@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(values64, min_size=6, max_size=6), hs.lists(alu_steps(), max_size=12))
def test_kernel_computes_what_the_model_predicts(start, steps):
    from ebpf_tutor.bpfsys import ProgType, load
    with load(result_program(start, steps), ProgType.XDP, name="test_alu") as prog:
        out = prog.test_run(bytes(64)).data
    got = [int.from_bytes(out[8 * r:8 * r + 8], sys.byteorder) for r in range(6)]
    assert got == run_model(start, steps), listing([i for i, _ in steps])


EDGES = [(7, 0), (M64, 0), (1 << 63, M64), (M64 - 15, 2), (5, 63), (M32, 31), (1 << 40, 33)]


@needs_root
@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("op", ALU_NAMES)
def test_kernel_agrees_on_edge_cases(op, bits):
    """Division by zero, shifts by 31/33/63, sign bits: each register-operand
    case in one program, R0..R5 written to the packet."""
    from ebpf_tutor.bpfsys import ProgType, load
    for a, b in EDGES:
        def effect(regs, a=a, b=b):
            regs[0] = alu_model(op, bits, a, b)
        steps = [(alu(op, R0, R1, bits), effect)]
        with load(result_program([a, b, 0, 0, 0, 0], steps), ProgType.XDP, name="test_edge") as p:
            out = p.test_run(bytes(64)).data
        assert int.from_bytes(out[:8], sys.byteorder) == run_model([a, b, 0, 0, 0, 0], steps)[0], \
            (op, bits, hex(a), hex(b))


def jump_model(op: str, bits: int, a: int, b: int) -> bool:
    mask = M64 if bits == 64 else M32
    a, b = a & mask, b & mask
    sa, sb = (_s64(a), _s64(b)) if bits == 64 else (_s32(a), _s32(b))
    return {"jeq": a == b, "jne": a != b, "jgt": a > b, "jge": a >= b, "jlt": a < b,
            "jle": a <= b, "jset": bool(a & b), "jsgt": sa > sb, "jsge": sa >= sb,
            "jslt": sa < sb, "jsle": sa <= sb}[op]


@needs_root
@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.sampled_from(JMP_NAMES), hs.sampled_from([32, 64]), hs.integers(0, M64),
       hs.one_of(hs.integers(0, M64), imm32.map(lambda i: ("imm", i))))
def test_kernel_takes_the_branches_the_model_predicts(op, bits, a, b):
    from ebpf_tutor.bpfsys import ProgType, load
    if isinstance(b, tuple):                          # compare with an immediate
        imm = b[1]
        cond = jmp(op, R1, imm, "yes", bits)
        b_value, setup = _s64(imm) & M64, []          # sign-extended (JMP32 uses the low half)
    else:
        cond = jmp(op, R1, R2, "yes", bits)
        b_value, setup = b, [ld_imm64(R2, b)]
    prog = [ld_imm64(R1, a), setup, mov(R0, 0), cond, exit_(), label("yes"), mov(R0, 1), exit_()]
    with load(prog, ProgType.SOCKET_FILTER, name="test_jmp") as p:
        taken = p.test_run(bytes(64)).retval == 1
    assert taken == jump_model(op, bits, a, b_value)


# ----------------------------------------------- the kernel's own notation --
@needs_root
def test_disassembly_matches_bpftool_line_by_line():
    """Load a program using most instruction kinds; our disassembly of the
    kernel's translated copy equals `bpftool prog dump xlated` (helper calls
    aside: the kernel rewrites their numbers into addresses)."""
    from ebpf_tutor.bpfsys import MapType, ProgType, RawMap, load
    with RawMap(MapType.ARRAY, 4, 8, 2, name="test_dis") as m:
        prog = [
            mov(R6, R1), mov32(R2, -7), add(R2, R2), sub32(R2, 3), mul(R2, 5), div32(R2, 2),
            or_(R2, 0x40), and_(R2, R2), lsh(R2, 3), rsh32(R2, 1), arsh(R2, 2), mod(R2, 7),
            xor32(R2, R2), neg(R2), to_be(R2, 16), to_le(R2, 32), bswap(R2, 64),
            ld_imm64(R3, 1 << 40), st(U32, R10, -4, 1), stx(U64, R10, R3, -16),
            ldx(U64, R7, R10, -16), ldx(U8, R8, R10, -4),     # R7, R8 survive the call
            ld_map_fd(R1, m.fd), mov(R2, R10), add(R2, -4),
            call("map_lookup_elem"),
            jeq(R0, 0, "out"), mov(R1, 1), atomic_add(U64, R0, R1),
            jset(R7, 3, "out"), jsgt32(R8, R7, "out"), jle(R7, R8, "out"),
            label("out"), mov(R0, 0), exit_(),
        ]
        with load(prog, ProgType.SOCKET_FILTER, name="test_dis") as p:
            info = p.info()
            dump = subprocess.run(["bpftool", "-j", "prog", "dump", "xlated", "id", str(info.id)],
                                  capture_output=True, text=True, check=True).stdout
    theirs = [d["disasm"] for d in json.loads(dump)]
    ours = [ln.split(": ", 1)[1] for ln in disasm(info.xlated, map_ref="id").splitlines()]
    assert len(ours) == len(theirs)
    compared = 0
    for a, b in zip(ours, theirs):
        if "call" in b or b.startswith("BUG_"):   # bpftool 7.1 predates bswap (kernel 6.6)
            continue
        assert a == b
        compared += 1
    assert compared >= len(prog) - 6
