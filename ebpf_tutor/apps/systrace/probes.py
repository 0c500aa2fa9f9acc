"""Load systrace's BPF program with the filters asked for, and start a
command stopped so that its first traced call is its execve.

    opts = TraceOptions(summary=True, follow=True)
    with Tracer(opts) as tr:
        child = start_stopped(["ls", "/"])   # stopped before its execve
        tr.add_pid(child)                    # filter map first...
        resume(child)                        # ...then it runs
        wait(child)
        stats = tr.summary()                 # {syscall name: SyscallStat}

The C source is `systrace.bpf.c`; filters are compile-time switches, so a
run pays only for the ones it uses.
"""
from __future__ import annotations

import ctypes as ct
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from . import decode, syscalls

C_SOURCE = Path(__file__).with_name("systrace.bpf.c")
COMM_LEN = 16
PATH_LEN = 128
PATH_AT_ENTER = 0x80
TRACEPOINTS = ("raw_syscalls/sys_enter", "raw_syscalls/sys_exit", "sched/sched_process_fork",
               "sched/sched_process_exit")
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class Event(ct.Structure):
    """One finished call, as `sys_exit` sends it (struct event_t)."""
    _fields_ = [("ts", ct.c_uint64), ("lat_ns", ct.c_uint64), ("ret", ct.c_int64),
                ("args", ct.c_uint64 * 6), ("pid", ct.c_uint32), ("tid", ct.c_uint32),
                ("nr", ct.c_uint32), ("cpu", ct.c_uint32), ("comm", ct.c_char * COMM_LEN),
                ("path", ct.c_char * PATH_LEN)]


@dataclass
class SyscallStat:
    """One row of the `-c` summary."""
    name: str
    calls: int
    errors: int
    total_ns: int
    max_ns: int

    @property
    def avg_ns(self) -> float:
        return self.total_ns / self.calls if self.calls else 0.0


@dataclass
class TraceOptions:
    """What to trace and how (each filter is optional; none = every process)."""
    summary: bool = False
    latency: bool = True                                # -c without it: count at exit only
    pids: list[int] = field(default_factory=list)
    follow: bool = False
    comm: str | None = None
    cgroup_id: int | None = None
    syscalls: list[str] = field(default_factory=list)   # only these calls (empty: all)
    ring_pages: int = 1024                              # 4 MiB ring at 4 KiB pages
    task_storage: bool = True                           # the call in progress in task storage

    def cflags(self) -> list[str]:
        flags = [f"-DPATH_LEN={PATH_LEN}", f"-DRING_PAGES={self.ring_pages}"]
        if self.task_storage:
            flags.append("-DSTART_IN_TASK")
        if self.summary:
            flags.append("-DSUMMARY")
            if not self.latency:
                flags.append("-DNO_LATENCY")
                table = {n: nr for nr, n in syscalls.table().items()}
                for call in ("clone", "clone3", "fork", "vfork"):
                    flags.append(f"-DNR_{call.upper()}={table.get(call, 0xFFFFFFFF)}U")
        if len(self.pids) == 1 and not self.follow:
            flags.append(f"-DFILTER_TGID={int(self.pids[0])}")   # a constant: no map lookup
        elif self.pids or self.follow:
            flags.append("-DFILTER_PID")
        if self.follow:
            flags.append("-DFOLLOW_FORK")
        if self.comm:
            flags.append("-DFILTER_COMM")
        if self.cgroup_id is not None:
            flags.append(f"-DFILTER_CGROUP={int(self.cgroup_id)}ULL")
        if self.syscalls:
            flags.append("-DFILTER_NR")
        return flags


def tracefs() -> Path | None:
    for d in TRACEFS:
        if Path(d, "events").is_dir():
            return Path(d)
    return None


def missing_tracepoints(names=TRACEPOINTS) -> list[str]:
    """Which of the tracepoints systrace uses this kernel lacks (checked at run time)."""
    root = tracefs()
    if root is None:
        return list(names)
    return [n for n in names if not (root / "events" / n).is_dir()]


class Tracer:
    """The loaded program; a context manager that detaches on exit."""

    def __init__(self, opts: TraceOptions):
        from ...errors import BpfError
        from ...program import Program     # BCC loads here, not at import

        missing = missing_tracepoints()
        if any(m.startswith("raw_syscalls") for m in missing):
            raise RuntimeError(f"this kernel lacks tracepoint(s) {', '.join(missing)}: "
                               "systrace needs raw_syscalls:sys_enter and sys_exit")
        if opts.follow and "sched/sched_process_fork" in missing:
            raise RuntimeError("this kernel lacks sched:sched_process_fork: cannot follow children")
        if ("sched/sched_process_exit" in missing and not opts.task_storage
                and (opts.latency or not opts.summary)):
            raise RuntimeError("this kernel lacks sched:sched_process_exit (systrace forgets "
                               "an exited thread's state there)")
        self.opts = opts
        self.note = ""
        try:
            self.prog = Program(C_SOURCE.read_text(), cflags=opts.cflags(), name="systrace")
        except BpfError as e:
            if not opts.task_storage:
                raise
            # task storage in tracing programs is a 2021 kernel feature: fall back to a hash
            opts.task_storage = False
            self.note = (f"task storage unavailable ({str(e).splitlines()[0][:80]}): "
                         "the call in progress is kept in a hash by thread id")
            self.prog = Program(C_SOURCE.read_text(), cflags=opts.cflags(), name="systrace")
        try:
            self._fill_maps()
        except BaseException:
            self.prog.close()
            raise

    def _fill_maps(self) -> None:
        o, p = self.opts, self.prog
        for pid in o.pids:
            self.add_pid(pid)
        if o.comm:
            row = p["comm_filter"].Leaf()
            raw = o.comm.encode()[:COMM_LEN - 1]
            ct.memmove(ct.addressof(row), raw, len(raw))
            p["comm_filter"][0] = row
        only = p["only"]
        for name in o.syscalls:
            only[ct.c_uint32(syscalls.number(name))] = ct.c_uint8(1)
        path_arg = p["path_arg"]
        table = syscalls.table()
        by_name = {n: nr for nr, n in table.items()}
        for name, idx in decode.PATH_SYSCALLS.items():
            if name in by_name:
                flag = PATH_AT_ENTER if name in decode.EXEC_SYSCALLS else 0
                path_arg[ct.c_uint32(by_name[name])] = ct.c_uint8(idx | flag)

    def add_pid(self, pid: int) -> None:
        if len(self.opts.pids) == 1 and not self.opts.follow:
            if pid != self.opts.pids[0]:
                raise ValueError("this tracer was built for one pid; trace several with follow=True")
            return
        self.prog["pids"][ct.c_uint32(pid)] = ct.c_uint8(1)

    def lost(self) -> int:
        """Events the ring buffer had no room for (stream mode; 0 in summary mode)."""
        if self.opts.summary:
            return 0
        return int(self.prog["lost"][0].value)

    def summary(self) -> dict[str, SyscallStat]:
        """The in-kernel counts, by syscall name (summary mode)."""
        out: dict[str, SyscallStat] = {}
        for k, per_cpu in self.prog["stats"].items():
            name = syscalls.name(k.value)
            out[name] = SyscallStat(name, sum(v.calls for v in per_cpu),
                                    sum(v.errors for v in per_cpu),
                                    sum(v.total_ns for v in per_cpu),
                                    max(v.max_ns for v in per_cpu))
        return out

    def close(self) -> None:
        self.prog.close()

    def __enter__(self) -> "Tracer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------ a command --
def start_stopped(argv: list[str], stderr_fd: int | None = None) -> int:
    """Fork a child that stops itself (SIGSTOP) before execve'ing `argv`.

    The program's path is resolved here, so the child makes exactly one
    execve (as under strace, which also searches PATH itself); the child's
    kill() has returned before it stops, so after `resume` the first call it
    makes is the execve. `stderr_fd`: the child's standard error."""
    path = argv[0] if "/" in argv[0] else shutil.which(argv[0])
    if path is None:
        raise FileNotFoundError(f"{argv[0]}: command not found")
    pid = os.fork()
    if pid == 0:                                  # the child: os calls only
        try:
            if stderr_fd is not None:
                os.dup2(stderr_fd, 2)
            os.kill(os.getpid(), signal.SIGSTOP)
            os.execv(path, argv)
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        raise RuntimeError(f"child {pid} did not stop before its execve")
    return pid


def resume(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def wait(pid: int) -> int:
    """Wait for the child; its exit status (128+signal when killed)."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
