# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 11.2: An execution guardian
#
# **Objective.** Stop the processes of one cgroup from running some
# programs, named by their **inode**, so that copying the name, renaming
# the file or making a hard link to it does not help. Write it twice:
#
# 1. as a **BPF LSM** program on `bprm_check_security`, the hook every
#    `execve()` passes before the new program replaces the old one: refuse
#    with `-EPERM`, and the `execve()` fails while the caller lives on;
# 2. as the **fallback**: a raw tracepoint on `sched_process_exec`, which
#    fires once the new program is in place but before its first
#    instruction, and kills the process with `SIGKILL`.
#
# **Expected observation.** The check copies a small program (`echo`) twice
# under fresh names, makes a hard link to the first copy, and a fresh
# scratch cgroup. It puts the cgroup's id into `guarded` and the first copy's
# inode number into `blocked`. From inside the cgroup, the second copy runs
# and prints its argument; the first copy, by its name or through the hard
# link, is refused with `EPERM` (LSM variant) or killed before it prints
# anything (fallback). From outside, the first copy runs.
#
# * With BPF LSM (the course VM), both variants are loaded and judged.
# * Without it (the CI machine), your LSM variant is compiled but not
#   loaded, the PASS line says so, and the fallback is judged.
#
# **You will use:** `LSM_PROBE`, `struct linux_binprm`,
# `RAW_TRACEPOINT_PROBE`, `bpf_get_current_cgroup_id`, `bpf_send_signal`.

# %% [markdown]
# ## Background
#
# * `execve()` opens the new program, fills a `struct linux_binprm` (the
#   "binary parameters": `bprm->file` is the opened program, `bprm->filename`
#   the name it was called by), then asks the LSMs,
#   `security_bprm_check(bprm)`, before the point of no return. A refusal
#   there is an ordinary error return from `execve()`.
# * The tracepoint `sched_process_exec` fires after the point of no return:
#   the old program is gone, the new one is mapped, and the process has not
#   run any of it yet. As a raw tracepoint its arguments are those of the
#   kernel's `trace_sched_process_exec(p, old_pid, bprm)`:
#   `ctx->args[0]` is the task, `ctx->args[1]` the old pid,
#   `ctx->args[2]` the `struct linux_binprm *`.
# * `bpf_send_signal(9)` there kills the process before it executes one
#   instruction of the program; the `execve()` itself "succeeded".

# %%
import shutil
import tempfile
from pathlib import Path

from ebpf_tutor import Program, features
from ebpf_tutor.labs import check
from ebpf_tutor.sandbox.attempts import attempts
from ebpf_tutor.sandbox.cgroup import ScratchCgroup

# %% [markdown]
# ## Variant 1: BPF LSM on `bprm_check_security`

# %% tags=["answer"]
LSM_PROGRAM = r"""
#include <linux/fs.h>
#include <linux/binfmts.h>
#include <linux/errno.h>

BPF_HASH(guarded, u64, u8);     // cgroup id -> 1
BPF_HASH(blocked, u64, u8);     // inode number of a program -> 1

LSM_PROBE(bprm_check_security, struct linux_binprm *bprm, int ret) {
    if (ret)
        return ret;
    // TODO 1: in a guarded cgroup, refuse (-EPERM) a program whose inode is blocked
    // BEGIN SOLUTION
    u64 cgroup = bpf_get_current_cgroup_id();
    if (!guarded.lookup(&cgroup))
        return 0;
    u64 ino = bprm->file->f_inode->i_ino;
    if (blocked.lookup(&ino))
        return -EPERM;
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# ## Variant 2: the fallback, kill before the first instruction

# %% tags=["answer"]
FALLBACK_PROGRAM = r"""
#include <linux/fs.h>
#include <linux/binfmts.h>

BPF_HASH(guarded, u64, u8);
BPF_HASH(blocked, u64, u8);

RAW_TRACEPOINT_PROBE(sched_process_exec) {
    // TODO 2: the same decision; on a match, kill the process (SIGKILL)
    // BEGIN SOLUTION
    u64 cgroup = bpf_get_current_cgroup_id();
    if (!guarded.lookup(&cgroup))
        return 0;
    struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
    u64 ino = bprm->file->f_inode->i_ino;
    if (blocked.lookup(&ino))
        bpf_send_signal(9);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# The decision is the same in both variants: return early unless
# `bpf_get_current_cgroup_id()` is a key of `guarded`; then look up the
# program's inode number in `blocked`.
# </details>
#
# <details><summary>Hint 2</summary>
#
# The inode of the program being started is `bprm->file->f_inode->i_ino`. In
# the LSM variant `bprm` is the hook's argument; in the raw tracepoint it is
# the third argument: `(struct linux_binprm *)ctx->args[2]`. BCC turns the
# chain of `->` into safe kernel reads in both.
# </details>
#
# <details><summary>Hint 3</summary>
#
# On a match: `return -EPERM;` in the LSM variant (the `execve()` fails and the
# caller carries on); `bpf_send_signal(9);` in the fallback. The check's
# processes ignore `SIGTERM`, as any process may: only `SIGKILL` stops them.
# </details>

# %% [markdown]
# ## Try it
#
# Block a copy of `echo` for a scratch cgroup and run it from inside and
# from outside.

# %% tags=["try", "needs-lsm"]
folder = Path(tempfile.mkdtemp(prefix="lab11-"))
tool = folder / "my-echo"
shutil.copy("/bin/echo", tool)
if features.available("lsm"):
    prog = Program(LSM_PROGRAM)
else:
    features.notice("lsm", "the fallback")
    prog = Program(FALLBACK_PROGRAM)
with prog, ScratchCgroup("try") as cg:
    prog["guarded"][prog["guarded"].Key(cg.id)] = prog["guarded"].Leaf(1)
    prog["blocked"][prog["blocked"].Key(tool.stat().st_ino)] = prog["blocked"].Leaf(1)
    print("inside: ", attempts([("run", str(tool), "hello")], cg))
    print("outside:", attempts([("run", str(tool), "hello")]))
shutil.rmtree(folder)

# %% [markdown]
# ## Check

# %% tags=["check", "needs-lsm"]
check("11.2", lsm_program=LSM_PROGRAM, fallback_program=FALLBACK_PROGRAM)
