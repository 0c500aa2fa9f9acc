# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 17.1: Exec events per container
#
# **Objective.** Write the first piece of chapter 17's monitor: a program on
# the `sched:sched_process_exec` tracepoint that counts, **per container**,
# how many times each program was started. A container is a cgroup: the
# program keys its counts by the cgroup id of the task that exec'd, and
# counts only in the cgroups listed in the `containers` map.
#
# **Expected observation.** The check makes three containers (namespaces +
# a scratch cgroup each) and lists two of them in `containers`. It starts a
# freshly named program a known, random number of times in each container
# and on the host. Your `execs` map must hold exactly the counts of the two
# watched containers, under their cgroup ids, and nothing for the third
# container or the host.

# %% [markdown]
# ## Background
#
# * **The cgroup id.** `bpf_get_current_cgroup_id()` returns the id of the
#   cgroup (v2) of the task the program runs for: the inode number of the
#   cgroup's directory. In `sched_process_exec` that task is the one that
#   has just exec'd. `Container.cgroup_id` gives the same number from user
#   space.
# * **The program's name.** By the time `sched_process_exec` fires, the task's
#   name (`comm`) is already the new program's: `bpf_get_current_comm()`
#   reads it (at most 15 characters and a terminating zero).
# * **Counting.** `lookup_or_try_init(&key, &zero)` then `__sync_fetch_and_add`
#   (two CPUs may exec at once). Zero the key first (`= {}`): the comm is
#   shorter than its 16 bytes and the padding must not hold garbage.

# %%
from ebpf_tutor import Program
from ebpf_tutor.labs import check
from ebpf_tutor.sandbox.container import Container

# %% [markdown]
# ## Your program
#
# Keep the names: the check fills `containers` and reads `execs`.

# %% tags=["answer"]
PROGRAM = r"""
struct exec_key {
    u64 cgroup;              /* bpf_get_current_cgroup_id() */
    char comm[16];           /* the program's name */
};

BPF_HASH(containers, u64, u8, 64);          /* cgroup ids to watch: the check fills it */
BPF_HASH(execs, struct exec_key, u64, 1024);

TRACEPOINT_PROBE(sched, sched_process_exec) {
    // TODO 1: the cgroup id of the current task; return 0 unless it is in `containers`
    // TODO 2: count this exec in `execs` under {cgroup id, program name}
    // BEGIN SOLUTION
    u64 cgroup = bpf_get_current_cgroup_id();
    if (!containers.lookup(&cgroup))
        return 0;
    struct exec_key key = {};
    key.cgroup = cgroup;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 zero = 0;
    u64 *n = execs.lookup_or_try_init(&key, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Two steps: is this task in a container we watch (its cgroup id is a key of
# `containers`)? If so, add one to the counter of {that cgroup id, the
# program's name}.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `u64 cgroup = bpf_get_current_cgroup_id();` then `containers.lookup(&cgroup)`
#   is NULL for a cgroup that is not watched.
# * `struct exec_key key = {}; key.cgroup = cgroup;`
#   `bpf_get_current_comm(&key.comm, sizeof(key.comm));`
# * `u64 zero = 0, *n = execs.lookup_or_try_init(&key, &zero);` and, if `n`
#   is not NULL, `__sync_fetch_and_add(n, 1);`
# </details>
#
# <details><summary>Hint 3: a common mistake</summary>
#
# Keying by the process id (`bpf_get_current_pid_tgid() >> 32`) gives one
# entry per process, not per container; the pid a container shows is not
# even the one the kernel reports here (a pid namespace numbers its
# processes from 1).
# </details>

# %% [markdown]
# ## Try it
#
# One container, `ls` twice and `cat` once.

# %% tags=["try"]
import ctypes as ct

with Program(PROGRAM) as prog, Container("try") as c:
    prog["containers"][ct.c_uint64(c.cgroup_id)] = ct.c_uint8(1)
    c.run(["ls", "/"])
    c.run(["ls", "/"])
    c.run(["cat", "/etc/hostname"])
    for k, v in prog["execs"].items():
        print(k.cgroup == c.cgroup_id, k.comm.decode(), v.value)

# %% [markdown]
# ## Check

# %% tags=["check"]
check("17.1", program=PROGRAM)
