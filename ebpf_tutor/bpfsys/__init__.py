"""The bpf() system call from Python, with nothing in between.

BCC and libbpf both end in one system call, `bpf(cmd, attr, size)`: `cmd`
says what to do, `attr` is a C union holding one struct per command. This
module builds those structs with ctypes, so every step is visible:

    with RawMap(MapType.ARRAY, 4, 8, 1) as counts:          # BPF_MAP_CREATE
        with load(prog, ProgType.XDP, name="demo") as p:    # BPF_PROG_LOAD
            r = p.test_run(packet, repeat=10)               # BPF_PROG_TEST_RUN
        counts.lookup(0)                                    # BPF_MAP_LOOKUP_ELEM

A program or map is a file descriptor; the kernel frees it when the last
descriptor (or attachment, or pin) goes away. Every object here closes its
descriptor when its `with` block ends, or on `close()`.

Attaching to a tracepoint goes through a perf event: `perf_event_open()` on
the tracepoint's id, then the ioctl PERF_EVENT_IOC_SET_BPF (`attach_tracepoint`).
"""
from __future__ import annotations

import ctypes as ct
import errno as _errno
import fcntl
import os
import re
import sys
import weakref
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Iterator, Union

from ..kernel import arch as _arch
from .. import errors
from .asm import (R0, R1, R2, R3, R4, R6, R10, U64, add, assemble, call, disasm, exit_, jne,
                  label, ld_map_fd, ldx, listing, mov, rsh, stx)

# ------------------------------------------------------- syscall numbers --
# The same system call has a different number on each architecture: the
# tables live in ebpf_tutor/kernel/arch.py.
def syscall_number(name: str, arch: str | None = None) -> int:
    """The number of system call `name` ("bpf", "perf_event_open") here or on `arch`."""
    try:
        return _arch.syscall_nr(name, arch)
    except _arch.UnsupportedArch as e:
        raise errors.FeatureUnavailable(str(e), hint="add the architecture to the tables in "
                                        "ebpf_tutor/kernel/arch.py") from None


_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


def _syscall(number: int, *args: int) -> int:
    """syscall(2): returns the result, or raises OSError with errno."""
    ret = _libc.syscall(ct.c_long(number), *(ct.c_long(a) for a in args))
    if ret < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


# ---------------------------------------------------------- enumerations --
class Cmd(IntEnum):
    """The first argument of bpf(): enum bpf_cmd."""
    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    OBJ_PIN = 6
    OBJ_GET = 7
    PROG_TEST_RUN = 10
    PROG_GET_FD_BY_ID = 13
    MAP_GET_FD_BY_ID = 14
    OBJ_GET_INFO_BY_FD = 15


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


class MapType(IntEnum):
    """enum bpf_map_type (the common ones)."""
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    QUEUE = 22
    STACK = 23
    RINGBUF = 27


PERCPU_MAPS = {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH}

# map update flags
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

# what an XDP program returns
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

# where an XDP program finds its packet: struct xdp_md (include/uapi/linux/bpf.h)
XDP_MD = {"data": 0, "data_end": 4, "data_meta": 8, "ingress_ifindex": 12,
          "rx_queue_index": 16, "egress_ifindex": 20}

# ------------------------------------------------------- the attr structs --
u32, u64 = ct.c_uint32, ct.c_uint64


class MapCreateAttr(ct.Structure):
    _fields_ = [("map_type", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32), ("inner_map_fd", u32),
                ("numa_node", u32), ("map_name", ct.c_char * 16), ("map_ifindex", u32)]


class MapElemAttr(ct.Structure):
    _fields_ = [("map_fd", u32), ("key", u64), ("value", u64), ("flags", u64)]   # value: or next_key


class ProgLoadAttr(ct.Structure):
    _fields_ = [("prog_type", u32), ("insn_cnt", u32), ("insns", u64), ("license", u64),
                ("log_level", u32), ("log_size", u32), ("log_buf", u64), ("kern_version", u32),
                ("prog_flags", u32), ("prog_name", ct.c_char * 16), ("prog_ifindex", u32),
                ("expected_attach_type", u32)]


class TestRunAttr(ct.Structure):
    __test__ = False   # not a pytest test class
    _fields_ = [("prog_fd", u32), ("retval", u32), ("data_size_in", u32), ("data_size_out", u32),
                ("data_in", u64), ("data_out", u64), ("repeat", u32), ("duration", u32),
                ("ctx_size_in", u32), ("ctx_size_out", u32), ("ctx_in", u64), ("ctx_out", u64),
                ("flags", u32), ("cpu", u32), ("batch_size", u32)]


class InfoAttr(ct.Structure):
    _fields_ = [("bpf_fd", u32), ("info_len", u32), ("info", u64)]


class ProgInfoStruct(ct.Structure):
    """struct bpf_prog_info, up to verified_insns."""
    _fields_ = [("type", u32), ("id", u32), ("tag", ct.c_uint8 * 8), ("jited_prog_len", u32),
                ("xlated_prog_len", u32), ("jited_prog_insns", u64), ("xlated_prog_insns", u64),
                ("load_time", u64), ("created_by_uid", u32), ("nr_map_ids", u32),
                ("map_ids", u64), ("name", ct.c_char * 16), ("ifindex", u32),
                ("gpl_compatible", u32), ("netns_dev", u64), ("netns_ino", u64),
                ("nr_jited_ksyms", u32), ("nr_jited_func_lens", u32), ("jited_ksyms", u64),
                ("jited_func_lens", u64), ("btf_id", u32), ("func_info_rec_size", u32),
                ("func_info", u64), ("nr_func_info", u32), ("nr_line_info", u32),
                ("line_info", u64), ("jited_line_info", u64), ("nr_jited_line_info", u32),
                ("line_info_rec_size", u32), ("jited_line_info_rec_size", u32),
                ("nr_prog_tags", u32), ("prog_tags", u64), ("run_time_ns", u64),
                ("run_cnt", u64), ("recursion_misses", u64), ("verified_insns", u32)]


def _addr(buf) -> int:
    return ct.addressof(buf) if buf is not None else 0


def bpf(cmd: Cmd, attr: ct.Structure) -> int:
    """One bpf() system call; raises OSError on failure."""
    return _syscall(syscall_number("bpf"), int(cmd), ct.addressof(attr), ct.sizeof(attr))


def _error(what: str, err: int, hint: str = "") -> errors.BpfError:
    """An OSError from bpf() as one of the package's error classes."""
    msg = f"{what}: {os.strerror(err)}"
    if err in (_errno.EPERM, _errno.EACCES):
        return errors.BpfPermissionError(msg, errno=err, hint=hint or (
            errors.ROOT_HINT if os.geteuid() else "this kernel refuses it even to root "
            "(lockdown, or the feature is off): run `ebpf-tutor doctor`"))
    if err in errors.TRANSIENT_ERRNOS:
        return errors.TransientError(msg, errno=err, hint=hint)
    return errors.BpfError(msg, errno=err, hint=hint)


# ------------------------------------------------------ open descriptors --
_open: "weakref.WeakSet[FdObject]" = weakref.WeakSet()


class FdObject:
    """Something the kernel knows by a file descriptor; closed by `with`."""

    fd: int = -1

    def _opened(self, fd: int) -> None:
        self.fd = fd
        _open.add(self)

    def close(self) -> None:
        """Release the descriptor. Safe to call twice."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            _open.discard(self)
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit, nothing to do
            pass


def close_all() -> int:
    """Close every map, program and attachment of this module still open."""
    objs = list(_open)
    for o in objs:
        o.close()
    return len(objs)


# ----------------------------------------------------------------- maps --
Bytes = Union[bytes, bytearray, int]


def _possible_cpus() -> int:
    """How many CPUs a per-CPU map holds a value for (/sys/.../cpu/possible)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


class RawMap(FdObject):
    """A BPF map created with BPF_MAP_CREATE. Keys and values are bytes;
    an int is accepted too, and packed in host byte order to the right size."""

    def __init__(self, map_type: MapType, key_size: int, value_size: int, max_entries: int,
                 *, name: str = "", flags: int = 0):
        self.map_type, self.key_size, self.value_size = MapType(map_type), key_size, value_size
        self.max_entries, self.name = max_entries, name
        attr = MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                             max_entries=max_entries, map_flags=flags,
                             map_name=_object_name(name))
        try:
            self._opened(bpf(Cmd.MAP_CREATE, attr))
        except OSError as e:
            raise _error(f"creating {self.map_type.name} map {name!r}", e.errno, hint=(
                "check key_size/value_size/max_entries: this map type may require "
                "particular values (an ARRAY needs key_size 4)") if e.errno == _errno.EINVAL
                else "") from None

    @property
    def value_buffer_size(self) -> int:
        """Per-CPU maps hold one value per possible CPU, each padded to 8 bytes."""
        if self.map_type in PERCPU_MAPS:
            return (self.value_size + 7) // 8 * 8 * _possible_cpus()
        return self.value_size

    def _key(self, key: Bytes) -> ct.Array:
        return ct.create_string_buffer(_pack(key, self.key_size, "key"), self.key_size)

    def _elem(self, cmd: Cmd, key: ct.Array | None, value: ct.Array | None, flags: int = 0) -> None:
        attr = MapElemAttr(map_fd=self.fd, key=_addr(key), value=_addr(value), flags=flags)
        bpf(cmd, attr)

    def lookup(self, key: Bytes) -> bytes | None:
        """The value stored under key, or None if there is none."""
        value = ct.create_string_buffer(self.value_buffer_size)
        try:
            self._elem(Cmd.MAP_LOOKUP_ELEM, self._key(key), value)
        except OSError as e:
            if e.errno == _errno.ENOENT:
                return None
            raise _error(f"lookup in map {self.name!r}", e.errno) from None
        return value.raw

    def per_cpu(self, key: Bytes) -> list[bytes] | None:
        """A per-CPU map's values for key, one per CPU."""
        raw = self.lookup(key)
        if raw is None:
            return None
        step = (self.value_size + 7) // 8 * 8
        return [raw[i:i + self.value_size] for i in range(0, len(raw), step)]

    def update(self, key: Bytes, value: Bytes, flags: int = BPF_ANY) -> None:
        """Store value under key (BPF_ANY: create or replace)."""
        buf = ct.create_string_buffer(_pack(value, self.value_buffer_size, "value"),
                                      self.value_buffer_size)
        try:
            self._elem(Cmd.MAP_UPDATE_ELEM, self._key(key), buf, flags)
        except OSError as e:
            raise _error(f"update of map {self.name!r}", e.errno) from None

    def delete(self, key: Bytes) -> bool:
        """Remove key; False if it was not there."""
        try:
            self._elem(Cmd.MAP_DELETE_ELEM, self._key(key), None)
        except OSError as e:
            if e.errno == _errno.ENOENT:
                return False
            raise _error(f"delete from map {self.name!r}", e.errno) from None
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key, walked with BPF_MAP_GET_NEXT_KEY (start: no key at all)."""
        key = None
        nxt = ct.create_string_buffer(self.key_size)
        while True:
            try:
                self._elem(Cmd.MAP_GET_NEXT_KEY, key, nxt)
            except OSError as e:
                if e.errno == _errno.ENOENT:
                    return
                raise _error(f"walking map {self.name!r}", e.errno) from None
            yield nxt.raw
            key = ct.create_string_buffer(nxt.raw, self.key_size)

    def items(self) -> list[tuple[bytes, bytes]]:
        out = []
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                out.append((k, v))
        return out

    def ints(self) -> dict[int, int]:
        """The map as {key: value}, both read as unsigned host-order integers."""
        return {int.from_bytes(k, sys.byteorder): int.from_bytes(v[:self.value_size], sys.byteorder)
                for k, v in self.items()}

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd {self.fd}"
        return f"<RawMap {self.name or '?'} {self.map_type.name} {state}>"


def _pack(x: Bytes, size: int, what: str) -> bytes:
    if isinstance(x, int):
        return x.to_bytes(size, sys.byteorder, signed=x < 0)
    x = bytes(x)
    if len(x) != size:
        raise ValueError(f"the {what} must be {size} bytes, not {len(x)}")
    return x


def _object_name(name: str) -> bytes:
    """Kernel object names: at most 15 characters of [A-Za-z0-9_.]."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", name)[:15].encode()


# ------------------------------------------------------------- programs --
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
                           data_in=_addr(data_in), data_out=_addr(data_out), repeat=repeat,
                           ctx_size_in=len(ctx) if ctx else 0, ctx_in=_addr(ctx_in),
                           ctx_size_out=ctx_out_size, ctx_out=_addr(ctx_out))
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
            raise _error(f"test run of {self.name!r}", e.errno, hint) from None
        return RunResult(attr.retval, attr.duration,
                         data_out.raw[:attr.data_size_out] if data_out else b"",
                         ctx_out.raw[:attr.ctx_size_out] if ctx_out else b"")

    def info(self) -> ProgInfo:
        """Ask the kernel about this program (see prog_info)."""
        return prog_info(self.fd)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd {self.fd}"
        return f"<RawProgram {self.name} {self.prog_type.name}, {self.insn_count} insns, {state}>"


def _prog_info(fd: int, **fields) -> ProgInfoStruct:
    info = ProgInfoStruct(**fields)
    attr = InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info), info=ct.addressof(info))
    try:
        bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    except OSError as e:
        raise _error("reading program info", e.errno) from None
    return info


def prog_info(fd: int) -> ProgInfo:
    """BPF_OBJ_GET_INFO_BY_FD on any program fd (ours, or one BCC loaded):
    its id, tag, the instructions after the verifier rewrote them, run
    statistics. Called twice: once for the sizes, once with buffers."""
    first = _prog_info(fd)
    xlated = ct.create_string_buffer(max(first.xlated_prog_len, 1))
    map_ids = (ct.c_uint32 * max(first.nr_map_ids, 1))()
    info = _prog_info(fd, xlated_prog_len=first.xlated_prog_len, xlated_prog_insns=_addr(xlated),
                      nr_map_ids=first.nr_map_ids, map_ids=_addr(map_ids))
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
        attr = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(code) // 8, insns=_addr(insns),
                            license=_addr(lic), log_level=log_level, log_size=size,
                            log_buf=_addr(log), prog_name=_object_name(name),
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
            return _error(f"loading {name}", err)
        return _error(f"loading {name}", err, hint="the kernel refused it before verifying: "
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


# -------------------------------------------------------- tracepoints --
TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


def tracepoint_dir(tracepoint: str) -> Path:
    """The tracefs folder of "category:name", e.g. syscalls:sys_enter_lseek."""
    category, _, name = tracepoint.partition(":")
    for base in TRACEFS_DIRS:
        d = base / "events" / category / name
        if d.is_dir():
            return d
    raise errors.AttachError(f"no tracepoint {tracepoint}", hint="list them with `ls "
                             "/sys/kernel/tracing/events/<category>`; is tracefs mounted?")


@dataclass
class TracepointField:
    """One field of a tracepoint's record, as its format file describes it."""
    name: str
    c_type: str
    offset: int
    size: int
    signed: bool


_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
                    r"\s*signed:(?P<signed>\d+);")


def tracepoint_format(tracepoint: str) -> dict[str, TracepointField]:
    """The record a tracepoint program receives as its context (R1): each
    field's offset and size, from tracefs `.../format`."""
    out = {}
    for m in _FIELD.finditer((tracepoint_dir(tracepoint) / "format").read_text()):
        decl = re.sub(r"\[.*\]", "", m["decl"]).strip()
        name = decl.split()[-1]
        out[name] = TracepointField(name, decl[: -len(name)].strip(), int(m["off"]),
                                    int(m["size"]), m["signed"] == "1")
    return out


def tracepoint_id(tracepoint: str) -> int:
    return int((tracepoint_dir(tracepoint) / "id").read_text())


class PerfEventAttr(ct.Structure):
    """struct perf_event_attr, up to config2 (PERF_ATTR_SIZE_VER1)."""
    _fields_ = [("type", u32), ("size", u32), ("config", u64), ("sample_period", u64),
                ("sample_type", u64), ("read_format", u64), ("flags", u64),
                ("wakeup_events", u32), ("bp_type", u32), ("config1", u64), ("config2", u64)]


PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3


def _ioc(direction: str, kind: int, nr: int, size: int, arch: str | None = None) -> int:
    """An ioctl request number, _IO/_IOW as asm-generic encodes it (powerpc
    uses other direction bits and a narrower size field)."""
    if _arch.get(arch).name.startswith("ppc"):
        dirs, size_bits = {"none": 1, "write": 4, "read": 2}, 13
    else:
        dirs, size_bits = {"none": 0, "write": 1, "read": 2}, 14
    return dirs[direction] << (16 + size_bits) | size << 16 | kind << 8 | nr


def perf_ioctls(arch: str | None = None) -> dict[str, int]:
    return {"ENABLE": _ioc("none", ord("$"), 0, 0, arch),
            "DISABLE": _ioc("none", ord("$"), 1, 0, arch),
            "SET_BPF": _ioc("write", ord("$"), 8, 4, arch)}


class TracepointLink(FdObject):
    """A program attached to a tracepoint through a perf event. The program
    runs on every hit, on every CPU, until close()."""

    def __init__(self, prog: RawProgram, tracepoint: str):
        self.tracepoint, self.prog_name = tracepoint, prog.name
        attr = PerfEventAttr(type=PERF_TYPE_TRACEPOINT, size=ct.sizeof(PerfEventAttr),
                             config=tracepoint_id(tracepoint), sample_period=1,
                             sample_type=PERF_SAMPLE_RAW, wakeup_events=1)
        try:   # perf_event_open(attr, pid=-1 (all), cpu=0, group_fd=-1, flags)
            fd = _syscall(syscall_number("perf_event_open"), ct.addressof(attr), -1, 0, -1,
                          PERF_FLAG_FD_CLOEXEC)
        except OSError as e:
            raise errors.AttachError(f"perf_event_open on {tracepoint}: {e.strerror}",
                                     errno=e.errno) from None
        self._opened(fd)
        ioctl = perf_ioctls()
        try:
            fcntl.ioctl(fd, ioctl["SET_BPF"], prog.fd)
            fcntl.ioctl(fd, ioctl["ENABLE"], 0)
        except OSError as e:
            self.close()
            hint = ("only programs of type TRACEPOINT attach here" if e.errno == _errno.EINVAL
                    else "")
            raise errors.AttachError(f"attaching {prog.name} to {tracepoint}: {e.strerror}",
                                     errno=e.errno, hint=hint) from None

    def __repr__(self) -> str:
        state = "detached" if self.closed else "attached"
        return f"<TracepointLink {self.prog_name} -> {self.tracepoint}, {state}>"


def attach_tracepoint(prog: RawProgram, tracepoint: str) -> TracepointLink:
    """Attach a TRACEPOINT program to "category:name"; close the result to detach."""
    return TracepointLink(prog, tracepoint)


# ------------------------------------------------- process ids, kernel's --
MARKER_TAG = 0x7EB7          # the top 16 bits of a marker offset


class TgidProbe(FdObject):
    """The process ids BPF sees, which differ from os.getpid() inside a
    container with its own PID namespace. A process announces itself by
    calling `os.lseek(-1, marker)` (it fails with EBADF, harmlessly); the probe
    records which process id made each marker call."""

    def __init__(self):
        self.seen_map = RawMap(MapType.HASH, 8, 8, 256, name="ebt_tgid_probe")
        offset = tracepoint_format("syscalls:sys_enter_lseek")["offset"].offset
        prog = [
            mov(R6, R1),
            ldx(U64, R1, R6, offset), stx(U64, R10, R1, -8),        # key: the offset
            rsh(R1, 48), jne(R1, MARKER_TAG, "out"),                 # only markers
            call("get_current_pid_tgid"), rsh(R0, 32), stx(U64, R10, R0, -16),
            ld_map_fd(R1, self.seen_map.fd),
            mov(R2, R10), add(R2, -8), mov(R3, R10), add(R3, -16), mov(R4, 0),
            call("map_update_elem"),
            label("out"), mov(R0, 0), exit_(),
        ]
        self.prog = load(prog, ProgType.TRACEPOINT, name="ebt_tgid_probe")
        self.link = attach_tracepoint(self.prog, "syscalls:sys_enter_lseek")
        self.fd = self.link.fd       # open while the attachment is

    @staticmethod
    def new_marker() -> int:
        return MARKER_TAG << 48 | int.from_bytes(os.urandom(5), "little")

    @staticmethod
    def announce(marker: int) -> None:
        """Make the marker call from this process."""
        try:
            os.lseek(-1, marker, os.SEEK_SET)
        except OSError:
            pass

    def tgid(self, marker: int) -> int | None:
        """The process id (as BPF sees it) that called lseek with marker."""
        value = self.seen_map.lookup(marker)
        return int.from_bytes(value, sys.byteorder) if value is not None else None

    def close(self) -> None:
        self.fd = -1
        for obj in ("link", "prog", "seen_map"):
            if hasattr(self, obj):
                getattr(self, obj).close()


def kernel_tgid() -> int:
    """This process's id as BPF programs see it (bpf_get_current_pid_tgid() >> 32).
    Equal to os.getpid() unless we run in a PID namespace of our own."""
    with TgidProbe() as probe:
        marker = probe.new_marker()
        probe.announce(marker)
        tgid = probe.tgid(marker)
    if tgid is None:
        raise errors.BpfError("the tgid probe saw nothing", hint="is the tracepoint "
                              "syscalls:sys_enter_lseek enabled?")
    return tgid
