"""Chapter 4 checks: process tree monitor, file latency tracker, memory profiler.

Each check compiles a small C target (ebpf_tutor.labs.targets), starts it under
conditions it controls, and compares what the learner's program recorded
with what the target really did."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..verdict import LabFailed, expect, lab
from ...program import Program, close_all
from ..targets import (TargetDir, blocked_in_read, in_initial_pid_namespace, read_line, stop,
                       thread_states, wait_for)
from ..workload import unique_name
from . import require_table

if TYPE_CHECKING:
    import pandas as pd

EV_FORK, EV_EXEC, EV_EXIT = 1, 2, 3
KIND_NAME = {EV_FORK: "fork", EV_EXEC: "exec", EV_EXIT: "exit"}


def _require_host_pids(lab_id: str) -> None:
    expect(in_initial_pid_namespace(), lab_id,
           "this Python runs in a child pid namespace (a container): BPF reports host pids, "
           "the check's processes see other ones, so they cannot be compared",
           "run the container with --pid=host (as the course's Dockerfile says), "
           "or use the course VM")


# -------------------------------------------------------------------- 4.1 --
def _tree_plan(paths: list[Path], rng: random.Random) -> tuple[list[str], dict[str, int]]:
    """argv for the root, and the exit code of every node by file name.
    paths[0] is the root, paths[1:3] its children, the rest grandchildren."""
    codes = dict(zip((p.name for p in paths), rng.sample(range(1, 120), len(paths))))
    grand = paths[3:]
    split = rng.randrange(1, len(grand))        # each child gets at least one leaf
    leaves = [grand[:split], grand[split:]]
    specs = []
    for child, kids in zip(paths[1:3], leaves):
        specs.append(",".join(f"{p}:{codes[p.name]}" for p in [child, *kids]))
    return [str(paths[0]), str(codes[paths[0].name]), *specs], codes


def _run_tree(prog, argv: list[str]) -> tuple[subprocess.Popen, str, "pd.DataFrame"]:
    """Start the root, collect events until it has exited; its stdout and the events."""
    from ...data import EventCollector
    events = EventCollector(prog, "events")
    root = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 4
        while root.poll() is None and time.monotonic() < deadline:
            events.poll(10)
        out = root.stdout.read().decode() if root.poll() is not None else ""
    finally:
        stop(root)
    for _ in range(3):                       # events of the last exits may still be queued
        events.poll(20)
    df = events.drain()
    _stop_reading(events)
    return root, out, df


def _stop_reading(events) -> None:
    """Close a perf buffer's per-CPU readers while the program is loaded
    (BCC 0.26 would otherwise try at garbage collection, after the map is
    gone, and print a KeyError). Ring buffers need nothing."""
    table = events.table
    for cpu in list(getattr(table, "_open_key_fds", {})):
        del table[cpu]


@lab("4.1", "process tree monitor (fork/exec/exit)")
def check_process_tree(program: str) -> str:
    """A root forks 2 children from a second thread, they exec fresh names and
    fork/exec 4 leaves between them. Every process prints getpid() and
    getppid(); the ring buffer `events` must hold one fork, one exec and one
    exit per process, with the right parent, name and exit code."""
    _require_host_pids("4.1")
    rng = random.Random()
    with TargetDir() as td:
        exe = td.build("tree_node")
        paths = [td.copy(exe, unique_name("ebt")) for _ in range(7)]
        argv, codes = _tree_plan(paths, rng)
        try:
            with Program(program, name="lab 4.1") as prog:
                table = require_table(prog, "events", "4.1",
                                      "declare it: BPF_RINGBUF_OUTPUT(events, 64);")
                expect(type(table).__name__ in ("RingBuf", "PerfEventArray"), "4.1",
                       f"`events` is a {type(table).__name__}, not a ring buffer",
                       "declare it with BPF_RINGBUF_OUTPUT(events, 64);")
                root, out, df = _run_tree(prog, argv)
        finally:
            close_all()
    truth: dict[int, tuple[int, str]] = {}
    for line in out.splitlines():
        pid, ppid, path = line.split(maxsplit=2)
        truth[int(pid)] = (int(ppid), Path(path).name)
    expect(len(truth) == len(paths) and root.pid in truth, "4.1",
           f"the check's process tree did not run fully ({len(truth)} of {len(paths)} processes "
           "reported); this is not your fault, run the check again")
    fields = {"kind", "pid", "ppid", "exit_code", "comm"}
    expect(not df.empty, "4.1", "the ring buffer `events` stayed empty while 7 processes were "
           "forked, exec'd and exited",
           "each probe must fill an event_t and call events.ringbuf_output(&ev, sizeof(ev), 0)")
    expect(fields <= set(df.columns), "4.1",
           f"events have the fields {sorted(df.columns)}, the check needs {sorted(fields)}",
           "keep struct event_t as the lab gives it")
    ours = df[df["pid"].isin(list(truth))]
    for kind in (EV_FORK, EV_EXEC, EV_EXIT):
        expect((ours["kind"] == kind).any(), "4.1",
               f"no {KIND_NAME[kind]} event (kind {kind}) about any of the check's 7 processes",
               _hint_41(kind, "missing"))
    for pid, (ppid, name) in truth.items():
        for kind in (EV_FORK, EV_EXEC, EV_EXIT):
            rows = ours[(ours["kind"] == kind) & (ours["pid"] == pid)]
            what = f"{KIND_NAME[kind]} event"
            expect(len(rows) == 1, "4.1",
                   f"process {name} (pid {pid}) has {len(rows)} {what}s, it should have exactly 1",
                   _hint_41(kind, "count"))
            ev = rows.iloc[0]
            expect(int(ev["ppid"]) == ppid, "4.1",
                   f"the {what} of {name} (pid {pid}) gives parent {int(ev['ppid'])}; its real "
                   f"parent, by getppid(), is {ppid}", _hint_41(kind, "ppid", int(ev["ppid"])))
            if kind in (EV_EXEC, EV_EXIT):
                expect(ev["comm"] == name, "4.1",
                       f"the {what} of pid {pid} gives the name {ev['comm']!r}, it is {name!r}",
                       "take the name with bpf_get_current_comm() in the exec/exit probe: by "
                       "then the process carries its new program's name")
            if kind == EV_EXIT:
                expect(int(ev["exit_code"]) == codes[name], "4.1",
                       f"{name} exited with code {codes[name]}; your exit event says "
                       f"{int(ev['exit_code'])}", _hint_41(kind, "code"))
    return (f"{len(truth)} processes: one fork, exec and exit event each, with the right "
            "parents (forked from a thread), names and exit codes")


def _hint_41(kind: int, problem: str, seen: int = -1) -> str:
    if problem == "missing":
        return {EV_FORK: "fill ev.pid = args->child_pid in the sched_process_fork probe",
                EV_EXEC: "fill ev.pid with the current process id in the sched_process_exec probe",
                EV_EXIT: "fill ev.pid with the current process id in the sched_process_exit "
                         "probe"}[kind]
    if problem == "count":
        if kind == EV_EXIT:
            return ("sched_process_exit fires once per exiting thread: report only the main "
                    "thread ((u32)id == id >> 32), and use the process id (id >> 32) as pid")
        return "send exactly one event per tracepoint hit, with pid = the process it is about"
    if problem == "code":
        return "task->exit_code is the wait() status: the exit code is (exit_code >> 8) & 0xff"
    if seen == 0:
        return ("the parent reads 0: are the kernel headers right for this kernel? Run "
                "`ebpf-tutor headers`, and read task->real_parent->tgid")
    if kind == EV_FORK:
        return ("in sched_process_fork the current task is the parent: its process id is "
                "bpf_get_current_pid_tgid() >> 32 (args->parent_pid is the forking *thread*)")
    return ("read the parent's process id: task->real_parent->tgid (->pid is the id of the "
            "thread that forked, which differs when a process forks from a second thread)")


# -------------------------------------------------------------------- 4.2 --
MIN_SLOT = 7          # slot 7 holds 64..127 ns: nothing below is a real openat/read
BLOCKED_S = 0.02      # the target's second thread waits at least this long in read()


def _hist(prog, name: str) -> dict[int, int]:
    table = require_table(prog, name, "4.2", f"declare it: BPF_HISTOGRAM({name});")
    counts: dict[int, int] = {}
    for k, v in table.items():
        counts[int(k.value)] = counts.get(int(k.value), 0) + int(v.value)
    return {s: c for s, c in counts.items() if c}


def _start_readers(exe: Path, folder: Path, nfiles: int, reads: int, chunk: int):
    argv = [str(exe), str(folder), str(nfiles), str(reads), str(chunk)]
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        if read_line(p) != "ready":
            raise RuntimeError("the check's file reader did not start")
    return procs


def _drive_readers(procs) -> int:
    """Run the protocol of targets.FILE_READER_C; returns the wall time in ns."""
    t0 = time.monotonic_ns()
    for p in procs:
        p.send_signal(signal.SIGUSR1)          # start the thread that blocks in read()
    for p in procs:
        blocked = wait_for(lambda: any(blocked_in_read(p.pid, tid)
                                       for tid in thread_states(p.pid) if tid != p.pid))
        if not blocked:
            raise RuntimeError("the check's file reader did not block as planned")
    for p in procs:
        p.send_signal(signal.SIGUSR1)          # open and read the files
    for p in procs:
        if read_line(p) != "done":
            raise RuntimeError("the check's file reader did not finish its reads")
    time.sleep(BLOCKED_S)
    for p in procs:
        p.stdin.write(b"finish\n")            # ends the blocked read()
        p.stdin.flush()
    for p in procs:
        p.wait(timeout=3)
    return time.monotonic_ns() - t0


@lab("4.2", "file latency tracker (openat/read histograms)")
def check_file_latency(program: str) -> str:
    """A target and a decoy each open N marker files and read each R times,
    while a second thread of each waits in one long read(). The histograms
    `open_lat` and `read_lat`, compiled with -DTARGET_TGID=<target pid>, must
    hold exactly N and N*R + 1 plausible latencies."""
    _require_host_pids("4.2")
    rng = random.Random()
    nfiles, reads, chunk = rng.randrange(8, 17), rng.randrange(2, 6), rng.choice([512, 1024, 4096])
    with TargetDir() as td:
        exe = td.build("file_reader")
        folder = td.path / unique_name("ebt-files-")
        folder.mkdir()
        for i in range(nfiles):
            (folder / f"f{i}").write_bytes(os.urandom(reads * chunk))
        procs = _start_readers(exe, folder, nfiles, reads, chunk)
        target, decoy = procs
        try:
            with Program(program, name="lab 4.2", cflags=[f"-DTARGET_TGID={target.pid}"]) as prog:
                wall_ns = _drive_readers(procs)
                opens, rd = _hist(prog, "open_lat"), _hist(prog, "read_lat")
        finally:
            for p in procs:
                stop(p)
            close_all()
    want_opens, want_reads = nfiles, nfiles * reads + 1
    for name, hist in (("open_lat", opens), ("read_lat", rd)):
        odd = [s for s in hist if not 0 <= s < 64]
        expect(not odd, "4.2", f"`{name}` has keys {odd[:3]}, which are not log2 slots",
               f"count each latency at its slot: {name}.increment(bpf_log2l(ns));")
    n_open, n_read = sum(opens.values()), sum(rd.values())
    who = f"the target (pid {target.pid}; the decoy was pid {decoy.pid})"
    slots_hint = ("; count with {0}.increment(bpf_log2l(ns)): a BPF_HISTOGRAM has 64 slots, "
                  "and a larger key (a raw latency) is dropped without a word")
    expect(n_open > 0, "4.2", f"`open_lat` is empty: no openat of {who} was timed",
           "attach sys_enter_openat and sys_exit_openat (glibc's open() is the openat system "
           "call), store the time at enter" + slots_hint.format("open_lat"))
    expect(n_read > 0, "4.2", f"`read_lat` is empty: no read of {who} was timed",
           "attach sys_enter_read and sys_exit_read, store the time at enter"
           + slots_hint.format("read_lat"))
    for what, got, want in (("openat", n_open, want_opens), ("read", n_read, want_reads)):
        if got >= 2 * want - 1:
            raise LabFailed("4.2", f"you counted {got} {what} calls; {who} made {want}, and the "
                            f"decoy as many again", "keep only the process TARGET_TGID: "
                            "if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID) return 0;")
        if what == "read" and got == want - 1:
            raise LabFailed("4.2", f"you counted {got} reads; the target made {want}: the one "
                            "that a second thread began first and finished last is missing",
                            "filter by process (id >> 32 == TARGET_TGID) but key the start "
                            "times by thread ((u32)id): two threads of one process can be "
                            "inside read() at the same time")
        expect(got == want, "4.2", f"you counted {got} {what} calls; {who} made exactly {want}",
               "count once per sys_exit_* that has a matching entry time of the same thread, "
               "in both histograms")
    low = min(min(opens), min(rd))
    expect(low >= MIN_SLOT, "4.2",
           f"some latencies are under {1 << max(low, 0)} ns (slot {low}), too fast for a system "
           "call", "record nanoseconds: bpf_ktime_get_ns() at exit minus the one at entry, "
           "without dividing")
    high = max(max(opens), max(rd))
    too_long = 1 << (high - 1)
    expect(too_long <= wall_ns, "4.2",
           f"a latency of at least {too_long / 1e6:.1f} ms, longer than the whole run "
           f"({wall_ns / 1e6:.1f} ms)", "subtract the entry time of the same thread from the "
           "exit time (now - start), in nanoseconds")
    expect((1 << max(rd)) > BLOCKED_S * 1e9, "4.2",
           f"the read that waited at least {BLOCKED_S * 1000:.0f} ms shows as under "
           f"{(1 << max(rd)) / 1e6:.2f} ms", "keep nanoseconds all the way: bpf_log2l(ns)")
    return (f"{want_opens} opens and {want_reads} reads of the target timed (decoy ignored), "
            f"latencies from 2^{low - 1} ns to 2^{high} ns")


# -------------------------------------------------------------------- 4.3 --
def _alloc_plan(rng: random.Random) -> tuple[str, list[int], list[int]]:
    """Operations for targets.ALLOCATOR_C, the block sizes and the freed blocks.

    Sizes are small, medium, or large enough for glibc to mmap them. Frees
    are interleaved with later mallocs, and the last operation is a malloc
    of a block that stays: so a probe that sees each malloc one call late,
    or takes the address from the wrong place, cannot add up right."""
    sizes = [rng.choice([rng.randrange(1, 4096), rng.randrange(4096, 100_000),
                         rng.randrange(200_000, 600_000)]) for _ in range(rng.randrange(8, 15))]
    last = len(sizes) - 1
    frees = rng.sample(range(last), rng.randrange(2, last))
    if sizes[last] == sum(sizes[j] for j in frees):
        sizes[last] += 1     # else "every block but the last, no frees" would be the right total
    ops = [("m", i, i) for i in range(len(sizes))]            # (kind, block, position)
    for j in frees:                          # after its own malloc, before the last one
        ops.append(("f", j, rng.uniform(j + 0.5, last - 0.5)))
    ops.sort(key=lambda op: op[2])
    text = ",".join(f"m{sizes[b]}" if kind == "m" else f"f{b}" for kind, b, _ in ops)
    return text, sizes, frees


@lab("4.3", "memory profiler (uprobes on malloc/free)")
def check_memory_profiler(program: str, attach) -> str:
    """A target and a decoy malloc blocks of random sizes and free some.
    After attach(prog, target_pid), `outstanding` must give exactly the
    target's allocated-minus-freed bytes, and nothing for other processes."""
    _require_host_pids("4.3")
    rng = random.Random()
    (ops, sizes, frees), (decoy_ops, _, _) = _alloc_plan(rng), _alloc_plan(rng)
    want = sum(sizes) - sum(sizes[j] for j in frees)
    with TargetDir() as td:
        exe = td.build("allocator")
        procs = [subprocess.Popen([str(exe), o], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                 for o in (ops, decoy_ops)]
        target, decoy = procs
        try:
            for p in procs:
                if read_line(p) != "ready":
                    raise RuntimeError("the check's allocator did not start")
            with Program(program, name="lab 4.3") as prog:
                table = require_table(prog, "outstanding", "4.3",
                                      "declare it: BPF_HASH(outstanding, u32, s64);")
                attach(prog, target.pid)
                for p in procs:
                    p.stdin.write(b"go\n")
                    p.stdin.flush()
                for p in procs:
                    if read_line(p) != "done":
                        raise RuntimeError("the check's allocator did not finish")
                seen = {int(k.value): int(v.value) for k, v in table.items()}
        finally:
            for p in procs:
                stop(p)
            close_all()
    others = sorted(set(seen) - {target.pid})
    if others:
        name = f"{len(others)} other process(es)"
        if decoy.pid in others:
            name += f", among them the check's decoy (pid {decoy.pid})"
        raise LabFailed("4.3", f"`outstanding` has entries for {name}, but only the target "
                        f"(pid {target.pid}) was to be profiled",
                        "pass pid=pid to every attach_uprobe / attach_uretprobe call")
    allocated, freed = sum(sizes), sum(sizes[j] for j in frees)
    expect(target.pid in seen, "4.3",
           f"`outstanding` has nothing for the target (pid {target.pid}), which malloc'd "
           f"{len(sizes)} blocks ({allocated} bytes)",
           "attach on_malloc_enter with attach_uprobe and on_malloc_return with "
           "attach_uretprobe (the address exists only once malloc returns), both on "
           "name=\"c\", sym=\"malloc\"; key outstanding by process id (id >> 32)")
    got = seen[target.pid]
    if got == allocated:
        raise LabFailed("4.3", f"outstanding is {got} bytes: everything the target allocated; "
                        f"it then freed {len(frees)} blocks ({freed} bytes), so {want} remain",
                        "in on_free, look the address (PT_REGS_PARM1) up in `blocks` and "
                        "subtract its size from outstanding[pid]; attach on_free to sym=\"free\"")
    expect(got == want, "4.3",
           f"outstanding for the target is {got} bytes; it malloc'd {allocated} bytes in "
           f"{len(sizes)} blocks and freed {freed}, so {want} remain",
           "the size is malloc's first argument (PT_REGS_PARM1) at entry; the address is its "
           "return value (PT_REGS_RC) in the uretprobe; free's address is its PT_REGS_PARM1")
    return (f"{want} bytes outstanding = {allocated} malloc'd - {freed} freed, in the target "
            "only")
