# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 4.2: File latency tracker
#
# **Objective.** Measure how long one process's `openat` and `read` system
# calls take, and keep the distribution in the kernel as two log2
# histograms: `open_lat` and `read_lat`, in **nanoseconds**. Only the process
# whose id is `TARGET_TGID` counts.
#
# **Expected observation.** The check builds a small program, fills a fresh
# folder with marker files and starts the program twice: the *target* (whose
# pid it passes to your C code as `-DTARGET_TGID=<pid>`) and a *decoy* that
# does exactly the same work at the same time. The target opens each file
# once and reads it a known number of times. Meanwhile a second thread of the
# target sits in one `read()` of its standard input until the check writes
# to it, at least 20 ms later. So the check knows the truth: `N` opens and
# `N × R + 1` reads. Your histograms must add up to exactly that, and every
# latency must be plausible (at least 64 ns, and no longer than the whole
# run).
#
# **You will use:** `syscalls:sys_enter_*` / `sys_exit_*` tracepoints,
# `bpf_get_current_pid_tgid`, `bpf_ktime_get_ns`, the map helpers (BCC's
# `.update`, `.lookup`, `.delete`), `BPF_HISTOGRAM` and `bpf_log2l`.

# %% [markdown]
# ## Background
#
# A system call's latency is the time between its two tracepoints:
# `sys_enter_read` when the thread enters the kernel, `sys_exit_read` when it
# returns. Nothing is passed from one to the other, so you keep the entry
# time in a hash map and look it up at exit:
#
# ```
# enter: start[id] = bpf_ktime_get_ns()
# exit:  t0 = start[id]; if there is none, skip; record now - t0; delete start[id]
# ```
#
# Which id? A *thread* is what enters and leaves a system call, and two
# threads of one process can be inside `read()` at the same time. The key
# must be the thread id: the lower 32 bits of `bpf_get_current_pid_tgid()`.
# The filter, on the other hand, is by process: the upper 32 bits.
#
# `bpf_log2l(ns)` turns a latency into a histogram slot (slot *s* holds
# values from 2^(s-1) to 2^s - 1; 0 shares slot 1 with 1), and `BPF_HISTOGRAM(name)` is a map from
# slot to count. `ebpf_tutor.log2_hist_df` reads it back as a DataFrame.

# %%
import os
import shutil
import tempfile
from pathlib import Path

from ebpf_tutor import Program, log2_hist_df, plot_log2_hist
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# `TARGET_TGID` is not defined in the text: it comes from the compiler flag
# `-DTARGET_TGID=<pid>`, as in `Program(PROGRAM, cflags=[f"-DTARGET_TGID={pid}"])`.

# %% tags=["answer"]
PROGRAM = r"""
BPF_HASH(start, u32, u64);     // thread id -> time it entered the system call
BPF_HISTOGRAM(open_lat);       // log2(ns) slot -> count
BPF_HISTOGRAM(read_lat);

// Called at every sys_enter_openat and sys_enter_read.
static int on_enter(void) {
    // TODO 1: keep only the process TARGET_TGID, then remember the time
    //         (bpf_ktime_get_ns()) under the *thread* id
    // BEGIN SOLUTION
    u64 id = bpf_get_current_pid_tgid();
    if (id >> 32 != TARGET_TGID)
        return 0;
    u32 tid = id;
    u64 ts = bpf_ktime_get_ns();
    start.update(&tid, &ts);
    // END SOLUTION
    return 0;
}

// Called at every sys_exit_openat and sys_exit_read: nanoseconds since this
// thread's on_enter, or 0 when there was none (another process, or a call
// that began before the program was attached).
static u64 elapsed_ns(void) {
    u64 ns = 0;
    // TODO 2: look the entry time up, compute the difference, delete the entry
    // BEGIN SOLUTION
    u32 tid = bpf_get_current_pid_tgid();
    u64 *tsp = start.lookup(&tid);
    if (!tsp)
        return 0;
    ns = bpf_ktime_get_ns() - *tsp;
    start.delete(&tid);
    // END SOLUTION
    return ns;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat) { return on_enter(); }
TRACEPOINT_PROBE(syscalls, sys_enter_read) { return on_enter(); }

TRACEPOINT_PROBE(syscalls, sys_exit_openat) {
    u64 ns = elapsed_ns();
    // TODO 3: if ns is not 0, count it in open_lat at slot bpf_log2l(ns)
    // BEGIN SOLUTION
    if (ns)
        open_lat.atomic_increment(bpf_log2l(ns));
    // END SOLUTION
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_read) {
    u64 ns = elapsed_ns();
    // TODO 4: the same for read_lat
    // BEGIN SOLUTION
    if (ns)
        read_lat.atomic_increment(bpf_log2l(ns));
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# A latency is two moments of the same call: remember the first, subtract
# at the second. What connects them is the *thread* making the call (a
# thread is in one system call at a time; a process may be in several). Only
# the target process counts, so filter on the process first. Once a start
# time is used, forget it, so a stale one is never used again.
# </details>
# <details><summary>Hint 2</summary>
#
# The API: `bpf_get_current_pid_tgid()` (process id in the upper 32 bits,
# thread id in the lower), `bpf_ktime_get_ns()`, and on a `BPF_HASH` the
# calls `start.update(&tid, &ts)`, `start.lookup(&tid)` (a pointer, NULL when
# there is no entry, and the verifier insists that you check it) and
# `start.delete(&tid)`. A `BPF_HISTOGRAM` counts with `.atomic_increment(slot)` (`.increment` is a plain, racy `+=`), and
# `bpf_log2l(ns)` gives the slot.
# </details>
# <details><summary>Hint 3</summary>
#
# Entry: `u64 id = bpf_get_current_pid_tgid(); if (id >> 32 != TARGET_TGID)
# return 0; u32 tid = id; u64 ts = bpf_ktime_get_ns(); start.update(&tid, &ts);`.
# Exit (`elapsed_ns`): `u32 tid = bpf_get_current_pid_tgid(); u64 *tsp =
# start.lookup(&tid); if (!tsp) return 0;`, then `ns = bpf_ktime_get_ns() -
# *tsp; start.delete(&tid);`. Count: `if (ns) open_lat.atomic_increment(bpf_log2l(ns));`. Keep nanoseconds: dividing by 1000
# puts most reads in slot 1 (0 or 1 µs), and the check rejects latencies
# under 64 ns.
# </details>

# %% [markdown]
# ## Try it
#
# Trace this notebook's own process while it reads a few files, then draw
# the read latencies. (Other threads of the notebook's kernel may read too.)

# %% tags=["try"]
folder = Path(tempfile.mkdtemp(prefix="ebt-lat-"))
for i in range(20):
    (folder / f"f{i}").write_bytes(os.urandom(64 * 1024))
with Program(PROGRAM, cflags=[f"-DTARGET_TGID={os.getpid()}"]) as prog:
    for i in range(20):
        with open(folder / f"f{i}", "rb", buffering=0) as f:
            while f.read(4096):
                pass
    opens, reads = log2_hist_df(prog["open_lat"]), log2_hist_df(prog["read_lat"])
shutil.rmtree(folder)
print(f"{opens['count'].sum()} opens, {reads['count'].sum()} reads timed")
plot_log2_hist(reads, unit="ns", title="read() latency of this process");

# %% [markdown]
# ## Check

# %% tags=["check"]
check("4.2", program=PROGRAM)
