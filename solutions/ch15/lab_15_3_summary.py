# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 15.3: The `-c` summary, counted in the kernel
#
# **Objective.** Build the heart of `systrace -c` (and `strace -c`): for one
# process, the number of calls, the number of errors and the total time
# spent, per system call, kept in a map in the kernel. Nothing per call goes
# to user space; the table is read once, at the end.
#
# **Expected observation.** The check starts a fresh process with two
# threads; each makes a random number of `getppid()`, failing `openat()`
# (a missing file) and successful `openat()` + `close()`, then blocks in a
# `read()` on a pipe until the check writes to it, some tens of
# milliseconds later. The process ends with `exit_group()`, which never
# returns. `stats[nr]` must hold exactly the calls and errors of `getppid`
# and `openat`, no row for `exit_group` (as in `strace -c`), both `read`
# calls, and for them a total time of at least their wait.

# %% [markdown]
# ## Background
#
# * A call is counted when it **returns**, as strace counts: `sys_exit`
#   knows the result (an error is a value in `-4095..-1`) and, with the
#   time saved at `sys_enter`, the latency. A call that never returns
#   (`exit_group`) is never counted, and neither is a return whose entry you
#   did not see (a call that began before you attached).
# * The start time must be saved per **thread** (the low 32 bits of
#   `bpf_get_current_pid_tgid()`): two threads of one process can be inside
#   two calls at the same moment.
# * `BPF_PERCPU_HASH` gives each CPU its own copy of every row: plain `+=`
#   is safe, with no atomic instruction, and user space sums the copies.
#   `lookup_or_try_init(&key, &zero)` finds or creates a row (on a per-CPU
#   hash, BCC's `.increment()` does not create one).
# * `raw_syscalls:sys_exit` has `args->id` (the call number) and `args->ret`.

# %%
import subprocess

from ebpf_tutor import Program
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check writes `target` and reads `stats`
# (`struct stat_t`, keyed by the call number).

# %% tags=["answer"]
PROGRAM = r"""
struct stat_t {
    u64 calls;
    u64 errors;
    u64 total_ns;
};
BPF_ARRAY(target, u32, 1);                     // the process to watch
BPF_HASH(start, u32, u64, 10240);              // thread id -> when its call began
BPF_PERCPU_HASH(stats, u32, struct stat_t, 512);

TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    int zero = 0;
    u32 *t = target.lookup(&zero);
    u64 id = bpf_get_current_pid_tgid();
    if (!t || id >> 32 != *t)
        return 0;
    // TODO 1: remember when this thread's call began
    // BEGIN SOLUTION
    u32 tid = (u32)id;
    u64 ts = bpf_ktime_get_ns();
    start.update(&tid, &ts);
    // END SOLUTION
    return 0;
}

TRACEPOINT_PROBE(raw_syscalls, sys_exit) {
    // TODO 2: find when this thread's call began (not found: return); add one
    // call, maybe one error, and the time it took to stats[args->id];
    // forget the start
    // BEGIN SOLUTION
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *ts = start.lookup(&tid);
    if (!ts)
        return 0;
    u64 took = bpf_ktime_get_ns() - *ts;
    u32 nr = args->id;
    struct stat_t zero = {};
    struct stat_t *s = stats.lookup_or_try_init(&nr, &zero);
    if (s) {
        s->calls += 1;
        if (args->ret < 0 && args->ret >= -4095)
            s->errors += 1;
        s->total_ns += took;
    }
    start.delete(&tid);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# The entry only stores a timestamp, under the thread id. The exit does
# everything else: it looks the timestamp up (no entry: not a call you saw
# begin, skip it), computes `now - then`, and updates the row of
# `args->id`: one more call, one more error if the result is an errno,
# the time added. Then it deletes the timestamp.
# </details>
#
# <details><summary>Hint 2</summary>
#
# The thread id is `(u32)bpf_get_current_pid_tgid()`. `start.update(&tid,
# &ts)`, `start.lookup(&tid)`, `start.delete(&tid)`;
# `stats.lookup_or_try_init(&nr, &zero)` may return NULL: check it. An error
# is `args->ret < 0 && args->ret >= -4095`. On a per-CPU hash, `s->calls += 1`
# needs no atomic operation.
# </details>

# %% [markdown]
# ## Try it
#
# A summary of `ls -l /etc`, sorted by time, like `strace -c`.

# %% tags=["try"]
from bcc.syscall import syscall_name  # noqa: E402

with Program(PROGRAM) as prog:
    ls = subprocess.Popen(["sh", "-c", "read x; exec ls -l /etc"], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL)
    prog["target"][0] = prog["target"].Leaf(ls.pid)
    ls.communicate(b"go\n")
    rows = [(syscall_name(k.value).decode(), sum(v.calls for v in vs), sum(v.errors for v in vs),
             sum(v.total_ns for v in vs)) for k, vs in prog["stats"].items()]
print(f"{'syscall':16} {'calls':>6} {'errors':>6} {'total us':>9}")
for name, calls, errors, ns in sorted(rows, key=lambda r: -r[3])[:12]:
    print(f"{name:16} {calls:6} {errors:6} {ns / 1e3:9.1f}")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("15.3", program=PROGRAM)
