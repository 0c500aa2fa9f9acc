"""Attaching a program to a tracepoint, and reading what a tracepoint
records. Both go through tracefs (/sys/kernel/tracing/events/<category>/<name>):
its `format` file gives the record a TRACEPOINT program receives in R1
(`tracepoint_format`), its `id` file the number to open a perf event on.

Attaching is `perf_event_open()` on that id, then the ioctl
PERF_EVENT_IOC_SET_BPF (`attach_tracepoint`); closing the perf event detaches.
"""
from __future__ import annotations

import ctypes as ct
import errno as _errno
import fcntl
import re
from dataclasses import dataclass
from pathlib import Path

from .. import errors
from ..kernel import arch as _arch
from .programs import RawProgram
from .syscall import FdObject, _syscall, syscall_number, u32, u64

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
    """The tracepoint's number, what perf_event_open() takes as its config."""
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
