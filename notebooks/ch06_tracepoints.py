# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Chapter 6: Tracepoints and raw tracepoints
#
# **After this chapter you will be able to**
#
# * find the tracepoints of a kernel, read their `format` files, and use
#   their fields from a `TRACEPOINT_PROBE`;
# * use raw tracepoints, say what they save and what they cost you in
#   convenience, and measure the difference;
# * instrument the four busiest parts of the kernel through their
#   tracepoints: system calls, the scheduler, the network stack and the
#   block layer;
# * turn pairs of events into latencies and plot them as histograms.

# %% [markdown]
# ## 6.1 What a tracepoint is
#
# A tracepoint is a hook that a kernel developer wrote into the source, at a
# place worth watching, with a declared list of fields (`TRACE_EVENT(...)`).
# When nothing is attached it costs almost nothing: a static branch that is
# never taken. When a BPF program is attached, the kernel fills in the fields
# and calls it.
#
# Compared with a kprobe (Chapter 5), a tracepoint is:
#
# * **stable**: it is part of what kernel developers try not to break. Fields
#   are occasionally added, renamed or removed, but the event and its
#   meaning stay, and each kernel *describes* its own layout in a `format`
#   file, so a program that reads fields by name keeps working;
# * **meaningful**: it sits where the event is complete (a context switch has
#   both tasks, a finished request has its status), not at the top of some
#   function whose arguments you must interpret;
# * **available everywhere**: no `CONFIG_KPROBES`, no BTF needed. That is why
#   this course's CI machine, which has no kprobes, can still run all of this
#   chapter.
#
# The price: you can only watch where someone put a tracepoint.

# %%
import mmap
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from bcc.syscall import syscall_name

import numpy as np

from ebpf_tutor import Program, features, headers, log2_hist_df, overhead, plot_log2_hist
from ebpf_tutor.data import slot_range

EVENTS = Path("/sys/kernel/tracing/events")

# %% [markdown]
# Tracepoints live in tracefs, one directory per category, one per event.
# How many does this kernel have? (The answer changes with the kernel's
# version and build options.)

# %% tags=["nbval-ignore-output"]
per_category = pd.Series({d.name: sum(1 for e in d.iterdir() if e.is_dir())
                          for d in EVENTS.iterdir() if d.is_dir()}).sort_values()
print(f"{per_category.sum()} tracepoints in {len(per_category)} categories")
ax = per_category.tail(15).plot.barh(figsize=(6, 4))
ax.set_xlabel("tracepoints")
plt.tight_layout()

# %% [markdown]
# ## 6.2 The format file
#
# Each event describes its own record. The `common_*` fields come first in
# every event; then the event's own fields, each with its C type, offset and
# size. BCC reads this file when it compiles a `TRACEPOINT_PROBE`, and builds
# the `args` struct from it: `args->filename` is this kernel's layout, never
# a guess.
#
# The `ID` line is the event's number, also the `common_type` of each of its
# records. The kernel hands these numbers out as it registers events, so
# they differ from one kernel build to the next; we print it as `<n>`.

# %%
def tp_format(category: str, event: str) -> pd.DataFrame:
    """The fields of a tracepoint, parsed from its format file."""
    text = (EVENTS / category / event / "format").read_text()
    rows = re.findall(r"field:(.+?);\s*offset:(\d+);\s*size:(\d+);\s*signed:(\d);", text)
    fields = []
    for decl, offset, size, signed in rows:
        name = re.search(r"(\w+)(\[\d*\])?$", decl.strip()).group(1)
        fields.append({"field": name, "declaration": decl.strip(), "offset": int(offset),
                       "size": int(size)})
    return pd.DataFrame(fields)


fmt = (EVENTS / "sched/sched_process_exec/format").read_text()
print(fmt)

# %%
tp_format("sched", "sched_process_exec")

# %% [markdown]
# `filename` is a `__data_loc` field: the record holds only a 32-bit
# locator (offset in the low 16 bits, length in the high 16), and the string
# itself follows the fixed fields. BCC's `TP_DATA_LOC_READ_CONST(dst, field,
# size)` decodes the locator and copies the string.
#
# We copy `/bin/true` under a fresh name, run it twice, and count execs per
# file name.

# %%
EXECS = r"""
struct name_t { char filename[64]; };
BPF_HASH(execs, struct name_t, u64);

TRACEPOINT_PROBE(sched, sched_process_exec) {
    struct name_t key = {};
    TP_DATA_LOC_READ_CONST(&key.filename, filename, sizeof(key.filename));
    execs.increment(key);
    return 0;
}
"""

with tempfile.TemporaryDirectory(prefix="ch06-") as tmp:
    fresh = Path(tmp) / "ch06-hello"
    fresh.write_bytes(Path("/bin/true").read_bytes())
    fresh.chmod(0o755)
    with Program(EXECS) as prog:
        for _ in range(2):
            subprocess.run([str(fresh)], check=True)
        counts = {k.filename.decode(): v.value for k, v in prog["execs"].items()}
print(f"{fresh.name}: exec'd {counts.get(str(fresh), 0)} times")

# %% [markdown]
# ### The stock tools beside ours
#
# Several programs of this chapter are small versions of classic tools that
# Debian ships in `bpfcc-tools`: `execsnoop-bpfcc`, `syscount-bpfcc`,
# `runqlat-bpfcc`, `biolatency-bpfcc`. Where this chapter rebuilds one, we
# run the real tool on the same workload and compare. They compile with the
# kernel headers, like our programs: `headers.activate` points them at the
# tree the course checked against BTF. Each is started, given time to
# attach (it prints `Tracing...` once it has), and stopped with Ctrl-C
# (`SIGINT`), after which it prints its summary.

# %%
headers.activate(headers.ensure(prepare=False))


def start_tool(*argv: str) -> subprocess.Popen:
    """Run a bpfcc tool; return once it says it is tracing."""
    tool = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in tool.stdout:
        if line.startswith("Tracing") or line.startswith("PCOMM"):
            return tool
    raise RuntimeError(f"{argv[0]} stopped before tracing (exit code {tool.wait()})")


def stop_tool(tool: subprocess.Popen) -> str:
    """Ctrl-C, then everything it printed."""
    tool.send_signal(signal.SIGINT)
    return tool.communicate(timeout=60)[0]

# %% [markdown]
# `execsnoop-bpfcc` is the classic exec tracer. BCC 0.26's version attaches
# a kprobe to the `execve` system call's kernel function, so it runs only
# where kprobes do:

# %% tags=["needs-kprobes"]
if features.available("kprobes"):
    with tempfile.TemporaryDirectory(prefix="ch06-") as tmp:
        fresh = Path(tmp) / "ch06-hello"
        fresh.write_bytes(Path("/bin/true").read_bytes())
        fresh.chmod(0o755)
        tool = start_tool("execsnoop-bpfcc")
        for _ in range(2):
            subprocess.run([str(fresh)], check=True)
        time.sleep(0.5)
        lines = stop_tool(tool).splitlines()
    print(f"execsnoop-bpfcc: {sum(fresh.name in line for line in lines)} execs of {fresh.name}")
else:
    print("execsnoop-bpfcc needs kprobes, which this kernel lacks: not run")

# %% [markdown]
# ## 6.3 System calls: `syscalls:*` and `raw_syscalls:*`
#
# Two families cover system calls:
#
# * `syscalls:sys_enter_<name>` / `sys_exit_<name>`: one pair per system call,
#   with typed, named arguments (`args->filename`, `args->flags`) and the
#   return value (`args->ret`) at exit;
# * `raw_syscalls:sys_enter` / `sys_exit`: one pair for *all* of them, with
#   the number (`args->id`) and the six raw arguments (`args->args[i]`).
#
# Attach to one `sys_enter_<name>` to watch one call cheaply; to
# `raw_syscalls` to see everything, then sort by `id`. Numbers depend on
# the architecture: `bcc.syscall.syscall_name(nr)` names them.
#
# To count exactly, we need activity whose pid we know before it starts, as
# in Chapter 5: `Child`, a process that waits until we say go.

# %%
from ebpf_tutor.labs.workload import Child


def some_syscalls():
    for _ in range(7):
        os.getppid()
    for _ in range(3):
        try:
            os.stat("/nonexistent/ch06")
        except FileNotFoundError:
            pass
    subprocess.run(["true"])

# %%
RAW_SYSCALLS = r"""
BPF_HASH(calls, u32, u64);        // syscall number -> calls by the child

TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    if (bpf_get_current_pid_tgid() >> 32 != TARGET_PID)
        return 0;
    u32 nr = args->id;
    calls.increment(nr);
    return 0;
}
"""

child = Child(some_syscalls)
with Program(RAW_SYSCALLS.replace("TARGET_PID", str(child.pid))) as prog:
    child.go()
    by_nr = {k.value: v.value for k, v in prog["calls"].items()}
calls = pd.Series({syscall_name(nr).decode(): n for nr, n in by_nr.items()}).sort_values()
print(f"getppid: {calls['getppid']} calls")

# %% [markdown]
# `syscount-bpfcc` counts system calls the same way, from
# `raw_syscalls:sys_enter`/`sys_exit`; `-p` keeps one process. On a fresh
# child with the same work:

# %%
child = Child(some_syscalls)
tool = start_tool("syscount-bpfcc", "-p", str(child.pid))
child.go()
time.sleep(0.3)
report = stop_tool(tool)
stock = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", report, flags=re.M)}
print(f"syscount-bpfcc: getppid {stock.get('getppid')} calls, newfstatat "
      f"{stock.get('newfstatat')}; ours: {calls['getppid']} and {calls.get('newfstatat')}")

# %% [markdown]
# The rest depends on how Python, glibc and `fork`/`exec` of `true` work on
# this machine: `wait4` for `subprocess`, the `newfstatat` behind
# `os.stat()`, the memory management of the interpreter...

# %% tags=["nbval-ignore-output"]
ax = calls.tail(15).plot.barh(figsize=(6, 4))
ax.set_xlabel("calls by the child")
ax.set_title("system calls of a small Python child")
plt.tight_layout()

# %% [markdown]
# ## 6.4 Raw tracepoints
#
# A classic tracepoint program receives a *copy* of the event's fields,
# laid out by the kernel into a binary record (the one the `format` file
# describes, from which `trace_pipe` prints its text). A **raw tracepoint** program receives the tracepoint's raw C
# arguments instead, as an array of 64-bit values: `ctx->args[i]`. No
# record is built, which makes it cheaper, but you get what the kernel
# function passed: pointers to kernel structures that you must read
# yourself, with the right types for this kernel.
#
# | tracepoint | raw arguments (`ctx->args[...]`) |
# |---|---|
# | `sys_enter` | `struct pt_regs *regs`, `long id` |
# | `sys_exit` | `struct pt_regs *regs`, `long ret` |
# | `sched_switch` | `bool preempt`, `struct task_struct *prev`, `*next`, `unsigned int prev_state` |
# | `sched_wakeup` | `struct task_struct *p` |
# | `block_rq_issue` | `struct request *rq` |
#
# The argument lists are the `TP_PROTO(...)` of each event in
# `include/trace/events/*.h`; the format file does not show them. Use the
# *event* name without its category: `RAW_TRACEPOINT_PROBE(sys_enter)`.
#
# The same count as above, with a raw tracepoint:

# %%
RAW_TP = r"""
BPF_HASH(calls, u32, u64);

RAW_TRACEPOINT_PROBE(sys_enter) {
    if (bpf_get_current_pid_tgid() >> 32 != TARGET_PID)
        return 0;
    u32 nr = ctx->args[1];          // args[0] is the struct pt_regs *
    calls.increment(nr);
    return 0;
}
"""

child = Child(some_syscalls)
with Program(RAW_TP.replace("TARGET_PID", str(child.pid))) as prog:
    child.go()
    raw_by_nr = {k.value: v.value for k, v in prog["calls"].items()}
raw_calls = pd.Series({syscall_name(nr).decode(): n for nr, n in raw_by_nr.items()})
print(f"getppid: {raw_calls['getppid']} calls")

# %% [markdown]
# ### What each costs
#
# We time `getppid()` with nothing attached, then with the same counting
# program attached four ways. The program attached to
# `syscalls:sys_enter_getppid` runs only for `getppid`; the three others run
# for **every** system call on the machine, so they cost everyone, not only
# us.
#
# The timing is chapter 5's: `ebpf_tutor.overhead` makes the calls in a
# tight C loop (a Python loop costs more than the system call and drowns the
# difference) timed by the process's CPU-time clock, sized so that a round
# lasts about 25 ms, best of 5 rounds.
# `added_cost` measures each program right after a baseline, three times,
# and keeps the median difference. Print `overhead.LOOP_C` to read the loop.

# %%
COUNT = "#include <uapi/linux/ptrace.h>\nBPF_ARRAY(n, u64, 1);\n"
VARIANTS = {
    "syscalls:sys_enter_getppid": COUNT + "TRACEPOINT_PROBE(syscalls, sys_enter_getppid) "
                                          "{ n.increment(0); return 0; }",
    "raw_syscalls:sys_enter": COUNT + "TRACEPOINT_PROBE(raw_syscalls, sys_enter) "
                                      "{ n.increment(0); return 0; }",
    "raw tracepoint sys_enter": COUNT + "RAW_TRACEPOINT_PROBE(sys_enter) "
                                        "{ n.increment(0); return 0; }",
}
if os.uname().machine == "x86_64":    # reads the first argument: `di` is x86's register name
    VARIANTS["raw tracepoint sys_enter, reads args"] = COUNT + r"""
RAW_TRACEPOINT_PROBE(sys_enter) {
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    unsigned long first = 0;
    bpf_probe_read_kernel(&first, sizeof(first), &regs->di);
    if (ctx->args[1] != 0xffff || first)
        n.increment(0);
    return 0;
}"""

# %% tags=["nbval-ignore-output"]
added = {label: overhead.added_cost(lambda: Program(src), "getppid")
         for label, src in VARIANTS.items()}
cost = pd.Series(added, name="ns added per getppid()").round(1)
cost.to_frame()

# %% tags=["nbval-ignore-output"]
ax = cost.plot.barh(figsize=(6, 2.5))
ax.set_xlabel("ns added per getppid() call")
plt.tight_layout()

# %% [markdown]
# What to read in the table (the numbers move with the machine's load; rerun
# the cell to see how much; the loop directory is removed at the end):
#
# * the raw tracepoint costs less than the classic `raw_syscalls:sys_enter`:
#   no record is built, the program gets the arguments as they are; reading
#   one argument through `pt_regs` adds a little;
# * `syscalls:sys_enter_getppid` is not the cheap option it looks like. The
#   per-call events are built on the same `sys_enter` hook: once any of them
#   is enabled, every system call of every task takes the tracing path, and
#   for the selected call the kernel copies the call's arguments into a
#   record before the program runs: as many as that call takes (its
#   `nb_args`: none for `getppid`, four for `openat`; the `format` file lists
#   them), where `raw_syscalls:sys_enter` always copies six. Its advantage
#   is elsewhere: the program itself, and its map updates, run only for the
#   calls you asked for.
#
# Chapter 12 measures programs with the kernel's own statistics
# (`bpf_stats`), without a stopwatch around a Python loop.

# %% [markdown]
# ## 6.5 The scheduler
#
# The `sched` category describes the life of tasks: `sched_process_fork`,
# `sched_process_exec`, `sched_process_exit`; their waking up
# (`sched_wakeup`, `sched_wakeup_new`); moving between CPUs
# (`sched_migrate_task`); and every context switch, `sched_switch`.

# %%
tp_format("sched", "sched_switch").iloc[4:]

# %% [markdown]
# `prev_state` says why the previous task left the CPU: the letters of `ps`
# (`S` sleeping, `D` uninterruptible, ...), or `R` when it was still
# runnable, with `R+` marking a task preempted inside the kernel. The
# `print fmt` line of the format file shows the encoding: the state bits,
# and `TASK_REPORT_MAX` (0x100 here) for `R+`:

# %%
fmt = (EVENTS / "sched/sched_switch/format").read_text()
print(re.search(r"\{ 0x0*1, \"S\" \}.*?\"I\" \}", fmt).group(0))

# %% [markdown]
# A child that sleeps 1 ms twenty times leaves the CPU twenty times in state
# `S`:

# %%
SWITCHES = r"""
BPF_HASH(states, u64, u64);       // prev_state -> switches away from the child

TRACEPOINT_PROBE(sched, sched_switch) {
    if (args->prev_pid != TARGET_PID)
        return 0;
    u64 state = args->prev_state;
    states.increment(state);
    return 0;
}
"""

STATE_NAMES = {0: "R", 0x1: "S", 0x2: "D", 0x4: "T", 0x8: "t", 0x10: "X", 0x20: "Z",
               0x40: "P", 0x80: "I", 0x100: "R+"}


def sleep_20_times():
    for _ in range(20):
        time.sleep(0.001)


child = Child(sleep_20_times)
with Program(SWITCHES.replace("TARGET_PID", str(child.pid))) as prog:
    child.go()
    states = {STATE_NAMES.get(k.value, hex(k.value)): v.value for k, v in prog["states"].items()}
print(f"switched out asleep (S): {states.get('S', 0)} times")

# %% [markdown]
# And machine-wide, for a second, while four processes spin on one CPU:

# %%
def spin_on_one_cpu(seconds: float) -> int:
    pid = os.fork()
    if pid == 0:
        os.sched_setaffinity(0, {0})
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        os._exit(0)
    return pid


ALL_SWITCHES = SWITCHES.replace("if (args->prev_pid != TARGET_PID)\n        return 0;\n", "")

# %% tags=["nbval-ignore-output"]
with Program(ALL_SWITCHES) as prog:
    for pid in [spin_on_one_cpu(0.25) for _ in range(4)]:
        os.waitpid(pid, 0)
    rows = {STATE_NAMES.get(k.value, hex(k.value)): v.value for k, v in prog["states"].items()}
pd.Series(rows, name="context switches").sort_values(ascending=False)

# %% [markdown]
# Spinning processes are switched out as `R`: their time slice ran out
# while they ran user code, and the switch happened on the way back to user
# space. `R+` is a task preempted while it ran kernel code; `I` is an idle
# kernel thread going back to sleep, `Z`/`X` tasks exiting. A run-queue
# latency tool must treat `R` and `R+` alike, as "back in the queue at
# once": Lab 6.2 does exactly that.
#
# Lab 6.2 rebuilds `runqlat`. Here is the stock `runqlat-bpfcc` (raw
# tracepoints on `sched_wakeup`, `sched_wakeup_new` and `sched_switch`) on
# the same kind of workload: four processes spinning on one CPU for a
# second, the tool watching one of them (`-p`). The scheduler keeps its own
# count of how many times it ran each task (`/proc/<pid>/schedstat`, third
# number), and each run after the spinners were let go followed a wait in
# the run queue. So the spinners first wait on a pipe to start, and block
# on another when done, to be counted before they exit.

# %%
def spinners(n: int, seconds: float):
    """n processes that will spin on one CPU for `seconds`. Returns their pids
    and go(), which lets them spin, waits until all are done (each then
    blocks on a pipe) and returns a function that releases them."""
    start_r, start_w = os.pipe()
    end_r, end_w = os.pipe()
    done_r, done_w = os.pipe()
    cpu = min(os.sched_getaffinity(0))
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os.sched_setaffinity(0, {cpu})
            os.read(start_r, 1)
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                pass
            os.write(done_w, b"d")
            os.read(end_r, 1)
            os._exit(0)
        pids.append(pid)

    def go():
        os.write(start_w, b"x" * n)
        for _ in range(n):
            os.read(done_r, 1)
        time.sleep(0.05)                              # until each sleeps on the pipe

        def release():
            os.write(end_w, b"x" * n)
            for pid in pids:
                os.waitpid(pid, 0)
            for fd in (start_r, start_w, end_r, end_w, done_r, done_w):
                os.close(fd)
        return release
    return pids, go


def runs(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[2])


pids, go = spinners(4, 1.0)
time.sleep(0.05)                                      # all blocked on the start pipe
before = runs(pids[0])
tool = start_tool("runqlat-bpfcc", "-p", str(pids[0]))
release = go()
ran = runs(pids[0]) - before
report = stop_tool(tool)
release()
waits = sum(int(c) for c in re.findall(r"->\s*\d+\s*:\s*(\d+)", report))
print(f"runqlat-bpfcc counted as many waits as the scheduler ran the spinner "
      f"(within 10%): {abs(waits - ran) <= 0.1 * ran}")

# %% tags=["nbval-ignore-output"]
print(f"scheduler: {ran} runs; runqlat-bpfcc: {waits} waits")
print(report)

# %% [markdown]
# One trap when reading the stock tool: with `-P` (one histogram per
# process) machine-wide, `runqlat-bpfcc` keys its histogram by
# `{pid, bucket}` in a `BPF_HISTOGRAM(dist, pid_key_t)`, and BCC gives such a
# histogram **64 entries** unless told otherwise (`BPF_HISTOGRAM(name,
# key_type=int, size=64)` in BCC's `helpers.h`). On a busy machine the
# entries run out, and the waits of every process that comes later are
# silently not counted. Lab 6.2's starter declares 16384.

# %% [markdown]
# ## 6.6 The network stack
#
# A few of the network tracepoints: `net:netif_receive_skb` and
# `net:net_dev_xmit` (packets in and out of devices), `sock:inet_sock_set_state`
# (TCP state changes, Chapter 5), `tcp:tcp_retransmit_skb`, `tcp:tcp_probe`,
# `udp:udp_fail_queue_rcv_skb`, and `skb:kfree_skb`: a packet was
# **dropped**, with the reason.
#
# Since Linux 5.17 `kfree_skb` carries `reason`, an `enum skb_drop_reason`.
# The names of its values are in the format file's `print fmt`, so we read
# them from there rather than from a header of some other kernel. The list
# grows with each kernel release (even two builds of the same version can
# differ), so we print its size only roughly and look reasons up by name:

# %%
def symbolic_values(category: str, event: str, field: str) -> dict[int, str]:
    """The value names of a __print_symbolic(REC->field, ...) in a format file."""
    fmt = (EVENTS / category / event / "format").read_text()
    block = fmt.split(f"__print_symbolic(REC->{field},", 1)[1]
    return {int(v): name for v, name in re.findall(r"\{\s*(\d+),\s*\"(\w+)\"\s*\}", block)}


DROP_REASONS = symbolic_values("skb", "kfree_skb", "reason")
named = [r for r in ("NOT_SPECIFIED", "NO_SOCKET") if r in DROP_REASONS.values()]
print(f"{'more than 100' if len(DROP_REASONS) > 100 else len(DROP_REASONS)} drop reasons, "
      f"among them {' and '.join(named)}")

# %% [markdown]
# Connecting to a loopback port where nobody listens: the SYN arrives, no
# socket wants it, the kernel answers with a reset and drops the SYN, with
# reason `NO_SOCKET`.
#
# One snag: BCC declares `args->reason` with its C type, `enum
# skb_drop_reason`, and needs the kernel header that defines the enum
# (`net/dropreason-core.h` on this kernel, `linux/skbuff.h` on older ones),
# a slow include. The raw tracepoint sidesteps it: the event's C arguments
# are `(skb, location, reason, ...)`, so the reason is `ctx->args[2]`.

# %%
DROPS = r"""
BPF_HASH(reasons, u32, u64);

RAW_TRACEPOINT_PROBE(kfree_skb) {
    u32 reason = ctx->args[2];
    reasons.increment(reason);
    return 0;
}
"""

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]      # a port nobody listens on
with Program(DROPS) as prog:
    refused = 0
    for _ in range(3):
        try:
            socket.create_connection(("127.0.0.1", closed_port), timeout=1).close()
        except ConnectionRefusedError:
            refused += 1
    drops = {DROP_REASONS.get(k.value, str(k.value)): v.value for k, v in prog["reasons"].items()}
print(f"connection refused {refused} times; NO_SOCKET drops seen: "
      f"{'at least 3' if drops.get('NO_SOCKET', 0) >= 3 else drops.get('NO_SOCKET', 0)}")

# %% tags=["nbval-ignore-output"]
pd.Series(drops, name="drops while we connected").sort_values(ascending=False)

# %% [markdown]
# The program is machine-wide: other reasons in the table are other
# programs' packets. `NOT_SPECIFIED` is a drop whose code path has not been
# given a reason yet.

# %% [markdown]
# ## 6.7 The block layer
#
# A disk request's life: `block_bio_queue` (a bio enters the block layer),
# `block_getrq` (it gets a request), `block_rq_insert` (into the I/O
# scheduler's queue), `block_rq_issue` (to the driver), `block_rq_complete`
# (the device is done). The last two bracket the device's own latency. Their
# fields on this kernel:

# %%
issue, complete = tp_format("block", "block_rq_issue"), tp_format("block", "block_rq_complete")
both = pd.concat([issue.iloc[4:].assign(event="issue"), complete.iloc[4:].assign(event="complete")])
both.pivot_table(index="field", columns="event", values="declaration", aggfunc="first",
                 sort=False).fillna("-")[["issue", "complete"]]

# %% [markdown]
# `rwbs` spells the request's kind: `R` read, `W` write, `D` discard, `F`
# flush, followed by modifiers, `S` sync, `M` metadata, `A` readahead, `F`
# forced unit access. We write 1 MiB to a fresh file, `fsync` it, and count
# the requests each kind (machine-wide: anything else writing to the disk
# meanwhile is counted too):

# %%
BLOCK_KINDS = r"""
struct kind_t { char rwbs[8]; };
BPF_HASH(requests, struct kind_t, u64);
BPF_HASH(sectors, struct kind_t, u64);

TRACEPOINT_PROBE(block, block_rq_issue) {
    struct kind_t key = {};
    __builtin_memcpy(&key.rwbs, args->rwbs, sizeof(key.rwbs));
    requests.increment(key);
    sectors.increment(key, args->nr_sector);
    return 0;
}
"""

# %% tags=["nbval-ignore-output"]
with Program(BLOCK_KINDS) as prog, tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
    with open(Path(tmp) / "data", "wb") as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())
    kinds = pd.DataFrame({
        "requests": {k.rwbs.decode(): v.value for k, v in prog["requests"].items()},
        "KiB": {k.rwbs.decode(): v.value // 2 for k, v in prog["sectors"].items()},
    }).sort_values("KiB", ascending=False)
kinds

# %% [markdown]
# The data (`W`/`WS`), the file system's journal, and flushes (`FF`, `FWS`
# and friends: the `fsync` asks the device to make it durable). Latency
# from `block_rq_issue` to `block_rq_complete` is Lab 6.3; here is a quick
# look, timing requests by `{dev, sector}`, while we read the file back
# with `O_DIRECT` (no page cache: every read goes to the disk).

# %%
BIO_LATENCY = r"""
struct req_t { u32 dev; u32 pad; u64 sector; };
BPF_HASH(start, struct req_t, u64);
BPF_HISTOGRAM(latency_us);

TRACEPOINT_PROBE(block, block_rq_issue) {
    struct req_t key = {.dev = args->dev, .sector = args->sector};
    u64 ts = bpf_ktime_get_ns();
    start.update(&key, &ts);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete) {
    struct req_t key = {.dev = args->dev, .sector = args->sector};
    u64 *ts = start.lookup(&key);
    if (!ts)
        return 0;
    latency_us.increment(bpf_log2l((bpf_ktime_get_ns() - *ts) / 1000));
    start.delete(&key);
    return 0;
}
"""

# %% tags=["nbval-ignore-output"]
with Program(BIO_LATENCY) as prog, tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
    path = Path(tmp) / "data"
    with open(path, "wb") as f:
        f.write(os.urandom(4 << 20))
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 64 << 10)
    while os.readv(fd, [buf]):
        pass
    os.close(fd)
    hist = log2_hist_df(prog["latency_us"])
print(f"{hist['count'].sum()} requests")
plot_log2_hist(hist, unit="us", title="block requests, issue to completion");

# %% [markdown]
# The stock `biolatency-bpfcc` measures the same, but BCC 0.26's version
# attaches kprobes, to `blk_mq_start_request` (or `blk_account_io_start`
# with `-Q`) and `blk_account_io_done`, so it runs only where kprobes do:

# %% tags=["needs-kprobes", "nbval-ignore-output"]
if features.available("kprobes"):
    tool = start_tool("biolatency-bpfcc")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        path = Path(tmp) / "data"
        path.write_bytes(os.urandom(4 << 20))
        os.sync()
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 64 << 10)
        while os.readv(fd, [buf]):
            pass
        os.close(fd)
    print(stop_tool(tool))
else:
    print("biolatency-bpfcc needs kprobes, which this kernel lacks: not run")

# %% [markdown]
# ## 6.8 Latency over time: a heatmap
#
# A histogram adds up a whole run. When the latency *changes* during the
# run, the histogram shows several humps and hides when each happened. A
# **latency heatmap** keeps time too: one column per time window, one row
# per log2 bucket, the colour saying how many events fell there. In the
# kernel that is just a histogram with a two-part key, `{window, bucket}`.
#
# A child sleeps with `clock_nanosleep` in four phases of 300 ms each,
# asking for 50 µs, 200 µs, 1 ms and then 5 ms per sleep; the program times
# each call from `sys_enter` to `sys_exit`, and files it in a window of
# 100 ms counted from the end of the first sleep.

# %%
HEATMAP = r"""
struct cell_t { u32 window; u32 slot; };
BPF_HASH(start, u32, u64);
BPF_HASH(cells, struct cell_t, u64);
BPF_ARRAY(first, u64, 1);                 // when the first sleep ended: time 0

TRACEPOINT_PROBE(syscalls, sys_enter_clock_nanosleep) {
    u64 id = bpf_get_current_pid_tgid();
    if (id >> 32 != TARGET_PID)
        return 0;
    u32 tid = id;
    u64 ts = bpf_ktime_get_ns();
    start.update(&tid, &ts);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_clock_nanosleep) {
    u32 tid = bpf_get_current_pid_tgid();
    u64 *ts = start.lookup(&tid);
    if (!ts)
        return 0;
    u64 now = bpf_ktime_get_ns();
    int zero = 0;
    u64 *t0 = first.lookup(&zero);
    if (!t0)
        return 0;
    if (*t0 == 0)
        *t0 = now;
    struct cell_t cell = {.window = (now - *t0) / 100000000,   // 100 ms windows
                          .slot = bpf_log2l((now - *ts) / 1000)};
    cells.increment(cell);
    start.delete(&tid);
    return 0;
}
"""
PHASES = [50e-6, 200e-6, 1e-3, 5e-3]       # seconds asked per sleep, 300 ms each


def sleep_in_phases():
    for asked in PHASES:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            time.sleep(asked)


child = Child(sleep_in_phases)
with Program(HEATMAP.replace("TARGET_PID", str(child.pid))) as prog:
    child.go()
    cells = pd.DataFrame([(k.window, k.slot, v.value) for k, v in prog["cells"].items()],
                         columns=["window", "slot", "count"])
grid = cells.pivot_table(index="slot", columns="window", values="count", aggfunc="sum",
                         fill_value=0)
grid = grid.reindex(range(grid.index.min(), grid.index.max() + 1), fill_value=0)  # no gaps

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(7, 3))
ax.imshow(np.log10(grid.values + 1), origin="lower", aspect="auto", cmap="viridis",
          extent=(0, grid.shape[1] * 100, -0.5, len(grid.index) - 0.5))
ax.set_yticks(range(len(grid.index)),
              [f"{slot_range(s)[0]}–{slot_range(s)[1]} µs" for s in grid.index], fontsize=8)
ax.set_xlabel("time since the first sleep ended (ms)")
ax.set_title("clock_nanosleep latency, log2 buckets (colour: log10 of count)")
plt.tight_layout()

# %% [markdown]
# Four bands, one after another, each higher than the last: what a single
# histogram would have shown as four humps of unknown order. Each sleep
# lasts a little longer than asked (timer slack, 50 µs by default for a
# normal task, and the wakeup itself), so a band can sit one bucket above
# the request. The same two-part key works for any latency in this
# chapter: run-queue waits (Lab 6.2) or disk requests (Lab 6.3) over time.

# %%
def median_slot(rows: pd.DataFrame) -> float:
    """The bucket of the median sleep in a set of heatmap cells."""
    rows = rows.sort_values("slot")
    half = rows["count"].sum() / 2
    return rows.loc[rows["count"].cumsum() >= half, "slot"].iloc[0]


phase_of = cells["window"] // 3                     # 3 windows of 100 ms per phase
medians = [median_slot(cells[phase_of == i]) for i in range(len(PHASES))]
print("each phase's median sleep is in a higher bucket than the one before:",
      all(a < b for a, b in zip(medians, medians[1:])))

# %% [markdown]
# ## 6.9 BTF-typed tracepoints
#
# Since 5.5 there is a third kind, `tp_btf`: a raw tracepoint whose
# arguments are typed from BTF, so a program can read `prev->pid` straight
# from the `struct task_struct *` without copying it field by field, and the
# verifier checks the types. libbpf attaches them (`SEC("tp_btf/sched_switch")`,
# Chapter 10); BCC 0.26 cannot. With BCC, raw tracepoints plus kernel
# headers do the same job, as long as the headers match the kernel (the
# course's `Program` checks them against BTF for you).

# %% [markdown]
# ## Recap
#
# * Tracepoints are stable, documented hooks; their `format` files describe
#   the fields this kernel really passes, and BCC builds `args` from them.
# * `syscalls:sys_enter_<name>` watches one system call with typed
#   arguments; `raw_syscalls:sys_enter` sees all of them with a number.
# * Raw tracepoints skip building the record: cheaper, but you get the raw
#   C arguments (`ctx->args[i]`) and read kernel structures yourself.
# * Pairs of events make latencies: wakeup to switch-in is scheduling delay,
#   issue to completion is device time. Key the start by what identifies the
#   object (thread id, `{dev, sector}`), and delete it when used.
# * A heatmap is a histogram keyed by `{time window, bucket}`: it shows how
#   a latency changes over a run.
# * The stock tools (`syscount-bpfcc`, `runqlat-bpfcc`...) do the same with
#   the same tracepoints; BCC 0.26's `execsnoop` and `biolatency` use
#   kprobes instead.
#
# **Questions to test yourself**
#
# 1. Why can a program that reads `args->filename` keep working on a kernel
#    where the field moved to another offset?
# 2. What does a raw tracepoint on `sys_enter` give you in `ctx->args[0]`,
#    and why is it more work to read a system call's argument from there?
# 3. A task leaves the CPU with `prev_state` 0x100. What happened, and is it
#    waiting for a CPU?
# 4. Why does counting on `raw_syscalls:sys_enter` slow down *every*
#    process, and what would you attach to instead to watch only `openat`?
# 5. Why key block requests by `{dev, sector}` and not by sector alone?
#
# <details><summary>Answers (click to open)</summary>
#
# 1. BCC builds the `args` struct when it compiles the program, from the
#    `format` file of the kernel it runs on: `args->filename` is read at
#    the offset this kernel declares, wherever that is. (A program compiled
#    once for many kernels needs the same service from CO-RE, Chapter 10.)
# 2. A pointer to the `struct pt_regs` of the task, the user registers
#    saved at the system call's entry (`ctx->args[1]` is the number). To
#    get an argument you must know which register carries it on this
#    architecture (on x86_64: `di`, `si`, `dx`, `r10`, `r8`, `r9`), and copy
#    it with `bpf_probe_read_kernel`, since `regs` is a kernel pointer the
#    program may not dereference; the classic tracepoint hands you the
#    arguments named and typed instead.
# 3. `0x100` is `TASK_REPORT_MAX`, printed `R+`: the task was preempted
#    while it ran kernel code. It did not choose to sleep: it is still
#    runnable, back in the run queue at once, and waits there for a CPU.
# 4. Attaching to any system call tracepoint makes every system call of
#    every task take the tracing path, and a `raw_syscalls` program then
#    runs for each of them. To watch only `openat`, attach to
#    `syscalls:sys_enter_openat`: every call still takes the tracing path,
#    but the program runs (and copies a record) only for `openat` (6.4
#    measured what each costs).
# 5. A sector number is a position on one device: two disks can both be
#    busy at sector 1000 at the same moment. Keyed by sector alone, the
#    second issue overwrites the first one's start time, and one of the
#    two completions finds none (Lab 6.3's check makes exactly that happen
#    with two loop devices).
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 6.1 | a system call monitor: calls and errors per process and system call, from `raw_syscalls` | `labs/ch06/lab_6_1_syscall_monitor.ipynb` |
# | 6.2 | run-queue latency per task (like `runqlat`), checked against the scheduler's own accounting, plotted | `labs/ch06/lab_6_2_runqlat.ipynb` |
# | 6.3 | block I/O latency (like `biolatency`), checked request by request against O_DIRECT reads, plotted | `labs/ch06/lab_6_3_biolatency.ipynb` |
