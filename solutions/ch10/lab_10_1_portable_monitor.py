# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 10.1: A portable process monitor
#
# **Objective.** Write a CO-RE program, compiled once with clang against
# `vmlinux.h` and loaded with libbpf, that reports every program a process
# starts: its process id, its **parent's** process id and its command name,
# all read from `struct task_struct` with `BPF_CORE_READ`, and sent to user
# space through a ring buffer. Then decode the records in Python.
#
# **Expected observation.** The check first hands your `decode` a record
# it made itself, with random values. Then it makes a folder of links with
# fresh random names (`e10a3f9c1b`, ...) to `/bin/sh` and runs each from a
# parent shell; each child writes its own `$$` and `$PPID` to a marker
# file. For every fresh name, one of your records must carry that name,
# that pid and that parent pid.
#
# **You will use:** `bpf_get_current_task()`, `BPF_CORE_READ`,
# `BPF_CORE_READ_STR_INTO`, `bpf_ringbuf_reserve`/`submit`, and
# `BPFObject.compile`, `.attach`, `.ring_buffer`, `.poll`.

# %% [markdown]
# ## Background
#
# * `SEC("tp/sched/sched_process_exec")` runs when `execve()` has replaced
#   the process's program. The current task is the process that exec'd:
#   its `comm` is already the new program's name (the file name it was
#   started by, cut to 15 characters).
# * `BPF_CORE_READ(task, real_parent, tgid)` reads `task->real_parent->tgid`
#   through `bpf_probe_read_kernel`, and clang records each field access
#   in `.BTF.ext`: libbpf rewrites the offsets for the running kernel.
#   `tgid` is what user space calls the process id; `pid` is the thread id.
# * `BPF_CORE_READ_STR_INTO(&dst, task, comm)` copies a string field.
# * The record layout is fixed by the C struct below: two `__u32`, then
#   16 bytes of name. Python's `struct` module decodes it. The name ends at
#   its first NUL byte: `bpf_ringbuf_reserve()` does not zero the record,
#   so what follows the NUL can be left-overs of older records.

# %%
import os
import struct
import subprocess
import tempfile

from ebpf_tutor import BPFObject
from ebpf_tutor.labs import check

# %% tags=["answer"]
PROGRAM = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct event {
    __u32 pid;          /* the process that exec'd (task->tgid) */
    __u32 ppid;         /* its parent (task->real_parent->tgid) */
    char comm[16];      /* its command name (task->comm) */
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 16);
} events SEC(".maps");

SEC("tp/sched/sched_process_exec")
int on_exec(void *ctx)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return 0;
    // TODO 1: e->pid = the process id: BPF_CORE_READ(task, tgid)
    // TODO 2: e->ppid = the parent's process id: task->real_parent->tgid
    // TODO 3: copy task->comm into e->comm with BPF_CORE_READ_STR_INTO
    // BEGIN SOLUTION
    e->pid = BPF_CORE_READ(task, tgid);
    e->ppid = BPF_CORE_READ(task, real_parent, tgid);
    BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
    // END SOLUTION
    bpf_ringbuf_submit(e, 0);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


# %% tags=["answer"]
def decode(raw: bytes) -> dict:
    """One ring-buffer record -> {"pid": int, "ppid": int, "comm": str}."""
    # TODO 4: unpack two native-order u32 and 16 bytes ("=II16s"), and cut
    #         the name at its first NUL byte
    # BEGIN SOLUTION
    pid, ppid, comm = struct.unpack("=II16s", raw[:24])
    return {"pid": pid, "ppid": ppid, "comm": comm.split(b"\0", 1)[0].decode(errors="replace")}
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Three reads from the same `task` pointer, each with `BPF_CORE_READ`: one
# field of the task, one field of the task its `real_parent` points to, one
# string. You never write an offset: clang records *which field* you meant,
# libbpf finds where that field lives in this kernel.
# </details>
#
# <details><summary>Hint 2: the macros</summary>
#
# * `BPF_CORE_READ(task, tgid)` is `task->tgid`; `BPF_CORE_READ(task, a, b)`
#   is `task->a->b` (each arrow a safe kernel read).
# * `BPF_CORE_READ_STR_INTO(&e->comm, task, comm)`.
# * `task->pid` is the *thread* id; `real_parent` is the process that
#   forked this one (`parent` can be a tracer).
# * In Python: `struct.unpack("=II16s", raw[:24])`.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# e->pid = BPF_CORE_READ(task, tgid);
# e->ppid = BPF_CORE_READ(task, real_parent, tgid);
# BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
# ```
# </details>

# %% [markdown]
# ## Try it
#
# Start a few programs from a shell and watch them arrive.

# %% tags=["try"]
seen = []
with BPFObject.compile(PROGRAM, name="lab101") as obj:
    obj.attach("on_exec")
    obj.ring_buffer("events", lambda raw: seen.append(decode(raw)))
    shell = subprocess.Popen(["/bin/sh", "-c", "true; ls / > /dev/null; echo $$ > /dev/null"])
    shell.wait()
    obj.poll(200)
mine = [e for e in seen if e["ppid"] == shell.pid]
print(f"shell {shell.pid} started:", [(e["pid"], e["comm"]) for e in mine])

# %% [markdown]
# ## Check

# %% tags=["check"]
check("10.1", program=PROGRAM, decode=decode)
