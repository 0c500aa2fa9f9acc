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
# # Chapter 5: Kprobes, kretprobes and fentry/fexit
#
# **After this chapter you will be able to**
#
# * attach a program to (almost) any function of the running kernel, at its
#   entry and at its return, and read its arguments and its return value;
# * choose between a kprobe, an fentry/fexit program and a tracepoint, knowing
#   what each costs and what breaks it from one kernel to the next;
# * find a function to probe and check that it exists, has not been inlined,
#   and may be probed, on the kernel in front of you;
# * fall back to a tracepoint when kprobes are missing, and say so.
#
# **A word on this machine.** The course's CI machine runs a kernel built
# without kprobes, and it refuses the ftrace hooks that fentry/fexit need.
# Every cell that needs one of them carries a tag (`needs-kprobes`,
# `needs-fentry`), checks first, prints one line when the feature is missing,
# and runs a documented fallback on tracepoints instead. In the course VM
# (a stock Debian kernel) the same cells run the real thing. Nothing here
# pretends: when a kprobe is not attached, the output says so.
#
# **The outputs stored with this notebook come from the course VM**
# (Debian 12, kernel 6.1, under QEMU software emulation: `vm/course_vm.py`),
# so they show the kprobes, kretprobes and fentry programs really running.
# Run it here and each such cell first prints the one line about the
# fallback; each result line ends with the hook that produced it, `(hook:
# ...)`. When the notebook is tested against its stored outputs, those two
# things are masked (`tests/nbval_sanitize.cfg`), and the counts must agree
# whichever hook ran. Timings stored here are the emulated VM's, many times
# slower than real hardware.

# %% [markdown]
# ## 5.1 Dynamic instrumentation
#
# Tracepoints (Chapter 6) are hooks that kernel developers placed by hand and
# promise to keep. There are a couple of thousand. The kernel has far more
# functions: from about fifty thousand to over a hundred thousand function
# symbols, depending on the version and build (section 5.9 counts them in
# `/proc/kallsyms`); **dynamic instrumentation** lets you hook almost any of
# them, on the running kernel, without rebuilding it.
#
# | | kprobe / kretprobe | fentry / fexit | tracepoint |
# |---|---|---|---|
# | where | (almost) any instruction; return of any function | entry / return of functions in BTF | fixed places |
# | how | breakpoint (or ftrace call) at the address; the return address is swapped for a trampoline | a direct call from the function's ftrace slot into a BPF trampoline | a static call compiled into the kernel |
# | arguments | registers: `PT_REGS_PARM1(ctx)`... | typed, named, from BTF | a documented struct (`format` file) |
# | return value | kretprobe: `PT_REGS_RC(ctx)` | fexit: arguments *and* return value | no |
# | cost per hit | highest | lowest of the three for functions | low |
# | stable across kernels? | no | no | yes, mostly |
# | needs | `CONFIG_KPROBES` | BTF, ftrace, 5.5+ (x86), 6.0+ (arm64) | nothing |
#
# A **kprobe** copies the instruction at the probed address, puts a
# breakpoint there, and when the CPU hits it, runs your program with the
# saved registers (`struct pt_regs`). At a function's first instruction the
# kernel uses its cheaper ftrace call instead of a breakpoint.
#
# A **kretprobe** is a kprobe at the entry that also replaces the return
# address on the stack with a trampoline: when the function returns, the
# trampoline runs your program, then jumps back to the real caller. Each
# call in flight holds one *instance*; `maxactive` sets how many may be in
# flight at once, and calls beyond that are missed (counted in
# `/sys/kernel/tracing/kprobe_profile`).
#
# **fentry/fexit** programs are called directly, through a small
# machine-code trampoline generated for them. No breakpoint, no register
# decoding: the verifier knows each argument's type from BTF, so it can let
# you dereference a kernel pointer directly. fexit receives the arguments and
# the return value together.

# %%
import ctypes
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ebpf_tutor import EventCollector, Program, features, log2_hist_df, overhead, plot_log2_hist

# %% [markdown]
# ## 5.2 What this kernel can do
#
# `ebpf_tutor.features` answers "is X available here?" by trying it once (it
# loads and attaches a tiny program, with the doctor's probes), and remembers
# the answer for the rest of the session. `reason()` says why not. (The
# answer depends on the kernel, so this cell's output is not compared.)

# %% tags=["nbval-ignore-output"]
for name in ["kprobes", "fentry", "tracepoints", "raw tracepoints"]:
    print(f"{name:16} {'available' if features.available(name) else 'missing: ' + features.reason(name)}")

# %% [markdown]
# ## 5.3 A test subject
#
# To count something exactly, we need activity that only we could have
# caused. `Child` (from `ebpf_tutor.labs.workload`, thirty lines worth reading)
# forks a process that waits on a pipe until we say go, so that we know its
# pid *before* it does anything: we put the pid into the program's text (the
# way BCC's tools do with `-p PID`), load the program, then call `go()`,
# which lets the child run and returns once it has exited.

# %%
from ebpf_tutor.labs.workload import Child

workdir = Path(tempfile.mkdtemp(prefix="ch05-"))
(workdir / "a.txt").write_text("hello\n")


def open_files(n_ok: int, n_missing: int = 0):
    """Work for a Child: open a.txt n_ok times and a missing file n_missing times."""
    def work():
        for _ in range(n_ok):
            os.close(os.open(workdir / "a.txt", os.O_RDONLY))
        for _ in range(n_missing):
            try:
                os.open(workdir / "missing.txt", os.O_RDONLY)
            except OSError:
                pass
    return work

# %% [markdown]
# ## 5.4 A first kprobe
#
# Every `open()`, `openat()` and `openat2()` ends up in one kernel function,
# `do_sys_openat2()` (before Linux 5.6: `do_sys_open()`). A kprobe on it
# sees them all. The program is an ordinary C function taking
# `struct pt_regs *ctx`; we attach it by name with `attach_kprobe`.
#
# Function names are not an interface the kernel promises to keep, so we
# pick the first name of a list that this kernel has: `/proc/kallsyms` lists
# every function symbol (even where kprobes are missing), and
# `Program.ksymname(name)` returns -1 for a name it does not know.

# %%
def pick_function(*candidates: str) -> str | None:
    """The first of the candidate kernel functions this kernel has."""
    return next((c for c in candidates if Program.ksymname(c) != -1), None)


OPEN_FN = pick_function("do_sys_openat2", "do_sys_open")
print("the kernel function behind open():", OPEN_FN)

# %%
COUNT_KPROBE = r"""
#include <uapi/linux/ptrace.h>

BPF_ARRAY(calls, u64, 1);

int on_open(struct pt_regs *ctx) {
    if (bpf_get_current_pid_tgid() >> 32 != TARGET_PID)
        return 0;
    calls.increment(0);
    return 0;
}
"""

# %% [markdown]
# The fallback is the stable tracepoint of the `openat` system call (what C
# libraries call for `open()`). It sees the same calls from our child, but
# would miss `openat2()`: two attach points instead of one function.

# %%
COUNT_TRACEPOINT = r"""
BPF_ARRAY(calls, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    if (bpf_get_current_pid_tgid() >> 32 != TARGET_PID)
        return 0;
    calls.increment(0);
    return 0;
}
"""

# %% tags=["needs-kprobes"]
child = Child(open_files(5))
if features.available("kprobes"):
    prog = Program(COUNT_KPROBE.replace("TARGET_PID", str(child.pid)))
    prog.attach_kprobe(event=OPEN_FN, fn_name="on_open")
    how = f"kprobe on {OPEN_FN}"
else:
    features.notice("kprobes", "the syscalls:sys_enter_openat tracepoint")
    prog = Program(COUNT_TRACEPOINT.replace("TARGET_PID", str(child.pid)))
    how = "tracepoint syscalls:sys_enter_openat"
with prog:
    child.go()
    print(f"{prog['calls'][0].value} opens counted for the child (hook: {how})")

# %% [markdown]
# ## 5.5 Arguments
#
# On x86_64 the first six arguments of a function arrive in registers (`rdi`,
# `rsi`, `rdx`, `rcx`, `r8`, `r9`); `PT_REGS_PARM1(ctx)` to `PT_REGS_PARM6(ctx)`
# read them portably. BCC also accepts the function's signature after `ctx`,
# and turns each named argument into the right register read:
#
# ```c
# static long do_sys_openat2(int dfd, const char __user *filename, struct open_how *how);
# ```
#
# Two kinds of pointers need care. `filename` points into the *calling
# process's* memory: copy it with `bpf_probe_read_user_str`. `how` points into
# kernel memory: BCC rewrites `how->flags` into a `bpf_probe_read_kernel` for
# you. Either read may fail (a page not present): check the result when it
# matters.

# %%
ARGS_KPROBE = r"""
#include <uapi/linux/ptrace.h>
#include <uapi/linux/openat2.h>

struct open_event {
    u32 pid;
    s32 dfd;
    u64 flags;
    char filename[64];
};
BPF_RINGBUF_OUTPUT(events, 8);

int on_open(struct pt_regs *ctx, int dfd, const char __user *filename, struct open_how *how) {
    if (bpf_get_current_pid_tgid() >> 32 != TARGET_PID)
        return 0;
    struct open_event ev = {.pid = TARGET_PID, .dfd = dfd, .flags = how->flags};
    bpf_probe_read_user_str(&ev.filename, sizeof(ev.filename), filename);
    events.ringbuf_output(&ev, sizeof(ev), 0);
    return 0;
}
"""

ARGS_TRACEPOINT = r"""
struct open_event {
    u32 pid;
    s32 dfd;
    u64 flags;
    char filename[64];
};
BPF_RINGBUF_OUTPUT(events, 8);

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    if (bpf_get_current_pid_tgid() >> 32 != TARGET_PID)
        return 0;
    struct open_event ev = {.pid = TARGET_PID, .dfd = args->dfd, .flags = args->flags};
    bpf_probe_read_user_str(&ev.filename, sizeof(ev.filename), args->filename);
    events.ringbuf_output(&ev, sizeof(ev), 0);
    return 0;
}
"""

# %% [markdown]
# The child opens three files in three ways. We decode the flags with the
# names from `os`. One more flag is counted apart: `O_LARGEFILE`, which the
# kernel adds by itself on 64-bit machines, so a kprobe inside the kernel
# sees it on every call and the system call tracepoint (the caller's own
# value) does not. The last line names the hook that ran.

# %%
FLAG_NAMES = ["O_WRONLY", "O_RDWR", "O_CREAT", "O_EXCL", "O_TRUNC", "O_APPEND",
              "O_NONBLOCK", "O_DIRECTORY", "O_CLOEXEC"]


O_LARGEFILE = 0o100000      # x86_64's value; os.O_LARGEFILE is 0 on 64-bit builds


def decode_flags(flags: int) -> str:
    names = [n for n in FLAG_NAMES if flags & getattr(os, n)]
    return "|".join(names) or "O_RDONLY"


def three_opens():
    os.close(os.open(workdir / "a.txt", os.O_RDONLY))
    os.close(os.open(workdir / "b.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    try:
        os.open(workdir / "missing.txt", os.O_RDONLY)
    except FileNotFoundError:
        pass

# %% tags=["needs-kprobes"]
child = Child(three_opens)
if features.available("kprobes"):
    prog = Program(ARGS_KPROBE.replace("TARGET_PID", str(child.pid)))
    prog.attach_kprobe(event=OPEN_FN, fn_name="on_open")
    how = f"kprobe on {OPEN_FN}"
else:
    features.notice("kprobes", "the syscalls:sys_enter_openat tracepoint")
    prog = Program(ARGS_TRACEPOINT.replace("TARGET_PID", str(child.pid)))
    how = "tracepoint syscalls:sys_enter_openat"
with prog:
    events = EventCollector(prog, "events")
    child.go()
    opened = events.drain()
for row in opened.itertuples():
    print(f"{Path(row.filename).name:12} dfd={'AT_FDCWD' if row.dfd == -100 else row.dfd:9} "
          f"{decode_flags(row.flags)}")
large = ("O_LARGEFILE on every call" if all(int(f) & O_LARGEFILE for f in opened["flags"])
         else "no O_LARGEFILE")
print(f"(hook: {how}, {large})")

# %% [markdown]
# `dfd` is `AT_FDCWD` (-100): a path relative to the current directory, or
# absolute. The missing file is there too: at the *entry* nobody knows yet
# that the call will fail. For that we need the return.

# %% [markdown]
# ## 5.6 kretprobes: return values and latency
#
# A kretprobe program runs when the function returns; `PT_REGS_RC(ctx)` is
# its return value: here a file descriptor, or a negative errno (`-2` is
# `ENOENT`). It does *not* see the arguments any more (the registers have
# been reused): whatever you need from the entry, save it in a map keyed by
# the thread id, which is also how you time a call.

# %%
LATENCY_KPROBE = r"""
#include <uapi/linux/ptrace.h>

BPF_HASH(start, u32, u64);
BPF_HISTOGRAM(latency_ns);
BPF_ARRAY(results, u64, 2);            // [0] succeeded, [1] failed

int on_entry(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    if (id >> 32 != TARGET_PID)
        return 0;
    u32 tid = id;
    u64 ts = bpf_ktime_get_ns();
    start.update(&tid, &ts);
    return 0;
}

int on_return(struct pt_regs *ctx) {
    u32 tid = bpf_get_current_pid_tgid();
    u64 *ts = start.lookup(&tid);
    if (!ts)
        return 0;
    latency_ns.increment(bpf_log2l(bpf_ktime_get_ns() - *ts));
    start.delete(&tid);
    long ret = PT_REGS_RC(ctx);
    results.increment(ret < 0 ? 1 : 0);
    return 0;
}
"""

# %% [markdown]
# Without kprobes, the pair `sys_enter_openat` / `sys_exit_openat` gives the
# same two moments (a little wider: the system call's entry and exit around
# the function), and `args->ret` is the return value.

# %%
LATENCY_TRACEPOINT = LATENCY_KPROBE.replace(
    "int on_entry(struct pt_regs *ctx)", "TRACEPOINT_PROBE(syscalls, sys_enter_openat)").replace(
    "int on_return(struct pt_regs *ctx)", "TRACEPOINT_PROBE(syscalls, sys_exit_openat)").replace(
    "PT_REGS_RC(ctx)", "args->ret")

# %% tags=["needs-kprobes"]
child = Child(open_files(300, 100))
if features.available("kprobes"):
    prog = Program(LATENCY_KPROBE.replace("TARGET_PID", str(child.pid)))
    prog.attach_kprobe(event=OPEN_FN, fn_name="on_entry")
    prog.attach_kretprobe(event=OPEN_FN, fn_name="on_return")
    how = f"kprobe + kretprobe on {OPEN_FN}"
else:
    features.notice("kprobes", "the syscalls:sys_enter/exit_openat tracepoints")
    prog = Program(LATENCY_TRACEPOINT.replace("TARGET_PID", str(child.pid)))
    how = "sys_enter_openat / sys_exit_openat"
with prog:
    child.go()
    ok, failed = prog["results"][0].value, prog["results"][1].value
    latency = log2_hist_df(prog["latency_ns"])
print(f"{ok} opens succeeded, {failed} failed (hook: {how})")

# %% tags=["nbval-ignore-output"]
plot_log2_hist(latency, unit="ns", title=f"open() latency, {how}");

# %% [markdown]
# The failed opens are the fast ones: the path lookup stops at the missing
# name, and no file is set up.

# %% [markdown]
# ## 5.7 fentry and fexit
#
# With BTF, the kernel describes every function's arguments and types.
# fentry/fexit programs use it: arguments are typed and named, read without
# `pt_regs`, and kernel pointers can be followed directly. In BCC,
# `KFUNC_PROBE(function, args...)` is an fentry program and
# `KRETFUNC_PROBE(function, args..., ret)` an fexit program, which receives
# the arguments **and** the return value. Both attach when the program is
# loaded.
#
# One fexit program does what took a kprobe, a kretprobe and a map above
# (timing still needs the pair). `filename` is still a user-space pointer:
# BTF does not change that; `how` is a kernel pointer the verifier lets us
# read directly.

# %%
FEXIT = r"""
#include <uapi/linux/openat2.h>

BPF_ARRAY(results, u64, 2);            // [0] succeeded, [1] failed
BPF_ARRAY(creates, u64, 1);            // how many asked for O_CREAT

KRETFUNC_PROBE(FUNCTION, int dfd, const char *filename, struct open_how *how, long ret) {
    if (bpf_get_current_pid_tgid() >> 32 != TARGET_PID)
        return 0;
    results.increment(ret < 0 ? 1 : 0);
    if (how->flags & 0100)             // O_CREAT, read straight from kernel memory
        creates.increment(0);
    return 0;
}
"""

FEXIT_FALLBACK = r"""
BPF_ARRAY(results, u64, 2);
BPF_ARRAY(creates, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    if (bpf_get_current_pid_tgid() >> 32 == TARGET_PID && (args->flags & 0100))
        creates.increment(0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat) {
    if (bpf_get_current_pid_tgid() >> 32 == TARGET_PID)
        results.increment(args->ret < 0 ? 1 : 0);
    return 0;
}
"""

# %% tags=["needs-fentry"]
child = Child(three_opens)
if features.available("fentry"):
    prog = Program(FEXIT.replace("FUNCTION", OPEN_FN).replace("TARGET_PID", str(child.pid)))
    how = f"fexit on {OPEN_FN}"
else:
    features.notice("fentry", "the syscalls:sys_enter/exit_openat tracepoints")
    prog = Program(FEXIT_FALLBACK.replace("TARGET_PID", str(child.pid)))
    how = "sys_enter_openat / sys_exit_openat"
with prog:
    child.go()
    ok, failed = prog["results"][0].value, prog["results"][1].value
    creates = prog["creates"][0].value
print(f"{ok} succeeded, {failed} failed, {creates} with O_CREAT (hook: {how})")

# %% [markdown]
# ## 5.8 What each costs
#
# Every hit of a probe costs time in the traced code path. To see how much,
# we time `open()` + `close()` of `/dev/null` with nothing attached, then
# with the same tiny counting program attached each way this kernel allows:
# a tracepoint on `openat`, a kprobe and an fentry program on
# `do_sys_openat2`. The kprobe and fentry rows appear only where those work
# (the course VM).
#
# The calls are made by a tight C loop, not by Python: one turn of a Python
# loop costs more than the system call itself and would drown the few
# nanoseconds a hook adds. The loop is part of `ebpf_tutor.overhead`:

# %%
print(overhead.LOOP_C)

# %% [markdown]
# The loop reads its own CPU-time clock (`CLOCK_PROCESS_CPUTIME_ID`): a BPF
# program runs in the process that made the system call, so its time
# counts, while time that other processes hold the CPU does not.
#
# `overhead.ns_per_call("open")` compiles the loop once with `cc`, picks the
# number of calls so that one round lasts about 25 ms (many calls on a fast
# machine, few under software emulation, but at least 1000), and returns
# the best of 5 rounds. `overhead.added_cost(make_program, "open")` measures
# a baseline, loads a fresh program with `make_program()`, measures again,
# three times, and keeps the median difference: the price of the hook.

# %%
COUNTER = "BPF_ARRAY(n, u64, 1);\n"


def tracepoint_hook():
    return Program(COUNTER + "TRACEPOINT_PROBE(syscalls, sys_enter_openat) "
                   "{ n.increment(0); return 0; }")


def kprobe_hook():
    prog = Program(COUNTER + "int on_call(struct pt_regs *ctx) { n.increment(0); return 0; }")
    prog.attach_kprobe(event=OPEN_FN, fn_name="on_call")
    return prog


def fentry_hook():
    return Program(COUNTER + f"KFUNC_PROBE({OPEN_FN}) {{ n.increment(0); return 0; }}")


HOOKS = {"tracepoint": ("tracepoints", tracepoint_hook), "kprobe": ("kprobes", kprobe_hook),
         "fentry": ("fentry", fentry_hook)}

# %% tags=["needs-kprobes", "needs-fentry", "nbval-ignore-output"]
base = overhead.ns_per_call("open")
print(f"open() + close() with nothing attached: {base:.0f} ns")
added = {}
for label, (needs, make_program) in HOOKS.items():
    if not features.available(needs):
        features.notice(needs, f"the comparison without a {label} row")
        continue
    added[label] = overhead.added_cost(make_program, "open")
pd.DataFrame({"ns added per open()": added}).round(0)

# %% [markdown]
# On the CI machine only the tracepoint row can run. One open + close costs
# thousands of nanoseconds (the first line above; a few microseconds on the
# CI machine, far more in the emulated VM whose run is stored here), so a
# hook's tens of nanoseconds are a small difference between two large
# numbers on a busy machine: rerun the cell to see how much they move. In the
# course VM you can compare all three: fentry is expected to cost least and
# the kprobe most (its entry goes through ftrace and saves a full
# `pt_regs`). Measure rather than believe: the numbers depend on the CPU,
# the kernel and its mitigations (retpolines, for instance), and under
# software emulation (a VM without KVM) they mean little.

# %% [markdown]
# ## 5.9 Stability: what breaks a kprobe
#
# A kprobe names an internal function of one particular kernel build. Four
# things break it:
#
# 1. **Renames and signature changes.** `do_sys_open` became
#    `do_sys_openat2` (5.6); `inet_csk_accept(sk, flags, err, kern)` became
#    `inet_csk_accept(sk, arg)` (6.10). Pick names from a list, and read only
#    the arguments whose position you checked for the kernels you support.
# 2. **Inlining.** A `static` function called once is usually merged into
#    its caller and has no address: it is not in `/proc/kallsyms` and cannot
#    be probed. Worse, a function can be inlined at *some* call sites and
#    called at others: the probe then sees only some of the calls.
# 3. **Compiler clones.** GCC makes specialised copies of functions whose
#    arguments it can simplify, with suffixes `.isra.N`, `.constprop.N`,
#    `.part.N`: the plain name may be missing, or miss the calls that go to
#    the clone, whose arguments may not even be in the usual registers.
# 4. **Forbidden places.** kprobes refuse the functions on the kernel's
#    kprobe blacklist: those marked `NOKPROBE_SYMBOL` or placed in the
#    `.kprobes.text` section (the kprobe and breakpoint machinery itself), the
#    whole `noinstr` section (entry code that runs before the kernel is ready
#    to take a breakpoint), and a few areas each architecture adds. The list
#    is in `/sys/kernel/debug/kprobes/blacklist` on kernels with kprobes.
#    `notrace` is something else: it removes the function's `__fentry__`
#    call, so **ftrace and fentry/fexit** cannot attach there, but a kprobe
#    (a breakpoint instruction) still can.
#
# fentry/fexit add a fifth: the function must be described in BTF, and have
# an ftrace entry (not `notrace`, not inlined). Not all are: on Debian's 6.1
# kernel, `__x64_sys_getppid` (the entry of the `getppid` system call) can
# take a kprobe but an fentry program fails with "not found in vmlinux
# BTF".
#
# `/proc/kallsyms` is there even without kprobes, so we can look at clones
# on this very kernel:

# %% tags=["nbval-ignore-output"]
symbols = pd.read_csv("/proc/kallsyms", sep=r"\s+", header=None, usecols=[1, 2],
                      names=["type", "name"], engine="c")
functions = symbols[symbols.type.str.lower() == "t"]
clones = functions[functions.name.str.contains(r"\.(?:isra|constprop|part|cold)\.?\d*$")]
print(f"{len(functions)} function symbols, {len(clones)} of them compiler clones "
      f"({len(clones) / len(functions):.1%})")

# %% tags=["nbval-ignore-output"]
clones.name.str.extract(r"\.(isra|constprop|part|cold)")[0].value_counts()

# %% [markdown]
# And whether the functions this chapter uses are there, as their plain
# names (`T` is a global function, `t` a file-local one, still probeable if
# present):

# %%
wanted = ["do_sys_openat2", "do_sys_open", "tcp_v4_connect", "inet_csk_accept",
          "tcp_set_state", "futex_wait"]
present = functions.set_index("name").type
for fn in wanted:
    print(f"{fn:16} {'present (' + present[fn] + ')' if fn in present.index else 'absent'}")

# %% [markdown]
# Tracepoints avoid all four problems, which is why every kprobe in this
# chapter has a tracepoint fallback. Where no tracepoint exists, a kprobe is
# the only way, and the price is testing your tool on each kernel you ship
# it to.

# %% [markdown]
# ## 5.10 Tracing TCP connections
#
# The classic `tcpconnect` technique: a kprobe on `tcp_v4_connect(struct sock
# *sk, ...)` saves `sk` per thread; the kretprobe, if the call returned 0,
# reads the addresses and ports from the now-initialised socket. Accepted
# connections come from the return value of `inet_csk_accept()`, the new
# socket. `struct sock` comes from the kernel headers; `bpf_probe_read_kernel`
# copies each field.

# %%
TCP_KPROBES = r"""
#include <uapi/linux/ptrace.h>
#include <net/sock.h>

struct conn_event {
    u32 pid;
    u32 kind;                 // 1 connect, 2 accept
    u32 saddr, daddr;
    u16 sport, dport;
};
BPF_HASH(connecting, u32, struct sock *);
BPF_RINGBUF_OUTPUT(conns, 8);

static __always_inline void emit(struct sock *sk, u32 kind) {
    struct conn_event ev = {.pid = bpf_get_current_pid_tgid() >> 32, .kind = kind};
    u16 dport = 0;
    bpf_probe_read_kernel(&ev.saddr, sizeof(ev.saddr), &sk->__sk_common.skc_rcv_saddr);
    bpf_probe_read_kernel(&ev.daddr, sizeof(ev.daddr), &sk->__sk_common.skc_daddr);
    bpf_probe_read_kernel(&ev.sport, sizeof(ev.sport), &sk->__sk_common.skc_num);
    bpf_probe_read_kernel(&dport, sizeof(dport), &sk->__sk_common.skc_dport);
    ev.dport = bpf_ntohs(dport);
    conns.ringbuf_output(&ev, sizeof(ev), 0);
}

int on_connect(struct pt_regs *ctx, struct sock *sk) {
    u32 tid = bpf_get_current_pid_tgid();
    connecting.update(&tid, &sk);
    return 0;
}

int on_connect_return(struct pt_regs *ctx) {
    u32 tid = bpf_get_current_pid_tgid();
    struct sock **skp = connecting.lookup(&tid);
    if (!skp)
        return 0;
    if (PT_REGS_RC(ctx) == 0)
        emit(*skp, 1);
    connecting.delete(&tid);
    return 0;
}

int on_accept_return(struct pt_regs *ctx) {
    struct sock *sk = (struct sock *)PT_REGS_RC(ctx);
    if (sk)
        emit(sk, 2);
    return 0;
}
"""

# %% [markdown]
# The fallback is `sock:inet_sock_set_state`, a tracepoint in the TCP state
# machine. A connection we opened is a socket going from `SYN_SENT` to
# `ESTABLISHED`; one we accepted goes from `SYN_RECV` to `ESTABLISHED`. The
# tracepoint hands us the addresses and ports (ports already in host order).
# What it cannot give is the process: the handshake completes in softirq
# context, so `pid` is whoever was interrupted, and we leave it out (Lab 5.2
# shows how to catch it at the `SYN_SENT` step).

# %%
TCP_TRACEPOINT = r"""
#include <net/tcp_states.h>

struct conn_event {
    u32 pid;
    u32 kind;                 // 1 connect, 2 accept
    u32 saddr, daddr;
    u16 sport, dport;
};
BPF_RINGBUF_OUTPUT(conns, 8);

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != 6 || args->family != 2 || args->newstate != TCP_ESTABLISHED)
        return 0;
    u32 kind = args->oldstate == TCP_SYN_SENT ? 1 : args->oldstate == TCP_SYN_RECV ? 2 : 0;
    if (!kind)
        return 0;
    struct conn_event ev = {.kind = kind, .sport = args->sport, .dport = args->dport};
    __builtin_memcpy(&ev.saddr, args->saddr, 4);
    __builtin_memcpy(&ev.daddr, args->daddr, 4);
    conns.ringbuf_output(&ev, sizeof(ev), 0);
    return 0;
}
"""

# %% tags=["needs-kprobes"]
if features.available("kprobes"):
    prog = Program(TCP_KPROBES)
    prog.attach_kprobe(event="tcp_v4_connect", fn_name="on_connect")
    prog.attach_kretprobe(event="tcp_v4_connect", fn_name="on_connect_return")
    prog.attach_kretprobe(event="inet_csk_accept", fn_name="on_accept_return")
else:
    features.notice("kprobes", "the sock:inet_sock_set_state tracepoint")
    prog = Program(TCP_TRACEPOINT)
with prog, socket.create_server(("127.0.0.1", 0)) as server:
    port = server.getsockname()[1]
    collector = EventCollector(prog, "conns")
    pairs = []
    for _ in range(3):
        client = socket.create_connection(("127.0.0.1", port))
        pairs.append((client, server.accept()[0]))
    for client, accepted in pairs:
        client.close()
        accepted.close()
    seen = collector.drain()
ours = seen[(seen.dport == port) | (seen.sport == port)]
kinds = ours.kind.map({1: "connect", 2: "accept"}).value_counts().sort_index()
print(f"our 3 connections to port <port>: {({k: int(v) for k, v in kinds.items()})}")

# %% [markdown]
# The table: with the tracepoint fallback the `pid` column is left out, since
# that program never fills it (it would read 0 in every row).

# %% tags=["nbval-ignore-output"]
shown = ours if features.available("kprobes") else ours.drop(columns="pid")
shown.assign(saddr=ours.saddr.map(lambda a: socket.inet_ntoa(a.to_bytes(4, sys.byteorder))),
             daddr=ours.daddr.map(lambda a: socket.inet_ntoa(a.to_bytes(4, sys.byteorder))))

# %% [markdown]
# ## 5.11 Who waits for locks?
#
# Two kinds of locks make threads wait.
#
# **Kernel locks** (mutexes, rwsems, spinlocks inside the kernel) have
# tracepoints of their own since Linux 5.19: `lock:contention_begin` and
# `lock:contention_end`, with the lock's address and a `flags` word saying
# what kind of lock it is. Kernels built with `CONFIG_LOCK_STAT` had
# `lock:lock_acquire` and friends long before, far more expensive. Where
# neither exists, the only ways are kprobes on the lock functions
# (`mutex_lock`, `down_write`...) or off-CPU time from `sched:sched_switch`
# (Chapter 18), which shows the waiting but not the lock.

# %%
LOCK_EVENTS = Path("/sys/kernel/tracing/events/lock")
have = sorted(p.name for p in LOCK_EVENTS.iterdir() if p.is_dir()) if LOCK_EVENTS.is_dir() else []
print("lock tracepoints here:", ", ".join(have) or "none (this kernel has no lock:* events)")

# %% [markdown]
# We measure kernel lock contention machine-wide for half a second, while four
# threads of ours map and unmap memory (each `mmap`/`munmap` takes the
# process's `mmap_lock` for writing, so the four fight over it).
# `contention_end` does not repeat the flags, so the start map keeps them
# together with the time.

# %%
KERNEL_LOCKS = r"""
struct begin_t { u64 ts; u32 flags; };
struct wait_t { u64 ns; u64 count; };
BPF_HASH(start, u32, struct begin_t);
BPF_HASH(by_kind, u32, struct wait_t);        // key: the lock's flags

TRACEPOINT_PROBE(lock, contention_begin) {
    u32 tid = bpf_get_current_pid_tgid();
    struct begin_t b = {.ts = bpf_ktime_get_ns(), .flags = args->flags};
    start.update(&tid, &b);
    return 0;
}

TRACEPOINT_PROBE(lock, contention_end) {
    u32 tid = bpf_get_current_pid_tgid();
    struct begin_t *b = start.lookup(&tid);
    if (!b)
        return 0;
    struct wait_t zero = {};
    struct wait_t *w = by_kind.lookup_or_try_init(&b->flags, &zero);
    if (w) {
        __sync_fetch_and_add(&w->ns, bpf_ktime_get_ns() - b->ts);
        __sync_fetch_and_add(&w->count, 1);
    }
    start.delete(&tid);
    return 0;
}
"""

LOCK_FLAGS = {1: "SPIN", 2: "READ", 4: "WRITE", 8: "RT", 16: "PERCPU", 32: "MUTEX"}


def churn_mappings(seconds: float) -> None:
    import mmap
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        m = mmap.mmap(-1, 1 << 20)
        m[0] = 1
        m.close()

# %% tags=["nbval-ignore-output"]
if "contention_begin" in have:
    with Program(KERNEL_LOCKS) as prog:
        threads = [threading.Thread(target=churn_mappings, args=(0.5,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = [(k.value, v.count, v.ns) for k, v in prog["by_kind"].items()]
    kernel_waits = pd.DataFrame(rows, columns=["lock_flags", "waits", "ns"])
    kernel_waits["kind"] = kernel_waits.lock_flags.map(
        lambda f: "|".join(n for bit, n in LOCK_FLAGS.items() if f & bit))
    kernel_waits["total ms"] = (kernel_waits.ns / 1e6).round(2)
    table = kernel_waits.sort_values("ns", ascending=False)[["kind", "waits", "total ms"]]
else:
    table = "no lock:contention_* tracepoints on this kernel: skipped"
table

# %% [markdown]
# **User-space locks** (`pthread_mutex_t`, and the locks built on it) are
# futexes: uncontended, they never enter the kernel; contended, the waiter
# sleeps in the `futex` system call. For `FUTEX_WAIT` and
# `FUTEX_WAIT_BITSET` (what glibc's default mutexes use) the kernel function
# is `futex_wait()`, called with the address of the lock word. A
# kprobe/kretprobe pair on `futex_wait` measures each of those sleeps and
# names the lock by address. It does not see every futex sleep: a
# priority-inheritance mutex (`PTHREAD_PRIO_INHERIT`) waits with
# `FUTEX_LOCK_PI`, which the kernel serves in `futex_lock_pi()`;
# `FUTEX_WAIT_REQUEUE_PI` goes to `futex_wait_requeue_pi()` and the
# `futex_waitv()` system call to `futex_wait_multiple()` (see `do_futex()` in
# `kernel/futex/syscalls.c`). Probe those too if your program uses them. The
# fallback, the `syscalls:sys_enter_futex`/`sys_exit_futex` pair filtered on
# the operation, sees every operation of the `futex` call, `LOCK_PI`
# included (Lab 5.3 builds both).

# %%
FUTEX_KPROBE = r"""
#include <uapi/linux/ptrace.h>

struct start_t { u64 ts; u64 uaddr; };
struct key_t { u32 tid; u32 pad; u64 uaddr; };
BPF_HASH(start, u32, struct start_t);
BPF_HASH(waited, struct key_t, u64);         // ns asleep, per thread and lock

static __always_inline void begin(u64 uaddr) {
    u64 id = bpf_get_current_pid_tgid();
    if (id >> 32 != TARGET_PID)
        return;
    u32 tid = id;
    struct start_t s = {.ts = bpf_ktime_get_ns(), .uaddr = uaddr};
    start.update(&tid, &s);
}

static __always_inline void end(void) {
    u32 tid = bpf_get_current_pid_tgid();
    struct start_t *s = start.lookup(&tid);
    if (!s)
        return;
    struct key_t key = {.tid = tid, .uaddr = s->uaddr};
    u64 zero = 0, *ns = waited.lookup_or_try_init(&key, &zero);
    if (ns)
        __sync_fetch_and_add(ns, bpf_ktime_get_ns() - s->ts);
    start.delete(&tid);
}

int on_wait(struct pt_regs *ctx, u32 *uaddr) { begin((u64)uaddr); return 0; }
int on_wait_return(struct pt_regs *ctx) { end(); return 0; }
"""

FUTEX_TRACEPOINTS = FUTEX_KPROBE.split("int on_wait(")[0] + r"""
TRACEPOINT_PROBE(syscalls, sys_enter_futex) {
    int cmd = args->op & ~(128 | 256);       // drop PRIVATE_FLAG and CLOCK_REALTIME
    if (cmd == 0 || cmd == 9 || cmd == 6)    // WAIT, WAIT_BITSET, LOCK_PI
        begin((u64)args->uaddr);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_futex) { end(); return 0; }
"""

# %% [markdown]
# The test subject: a child process whose main thread locks a
# `pthread_mutex_t` (through `ctypes`, which releases Python's GIL around
# the call), starts four threads that all queue on it, and unlocks after
# 50 ms; each thread then holds it for 20 ms in turn. The mutex is created
# before the fork, so we know its address in the child: it is the `uaddr`
# the waiters sleep on.
#
# Why not `threading.Lock`? Its waiters do sleep in `futex`, but since
# Python 3.13 each one sleeps on a semaphore of its own (a "parking lot"),
# so the addresses name the waiting threads, not the lock; with 3.11 they
# are the lock's. A C mutex behaves the same everywhere.

# %%
libc = ctypes.CDLL(None, use_errno=True)
mutex = ctypes.create_string_buffer(64)     # zeroed: PTHREAD_MUTEX_INITIALIZER in glibc
MUTEX_ADDR = ctypes.addressof(mutex)


def queue_on_a_mutex():
    def worker():
        libc.pthread_mutex_lock(mutex)
        time.sleep(0.02)
        libc.pthread_mutex_unlock(mutex)

    libc.pthread_mutex_lock(mutex)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    libc.pthread_mutex_unlock(mutex)
    for t in threads:
        t.join()

# %% tags=["needs-kprobes"]
child = Child(queue_on_a_mutex)
if features.available("kprobes"):
    prog = Program(FUTEX_KPROBE.replace("TARGET_PID", str(child.pid)))
    prog.attach_kprobe(event="futex_wait", fn_name="on_wait")
    prog.attach_kretprobe(event="futex_wait", fn_name="on_wait_return")
else:
    features.notice("kprobes", "the syscalls:sys_enter/exit_futex tracepoints")
    prog = Program(FUTEX_TRACEPOINTS.replace("TARGET_PID", str(child.pid)))
with prog:
    child.go()
    waits = pd.DataFrame([(k.tid, k.uaddr, v.value / 1e6) for k, v in prog["waited"].items()],
                         columns=["tid", "lock", "ms"])
on_mutex = waits[waits.lock == MUTEX_ADDR].sort_values("ms")
print(f"{on_mutex.tid.nunique()} threads slept on our mutex")
print(f"first served slept at least 40 ms: {on_mutex.ms.min() >= 40}; "
      f"last served at least 100 ms: {on_mutex.ms.max() >= 100}")

# %% tags=["nbval-ignore-output"]
ax = on_mutex.plot.barh(x="tid", y="ms", legend=False, figsize=(6, 2.5))
ax.set_xlabel("ms asleep waiting for the mutex")
ax.set_ylabel("thread")
plt.tight_layout()

# %% [markdown]
# The first thread served waited about 50 ms, the last about 50 + 3 x 20 ms
# (the cell above checks the lower bounds; the bars show this run's
# figures).
# The other futexes are mostly Python's own GIL (the threads take turns at
# it after each `ctypes` call) and the main thread's `join()`.

# %%
shutil.rmtree(workdir)

# %% [markdown]
# ## Recap
#
# * A **kprobe** runs your program at a kernel function's entry (or any
#   instruction); the arguments are in `pt_regs`. A **kretprobe** runs at the
#   return, with the return value in `PT_REGS_RC(ctx)`; anything from the
#   entry travels through a map keyed by thread id.
# * **fentry/fexit** reach the same places faster, with typed arguments, and
#   fexit sees arguments and return value together. They need BTF and the
#   ftrace trampoline, which this CI kernel refuses.
# * Internal functions change name, signature and shape (inlining, clones)
#   between kernels: pick from candidate lists, test on each kernel, and keep a
#   **tracepoint fallback** where one exists.
# * `features.available()` decides by trying, and `features.notice()` says in
#   one line what runs instead.
#
# **Questions to test yourself**
#
# 1. Why can a kretprobe not read the function's arguments, and how do you
#    get them anyway?
# 2. A kprobe on a `static` function never fires, although the code path
#    clearly runs. Give two possible reasons, and how to check each.
# 3. Why does a `sock:inet_sock_set_state` program see a source port of 0 at
#    `SYN_SENT`, and what should it key its records by?
# 4. `futex(FUTEX_WAIT | FUTEX_PRIVATE_FLAG)` has `op == 128`. What goes
#    wrong with `if (args->op == FUTEX_WAIT)`?
# 5. What does an fexit program receive that a kretprobe does not?
#
# <details><summary>Answers (click to open)</summary>
#
# 1. At the return, the registers that carried the arguments have long been
#    reused by the function (on x86_64 they are caller-saved), so `pt_regs`
#    no longer holds them. Save what you need at the entry, with a kprobe,
#    in a map keyed by thread id (the lower half of
#    `bpf_get_current_pid_tgid()`), look it up in the kretprobe and delete
#    it. Or use fexit, which has both.
# 2. (a) It was inlined into its callers, everywhere or at the call site
#    that runs: no call, no probe hit. Check `/proc/kallsyms` (no symbol:
#    fully inlined; a symbol: some call sites may still be inlined, which
#    the disassembly of the caller shows). (b) The calls go to a compiler
#    clone, `name.isra.0`, `name.constprop.0`, `name.part.0`: look for
#    `name.` in `/proc/kallsyms`, and probe the clone. (A third: the path
#    now runs through a renamed function; check the source of this
#    kernel's version.)
# 3. `tcp_v4_connect()` sets the state to `SYN_SENT` before it picks the
#    source port (`inet_hash_connect()` comes next), so at that transition
#    the port is still 0. The socket itself does not change: key the
#    records by the socket's address, `args->skaddr`, and fill in the ports
#    at the later transitions.
# 4. `op` carries flags as well as the command: with
#    `FUTEX_PRIVATE_FLAG` (128) it is 128, never 0, so the test is never
#    true and every private wait, which is what glibc uses for mutexes
#    inside one process, is missed. Compare `args->op & FUTEX_CMD_MASK`
#    (which also strips `FUTEX_CLOCK_REALTIME`, 256).
# 5. The function's arguments *and* its return value together, typed from
#    BTF (`ctx` holds the arguments, and the return value after them). A
#    kretprobe gets only the registers at the return, with the return
#    value in `PT_REGS_RC(ctx)`; the arguments must come from a kprobe at
#    the entry, through a map. fexit is also cheaper (the kernel calls the
#    program directly through a BPF trampoline), but needs BTF and ftrace,
#    which this CI kernel refuses.
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 5.1 | a kernel function tracer: calls and failures of `do_sys_openat2` per process, kprobe + kretprobe, with a tracepoint fallback | `labs/ch05/lab_5_1_function_tracer.ipynb` |
# | 5.2 | a TCP connection tracker: every socket's addresses, ports, states and owner, kprobe on `tcp_set_state` or `sock:inet_sock_set_state` | `labs/ch05/lab_5_2_tcp_tracker.ipynb` |
# | 5.3 | a lock contention analyzer: who sleeps on which mutex and how long, kprobe on `futex_wait` or the futex syscall tracepoints | `labs/ch05/lab_5_3_lock_contention.ipynb` |
#
# Each lab has you write the kprobe variant and the tracepoint fallback. The
# check runs the kprobe variant where kprobes exist (the course VM) and says
# in its PASS line which variant it judged.
