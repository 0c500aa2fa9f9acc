# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 18.2: Off-CPU time per stack
#
# **Objective.** Measure where threads *wait*: for every stretch a thread
# spends off the CPU, add its length to the stacks (user and kernel) it had
# when it left. Keep the totals in `offcpu[{pid, user_stack_id,
# kernel_stack_id}]`, in nanoseconds.
#
# **Expected observation.** The check compiles a program with fresh
# function names and two threads. The main thread sleeps `L` ms in
# `wait_long_X()` and `S` ms in `wait_short_X()`, `R` times; meanwhile the
# second thread sleeps `T` ms in `wait_thread_X()`, `R` times (`R`, `L`,
# `S`, `T` chosen at random). The check names your stacks itself: the time
# under each function must be at least what it slept, and not more than
# 30% above it (plus 5 ms per wake-up: on a busy machine a woken thread
# waits for a CPU, and that wait is off-CPU time too).
#
# **You will use:** `TRACEPOINT_PROBE(sched, sched_switch)`,
# `bpf_ktime_get_ns()`, `get_stackid` from a tracepoint, a hash map keyed
# by thread id.

# %% [markdown]
# ## Background
#
# `sched:sched_switch` fires on a CPU when it stops running one task
# (`args->prev_pid`) and starts another (`args->next_pid`). Two facts make
# an off-CPU profiler out of it:
#
# * when it fires, the **current** task is still `prev`: `get_stackid(args,
#   ...)` and `bpf_get_current_pid_tgid()` describe the task *leaving*;
# * `prev_pid` and `next_pid` are **thread** ids (the kernel's `pid`); the
#   process id is the thread group id, the high half of
#   `bpf_get_current_pid_tgid()`.
#
# So at each switch: remember, under `prev_pid`, the time and where the
# task was (its process id and stack ids); then look up `next_pid`: if it
# left earlier, the time since is what it spent away, to be added to the
# place it left from. Thread 0 is the idle task: skip it.

# %%
import subprocess
import time

from ebpf_tutor import Program
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check reads `offcpu` and `stacks`.

# %% tags=["answer"]
PROGRAM = r"""
struct key_t {
    u32 pid;                 // process (thread group) id
    int user_stack_id;
    int kernel_stack_id;
};
struct left_t {
    u64 ts;                  // when the thread left the CPU
    struct key_t key;        // and from where
};
BPF_HASH(left, u32, struct left_t, 16384);      // thread id -> left_t
BPF_HASH(offcpu, struct key_t, u64, 16384);     // where -> ns spent off the CPU
BPF_STACK_TRACE(stacks, 16384);

TRACEPOINT_PROBE(sched, sched_switch) {
    u64 now = bpf_ktime_get_ns();
    u32 prev = args->prev_pid;
    u32 next = args->next_pid;
    // TODO 1: unless prev is 0 (idle), remember under prev: now, the
    //         process id and both stack ids of the current task (prev)
    // BEGIN SOLUTION
    if (prev != 0) {
        struct left_t l = {.ts = now};
        l.key.pid = bpf_get_current_pid_tgid() >> 32;
        l.key.user_stack_id = stacks.get_stackid(args, BPF_F_USER_STACK);
        l.key.kernel_stack_id = stacks.get_stackid(args, 0);
        left.update(&prev, &l);
    }
    // END SOLUTION
    // TODO 2: if next left earlier, add now - then to offcpu[its key], and
    //         forget it
    // BEGIN SOLUTION
    struct left_t *l = left.lookup(&next);
    if (!l)
        return 0;
    u64 delta = now - l->ts;
    u64 zero = 0;
    u64 *total = offcpu.lookup_or_try_init(&l->key, &zero);
    if (total)
        __sync_fetch_and_add(total, delta);
    left.delete(&next);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# A wait is a pair of events for one thread: it leaves the CPU (it is
# `prev` at some switch), then it comes back (it is `next` at a later one,
# maybe on another CPU). Remember the first under the thread id, finish at
# the second. The stacks must be taken at the first: only then is that
# thread the current task. At the second, the current task is whoever is
# leaving the CPU to make room.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# `stacks.get_stackid(args, BPF_F_USER_STACK)` and `stacks.get_stackid(args,
# 0)` (a tracepoint's `args` is its context); `left.update(&prev, &l)`,
# `left.lookup(&next)` (NULL if it never left while you watched: return),
# `offcpu.lookup_or_try_init(&l->key, &zero)` then `__sync_fetch_and_add`,
# `left.delete(&next)`. All times in nanoseconds.
# </details>
#
# <details><summary>Hint 3: the threads</summary>
#
# Key `left` by the thread id `args->prev_pid`, not the process id: two
# threads of one process can both be away at once, and with one key per
# process the second would overwrite the first one's departure.
# </details>

# %% [markdown]
# ## Try it
#
# Where does `sleep 0.3` followed by a `sha256sum` of 8 MiB of `/dev/urandom`
# wait? Fold the stacks of the shell and its children and draw them.

# %% tags=["try"]
from collections import Counter

from ebpf_tutor.apps.profiler.flamegraph import FlameGraph

with Program(PROGRAM) as prog:
    sh = subprocess.Popen(["sh", "-c", "sleep 0.3; head -c 8M /dev/urandom | sha256sum; read _"],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    time.sleep(1.5)
    waits: Counter = Counter()
    for k, v in prog["offcpu"].items():
        if k.pid < sh.pid or k.user_stack_id < 0:
            continue
        frames = [prog.sym(a, k.pid).decode() for a in prog["stacks"].walk(k.user_stack_id)]
        waits[";".join([str(k.pid)] + frames[::-1])] += v.value // 1000     # µs
    sh.communicate(b"\n")
FlameGraph({s: n for s, n in waits.items() if n > 1000}, title="off-CPU (us)", unit="us")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("18.2", program=PROGRAM)
