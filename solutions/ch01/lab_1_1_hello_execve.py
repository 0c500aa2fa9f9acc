# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 1.1: Hello eBPF, counting `execve`
#
# **Objective.** Write your first BPF program: attach to the tracepoint
# `syscalls:sys_enter_execve` and count, in a hash map, how many times each
# program file is executed.
#
# **Expected observation.** The check copies `/bin/true` under two fresh,
# random names and runs one 5 times and the other 3 times. Your map `execs`
# must then hold exactly 5 and 3 under those two file names, whatever else
# the machine was running at the same time.
#
# **Stretch goal (optional, checked if present).** Add a second map,
# `last_pid`, with the same key and a `u32` value: the process id that
# executed each file most recently. The check compares it with the pid of
# its last run of each program.
#
# **You will use:** `TRACEPOINT_PROBE`, `BPF_HASH`, `bpf_probe_read_user_str`,
# `atomic_increment`, `bpf_get_current_pid_tgid`, and `ebpf_tutor.Program`.

# %% [markdown]
# ## Background
#
# Every new program starts with the `execve` system call. Its tracepoint
# `syscalls:sys_enter_execve` fires when a process *asks* to run a file, and
# BCC hands you its arguments as `args`. See them all with
# `cat /sys/kernel/tracing/events/syscalls/sys_enter_execve/format`; the one
# you need is `args->filename`, a pointer into the calling process's memory.
#
# Memory that belongs to a user process cannot be read directly from BPF: it
# must be copied with `bpf_probe_read_user_str(dest, size, src)`.
#
# At this point the process has not become the new program yet, so
# `bpf_get_current_comm()` would still give the *parent's* name. That is why
# we key by file name.
#
# Two CPUs may exec the same file at the same moment. BCC's
# `map.increment(key)` compiles to a lookup followed by `*value += 1`: a
# load and a store that two CPUs can interleave, losing an update.
# `map.atomic_increment(key)` does the addition with one atomic instruction
# (`__sync_fetch_and_add`). On a `BPF_HASH`, both create a missing key
# (at 1).

# %%
from ebpf_tutor import Program, table_df
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Write the whole program below the key struct: the map, and the function
# attached to the tracepoint. Keep the names: the check looks for a map
# called `execs` whose key is a `struct fname_t`.

# %% tags=["answer"]
PROGRAM = r"""
struct fname_t {
    char name[64];
};

// TODO 1: declare a hash map named `execs`: key struct fname_t, value u64
// TODO 2: attach a function to the tracepoint syscalls:sys_enter_execve that
//         copies the file name (args->filename, a user-space string) into a
//         zeroed key and adds one to that key's count, atomically
// Stretch: a second map `last_pid` (key struct fname_t, value u32) holding
//         the process id of the latest exec of each file
// BEGIN SOLUTION
BPF_HASH(execs, struct fname_t, u64);
BPF_HASH(last_pid, struct fname_t, u32);

TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    struct fname_t key = {};
    u32 pid = bpf_get_current_pid_tgid() >> 32;

    bpf_probe_read_user_str(&key.name, sizeof(key.name), args->filename);
    execs.atomic_increment(key);
    last_pid.update(&key, &pid);
    return 0;
}
// END SOLUTION
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# The program has two parts. At the top level, a map that survives between
# events: file name in, count out. In the function that runs on each event,
# build the key from the event's argument (the file name lives in the calling
# process's memory, so it must be copied, not dereferenced), then bump that
# key's count in a way that two CPUs cannot spoil.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `BPF_HASH(name, key_type, value_type);` declares a hash map (top level).
# * `TRACEPOINT_PROBE(category, event) { ... return 0; }` declares the
#   function and attaches it when the program loads; inside, `args->filename`
#   is the argument.
# * `bpf_probe_read_user_str(dest, size, user_pointer)` copies a user string.
# * `map.atomic_increment(key)` adds one atomically (creating the key);
#   `map.update(&key, &value)` stores a value (stretch goal);
#   `bpf_get_current_pid_tgid() >> 32` is the process id.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# BPF_HASH(execs, struct fname_t, u64);
#
# TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
#     struct fname_t key = {};
#     bpf_probe_read_user_str(&key.name, sizeof(key.name), /* the argument */);
#     /* bump key's count in execs, atomically */
#     return 0;
# }
# ```
# </details>

# %% [markdown]
# ## Try it
#
# Load the program, run a couple of commands, and look at the map. `with`
# makes sure the program is detached and unloaded afterwards.

# %% tags=["try"]
import subprocess

with Program(PROGRAM) as prog:
    for _ in range(3):
        subprocess.run(["/bin/true"])
    df = table_df(prog["execs"])
df.head()

# %% [markdown]
# ## Check
#
# Run this cell. It prints one `PASS` line, or tells you what it expected and
# what to try next.

# %% tags=["check"]
check("1.1", program=PROGRAM)
