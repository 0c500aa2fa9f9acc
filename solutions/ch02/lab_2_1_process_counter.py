# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 2.1: A process counter
#
# **Objective.** Count, in a hash map, how many times each process calls
# `write()`. One entry per process: the key holds the process id and its
# name (`comm`), the value the number of calls.
#
# **Expected observation.** The check builds a tiny C program that calls
# `write()` a given number of times, copies it under three fresh, random
# names, and runs each copy once: for example 7 writes, 24 writes spread
# over *two threads*, and 1 write. Your map `writes` must then hold exactly
# one key per process, with its real pid and name, and exactly those counts.
#
# **You will use:** `BPF_HASH` with a struct key, `bpf_get_current_pid_tgid`,
# `bpf_get_current_comm`, `TRACEPOINT_PROBE`, and `table_df`.

# %% [markdown]
# ## Background
#
# * `syscalls:sys_enter_write` fires each time any thread of any process
#   enters the `write()` system call. Its arguments (`args->fd`,
#   `args->count`, ...) are listed in
#   `/sys/kernel/tracing/events/syscalls/sys_enter_write/format`.
# * `bpf_get_current_pid_tgid()` returns one 64-bit number holding two ids.
#   The kernel's "tgid" (thread group id) is what user space calls the
#   **process id**; the kernel's "pid" is what user space calls the **thread
#   id**. In a single-threaded process they are equal; in a process with
#   threads, every thread has its own thread id and they all share the
#   process id.
# * `bpf_get_current_comm(buf, size)` copies the name of the current task
#   (at most 15 characters and a NUL).
# * A struct key must be fully initialised (`= {}`) before use: the hash
#   compares all its bytes, padding included.

# %%
import subprocess

from ebpf_tutor import Program, table_df
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Complete the TODOs. Keep the names: the check looks for a map named
# `writes` whose key has the fields `pid` and `comm`.

# %% tags=["answer"]
PROGRAM = r"""
struct proc_t {
    u32 pid;            // the process id (what `ps` shows)
    char comm[16];      // the process name
};

// TODO 1: declare a hash map named `writes`: key struct proc_t, value u64
// BEGIN SOLUTION
BPF_HASH(writes, struct proc_t, u64);
// END SOLUTION

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    struct proc_t key = {};
    // TODO 2: fill key.pid with the PROCESS id of the caller
    // TODO 3: fill key.comm with the caller's name
    // TODO 4: add one to this key's count
    // BEGIN SOLUTION
    key.pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    writes.increment(key);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# `BPF_HASH(writes, struct proc_t, u64);` at the top level declares the map.
# `writes.increment(key);` creates the entry at 0 if needed and adds one.
# </details>
#
# <details><summary>Hint 2</summary>
#
# `bpf_get_current_pid_tgid()` is `tgid << 32 | pid` in the kernel's words.
# The process id is the upper half: `bpf_get_current_pid_tgid() >> 32`. The
# lower half (a plain cast to `u32`) is the thread id, which splits a
# multi-threaded process into several keys.
# </details>
#
# <details><summary>Hint 3</summary>
#
# `bpf_get_current_comm(&key.comm, sizeof(key.comm));` fills the name. Fill
# the whole key *before* calling `increment`.
# </details>

# %% [markdown]
# ## Try it
#
# Load the program, run a few commands that write to a pipe, and look at the
# busiest writers on the machine.

# %% tags=["try"]
with Program(PROGRAM) as prog:
    for _ in range(3):
        subprocess.run(["ls", "/usr/bin"], stdout=subprocess.PIPE)
    df = table_df(prog["writes"])
df.head(8)

# %% [markdown]
# `ls` should be near the top, with 3 separate entries (three processes).
# Your Jupyter kernel and the machine's daemons appear too.

# %% [markdown]
# ## Check
#
# Run this cell. It prints one `PASS` line, or tells you what it expected and
# what to try next.

# %% tags=["check"]
check("2.1", program=PROGRAM)
