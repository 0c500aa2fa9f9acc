"""Chapter 6 checks: system call monitor, run-queue latency, block I/O latency.

Every check makes its own activity (a fresh process's system calls, CPU
contention pinned on one CPU, O_DIRECT reads of a fresh file) and compares the
learner's maps with what the kernel itself says happened: exact syscall
counts, the scheduler's own run-delay accounting (/proc/<pid>/schedstat),
the file's physical sectors (FIEMAP) and the time each read took.
"""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import platform
import select
import random
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from ...data import slot_range
from ..verdict import LabFailed, expect, lab
from ...program import Program, close_all
from ...sandbox.sweep import release_loop_stack
from ..workload import GatedChild, unique_name
from . import has_table


def _log2_slot(value: int) -> int:
    """The slot bpf_log2l() gives: floor(log2(v)) + 1, and 1 for 0 as for 1
    (BCC's helpers.h: bpf_log2l(v) is bpf_log2(v) + 1, and bpf_log2(0) is 0)."""
    return max(1, value.bit_length())


# -------------------------------------------------------------------- 6.1 --
SYSCALL_NRS = {   # the few the check makes, per architecture
    "x86_64": {"getppid": 110, "openat": 257, "close": 3, "umask": 95, "exit_group": 231},
    "aarch64": {"getppid": 173, "openat": 56, "close": 57, "umask": 166, "exit_group": 94},
    "riscv64": {"getppid": 173, "openat": 56, "close": 57, "umask": 166, "exit_group": 94},
    "s390x": {"getppid": 64, "openat": 288, "close": 6, "umask": 60, "exit_group": 248},
    "ppc64le": {"getppid": 64, "openat": 286, "close": 6, "umask": 60, "exit_group": 234},
}


def syscall_numbers() -> dict[str, int]:
    arch = platform.machine()
    if arch not in SYSCALL_NRS:
        raise RuntimeError(f"lab 6.1 does not know the syscall numbers of {arch}")
    return SYSCALL_NRS[arch]


def _syscall_work(ok_path: str, n: dict[str, int]) -> Callable[[], None]:
    """What each thread of the 6.1 workload does."""
    def calls() -> None:
        for _ in range(n["getppid"]):
            os.getppid()
        for _ in range(n["fail"]):
            try:
                os.open(ok_path + ".missing", os.O_RDONLY)
            except OSError:
                pass
        for _ in range(n["ok"]):
            os.close(os.open(ok_path, os.O_RDONLY))
        for _ in range(n["umask"]):
            os.umask(0o022)
    return calls


@lab("6.1", "system call monitor")
def check_syscall_monitor(program: str) -> str:
    """A fresh 2-thread process makes random known numbers of getppid, openat
    (some failing), close and umask, then ends with one exit_group, a call
    that never returns; `counts[{pid, nr}]` must hold exactly those calls and
    errors (a program that counts calls at sys_exit misses the exit_group)."""
    nrs = syscall_numbers()
    n = {k: random.randint(lo, hi) for k, lo, hi in
         [("getppid", 5, 15), ("fail", 2, 6), ("ok", 2, 5), ("umask", 3, 9)]}
    try:
        with Program(program, name="lab 6.1") as prog:
            expect(has_table(prog, "counts"), "6.1", "your program has no map named `counts`",
                   "declare it: BPF_HASH(counts, struct key_t, struct val_t);")

            def snapshot() -> dict[tuple[int, int], tuple[int, int]]:
                return {(k.pid, k.nr): (v.calls, v.errors) for k, v in prog["counts"].items()}

            with tempfile.NamedTemporaryFile(prefix="ebt-sc-") as f, \
                    GatedChild(_syscall_work(f.name, n)) as child:
                pid = child.pid
                before = snapshot()
                tid = child.go()
            after = snapshot()
    finally:
        close_all()
    table = {k: (c - before.get(k, (0, 0))[0], e - before.get(k, (0, 0))[1])
             for k, (c, e) in after.items()}
    want = {  # syscall -> (calls, errors), for the 2 threads together
        "getppid": (2 * n["getppid"], 0),
        "openat": (2 * (n["fail"] + n["ok"]), 2 * n["fail"]),
        "close": (2 * n["ok"], 0),
        "umask": (2 * n["umask"], 0),
        "exit_group": (1, 0),    # the child's os._exit(): enters, never returns
    }
    expect(bool(table), "6.1", "`counts` stayed empty while a process made system calls",
           "attach to raw_syscalls:sys_enter (TRACEPOINT_PROBE(raw_syscalls, sys_enter)) and "
           "update `counts` there")
    pids = {p for p, _ in table}
    if pid not in pids:
        if tid in pids:
            raise LabFailed("6.1", f"`counts` has the workload's second thread {tid} as a pid, "
                            f"but not the process {pid}",
                            "the pid is the high half: bpf_get_current_pid_tgid() >> 32")
        raise LabFailed("6.1", f"process {pid} made {sum(c for c, _ in want.values())} system "
                        "calls of the 4 kinds the check counts, but `counts` has no key with "
                        "that pid", "key.pid = bpf_get_current_pid_tgid() >> 32")
    expect(tid not in pids, "6.1", f"`counts` has entries for {tid}, the workload's second "
           f"thread: count per process ({pid}), not per thread",
           "the pid is the high half: bpf_get_current_pid_tgid() >> 32")
    for name, (calls, errors) in want.items():
        got_calls, got_errors = table.get((pid, nrs[name]), (0, 0))
        if name == "exit_group":
            hint = ("exit_group never returns, so it never reaches sys_exit: count calls at "
                    "sys_enter" if got_calls == 0 else "count once per call, at sys_enter")
        elif got_calls == 2 * calls:
            hint = "count calls at sys_enter only, not again at sys_exit"
        else:
            hint = "count once per call, at sys_enter, keyed by args->id"
        expect(got_calls == calls, "6.1", f"process {pid} called {name} (nr {nrs[name]}) "
               f"{calls} times; `counts` says {got_calls}", hint)
        expect(got_errors == errors, "6.1", f"{errors} of the {calls} {name} calls failed; "
               f"`counts` says {got_errors}",
               "at raw_syscalls:sys_exit, args->ret < 0 is an error (-errno, e.g. -2), "
               "not only -1" if got_errors < errors else
               "count an error only when args->ret < 0")
    return (f"exact calls and errors for getppid, openat, close, umask and exit_group of a fresh "
            f"2-thread process ({sum(c for c, _ in want.values())} calls)")


# -------------------------------------------------------------------- 6.2 --
PR_SET_NAME = 15


def _contender(name: str, busy: bool, seconds: float, done_fd: int, release_fd: int) -> None:
    """Child body: run on CPU 0 only, busy or busy/sleep, say so on done_fd,
    then block until released."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode(), 0, 0, 0)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not busy:      # runs shorter than a time slice: most waits follow a wakeup
                spin = time.monotonic() + 0.0003
                while time.monotonic() < spin:
                    pass
                time.sleep(0.001)
        os.write(done_fd, b"d")
        os.read(release_fd, 1)
    finally:
        os._exit(0)


def _wait_blocked(pids: Iterable[int], done_fd: int, timeout: float = 15.0) -> None:
    """Wait until every contender has said it is done and sleeps on the pipe:
    from then on neither the scheduler nor the learner's map counts anything
    more for it, however long a busy machine took to get there."""
    pids, deadline = list(pids), time.monotonic() + timeout
    done = 0
    while done < len(pids) and select.select([done_fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
        done += len(os.read(done_fd, len(pids) - done))
    while any(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "S"
              for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.005)


def _schedstat(pid: int) -> tuple[int, int, int]:
    """(ns on CPU, ns waiting on a run queue, times run) from the kernel's own accounting."""
    on_cpu, run_delay, pcount = (int(x) for x in Path(f"/proc/{pid}/schedstat").read_text().split())
    return on_cpu, run_delay, pcount


@lab("6.2", "run-queue latency")
def check_runqlat(program: str) -> str:
    """4 processes with a fresh name contend for CPU 0 (2 always busy, 2 that
    run 0.3 ms then sleep 1 ms) for 1 s. For each, the learner's per-pid log2
    histogram must count about as many waits as the scheduler ran it, and
    its buckets must bracket the run delay the kernel accounted."""
    name = unique_name("ebtrq")
    release_r, release_w = os.pipe()
    done_r, done_w = os.pipe()
    pids: dict[int, str] = {}
    try:
        with Program(program, name="lab 6.2") as prog:
            expect(has_table(prog, "dist"), "6.2", "your program has no map named `dist`",
                   "declare it: BPF_HISTOGRAM(dist, struct hist_key_t);")
            saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {min(saved)})          # children inherit one CPU
            try:
                for i in range(4):
                    kind = "busy" if i % 2 else "sleepy"
                    pid = os.fork()
                    if pid == 0:
                        _contender(name, kind == "busy", 1.0, done_w, release_r)
                    pids[pid] = kind
            finally:
                os.sched_setaffinity(0, saved)
            _wait_blocked(pids, done_r)                      # they run, then block on the pipe
            stats = {pid: _schedstat(pid) for pid in pids}
            rows = [(k.pid, k.slot, v.value) for k, v in prog["dist"].items()]
    finally:
        os.write(release_w, b"x" * len(pids))
        for pid in pids:
            os.waitpid(pid, 0)
        for fd in (release_r, release_w, done_r, done_w):
            os.close(fd)
        close_all()
    expect(bool(rows), "6.2", "`dist` stayed empty while 4 processes fought for one CPU",
           "on sched_switch, look up the start time of args->next_pid and add the latency "
           "to dist")
    details = []
    for pid, kind in pids.items():
        _, run_delay, pcount = stats[pid]
        mine = {slot: c for p, slot, c in rows if p == pid and c}
        count = sum(mine.values())
        expect(count > 0, "6.2", f"process {pid} ({kind}, named {name}) waited "
               f"{run_delay / 1e6:.0f} ms in the run queue over {pcount} runs, but `dist` has "
               "no bucket for its pid", "key the histogram by the task that is switched in "
               "(args->next_pid)" if kind == "sleepy" else
               "a task switched out while still runnable waits again at once: at "
               "sched_switch, when prev_state has no sleeping bit ((prev_state & 0xff) == 0), "
               "record a start time for args->prev_pid")
        expect(count >= 0.8 * pcount - 3 and count <= pcount + 3, "6.2",
               f"the scheduler ran process {pid} ({kind}) {pcount} times, each time after a "
               f"wait in the run queue; `dist` counts {count} waits for it",
               "record a start time at sched_wakeup, sched_wakeup_new AND when a task is "
               "switched out still runnable ((prev_state & 0xff) == 0)" if count < pcount else
               "count one latency per switch-in, and delete the start time once used")
        low = sum(c * slot_range(s)[0] for s, c in mine.items()) * 1000
        high = sum(c * slot_range(s)[1] for s, c in mine.items()) * 1000
        expect(0.85 * low - 1e6 <= run_delay <= 1.15 * high + 1e6, "6.2",
               f"the kernel says process {pid} ({kind}) waited {run_delay / 1e6:.1f} ms in the "
               f"run queue; your buckets say between {low / 1e6:.1f} and {high / 1e6:.1f} ms",
               "slot = bpf_log2l(latency in MICROseconds): (now - start) / 1000")
        details.append(f"{count}/{pcount}")
    return (f"4 processes contending for one CPU: waits counted {', '.join(details)} "
            "(yours/scheduler's), buckets consistent with the kernel's run delay")


# -------------------------------------------------------------------- 6.3 --
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 1


def _fiemap(fd: int) -> list[tuple[int, int, int]]:
    """The file's extents: (logical byte, physical byte, length)."""
    count = 32
    buf = bytearray(32 + 56 * count)
    struct.pack_into("QQIIII", buf, 0, 0, 2**64 - 1, FIEMAP_FLAG_SYNC, 0, count, 0)
    fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
    mapped = struct.unpack_from("I", buf, 20)[0]
    return [struct.unpack_from("QQQ", buf, 32 + 56 * i) for i in range(mapped)]


def _disk_of(st_dev: int) -> tuple[int, int] | None:
    """(kernel dev_t of the whole disk as block tracepoints show it, partition
    start in sectors) for a file system on a disk or a partition; None for
    anything else (device mapper, overlay, tmpfs)."""
    major, minor = os.major(st_dev), os.minor(st_dev)
    sysdir = Path(f"/sys/dev/block/{major}:{minor}")
    if major == 0 or not sysdir.exists() or (sysdir / "dm").exists():
        return None
    start = 0
    if (sysdir / "partition").exists():
        start = int((sysdir / "start").read_text())
        major, minor = (int(x) for x in (sysdir.resolve().parent / "dev").read_text().split(":"))
    return (major << 20) | minor, start


def _scratch_dir() -> Path | None:
    """A folder on a real block device (not tmpfs or overlay)."""
    for cand in ("/var/tmp", "/tmp", str(Path.home())):
        try:
            if _disk_of(os.stat(cand).st_dev) is not None and os.access(cand, os.W_OK):
                return Path(cand)
        except OSError:
            continue
    return None


def _direct_reads(path: Path, n: int) -> tuple[int, list[int], list[int]]:
    """Write a fresh file at `path`, fsync it, read n blocks back with O_DIRECT
    (each a real request to the disk). Returns (disk dev_t, sectors read, ns
    each read took). The caller deletes the file."""
    bs = 4096
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.write(fd, os.urandom(2 * n * bs))
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, bs)                           # page-aligned, as O_DIRECT wants
    try:
        extents = _fiemap(fd)
        dev, part_start = _disk_of(os.fstat(fd).st_dev)
        sectors, took = [], []
        for i in range(n):
            off = 2 * i * bs                          # every other block: no two reads adjacent
            t0 = time.perf_counter_ns()
            os.preadv(fd, [buf], off)
            took.append(time.perf_counter_ns() - t0)
            phys = next(p + off - lg for lg, p, ln in extents if lg <= off < lg + ln)
            sectors.append(part_start + phys // 512)
    finally:
        buf.close()
        os.close(fd)
    return dev, sectors, took


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def _loop_dev(path: str) -> tuple[str, int]:
    """A fresh loop device over `path`: (its /dev name, dev_t as the block
    tracepoints show it, major << 20 | minor)."""
    node = _run("losetup", "--find", "--show", path)
    st = os.stat(node)
    return node, (os.major(st.st_rdev) << 20) | os.minor(st.st_rdev)


def _same_sector_on_two_devices(folder: Path) -> list[tuple[int, int, int, str]]:
    """One request in flight on loop device A while loop device B serves a
    request at the same sector: (dev, sector, ns user space waited, what).

    A's backing file lives on a small ext4 (on a third loop device, over a
    file in `folder`) that is frozen: A's write is issued to A and stays in
    flight, because the loop driver cannot write to a frozen file system.
    Meanwhile B reads the same sector and completes. Then the file system is
    thawed and A completes. Only files the check creates are touched."""
    work = Path(tempfile.mkdtemp(prefix=f"ebt-{os.getpid()}-bio2-", dir=folder))  # sweep knows it
    outer, mnt = work / "outer.img", work / "mnt"
    loops: list[str] = []
    frozen = False
    sector = 8 * random.randint(1, 200)                  # 4 KiB aligned, inside 1 MiB
    buf = mmap.mmap(-1, 4096)
    buf.write(os.urandom(4096))
    writer = None
    try:
        with open(outer, "wb") as f:
            f.truncate(16 << 20)
        node_c, _ = _loop_dev(str(outer))
        loops.append(node_c)
        _run("mkfs.ext4", "-q", "-F", node_c)
        mnt.mkdir()
        _run("mount", node_c, str(mnt))
        for backing in (mnt / "a", work / "b"):
            with open(backing, "wb") as f:
                f.write(bytes(1 << 20))
        node_a, dev_a = _loop_dev(str(mnt / "a"))
        loops.append(node_a)
        node_b, dev_b = _loop_dev(str(work / "b"))
        loops.append(node_b)
        _run("fsfreeze", "--freeze", str(mnt))
        frozen = True
        took: dict[str, int] = {}

        def write_a() -> None:
            fd = os.open(node_a, os.O_WRONLY | os.O_DIRECT)
            try:
                t0 = time.perf_counter_ns()
                os.pwrite(fd, buf, sector * 512)
                took["a"] = time.perf_counter_ns() - t0
            finally:
                os.close(fd)

        writer = threading.Thread(target=write_a, daemon=True)
        writer.start()
        inflight = Path(f"/sys/block/{Path(node_a).name}/inflight")
        deadline = time.monotonic() + 10
        while inflight.read_text().split() == ["0", "0"]:
            if time.monotonic() > deadline or not writer.is_alive():
                raise RuntimeError("lab 6.3: the write to the loop device over a frozen "
                                   "file system never went in flight")
            time.sleep(0.002)
        fd = os.open(node_b, os.O_RDONLY | os.O_DIRECT)
        try:
            t0 = time.perf_counter_ns()
            os.preadv(fd, [buf], sector * 512)
            took["b"] = time.perf_counter_ns() - t0
        finally:
            os.close(fd)
        _run("fsfreeze", "--unfreeze", str(mnt))
        frozen = False
        writer.join(10)
        if "a" not in took:
            raise RuntimeError("lab 6.3: the write to the thawed loop device did not finish")
        return [(dev_a, sector, took["a"], f"a write to {node_a}, held in flight"),
                (dev_b, sector, took["b"], f"a read of {node_b} meanwhile")]
    finally:
        if frozen:
            subprocess.run(["fsfreeze", "--unfreeze", str(mnt)], capture_output=True)
        if writer is not None:
            writer.join(10)
        release_loop_stack(work, loops[1:], loops[:1])
        buf.close()


@lab("6.3", "block I/O latency")
def check_biolatency(program: str) -> str:
    """A fresh file is written, fsync'ed and read back with O_DIRECT, 6-10
    blocks. Then two loop devices the check creates are busy at the same
    sector at the same time (one request held in flight on the first while
    the second serves one). For each request, `recent[{dev, sector}]` must
    hold a latency no longer than the request took as seen from user space,
    and the log2 histogram `dist` (microseconds) must count each of them in
    the right bucket. A start map keyed by sector alone loses the first
    device's request."""
    folder = _scratch_dir()
    if folder is None:
        raise RuntimeError("lab 6.3 found no folder on a plain disk or partition "
                           "(/var/tmp, /tmp and home are on tmpfs, overlay or device mapper)")
    n = random.randint(6, 10)
    path = folder / f"{unique_name('ebt-bio-')}.dat"
    try:
        with Program(program, name="lab 6.3") as prog:
            for table in ("dist", "recent"):
                expect(has_table(prog, table), "6.3", f"your program has no map named `{table}`",
                       "keep the declarations of the starter: BPF_HISTOGRAM(dist) and the "
                       "`recent` LRU hash")
            dev, sectors, took = _direct_reads(path, n)
            pair = _same_sector_on_two_devices(folder)
            # Read the maps while the file still exists: deleting it lets the
            # filesystem discard those very sectors (mount option `discard`),
            # a request that would overwrite their latencies in `recent`.
            recent = {(k.dev, k.sector): v.value for k, v in prog["recent"].items()}
            dist = {k.value: v.value for k, v in prog["dist"].items() if v.value}
    finally:
        close_all()
        path.unlink(missing_ok=True)
    expect(bool(recent), "6.3", f"`recent` stayed empty while {n} reads went to the disk",
           "at block:block_rq_complete, look up the start time saved at block:block_rq_issue "
           "under the same {dev, sector} key, and store the latency in `recent`")
    ours = [(s, t, recent.get((dev, s))) for s, t in zip(sectors, took)]
    missing = [s for s, _, lat in ours if lat is None]
    expect(not missing, "6.3", f"the check read {n} blocks of its file with O_DIRECT (sectors "
           f"{sectors[0]}...{sectors[-1]} of dev {dev >> 20}:{dev & 0xfffff}); `recent` has "
           f"no latency for {len(missing)} of them",
           "start the clock at block:block_rq_issue (the request goes to the device) and key "
           "both ends by {args->dev, args->sector}")
    for sector, user_ns, lat in ours:
        expect(0 < lat <= user_ns + 20_000, "6.3", f"the read of sector {sector} took "
               f"{user_ns / 1000:.0f} us as seen from user space; `recent` says {lat / 1000:.0f} us",
               "store the latency, bpf_ktime_get_ns() - start, in nanoseconds (not a timestamp)"
               if lat > user_ns else "store the latency in nanoseconds")
    two = [(d, s, t, what, recent.get((d, s))) for d, s, t, what in pair]
    lost = [what for _, _, _, what, lat in two if lat is None]
    expect(not lost, "6.3", f"two devices were busy at sector {pair[0][1]} at the same time "
           f"({pair[0][3]}; {pair[1][3]}); `recent` has no latency for {' and '.join(lost)}",
           "key the start times by device AND sector, {args->dev, args->sector}, at both ends: "
           "with the sector alone, the second device's issue overwrites the first one's start")
    for d, sector, user_ns, what, lat in two:
        expect(0 < lat <= user_ns + 20_000, "6.3", f"{what} (sector {sector}) took "
               f"{user_ns / 1000:.0f} us as seen from user space; `recent` says "
               f"{lat / 1000:.0f} us", "key the start times by {args->dev, args->sector}, "
               "and store the latency in nanoseconds")
    ours += [(s, t, lat) for _, s, t, _, lat in two]
    need: dict[int, int] = {}
    for _, _, lat in ours:
        slot = _log2_slot(lat // 1000)
        need[slot] = need.get(slot, 0) + 1
    for slot, k in sorted(need.items()):
        expect(dist.get(slot, 0) >= k, "6.3", f"{k} of the check's reads took "
               f"{slot_range(slot)[0]}-{slot_range(slot)[1]} us, but `dist` has "
               f"{dist.get(slot, 0)} in that bucket (slot {slot}); it has "
               f"{sum(dist.values())} requests in slots {sorted(dist)}",
               "dist.increment(bpf_log2l(latency_ns / 1000)): the histogram is in microseconds")
    worst = max(lat for _, _, lat in ours) / 1000
    return (f"{n} O_DIRECT reads of a fresh file found by sector, and two loop devices busy "
            f"at one sector at once told apart by dev; latencies up to {worst:.0f} us, each "
            "within its request's time, histogram buckets right")
