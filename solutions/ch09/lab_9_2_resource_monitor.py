# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 9.2: A per-cgroup resource monitor
#
# **Objective.** Account network use per cgroup, the way a container
# platform bills its tenants: packets and bytes received and sent, and
# `sendto()` calls made, in one map keyed by **cgroup id**. Two `cgroup_skb`
# programs, attached once to a parent cgroup, see the traffic of every
# cgroup below it; a tracepoint sees the system calls.
#
# **Expected observation.** The check makes a parent scratch cgroup with two
# children, A and B, and hands the parent to your `attach_monitor`. A
# process in A sends a random number of datagrams of a random size to a
# process in B; then B sends some to a socket outside. Your map `usage`
# must then hold, under A's id and under B's id, exactly what each one
# did: A sent n packets (and made n `sendto()` calls), B received those n
# and sent its own. Bytes count whole IP packets: payload + 8 bytes of UDP
# header + 20 of IP header. All traffic must still arrive.
#
# **You will use:** `bpf_skb_cgroup_id`, `bpf_get_current_cgroup_id`,
# `lookup_or_try_init`, `__sync_fetch_and_add`, `ScratchCgroup.child`.

# %% [markdown]
# ## Background
#
# * A program attached to a cgroup runs for that cgroup **and every cgroup
#   below it**. One attachment on the parent monitors all children; the
#   cgroup id inside the program tells them apart.
# * Whose cgroup is a packet? `bpf_skb_cgroup_id(skb)` answers with the
#   cgroup of the socket the packet belongs to: the sender's socket on
#   egress, the receiver's socket on ingress.
#   `bpf_get_current_cgroup_id()` answers a different question: whose task
#   is the CPU running right now. In a system call (a tracepoint) that is
#   the caller, as you want; on ingress it is whoever happened to be on the
#   CPU when the packet was processed (on loopback: the *sender*).
# * `skb->len` in a `cgroup_skb` program counts from the IP header.
# * A `cgroup_skb` program's return value is a verdict: `1` passes the
#   packet, `0` drops it. A monitor returns 1, always.
# * Several CPUs may update the same entry at once: add with
#   `__sync_fetch_and_add`.

# %%
import socket
import sys

import pandas as pd

from ebpf_tutor import Program
from ebpf_tutor.sandbox.cgroup import ScratchCgroup
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# `usage_of(id)` is given: it returns the entry of a cgroup id, created at
# zero the first time.

# %% tags=["answer"]
PROGRAM = r"""
struct usage_t {
    u64 rx_packets;
    u64 rx_bytes;
    u64 tx_packets;
    u64 tx_bytes;
    u64 sendto_calls;
};
BPF_HASH(usage, u64, struct usage_t);       /* cgroup id -> what it used */

static __always_inline struct usage_t *usage_of(u64 cgroup_id) {
    struct usage_t zero = {};
    return usage.lookup_or_try_init(&cgroup_id, &zero);
}

int count_ingress(struct __sk_buff *skb) {
    // TODO 1: take the entry of the cgroup that owns the receiving socket, and
    //         add 1 to rx_packets and skb->len to rx_bytes
    // BEGIN SOLUTION
    struct usage_t *u = usage_of(bpf_skb_cgroup_id(skb));
    if (u) {
        __sync_fetch_and_add(&u->rx_packets, 1);
        __sync_fetch_and_add(&u->rx_bytes, skb->len);
    }
    // END SOLUTION
    return 1;   /* a verdict: 1 lets the packet through */
}

int count_egress(struct __sk_buff *skb) {
    // TODO 2: the same for the packets sent: tx_packets and tx_bytes
    // BEGIN SOLUTION
    struct usage_t *u = usage_of(bpf_skb_cgroup_id(skb));
    if (u) {
        __sync_fetch_and_add(&u->tx_packets, 1);
        __sync_fetch_and_add(&u->tx_bytes, skb->len);
    }
    // END SOLUTION
    return 1;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto) {
    // TODO 3: add 1 to sendto_calls of the cgroup of the process making this call
    // BEGIN SOLUTION
    struct usage_t *u = usage_of(bpf_get_current_cgroup_id());
    if (u)
        __sync_fetch_and_add(&u->sendto_calls, 1);
    // END SOLUTION
    return 0;
}
"""


# %% tags=["answer"]
def attach_monitor(prog: Program, cg: ScratchCgroup) -> None:
    """Attach count_ingress and count_egress to `cg` (the parent of the
    cgroups to monitor). The tracepoint attached itself when prog loaded."""
    # TODO 4: two calls to cg.attach(prog, "<function>", "<hook>")
    # BEGIN SOLUTION
    cg.attach(prog, "count_ingress", "ingress")
    cg.attach(prog, "count_egress", "egress")
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Each number belongs to a cgroup, and the question is *which id to ask
# for* in each program. A packet belongs to a socket, and the socket knows
# its cgroup; the CPU that happens to process a received packet does not
# (on loopback the receive path runs in the sender's context). A system
# call belongs to the process making it, so there the current task is the
# right one to charge. Several CPUs may count at once: add atomically.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `bpf_skb_cgroup_id(skb)`: the cgroup of the packet's socket;
#   `bpf_get_current_cgroup_id()`: the cgroup of the running task.
# * `usage_of(id)` (given) returns a pointer to that cgroup's entry, or NULL.
# * `skb->len` is the whole IP packet: 20 bytes of IP + 8 of UDP + payload.
# * `__sync_fetch_and_add(&u->field, n)` adds atomically.
# * Hooks `"ingress"` and `"egress"`; the tracepoint needs no attach call
#   (`TRACEPOINT_PROBE` attaches when the program loads, for the whole
#   machine, which is why it keys by cgroup).
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# struct usage_t *u = usage_of(bpf_skb_cgroup_id(skb));
# if (u) {
#     __sync_fetch_and_add(&u->rx_packets, 1);
#     __sync_fetch_and_add(&u->rx_bytes, skb->len);
# }
# ```
# and `tx_` on egress. If A shows the packets B received, you keyed ingress
# by `bpf_get_current_cgroup_id()`.
# </details>

# %% [markdown]
# ## Try it
#
# Two tenants under one parent: "web" sends 20 small datagrams, "batch"
# sends 5 large ones, both to a socket of this notebook.

# %% tags=["try"]
SEND = """
import socket, sys
port, count, size = map(int, sys.argv[1:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(b"x" * size, ("127.0.0.1", port))
"""

sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("127.0.0.1", 0))
with ScratchCgroup("try92") as parent, Program(PROGRAM) as prog:
    web, batch = parent.child("web"), parent.child("batch")
    attach_monitor(prog, parent)
    web.run([sys.executable, "-c", SEND, str(sink.getsockname()[1]), "20", "100"])
    batch.run([sys.executable, "-c", SEND, str(sink.getsockname()[1]), "5", "1400"])
    names = {web.id: "web", batch.id: "batch"}
    rows = {names[k.value]: {f: getattr(v, f) for f, _ in v._fields_}
            for k, v in prog["usage"].items() if k.value in names}
sink.close()
pd.DataFrame(rows).T

# %% [markdown]
# ## Check

# %% tags=["check"]
check("9.2", program=PROGRAM, attach_monitor=attach_monitor)
