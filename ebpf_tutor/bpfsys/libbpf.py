"""libbpf's shared library through ctypes, for the calls BCC 0.26 does not
wrap in Python: pinning, map creation with options, test runs with options
(XDP live frames), cgroup attach, detach and query; and libbpf's object API
(open a CO-RE `.o`, load, attach, ring buffers), which `bpfobject.BPFObject`
builds on. BCC is built on libbpf and links it, so this is the very copy BCC
uses. Loaded once, with errno, every function's argument types declared.

Only API that exists in libbpf 1.1 (Debian 12) is declared here.

libbpf functions return a negative errno on failure (and set errno too);
those that return a pointer return NULL and set errno. libbpf's messages
(warnings, the verifier log, CO-RE relocation lines at debug level) go
through one print callback: `capture_log()` collects them.
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import ctypes.util
import os
import platform
from typing import Iterator


class MapCreateOpts(ct.Structure):
    """libbpf's struct bpf_map_create_opts (libbpf 1.x), for bpf_map_create()."""
    _fields_ = [("sz", ct.c_size_t), ("btf_fd", ct.c_uint32), ("btf_key_type_id", ct.c_uint32),
                ("btf_value_type_id", ct.c_uint32), ("btf_vmlinux_value_type_id", ct.c_uint32),
                ("inner_map_fd", ct.c_uint32), ("map_flags", ct.c_uint32),
                ("map_extra", ct.c_uint64), ("numa_node", ct.c_uint32), ("map_ifindex", ct.c_uint32)]


class TestRunOpts(ct.Structure):
    """libbpf's struct bpf_test_run_opts (libbpf 1.x), for bpf_prog_test_run_opts()."""
    __test__ = False      # not a pytest test class, despite the name
    _fields_ = [("sz", ct.c_size_t), ("data_in", ct.c_void_p), ("data_out", ct.c_void_p),
                ("data_size_in", ct.c_uint32), ("data_size_out", ct.c_uint32),
                ("ctx_in", ct.c_void_p), ("ctx_out", ct.c_void_p),
                ("ctx_size_in", ct.c_uint32), ("ctx_size_out", ct.c_uint32),
                ("retval", ct.c_uint32), ("repeat", ct.c_int), ("duration", ct.c_uint32),
                ("flags", ct.c_uint32), ("cpu", ct.c_uint32), ("batch_size", ct.c_uint32)]


class ObjectOpenOpts(ct.Structure):
    """libbpf's struct bpf_object_open_opts (1.1), for bpf_object__open_file/_mem."""
    _fields_ = [("sz", ct.c_size_t), ("object_name", ct.c_char_p), ("relaxed_maps", ct.c_bool),
                ("pin_root_path", ct.c_char_p), ("_removed_attach_prog_fd", ct.c_uint32),
                ("kconfig", ct.c_char_p), ("btf_custom_path", ct.c_char_p),
                ("kernel_log_buf", ct.c_char_p), ("kernel_log_size", ct.c_size_t),
                ("kernel_log_level", ct.c_uint32)]


class UprobeOpts(ct.Structure):
    """libbpf's struct bpf_uprobe_opts (1.1): attach by function name."""
    _fields_ = [("sz", ct.c_size_t), ("ref_ctr_offset", ct.c_size_t), ("bpf_cookie", ct.c_uint64),
                ("retprobe", ct.c_bool), ("func_name", ct.c_char_p)]


class UsdtOpts(ct.Structure):
    """libbpf's struct bpf_usdt_opts (1.1)."""
    _fields_ = [("sz", ct.c_size_t), ("usdt_cookie", ct.c_uint64)]


class BtfTypeStruct(ct.Structure):
    """struct btf_type (include/uapi/linux/btf.h): the 12 bytes every BTF type starts with."""
    _fields_ = [("name_off", ct.c_uint32), ("info", ct.c_uint32), ("size_or_type", ct.c_uint32)]


class VarSecinfo(ct.Structure):
    """struct btf_var_secinfo: one variable of a DATASEC (.rodata, .bss, .data)."""
    _fields_ = [("type", ct.c_uint32), ("offset", ct.c_uint32), ("size", ct.c_uint32)]


# libbpf's print levels (enum libbpf_print_level)
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2
BTF_KIND_DATASEC = 15
PRINT_FN = ct.CFUNCTYPE(ct.c_int, ct.c_int, ct.c_char_p, ct.c_void_p)   # va_list is passed by pointer
RINGBUF_SAMPLE_FN = ct.CFUNCTYPE(ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_size_t)

_lib: ct.CDLL | None = None


def libbpf() -> ct.CDLL:
    """libbpf, the library BCC itself links (loaded on first use)."""
    global _lib
    if _lib is None:
        from ..kernel import bcc_import  # noqa: F401 - loads libbcc, and with it libbpf.so.1
        lib = ct.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
        fd, ptr, u32, u64 = ct.c_int, ct.c_void_p, ct.c_uint32, ct.c_uint64
        # objects: pins, ids, info
        lib.bpf_obj_pin.argtypes = [fd, ct.c_char_p]
        lib.bpf_obj_get.argtypes = [ct.c_char_p]
        lib.bpf_obj_get_info_by_fd.argtypes = [fd, ptr, ct.POINTER(u32)]
        lib.bpf_map_get_fd_by_id.argtypes = [u32]
        lib.bpf_prog_get_fd_by_id.argtypes = [u32]
        # maps
        lib.bpf_map_create.argtypes = [ct.c_int, ct.c_char_p, u32, u32, u32,
                                       ct.POINTER(MapCreateOpts)]
        lib.bpf_map_update_elem.argtypes = [fd, ptr, ptr, u64]
        for name in ("bpf_map_lookup_elem", "bpf_map_get_next_key",
                     "bpf_map_lookup_and_delete_elem"):
            getattr(lib, name).argtypes = [fd, ptr, ptr]
        lib.bpf_map_delete_elem.argtypes = [fd, ptr]
        lib.bpf_prog_test_run_opts.argtypes = [fd, ct.POINTER(TestRunOpts)]
        # programs on cgroups
        lib.bpf_prog_attach.argtypes = [fd, fd, ct.c_int, ct.c_uint]
        lib.bpf_prog_detach2.argtypes = [fd, fd, ct.c_int]
        lib.bpf_prog_query.argtypes = [fd, ct.c_int, u32, ct.POINTER(u32), ct.POINTER(u32),
                                       ct.POINTER(u32)]
        _declare_object_api(lib)
        _lib = lib
    return _lib


def _declare_object_api(lib: ct.CDLL) -> None:
    """Argument and return types of the object, program, map, link, BTF and
    ring-buffer calls (pointers to libbpf's structs are opaque c_void_p)."""
    fd, ptr, u32, s = ct.c_int, ct.c_void_p, ct.c_uint32, ct.c_char_p
    sig = {   # name: (return type, argument types)
        "libbpf_set_print": (ptr, [ptr]),        # a PRINT_FN, or the one it returned
        "libbpf_major_version": (u32, []), "libbpf_minor_version": (u32, []),
        "bpf_object__open_file": (ptr, [s, ct.POINTER(ObjectOpenOpts)]),
        "bpf_object__open_mem": (ptr, [ptr, ct.c_size_t, ct.POINTER(ObjectOpenOpts)]),
        "bpf_object__load": (fd, [ptr]), "bpf_object__close": (None, [ptr]),
        "bpf_object__name": (s, [ptr]), "bpf_object__btf": (ptr, [ptr]),
        "bpf_object__next_program": (ptr, [ptr, ptr]), "bpf_object__next_map": (ptr, [ptr, ptr]),
        "bpf_object__find_program_by_name": (ptr, [ptr, s]),
        "bpf_object__find_map_by_name": (ptr, [ptr, s]),
        "bpf_program__name": (s, [ptr]), "bpf_program__section_name": (s, [ptr]),
        "bpf_program__fd": (fd, [ptr]), "bpf_program__set_autoload": (fd, [ptr, ct.c_bool]),
        "bpf_program__type": (fd, [ptr]), "bpf_program__pin": (fd, [ptr, s]),
        "bpf_program__unpin": (fd, [ptr, s]),
        "bpf_program__attach": (ptr, [ptr]),
        "bpf_program__attach_tracepoint": (ptr, [ptr, s, s]),
        "bpf_program__attach_raw_tracepoint": (ptr, [ptr, s]),
        "bpf_program__attach_trace": (ptr, [ptr]),
        "bpf_program__attach_uprobe_opts": (ptr, [ptr, fd, s, ct.c_size_t, ct.POINTER(UprobeOpts)]),
        "bpf_program__attach_usdt": (ptr, [ptr, fd, s, s, s, ct.POINTER(UsdtOpts)]),
        "bpf_program__attach_cgroup": (ptr, [ptr, fd]),
        "bpf_link__destroy": (fd, [ptr]), "bpf_link__fd": (fd, [ptr]),
        "bpf_link__pin": (fd, [ptr, s]), "bpf_link__unpin": (fd, [ptr]),
        "bpf_map__name": (s, [ptr]), "bpf_map__fd": (fd, [ptr]), "bpf_map__type": (fd, [ptr]),
        "bpf_map__key_size": (u32, [ptr]), "bpf_map__value_size": (u32, [ptr]),
        "bpf_map__max_entries": (u32, [ptr]),
        "bpf_map__initial_value": (ptr, [ptr, ct.POINTER(ct.c_size_t)]),
        "bpf_map__pin": (fd, [ptr, s]), "bpf_map__unpin": (fd, [ptr, s]),
        "btf__find_by_name_kind": (ct.c_int32, [ptr, s, u32]),
        "btf__type_by_id": (ct.POINTER(BtfTypeStruct), [ptr, u32]),
        "btf__name_by_offset": (s, [ptr, u32]),
        "ring_buffer__new": (ptr, [fd, RINGBUF_SAMPLE_FN, ptr, ptr]),
        "ring_buffer__poll": (fd, [ptr, fd]), "ring_buffer__consume": (fd, [ptr]),
        "ring_buffer__free": (None, [ptr]),
    }
    for name, (restype, argtypes) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = restype, argtypes


# ------------------------------------------------------------- the log --
class Log:
    """What libbpf printed while a `capture_log()` block ran: (level, line) pairs."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def text(self, level: int = LIBBPF_DEBUG) -> str:
        """The lines at `level` or more important, as one text."""
        return "".join(line for lvl, line in self.lines if lvl <= level)


_captures: list[Log] = []
_libc = ct.CDLL(None)
_libc.vsnprintf.argtypes = [ct.c_char_p, ct.c_size_t, ct.c_char_p, ct.c_void_p]
# On x86-64 a va_list reaches the callback as a pointer to a 24-byte struct.
# vsnprintf consumes it, so measuring the text first needs a copy, and there
# va_copy() is a plain copy of that struct.
_VA_LIST_BYTES = {"x86_64": 24}.get(platform.machine(), 0)
_FALLBACK_BYTES = 1 << 20           # elsewhere: one pass, cut at 1 MiB


def _format(fmt: bytes, args: int) -> str:
    """printf(fmt, args...) of one libbpf message, however long: a failed
    load's whole verifier log (up to 16 MiB) comes as a single message."""
    size = _FALLBACK_BYTES
    if _VA_LIST_BYTES:
        copy = ct.create_string_buffer(ct.string_at(args, _VA_LIST_BYTES), _VA_LIST_BYTES)
        size = max(_libc.vsnprintf(None, 0, fmt, ct.addressof(copy)), 0) + 1
    buf = ct.create_string_buffer(size)
    _libc.vsnprintf(buf, size, fmt, args)
    return buf.value.decode(errors="replace")


def _print(level: int, fmt: bytes, args: int) -> int:
    """libbpf's print callback: keep the line in the innermost capture;
    outside one, do what libbpf's default does (everything but debug lines
    to file descriptor 2)."""
    try:
        line = _format(fmt, args)
        if _captures:
            _captures[-1].lines.append((level, line))
        elif level != LIBBPF_DEBUG:
            os.write(2, line.encode())
    except Exception:  # noqa: BLE001 - a callback from C must never raise
        pass
    return 0


_PRINT = PRINT_FN(_print)     # kept alive for as long as libbpf may call it
_PRINT_ADDR = ct.cast(_PRINT, ct.c_void_p)


@contextlib.contextmanager
def capture_log(log: Log | None = None) -> Iterator[Log]:
    """Collect every libbpf message, debug level included, printed inside the
    block (into `log` if given, so one log can gather several calls).

    The callback is set at the start of every outermost block, and the one
    before it put back at the end: BCC sets its own whenever it loads a
    program, so a callback set once would go deaf after BCC's first load."""
    log = log if log is not None else Log()
    previous = libbpf().libbpf_set_print(_PRINT_ADDR) if not _captures else None
    _captures.append(log)
    try:
        yield log
    finally:
        _captures.remove(log)
        if not _captures:
            libbpf().libbpf_set_print(previous)
