"""The bpf() system call itself: its number, its commands, the attr structs
it takes, the errors it gives, and the descriptors it returns.

Every other module of bpfsys ends in `bpf(cmd, attr)`. An object the kernel
hands back is a file descriptor, kept by an `FdObject`; `close_all()` closes
every one still open, whichever module made it.
"""
from __future__ import annotations

import ctypes as ct
import errno as _errno
import os
import re
import weakref
from enum import IntEnum

from .. import errors
from ..kernel import arch as _arch


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


class MapInfoStruct(ct.Structure):
    """struct bpf_map_info, up to name."""
    _fields_ = [("type", u32), ("id", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32), ("name", ct.c_char * 16)]


def addr_of(buf) -> int:
    return ct.addressof(buf) if buf is not None else 0


def object_name(name: str) -> bytes:
    """Kernel object names: at most 15 characters of [A-Za-z0-9_.]."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", name)[:15].encode()


# ------------------------------------------------------------- the call --
def bpf(cmd: Cmd, attr: ct.Structure) -> int:
    """One bpf() system call; raises OSError on failure."""
    return _syscall(syscall_number("bpf"), int(cmd), ct.addressof(attr), ct.sizeof(attr))


def syscall_error(what: str, err: int, hint: str = "") -> errors.BpfError:
    """An OSError from bpf() as one of the package's error classes."""
    msg = f"{what}: {os.strerror(err)}"
    if err in (_errno.EPERM, _errno.EACCES):
        return errors.BpfPermissionError(msg, errno=err, hint=hint or (
            errors.ROOT_HINT if os.geteuid() else "this kernel refuses it even to root "
            "(lockdown, or the feature is off): run `ebpf-tutor doctor`"))
    if err in errors.TRANSIENT_ERRNOS:
        return errors.TransientError(msg, errno=err, hint=hint)
    return errors.BpfError(msg, errno=err, hint=hint)


def obj_info(fd: int, info: ct.Structure, what: str) -> ct.Structure:
    """BPF_OBJ_GET_INFO_BY_FD: fill `info` (a ProgInfoStruct, MapInfoStruct...)
    with what the kernel says about the object behind `fd`."""
    attr = InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info), info=ct.addressof(info))
    try:
        bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    except OSError as e:
        raise syscall_error(f"reading {what} info", e.errno) from None
    return info


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
    """Close every map, program and attachment of bpfsys still open."""
    objs = list(_open)
    for o in objs:
        o.close()
    return len(objs)
