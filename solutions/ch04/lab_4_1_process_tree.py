# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 4.1: Process tree monitor
#
# **Objective.** Watch processes being born, replaced and dying: send one
# event to user space for every **fork**, **exec** and **exit**, each
# carrying the process id, the id of its **parent process**, and (for exec
# and exit) the program's name and exit code. From those events, user space
# can draw the process tree.
#
# **Expected observation.** The check compiles a small program and starts
# it under a fresh name. It forks two children, which exec copies of itself
# under fresh names, and they fork and exec four grandchildren in turn:
# seven processes in all, each ending with an exit code the check chose.
# Every parent forks from a second thread, as threaded programs do. Every
# process prints its own `getpid()` and `getppid()`, which is the truth. The
# check then looks in your ring buffer `events` for exactly one fork, one
# exec and one exit event per process, with the right parent, name and exit
# code.
#
# **You will use:** the `sched:sched_process_fork/exec/exit` tracepoints,
# `bpf_get_current_pid_tgid`, `bpf_get_current_comm`,
# `bpf_get_current_task`, field reads through kernel structs, and
# `BPF_RINGBUF_OUTPUT`.

# %% [markdown]
# ## Background
#
# * **pid and tgid.** In the kernel every *thread* is a task with its own
#   `pid`; the threads of one process share a `tgid` (thread group id), which
#   is what user space calls the process id. `bpf_get_current_pid_tgid()`
#   returns both: `tgid << 32 | pid`.
# * **fork.** `sched:sched_process_fork` fires in the *parent*, right after
#   the child was created. Its `args->child_pid` is the new task's id, and
#   the current task is the parent. Careful: `args->parent_pid` is the id of
#   the forking *thread*, which is not the process id when a process forks
#   from a second thread. (It also fires when a thread is created; the check
#   ignores events about ids that are not its processes.)
# * **exec.** `sched:sched_process_exec` fires in the process that has just
#   become a new program, so `bpf_get_current_comm()` already gives the new
#   name. Its parent is in the kernel's `struct task_struct`:
#   `task->real_parent->tgid`. BCC turns that expression into
#   `bpf_probe_read_kernel()` calls at the offsets its kernel headers give,
#   which is why the course checks those headers against BTF.
# * **exit.** `sched:sched_process_exit` fires once for **every thread** that
#   exits. A process has ended when its main thread exits (its `pid` equals
#   its `tgid`). `task->exit_code` holds the status as `wait()` sees it: the
#   exit code is `(exit_code >> 8) & 0xff`.

# %%
import subprocess

from ebpf_tutor import EventCollector, Program
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# The event layout, the kinds and the ring buffer are given: keep their
# names, the check decodes `events` by them. Fill in the three probes.

# %% tags=["answer"]
PROGRAM = r"""
#include <linux/sched.h>

#define EV_FORK 1
#define EV_EXEC 2
#define EV_EXIT 3

struct event_t {
    u32 kind;        // EV_FORK, EV_EXEC or EV_EXIT
    u32 pid;         // the process this is about (for a fork: the new child)
    u32 ppid;        // its parent process
    u32 exit_code;   // EV_EXIT: the code the process passed to exit()
    char comm[16];   // EV_EXEC, EV_EXIT: the program's name
};

BPF_RINGBUF_OUTPUT(events, 64);

TRACEPOINT_PROBE(sched, sched_process_fork) {
    struct event_t ev = {};
    ev.kind = EV_FORK;
    // TODO 1: the child is args->child_pid; its parent is the *process*
    //         running now (the upper 32 bits of bpf_get_current_pid_tgid())
    // BEGIN SOLUTION
    ev.pid = args->child_pid;
    ev.ppid = bpf_get_current_pid_tgid() >> 32;
    // END SOLUTION
    events.ringbuf_output(&ev, sizeof(ev), 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    struct event_t ev = {};
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    ev.kind = EV_EXEC;
    // TODO 2: pid (the current process), ppid (task->real_parent->tgid), comm
    // BEGIN SOLUTION
    ev.pid = bpf_get_current_pid_tgid() >> 32;
    ev.ppid = task->real_parent->tgid;
    bpf_get_current_comm(&ev.comm, sizeof(ev.comm));
    // END SOLUTION
    events.ringbuf_output(&ev, sizeof(ev), 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    struct event_t ev = {};
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    ev.kind = EV_EXIT;
    // TODO 3: report only the exit of a process's main thread (pid == tgid),
    //         with pid, ppid, comm and the exit code from task->exit_code
    // BEGIN SOLUTION
    if ((u32)id != id >> 32)
        return 0;
    ev.pid = id >> 32;
    ev.ppid = task->real_parent->tgid;
    ev.exit_code = (task->exit_code >> 8) & 0xff;
    bpf_get_current_comm(&ev.comm, sizeof(ev.comm));
    // END SOLUTION
    events.ringbuf_output(&ev, sizeof(ev), 0);
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# Ask, for each event, *who is running* when it fires. At a fork it is the
# parent (whichever of its threads forked); at an exec and an exit it is the
# process itself. A "process id" is what the kernel calls the thread group
# id; a thread's own id is something else, and the two differ as soon as a
# process has a second thread. A parent is a *process*: find it from the
# running task's family, not from a thread id that a tracepoint hands you.
# And a process ends once, however many threads it had.
# </details>
# <details><summary>Hint 2</summary>
#
# The API: `bpf_get_current_pid_tgid()` returns `tgid << 32 | pid` (process
# id in the upper half, thread id in the lower); `bpf_get_current_comm(buf,
# size)` the name; `bpf_get_current_task()` the `struct task_struct *`, whose
# `real_parent` points to the parent task and `exit_code` holds the status as
# `wait()` reports it (the code is in bits 8 to 15). With the verified
# headers BCC turns `task->real_parent->tgid` into two
# `bpf_probe_read_kernel()` calls for you.
# </details>
# <details><summary>Hint 3</summary>
#
# Fork: `ev.pid = args->child_pid; ev.ppid = bpf_get_current_pid_tgid() >> 32;`
# (not `args->parent_pid`: that is the forking thread). Exec: `ev.pid` the
# upper half again, `ev.ppid = task->real_parent->tgid;` and
# `bpf_get_current_comm(&ev.comm, sizeof(ev.comm));`. Exit: start with
# `if ((u32)id != id >> 32) return 0;` (only the main thread), then the same
# fields and `ev.exit_code = (task->exit_code >> 8) & 0xff;`.
# </details>

# %% [markdown]
# ## Try it
#
# Start a small shell pipeline, collect the events, and print the tree under
# the shell. `EventCollector` copies each ring-buffer record in its callback
# and decodes them all at once into a DataFrame.

# %% tags=["try"]
with Program(PROGRAM) as prog:
    events = EventCollector(prog, "events")
    shell = subprocess.Popen(["sh", "-c", "sleep 0.05 & ls / | wc -l > /dev/null; wait"])
    while shell.poll() is None:
        events.poll(20)
    events.poll(50)
    df = events.drain()

mine = df[df.kind == 2].drop_duplicates("pid").set_index("pid")
children: dict[int, list[int]] = {}
for pid, row in mine.iterrows():
    children.setdefault(row.ppid, []).append(pid)


def show(pid: int, depth: int = 0) -> None:
    print("  " * depth + f"{mine.loc[pid, 'comm']} ({pid})")
    for kid in children.get(pid, []):
        show(kid, depth + 1)


show(shell.pid)

# %% [markdown]
# ## Check

# %% tags=["check"]
check("4.1", program=PROGRAM)
