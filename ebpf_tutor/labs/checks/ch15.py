"""Chapter 15 checks: the system call tracer's kernel filter, its argument
decoder, and its in-kernel `-c` summary.

Each check runs processes it controls: copies of a small C program under
fresh names (and decoys whose names start like the target's), in a scratch
cgroup and outside it; `openat` calls with known flags, modes, paths and
failures; a two-thread process with known numbers of calls and a read that
blocks for a known time. It compares what the learner's program recorded.
"""
from __future__ import annotations

import ctypes as ct
import errno
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ...events import RingBufferConsumer
from ...kernel import arch
from ...overhead import compiled_c
from ...program import Program, close_all
from ...sandbox.cgroup import ScratchCgroup
from ..verdict import LabFailed, expect, lab
from ..workload import Child, GatedChild, unique_name
from . import require_table

# getppid N times, then K children that each call getppid M times
FORKER_C = r"""
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]), kids = atoi(argv[2]), m = atoi(argv[3]);
    for (int i = 0; i < n; i++) syscall(SYS_getppid);
    for (int k = 0; k < kids; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < m; i++) syscall(SYS_getppid);
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
    }
    return 0;
}
"""


def _forker() -> Path:
    return compiled_c("ch15-check-forker", FORKER_C)


# -------------------------------------------------------------------- 15.1 --
class FilterEvent(ct.Structure):
    _fields_ = [("pid", ct.c_uint32), ("nr", ct.c_uint32), ("cgroup", ct.c_uint64),
                ("comm", ct.c_char * 16)]


def _set_filters(prog: Program, comm: str, cgroup: int) -> None:
    row = prog["comm_filter"].Leaf()
    raw = comm.encode()[:15]
    ct.memmove(ct.addressof(row), raw + b"\0" * (16 - len(raw)), 16)
    prog["comm_filter"][0] = row
    prog["cgroup_filter"][0] = ct.c_uint64(cgroup)


class _Collector:
    """Every event the learner's ring buffer delivers, through the course's consumer."""

    def __init__(self, prog: Program):
        self.batches: list[np.ndarray] = []
        self.rb = RingBufferConsumer(prog, "events", ctype=FilterEvent, frames=False,
                                     handler=self.batches.append, overflow="drop",
                                     decode_strings=False).start()

    def take(self) -> np.ndarray:
        # a filter that lets everyone in is never idle: give up waiting after a while
        self.rb.wait_idle(timeout=1.0)
        out = np.concatenate(self.batches) if self.batches else np.zeros(0, FilterEvent)
        self.batches.clear()
        return out

    def close(self) -> None:
        self.rb.close(drain=False)


def _comm(e) -> str:
    return bytes(e["comm"]).split(b"\0", 1)[0].decode(errors="replace")


@lab("15.1", "kernel filter: by command name and cgroup")
def check_kernel_filter(program: str) -> str:
    """Three rounds, filters set through `comm_filter` and `cgroup_filter`:
    a name only (the target, a decoy named like it plus one letter, one of
    the same length with another last letter, another name), a cgroup only (the same program inside a scratch cgroup and
    outside), both (the target's name inside, the same name outside, a decoy
    inside). Only the target's events may reach the ring buffer, all of them."""
    nr_getppid = arch.syscall_nr("getppid")
    target = unique_name("t") + "-tgt"                  # 11 characters
    # decoys: one letter longer; the same length, the last letter different;
    # another name
    decoys = [target + "x", target[:-1] + "x", unique_name("d")]
    binary = _forker()                  # compiled (once) before anything is traced
    folder = Path(tempfile.mkdtemp(prefix="ebt-ch15-"))
    for name in [target, *decoys]:
        shutil.copy(binary, folder / name)

    def run(name: str, cg: ScratchCgroup | None = None) -> int:
        n, kids, m = random.randint(3, 9), random.randint(1, 3), random.randint(2, 5)
        argv = [str(folder / name), str(n), str(kids), str(m)]
        out = cg.run(argv) if cg is not None else subprocess.run(argv, capture_output=True)
        if out.returncode != 0:
            raise RuntimeError(f"the check's workload failed: {argv} exited {out.returncode}")
        return n + kids * m

    def judge(ev: np.ndarray, round_: str, want: int, ok) -> None:
        strays = [e for e in ev if not ok(e)]
        if strays:
            names = sorted({_comm(e) for e in strays})[:5]
            raise LabFailed("15.1", f"round '{round_}': {len(strays)} events of processes the "
                            f"filter should have stopped reached user space ({', '.join(names)})",
                            "wanted() must return 0 unless the comm equals comm_filter's (all "
                            "16 bytes, up to the end of the string) and the cgroup id equals "
                            "cgroup_filter's; a filter left empty (\"\" or 0) lets everyone in")
        got = int(sum(1 for e in ev if e["nr"] == nr_getppid))
        expect(got == want, "15.1", f"round '{round_}': the target made {want} getppid calls "
               f"(its children too); the ring buffer had {got}",
               "a filter left empty (comm \"\" or cgroup 0) must let everyone in; compare the "
               "whole name" if got < want else "emit one event per call, at sys_enter")

    try:
        with Program(program, name="lab 15.1") as prog, ScratchCgroup("ch15") as cg:
            require_table(prog, "comm_filter", "15.1", "BPF_ARRAY(comm_filter, struct comm_t, 1);")
            require_table(prog, "cgroup_filter", "15.1", "BPF_ARRAY(cgroup_filter, u64, 1);")
            col = _Collector(prog)
            try:
                _set_filters(prog, target, 0)
                col.take()
                want = run(target)
                for d in decoys:
                    run(d)
                judge(col.take(), "by name", want, lambda e: _comm(e) == target)

                _set_filters(prog, "", 0)           # a window for the switch, then drop it
                _set_filters(prog, "", cg.id)
                col.take()
                run(decoys[2])
                want = run(decoys[2], cg)
                judge(col.take(), "by cgroup", want, lambda e: int(e["cgroup"]) == cg.id)

                _set_filters(prog, target, cg.id)
                col.take()
                run(target)
                run(decoys[2], cg)
                want = run(target, cg)
                judge(col.take(), "by name and cgroup", want,
                      lambda e: _comm(e) == target and int(e["cgroup"]) == cg.id)
            finally:
                col.close()
    finally:
        close_all()
        shutil.rmtree(folder, ignore_errors=True)
    return ("only the target's events reached user space, all of them, filtered by name, "
            "by cgroup, and by both (decoys: a longer name, another name, outside the cgroup)")


# -------------------------------------------------------------------- 15.2 --
class OpenEvent(ct.Structure):
    _fields_ = [("pid", ct.c_uint32), ("dfd", ct.c_int32), ("flags", ct.c_uint32),
                ("mode", ct.c_uint32), ("ret", ct.c_int64), ("path", ct.c_char * 128)]


# the flags the check uses, in the order strace names them (strace 6.1)
STRACE_ORDER = ("O_CREAT", "O_EXCL", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_NOFOLLOW",
                "O_CLOEXEC", "O_DIRECTORY")


def _expected_line(dfd: int, path: str, flags: int, mode: int, ret: int) -> str:
    """How strace writes the call (computed independently of the learner's code)."""
    acc = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}[flags & 3]
    names = [acc] + [n for n in STRACE_ORDER if flags & getattr(os, n)]
    args = ["AT_FDCWD" if dfd == -100 else str(dfd), f'"{path}"', "|".join(names)]
    if flags & os.O_CREAT:
        args.append("0%02o" % mode)
    res = f"-1 {errno.errorcode[-ret]} ({os.strerror(-ret)})" if ret < 0 else str(ret)
    return f"openat({', '.join(args)}) = {res}"


def _open_plan(folder: Path) -> list[tuple]:
    """(relative to the open folder?, path, flags, mode, errno or None) for calls
    with known results: successes, ENOENT, EEXIST, EISDIR, ENOTDIR."""
    existing = folder / "exists"
    existing.write_text("x")
    (folder / "sub").mkdir()
    plan = [
        (False, existing, os.O_RDONLY, 0, None),
        (False, folder / f"new-{random.randint(100, 999)}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
         random.choice([0o600, 0o640, 0o644]), None),
        (False, existing, os.O_RDWR | os.O_APPEND, 0, None),
        (False, folder / "missing", os.O_RDONLY, 0, errno.ENOENT),
        (False, existing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, errno.EEXIST),
        (False, folder / "sub", os.O_WRONLY, 0, errno.EISDIR),
        (False, existing / "below", os.O_RDONLY, 0, errno.ENOTDIR),
        (False, folder / "sub", os.O_RDONLY | os.O_DIRECTORY, 0, None),
        (True, "exists", os.O_RDONLY | os.O_NONBLOCK, 0, None),
    ]
    random.shuffle(plan)
    return plan


def _decoded(decode, raw: dict) -> str:
    try:
        return decode(dict(raw))
    except NotImplementedError:
        raise LabFailed("15.2", "decode() is not written yet",
                        "return the strace line for the event dict") from None
    except Exception as e:      # noqa: BLE001 - the learner's code: report it, do not crash
        raise LabFailed("15.2", f"decode({raw}) raised {type(e).__name__}: {e}",
                        "decode must handle every event of the list") from None


@lab("15.2", "argument decoder: openat's path, flags, mode and errno")
def check_argument_decoder(program: str, decode) -> str:
    """A fresh process makes openat calls with known directories, paths, flags
    and modes, some failing (ENOENT, EEXIST, EISDIR, ENOTDIR). The program
    must send one event per call with the raw values; `decode(event)` must
    write each as strace does."""
    folder = Path(tempfile.mkdtemp(prefix="ebt-ch15-open-"))
    plan = _open_plan(folder)

    def work() -> None:
        dirfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        for relative, path, flags, mode, _ in plan:
            try:
                os.close(os.open(str(path), flags, mode, dir_fd=dirfd if relative else None))
            except OSError:
                pass
        os.close(dirfd)

    events: list = []
    try:
        with Program(program, name="lab 15.2") as prog:
            require_table(prog, "events", "15.2", "BPF_RINGBUF_OUTPUT(events, 16);")
            require_table(prog, "target", "15.2", "BPF_ARRAY(target, u32, 1);")
            rb = RingBufferConsumer(prog, "events", ctype=OpenEvent, frames=False,
                                    handler=events.extend, overflow="drop",
                                    decode_strings=False).start()
            try:
                with Child(work) as child:
                    prog["target"][0] = ct.c_uint32(child.pid)
                    child.go()
                rb.wait_idle(timeout=5.0)
            finally:
                rb.close(drain=False)
    finally:
        close_all()
        shutil.rmtree(folder, ignore_errors=True)

    # Python's os.open adds O_CLOEXEC (its descriptors are not inherited)
    calls = [(False, folder, os.O_RDONLY | os.O_DIRECTORY, 0, None)] + plan
    expect(len(events) == len(calls), "15.2", f"the process made {len(calls)} openat calls; "
           f"the ring buffer brought {len(events)} events",
           "at sys_enter_openat save the arguments (per thread); at sys_exit_openat reserve "
           "an event, fill it from them and from args->ret, submit it: one per call")
    for ev, (relative, path, flags, mode, err) in zip(events, calls):
        raw = {"pid": int(ev["pid"]), "dfd": int(ev["dfd"]), "flags": int(ev["flags"]),
               "mode": int(ev["mode"]), "ret": int(ev["ret"]),
               "path": bytes(ev["path"]).split(b"\0", 1)[0].decode(errors="replace")}
        path, flags = str(path), flags | os.O_CLOEXEC
        expect(raw["path"] == path, "15.2", f"an event's path is {raw['path']!r}; the call "
               f"opened {path!r}", "read the path with bpf_probe_read_user_str() from the "
               "filename argument you saved at sys_enter")
        expect(raw["flags"] == flags, "15.2", f"the call on {path!r} had flags {flags:#o}; "
               f"the event says {raw['flags']:#o}", "save args->flags at sys_enter_openat")
        expect((raw["ret"] == -err) if err else raw["ret"] >= 0, "15.2",
               f"the call on {path!r} returned {-err if err else 'an fd'}; the event says "
               f"{raw['ret']}", "take the return value from sys_exit_openat's args->ret")
        expect((raw["dfd"] >= 0) if relative else raw["dfd"] == -100, "15.2",
               f"the call on {path!r} was relative to "
               f"{'an open directory' if relative else 'AT_FDCWD (-100)'}; the event says "
               f"dfd {raw['dfd']}", "save args->dfd, a signed int (AT_FDCWD is -100)")
        want = _expected_line(raw["dfd"], path, flags, mode, raw["ret"])
        got = _decoded(decode, raw)
        expect(got == want, "15.2", f"decode() gave\n    {got}\n  strace writes\n    {want}",
               "O_RDONLY is 0: name the access mode from flags & O_ACCMODE; give the mode only "
               "with O_CREAT, in octal; a failure is -1 ERRNAME (message)")
    return f"{len(calls)} openat calls recorded and decoded as strace writes them (4 kinds of failure)"


# -------------------------------------------------------------------- 15.3 --
BLOCK_S = 0.06         # how long each thread's read waits for the parent's byte


def _in_read(pid: int, nr_read: int) -> int:
    """How many threads of `pid` are inside read() now (/proc/PID/task/*/syscall)."""
    n = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            n += (task / "syscall").read_text().split()[0] == str(nr_read)
        except (OSError, IndexError):
            pass
    return n


def _release_readers(pid: int, nr_read: int, w: int) -> None:
    """Once both threads block in read() (or after 3 s), wait BLOCK_S more and
    write one byte for each: each read then took at least BLOCK_S."""
    deadline = time.monotonic() + 3.0
    while _in_read(pid, nr_read) < 2 and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(BLOCK_S)
    os.write(w, b"xx")


@lab("15.3", "in-kernel -c summary: calls, errors and latency")
def check_summary(program: str) -> str:
    """A fresh two-thread process: each thread makes known numbers of getppid,
    failing and successful openat, then blocks in read() on a pipe until the
    check writes to it; the process ends with exit_group, which never returns
    (strace -c does not list it). `stats[nr]` must hold the calls and errors
    (exact) and the time spent (the blocking reads: at least their wait)."""
    nrs = {n: arch.syscall_nr(n) for n in ("getppid", "openat", "read", "exit_group")}
    n = {"getppid": random.randint(5, 20), "fail": random.randint(2, 6), "ok": random.randint(2, 5)}
    r, w = os.pipe()
    folder = Path(tempfile.mkdtemp(prefix="ebt-ch15-sum-"))
    ok_path = folder / "f"
    ok_path.write_text("x")

    def work() -> None:
        for _ in range(n["getppid"]):
            os.getppid()
        for _ in range(n["fail"]):
            try:
                os.open(str(ok_path) + ".missing", os.O_RDONLY)
            except OSError:
                pass
        for _ in range(n["ok"]):
            os.close(os.open(ok_path, os.O_RDONLY))
        os.read(r, 1)

    try:
        with Program(program, name="lab 15.3") as prog:
            stats = require_table(prog, "stats", "15.3", "BPF_PERCPU_HASH(stats, u32, struct stat_t);")
            require_table(prog, "target", "15.3", "BPF_ARRAY(target, u32, 1);")
            with GatedChild(work) as child:
                prog["target"][0] = ct.c_uint32(child.pid)
                timer = threading.Thread(target=_release_readers,
                                         args=(child.pid, nrs["read"], w), daemon=True)
                timer.start()
                child.go()
                timer.join()
            rows = {}
            for k, v in stats.items():       # a per-CPU hash gives one value per CPU
                vals = [v] if hasattr(v, "calls") else list(v)
                rows[k.value] = (sum(x.calls for x in vals), sum(x.errors for x in vals),
                                 sum(x.total_ns for x in vals))
    finally:
        close_all()
        os.close(r)
        os.close(w)
        shutil.rmtree(folder, ignore_errors=True)
    expect(bool(rows), "15.3", "`stats` stayed empty while the process made system calls",
           "at sys_exit, find the start time; add to stats[args->id]")
    want = {"getppid": (2 * n["getppid"], 0), "openat": (2 * (n["fail"] + n["ok"]), 2 * n["fail"])}
    for name, (calls, errors) in want.items():
        got = rows.get(nrs[name], (0, 0, 0))
        hint = ("count a call once, when it returns (sys_exit), and only if its start was "
                "recorded" if got[0] != calls else
                "an error is a return value in -4095..-1 (args->ret < 0), not only -1")
        expect(got[0] == calls, "15.3", f"the process called {name} {calls} times (2 threads); "
               f"`stats` says {got[0]}", hint)
        expect(got[1] == errors, "15.3", f"{errors} of its {calls} {name} calls failed; `stats` "
               f"says {got[1]}", hint)
    expect(nrs["exit_group"] not in rows, "15.3", "`stats` lists exit_group: it never returns, "
           "so strace -c does not count it", "count at sys_exit, not at sys_enter")
    reads = rows.get(nrs["read"], (0, 0, 0))
    expect(reads[0] >= 2, "15.3", f"both threads made a read() that returned; `stats` has "
           f"{reads[0]} reads", "key the start time by thread id (the low 32 bits of "
           "bpf_get_current_pid_tgid()): two threads of one process are in calls at once")
    least = 2 * (BLOCK_S - 0.02) * 1e9
    expect(reads[2] >= least, "15.3", f"the two reads waited about {BLOCK_S * 1e3:.0f} ms each "
           f"for the check's byte; `stats` says {reads[2] / 1e6:.1f} ms for all reads",
           "latency = bpf_ktime_get_ns() at sys_exit minus the time saved at sys_enter "
           "(nanoseconds), saved per thread id")
    per_getppid = rows[nrs["getppid"]][2] / max(1, rows[nrs["getppid"]][0])
    expect(0 < per_getppid < 1e6, "15.3", f"getppid took {per_getppid:.0f} ns per call by "
           "`stats`: a fast call should be well under a millisecond",
           "add now - start (a duration), not a timestamp")
    return (f"calls and errors of getppid and openat exact ({sum(c for c, _ in want.values())} "
            "calls, 2 threads), exit_group absent, blocking reads timed")
