# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 8.2: An egress firewall, protocols and ports from a map
#
# **Objective.** Write a TC egress program that drops outgoing IPv4 packets
# matching a rule of the map `rules` and lets everything else leave. A rule
# is a protocol and a destination port; port 0 means every port of that
# protocol (and ICMP, which has no ports, only ever uses port 0). Each rule's
# value counts the packets it dropped.
#
# **Expected observation.** The check attaches your program to veth-a
# egress, writes the rules, and sends from side a to side b, counting what
# arrives on b:
#
# 1. rules (UDP, p1), (TCP, p3), (ICMP, 0): 10 UDP datagrams to p1 arrive
#    0 times, those to p2 and to p3 all 10 times (p3 is blocked for TCP
#    only); 0 of 3 TCP connections to p3 are established, 3 of 3 to p4;
#    0 of 3 pings are answered; the rules' counters say 10, >= 3 and 3;
#    then 5 datagrams each to p1 and p2 whose IPv4 header carries 4 bytes of
#    options (24 bytes, `ihl` = 6): 0 arrive at p1, 5 at p2;
# 2. then, while the program runs, the check deletes the ICMP rule and adds
#    (UDP, 0): no UDP arrives any more, pings and TCP work again.

# %% [markdown]
# ## Background
#
# On egress, TC sees every packet the namespace sends, after routing and
# after the kernel built all the headers: the IPv4 header, then TCP or UDP,
# whose first two 16-bit fields are the source and the destination port.
#
# Two ways to read a packet in TC:
#
# * **direct access**, as in XDP: `skb->data` and `skb->data_end`, with a
#   bounds check the verifier can follow before each read;
# * **`bpf_skb_load_bytes(skb, offset, &dst, len)`**: copies bytes into a
#   variable, checking the bounds itself (it returns < 0 past the end). It
#   also works on packets whose headers are not all in the linear part of
#   the buffer, which direct access cannot reach.
#
# The IPv4 header is `ip->ihl * 4` bytes long (20 without options), so the
# destination port sits at offset `14 + ip->ihl * 4 + 2` of the frame. It
# is in network byte order; the map's keys hold it in host order, so convert
# it with `ntohs()`.
#
# **The map is the policy.** The program never names a port: it asks the
# map on every packet, so rules change while it runs, with no reload.

# %%
import socket

from ebpf_tutor import Program, flows, net, tc
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check attaches the function `tc_firewall` and writes
# its rules into `rules` (key `struct rule`).

# %% tags=["answer"]
PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>     /* TC_ACT_OK, TC_ACT_SHOT */
#include <uapi/linux/if_ether.h>    /* struct ethhdr, ETH_P_IP */
#include <uapi/linux/in.h>          /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP */
#include <uapi/linux/ip.h>          /* struct iphdr */

struct rule {
    u8  proto;                       /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_ICMP */
    u8  pad;
    u16 port;                        /* destination port, host byte order; 0 = any */
};
BPF_HASH(rules, struct rule, u64, 64);   /* value: packets this rule dropped */

int tc_firewall(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return TC_ACT_OK;
    if (eth->h_proto != htons(ETH_P_IP))
        return TC_ACT_OK;            /* ARP, IPv6...: not ours to judge */
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return TC_ACT_OK;

    struct rule key = {};
    key.proto = ip->protocol;

    // TODO 1: for TCP and UDP, read the destination port (2 bytes, at offset
    //         sizeof(*eth) + ip->ihl * 4 + 2 of the frame) with
    //         bpf_skb_load_bytes, and store it in key.port in host byte order.
    // TODO 2: look up the exact rule; if there is none, the rule for every
    //         port of the protocol (key.port = 0). On a match, add one to the
    //         rule's value and drop the packet.
    // BEGIN SOLUTION
    if (key.proto == IPPROTO_TCP || key.proto == IPPROTO_UDP) {
        u16 dport;
        if (bpf_skb_load_bytes(skb, sizeof(*eth) + ip->ihl * 4 + 2, &dport, sizeof(dport)) < 0)
            return TC_ACT_OK;
        key.port = ntohs(dport);
    }
    u64 *hits = rules.lookup(&key);
    if (!hits) {
        key.port = 0;
        hits = rules.lookup(&key);
    }
    if (hits) {
        __sync_fetch_and_add(hits, 1);
        return TC_ACT_SHOT;
    }
    // END SOLUTION
    return TC_ACT_OK;
}
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Build the key the map is indexed by, from the packet: the protocol from
# the IP header and, for TCP and UDP, the destination port (the second
# 16-bit field of both headers), converted to host order. Ask the map for
# the exact rule first, then for the protocol-wide rule (port 0). A match
# counts and drops; anything else, ARP included, leaves untouched. The TCP
# or UDP header starts where the IP header ends, and the IP header says
# how long it is: options make it longer than 20 bytes.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `ip->protocol`; `ip->ihl * 4` is the IP header's length in bytes.
# * `bpf_skb_load_bytes(skb, offset, &var, size)` copies bytes of the
#   packet (offset 0 is the Ethernet header) and returns < 0 past the end.
# * `ntohs()` turns network order into host order: without it port 9000
#   (0x2328) would be looked up as 0x2823 = 10275.
# * `rules.lookup(&key)` gives a pointer to the rule's counter or NULL;
#   `__sync_fetch_and_add(hits, 1)` counts atomically (several CPUs may
#   drop at once).
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# u16 dport;
# if (bpf_skb_load_bytes(skb, sizeof(*eth) + ip->ihl * 4 + 2, &dport, sizeof(dport)) < 0)
#     return TC_ACT_OK;
# key.port = ntohs(dport);
# ```
# then `hits = rules.lookup(&key)`; if NULL, `key.port = 0` and look again;
# on a match, count and `return TC_ACT_SHOT`.
# </details>

# %% [markdown]
# ## Try it
#
# Block UDP port 9001 and all ICMP, send 5 datagrams each to 9000 and 9001,
# ping 3 times, and look at what arrived and at the rules' counters.

# %% tags=["try"]
def rule(table, proto: int, port: int):
    key = table.Key()
    key.proto, key.port = proto, port
    return key


with net.VethPair() as lab, Program(PROGRAM) as prog, \
        tc.attach(prog, "tc_firewall", lab.ns["a"], lab.ifname["a"], "egress"), \
        flows.UdpSinks(lab.ns["b"], [9000, 9001]) as sinks:
    rules = prog["rules"]
    rules[rule(rules, socket.IPPROTO_UDP, 9001)] = rules.Leaf(0)
    rules[rule(rules, socket.IPPROTO_ICMP, 0)] = rules.Leaf(0)
    for port in (9000, 9001):
        flows.udp_send(lab.ns["a"], lab.ip_b, port, 5)
    answered = flows.icmp_echo(lab.ns["a"], lab.ip_b, 3)
    print("UDP datagrams that arrived, per port:", dict(sinks.counts()))
    print("pings answered:", answered, "of 3")
    print("drops per rule:", {(k.proto, k.port): v.value for k, v in rules.items()})

# %% [markdown]
# ## Check

# %% tags=["check"]
check("8.2", program=PROGRAM)
