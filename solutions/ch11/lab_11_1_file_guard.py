# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 11.1: File access control
#
# **Objective.** Keep the processes of one cgroup away from a set of files,
# the way a container security agent does. Write it twice:
#
# 1. as a **BPF LSM** program on the `file_open` hook, which decides by the
#    file's **inode** and refuses the open with `-EPERM`;
# 2. as the **fallback** for kernels whose BPF LSM programs cannot load: a
#    tracepoint on `sys_enter_openat` that recognises the **path** and kills
#    the process with `bpf_send_signal(SIGKILL)`.
#
# Both act only for processes whose cgroup is in the map `guarded`.
#
# **Expected observation.** The check makes a fresh file, a hard link to it
# and a second fresh file, and a fresh scratch cgroup. It puts the cgroup's
# id into `guarded` and the file into `blocked` (its inode number, LSM
# variant) or `blocked_paths` (its path, fallback). Then, from a process
# inside the cgroup:
#
# * reading the other file works;
# * reading the blocked file fails with `EPERM` (LSM variant; through the hard
#   link too), or the process is killed by `SIGKILL` (fallback);
#
# and from a process outside, reading the blocked file works.
#
# * With BPF LSM (the course VM), both variants are loaded and judged.
# * Without it (the CI machine: LSM programs fail to load with `EPERM`), your
#   LSM variant is compiled but not loaded, the PASS line says so, and the
#   fallback is judged.
#
# **You will use:** `LSM_PROBE`, `bpf_get_current_cgroup_id`,
# `TRACEPOINT_PROBE`, `bpf_probe_read_user_str`, `bpf_send_signal`.

# %% [markdown]
# ## Background
#
# * `LSM_PROBE(file_open, struct file *file, int ret)` is BCC's spelling of a
#   BPF LSM program: the hook's arguments, then `ret`, what the BPF LSM
#   programs that ran before this one decided (0 when none refused). Return
#   0 to allow, a negative errno to refuse: the `open()` then fails with
#   that errno. Never a positive value: Linux 6.12's verifier rejects a
#   program that may return one, and 6.1, which does not check, hands it to
#   kernel code written for 0 or an errno. BCC attaches it when the program
#   loads. Pointers are typed
#   (BTF), so `file->f_inode->i_ino` reads straight through.
# * `bpf_get_current_cgroup_id()` is the id of the current process's cgroup
#   v2, the inode number of its directory (`ScratchCgroup.id`).
# * A system call tracepoint sees the call **before** the kernel does
#   anything: the path is a pointer into the caller's memory (copy it with
#   `bpf_probe_read_user_str` into a buffer you zeroed, so that the bytes
#   after the string are zeros in every key); there is no inode yet.
#   `bpf_send_signal(9)` marks the process for death; the call still runs,
#   but the process dies before it returns to user space, so it never sees
#   what it opened. This is detection with a kill, not a refusal: what the
#   call did is done (`O_CREAT` created the file, `O_TRUNC` emptied it).

# %%
import tempfile
from pathlib import Path

from ebpf_tutor import Program, features
from ebpf_tutor.labs import check
from ebpf_tutor.sandbox.attempts import attempts
from ebpf_tutor.sandbox.cgroup import ScratchCgroup

# %% [markdown]
# ## Variant 1: BPF LSM on `file_open`
#
# Keep the map names and types: the check fills them.

# %% tags=["answer"]
LSM_PROGRAM = r"""
#include <linux/fs.h>
#include <linux/errno.h>

BPF_HASH(guarded, u64, u8);     // cgroup id -> 1: where the policy applies
BPF_HASH(blocked, u64, u8);     // inode number -> 1: the files it protects

LSM_PROBE(file_open, struct file *file, int ret) {
    if (ret)                    // an earlier program already refused: keep its answer
        return ret;
    // TODO 1: return 0 unless the current cgroup is guarded
    // TODO 2: return -EPERM when the file's inode number is blocked
    // BEGIN SOLUTION
    u64 cgroup = bpf_get_current_cgroup_id();
    if (!guarded.lookup(&cgroup))
        return 0;
    u64 ino = file->f_inode->i_ino;
    if (blocked.lookup(&ino))
        return -EPERM;
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# ## Variant 2: the fallback, detect and kill

# %% tags=["answer"]
FALLBACK_PROGRAM = r"""
struct path_t {
    char name[128];
};
BPF_HASH(guarded, u64, u8);                   // cgroup id -> 1
BPF_HASH(blocked_paths, struct path_t, u8);   // absolute path -> 1

static __always_inline int watch(const char __user *filename) {
    // TODO 3: in a guarded cgroup, copy the path into a zeroed struct path_t,
    //         and kill the process (SIGKILL) when it is in blocked_paths
    // BEGIN SOLUTION
    u64 cgroup = bpf_get_current_cgroup_id();
    if (!guarded.lookup(&cgroup))
        return 0;
    struct path_t key = {};
    bpf_probe_read_user_str(&key.name, sizeof(key.name), filename);
    if (blocked_paths.lookup(&key))
        bpf_send_signal(9);
    // END SOLUTION
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat) { return watch(args->filename); }
TRACEPOINT_PROBE(syscalls, sys_enter_openat2) { return watch(args->filename); }
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# Both variants start the same way: `u64 cgroup = bpf_get_current_cgroup_id();`
# and `if (!guarded.lookup(&cgroup)) return 0;`. Everything outside the
# guarded cgroup must go through untouched.
# </details>
#
# <details><summary>Hint 2</summary>
#
# LSM variant: the inode number is `file->f_inode->i_ino` (a `u64` key, the
# number `os.stat(path).st_ino` shows); on a match, `return -EPERM;`. A hard
# link is another name for the same inode, so it is refused too.
# </details>
#
# <details><summary>Hint 3</summary>
#
# Fallback: `struct path_t key = {};` (zeroed: map keys compare every byte),
# then `bpf_probe_read_user_str(&key.name, sizeof(key.name), filename);`:
# the path lives in the process's memory, so `_user_`, not `_kernel_`. On a
# match, `bpf_send_signal(9)`: any process can ignore `SIGTERM` (15), and the
# check's do; nobody can ignore `SIGKILL`.
# </details>

# %% [markdown]
# ## Try it
#
# Guard a scratch cgroup, block one file, and try it from inside and from
# outside, with the LSM variant where BPF LSM works, else with the fallback.

# %% tags=["try", "needs-lsm"]
folder = Path(tempfile.mkdtemp(prefix="lab11-"))
secret = folder / "secret.txt"
secret.write_text("the launch codes\n")
if features.available("lsm"):
    prog = Program(LSM_PROGRAM)
    blocked = prog["blocked"]
    key = blocked.Key(secret.stat().st_ino)
else:
    features.notice("lsm", "the fallback")
    prog = Program(FALLBACK_PROGRAM)
    blocked = prog["blocked_paths"]
    key = blocked.Key()
    key.name = str(secret).encode()
with prog, ScratchCgroup("try") as cg:
    prog["guarded"][prog["guarded"].Key(cg.id)] = prog["guarded"].Leaf(1)
    blocked[key] = blocked.Leaf(1)
    print("inside: ", attempts([("read", str(secret))], cg))
    print("outside:", attempts([("read", str(secret))]))
secret.unlink()
folder.rmdir()

# %% [markdown]
# ## Check

# %% tags=["check", "needs-lsm"]
check("11.1", lsm_program=LSM_PROGRAM, fallback_program=FALLBACK_PROGRAM)
