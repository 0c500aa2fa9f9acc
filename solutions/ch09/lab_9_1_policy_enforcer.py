# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 9.1: A network policy enforcer
#
# **Objective.** Write the network policy of one cgroup with two cgroup
# programs: a `connect4` program that refuses TCP connections to blocked
# ports and transparently redirects others, and a `cgroup_skb` egress
# program that drops UDP datagrams to blocked ports. Then attach both to
# the scratch cgroup you are given.
#
# **Expected observation.** The check asks the kernel for six fresh ports
# and fills your maps: one blocked TCP port, one blocked UDP port, and one
# redirect `from -> to`. A process **inside** the cgroup then gets `EPERM`
# from `connect()` to the blocked TCP port, lands on `to` when it connects
# to `from`, and its datagram to the blocked UDP port never arrives, while
# a TCP and a UDP port that are not on the list work as usual. A process
# **outside** the cgroup runs the same five actions and all of them reach
# the port they named.
#
# **You will use:** `struct bpf_sock_addr` (`user_port`), `bpf_skb_load_bytes`,
# `ntohs`/`htons`, BPF hash maps, and `ScratchCgroup.attach`.

# %% [markdown]
# ## Background
#
# * A **`connect4`** program (type `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`) runs
#   inside `connect()` for IPv4 sockets of every process in the cgroup,
#   before any packet is sent. `ctx->user_ip4` and `ctx->user_port` hold the
#   destination **in network byte order**. Returning `0` makes `connect()`
#   fail with `EPERM`; returning `1` lets it go on, to the address now in
#   `ctx` (you may rewrite it: that is how a transparent proxy or a
#   service mesh redirects traffic without touching the application).
# * `connect4` never sees a datagram sent with `sendto()` on an unconnected
#   UDP socket. The **egress** `cgroup_skb` program sees every packet the
#   cgroup's sockets send: the packet starts at its IPv4 header, whose first
#   byte holds the version (high 4 bits) and the header length in 32-bit
#   words (low 4 bits); byte 9 is the protocol; the UDP header follows, with
#   the destination port at offset 2. Returning `0` drops the packet (and
#   `sendto()` fails with `EPERM`), `1` lets it pass.
# * `cg.attach(prog, "function", "hook")` loads the C function as the
#   program type the hook needs and attaches it to the cgroup; the
#   attachment is undone when the `with ScratchCgroup()` block ends.

# %%
import socket
import subprocess
import sys

from ebpf_tutor import Program
from ebpf_tutor.cgroup import ScratchCgroup
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# The two maps are filled from Python (by the check, or by you in the *Try
# it* cell). Ports in the maps are plain numbers, in **host** byte order.

# %% tags=["answer"]
PROGRAM = r"""
BPF_HASH(blocked_ports, u16, u8);   /* destination ports to refuse (host byte order) */
BPF_HASH(redirects, u16, u16);      /* port asked for -> port to connect to instead */
#define IPPROTO_UDP 17              /* <linux/in.h> has it, but costs seconds of compiling */

int policy_connect(struct bpf_sock_addr *ctx) {
    // TODO 1: the destination port in host byte order (ctx->user_port is network order)
    // TODO 2: refuse the connect (return 0) when the port is in blocked_ports
    // TODO 3: when the port is in redirects, write the new port into ctx->user_port
    //         (in network byte order) and let the connect go on
    // BEGIN SOLUTION
    u16 port = ntohs(ctx->user_port);
    if (blocked_ports.lookup(&port))
        return 0;
    u16 *new_port = redirects.lookup(&port);
    if (new_port)
        ctx->user_port = htons(*new_port);
    // END SOLUTION
    return 1;
}

int policy_egress(struct __sk_buff *skb) {
    u8 ver_ihl = 0, proto = 0;
    u16 dport = 0;
    /* the packet starts at its IPv4 header */
    if (bpf_skb_load_bytes(skb, 0, &ver_ihl, 1) < 0 || (ver_ihl >> 4) != 4)
        return 1;                                   /* not IPv4: not ours to judge */
    // TODO 4: read the protocol (byte 9); for UDP (IPPROTO_UDP) read the two bytes of
    //         the destination port, at offset (ver_ihl & 0xF) * 4 + 2, into dport
    // TODO 5: drop the packet (return 0) when that port is in blocked_ports
    // BEGIN SOLUTION
    if (bpf_skb_load_bytes(skb, 9, &proto, 1) < 0 || proto != IPPROTO_UDP)
        return 1;
    if (bpf_skb_load_bytes(skb, (ver_ihl & 0xF) * 4 + 2, &dport, 2) < 0)
        return 1;
    u16 port = ntohs(dport);
    if (blocked_ports.lookup(&port))
        return 0;
    // END SOLUTION
    return 1;
}
"""


# %% tags=["answer"]
def attach_policy(prog: Program, cg: ScratchCgroup) -> None:
    """Attach policy_connect to the connect4 hook and policy_egress to the
    egress hook of `cg`."""
    # TODO 6: two calls to cg.attach(prog, "<function>", "<hook>")
    # BEGIN SOLUTION
    cg.attach(prog, "policy_connect", "connect4")
    cg.attach(prog, "policy_egress", "egress")
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# `u16 port = ntohs(ctx->user_port);` then `if (blocked_ports.lookup(&port)) return 0;`.
# For the redirect, `u16 *to = redirects.lookup(&port);` and, when `to` is
# not NULL, `ctx->user_port = htons(*to);`. Forgetting `ntohs` is the
# classic bug: port 8080 (0x1f90) read in the wrong order is 36895 (0x901f),
# so nothing is ever found in the map.
# </details>
#
# <details><summary>Hint 2</summary>
#
# `bpf_skb_load_bytes(skb, 9, &proto, 1)` reads the protocol; then
# `bpf_skb_load_bytes(skb, (ver_ihl & 0xF) * 4 + 2, &dport, 2)` reads the
# UDP destination port (offset 0 of the UDP header would be the *source*
# port). It is in network byte order like everything on the wire: look up
# `ntohs(dport)`.
# </details>
#
# <details><summary>Hint 3</summary>
#
# The hooks are named `"connect4"` and `"egress"`. `"bind4"` also takes a
# `struct bpf_sock_addr` program, but runs in `bind()`, which a client never
# calls; `"ingress"` sees packets *arriving* at the cgroup's sockets, not
# leaving them.
# </details>

# %% [markdown]
# ## Try it
#
# Block one port, redirect another, and compare a process inside the
# cgroup with one outside. The servers are sockets of this notebook.

# %% tags=["try"]
def listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    return s


CLIENT = """
import socket, sys
for port in map(int, sys.argv[1:]):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        print(port, "-> connected to", s.getpeername()[1])
    except OSError as e:
        print(port, "->", e.strerror)
"""

with ScratchCgroup("try91") as cg, Program(PROGRAM) as prog:
    blocked, plain, old, new = listener(), listener(), listener(), listener()
    port = {s: s.getsockname()[1] for s in (blocked, plain, old, new)}
    prog["blocked_ports"][prog["blocked_ports"].Key(port[blocked])] = prog["blocked_ports"].Leaf(1)
    prog["redirects"][prog["redirects"].Key(port[old])] = prog["redirects"].Leaf(port[new])
    attach_policy(prog, cg)
    argv = [sys.executable, "-c", CLIENT, str(port[blocked]), str(port[plain]), str(port[old])]
    print("inside the cgroup:\n" + cg.run(argv).stdout)
    print("outside:\n" + subprocess.run(argv, capture_output=True, text=True).stdout)
    for s in port:
        s.close()

# %% [markdown]
# ## Check

# %% tags=["check"]
check("9.1", program=PROGRAM, attach_policy=attach_policy)
