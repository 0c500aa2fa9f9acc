"""The process ids BPF sees (`kernel_tgid`, `TgidProbe`). Inside a
container with its own PID namespace they differ from os.getpid(): a check
that compares what a program recorded with a pid must ask the kernel.

The probe is itself a small raw program: a TRACEPOINT program on
sys_enter_lseek that records which process made an lseek with a marker offset
(top 16 bits MARKER_TAG), into a hash map keyed by the marker.
"""
from __future__ import annotations

import os
import sys

from .. import errors
from .asm import (R0, R1, R2, R3, R4, R6, R10, U64, add, call, exit_, jne, label, ld_map_fd, ldx,
                  mov, rsh, stx)
from .maps import MapType, RawMap
from .programs import ProgType, load
from .syscall import FdObject
from .tracepoints import attach_tracepoint, tracepoint_format

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
