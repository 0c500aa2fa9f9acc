"""libbpf's shared library through ctypes, for the calls BCC 0.26 does not
wrap in Python: pinning, map creation with options, test runs with options
(XDP live frames), cgroup attach, detach and query. BCC is built on libbpf and links it, so this is the very copy BCC
uses. Loaded once, with errno, every function's argument types declared.

libbpf functions return a negative errno on failure (and set errno too).
"""
from __future__ import annotations

import ctypes as ct
import ctypes.util


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
        _lib = lib
    return _lib
