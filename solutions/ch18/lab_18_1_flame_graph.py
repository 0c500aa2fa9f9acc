# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 18.1: Flame graph input, with kernel and user stacks
#
# **Objective.** Sample a process at 99 Hz and turn its samples into
# *folded stacks*, the input of a flame graph: one line per distinct stack,
# the process name first, then its user frames from `main` down, then the
# kernel frames it was running (if the sample caught it in a system call),
# from the system call's entry down, each marked with the suffix `_[k]`:
#
#     myprog;__libc_start_call_main;main;fetch;__GI___libc_read;entry_SYSCALL_64_after_hwframe_[k];...;clear_user_[k]  12
#
# **Expected observation.** The check compiles a C program with fresh
# function names: `main` calls `hot_X()`, which does three units of work,
# `cold_X()`, one unit, and `sys_X()`, which reads from `/dev/zero` (time
# spent in the kernel). A decoy copy runs `decoy_X()` meanwhile. Your
# `folded(prog, pid)` must give the target's stacks: its name first, `main`
# before `hot_X`, `hot_X` about three times as often as `cold_X`, kernel
# frames (marked `_[k]`) after the user frames, rooted at the system call
# entry, under `sys_X`, and nothing of the decoy.
#
# **You will use:** `get_stackid` with and without `BPF_F_USER_STACK`,
# `stacks.walk()`, `prog.sym(addr, pid)`, `prog.ksym(addr)`.

# %% [markdown]
# ## Background
#
# Lab 2.3 folded user stacks. A sample that lands while the process runs
# kernel code has two stacks: the kernel's (from the system call entry to
# where the CPU was) and the user stack that made the system call. A flame
# graph shows them as one tower: the user frames, and on top of the frame
# that made the call, the kernel frames. So a folded line is
#
# | part | where it comes from | order |
# |---|---|---|
# | process name | `bpf_get_current_comm` in the key | first |
# | user frames | `stacks.walk(key.user_stack_id)`, `prog.sym(addr, pid)` | walk gives leaf first: reverse |
# | kernel frames | `stacks.walk(key.kernel_stack_id)`, `prog.ksym(addr)` + `"_[k]"` | walk gives leaf first: reverse |
#
# A negative stack id means there was no such stack: a sample in user mode
# has no kernel stack (`-EFAULT`), a kernel thread has no user stack. Both
# stacks go into the same `BPF_STACK_TRACE` map; each id names one.

# %%
import subprocess
import time
from collections import Counter

from bcc import PerfSWConfig, PerfType

from ebpf_tutor import Program
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# The program is attached for you (`start`). Keep the names: the check reads
# `counts` and `stacks` through your `folded`.

# %% tags=["answer"]
PROGRAM = r"""
struct key_t {
    u32 pid;
    int user_stack_id;
    int kernel_stack_id;
    char comm[16];
};
BPF_HASH(counts, struct key_t, u64, 16384);
BPF_STACK_TRACE(stacks, 16384);

int on_sample(void *ctx) {
    struct key_t key = {.pid = bpf_get_current_pid_tgid() >> 32, .kernel_stack_id = -1};
    key.user_stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    // TODO 1: the kernel stack's id, and the process name in key.comm
    // BEGIN SOLUTION
    key.kernel_stack_id = stacks.get_stackid(ctx, 0);
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    // END SOLUTION
    counts.atomic_increment(key);
    return 0;
}
"""


def start(prog: Program) -> None:
    """on_sample 99 times a second on every CPU."""
    prog.attach_perf_event(ev_type=PerfType.SOFTWARE, ev_config=PerfSWConfig.CPU_CLOCK,
                           fn_name="on_sample", sample_freq=99)


def folded(prog: Program, pid: int) -> dict[str, int]:
    """{"comm;main;f;g;entry_[k];...": samples} for process `pid`."""
    result: Counter = Counter()
    # TODO 2: for each key of `counts` with key.pid == pid, build the frames:
    #   the comm, the user frames root first (prog.sym(addr, pid)), then the
    #   kernel frames root first (prog.ksym(addr) + "_[k]"); skip a stack
    #   whose id is negative; add the count under ";".join(frames)
    # BEGIN SOLUTION
    stacks = prog["stacks"]
    for key, count in prog["counts"].items():
        if key.pid != pid:
            continue
        frames = [key.comm.decode(errors="replace")]
        if key.user_stack_id >= 0:
            user = [prog.sym(a, pid).decode() for a in stacks.walk(key.user_stack_id)]
            frames += reversed(user)
        if key.kernel_stack_id >= 0:
            kernel = [prog.ksym(a).decode() + "_[k]" for a in stacks.walk(key.kernel_stack_id)]
            frames += reversed(kernel)
        result[";".join(frames)] += count.value
    # END SOLUTION
    return dict(result)


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# One sample, two walks: `get_stackid(ctx, BPF_F_USER_STACK)` for the user
# stack, `get_stackid(ctx, 0)` for the kernel's. In Python each id walks to
# a list of addresses, innermost (leaf) first; a flame graph wants the root
# first, so both lists are reversed, and the kernel's go on top of the user
# frames, because the kernel runs *on behalf of* the innermost user frame
# (the one that made the system call).
# </details>
#
# <details><summary>Hint 2: the names</summary>
#
# User addresses only mean something inside one process: `prog.sym(addr,
# pid)`. Kernel addresses are the same for everyone: `prog.ksym(addr)`.
# Both return bytes: `.decode()`. The comm in the key is a 16-byte array:
# `key.comm.decode()`.
# </details>
#
# <details><summary>Hint 3: the code</summary>
#
# ```python
# frames = [key.comm.decode()]
# if key.user_stack_id >= 0:
#     frames += reversed([prog.sym(a, pid).decode() for a in stacks.walk(key.user_stack_id)])
# if key.kernel_stack_id >= 0:
#     frames += reversed([prog.ksym(a).decode() + "_[k]" for a in stacks.walk(key.kernel_stack_id)])
# ```
# </details>

# %% [markdown]
# ## Try it
#
# Profile `dd` copying from `/dev/zero` for a second and draw the flame
# graph with the chapter's renderer: most of the tower is kernel code.

# %% tags=["try"]
from ebpf_tutor.apps.profiler.flamegraph import FlameGraph

with Program(PROGRAM) as prog:
    start(prog)
    dd = subprocess.Popen(["dd", "if=/dev/zero", "of=/dev/null", "bs=64k", "count=200000"],
                          stderr=subprocess.DEVNULL)
    time.sleep(1)
    stacks = folded(prog, dd.pid)
    dd.kill()
    dd.wait()
FlameGraph(stacks, title="dd if=/dev/zero of=/dev/null")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("18.1", program=PROGRAM, start=start, folded=folded)
