# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 10.2: A version-adaptive program
#
# **Objective.** One object file that reads a task's scheduler state on
# every kernel, whatever the field is called there. Linux 5.14 renamed
# `task_struct.state` to `__state` (and made it an `unsigned int`); code
# that names either one breaks on the other side of that release. Your
# program asks the kernel's BTF, at load time, which exists:
# `bpf_core_field_exists()` for the fields, `bpf_core_type_exists()` for a
# type (`struct mm_rss_stat`, which Linux 6.2 removed), records what it
# found in three flags, and reads the state through the field that exists.
#
# **Expected observation.** The check starts a parent process with one
# child, **stops the parent** (`SIGSTOP`), and has the child call
# `getppid()`. Your program reads the parent's state: the stopped bit
# (`__TASK_STOPPED`, 4) must be set. The flags must equal what this
# kernel's BTF says. Then the check loads your object **a second time,
# against another BTF**: this kernel's, with `__state` renamed `state`
# and a `struct mm_rss_stat` added, as on a kernel older than 5.14. Your
# flags must follow, and the state must still be read, now through `state`.
#
# **You will use:** `bpf_core_field_exists`, `bpf_core_type_exists`,
# `BPF_CORE_READ`, type *flavors* (`struct task_struct___pre514`), and the
# `.rodata` / `.bss` globals of a `BPFObject`.

# %% [markdown]
# ## Background
#
# * Your `vmlinux.h` comes from *this* kernel, where `state` does not exist:
#   a plain `task->state` does not even compile. A **flavor** declares the
#   old layout under another name: libbpf ignores everything from `___` on
#   when it matches types, so `struct task_struct___pre514` is matched
#   against the kernel's `struct task_struct`, and its `state` against a
#   field called `state`.
# * `bpf_core_field_exists(p->field)` and `bpf_core_type_exists(struct x)`
#   are answered by libbpf at load time (a CO-RE relocation that becomes the
#   constant 1 or 0). The verifier then sees `if (0)`: the branch that reads
#   the missing field is dead code and is never checked. Without the test,
#   the read of a missing field is a failed relocation, and the program
#   does not load.
# * `BPFObject(..., btf_custom_path=...)` makes libbpf relocate against
#   another BTF file than `/sys/kernel/btf/vmlinux`: how the check fakes an
#   older kernel, and how BTFGen's `min_core_btf` files work.

# %%
import ctypes as ct
import os
import signal
import subprocess
import sys
import time

from ebpf_tutor import BPFObject
from ebpf_tutor.labs import check

# %% tags=["answer"]
PROGRAM = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* task_struct as it was before Linux 5.14 (only the field we need) */
struct task_struct___pre514 {
    long state;
} __attribute__((preserve_access_index));

/* a type that exists only before Linux 6.2 (the flavor lets it compile here) */
struct mm_rss_stat___pre62 {
    long count[4];
} __attribute__((preserve_access_index));

const volatile __u32 target_tgid = 0;   /* set by the check before load */

int has_state_new;      /* 1 if task_struct has __state */
int has_state_old;      /* 1 if task_struct has state */
int has_rss_stat;       /* 1 if struct mm_rss_stat exists */
long parent_state;      /* the parent's state, from whichever field exists */
__u32 calls;

SEC("tp/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct task_struct *parent;

    if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
        return 0;
    parent = BPF_CORE_READ(task, real_parent);
    // TODO 1: set the three flags with bpf_core_field_exists(...) and
    //         bpf_core_type_exists(struct mm_rss_stat___pre62)
    // TODO 2: if __state exists, parent_state = BPF_CORE_READ(parent, __state);
    //         otherwise read `state` through struct task_struct___pre514
    // BEGIN SOLUTION
    has_state_new = bpf_core_field_exists(parent->__state);
    has_state_old = bpf_core_field_exists(((struct task_struct___pre514 *)parent)->state);
    has_rss_stat = bpf_core_type_exists(struct mm_rss_stat___pre62);
    if (bpf_core_field_exists(parent->__state))
        parent_state = BPF_CORE_READ(parent, __state);
    else
        parent_state = BPF_CORE_READ((struct task_struct___pre514 *)parent, state);
    // END SOLUTION
    __sync_fetch_and_add(&calls, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Write both reads, and put each behind the question "does this field
# exist here?". libbpf answers the question when it loads the object, from
# the kernel's BTF; the verifier then removes the branch that cannot run,
# so the read of the missing field is never checked and never executed.
# </details>
#
# <details><summary>Hint 2: the macros</summary>
#
# * `bpf_core_field_exists(parent->__state)` and, for the old name, cast
#   first: `bpf_core_field_exists(((struct task_struct___pre514 *)parent)->state)`.
# * `bpf_core_type_exists(struct mm_rss_stat___pre62)`.
# * `BPF_CORE_READ(parent, __state)`, and
#   `BPF_CORE_READ((struct task_struct___pre514 *)parent, state)`.
# * Reading the old field without the test compiles, but the object will
#   not load on this kernel: try it, and read the error.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# has_state_new = bpf_core_field_exists(parent->__state);
# has_state_old = bpf_core_field_exists(((struct task_struct___pre514 *)parent)->state);
# has_rss_stat = bpf_core_type_exists(struct mm_rss_stat___pre62);
# if (bpf_core_field_exists(parent->__state))
#     parent_state = BPF_CORE_READ(parent, __state);
# else
#     parent_state = BPF_CORE_READ((struct task_struct___pre514 *)parent, state);
# ```
# </details>

# %% [markdown]
# ## Try it
#
# Read the state of this notebook's parent, which is running or sleeping
# (0 or 1), and the flags of this kernel.

# %% tags=["try"]
with BPFObject.compile(PROGRAM, name="lab102", load=False) as obj:
    obj.set_global("target_tgid", os.getpid())
    obj.load()
    obj.attach("on_getppid")
    os.getppid()
    print({v: obj.get_global(v, ct.c_int32) for v in
           ("has_state_new", "has_state_old", "has_rss_stat", "calls")},
          "parent_state:", obj.get_global("parent_state", ct.c_int64))

# %% [markdown]
# ## Check

# %% tags=["check"]
check("10.2", program=PROGRAM)
