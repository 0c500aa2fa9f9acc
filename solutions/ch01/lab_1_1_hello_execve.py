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
# **You will use:** `TRACEPOINT_PROBE`, `BPF_HASH`, `bpf_probe_read_user_str`,
# and `ebpf_tutor.Program`.

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

# %%
from ebpf_tutor import Program, table_df
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Complete the three TODOs. Keep the names: the check looks for a map called
# `execs` whose key is a `struct fname_t`.

# %% tags=["answer"]
PROGRAM = r"""
struct fname_t {
    char name[64];
};

// TODO 1: declare a hash map named `execs`: key struct fname_t, value u64
// BEGIN SOLUTION
BPF_HASH(execs, struct fname_t, u64);
// END SOLUTION

TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    struct fname_t key = {};
    // TODO 2: copy the file name (args->filename, a user-space string) into key.name
    // TODO 3: add one to the count of this key in `execs`
    // BEGIN SOLUTION
    bpf_probe_read_user_str(&key.name, sizeof(key.name), args->filename);
    execs.increment(key);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# A BCC hash map is declared with `BPF_HASH(name, key_type, value_type);` at
# the top level of the program, outside any function.
# </details>
#
# <details><summary>Hint 2</summary>
#
# `bpf_probe_read_user_str(&key.name, sizeof(key.name), args->filename);`
# copies the string. Then `execs.increment(key);` creates the entry at 0 if
# needed and adds one.
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
