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
# **Objective.** Write the network policy of one cgroup with cgroup
# programs: `connect4` and `connect6` programs that refuse TCP connections
# to blocked ports and transparently redirect others, over IPv4 and IPv6
# alike, and a `cgroup_skb` egress program that drops UDP datagrams to
# blocked ports, IPv4 or IPv6. Then attach them to the scratch cgroup you
# are given.
#
# **Expected observation.** The check asks the kernel for six fresh ports
# and fills your maps: one blocked TCP port, one blocked UDP port, and one
# redirect `from -> to`. A process **inside** the cgroup then gets `EPERM`
# from `connect()` to the blocked TCP port, whether it connects to
# `127.0.0.1`, to `::1`, or from an IPv6 socket to the v4-mapped
# `::ffff:127.0.0.1`; lands on `to` when it connects to `from` (over IPv4
# and v4-mapped); and its datagrams to the blocked UDP port never arrive,
# sent to `127.0.0.1`, to `::1`, or with IP options in the IPv4 header (a
# 24-byte header). A TCP and a UDP port that are not on the list work as
# usual, over both families. A process **outside** the cgroup runs the same
# thirteen actions and all of them reach the port they named.
#
# What the check does not send: IPv6 packets with extension headers (a UDP
# header behind a hop-by-hop header, say). A real policy must walk those
# headers or drop what it cannot parse; this lab reads the UDP header right
# after the 40-byte IPv6 header.
#
# **You will use:** `struct bpf_sock_addr` (`user_port`), `bpf_skb_load_bytes`,
# `ntohs`/`htons`, BPF hash maps, and `ScratchCgroup.attach` with the hooks
# `"connect4"`, `"connect6"` and `"egress"`.

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
# * `connect4` runs only for IPv4 sockets. An `AF_INET6` socket runs
#   **`connect6`** instead, for a real IPv6 address (`::1`) *and* for a
#   v4-mapped one (`::ffff:127.0.0.1`, which the kernel then reaches over
#   IPv4 without ever running `connect4`). The port is in `ctx->user_port`
#   in both hooks, so one rule serves both (Chapter 9, "The side doors").
# * Neither sees a datagram sent with `sendto()` on an unconnected UDP
#   socket. The **egress** `cgroup_skb` program sees every packet the
#   cgroup's sockets send, starting at its IP header. Its first byte holds
#   the version in the high 4 bits. **IPv4**: the low 4 bits are the header
#   length in 32-bit words (5 without options, up to 15 with them); byte 9
#   is the protocol. **IPv6**: the header is 40 bytes; byte 6 (*next
#   header*) is the protocol when no extension header follows. The UDP
#   header comes next, with the destination port at offset 2. Returning `0`
#   drops the packet (and `sendto()` fails with `EPERM`), `1` lets it pass.
# * `cg.attach(prog, "function", "hook")` loads the C function as the
#   program type the hook needs and attaches it to the cgroup; the
#   attachment is undone when the `with ScratchCgroup()` block ends.

# %%
import socket
import subprocess
import sys

from ebpf_tutor import Program
from ebpf_tutor.sandbox.cgroup import ScratchCgroup
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

static __always_inline int judge_connect(struct bpf_sock_addr *ctx) {
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

/* BCC loads a function for one hook only: one small function per hook */
int policy_connect(struct bpf_sock_addr *ctx)  { return judge_connect(ctx); }  /* IPv4 */
int policy_connect6(struct bpf_sock_addr *ctx) { return judge_connect(ctx); }  /* IPv6, ::ffff: */

int policy_egress(struct __sk_buff *skb) {
    u8 first = 0, proto = 0;
    u16 dport = 0;
    u32 l4 = 0;                                     /* where the UDP header starts */
    /* the packet starts at its IP header */
    if (bpf_skb_load_bytes(skb, 0, &first, 1) < 0)
        return 1;
    // TODO 4: IPv4 (first >> 4 == 4): the protocol is byte 9, the header is
    //         (first & 0xF) * 4 bytes long. IPv6 (first >> 4 == 6): the protocol
    //         is byte 6, the header 40 bytes. Anything else: return 1.
    // TODO 5: for UDP (IPPROTO_UDP), read the destination port (2 bytes at l4 + 2)
    //         and drop the packet (return 0) when that port is in blocked_ports
    // BEGIN SOLUTION
    if (first >> 4 == 4) {
        if (bpf_skb_load_bytes(skb, 9, &proto, 1) < 0)
            return 1;
        l4 = (first & 0xF) * 4;
    } else if (first >> 4 == 6) {
        if (bpf_skb_load_bytes(skb, 6, &proto, 1) < 0)
            return 1;
        l4 = 40;
    } else {
        return 1;
    }
    if (proto != IPPROTO_UDP)
        return 1;
    if (bpf_skb_load_bytes(skb, l4 + 2, &dport, 2) < 0)
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
    """Attach policy_connect to the connect4 hook, policy_connect6 to
    connect6 and policy_egress to the egress hook of `cg`."""
    # TODO 6: three calls to cg.attach(prog, "<function>", "<hook>")
    # BEGIN SOLUTION
    cg.attach(prog, "policy_connect", "connect4")
    cg.attach(prog, "policy_connect6", "connect6")
    cg.attach(prog, "policy_egress", "egress")
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Two different moments, two kinds of program. A TCP connection is decided
# once, in `connect()`, before any packet: that is the `sock_addr` hooks'
# job, one per address family, and both can refuse (return 0) or rewrite
# the port. A UDP datagram sent with `sendto()` never calls `connect()`, so
# it is judged as a packet, on egress, for whatever IP version it carries.
# Everything on the wire and in `ctx->user_port` is in network byte order;
# the maps hold host order.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `ntohs(ctx->user_port)` is the port to look up; `blocked_ports.lookup(&port)`
#   and `redirects.lookup(&port)` return a pointer or NULL; write a new port
#   back with `ctx->user_port = htons(...)`.
# * `bpf_skb_load_bytes(skb, offset, &var, size)` copies bytes of the packet
#   (offset 0 is the first byte of the IP header) and returns < 0 past the
#   end.
# * IPv4 with options has a header longer than 20 bytes: the low 4 bits of
#   byte 0 say how many 32-bit words. Forgetting `ntohs` is the classic bug:
#   port 8080 (0x1f90) read in the wrong order is 36895 (0x901f), and
#   nothing is ever found in the map.
# * Hooks: `"connect4"`, `"connect6"`, `"egress"`. (`"bind4"` runs in
#   `bind()`, which a client never calls; `"ingress"` sees packets
#   *arriving*.)
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# u16 port = ntohs(ctx->user_port);
# if (blocked_ports.lookup(&port)) return 0;
# u16 *to = redirects.lookup(&port);
# if (to) ctx->user_port = htons(*to);
# ```
# and in the egress program: `if (first >> 4 == 4) { load byte 9 into proto;
# l4 = (first & 0xF) * 4; } else if (first >> 4 == 6) { load byte 6; l4 = 40; }`,
# then for UDP `bpf_skb_load_bytes(skb, l4 + 2, &dport, 2)` and look up
# `ntohs(dport)` (offset 0 of the UDP header would be the *source* port).
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
