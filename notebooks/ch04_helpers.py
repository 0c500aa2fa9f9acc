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
# # Chapter 4: Helper functions
#
# **After this chapter you will be able to**
#
# * say what a helper function is, and find out which ones a program type may
#   call on the kernel in front of you;
# * tell who is running: process and thread ids, user and group, name, and
#   anything else in the kernel's `task_struct` (with headers you can trust);
# * take timestamps with the right clock and measure how long something took;
# * use the map helpers behind BCC's `lookup` / `update` / `delete`;
# * print debug lines with `bpf_trace_printk`, and explain why real tools
#   do not;
# * send events to user space through a perf buffer or a ring buffer, and
#   choose between them;
# * copy memory that your program may not touch directly with
#   `bpf_probe_read_user` / `bpf_probe_read_kernel`;
# * act on a process from the kernel with `bpf_send_signal`;
# * run the same helpers in user-space code: uprobes on a library function,
#   and USDT probes that a program ships with.
#
# Run the cells in order, top to bottom, with the **eBPF (root)** kernel.

# %% [markdown]
# ## 4.1 What a helper is
#
# A BPF program cannot call an arbitrary kernel function. It can call two
# kinds of kernel functions made for it: **helper functions**, each known by
# a number, and, since Linux 5.13, **kfuncs** (below). This chapter is about
# helpers, the older and still most used kind. The instruction is `call N`: the
# arguments go in registers `r1` to `r5`, the result comes back in `r0`
# (Chapter 3 shows the calling convention from the inside). The verifier
# knows each helper's *prototype*: which arguments must be pointers to
# the stack, to a map, to the context, and of what size. A wrong argument
# is a load-time error, not a crash.
#
# The helpers this chapter uses, by job:
#
# | job | helpers |
# |---|---|
# | who is running | `bpf_get_current_pid_tgid`, `bpf_get_current_uid_gid`, `bpf_get_current_comm`, `bpf_get_current_task`, `bpf_get_current_cgroup_id` |
# | what time it is | `bpf_ktime_get_ns`, `bpf_ktime_get_boot_ns`, `bpf_ktime_get_coarse_ns` |
# | state | `bpf_map_lookup_elem`, `bpf_map_update_elem`, `bpf_map_delete_elem` |
# | talking to user space | `bpf_trace_printk`, `bpf_perf_event_output`, `bpf_ringbuf_output` / `_reserve` / `_submit` |
# | reading memory | `bpf_probe_read_user(_str)`, `bpf_probe_read_kernel(_str)` |
# | acting | `bpf_send_signal`, `bpf_send_signal_thread` |
#
# The full list (about 210 on a 6.x kernel) is in `man 7 bpf-helpers` and in
# the kernel's `include/uapi/linux/bpf.h`. That list is no longer growing:
# the last helpers (`bpf_cgrp_storage_get`/`_delete`, numbers 210 and 211)
# came with Linux 6.2, and a comment after the list in `bpf.h` now says that
# it is effectively frozen and that new functions should be kfuncs.
#
# **kfuncs** are ordinary kernel functions that a subsystem has explicitly
# registered for BPF, for chosen program types. A program calls them by
# their BTF id, not by a number, and the verifier checks the call against
# the function's BTF prototype. Unlike helpers, they carry no promise of a
# stable interface: a kfunc can change or disappear between kernel
# versions, like any internal kernel function. Newer functionality
# (`bpf_task_from_pid`, `bpf_cpumask_*`, dynptr and iterator kfuncs, the
# `sched_ext` scheduler's calls...) arrives only as kfuncs. They are
# declared in C with `extern ... __ksym` and resolved by libbpf at load
# time (Chapter 10). BCC 0.26 cannot call them: it refuses the call with
# "cannot call non-static helper function". This kernel's BTF tags its
# kfuncs (`bpftool btf dump file /sys/kernel/btf/vmlinux | grep bpf_kfunc`
# lists them, on recent kernels).

# %%
import ctypes
import json
import mmap
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from bcc import USDT

from ebpf_tutor import EventCollector, Program, headers, log2_hist_df, plot_log2_hist, table_df
from ebpf_tutor.labs.workload import Child, marker_files, unique_name

# %% [markdown]
# Here is a helper call as the kernel receives it. BCC can disassemble the
# bytecode it compiled: each `call` names the helper and its number.

# %%
TWO_HELPERS = r"""
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u64 id = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    return (id ^ now) & 0;
}
"""
with Program(TWO_HELPERS) as prog:
    print(prog.disassemble_func("tracepoint__syscalls__sys_enter_getppid"))

# %% [markdown]
# Helper 14 and helper 5: those numbers are part of the kernel's stable
# interface, so a program compiled years ago still calls the same functions.
# (After loading, `bpftool prog dump xlated` shows them resolved to kernel
# addresses instead.)

# %% [markdown]
# ## 4.2 Which helpers may a program type call?
#
# Every program type has its own list. A packet program has no business
# with `bpf_override_return`; a tracepoint has no packet to adjust. Generic
# helpers (time, maps, the current process) have been opened to more and
# more program types over the kernel versions.
#
# `bpftool feature probe kernel` prints a list per type, but trust it only
# as far as bpftool understands the kernel. On the course's CI machine,
# bpftool v7.1 (libbpf 1.1) is much older than the 6.18 kernel, misreads its
# answers, and claims that every program type may call every helper:

# %% tags=["nbval-ignore-output"]
probe = json.loads(subprocess.run(["bpftool", "-j", "feature", "probe", "kernel"],
                                  capture_output=True, text=True).stdout)
claims = {k.removesuffix("_available_helpers"): v for k, v in probe["helpers"].items()}
print("bpftool says tracepoints may call bpf_xdp_adjust_head:",
      "bpf_xdp_adjust_head" in claims["tracepoint"])

# %% [markdown]
# The authority is the verifier. So ask it: compile one tiny function per
# (helper, program type) pair, load each as that type, and keep the
# verifier's verdict. One compile, a few dozen loads, about a second.

# %%
PROBE_CALLS = {
    "bpf_get_current_pid_tgid": "bpf_get_current_pid_tgid();",
    "bpf_get_current_comm": "char c[16]; bpf_get_current_comm(c, sizeof(c));",
    "bpf_ktime_get_ns": "bpf_ktime_get_ns();",
    "bpf_get_current_task": "bpf_get_current_task();",
    "bpf_probe_read_user": "u64 v; bpf_probe_read_user(&v, sizeof(v), (void *)8);",
    "bpf_send_signal": "bpf_send_signal(0);",
    "bpf_xdp_adjust_head": "bpf_xdp_adjust_head(ctx, 0);",
    "bpf_skb_load_bytes": "u64 v; bpf_skb_load_bytes(ctx, 0, &v, sizeof(v));",
    "bpf_override_return": "bpf_override_return(ctx, 0);",
}
PROG_TYPES = {"tracepoint": Program.TRACEPOINT, "xdp": Program.XDP,
              "socket_filter": Program.SOCKET_FILTER, "cgroup_skb": Program.CGROUP_SKB}


def helper_matrix() -> pd.DataFrame:
    """'yes', or the verifier's reason, for each helper in each program type."""
    src = "\n".join(f"int h{i}_{j}(void *ctx) {{ {call} return 1; }}"
                    for i, call in enumerate(PROBE_CALLS.values()) for j in range(len(PROG_TYPES)))
    rows = {}
    with Program(src) as prog:
        for i, helper in enumerate(PROBE_CALLS):
            row = {}
            for j, (type_name, prog_type) in enumerate(PROG_TYPES.items()):
                try:
                    prog.load_func(f"h{i}_{j}", prog_type)
                    row[type_name] = "yes"
                except Exception as e:   # the verifier's refusal, as a BpfError
                    row[type_name] = "no" if "cannot use helper" in str(e) else "error"
            rows[helper] = row
    return pd.DataFrame(rows).T


matrix = helper_matrix()
matrix

# %% [markdown]
# On this kernel (6.18, as root), everything about the *current process* is
# available to every type, even XDP, which runs in whatever task the packet
# happened to interrupt (so the answer means little there). Packet helpers
# belong to packet programs. `bpf_override_return` belongs to kprobes alone,
# and only on kernels built with `CONFIG_BPF_KPROBE_OVERRIDE` (this one has
# no kprobes at all). An older kernel gives a different table; that is the
# point of probing.
#
# (Each function gets its own name because BCC caches loaded functions by
# name: loading `f` a second time as another type would silently return the
# first result.)

# %% [markdown]
# ## 4.3 Who is running: pid, tgid, uid, gid, comm
#
# In the kernel a **task** is a thread. Its `pid` is what user space calls
# the *thread id*; the threads of one process share a **tgid** (thread group
# id), which user space calls the *process id*. One helper returns both:
#
# ```
# u64 id = bpf_get_current_pid_tgid();   // tgid << 32 | pid
# u32 tgid = id >> 32;                   // os.getpid()
# u32 tid  = (u32)id;                    // threading.get_native_id()
# ```
#
# `bpf_get_current_uid_gid()` packs the same way (`gid << 32 | uid`), and
# `bpf_get_current_comm()` copies the task's 16-byte name. Let us watch the
# `getppid` system call, made by this notebook's main thread and by two
# extra threads.

# %%
WHO = r"""
struct who_t {
    u32 tgid;
    u32 tid;
    u32 uid;
    u32 gid;
    char comm[16];
};
BPF_HASH(seen, u32, struct who_t);       // thread id -> what the helpers said

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u64 id = bpf_get_current_pid_tgid();
    if (id >> 32 != NOTEBOOK_PID)
        return 0;
    u64 ugid = bpf_get_current_uid_gid();
    struct who_t w = {.tgid = id >> 32, .tid = (u32)id, .uid = (u32)ugid, .gid = ugid >> 32};
    bpf_get_current_comm(&w.comm, sizeof(w.comm));
    u32 tid = id;
    seen.update(&tid, &w);
    return 0;
}
"""

native_ids, comms = {}, {}


def call_getppid(label: str) -> None:
    """getppid() from the calling thread; note the thread's id and name first."""
    native_ids[label] = threading.get_native_id()
    comms[label] = Path("/proc/thread-self/comm").read_text().strip()
    os.getppid()


with Program(WHO, cflags=[f"-DNOTEBOOK_PID={os.getpid()}"]) as prog:
    call_getppid("main")
    for label in ("worker-1", "worker-2"):
        t = threading.Thread(target=call_getppid, args=(label,), name=label)
        t.start()
        t.join()
    who = table_df(prog["seen"], key="key_tid")

# %% [markdown]
# `pid_tgid` matches Python's view exactly: one tgid for all, one tid per
# thread.

# %%
by_tid = who.set_index("tid")
for label, tid in native_ids.items():
    if tid not in by_tid.index:
        print(f"{label:9} BPF never saw thread {tid}")
        continue
    row = by_tid.loc[tid]
    print(f"{label:9} seen under its native id: True   tgid == os.getpid(): "
          f"{row.tgid == os.getpid()}   uid: {row.uid}   comm as in /proc: {row.comm == comms[label]}")

# %% [markdown]
# The comm is the *thread's* name: a new thread inherits its creator's,
# and each thread may rename itself (`prctl(PR_SET_NAME)`), so the threads of
# one process can carry different names. Here are the rows:

# %% tags=["nbval-ignore-output"]
who

# %% [markdown]
# If a fourth row appears, it is not a mistake: the notebook's kernel has a
# thread that calls `getppid()` about once a second, to notice when the
# process that started it has died. Filtering by process lets it in. When a
# demo below must count exactly, it filters by **thread** instead: the
# notebook's main thread, whose id Python gives as `threading.get_native_id()`.

# %%
MAIN_THREAD = [f"-DTHREAD_ID={threading.get_native_id()}"]

# %% [markdown]
# Now the user: a fresh copy of `/bin/true` run as `nobody` (uid and gid
# 65534). `sched:sched_process_exec` fires in the new program, so the comm
# is already the new name.

# %%
UIDS = r"""
struct name_t { char comm[16]; };
BPF_HASH(ran_as, struct name_t, u64);    // program name -> gid << 32 | uid

TRACEPOINT_PROBE(sched, sched_process_exec) {
    struct name_t key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 ugid = bpf_get_current_uid_gid();
    ran_as.update(&key, &ugid);
    return 0;
}
"""
folder = Path(tempfile.mkdtemp(prefix="ebt-ch04-"))
folder.chmod(0o755)
fresh = folder / unique_name("ebt")
shutil.copy("/bin/true", fresh)
with Program(UIDS) as prog:
    subprocess.run([str(fresh)], user=65534, group=65534, check=True)
    runs = table_df(prog["ran_as"])
shutil.rmtree(folder)
ugid = int(runs.set_index("comm").loc[fresh.name, "value"])
print(f"our fresh program ran as uid={ugid & 0xFFFFFFFF}, gid={ugid >> 32}")

# %% [markdown]
# ## 4.4 Beyond the helpers: the task struct
#
# The helpers give a handful of facts. Everything else the kernel knows about
# the current thread is in its `struct task_struct`: the parent, the
# credentials, the namespaces, the memory map, the exit code.
# `bpf_get_current_task()` returns a pointer to it, and
# `bpf_probe_read_kernel()` copies fields out of it, safely: if the pointer
# is bad the read fails with an error code instead of crashing.
#
# Reading the parent's process id takes two reads, the pointer and then the
# field:
#
# ```
# struct task_struct *task = (struct task_struct *)bpf_get_current_task();
# struct task_struct *parent;
# bpf_probe_read_kernel(&parent, sizeof(parent), &task->real_parent);
# bpf_probe_read_kernel(&ppid, sizeof(ppid), &parent->tgid);
# ```
#
# BCC lets you write `task->real_parent->tgid` instead, and rewrites it into
# those reads. Either way, the *offsets* (where `real_parent` sits inside
# `task_struct`) come from the kernel headers BCC compiles with.

# %%
PARENT = r"""
#include <linux/sched.h>

struct parent_t {
    u32 ppid_by_hand;
    u32 ppid_by_bcc;
    char parent_comm[16];
};
BPF_ARRAY(result, struct parent_t, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if (bpf_get_current_pid_tgid() >> 32 != NOTEBOOK_PID)
        return 0;
    struct parent_t r = {};
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct task_struct *parent;
    bpf_probe_read_kernel(&parent, sizeof(parent), &task->real_parent);
    bpf_probe_read_kernel(&r.ppid_by_hand, sizeof(r.ppid_by_hand), &parent->tgid);
    bpf_probe_read_kernel_str(&r.parent_comm, sizeof(r.parent_comm), &parent->comm);
    r.ppid_by_bcc = task->real_parent->tgid;
    int zero = 0;
    result.update(&zero, &r);
    return 0;
}
"""
with Program(PARENT, cflags=[f"-DNOTEBOOK_PID={os.getpid()}"]) as prog:
    truth = os.getppid()
    r = prog["result"][0]
print("by hand == os.getppid():", r.ppid_by_hand == truth)
print("by BCC  == os.getppid():", r.ppid_by_bcc == truth)
print("parent comm matches /proc:",
      r.parent_comm.decode() == Path(f"/proc/{truth}/comm").read_text().strip())

# %% [markdown]
# This works only because the headers are right. Headers from another kernel
# version still compile, and then read the wrong bytes, silently: with
# Debian's 6.1 headers on this 6.18 kernel, `real_parent->tgid` read 0. The
# course never trusts headers: it compares the offset of every member of
# every struct they define with the kernel's own BTF type information,
# rewrites from BTF the structs that disagree, and makes any struct it
# cannot fix fail to compile with a message that names it. The cell below
# shows a few of the fields it checks.

# %%
status = headers.ensure(log=lambda *_: None, prepare=False)
layouts = pd.DataFrame([{"field": c.field, "offset in headers": c.headers, "offset in BTF": c.btf}
                        for c in status.checks if c.field.startswith("task_struct")])
print(f"{len(status.checks)} layouts checked, all equal to BTF: {status.verified}")

# %% tags=["nbval-ignore-output"]
layouts

# %% [markdown]
# (Chapter 10 goes further: CO-RE programs carry the names of the fields
# they read, and libbpf fixes the offsets at load time from BTF, so one
# binary runs on many kernels.)

# %% [markdown]
# ## 4.5 What time is it?
#
# BPF has no wall clock. It has the kernel's clocks in nanoseconds:
#
# | helper | clock | counts while suspended | use for |
# |---|---|---|---|
# | `bpf_ktime_get_ns()` | `CLOCK_MONOTONIC` | no | durations (the usual choice) |
# | `bpf_ktime_get_boot_ns()` | `CLOCK_BOOTTIME` | yes | timestamps you compare across a suspend |
# | `bpf_ktime_get_coarse_ns()` | `CLOCK_MONOTONIC_COARSE` | no | cheap, millisecond-ish resolution |
#
# Python reads the same clocks with `time.clock_gettime_ns()`, so a kernel
# timestamp can be placed between two user-space ones.

# %%
CLOCKS = r"""
struct stamp_t { u64 mono; u64 boot; };
BPF_ARRAY(stamp, struct stamp_t, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((u32)bpf_get_current_pid_tgid() != THREAD_ID)
        return 0;
    struct stamp_t s = {.mono = bpf_ktime_get_ns(), .boot = bpf_ktime_get_boot_ns()};
    int zero = 0;
    stamp.update(&zero, &s);
    return 0;
}
"""
with Program(CLOCKS, cflags=MAIN_THREAD) as prog:
    mono0, boot0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    os.getppid()
    mono1, boot1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    s = prog["stamp"][0]
print("bpf_ktime_get_ns      within Python's CLOCK_MONOTONIC window:", mono0 <= s.mono <= mono1)
print("bpf_ktime_get_boot_ns within Python's CLOCK_BOOTTIME window: ", boot0 <= s.boot <= boot1)

# %% [markdown]
# The difference between the two clocks is the time this machine has spent
# suspended, and to turn an event's monotonic timestamp into a date, add the
# offset between the wall clock and the monotonic clock, measured in user
# space:

# %% tags=["nbval-ignore-output"]
offset = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
print(f"suspended so far: {(s.boot - s.mono) / 1e9:.3f} s")
print("the getppid call happened at", pd.Timestamp(s.mono + offset, unit="ns", tz="UTC"))

# %% [markdown]
# ## 4.6 Map helpers: measuring a duration
#
# A duration needs two events and some memory in between: store the time at
# the start, look it up at the end, subtract, forget. Maps are that memory,
# through three helpers (Chapter 2 covers the map types):
#
# | helper | BCC method | returns |
# |---|---|---|
# | `bpf_map_lookup_elem(map, &key)` | `m.lookup(&key)` | a pointer to the value, or NULL |
# | `bpf_map_update_elem(map, &key, &val, flags)` | `m.update(&key, &val)` (`BPF_ANY`), `m.insert(...)` (`BPF_NOEXIST`) | 0 or an error |
# | `bpf_map_delete_elem(map, &key)` | `m.delete(&key)` | 0 or `-ENOENT` |
#
# The pointer from `lookup` points into the map itself: writing through it
# changes the stored value (use `__sync_fetch_and_add` when several CPUs may
# write at once). The verifier insists on the NULL check.
#
# The key for "the call this thread is in" is the **thread id**: two threads
# of one process can be inside system calls at the same time. Here we time
# 20 000 `getppid` calls and keep a log2 histogram in nanoseconds.

# %%
SYSCALL_LATENCY = r"""
BPF_HASH(start, u32, u64);          // thread id -> entry time
BPF_HISTOGRAM(latency_ns);          // log2 slot -> count

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u32 tid = bpf_get_current_pid_tgid();
    if (tid != THREAD_ID)
        return 0;
    u64 now = bpf_ktime_get_ns();
    start.update(&tid, &now);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_getppid) {
    u32 tid = bpf_get_current_pid_tgid();
    u64 *t0 = start.lookup(&tid);
    if (!t0)
        return 0;                   // not ours, or began before we attached
    latency_ns.increment(bpf_log2l(bpf_ktime_get_ns() - *t0));
    start.delete(&tid);
    return 0;
}
"""
with Program(SYSCALL_LATENCY, cflags=MAIN_THREAD) as prog:
    for _ in range(20_000):
        os.getppid()
    hist = log2_hist_df(prog["latency_ns"])
print("calls timed:", hist["count"].sum())

# %% tags=["nbval-ignore-output"]
ax = plot_log2_hist(hist, unit="ns", title="getppid(): time from sys_enter to sys_exit")
ax.set_yscale("log")                      # so the rare slow calls show too

# %% [markdown]
# Most calls land in one or two buckets of a few hundred nanoseconds (the
# time between the two tracepoints, not the full cost a program sees); the
# rare long ones are the thread being interrupted. The histogram was filled
# in the kernel: Python read 64 numbers, not 20 000 events.

# %% [markdown]
# ## 4.7 `bpf_trace_printk`: the debugging printf
#
# `bpf_trace_printk(fmt, ...)` formats a line into the kernel's trace
# buffer, read from `/sys/kernel/tracing/trace_pipe` (BCC:
# `prog.trace_print()` or `prog.trace_fields()`). It is the quickest way to
# see that a probe fires:

# %% tags=["nbval-ignore-output"]
PRINTK = r"""
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u64 id = bpf_get_current_pid_tgid();
    if (id >> 32 == NOTEBOOK_PID)
        bpf_trace_printk("getppid from tid %d at %llu\n", (u32)id, bpf_ktime_get_ns());
    return 0;
}
"""
with Program(PRINTK, cflags=[f"-DNOTEBOOK_PID={os.getpid()}"]) as prog:
    os.getppid()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        fields = prog.trace_fields(nonblocking=True)
        if fields[0] is None:
            time.sleep(0.01)
        elif fields[1] == os.getpid():
            print(fields[5].decode())
            break

# %% [markdown]
# And that is all it is good for. Do not build on it:
#
# * **One buffer for the whole machine.** Every program's printk lines, from
#   every tool and every user, land in the same `trace_pipe`.
# * **Reads are destructive.** Two readers steal lines from each other; the
#   cell above may miss its line if something else is reading (which is why
#   its output is not checked).
# * **At most three arguments** (`bpf_trace_vprintk`, Linux 5.16, takes
#   more), formatted into text in the kernel at every call: slow on a hot
#   path. (Kernels from before 2023 also took a global lock for it.) The kernel
#   even prints a warning banner in the log the first time a program using
#   it is loaded.
# * **Text**, which user space must parse back.
#
# Real tools send structured records through a ring buffer, or aggregate in
# maps.

# %% [markdown]
# ## 4.8 Sending events: perf buffer or ring buffer
#
# When user space needs each event (a process started, a file was opened),
# the program writes a record into a buffer that user space drains:
#
# | | perf buffer (`BPF_PERF_OUTPUT`) | ring buffer (`BPF_RINGBUF_OUTPUT`) |
# |---|---|---|
# | kernel | 4.4+ | 5.8+ |
# | layout | one buffer **per CPU** | one buffer **shared** by all CPUs |
# | order | per CPU only: events from two CPUs can arrive out of order | the order in which they were written |
# | memory | `pages × CPUs` | `pages`, sized for the total |
# | write | `events.perf_submit(ctx, &ev, sizeof(ev))` (a copy) | `events.ringbuf_output(&ev, sizeof(ev), 0)` (a copy) or `ringbuf_reserve` + `ringbuf_submit` (write in place) |
# | when full | the record is lost, user space is told how many | the write fails, the program can count it |
#
# `ebpf_tutor.EventCollector` reads either kind. Its callback only copies
# bytes; `drain()` decodes everything at once into a DataFrame, using the C
# struct BCC found in the program.
#
# This program writes every `getppid` of this notebook to both kinds of
# buffer, with a sequence number from a shared counter, so we can see the
# order. Two threads make the calls, each pinned on its own CPU, and they
# take turns, call by call: so the sequence numbers alternate between the
# two CPUs, and no two writes ever overlap in time.

# %%
EVENTS = r"""
struct event_t {
    u64 seq;
    u64 ts;
    u32 cpu;
    u32 tid;
};
BPF_ARRAY(counter, u64, 1);
BPF_PERF_OUTPUT(perf_events);
BPF_RINGBUF_OUTPUT(ring_events, 256);        // 256 pages = 1 MiB, for all CPUs

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u64 id = bpf_get_current_pid_tgid();
    if (id >> 32 != NOTEBOOK_PID)
        return 0;
    int zero = 0;
    u64 *c = counter.lookup(&zero);
    if (!c)
        return 0;
    struct event_t ev = {.seq = __sync_fetch_and_add(c, 1), .ts = bpf_ktime_get_ns(),
                         .cpu = bpf_get_smp_processor_id(), .tid = (u32)id};
    perf_events.perf_submit(args, &ev, sizeof(ev));

    struct event_t *slot = ring_events.ringbuf_reserve(sizeof(struct event_t));
    if (!slot)
        return 0;                            // full: nothing to submit
    *slot = ev;
    ring_events.ringbuf_submit(slot, 0);
    return 0;
}
"""


def stop_reading(events: EventCollector) -> None:
    """Close a perf buffer's per-CPU readers while its map still exists.
    (BCC 0.26 closes them only when Python garbage-collects the table; if
    that happens after the program is gone, it prints a harmless KeyError.)"""
    for cpu in list(events.table._open_key_fds):
        del events.table[cpu]


worker_ids: set[int] = set()
TWO_CPUS = sorted(os.sched_getaffinity(0))[:2]    # two CPUs this notebook may run on


def getppid_from_threads(calls: int) -> None:
    """`calls` getppid() in each of two threads, pinned one on each CPU of
    TWO_CPUS, strictly taking turns (thread 0, thread 1, thread 0, ...)."""
    turns = [threading.Semaphore(1), threading.Semaphore(0)]

    def work(i: int) -> None:
        os.sched_setaffinity(0, {TWO_CPUS[i]})   # 0 = the calling thread only
        worker_ids.add(threading.get_native_id())
        for _ in range(calls):
            turns[i].acquire()                    # wait for our turn
            os.getppid()
            turns[1 - i].release()                # then hand it over

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


with Program(EVENTS, cflags=[f"-DNOTEBOOK_PID={os.getpid()}"]) as prog:
    perf = EventCollector(prog, "perf_events")
    ring = EventCollector(prog, "ring_events")
    for _ in range(10):                      # 10 rounds of 2 x 100 calls, draining in between
        getppid_from_threads(100)
        perf.poll(0)
        ring.poll(0)
    perf_df, ring_df = perf.drain(), ring.drain()
    stop_reading(perf)
print("perf buffer:", perf_df["tid"].isin(worker_ids).sum(), "events from our threads, lost", perf.lost)
print("ring buffer:", ring_df["tid"].isin(worker_ids).sum(), "events from our threads")
print("ring buffer arrives in write order:", ring_df["seq"].is_monotonic_increasing)

# %% [markdown]
# Both got all 2000. The ring buffer hands them over in the order they were
# written. The perf buffer has one buffer per CPU and hands them over CPU by
# CPU: here the writes alternated between two CPUs, so each drain returns
# all of one CPU's events (sequence numbers 0, 2, 4, ... or 1, 3, 5, ...),
# then the other's. Order holds only within a CPU; to merge the two, sort
# on a timestamp or sequence number carried in the event:

# %%
ours = perf_df[perf_df["tid"].isin(worker_ids)]
per_cpu = ours.groupby("cpu").size()
print(f"events from {len(per_cpu)} CPUs: {' and '.join(str(n) for n in per_cpu)}")
print("perf buffer arrives in write order:", ours["seq"].is_monotonic_increasing)
print("but each CPU's events arrive in their order:",
      all(seq.is_monotonic_increasing for _, seq in ours.groupby("cpu")["seq"]))

# %% [markdown]
# A perf buffer that is not drained in time loses records: each CPU has a
# buffer of fixed size. BCC's `open_perf_buffer()` defaults to 8 pages per
# CPU; `EventCollector` asks for 64 (`page_cnt=64`). Each record of the
# program below takes 24 bytes in the buffer: an 8-byte header, a 4-byte
# size, the 8-byte event, padded to a multiple of 8. Write 20,000 events
# from one CPU without polling, and only as many as fit arrive; the kernel
# counts the others, and reports the count *inside the buffer*, as a "lost"
# record written just before the next event that fits: so we read what
# arrived, make one more event, and read again.

# %%
LOSSY = r"""
struct event_t { u64 ts; };
BPF_PERF_OUTPUT(perf_events);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((u32)bpf_get_current_pid_tgid() != THREAD_ID)
        return 0;
    struct event_t ev = {.ts = bpf_ktime_get_ns()};
    perf_events.perf_submit(args, &ev, sizeof(ev));
    return 0;
}
"""
PAGES, RECORD = 64, 24
fits = PAGES * mmap.PAGESIZE // RECORD
everywhere = os.sched_getaffinity(0)
os.sched_setaffinity(0, {min(everywhere)})        # this thread on one CPU: one buffer
with Program(LOSSY, cflags=MAIN_THREAD) as prog:
    perf = EventCollector(prog, "perf_events", page_cnt=PAGES)
    for _ in range(20_000):
        os.getppid()
    perf.poll(0)
    os.getppid()                                  # event 20 001 carries the loss report
    got = len(perf.drain())
    stop_reading(perf)
os.sched_setaffinity(0, everywhere)
print(f"{PAGES} pages of {mmap.PAGESIZE} bytes hold {fits} records of {RECORD} bytes")
print(f"received {got}: the {fits} that fitted, and the one written after the drain? "
      f"{got == fits + 1}")
print(f"lost {perf.lost} ({perf.lost / 20_001:.0%}); all 20001 accounted for? "
      f"{got + perf.lost == 20_001}")

# %% [markdown]
# What does each choice cost? Time `getppid` calls in batches of 1000, with
# no program, with `perf_submit` and with `ringbuf_output`, and separately
# the time Python then spends draining the events. The best of 20 batches
# is kept, to see the cost rather than the noise of a shared machine.

# %% tags=["nbval-ignore-output"]
COST = r"""
struct event_t { u64 ts; u32 tid; u32 pad; };
BPF_PERF_OUTPUT(perf_events);
BPF_RINGBUF_OUTPUT(ring_events, 256);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u32 tid = bpf_get_current_pid_tgid();
    if (tid != THREAD_ID)
        return 0;
    struct event_t ev = {.ts = bpf_ktime_get_ns(), .tid = tid};
    OUTPUT;
    return 0;
}
"""


def ns_per_event(output: str | None) -> dict[str, float]:
    """Best-of-20 ns per getppid() in the calling loop, and per event drained."""
    def batches(events: EventCollector | None) -> dict[str, float]:
        loop, drain = [], []
        for _ in range(20):
            t0 = time.perf_counter_ns()
            for _ in range(1000):
                os.getppid()
            t1 = time.perf_counter_ns()
            if events is not None:
                events.poll(0)
            loop.append((t1 - t0) / 1000)
            drain.append((time.perf_counter_ns() - t1) / 1000)
        return {"in the traced loop": min(loop), "draining in Python": min(drain)}

    if output is None:
        return batches(None)
    text = COST.replace("OUTPUT;", output + ";")   # BCC cannot expand map calls from macros
    with Program(text, cflags=MAIN_THREAD) as prog:
        events = EventCollector(prog, "ring_events" if "ring" in output else "perf_events")
        cost = batches(events)
        if "perf" in output:
            stop_reading(events)
        return cost


costs = pd.DataFrame({
    "no program": ns_per_event(None),
    "perf_submit": ns_per_event("perf_events.perf_submit(args, &ev, sizeof(ev))"),
    "ringbuf_output": ns_per_event("ring_events.ringbuf_output(&ev, sizeof(ev), 0)"),
}).T
ax = costs.plot.barh(stacked=True, figsize=(7, 2.4), color=["#4C72B0", "#DD8452"])
ax.set_xlabel("ns per getppid() call from Python")
ax.invert_yaxis()
plt.tight_layout()
costs.round(0)

# %% [markdown]
# Read the bars as differences from "no program". On this machine the perf
# buffer costs the traced thread far more per event than the ring buffer.
# Most of it is not the copy but the **wakeup**: BCC opens perf buffers with
# `wakeup_events=1`, so every single event signals the reader. The ring
# buffer wakes the reader only when it was caught up, and
# `BPF_RB_NO_WAKEUP` / `BPF_RB_FORCE_WAKEUP` let the program choose. The
# orange part is Python's: one ctypes callback per event, which is why
# `EventCollector` does as little as possible there and decodes in bulk.
# Chapter 13 measures whole pipelines.
#
# The rule of thumb: on a 5.8+ kernel use the ring buffer (ordered, one
# shared memory area, `reserve`/`submit` without a copy); keep the perf
# buffer for old kernels.

# %% [markdown]
# ## 4.9 Reading memory: `bpf_probe_read_user` and `bpf_probe_read_kernel`
#
# A tracing program may not dereference just any pointer. Two kinds need a
# copy helper:
#
# * **user memory**, such as the file name passed to `openat`: it belongs to
#   the process, may not be mapped, and may even be swapped out. Use
#   `bpf_probe_read_user(dst, size, src)`, or `bpf_probe_read_user_str` for a
#   NUL-terminated string (it returns the length copied, or a negative error).
# * **kernel memory** reached through a pointer, as in section 4.4:
#   `bpf_probe_read_kernel(_str)`.
#
# Both copy into your program's stack (or a map value), never beyond `size`,
# and fail cleanly instead of faulting. Let us catch the names of the files
# this notebook opens, with a fresh folder of marker files as the known
# workload.

# %%
OPENS = r"""
struct open_t {
    s32 len;                 // what bpf_probe_read_user_str returned
    char name[200];
};
BPF_RINGBUF_OUTPUT(opens, 64);

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    if (bpf_get_current_pid_tgid() >> 32 != NOTEBOOK_PID)
        return 0;
    struct open_t *ev = opens.ringbuf_reserve(sizeof(struct open_t));
    if (!ev)
        return 0;
    ev->len = bpf_probe_read_user_str(ev->name, sizeof(ev->name), args->filename);
    opens.ringbuf_submit(ev, 0);
    return 0;
}
"""
markers_dir, markers = marker_files(3, prefix="ebt-ch04")
with Program(OPENS, cflags=[f"-DNOTEBOOK_PID={os.getpid()}"]) as prog:
    opened = EventCollector(prog, "opens")
    for f in markers:
        f.read_bytes()
    names = opened.drain()
ours = names[names["name"].str.startswith(str(markers_dir))]
for _, row in ours.iterrows():
    print(f"{Path(row['name']).name:14} {row['len']} bytes copied (with the NUL)")
shutil.rmtree(markers_dir)

# %% [markdown]
# The event was reserved directly in the ring buffer (200 bytes is a big
# chunk of the 512-byte BPF stack), and the string copied straight into it.
# A name longer than the buffer is cut, and `len` tells you so.
#
# "Fail cleanly" has a cost. A tracepoint or kprobe program may not sleep,
# so `bpf_probe_read_user` runs with page faults disabled: if the page
# holding the string is not in memory at that moment (never touched yet,
# swapped out, a file page not yet read), the copy fails with `-EFAULT`
# instead of bringing the page in, and the program sees nothing, although
# the address was right. At `sys_enter_openat` that happens to names the
# process has not touched yet, for example a string constant on a page of
# the binary that was never read.
#
# The fix is a **sleepable** program: loaded with the `BPF_F_SLEEPABLE`
# flag (libbpf section names ending in `.s`: `fentry.s/`, `lsm.s/`,
# `iter.s/`, `uprobe.s/`), it may call `bpf_copy_from_user()` (Linux 5.10),
# which takes the page fault and waits for the page like the kernel's own
# `copy_from_user()` does. Only some program types can be sleepable
# (fentry/fexit, LSM, iterators, uprobes...), not classic tracepoints or
# kprobes; BCC 0.26's `load_func()` has no way to pass the flag, and this
# kernel refuses fentry and LSM programs anyway. The common workaround
# without sleeping: save the pointer at `sys_enter_openat` (in a map keyed by
# thread id) and read the string at `sys_exit_openat`. By then the kernel's
# own copy of the name has faulted the page in, so the read almost always
# succeeds.

# %% [markdown]
# ## 4.10 Acting: `bpf_send_signal`
#
# Most helpers observe; a few act. `bpf_send_signal(sig)` sends a signal to
# the **current process** (`bpf_send_signal_thread` to the current thread)
# from inside the kernel, at the moment the probe fires. Here,
# any process whose pid is in the map `doomed` is killed with `SIGKILL` as
# soon as it tries to sleep.
#
# The victim is a shell that waits for a line, then becomes `sleep 30`
# (`exec` keeps the pid). We put its pid in the map before letting it go,
# so nothing else on the machine can be hit.

# %%
KILLER = r"""
BPF_HASH(doomed, u32, u8);

TRACEPOINT_PROBE(syscalls, sys_enter_clock_nanosleep) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (doomed.lookup(&tgid))
        bpf_send_signal(9);                 // SIGKILL
    return 0;
}
"""
with Program(KILLER) as prog:
    victim = subprocess.Popen(["sh", "-c", "read go; exec sleep 30"], stdin=subprocess.PIPE)
    prog["doomed"][prog["doomed"].Key(victim.pid)] = prog["doomed"].Leaf(1)
    t0 = time.monotonic()
    victim.communicate(b"go\n", timeout=10)
    lived = time.monotonic() - t0
print(f"'sleep 30' ended with return code {victim.returncode} "
      f"(-9: killed by SIGKILL) after less than a second: {lived < 1}")

# %% [markdown]
# This is how BPF security tools stop a process on the spot. The signal is
# delivered on the way back to user space; the system call itself still
# runs (here, the sleep is cut short by the kill). Refusing an operation
# outright is the job of LSM and cgroup programs (Chapters 9 and 11).

# %% [markdown]
# ## 4.11 User space: uprobes and USDT
#
# Everything so far ran at kernel hooks. The same programs, with the same
# helpers, can run when a *user-space* function is called.
#
# A **uprobe** is a breakpoint that the kernel writes into a user program or
# library, at a function's address in the file. Since it patches the file's
# page in the page cache, every process that maps the file hits it; the
# `pid=` argument of BCC's `attach_uprobe()` keeps only one process. The
# program gets the user registers in `struct pt_regs`: on x86_64 the same
# calling convention as in the kernel, so `PT_REGS_PARM1(ctx)` is the first
# argument. A **uretprobe** fires when the function returns (the kernel
# swaps the return address on the user stack for a trampoline of its own),
# with the return value in `PT_REGS_RC(ctx)`. As with kprobes, the
# arguments are gone by then: keep them in a map keyed by thread id.
#
# Each hit is a trap into the kernel and back, far more than the call
# itself costs: probe functions called thousands of times a second, not
# millions. And pointers in the arguments point to user memory: read them
# with `bpf_probe_read_user` (section 4.9).
#
# A child process calls libc's `labs()` five times, on -1 to -5; a uprobe
# saves each argument, a uretprobe pairs it with the result. `name="c"` asks
# BCC to find the C library.

# %%
UPROBES = r"""
#include <uapi/linux/ptrace.h>
BPF_HASH(arg_of, u32, long);        // thread id -> argument at entry
BPF_HASH(results, long, long);      // argument -> return value

int on_labs(struct pt_regs *ctx) {
    u32 tid = bpf_get_current_pid_tgid();
    long n = PT_REGS_PARM1(ctx);
    arg_of.update(&tid, &n);
    return 0;
}

int on_labs_return(struct pt_regs *ctx) {
    u32 tid = bpf_get_current_pid_tgid();
    long *n = arg_of.lookup(&tid);
    if (!n)
        return 0;
    long ret = PT_REGS_RC(ctx);
    results.update(n, &ret);
    arg_of.delete(&tid);
    return 0;
}
"""
libc = ctypes.CDLL(None)


def call_labs():
    for n in range(-1, -6, -1):
        libc.labs(ctypes.c_long(n))


child = Child(call_labs)
with Program(UPROBES) as prog:
    prog.attach_uprobe(name="c", sym="labs", fn_name="on_labs", pid=child.pid)
    prog.attach_uretprobe(name="c", sym="labs", fn_name="on_labs_return", pid=child.pid)
    child.go()
    seen = sorted(((k.value, v.value) for k, v in prog["results"].items()), reverse=True)
for arg, ret in seen:
    print(f"labs({arg}) returned {ret}")

# %% [markdown]
# Lab 4.3 builds a memory profiler this way, on `malloc` and `free`.
#
# A uprobe needs a symbol, and function names and arguments are internal
# details of a program, as kernel functions are for kprobes. **USDT**
# (user statically defined tracing) probes are the user-space counterpart
# of tracepoints: markers the program's authors compiled in (`DTRACE_PROBE`
# from `<sys/sdt.h>`) at meaningful places, with documented arguments. Each
# one is a single `nop` instruction plus a note in the ELF file
# (`.note.stapsdt`) saying where the arguments are; a tracer turns the `nop`
# into a uprobe. Some probes are guarded by a *semaphore*, a counter that
# the program tests before preparing costly arguments; the tracer must
# raise it, which BCC's `USDT(pid=...)` does in a running process.
#
# Debian's Python interpreter has such probes. `readelf -n` lists the notes:

# %%
notes = subprocess.run(["readelf", "-n", os.path.realpath("/usr/bin/python3")],
                       capture_output=True, text=True).stdout
print(sorted(set(re.findall(r"Name: (\w+)", notes.split("stapsdt", 1)[1]))))

# %% [markdown]
# `function__return` fires each time a Python function returns, with the
# file name, the function name and the line number as arguments 1 to 3.
# (`function__entry` never fires on Python 3.11, a CPython bug, gh-98894.)
# A child runs `ch04_marker()` four times; the program counts returns by
# function name, read from the child's memory with
# `bpf_probe_read_user_str`:

# %%
USDT_RETURNS = r"""
struct name_t { char name[32]; };
BPF_HASH(returns, struct name_t, u64);

int on_return(struct pt_regs *ctx) {
    u64 addr = 0;
    struct name_t key = {};
    bpf_usdt_readarg(2, ctx, &addr);          // argument 2: the function's name
    bpf_probe_read_user_str(&key.name, sizeof(key.name), (void *)addr);
    returns.increment(key);
    return 0;
}
"""


def ch04_marker():
    return 1


def call_marker():
    for _ in range(4):
        ch04_marker()


child = Child(call_marker)
usdt = USDT(pid=child.pid)
usdt.enable_probe(probe="function__return", fn_name="on_return")
with Program(USDT_RETURNS, usdt_contexts=[usdt]) as prog:
    child.go()
    returns = {k.name.decode(): v.value for k, v in prog["returns"].items()}
print(f"ch04_marker returned {returns.get('ch04_marker', 0)} times, "
      f"call_marker {returns.get('call_marker', 0)} time")

# %% [markdown]
# Databases, language runtimes and libraries ship USDT probes (PostgreSQL,
# the JVM, Node.js, ...): `tplist-bpfcc -l <binary>` or `readelf -n` show
# what a binary offers.

# %% [markdown]
# ## Recap
#
# * Helpers are the kernel functions a BPF program may call, by number,
#   with arguments the verifier checks. Which ones a program type may call
#   depends on the kernel: probe it by loading, not by reading a list.
# * `bpf_get_current_pid_tgid()` gives `tgid << 32 | tid`: the process id is
#   the upper half. The task struct has the rest, read with
#   `bpf_probe_read_kernel` at offsets from headers that must match the
#   kernel (the course checks them against BTF).
# * `bpf_ktime_get_ns()` is the monotonic clock, right for durations; store
#   the start in a map keyed by thread id, subtract at the end.
# * `bpf_trace_printk` is for a quick look only. Events go through a ring
#   buffer (ordered, shared) or a perf buffer (per CPU, for old kernels);
#   drain them in time, and count what is lost.
# * User memory (system call arguments) is copied with
#   `bpf_probe_read_user(_str)`, kernel memory behind a pointer with
#   `bpf_probe_read_kernel(_str)`. Both fail cleanly.
# * uprobes and uretprobes run a program at a user-space function's entry
#   and return; USDT probes at markers a program ships with.
#
# **Questions to test yourself**
#
# 1. A process forks from its second thread. In `sched_process_fork`, which
#    of `args->parent_pid`, `bpf_get_current_pid_tgid() >> 32` and
#    `current->real_parent->tgid` is the parent *process* of the child?
# 2. Why key a start-time map by thread id, and filter by process id?
# 3. Your program reads `task->real_parent->tgid` and always gets 0. Name a
#    likely cause, and how to confirm it.
# 4. A perf buffer reports lost events. Give two ways to stop losing them.
# 5. Why can `bpf_probe_read_user_str` on `args->filename` fail at
#    `sys_enter_openat` even though the program is correct?
#
# <details><summary>Answers (click to open)</summary>
#
# 1. `bpf_get_current_pid_tgid() >> 32`: the probe runs in the forking
#    thread, and the upper half is its process id, which is what the
#    child's `getppid()` will return. `args->parent_pid` is the forking
#    *thread's* id, a different number when a second thread forks.
#    `current->real_parent->tgid` is the parent of the forking process: the
#    child's grandparent.
# 2. A thread is inside one system call at a time, but several threads of
#    a process can be inside the same call at once: keyed by process, the
#    second thread's entry would overwrite the first one's start time, and
#    both exits would use it. The filter is by process because the process
#    is what you want to watch, with all its threads, and its id is the one
#    user space knows.
# 3. Headers that do not match the running kernel: the offsets of
#    `real_parent` or `tgid` in the headers BCC compiled with differ from
#    the kernel's, so the program reads some other field (and a pointer
#    read from the wrong place makes the next read fail, leaving 0).
#    Confirm by comparing `offsetof(struct task_struct, real_parent)` and
#    `tgid` in those headers with BTF (`bpftool btf dump file
#    /sys/kernel/btf/vmlinux format c`, or the course's header check), or by
#    reading the field for a process whose parent you know.
# 4. Drain more often (poll in a loop, keep the callback cheap and decode
#    in bulk), or give each CPU a bigger buffer (`page_cnt`); or send less:
#    filter and aggregate in the kernel, send smaller records. On 5.8+, a
#    ring buffer sized for the total absorbs bursts on one CPU better.
# 5. The string is in user memory that may not be resident at that moment
#    (never touched yet, swapped out, a file page not read in). A tracepoint
#    program cannot sleep, so the helper cannot take the page fault: it
#    returns `-EFAULT`. A sleepable program with `bpf_copy_from_user()` can
#    wait for the page; without one, read the string at `sys_exit_openat`,
#    after the kernel's own copy has brought the page in.
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 4.1 | a process tree monitor: fork, exec and exit events with the right parents | `labs/ch04/lab_4_1_process_tree.ipynb` |
# | 4.2 | a file latency tracker: `openat` and `read` latency histograms for one process | `labs/ch04/lab_4_2_file_latency.ipynb` |
# | 4.3 | a memory profiler: uprobes on `malloc` and `free`, outstanding bytes per process | `labs/ch04/lab_4_3_memory_profiler.ipynb` |
#
# Each lab ends with a check cell. The solutions are in `solutions/ch04/`.
