# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 15.2: An argument decoder for `openat`
#
# **Objective.** Record every `openat()` of one process with its raw
# arguments and result (a BPF program on the typed tracepoints
# `syscalls:sys_enter_openat` and `sys_exit_openat`), then write
# `decode(event)`, which turns one event into the line `strace` prints:
#
#     openat(AT_FDCWD, "/etc/hostname", O_RDONLY|O_CLOEXEC) = 3
#     openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = -1 EEXIST (File exists)
#
# **Expected observation.** The check starts a fresh process (its pid goes
# into `target`) that opens a folder, then makes nine `openat` calls in a
# random order: with `AT_FDCWD` and relative to that open folder; read-only,
# write-only, read-write; with `O_CREAT` and a random mode, `O_EXCL`,
# `O_TRUNC`, `O_APPEND`, `O_NONBLOCK`, `O_DIRECTORY`; four of them fail
# (`ENOENT`, `EEXIST`, `EISDIR`, `ENOTDIR`). Your ring buffer must bring one
# event per call, in order, with the right path, flags, `dfd` and return
# value, and `decode` must write each one exactly as strace does.

# %% [markdown]
# ## Background
#
# * The typed tracepoints name the arguments: look at
#   `/sys/kernel/tracing/events/syscalls/sys_enter_openat/format` (`dfd`,
#   `filename`, `flags`, `mode`) and `sys_exit_openat/format` (`ret`). The
#   exit does not see the arguments: save them at the entry, per **thread**.
# * `filename` is a pointer into the process's memory: copy the string with
#   `bpf_probe_read_user_str()`. After the call it is surely paged in.
# * `dfd` is an `int`: `AT_FDCWD` (-100) means "relative to the current
#   directory"; keep it signed.
# * `O_RDONLY` is **0**: the access mode is `flags & O_ACCMODE` (0, 1 or 2)
#   and is always named. The other flags are bits, named in strace's order
#   (`ORDER` below). strace shows the `mode` only when `O_CREAT` (or
#   `O_TMPFILE`, which the check does not use) is set, in octal with a
#   leading 0 (`0644`).
# * The kernel returns `-errno`; the C library turns that into -1 and
#   `errno`, which is what strace prints: `-1 ENOENT (No such file or
#   directory)`. Python has the names in `errno.errorcode` and the messages
#   from `os.strerror()`.
# * Python's `os.open()` adds `O_CLOEXEC` itself (its descriptors are not
#   inherited by child processes): you will see it in the flags.

# %%
import errno
import os
import subprocess

from ebpf_tutor import Program
from ebpf_tutor.labs import check

AT_FDCWD = -100
ACCMODE = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}
# the flags the check uses, in the order strace names them
ORDER = ["O_CREAT", "O_EXCL", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_NOFOLLOW", "O_CLOEXEC",
         "O_DIRECTORY"]

# %% [markdown]
# ## Your program
#
# Keep the names: the check writes `target` and reads `events`
# (`struct event_t`, in this order).

# %% tags=["answer"]
PROGRAM = r"""
struct args_t {
    s32 dfd;
    u32 flags;
    u32 mode;
    u64 filename;     // the user-space address of the path
};
struct event_t {
    u32 pid;
    s32 dfd;
    u32 flags;
    u32 mode;
    s64 ret;
    char path[128];
};
BPF_ARRAY(target, u32, 1);
BPF_HASH(inflight, u32, struct args_t, 10240);    // thread id -> its call's arguments
BPF_RINGBUF_OUTPUT(events, 16);

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    int zero = 0;
    u32 *t = target.lookup(&zero);
    u64 id = bpf_get_current_pid_tgid();
    if (!t || id >> 32 != *t)
        return 0;
    u32 tid = (u32)id;
    // TODO 1: save dfd, flags, mode and the filename pointer under the thread id
    // BEGIN SOLUTION
    struct args_t a = {};
    a.dfd = args->dfd;
    a.flags = args->flags;
    a.mode = args->mode;
    a.filename = (u64)args->filename;
    inflight.update(&tid, &a);
    // END SOLUTION
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    // TODO 2: find the saved arguments (none: return); reserve an event, fill
    // it (the path from the saved pointer, ret from args->ret), submit it;
    // forget the saved arguments
    // BEGIN SOLUTION
    struct args_t *a = inflight.lookup(&tid);
    if (!a)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (e) {
        e->pid = id >> 32;
        e->dfd = a->dfd;
        e->flags = a->flags;
        e->mode = a->mode;
        e->ret = args->ret;
        bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)a->filename);
        events.ringbuf_submit(e, 0);
    }
    inflight.delete(&tid);
    // END SOLUTION
    return 0;
}
"""


# %% tags=["answer"]
def decode(ev: dict) -> str:
    """One event (keys: pid, dfd, flags, mode, ret, path) as strace writes it."""
    # BEGIN SOLUTION
    dirfd = "AT_FDCWD" if ev["dfd"] == AT_FDCWD else str(ev["dfd"])
    flags = ev["flags"]
    names = [ACCMODE[flags & os.O_ACCMODE]] + [n for n in ORDER if flags & getattr(os, n)]
    args = [dirfd, f'"{ev["path"]}"', "|".join(names)]
    if flags & os.O_CREAT:
        args.append("0%02o" % ev["mode"])
    if ev["ret"] < 0:
        err = -ev["ret"]
        result = f"-1 {errno.errorcode[err]} ({os.strerror(err)})"
    else:
        result = str(ev["ret"])
    return f"openat({', '.join(args)}) = {result}"
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# The entry and the exit of one call run on the same thread, one after the
# other; between them, another thread of the process may enter its own
# `openat`. So the entry saves `{dfd, flags, mode, filename}` in `inflight`
# under the thread id, and the exit looks it up, reserves a ring-buffer
# record, fills it, submits it and deletes the entry. In Python, build the
# list of arguments as strings and join them with `", "`.
# </details>
#
# <details><summary>Hint 2</summary>
#
# In C: `inflight.update(&tid, &a)`, `inflight.lookup(&tid)`,
# `events.ringbuf_reserve(sizeof(*e))` (it can return NULL), `args->ret`,
# `bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)a->filename)`,
# `events.ringbuf_submit(e, 0)`, `inflight.delete(&tid)`.
#
# In Python: the access mode is `ACCMODE[flags & os.O_ACCMODE]`, always
# first; then each name `n` of `ORDER` whose bit `getattr(os, n)` is set.
# The mode: `"0%02o" % mode`, only with `O_CREAT`. An error:
# `errno.errorcode[-ret]` and `os.strerror(-ret)`.
# </details>

# %% [markdown]
# ## Try it
#
# What does `cat` open? Watch one run of it.

# %% tags=["try"]
seen = []


def on_event(ctx, data, size):
    e = prog["events"].event(data)     # a view of the ring's memory: copy what you keep
    seen.append({"pid": e.pid, "dfd": e.dfd, "flags": e.flags, "mode": e.mode, "ret": e.ret,
                 "path": e.path.decode()})


with Program(PROGRAM) as prog:
    prog["events"].open_ring_buffer(on_event)
    cat = subprocess.Popen(["sh", "-c", "read x; exec cat /etc/hostname /nonexistent"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prog["target"][0] = prog["target"].Leaf(cat.pid)
    cat.communicate(b"go\n")
    prog.ring_buffer_consume()
for ev in seen:
    print(decode(ev))

# %% [markdown]
# ## Check

# %% tags=["check"]
check("15.2", program=PROGRAM, decode=decode)
