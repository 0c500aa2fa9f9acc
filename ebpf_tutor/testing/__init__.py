"""Helpers for testing BPF code: fixtures, builders, assertions, a benchmark.

    from ebpf_tutor.testing import (make_key, make_struct, build_packet,
        assert_bytes_equal, assert_raises_errno, benchmark, has_bpf_capabilities)

    make_key(42)                              # b'*\\x00\\x00\\x00' (4 bytes, little-endian)
    make_struct(Event, pid=1, comm=b"sh")     # bytes of a ctypes struct
    pkt = build_packet(protocol="tcp", dport=80)
    assert_bytes_equal(expected, got)         # fails with a hex diff of the rows that differ
    with assert_raises_errno(errno.EEXIST):
        m.update(1, 2, flags=BPF_NOEXIST)
    print(benchmark(lambda: m.lookup(1), n=10_000))

In pytest, import the fixtures you use into your test module (or list
`pytest_plugins = ["ebpf_tutor.testing"]` in a conftest.py):
`bpf_program` (a factory; every program is closed after the test),
`scratch_dir`, `bpffs_dir`, `mock_maps`, `kernel_maps`.

`KernelMap` is a real kernel map (created through libbpf) with the same raw
API as mock.MockMap, so one test can run against both.
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import ctypes.util
import errno as E
import os
import shutil
import statistics
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .mock import BPF_ANY, MAP_TYPES, MockMap, clear_injections, lpm_key, possible_cpus

try:
    import pytest
except ImportError:  # the helpers work without pytest; only the fixtures need it
    pytest = None

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


# ---------------------------------------------------------- capabilities --
def effective_capabilities(pid: int | str = "self") -> int:
    """The effective capability bits of a process (CapEff in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has_bpf_capabilities(probe: bool = False) -> bool:
    """True when this process may load BPF programs: CAP_BPF with
    CAP_PERFMON, or CAP_SYS_ADMIN. With `probe`, also create and close a
    one-entry array map, which proves the bpf() syscall really works here."""
    caps = effective_capabilities()
    ok = bool(caps >> CAP_SYS_ADMIN & 1) or bool(caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1)
    if ok and probe:
        try:
            KernelMap("array", 4, 4, 1).close()
        except OSError:
            return False
    return ok


# -------------------------------------------------------------- builders --
def make_key(value: int, size: int = 4, signed: bool = False, byteorder: str = "little") -> bytes:
    """An integer as the bytes of a map key: make_key(42) == b'*\\0\\0\\0'."""
    return int(value).to_bytes(size, byteorder, signed=signed)


def make_value(value: int, size: int = 8, signed: bool = False, byteorder: str = "little") -> bytes:
    """An integer as the bytes of a map value (8 bytes by default, like u64)."""
    return int(value).to_bytes(size, byteorder, signed=signed)


def make_struct(ctype, **fields: Any) -> bytes:
    """The bytes of a ctypes struct with the given fields set (others zero).
    Strings are encoded; lists fill arrays."""
    obj = ctype()
    for name, value in fields.items():
        if not hasattr(obj, name):
            raise AttributeError(f"{ctype.__name__} has no field {name!r}; fields: "
                                 f"{', '.join(f[0] for f in ctype._fields_)}")
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, (list, tuple)):
            arr = getattr(obj, name)
            for i, v in enumerate(value):
                arr[i] = v
            continue
        setattr(obj, name, value)
    return bytes(obj)


def parse_struct(ctype, data: bytes):
    """A ctypes struct from bytes (the size must match exactly)."""
    if len(data) != ct.sizeof(ctype):
        raise ValueError(f"{ctype.__name__} is {ct.sizeof(ctype)} bytes, got {len(data)}")
    return ctype.from_buffer_copy(data)


def struct_type(name: str, fields: Sequence[tuple[str, Any]]):
    """A ctypes struct type from (name, type) pairs; types may be ctypes
    types or short names: u8 u16 u32 u64 s8 s16 s32 s64, or 'char[16]'."""
    names = {"u8": ct.c_uint8, "u16": ct.c_uint16, "u32": ct.c_uint32, "u64": ct.c_uint64,
             "s8": ct.c_int8, "s16": ct.c_int16, "s32": ct.c_int32, "s64": ct.c_int64}
    out = []
    for fname, ftype in fields:
        if isinstance(ftype, str):
            if ftype.startswith("char[") and ftype.endswith("]"):
                ftype = ct.c_char * int(ftype[5:-1])
            else:
                ftype = names[ftype]
        out.append((fname, ftype))
    return type(name, (ct.Structure,), {"_fields_": out})


# ---------------------------------------------------------------- packets --
def build_packet(protocol: str = "tcp", *, ip: int = 4, sport: int | None = None,
                 dport: int | None = None, payload: bytes = b"", src: str | None = None,
                 dst: str | None = None, ttl: int | None = None, tcp_flags: str = "S",
                 ethernet: bool = True, **ip_kw) -> bytes:
    """A test packet: Ethernet + IPv4/IPv6 + TCP, UDP or ICMP echo, lengths
    and checksums right. One entry point over the builders of
    `ebpf_tutor.sandbox.packets` (tcp_packet, udp_packet, icmp_packet), which this
    module re-exports with `parse`; `ethernet=False` gives the IP packet."""
    from ..sandbox import packets
    if ttl is not None:
        ip_kw["ttl" if ip == 4 else "hop_limit"] = ttl
    proto = protocol.lower()
    if proto == "tcp":
        frame = packets.tcp_packet(dport if dport is not None else 80, sport=sport or 40000,
                                   flags=tcp_flags, payload=payload, ip=ip, src=src, dst=dst, **ip_kw)
    elif proto == "udp":
        frame = packets.udp_packet(dport if dport is not None else 53, sport=sport or 40000,
                                   payload=payload, ip=ip, src=src, dst=dst, **ip_kw)
    elif proto in ("icmp", "icmpv6"):
        frame = packets.icmp_packet(ip=6 if proto == "icmpv6" else ip, payload=payload or b"ping",
                                    src=src, dst=dst, **ip_kw)
    else:
        raise ValueError(f"protocol must be tcp, udp or icmp, not {protocol!r}")
    return frame if ethernet else frame[14:]


def __getattr__(name: str):
    # packets' own builders and parser, re-exported (imported when first used)
    if name in ("tcp_packet", "udp_packet", "icmp_packet", "parse", "checksum"):
        from ..sandbox import packets
        return getattr(packets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------ assertions --
def hexdump(data: bytes, width: int = 16) -> str:
    """Offset, hex bytes and ASCII, `width` bytes a row."""
    rows = []
    for off in range(0, len(data), width):
        chunk = data[off: off + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        rows.append(f"{off:04x}  {chunk.hex(' '):<{width * 3}} {text}")
    return "\n".join(rows)


def bytes_diff(expected: bytes, actual: bytes, width: int = 16, context: int = 1,
               layout: Sequence[tuple[str, int, int]] = (), max_rows: int = 8) -> str:
    """A readable diff of two byte strings: the rows that differ, expected
    above actual, with ^^ under each differing byte. `layout` names fields
    as (name, offset, size) so the message can say which field differs.
    At most `max_rows` differing rows are shown."""
    n = max(len(expected), len(actual))
    diffs = [i for i in range(n) if i >= len(expected) or i >= len(actual) or expected[i] != actual[i]]
    if not diffs:
        return ""
    head = [f"{len(diffs)} byte(s) differ, first at offset {diffs[0]} (0x{diffs[0]:x})"]
    if len(expected) != len(actual):
        head.append(f"lengths differ: expected {len(expected)} bytes, got {len(actual)}")
    names = sorted({name for name, off, size in layout for d in diffs if off <= d < off + size},
                   key=lambda nm: next(o for x, o, _ in layout if x == nm))
    if names:
        head.append("fields that differ: " + ", ".join(names))
    differ = set(diffs)
    rows_with_diff = sorted({d // width for d in diffs})
    hidden = rows_with_diff[max_rows:]
    show = sorted({r + c for r in rows_with_diff[:max_rows] for c in range(-context, context + 1)
                   if 0 <= r + c <= (n - 1) // width})
    lines, last = [], None
    for r in show:
        if last is not None and r != last + 1:
            lines.append("      ...")
        last = r
        lo = r * width
        e, a = expected[lo: lo + width], actual[lo: lo + width]
        lines.append(f"{lo:04x}  exp {e.hex(' ')}")
        lines.append(f"      got {a.hex(' ')}")
        marks = "".join("^^ " if lo + i in differ else "   " for i in range(max(len(e), len(a))))
        if marks.strip():
            lines.append("          " + marks.rstrip())
    if hidden:
        lines.append(f"      ... and {len(hidden)} more row(s) that differ")
    return "\n".join(head + lines)


def assert_bytes_equal(expected: bytes, actual: bytes, msg: str = "",
                       layout: Sequence[tuple[str, int, int]] = ()) -> None:
    """assert expected == actual, failing with a hex diff (see bytes_diff)."""
    expected, actual = bytes(expected), bytes(actual)
    if expected == actual:
        return
    text = bytes_diff(expected, actual, layout=layout)
    raise AssertionError((msg + "\n" if msg else "") + text)


def errno_of(exc: BaseException) -> int | None:
    """The errno an exception carries: OSError.errno, BpfError.errno, or the
    strerror() text that BCC puts in its plain Exception messages."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return code
    text = str(exc)
    found = [c for c in E.errorcode if os.strerror(c) in text]
    if found:   # the longest matching text: "Operation not permitted" over shorter ones
        return max(found, key=lambda c: len(os.strerror(c)))
    from ..errors import errno_from_message
    return errno_from_message(text)


class _ErrnoCatcher:
    exception: BaseException | None = None


@contextlib.contextmanager
def _raises_errno(code: int) -> Iterator[_ErrnoCatcher]:
    caught = _ErrnoCatcher()
    try:
        yield caught
    except Exception as e:  # noqa: BLE001 - checked below
        got = errno_of(e)
        if got != code:
            name = E.errorcode.get(got, str(got)) if got is not None else "no errno"
            raise AssertionError(f"expected errno {E.errorcode.get(code, code)} "
                                 f"({os.strerror(code)}), got {name}: {type(e).__name__}: {e}") from e
        caught.exception = e
        return
    raise AssertionError(f"expected errno {E.errorcode.get(code, code)} ({os.strerror(code)}), "
                         "but nothing was raised")


def assert_raises_errno(code: int, fn: Callable | None = None, *args, **kwargs):
    """Assert that fn(*args, **kwargs) raises an error with errno `code`.
    Without fn, a context manager: `with assert_raises_errno(errno.EPERM): ...`.
    Returns the exception (function form) or a holder with `.exception`."""
    if fn is None:
        return _raises_errno(code)
    with _raises_errno(code) as caught:
        fn(*args, **kwargs)
    return caught.exception


# ------------------------------------------------------------- benchmark --
@dataclass(frozen=True)
class BenchmarkResult:
    """Timings of n calls, in seconds."""
    name: str
    n: int
    total_s: float
    mean_s: float
    median_s: float
    p99_s: float
    min_s: float
    max_s: float
    stdev_s: float
    ops_per_s: float

    def __str__(self) -> str:
        f = _fmt_s
        return (f"{self.name or 'benchmark'}: {self.n} calls, mean {f(self.mean_s)}, median "
                f"{f(self.median_s)}, p99 {f(self.p99_s)}, min {f(self.min_s)}, "
                f"{self.ops_per_s:,.0f} ops/s")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fmt_s(s: float) -> str:
    for unit, mult in (("s", 1), ("ms", 1e3), ("µs", 1e6)):
        if s >= 1 / mult:
            return f"{s * mult:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def benchmark(fn: Callable[[], Any], n: int = 1000, *, warmup: int = 10, name: str = "") -> BenchmarkResult:
    """Call `fn()` n times (after `warmup` untimed calls) and time each call.

    Each timing includes the clock's own cost (tens of ns): for functions
    that take less than a microsecond, make fn run a loop and divide."""
    if n < 1:
        raise ValueError("n must be >= 1")
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    times = [0] * n
    start = clock()
    for i in range(n):
        t0 = clock()
        fn()
        times[i] = clock() - t0
    total = (clock() - start) / 1e9
    s = sorted(times)
    p99 = s[min(n - 1, max(0, int(round(0.99 * n + 0.5)) - 1))] / 1e9
    return BenchmarkResult(name or getattr(fn, "__name__", ""), n, total, statistics.fmean(s) / 1e9,
                           statistics.median(s) / 1e9, p99, s[0] / 1e9, s[-1] / 1e9,
                           (statistics.stdev(s) / 1e9) if n > 1 else 0.0, n / total if total else 0.0)


# ------------------------------------------------------------ kernel maps --
class _CreateOpts(ct.Structure):
    """libbpf's struct bpf_map_create_opts (libbpf 1.x)."""
    _fields_ = [("sz", ct.c_size_t), ("btf_fd", ct.c_uint32), ("btf_key_type_id", ct.c_uint32),
                ("btf_value_type_id", ct.c_uint32), ("btf_vmlinux_value_type_id", ct.c_uint32),
                ("inner_map_fd", ct.c_uint32), ("map_flags", ct.c_uint32), ("map_extra", ct.c_uint64),
                ("numa_node", ct.c_uint32), ("map_ifindex", ct.c_uint32)]


_libbpf = None


def libbpf() -> ct.CDLL:
    """libbpf's shared library (BCC links it), loaded once."""
    global _libbpf
    if _libbpf is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        lib = ct.CDLL(name, use_errno=True)
        p, i, u32, u64 = ct.c_void_p, ct.c_int, ct.c_uint32, ct.c_uint64
        lib.bpf_map_create.argtypes = [i, ct.c_char_p, u32, u32, u32, ct.POINTER(_CreateOpts)]
        lib.bpf_map_update_elem.argtypes = [i, p, p, u64]
        for f in ("bpf_map_lookup_elem", "bpf_map_get_next_key", "bpf_map_lookup_and_delete_elem"):
            getattr(lib, f).argtypes = [i, p, p]
        lib.bpf_map_delete_elem.argtypes = [i, p]
        _libbpf = lib
    return _libbpf


class KernelMap:
    """A real BPF map, made with libbpf's bpf_map_create(), with the raw API
    of mock.MockMap: lookup/update/delete/get_next_key/lookup_and_delete
    (and push/pop_raw/peek_raw for queues and stacks), raising OSError with
    the kernel's errno. Close it (or use `with`)."""

    mocked = False
    BPF_F_NO_PREALLOC = 1

    def __init__(self, map_type: str, key_size: int = 4, value_size: int = 8, max_entries: int = 16,
                 flags: int | None = None, name: str = "ebt_test"):
        self.map_type = map_type
        if map_type in ("queue", "stack"):
            key_size = 0
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        percpu = map_type.startswith("percpu")
        self.ncpus = possible_cpus() if percpu else 1
        slot = (value_size + 7) // 8 * 8 if percpu else value_size
        self._vbuf = slot * self.ncpus       # the syscall's value buffer: one slot per CPU
        if flags is None:
            flags = self.BPF_F_NO_PREALLOC if map_type == "lpm_trie" else 0
        opts = _CreateOpts(sz=ct.sizeof(_CreateOpts), map_flags=flags)
        fd = libbpf().bpf_map_create(MAP_TYPES[map_type], name.encode()[:15], key_size, value_size,
                                     max_entries, ct.byref(opts))
        if fd < 0:
            raise self._error(f"bpf_map_create({map_type})")
        self.fd = fd

    @staticmethod
    def _error(what: str) -> OSError:
        code = ct.get_errno()
        return OSError(code, f"{os.strerror(code)} ({what})")

    def _kbuf(self, key: Any):
        if self.key_size == 0 or key is None:
            return None
        if isinstance(key, (str, tuple)) and self.map_type == "lpm_trie":
            key = lpm_key(key, size=self.key_size)
        from .mock import to_bytes
        return ct.create_string_buffer(to_bytes(key, self.key_size), self.key_size)

    def _vbuffer(self, value: Any = None):
        if value is None:
            return ct.create_string_buffer(self._vbuf)
        from .mock import to_bytes
        if self._vbuf != self.value_size and not (isinstance(value, (bytes, bytearray))
                                                  and len(value) == self._vbuf):
            raw = to_bytes(value, self.value_size, "value").ljust(self._vbuf // self.ncpus, b"\0")
            raw *= self.ncpus
        else:
            raw = to_bytes(value, self._vbuf, "value")
        return ct.create_string_buffer(raw, self._vbuf)

    def _check(self, ret: int, what: str) -> None:
        if ret < 0:
            raise self._error(what)

    def lookup(self, key: Any = None) -> bytes:
        v = self._vbuffer()
        self._check(libbpf().bpf_map_lookup_elem(self.fd, self._kbuf(key), v), "lookup")
        return v.raw

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        self._check(libbpf().bpf_map_update_elem(self.fd, self._kbuf(key), self._vbuffer(value),
                                                 flags), "update")

    def delete(self, key: Any = None) -> None:
        self._check(libbpf().bpf_map_delete_elem(self.fd, self._kbuf(key)), "delete")

    def get_next_key(self, key: Any = None) -> bytes:
        nxt = ct.create_string_buffer(max(self.key_size, 1))
        self._check(libbpf().bpf_map_get_next_key(self.fd, self._kbuf(key), nxt), "get_next_key")
        return nxt.raw[: self.key_size]

    def lookup_and_delete(self, key: Any = None) -> bytes:
        v = self._vbuffer()
        self._check(libbpf().bpf_map_lookup_and_delete_elem(self.fd, self._kbuf(key), v),
                    "lookup_and_delete")
        return v.raw

    # queues and stacks, named as on MockQueue
    def push(self, value: Any, flags: int = BPF_ANY) -> None:
        self.update(None, value, flags)

    def pop_raw(self) -> bytes:
        return self.lookup_and_delete(None)

    def peek_raw(self) -> bytes:
        return self.lookup(None)

    def keys(self) -> list[bytes]:
        """All keys, by get_next_key from the start (kernel order)."""
        out, key = [], None
        for _ in range(self.max_entries + 1):
            try:
                key = self.get_next_key(key)
            except OSError:
                break
            out.append(key)
        return out

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "KernelMap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


def run_op(m, op: str, *args) -> tuple[str, Any]:
    """Run one raw map operation; ("ok", result) or ("err", errno). Handy to
    compare a mock with a kernel map operation by operation."""
    try:
        return "ok", getattr(m, op)(*args)
    except OSError as e:
        return "err", e.errno


# --------------------------------------------------------------- fixtures --
def _pin_base() -> Path:
    from ..bpfsys.pin import PIN_DIR
    return PIN_DIR


if pytest is not None:
    @pytest.fixture
    def bpf_program():
        """A factory: bpf_program(C_TEXT, **kw) -> Program; all are closed
        after the test, whatever happened."""
        from ..program import Program
        made = []

        def make(text: str, **kwargs) -> Program:
            p = Program(text, **kwargs)
            made.append(p)
            return p
        yield make
        for p in made:
            p.close()

    @pytest.fixture
    def scratch_dir():
        """A fresh temporary directory, removed after the test."""
        d = Path(tempfile.mkdtemp(prefix=f"ebt-{os.getpid()}-"))
        yield d
        shutil.rmtree(d, ignore_errors=True)

    @pytest.fixture
    def bpffs_dir():
        """A fresh directory in the BPF filesystem for pins, removed after
        the test (named <pid>-..., so a sweep removes it if we are killed)."""
        base = _pin_base()
        if not Path("/sys/fs/bpf").is_dir() or os.geteuid() != 0:
            pytest.skip("needs root and a mounted bpffs (/sys/fs/bpf)")
        base.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
        yield d
        shutil.rmtree(d, ignore_errors=True)

    @pytest.fixture
    def mock_maps():
        """A factory: mock_maps("hash", key_size=4, ...) -> MockMap. Failure
        injections are disarmed after the test."""
        clear_injections()
        yield lambda *a, **kw: MockMap(*a, **kw)
        clear_injections()

    @pytest.fixture
    def kernel_maps():
        """A factory of real maps: kernel_maps("hash", 4, 8, 16) -> KernelMap
        (closed after the test). Skips the test without BPF privileges."""
        if not has_bpf_capabilities():
            pytest.skip("needs CAP_BPF or root")
        made = []

        def make(*a, **kw) -> KernelMap:
            m = KernelMap(*a, **kw)
            made.append(m)
            return m
        yield make
        for m in made:
            m.close()


__all__ = ["has_bpf_capabilities", "effective_capabilities", "make_key", "make_value", "make_struct",
           "parse_struct", "struct_type", "lpm_key", "build_packet", "tcp_packet", "udp_packet",
           "icmp_packet", "parse", "checksum", "hexdump", "bytes_diff",
           "assert_bytes_equal", "assert_raises_errno", "errno_of", "benchmark", "BenchmarkResult",
           "KernelMap", "run_op", "libbpf", "bpf_program", "scratch_dir", "bpffs_dir", "mock_maps",
           "kernel_maps"]
if pytest is None:
    __all__ = [n for n in __all__ if not n.endswith(("_program", "_dir", "_maps"))]
