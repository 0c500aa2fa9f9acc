# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 16.1: The 5-tuple flow table
#
# **Objective.** Write the heart of chapter 16's analyzer: an XDP program
# that keeps, for every **directed** IPv4 flow (source and destination
# address, source and destination port, protocol), the number of packets and
# of **frame bytes** (Ethernet header included) that arrived.
#
# **Expected observation.** The check attaches your program (native XDP) to
# a sandbox veth and puts frames on the wire whose every byte it knows: a
# dozen flows with random counts and sizes, from several source addresses,
# TCP, UDP and ICMP, both directions of one conversation, a UDP flow whose
# IP header carries options, and a UDP datagram cut into IP fragments. Your
# `flows` map must hold exactly those flows, each with exactly its packets
# and bytes.

# %% [markdown]
# ## Background
#
# * **The key.** Addresses as they are on the wire (network order, a `u32`
#   straight from `struct iphdr`); ports in **host order** (`ntohs`); ICMP
#   and other protocols without ports get ports 0. The key has explicit
#   padding so that no byte of it is left uninitialised: start from
#   `struct flow_key key = {};`.
# * **Bytes.** The frame's length is `ctx->data_end - ctx->data`: the
#   Ethernet header and everything after it. That is what tshark and
#   tcpdump count as a frame's length.
# * **The IP header length** is `ip->ihl * 4` bytes, 20 without options, up
#   to 60. The ports start right after it.
# * **Fragments.** A datagram larger than the MTU travels in pieces. Only
#   the first carries the TCP/UDP header. `ip->frag_off` (network order)
#   holds flags and, in its low 13 bits, the offset: a non-zero offset is a
#   later fragment. Count it under ports 0.
# * **Counting.** `flows.lookup_or_try_init(&key, &zero)` gives the flow's
#   entry, made from `zero` if it was missing (NULL only if the map is
#   full). Add to it with `__sync_fetch_and_add`: two CPUs may update one
#   flow at once.

# %%
import time

from ebpf_tutor import Program, net, packets, traffic, xdp
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check attaches `flow_xdp` and reads the map `flows`
# with these two structs.

# %% tags=["answer"]
PROGRAM = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

struct flow_key {
    u32 saddr;                /* network order, as in the IP header */
    u32 daddr;
    u16 sport;                /* host order; 0 without ports */
    u16 dport;
    u8 proto;
    u8 pad[3];
};
struct flow_val {
    u64 packets;
    u64 bytes;                /* frame bytes, Ethernet header included */
};
struct ports { u16 source; u16 dest; };   /* the first 4 bytes of TCP and UDP */

BPF_HASH(flows, struct flow_key, struct flow_val, 4096);

int flow_xdp(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    u64 len = data_end - data;
    struct flow_key key = {};

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return XDP_PASS;
    // TODO 1: fill the key: addresses and protocol from the IP header; for
    //         TCP (6) and UDP (17), the ports after the IP header (its length
    //         is ip->ihl * 4), unless this is a later fragment
    // TODO 2: count the packet and its frame bytes in `flows`
    // BEGIN SOLUTION
    key.saddr = ip->saddr;
    key.daddr = ip->daddr;
    key.proto = ip->protocol;
    int later_fragment = ip->frag_off & htons(0x1FFF);
    if ((ip->protocol == 6 || ip->protocol == 17) && !later_fragment) {
        struct ports *p = (void *)ip + ip->ihl * 4;
        if ((void *)(p + 1) > data_end)
            return XDP_PASS;
        key.sport = ntohs(p->source);
        key.dport = ntohs(p->dest);
    }
    struct flow_val zero = {};
    struct flow_val *v = flows.lookup_or_try_init(&key, &zero);
    if (v) {
        __sync_fetch_and_add(&v->packets, 1);
        __sync_fetch_and_add(&v->bytes, len);
    }
    // END SOLUTION
    return XDP_PASS;
}
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Read the IP header, then decide whether there are ports to read: only for
# TCP and UDP, and only in the first fragment of a datagram. Where the ports
# are depends on how long the IP header says it is. Then either start the
# flow's entry with this packet, or add this packet to it.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `ip->saddr`, `ip->daddr`, `ip->protocol`; `ip->ihl * 4` bytes of header;
#   `ip->frag_off & htons(0x1FFF)` is non-zero for a later fragment.
# * `struct ports *p = (void *)ip + ip->ihl * 4;` then check
#   `(void *)(p + 1) > data_end` before reading `ntohs(p->source)`.
# * `struct flow_val zero = {}, *v = flows.lookup_or_try_init(&key, &zero);`
#   then, if `v` is not NULL, `__sync_fetch_and_add(&v->bytes, len)`.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# key.saddr = ip->saddr; key.daddr = ip->daddr; key.proto = ip->protocol;
# if ((ip->protocol == 6 || ip->protocol == 17) && !(ip->frag_off & htons(0x1FFF))) {
#     struct ports *p = (void *)ip + ip->ihl * 4;
#     if ((void *)(p + 1) > data_end) return XDP_PASS;
#     key.sport = ntohs(p->source); key.dport = ntohs(p->dest);
# }
# struct flow_val zero = {}, *v = flows.lookup_or_try_init(&key, &zero);
# if (v) { __sync_fetch_and_add(&v->packets, 1); __sync_fetch_and_add(&v->bytes, len); }
# ```
# `len` is the whole frame: `ctx->data_end - ctx->data`, not `ip->tot_len`.
# </details>

# %% [markdown]
# ## Try it
#
# Five UDP datagrams of 100 payload bytes from `a` to `b`: one flow, five
# packets of 142 bytes (14 Ethernet + 20 IP + 8 UDP + 100).

# %% tags=["try"]
with net.VethPair(quiet=True) as lab, Program(PROGRAM) as prog, \
        xdp.attach(prog, "flow_xdp", *lab.where("b")):
    frames = [packets.udp_packet(dport=6000, sport=5000, payload=b"x" * 100,
                                 src=lab.ip_a, dst=lab.ip_b) for _ in range(5)]
    traffic.send_frames(lab.ns["a"], lab.ifname["a"], frames)
    time.sleep(0.05)
    for k, v in prog["flows"].items():
        print(k.proto, k.sport, "->", k.dport, ":", v.packets, "packets,", v.bytes, "bytes")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("16.1", program=PROGRAM)
