# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 17.3: Kill a shell at its exec
#
# **Objective.** Enforce a policy in the kernel: in a **guarded** container,
# no shell may run. At `sched:sched_process_exec`, if the task is in a
# guarded cgroup and the program it just exec'd is named like a shell, send
# it `SIGKILL` with `bpf_send_signal` and count the kill.
#
# **Expected observation.** The check lists freshly named shells in
# `shells` (links to `/bin/sh` with new names) and one container in
# `guarded`. In the guarded container a shell dies with signal 9 before it
# prints anything, while a freshly named copy of `ls` runs. The same shell
# runs normally in an unguarded container and on the host. `kills` holds
# exactly the kills, under the guarded container's cgroup id.

# %% [markdown]
# ## Background
#
# * **`bpf_send_signal(sig)`** sends `sig` to the process of the current
#   task (tracing programs only). In `sched_process_exec` that is the
#   process that has just exec'd: it is killed on its way back to user
#   space, before its first instruction.
# * **Which signal.** `SIGKILL` (9) cannot be caught, blocked or ignored; a
#   shell can trap `SIGTERM` (15).
# * **The name** is already the new program's at this tracepoint:
#   `bpf_get_current_comm()` into a `struct comm_t` zeroed first, then look
#   it up in `shells`.
# * **Only guarded containers**: `bpf_get_current_cgroup_id()` in `guarded`.

# %%
import ctypes as ct

from ebpf_tutor import Program
from ebpf_tutor.labs import check
from ebpf_tutor.sandbox.container import Container

# %% [markdown]
# ## Your program
#
# Keep the names: the check fills `guarded` and `shells` and reads `kills`
# (cgroup id -> shells killed).

# %% tags=["answer"]
PROGRAM = r"""
struct comm_t { char c[16]; };

BPF_HASH(guarded, u64, u8, 64);             /* cgroup ids where no shell may run */
BPF_HASH(shells, struct comm_t, u8, 64);    /* program names that are shells */
BPF_HASH(kills, u64, u64, 64);              /* cgroup id -> shells killed */

TRACEPOINT_PROBE(sched, sched_process_exec) {
    // TODO 1: return 0 unless the current cgroup is guarded
    // TODO 2: return 0 unless the program's name is in `shells`
    // TODO 3: SIGKILL it with bpf_send_signal, and count the kill in `kills`
    // BEGIN SOLUTION
    u64 cgroup = bpf_get_current_cgroup_id();
    if (!guarded.lookup(&cgroup))
        return 0;
    struct comm_t name = {};
    bpf_get_current_comm(&name.c, sizeof(name.c));
    if (!shells.lookup(&name))
        return 0;
    bpf_send_signal(9);
    u64 zero = 0;
    u64 *n = kills.lookup_or_try_init(&cgroup, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Two filters, then the action: the cgroup must be guarded, the name must be
# a shell's. Then one helper call sends the signal, and a counter records
# that it did.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `u64 cgroup = bpf_get_current_cgroup_id();` and `guarded.lookup(&cgroup)`.
# * `struct comm_t name = {}; bpf_get_current_comm(&name.c, sizeof(name.c));`
#   then `shells.lookup(&name)`.
# * `bpf_send_signal(9);` then `lookup_or_try_init` and `__sync_fetch_and_add`
#   on `kills`.
# </details>
#
# <details><summary>Hint 3: what the check catches</summary>
#
# A policy that kills every exec of the guarded container (forgot the name
# test), one that kills shells everywhere (forgot the cgroup test), and
# `SIGTERM` instead of `SIGKILL` (the exit status says which signal killed).
# </details>

# %% [markdown]
# ## Try it
#
# `sh` is killed in the guarded container; `ls` runs.

# %% tags=["try"]
with Program(PROGRAM) as prog, Container("try") as c:
    prog["guarded"][ct.c_uint64(c.cgroup_id)] = ct.c_uint8(1)
    key = prog["shells"].Key()
    key.c = b"sh"
    prog["shells"][key] = ct.c_uint8(1)
    print("sh:", c.run(["/bin/sh", "-c", "echo still alive"]))
    print("ls:", c.run(["ls", "/"]).rc)

# %% [markdown]
# ## Check

# %% tags=["check"]
check("17.3", program=PROGRAM)
