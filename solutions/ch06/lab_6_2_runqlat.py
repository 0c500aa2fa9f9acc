# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 6.2: Run-queue latency, like `runqlat`
#
# **Objective.** Measure how long runnable tasks wait for a CPU: from the
# moment a task becomes runnable (woken up, just created, or preempted while
# still wanting to run) to the moment the scheduler switches it in. Keep one
# log2 histogram in **microseconds** per task, and plot it. Three scheduler
# tracepoints are enough: `sched:sched_wakeup`, `sched:sched_wakeup_new` and
# `sched:sched_switch`.
#
# **Expected observation.** The check starts 4 processes with a fresh name,
# all on one CPU, for 1 s: 2 spin without pause, 2 spin 2 ms and sleep 1 ms.
# The kernel keeps its own books for each task (`/proc/<pid>/schedstat`: how
# many times it ran, and the total time it waited in the run queue). For each
# of the 4, your histogram must count about as many waits as the scheduler
# ran it (at least 80%), and its buckets must bracket the kernel's total
# wait. Busy processes are never woken up: they wait only after being
# preempted, so those waits must be caught too.

# %% [markdown]
# ## Background
#
# * `sched_wakeup` and `sched_wakeup_new` carry `args->pid`, the task put on
#   a run queue (not the current task, which is the one waking it).
# * `sched_switch` carries `prev_pid`, `prev_state`, `next_pid`: the task
#   leaving the CPU, its state, and the task switched in.
# * A task switched out while still runnable goes straight back to the run
#   queue: its wait starts *now*. In this tracepoint, `prev_state` is 0 when
#   the task left the CPU runnable (its time slice ran out on the way back to
#   user space, or it yielded), and `0x100` (printed `R+`) when it was
#   preempted while running kernel code; any of the low bits (`S`, `D`...)
#   means it went to sleep. So: still runnable when
#   `(args->prev_state & 0xff) == 0`. The `print fmt` line of
#   `/sys/kernel/tracing/events/sched/sched_switch/format` shows the encoding.
# * `bpf_log2l(x)` returns the bucket of `x`: `floor(log2(x)) + 1`, so
#   bucket *s* holds 2^(s-1) to 2^s - 1. BCC defines it as `bpf_log2(x) + 1`,
#   and `bpf_log2` gives 0 for both 0 and 1: a wait under 1 µs (0 after the
#   division) lands in bucket 1 with the 1 µs waits, and bucket 0 stays
#   empty.
# * Pid 0 is the idle task of each CPU: skip it.

# %%
import os
import time

import matplotlib.pyplot as plt

from ebpf_tutor import Program, log2_counts_df, plot_log2_hist
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check reads the histogram `dist`, keyed by
# `struct hist_key_t`.

# %% tags=["answer"]
PROGRAM = r"""
struct hist_key_t {
    u32 pid;       // the task that waited (a thread id)
    u32 slot;      // bpf_log2l(wait in microseconds)
};
BPF_HISTOGRAM(dist, struct hist_key_t, 16384);
// TODO 1: declare `start`, a hash from the task's pid (u32) to the time (u64 ns)
//         it was put on a run queue
// BEGIN SOLUTION
BPF_HASH(start, u32, u64, 16384);
// END SOLUTION

static __always_inline int enqueued(u32 pid) {
    // TODO 2: remember now as the start of pid's wait (skip pid 0, the idle task)
    // BEGIN SOLUTION
    if (pid == 0)
        return 0;
    u64 ts = bpf_ktime_get_ns();
    start.update(&pid, &ts);
    // END SOLUTION
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup) { return enqueued(args->pid); }
TRACEPOINT_PROBE(sched, sched_wakeup_new) { return enqueued(args->pid); }

TRACEPOINT_PROBE(sched, sched_switch) {
    // TODO 3: the task leaving the CPU while still runnable starts a new wait
    // TODO 4: the task switched in ends its wait: add its latency (us) to dist
    //         under {pid, bpf_log2l(latency)}, and forget its start
    // BEGIN SOLUTION
    if ((args->prev_state & 0xff) == 0)
        enqueued(args->prev_pid);
    u32 pid = args->next_pid;
    u64 *tsp = start.lookup(&pid);
    if (!tsp)
        return 0;
    u64 delta_us = (bpf_ktime_get_ns() - *tsp) / 1000;
    struct hist_key_t key = {.pid = pid, .slot = bpf_log2l(delta_us)};
    dist.atomic_increment(key);
    start.delete(&pid);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# A wait in the run queue starts when a task becomes runnable and ends when
# the scheduler switches it in. There are three ways to become runnable:
# being woken, being created, and losing the CPU while still wanting it.
# Remember the start per task; at each switch-in, subtract, count the
# latency under that task's own histogram, and forget the start.
# </details>
# <details><summary>Hint 2</summary>
#
# `start.update(&pid, &ts)` with `u64 ts = bpf_ktime_get_ns();`. At
# `sched_switch`, `start.lookup(&pid)` for `pid = args->next_pid` gives NULL
# when we never saw it enqueued (the program started after it was): skip it.
# </details>
#
# <details><summary>Hint 3</summary>
#
# The busy tasks of the check are never woken up: they only lose the CPU
# when their time slice runs out, still runnable. Without a start time taken
# at that `sched_switch` (for `args->prev_pid`, when
# `(args->prev_state & 0xff) == 0`), they get no waits at all. Testing
# `prev_state == 0` alone would miss tasks preempted inside the kernel (`R+`).
# </details>
#
# <details><summary>Hint 4</summary>
#
# `struct hist_key_t key = {.pid = pid, .slot = bpf_log2l(delta_us)};` then
# `dist.atomic_increment(key);` where `delta_us = (bpf_ktime_get_ns() - *tsp) / 1000`.
# </details>

# %% [markdown]
# ## Try it
#
# Three spinning processes share one CPU for half a second. Compare their
# waits with those of every other task on the machine.

# %% tags=["try"]
def spin_on_cpu0(seconds: float) -> int:
    pid = os.fork()
    if pid == 0:
        os.sched_setaffinity(0, {0})
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        os._exit(0)
    return pid


with Program(PROGRAM) as prog:
    spinners = [spin_on_cpu0(0.5) for _ in range(3)]
    for pid in spinners:
        os.waitpid(pid, 0)
    rows = [(k.pid, k.slot, v.value) for k, v in prog["dist"].items()]

fig, axes = plt.subplots(1, 2, figsize=(11, 3))
for ax, title, keep in [(axes[0], "3 spinners on one CPU", lambda p: p in spinners),
                        (axes[1], "every other task", lambda p: p not in spinners)]:
    counts: dict[int, int] = {}
    for pid, slot, n in rows:
        if keep(pid):
            counts[slot] = counts.get(slot, 0) + n
    plot_log2_hist(log2_counts_df(counts), unit="us", title=title, ax=ax)

# %% [markdown]
# ## Check

# %% tags=["check"]
check("6.2", program=PROGRAM)
