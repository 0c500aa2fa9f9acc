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
# `write()` a given number of times, copies it under fresh, random names,
# and runs each copy once: for example 7 writes, 25 writes spread over *two
# threads*, 1 write, and then 300,001 writes from two threads pinned to two
# CPUs, so that they run at the same moment (repeated, up to six times,
# until the check has seen them race). Your map `writes` must then hold
# exactly one key per process, with its real pid and name, and exactly
# those counts: not one update lost.
#
# **Stretch goal (optional, checked if present).** A second map, `bytes`,
# with the same key: the total number of bytes each process asked
# `write()` to write (`args->count`; the check's program writes 2 bytes per
# call).
#
# **You will use:** `BPF_HASH` with a struct key, `bpf_get_current_pid_tgid`,
# `bpf_get_current_comm`, `TRACEPOINT_PROBE`, `lookup_or_try_init`,
# `__sync_fetch_and_add`, and `table_df`.

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
# * Two threads of one process can run on two CPUs at the same moment, and
#   then two copies of your program update the same value at once. BCC's
#   `writes.increment(key)` compiles to a lookup followed by `*value += 1`:
#   a load and a store, which two CPUs can interleave so that one addition
#   is lost. `writes.atomic_increment(key)` adds with one atomic instruction.
#   Both create a missing key with a second step ("insert 1 unless the key
#   exists"), and if two CPUs miss the same new key at once, one of the two
#   inserts fails and its count is lost. The pattern with no gap is
#   `lookup_or_try_init(&key, &zero)` (it inserts 0 if the key is missing,
#   then returns a pointer to the value, whoever inserted it) followed by
#   `__sync_fetch_and_add(pointer, 1)`. A per-CPU hash
#   (`BPF_PERCPU_HASH`) avoids the atomic instruction altogether: each CPU
#   adds to its own copy with a plain `*pointer += 1`, and the check sums the
#   copies (Chapter 2, §2.4; there too, `increment()` never inserts a missing
#   key: use `lookup_or_try_init`).

# %%
import subprocess

from ebpf_tutor import Program, table_df
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Write the program below the key struct: the map, and the function
# attached to the tracepoint. Keep the names: the check looks for a map named
# `writes` whose key has the fields `pid` and `comm`.

# %% tags=["answer"]
PROGRAM = r"""
struct proc_t {
    u32 pid;            // the process id (what `ps` shows)
    char comm[16];      // the process name
};

// TODO 1: declare a hash map named `writes`: key struct proc_t, value u64
// TODO 2: on syscalls:sys_enter_write, build a zeroed key from the caller's
//         PROCESS id and name, and add one to that key's count so that no
//         update is lost when two CPUs count for the same process at once
// Stretch: a map `bytes` (same key, u64) that adds up args->count
// BEGIN SOLUTION
BPF_HASH(writes, struct proc_t, u64);
BPF_HASH(bytes, struct proc_t, u64);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    struct proc_t key = {};
    u64 zero = 0, *count, *total;

    key.pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    count = writes.lookup_or_try_init(&key, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    total = bytes.lookup_or_try_init(&key, &zero);
    if (total)
        __sync_fetch_and_add(total, args->count);
    return 0;
}
// END SOLUTION
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# One key per *process*, so the key must hold what all threads of a process
# share, not what tells them apart. Build the whole key first, then update
# the count. And the count of a two-threaded process is updated from two
# CPUs at once: the update must be one indivisible step, and so must
# creating the key the first time.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `bpf_get_current_pid_tgid()` is `tgid << 32 | pid` in the kernel's
#   words: the kernel's tgid is user space's process id, its pid is the
#   thread id.
# * `bpf_get_current_comm(buf, sizeof(buf))` copies the name.
# * `map.lookup_or_try_init(&key, &zero)` returns a pointer to the key's
#   value, inserting `zero` first if the key is missing (NULL only if the
#   map is full).
# * `__sync_fetch_and_add(pointer, n)` adds `n` atomically.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# TRACEPOINT_PROBE(syscalls, sys_enter_write) {
#     struct proc_t key = {};
#     u64 zero = 0, *count;
#     key.pid = /* the upper 32 bits of bpf_get_current_pid_tgid() */;
#     bpf_get_current_comm(&key.comm, sizeof(key.comm));
#     count = writes.lookup_or_try_init(&key, &zero);
#     if (count)
#         /* add one, atomically */;
#     return 0;
# }
# ```
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
