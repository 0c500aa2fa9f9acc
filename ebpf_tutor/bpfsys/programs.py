"""BPF programs through the raw syscall: BPF_PROG_LOAD (`load`, from
bytecode or a list of asm instructions), BPF_PROG_TEST_RUN (`RawProgram.test_run`,
a run on a crafted packet with no network) and BPF_OBJ_GET_INFO_BY_FD
(`prog_info`). A rejected program raises a VerifierError that points at the
instruction the verifier stopped at, with a hint in terms of instructions.

    with load([mov(R0, XDP_PASS), exit_()], ProgType.XDP, name="demo") as p:
        p.test_run(packet).retval     # 2
"""
from __future__ import annotations

import ctypes as ct
import errno as _errno
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Union

from .. import errors
from .asm import assemble, disasm, listing
from .syscall import (Cmd, FdObject, ProgInfoStruct, ProgLoadAttr, TestRunAttr, addr_of, syscall_error,
                      object_name, bpf, obj_info)


class ProgType(IntEnum):
    """enum bpf_prog_type (the ones this course loads by hand)."""
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    RAW_TRACEPOINT = 17


# what an XDP program returns
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

# where an XDP program finds its packet: struct xdp_md (include/uapi/linux/bpf.h)
XDP_MD = {"data": 0, "data_end": 4, "data_meta": 8, "ingress_ifindex": 12,
          "rx_queue_index": 16, "egress_ifindex": 20}


@dataclass
class RunResult:
    """What BPF_PROG_TEST_RUN gives back."""
    retval: int          # the program's return value (32 bits)
    duration_ns: int     # mean run time per repetition
    data: bytes          # the packet after the program ran
    ctx: bytes           # the context after the program ran (if asked for)


@dataclass
class ProgInfo:
    """What BPF_OBJ_GET_INFO_BY_FD says about a loaded program."""
    id: int
    type: int
    name: str
    tag: str
    xlated: bytes        # the instructions after the verifier rewrote them
    jited_len: int
    map_ids: list[int]
    verified_insns: int
    run_cnt: int
    run_time_ns: int


ProgramCode = Union[bytes, list, tuple]   # bytecode, or a list of asm instructions and labels
LOG_SIZES = (1 << 18, 1 << 22, 1 << 24)


class RawProgram(FdObject):
    """A program loaded with BPF_PROG_LOAD. `verifier_log` keeps what the
    verifier said; `listing` is the program as text."""

    def __init__(self, fd: int, name: str, prog_type: ProgType, listing_text: str, log: str,
                 n_insns: int):
        self.name, self.prog_type, self.listing = name, ProgType(prog_type), listing_text
        self.verifier_log, self.insn_count = log, n_insns
        self._opened(fd)

    def test_run(self, data: bytes = b"", *, ctx: bytes | None = None, repeat: int = 1,
                 data_out_size: int | None = None, ctx_out_size: int = 0) -> RunResult:
        """Run the program on `data` (a packet) without any network
        (BPF_PROG_TEST_RUN). `repeat` runs it that many times and times it."""
        data_in = ct.create_string_buffer(bytes(data), len(data)) if data else None
        out_size = data_out_size if data_out_size is not None else (len(data) + 256 if data else 0)
        data_out = ct.create_string_buffer(out_size) if out_size else None
        ctx_in = ct.create_string_buffer(bytes(ctx), len(ctx)) if ctx else None
        ctx_out = ct.create_string_buffer(ctx_out_size) if ctx_out_size else None
        attr = TestRunAttr(prog_fd=self.fd, data_size_in=len(data), data_size_out=out_size,
                           data_in=addr_of(data_in), data_out=addr_of(data_out), repeat=repeat,
                           ctx_size_in=len(ctx) if ctx else 0, ctx_in=addr_of(ctx_in),
                           ctx_size_out=ctx_out_size, ctx_out=addr_of(ctx_out))
        try:
            bpf(Cmd.PROG_TEST_RUN, attr)
        except OSError as e:
            hint = ""
            if e.errno == _errno.EINVAL and data and len(data) < 14:
                hint = "packet programs need at least an Ethernet header (14 bytes) of data"
            elif e.errno == _errno.ENOSPC:
                hint = "an output buffer is too small: pass a larger data_out_size or ctx_out_size"
            elif e.errno in (_errno.EINVAL, _errno.ENOTSUP, 524):
                hint = "this program type cannot be test-run with these arguments"
            raise syscall_error(f"test run of {self.name!r}", e.errno, hint) from None
        return RunResult(attr.retval, attr.duration,
                         data_out.raw[:attr.data_size_out] if data_out else b"",
                         ctx_out.raw[:attr.ctx_size_out] if ctx_out else b"")

    def info(self) -> ProgInfo:
        """Ask the kernel about this program (see prog_info)."""
        return prog_info(self.fd)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd {self.fd}"
        return f"<RawProgram {self.name} {self.prog_type.name}, {self.insn_count} insns, {state}>"


def prog_id(fd: int) -> int:
    """The kernel id of the program behind file descriptor `fd` (from
    /proc/self/fdinfo: no system call, works on BCC's fds too)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    raise ValueError(f"fd {fd} is not a BPF program")


def prog_info(fd: int) -> ProgInfo:
    """BPF_OBJ_GET_INFO_BY_FD on any program fd (ours, or one BCC loaded):
    its id, tag, the instructions after the verifier rewrote them, run
    statistics. Called twice: once for the sizes, once with buffers."""
    first = obj_info(fd, ProgInfoStruct(), "program")
    xlated = ct.create_string_buffer(max(first.xlated_prog_len, 1))
    map_ids = (ct.c_uint32 * max(first.nr_map_ids, 1))()
    info = obj_info(fd, ProgInfoStruct(xlated_prog_len=first.xlated_prog_len,
                                       xlated_prog_insns=addr_of(xlated),
                                       nr_map_ids=first.nr_map_ids, map_ids=addr_of(map_ids)),
                    "program")
    return ProgInfo(info.id, info.type, info.name.decode(), bytes(info.tag).hex(),
                    xlated.raw[:info.xlated_prog_len], info.jited_prog_len,
                    list(map_ids[:info.nr_map_ids]), info.verified_insns, info.run_cnt,
                    info.run_time_ns)


def load(program: ProgramCode, prog_type: ProgType, *, name: str = "prog", license: str = "GPL",
         log_level: int = 1, expected_attach_type: int = 0) -> RawProgram:
    """Load a program (bytecode, or a list of asm instructions) with
    BPF_PROG_LOAD. A rejection raises VerifierError, pointing at the
    instruction the verifier stopped at."""
    from_asm = not isinstance(program, (bytes, bytearray))
    if not from_asm:
        code = bytes(program)
        text = disasm(code)
    else:
        code, text = assemble(program), listing(program)
    insns = ct.create_string_buffer(code, len(code))
    lic = ct.create_string_buffer(license.encode())
    for size in LOG_SIZES:
        log = ct.create_string_buffer(size)
        attr = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(code) // 8, insns=addr_of(insns),
                            license=addr_of(lic), log_level=log_level, log_size=size,
                            log_buf=addr_of(log), prog_name=object_name(name),
                            expected_attach_type=expected_attach_type)
        try:
            fd = bpf(Cmd.PROG_LOAD, attr)
        except OSError as e:
            if e.errno == _errno.ENOSPC and size != LOG_SIZES[-1]:
                continue                      # the log did not fit: retry with a bigger one
            log_text = log.value.decode(errors="replace")
            raise _load_error(e.errno, log_text, text, name, from_asm) from None
        return RawProgram(fd, name, prog_type, text, log.value.decode(errors="replace"),
                          len(code) // 8)
    raise AssertionError("unreachable")


_INSN_LINE = re.compile(r"^(\d+): \(([0-9a-f]{2})\)")

# Hints in terms of instructions, for programs written with ebpf_tutor.bpfsys.asm
# (errors.VERIFIER_HINTS speaks C).
ASM_HINTS = [
    (r"R0 !read_ok", "set R0 (the return value) on every path before exit_()"),
    (r"R[1-5] !read_ok", "a register was read before anything was written to it; remember "
     "that a helper call leaves R1-R5 undefined: keep values in R6-R9 across calls"),
    (r"R\d+ !read_ok", "a register was read before anything was written to it"),
    (r"invalid access to packet|offset is outside of the packet",
     "prove the bytes are in the packet first: mov(Rt, ptr), add(Rt, off + size), "
     "jgt(Rt, data_end, \"drop\"); after that jump the read is allowed"),
    (r"invalid mem access '(map_value_or_null|.*or_null)",
     "a map lookup may return NULL: test it (jeq(R0, 0, \"out\")) before using R0"),
    (r"frame pointer is read only", "R10 cannot be written: copy it (mov(R2, R10)) and "
     "change the copy"),
    (r"invalid (write|read) to stack|invalid indirect read from stack",
     "the stack is the 512 bytes just below R10: offsets -1 down to -512"),
    (r"expected=fp|type=scalar expected=", "this helper argument must be a pointer (e.g. "
     "R10 - 8 for a stack slot, built with mov + add), not a value"),
    (r"back-edge|infinite loop", "a jump backwards makes a loop the verifier cannot prove "
     "finite: bound it with a counter compared against a constant"),
    (r"unknown func|program of this type cannot use helper",
     "this program type may not call that helper"),
]


def _load_error(err: int, log: str, text: str, name: str, from_asm: bool) -> errors.BpfError:
    """A failed load as a readable error: a VerifierError pointing at the
    last instruction the verifier looked at, when there is a log."""
    if not log.strip():
        if err in (_errno.EPERM, _errno.EACCES):
            return syscall_error(f"loading {name}", err)
        return syscall_error(f"loading {name}", err, hint="the kernel refused it before verifying: "
                      "check the program type, the license and the instruction count")
    # the dumps of loop states that follow some messages are not the reason
    reason_log = re.sub(r"^(cur|old) state:.*\n?", "", log, flags=re.M)
    e = errors.verifier_error(reason_log, text, name, err)
    if from_asm:
        e.hint = next((h for pattern, h in ASM_HINTS if re.search(pattern, log)), e.hint)
    steps = [m for m in (_INSN_LINE.match(ln) for ln in log.splitlines()) if m]
    if steps:
        slot = int(steps[-1].group(1))
        lines = text.splitlines()
        at = next((i for i, ln in enumerate(lines, 1) if ln.startswith(f"{slot:4d}: ")), 0)
        e.where = f"instruction {slot} of {name}"
        if at:
            e.excerpt = errors.excerpt(text, at)
    return e
