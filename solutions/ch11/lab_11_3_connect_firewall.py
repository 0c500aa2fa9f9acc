# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 11.3: A connection firewall
#
# **Objective.** Refuse outgoing TCP connections to some ports for the
# processes of one cgroup, with the answer a closed port gives:
# `ECONNREFUSED`. Write it twice:
#
# 1. as a **BPF LSM** program on `socket_connect`, the hook every
#    `connect()` passes, which returns `-ECONNREFUSED`;
# 2. as the **fallback**, a `cgroup/connect4` program attached to the
#    cgroup itself, which sets the error with `bpf_set_retval` and refuses.
#
# **Expected observation.** The check opens two listening sockets on
# `127.0.0.1`, at ports the kernel chose, and makes a fresh scratch cgroup.
# It puts the first port into `blocked_ports` and (LSM variant) the cgroup's
# id into `guarded`; the fallback's `refuse_connect` is attached to the
# cgroup's `connect4` hook. A process inside the cgroup then connects to the
# second port, and gets `ECONNREFUSED` from the first; a process outside
# connects to the first.
#
# * With BPF LSM (the course VM), both variants are loaded and judged.
# * Without it (the CI machine), your LSM variant is compiled but not
#   loaded, the PASS line says so, and the fallback is judged.
#
# **You will use:** `LSM_PROBE`, `struct sockaddr_in`, `bpf_ntohs`,
# `struct bpf_sock_addr`, `bpf_set_retval`, `ScratchCgroup.attach`.

# %% [markdown]
# ## Background
#
# * `socket_connect(struct socket *sock, struct sockaddr *address, int
#   addrlen)` runs for every `connect()`, whatever the family. Check
#   `address->sa_family == AF_INET` before you read it as a `struct
#   sockaddr_in`; `sin_port` is in network byte order. Like every BPF LSM
#   program it returns 0 to allow or a negative errno to refuse, never 1:
#   Linux 6.12's verifier rejects a program that may return a value outside
#   [-4095, 0]; 6.1 loads it, and `connect()` returns 1 without connecting.
# * A `cgroup/connect4` program runs only for IPv4 `connect()` calls made by
#   processes in the cgroup it is attached to (and its descendants): the
#   kernel does the cgroup test for you. Return 1 to allow, 0 to refuse;
#   a refusal is `EPERM` unless the program called
#   `bpf_set_retval(-ECONNREFUSED)` first (Linux 5.18+). `ctx->user_port`
#   is in network byte order too.

# %%
import socket

from ebpf_tutor import Program, features
from ebpf_tutor.labs import check
from ebpf_tutor.sandbox.attempts import attempts
from ebpf_tutor.sandbox.cgroup import ScratchCgroup

# %% [markdown]
# ## Variant 1: BPF LSM on `socket_connect`

# %% tags=["answer"]
LSM_PROGRAM = r"""
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <net/sock.h>

BPF_HASH(guarded, u64, u8);         // cgroup id -> 1
BPF_HASH(blocked_ports, u16, u8);   // port (host byte order) -> 1

LSM_PROBE(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret) {
    if (ret)
        return ret;
    // TODO 1: in a guarded cgroup, refuse an IPv4 connect() to a blocked port
    //         with -ECONNREFUSED
    // BEGIN SOLUTION
    u64 cgroup = bpf_get_current_cgroup_id();
    if (!guarded.lookup(&cgroup))
        return 0;
    if (address->sa_family != AF_INET)
        return 0;
    struct sockaddr_in *sin = (struct sockaddr_in *)address;
    u16 port = bpf_ntohs(sin->sin_port);
    if (blocked_ports.lookup(&port))
        return -ECONNREFUSED;
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# ## Variant 2: the fallback, a `cgroup/connect4` program

# %% tags=["answer"]
FALLBACK_PROGRAM = r"""
#include <linux/errno.h>

BPF_HASH(blocked_ports, u16, u8);   // port (host byte order) -> 1

int refuse_connect(struct bpf_sock_addr *ctx) {
    // TODO 2: refuse a blocked port with ECONNREFUSED; allow everything else
    // BEGIN SOLUTION
    u16 port = bpf_ntohs(ctx->user_port);
    if (blocked_ports.lookup(&port)) {
        bpf_set_retval(-ECONNREFUSED);
        return 0;
    }
    // END SOLUTION
    return 1;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# Ports travel in network byte order (big-endian) in both `sin->sin_port`
# and `ctx->user_port`; the map holds them in host order, as Python's
# `getsockname()` gives them. Convert with `bpf_ntohs()` before the lookup.
# </details>
#
# <details><summary>Hint 2</summary>
#
# LSM variant: the cgroup test is yours (`guarded`, as in labs 11.1 and
# 11.2), and the errno is the return value: `return -ECONNREFUSED;`.
# </details>
#
# <details><summary>Hint 3</summary>
#
# Fallback: the kernel runs the program only for the cgroup it is attached
# to, so no cgroup test. `return 0;` alone refuses with `EPERM`; call
# `bpf_set_retval(-ECONNREFUSED);` first to choose the errno. Every other
# connection: `return 1;`.
# </details>

# %% [markdown]
# ## Try it
#
# Block the port of a listener for a scratch cgroup and connect to it from
# inside and from outside.

# %% tags=["try", "needs-lsm"]
with socket.create_server(("127.0.0.1", 0)) as server, ScratchCgroup("try") as cg:
    port = server.getsockname()[1]
    if features.available("lsm"):
        prog = Program(LSM_PROGRAM)
        prog["guarded"][prog["guarded"].Key(cg.id)] = prog["guarded"].Leaf(1)
    else:
        features.notice("lsm", "the fallback")
        prog = Program(FALLBACK_PROGRAM)
        cg.attach(prog, "refuse_connect", "connect4")
    with prog:
        prog["blocked_ports"][prog["blocked_ports"].Key(port)] = prog["blocked_ports"].Leaf(1)
        print("inside: ", attempts([("connect", port)], cg))
        print("outside:", attempts([("connect", port)]))

# %% [markdown]
# ## Check

# %% tags=["check", "needs-lsm"]
check("11.3", lsm_program=LSM_PROGRAM, fallback_program=FALLBACK_PROGRAM)
