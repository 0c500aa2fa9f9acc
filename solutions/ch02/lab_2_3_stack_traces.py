# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 2.3: A stack trace collector
#
# **Objective.** Build the core of a CPU profiler: sample every CPU 99 times
# a second, record the user-space stack of whatever runs there in a stack
# trace map, and turn the samples of one process into *folded stacks*
# (`main;parse;read_line 42`), the input of flame graphs.
#
# **Expected observation.** The check compiles a small C program whose
# CPU-burning function has a fresh, random name (`ebt_spin_...`), called
# from `main`. It calls your `start(prog)`, runs the program (it burns 1
# second of CPU, then sleeps) next to a *decoy* process that burns in a
# function of another name, then calls `folded(prog, pid)` with the target's
# pid. Your result must
#
# * name `ebt_spin_...` in the target's stacks, below `main` (root first);
# * not contain the decoy's function (it ran in another process);
# * hold about 99 samples per second of CPU the target used.
#
# **You will use:** `attach_perf_event`, `BPF_STACK_TRACE`, `get_stackid`,
# `stacks.walk()`, and BCC's symbolizer `prog.sym(addr, pid)`.

# %% [markdown]
# ## Background
#
# * `prog.attach_perf_event(ev_type=PerfType.SOFTWARE,
#   ev_config=PerfSWConfig.CPU_CLOCK, fn_name=..., sample_freq=99)` opens one
#   CPU-clock perf event on each CPU, firing 99 times a second there, and
#   runs your function each time with the registers of the interrupted task.
#   A process is the interrupted task only while it runs, so it collects
#   about 99 samples per second of CPU time it uses, not per second of wall
#   time.
# * `stacks.get_stackid(ctx, BPF_F_USER_STACK)` walks the interrupted user
#   stack (following frame pointers), stores its return addresses in the
#   `BPF_STACK_TRACE` map, and returns an id; identical stacks get the same
#   id. A negative id means the walk failed (no user stack: a kernel thread,
#   say). With flags `0` it walks the kernel stack instead.
# * In Python, `prog["stacks"].walk(stack_id)` yields the addresses, **leaf
#   first** (the function that was running, then its caller, ...), and
#   `prog.sym(addr, pid)` names the function containing `addr` in process
#   `pid` (as bytes). A flame graph wants **root first**: `main;f;g`.
# * Symbolizing needs the process to still exist (BCC reads its memory map
#   in `/proc/<pid>/maps`): the check calls `folded()` while the target
#   sleeps.

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
# Complete the TODOs. Keep the names: the check looks for the function
# `on_sample` and the maps `counts` and `stacks`.

# %% tags=["answer"]
PROGRAM = r"""
struct key_t {
    u32 pid;
    int user_stack_id;
};
BPF_HASH(counts, struct key_t, u64, 4096);
BPF_STACK_TRACE(stacks, 4096);

int on_sample(void *ctx) {
    struct key_t key = {};
    key.pid = bpf_get_current_pid_tgid() >> 32;
    // TODO 1: store the user stack in `stacks`; keep its id in key.user_stack_id
    // TODO 2: count this sample under its key
    // BEGIN SOLUTION
    key.user_stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    counts.atomic_increment(key);
    // END SOLUTION
    return 0;
}
"""


def start(prog: Program) -> None:
    """Run on_sample 99 times per second on every CPU."""
    # TODO 3: attach on_sample to a software CPU_CLOCK perf event at 99 Hz
    # BEGIN SOLUTION
    prog.attach_perf_event(ev_type=PerfType.SOFTWARE, ev_config=PerfSWConfig.CPU_CLOCK,
                           fn_name="on_sample", sample_freq=99)
    # END SOLUTION


def folded(prog: Program, pid: int) -> dict[str, int]:
    """Folded user stacks of process `pid`, root first: {"main;f;g": samples}."""
    result: Counter = Counter()
    # TODO 4: for each (key, count) of `counts` whose key.pid is pid, walk the
    # user stack, name each address with prog.sym(addr, pid), reverse the
    # frames (root first), join them with ";" and add the count
    # BEGIN SOLUTION
    for key, count in prog["counts"].items():
        if key.pid != pid:
            continue
        if key.user_stack_id < 0:
            frames = ["[no user stack]"]
        else:
            frames = [prog.sym(addr, key.pid).decode()
                      for addr in prog["stacks"].walk(key.user_stack_id)]
            frames.reverse()
        result[";".join(frames)] += count.value
    # END SOLUTION
    return dict(result)


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Sampling has three parts. In the kernel, each sample stores *where* the
# process was (its user-space stack, saved once in the stack map, which
# hands back a small id) and counts the sample under (pid, stack id). A
# timer must fire the program at a fixed rate on every CPU. Afterwards, in
# Python, each stack id is turned back into a list of addresses, each
# address into a function name of *that* process, and the list is written
# root first.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `stacks.get_stackid(ctx, BPF_F_USER_STACK)` stores the user stack and
#   returns its id (negative on failure); `0` as the flag would take the
#   kernel stack. `counts.atomic_increment(key)` counts.
# * `prog.attach_perf_event(ev_type=PerfType.SOFTWARE,
#   ev_config=PerfSWConfig.CPU_CLOCK, fn_name=..., sample_freq=...)`
#   opens one timer per CPU.
# * `prog["stacks"].walk(stack_id)` yields addresses, leaf first;
#   `prog.sym(addr, pid)` names one, in the address space of `pid`.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```python
# for key, count in prog["counts"].items():
#     if key.pid != pid: continue
#     frames = [prog.sym(a, pid).decode() for a in prog["stacks"].walk(key.user_stack_id)]
#     result[";".join(reversed(frames))] += count.value
# ```
# Skip or label keys whose `user_stack_id` is negative: there is nothing to
# walk.
# </details>

# %% [markdown]
# ## Try it
#
# Profile a small C program of your own: `main` calls `parse()` and
# `render()`, which both call `crunch()`, with three times more work in
# `parse`. It is compiled with `-fno-omit-frame-pointer`, so that the
# kernel can walk its whole user stack. It burns CPU for one second, then
# sleeps while you symbolize.

# %% tags=["try"]
import shutil
import tempfile
from pathlib import Path

C_PROGRAM = r"""
#include <time.h>
#include <unistd.h>
volatile unsigned long sink;
void crunch(int n) { for (int i = 0; i < n; i++) sink += i * i; }
void parse(void)   { crunch(30000); }
void render(void)  { crunch(10000); }
int main(void) {
    time_t end = time(NULL) + 2;
    while (time(NULL) < end) { parse(); render(); }
    sleep(3);
    return 0;
}
"""
workdir = Path(tempfile.mkdtemp(prefix="ebt-lab23-try-"))
(workdir / "demo.c").write_text(C_PROGRAM)
subprocess.run(["gcc", "-O0", "-fno-omit-frame-pointer", "-o", workdir / "demo",
                workdir / "demo.c"], check=True)

with Program(PROGRAM) as prog:
    start(prog)
    demo = subprocess.Popen([workdir / "demo"])
    time.sleep(2.2)
    stacks = folded(prog, demo.pid)
    demo.kill()
    demo.wait()
shutil.rmtree(workdir)
for stack, n in Counter(stacks).most_common(5):
    print(f"{n:4d}  {stack}")

# %% [markdown]
# About three quarters of the samples should end in `parse;crunch` and a
# quarter in `render;crunch`: the profile shows where the time goes, and
# through which callers.

# %% [markdown]
# ## Check

# %% tags=["check"]
check("2.3", program=PROGRAM, start=start, folded=folded)
