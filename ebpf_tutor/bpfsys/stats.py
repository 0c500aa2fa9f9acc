"""BPF_ENABLE_STATS: the kernel's per-program run time and run count.

The kernel counts, for every program, how often it ran (`run_cnt`) and the
nanoseconds it spent (`run_time_ns`), but only while statistics are on,
because reading the clock around each run costs time itself. They are on
while someone holds a descriptor that BPF_ENABLE_STATS returns (or while
the sysctl `kernel.bpf_stats_enabled` is 1, which reading the sysctl is the
only way to see: a descriptor does not change it); the counters stay when stats go
off, and grow again when they come back.

    with run_time_stats():                      # on while the block runs
        ...                                     # the workload
        s = ProgStats.of(fd)                    # run_cnt, run_time_ns, ns_per_run
"""
from __future__ import annotations

import ctypes as ct
from dataclasses import dataclass

from .programs import prog_info
from .syscall import FdObject, bpf, syscall_error, u32

BPF_ENABLE_STATS = 32          # enum bpf_cmd
BPF_STATS_RUN_TIME = 0         # enum bpf_stats_type


class EnableStatsAttr(ct.Structure):
    _fields_ = [("type", u32)]


class StatsSwitch(FdObject):
    """Run-time statistics are on while this descriptor is open."""

    def __repr__(self) -> str:
        return f"<bpf stats {'closed' if self.closed else 'on, fd %d' % self.fd}>"


def run_time_stats() -> StatsSwitch:
    """Turn run-time statistics on (BPF_ENABLE_STATS) until the result is closed."""
    try:
        fd = bpf(BPF_ENABLE_STATS, EnableStatsAttr(type=BPF_STATS_RUN_TIME))
    except OSError as e:
        raise syscall_error("BPF_ENABLE_STATS", e.errno,
                            "needs kernel 5.8 or later, and CAP_SYS_ADMIN") from None
    switch = StatsSwitch()
    switch._opened(fd)
    return switch


@dataclass(frozen=True)
class ProgStats:
    """A program's counters at one moment."""
    run_cnt: int
    run_time_ns: int

    @classmethod
    def of(cls, fd: int) -> "ProgStats":
        """The counters of the program behind `fd` (ours or one BCC loaded)."""
        info = prog_info(fd)
        return cls(info.run_cnt, info.run_time_ns)

    def __sub__(self, other: "ProgStats") -> "ProgStats":
        return ProgStats(self.run_cnt - other.run_cnt, self.run_time_ns - other.run_time_ns)

    @property
    def ns_per_run(self) -> float:
        """Mean nanoseconds per run (0 when it never ran)."""
        return self.run_time_ns / self.run_cnt if self.run_cnt else 0.0
