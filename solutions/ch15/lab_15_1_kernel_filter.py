# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 15.1: The tracer's filter, in the kernel
#
# **Objective.** Write `wanted()`, the function `systrace` calls at
# `raw_syscalls:sys_enter` before it makes an event: it must let a system
# call through only when the calling process has the command name stored in
# `comm_filter` **and** is in the cgroup whose id is stored in
# `cgroup_filter`. An empty name (`""`) or a cgroup id of 0 means "any".
# What the filter stops never costs a ring-buffer record, a wake-up or a
# line of Python.
#
# **Expected observation.** The check runs three rounds with the filters
# set through the maps: by name only (the target, a decoy whose name is the
# target's plus one letter, and another decoy), by cgroup only (the same
# program in a scratch cgroup and outside it), and by both (the target's
# name inside, the same name outside, a decoy inside). Each run forks
# children, which keep their parent's name and cgroup. Only the target's
# events may reach the ring buffer, and all of its `getppid` calls must.

# %% [markdown]
# ## Background
#
# * `bpf_get_current_comm(&buf, 16)` copies the task's name (`comm`): at most
#   15 characters and a terminating NUL, the rest of the 16 bytes zero. A
#   process gets it from the file it `execve`s; `fork` copies it.
# * `bpf_get_current_cgroup_id()` is the id of the task's **cgroup v2**:
#   the inode number of its directory under the cgroup2 mount
#   (`os.stat(path).st_ino`). The tool takes `--cgroup` as an id or a path.
# * Two names are equal when every byte is, **up to and including** the
#   first NUL. Stopping at the end of the *wanted* name only checks a prefix.
# * A BPF loop needs a bound the verifier can see: `for (int i = 0; i < 16; i++)`.
# * `systrace` does the same in `ebpf_tutor/apps/systrace/systrace.bpf.c`
#   (its filters are compile-time switches there; here they are maps, so the
#   check can change them without reloading).

# %%
import ctypes as ct
import subprocess

from ebpf_tutor import Program
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check writes `comm_filter` and `cgroup_filter` and
# reads `events` (`struct event_t`).

# %% tags=["answer"]
PROGRAM = r"""
struct comm_t { char c[16]; };
struct event_t {
    u32 pid;
    u32 nr;          // the system call number
    u64 cgroup;
    char comm[16];
};
BPF_ARRAY(comm_filter, struct comm_t, 1);    // "" = any name
BPF_ARRAY(cgroup_filter, u64, 1);            // 0 = any cgroup
BPF_RINGBUF_OUTPUT(events, 64);

static __always_inline int wanted(void) {
    int zero = 0;
    struct comm_t *want = comm_filter.lookup(&zero);
    u64 *cg = cgroup_filter.lookup(&zero);
    if (!want || !cg)
        return 0;
    // TODO: 1 if the current task passes both filters (an empty one passes
    // everyone), 0 otherwise
    // BEGIN SOLUTION
    int comm_ok = 1, cgroup_ok = 1;
    if (*cg)
        cgroup_ok = bpf_get_current_cgroup_id() == *cg;
    if (want->c[0]) {
        char comm[16] = {};
        bpf_get_current_comm(&comm, sizeof(comm));
        for (int i = 0; i < 16; i++) {
            if (comm[i] != want->c[i]) {
                comm_ok = 0;
                break;
            }
            if (comm[i] == 0)
                break;
        }
    }
    return comm_ok && cgroup_ok;
    // END SOLUTION
    return 1;
}

TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    if (!wanted())
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->nr = args->id;
    e->cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    events.ringbuf_submit(e, 0);
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# Two independent questions, each answered "yes" when its filter is empty:
# is the task in the wanted cgroup (`*cg == 0` or the ids are equal)? Does
# it have the wanted name (`want->c[0] == 0`, or the 16 bytes agree up to
# the name's end)? Let the call through only when both answers are yes.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Read the current name into a zeroed `char comm[16]` with
# `bpf_get_current_comm(&comm, sizeof(comm))`. Walk `i` from 0 to 15: if
# `comm[i] != want->c[i]` the names differ; if `comm[i] == 0` (and they
# agreed) the names are equal. Checking `want->c[i] == 0` first instead
# would accept any longer name that starts with the wanted one.
# </details>
#
# <details><summary>Hint 3</summary>
#
# ```c
# int comm_ok = 1, cgroup_ok = 1;
# if (*cg)
#     cgroup_ok = bpf_get_current_cgroup_id() == *cg;
# if (want->c[0]) { /* compare the 16 bytes, set comm_ok = 0 on a difference */ }
# return comm_ok && cgroup_ok;
# ```
# </details>

# %% [markdown]
# ## Try it
#
# Trace only processes named `ls` for one run of `ls`, and see whose calls
# reached user space. (A few may come from this notebook's own process: they
# were made between the attach and the moment the filter was set, when an
# empty filter let everyone in.)

# %% tags=["try"]
seen = {}
with Program(PROGRAM) as prog:
    row = prog["comm_filter"].Leaf()
    ct.memmove(ct.addressof(row), b"ls", 2)
    prog["comm_filter"][0] = row

    def on_event(ctx, data, size):
        e = prog["events"].event(data)
        seen[e.comm.decode()] = seen.get(e.comm.decode(), 0) + 1

    prog["events"].open_ring_buffer(on_event)
    subprocess.run(["ls", "/"], stdout=subprocess.DEVNULL)
    prog.ring_buffer_consume()
print(seen)

# %% [markdown]
# ## Check

# %% tags=["check"]
check("15.1", program=PROGRAM)
