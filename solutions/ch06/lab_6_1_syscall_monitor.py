# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 6.1: A system call monitor
#
# **Objective.** Count every system call on the machine, per process and per
# system call, and how many of them failed, from two tracepoints:
# `raw_syscalls:sys_enter` and `raw_syscalls:sys_exit`. This is the core of
# `strace -c` and of BCC's `syscount`, for every process at once.
#
# **Expected observation.** The check starts a fresh process with two threads;
# each makes a random number of `getppid()`, failing `openat()` (a missing
# file), successful `openat()` + `close()`, and `umask()`; then the process
# ends with one `exit_group()`. Your map `counts` must hold, under that
# process's id and each of those five system call numbers, exactly the
# number of calls and of errors.

# %% [markdown]
# ## Background
#
# * `syscalls:sys_enter_<name>` exists for each system call, with its typed
#   arguments. `raw_syscalls:sys_enter` is a single tracepoint for *all* of
#   them: `args->id` is the system call number, `args->args[6]` the raw
#   arguments. `raw_syscalls:sys_exit` has `args->id` and `args->ret`.
# * Not every system call comes back: `exit_group()` (and `exit()` for a
#   thread) enter the kernel and never return, and a successful `execve()`
#   returns into a new program. Ask yourself at which of the two tracepoints
#   a *call* is sure to be seen.
# * A system call fails by returning a **negative errno** (`-2`, `ENOENT`);
#   the C library turns that into `-1` and sets `errno`. At `sys_exit` you see
#   the kernel's value.
# * System call numbers depend on the architecture (`openat` is 257 on
#   x86_64, 56 on arm64). `bcc.syscall.syscall_name(nr)` gives the name back.
# * Look at the fields yourself:
#   `cat /sys/kernel/tracing/events/raw_syscalls/sys_enter/format`.

# %%
import subprocess

import matplotlib.pyplot as plt
from bcc.syscall import syscall_name

from ebpf_tutor import Program, table_df
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check reads `counts`, keyed by `struct key_t`.

# %% tags=["answer"]
PROGRAM = r"""
struct key_t {
    u32 pid;       // process id (tgid)
    u32 nr;        // system call number
};
struct val_t {
    u64 calls;
    u64 errors;    // calls that returned a negative value
};
BPF_HASH(counts, struct key_t, struct val_t, 16384);

TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    // TODO 1: build the key {pid, args->id}, find or create its entry, add a call
    // BEGIN SOLUTION
    struct key_t key = {.pid = bpf_get_current_pid_tgid() >> 32, .nr = args->id};
    struct val_t zero = {};
    struct val_t *v = counts.lookup_or_try_init(&key, &zero);
    if (v)
        __sync_fetch_and_add(&v->calls, 1);
    // END SOLUTION
    return 0;
}

TRACEPOINT_PROBE(raw_syscalls, sys_exit) {
    // TODO 2: when args->ret is an error, add one to errors of the same key
    // BEGIN SOLUTION
    if (args->ret >= 0)
        return 0;
    struct key_t key = {.pid = bpf_get_current_pid_tgid() >> 32, .nr = args->id};
    struct val_t *v = counts.lookup(&key);
    if (v)
        __sync_fetch_and_add(&v->errors, 1);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# Two events, two jobs. A call is counted when it *starts*: every call
# enters, not every call returns (`exit_group` never does). An error is only
# known when it *ends*: the return value. So `sys_enter` adds a call,
# `sys_exit` adds an error when the return value is negative. Both must find
# the same entry: the key is the process and the system call number, which
# both tracepoints carry.
# </details>
#
# <details><summary>Hint 2</summary>
#
# The API: `bpf_get_current_pid_tgid() >> 32` is the process id (the low 32
# bits are the thread); `args->id` the number, `args->ret` the return value
# (a negative errno: `-2`, not `-1`). `counts.lookup_or_try_init(&key, &zero)`
# finds or creates the entry (NULL when the map is full: check it),
# `counts.lookup(&key)` only finds it. Two threads can make calls at the
# same moment on two CPUs: add with `__sync_fetch_and_add`, not `++`.
# </details>
#
# <details><summary>Hint 3</summary>
#
# At entry:
#
# ```c
# struct key_t key = {.pid = bpf_get_current_pid_tgid() >> 32, .nr = args->id};
# struct val_t zero = {};
# struct val_t *v = counts.lookup_or_try_init(&key, &zero);
# if (v)
#     __sync_fetch_and_add(&v->calls, 1);
# ```
#
# At exit: return at once when `args->ret >= 0`; otherwise build the same key,
# `counts.lookup(&key)`, and add one to `v->errors`.
# </details>

# %% [markdown]
# ## Try it
#
# Which system calls does `ls -l /etc` make, and which of them fail?

# %% tags=["try"]
with Program(PROGRAM) as prog:
    ls = subprocess.Popen(["ls", "-l", "/etc"], stdout=subprocess.DEVNULL)
    ls.wait()
    df = table_df(prog["counts"], sort=False)
ls_calls = df[df.pid == ls.pid].copy()
ls_calls["name"] = ls_calls.nr.map(lambda nr: syscall_name(nr).decode())
ls_calls = ls_calls.sort_values("calls").tail(12)
ax = ls_calls.plot.barh(x="name", y=["calls", "errors"], figsize=(6, 4))
ax.set_xlabel("count")
ax.set_ylabel("")
ax.set_title("system calls of ls -l /etc")
plt.tight_layout()

# %% [markdown]
# ## Check

# %% tags=["check"]
check("6.1", program=PROGRAM)
