# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 7.2: An L4 load balancer in XDP
#
# **Objective.** Write the data path of a layer-4 load balancer. TCP packets
# for a virtual service address (`VIP:VPORT`) arrive at the load balancer; your
# XDP program picks one of `N_BACKENDS` backends by hashing the connection's
# addresses and ports, rewrites the Ethernet addresses and redirects the frame
# out of the interface that leads to that backend. Everything else passes.
#
# **Expected observation.** The check builds this network of namespaces and
# attaches your program (native XDP) to the load balancer's interface that
# faces the client:
#
# ```
#                           +-- to-b1 --- b1  (VIP on lo, a TCP service)
# client --- to-client [LB] +-- to-b2 --- b2  (VIP on lo, a TCP service)
#             ^ your XDP    +-- to-b3 --- b3  (VIP on lo, a TCP service)
# ```
#
# It then makes 45 TCP connections to `VIP:VPORT`, each sending a unique
# request. One connection in three carries IP options (4 bytes: its IPv4
# header is 24 bytes long, `ihl` = 6). Every connection must complete; every
# request must be answered by exactly one backend, the one that replied;
# each of the three backends must get at least a few. A ping to the load balancer's own address must still
# work. The load balancer has *no route* to the VIP: if your program lets a
# VIP packet pass, it is dropped.

# %% [markdown]
# ## Background: direct server return
#
# This is the design of large production load balancers (Katran, Maglev,
# GLB) in their simplest form:
#
# * Every backend owns the VIP (on its loopback), so a backend accepts a
#   packet for the VIP as its own: the load balancer does not touch the IP
#   header, only the Ethernet addresses: destination = the backend's MAC,
#   source = the load balancer's MAC on the way out.
# * `bpf_redirect(ifindex, 0)` sends the frame out of another interface
#   straight from the driver: no routing, no socket buffer.
# * Replies go from the backend to the client directly through the normal
#   network (*direct server return*), never through your program.
# * All packets of one connection must reach the same backend, or the TCP
#   handshake breaks. So choose the backend from the **flow** (source
#   address, source port, destination port): a hash of fields that stay the
#   same for the whole connection.
#
# The check fills the `backends` map: entry *i* tells where backend *i* is.
# It compiles your program with `-DVIP=...` (network byte order, like
# `ip->daddr`), `-DVPORT=...` (host order) and `-DN_BACKENDS=...`.
#
# TCP and UDP headers both begin with the two ports, so `struct ports` is
# all we need of them (and `<linux/tcp.h>` would add seconds to every
# compile here).

# %%
import ctypes as ct
import socket

from ebpf_tutor import Program, net, traffic, xdp
from ebpf_tutor.labs import check

# %% tags=["answer"]
PROGRAM = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

#ifndef VIP
#define VIP 0x0164c90a           /* 10.201.100.1, network byte order (as ip->daddr) */
#endif
#ifndef VPORT
#define VPORT 8080               /* host byte order */
#endif
#ifndef N_BACKENDS
#define N_BACKENDS 3
#endif
#define IPPROTO_TCP 6

struct backend {
    u32 ifindex;                 /* the LB interface that leads to the backend */
    u8 mac[6];                   /* the backend's MAC: the new destination */
    u8 lb_mac[6];                /* the LB's MAC on that interface: the new source */
};
BPF_ARRAY(backends, struct backend, 8);   /* filled from user space */
BPF_ARRAY(picked, u64, 8);                /* packets sent to each backend */

struct ports {
    __be16 source;
    __be16 dest;
};

static __always_inline u32 mix(u32 h) {  /* spread the bits of a 32-bit value */
    h ^= h >> 16;
    h *= 0x45d9f3b;
    h ^= h >> 16;
    return h;
}

int xdp_lb(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return XDP_PASS;

    // TODO 1: only TCP packets to VIP:VPORT concern us: anything else XDP_PASS
    //         (the ports header starts ip->ihl * 4 bytes after the IP header)
    // TODO 2: choose a backend index from the flow (saddr, source port,
    //         dest port) with mix(), modulo N_BACKENDS; look it up in `backends`
    // TODO 3: rewrite h_dest and h_source, count the packet in `picked`,
    //         and return bpf_redirect(b->ifindex, 0)
    // BEGIN SOLUTION
    if (ip->daddr != VIP || ip->protocol != IPPROTO_TCP)
        return XDP_PASS;
    struct ports *p = (void *)ip + ip->ihl * 4;
    if ((void *)(p + 1) > data_end)
        return XDP_PASS;
    if (p->dest != htons(VPORT))
        return XDP_PASS;

    u32 flow = ip->saddr ^ ((u32)p->source << 16 | p->dest);
    u32 idx = mix(flow) % N_BACKENDS;
    struct backend *b = backends.lookup(&idx);
    if (!b || b->ifindex == 0)
        return XDP_ABORTED;

    __builtin_memcpy(eth->h_dest, b->mac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, b->lb_mac, ETH_ALEN);
    picked.atomic_increment(idx);
    return bpf_redirect(b->ifindex, 0);
    // END SOLUTION
    return XDP_PASS;
}
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Three steps. Recognise the service: IPv4, TCP, destination VIP and VPORT;
# everything else is none of your business (`XDP_PASS`). Choose a backend
# from what stays the same for the whole connection (addresses and ports),
# never per packet, or the handshake breaks. Forward without touching the
# IP header: only the Ethernet addresses change, then the frame leaves
# through the backend's interface. The TCP header does not always start 20
# bytes after the IP header: IP options make it longer.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `ip->daddr`, `ip->protocol`; the IP header is `ip->ihl * 4` bytes long,
#   so the ports start at `(void *)ip + ip->ihl * 4`, and need their own
#   bounds check against `data_end`.
# * Ports are in network byte order: compare `p->dest` with `htons(VPORT)`.
# * `mix(x) % N_BACKENDS` spreads a 32-bit hash over the backends;
#   `backends.lookup(&idx)` gives the entry (NULL is impossible here: say so
#   with `XDP_ABORTED`).
# * `__builtin_memcpy(eth->h_dest, b->mac, ETH_ALEN)`, and the same for
#   `h_source`; `bpf_redirect(b->ifindex, 0)` is the verdict.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# struct ports *p = (void *)ip + ip->ihl * 4;
# if ((void *)(p + 1) > data_end) return XDP_PASS;
# if (p->dest != htons(VPORT)) return XDP_PASS;
# u32 idx = mix(ip->saddr ^ ((u32)p->source << 16 | p->dest)) % N_BACKENDS;
# ```
# Hashing the source address alone sends every connection of one client to
# the same backend.
# </details>

# %% [markdown]
# ## Try it
#
# The same network as the check builds, with a TCP service on each backend.
# `backend_entry` turns what `Star` knows about a backend into a map entry.

# %% tags=["try"]
VIP, VPORT = "10.201.100.1", 8080


def backend_entry(prog, lan, name):
    entry = prog["backends"].Leaf()
    entry.ifindex = lan.ifindex("lb", lan.hub_if[name])
    entry.mac[:] = list(bytes.fromhex(lan.mac(name).replace(":", "")))
    entry.lb_mac[:] = list(bytes.fromhex(lan.mac("lb", lan.hub_if[name]).replace(":", "")))
    return entry


names = ["b1", "b2", "b3"]
with net.Star(["client", *names], hub="lb") as lan, Program(PROGRAM) as prog:
    lan.add_route("lb", VIP + "/32", kind="blackhole")
    servers = []
    for i, name in enumerate(names):
        lan.add_address(name, VIP)
        servers.append(traffic.TcpServer(lan.ns[name], VPORT, name))
        prog["backends"][ct.c_uint32(i)] = backend_entry(prog, lan, name)
    with xdp.attach(prog, "xdp_lb", *lan.where("lb", "to-client")):
        replies = [traffic.tcp_exchange(lan.ns["client"], VIP, VPORT, f"req{i}").reply
                   for i in range(12)]
    for s in servers:
        s.close()
    print(replies)
    print("packets per backend:", [prog["picked"][ct.c_uint32(i)].value for i in range(3)])

# %% [markdown]
# ## Check

# %% tags=["check"]
check("7.2", program=PROGRAM)
