# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 7.1: DDoS protection, a per-source rate limit in XDP
#
# **Objective.** Write an XDP program that counts packets per source IPv4
# address in fixed time windows and drops what a source sends beyond
# `RATE_LIMIT` packets per window of `WINDOW_NS` nanoseconds. Everything else
# passes untouched.
#
# **Expected observation.** The check builds a small network of its own:
# an *attacker* and a *legit* client, each in its own namespace, behind a
# router, and a *victim* namespace whose interface carries your program (native
# XDP). It compiles your program with its own `RATE_LIMIT` and `WINDOW_NS`,
# then counts, with a UDP socket on the victim, what arrives from each source:
#
# 1. a few packets from both clients at a low rate all arrive;
# 2. the attacker floods 3000 packets as fast as Python can send them while
#    the legit client sends 20 in between: at most a small fraction of the
#    flood arrives (about `RATE_LIMIT` per window), and all 20 legit packets do;
# 3. after the flood has stopped for more than a window, the attacker's
#    low-rate packets arrive again: a rate limit, not a ban.
#
# Counts, not timings: the check is generous about how fast the flood goes.
# The router does not know the victim's MAC address in advance: it asks
# with ARP, and those requests cross your program too.

# %% [markdown]
# ## Background
#
# XDP runs before the kernel has spent anything on a packet: no socket
# buffer, no routing, no firewall. That is where a flood is cheapest to
# drop. The classic defence keeps a small record per source:
#
# ```
# window_start  when the current window began (bpf_ktime_get_ns())
# count         packets from this source since then
# ```
#
# On each packet: if the window is over, start a new one at zero; add one;
# above the limit, `XDP_DROP`. An **LRU hash** holds the records, so a flood
# of spoofed addresses evicts old entries instead of filling the map.
#
# Parsing: `ctx->data` and `ctx->data_end` delimit the packet. Before you
# read a header, prove to the verifier that it lies inside:
# `if ((void *)(ip + 1) > data_end) return XDP_PASS;`.

# %%
import socket
import struct

from ebpf_tutor import Program, net, traffic, xdp
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check attaches the function `xdp_ddos`, and compiles
# with `-DRATE_LIMIT=...` and `-DWINDOW_NS=...` (the `#ifndef` defaults are
# for your own tries).

# %% tags=["answer"]
PROGRAM = r"""
#include <uapi/linux/if_ether.h>    /* struct ethhdr, ETH_P_IP */
#include <uapi/linux/ip.h>          /* struct iphdr */

#ifndef RATE_LIMIT
#define RATE_LIMIT 100                 /* packets per source per window */
#endif
#ifndef WINDOW_NS
#define WINDOW_NS 1000000000ULL        /* one second */
#endif

struct rate_t {
    u64 window_start;                  /* ns, from bpf_ktime_get_ns() */
    u64 count;                         /* packets in the current window */
};
BPF_TABLE("lru_hash", u32, struct rate_t, rates, 4096);
BPF_HASH(dropped, u32, u64);           /* drops per source, for you to look at */

int xdp_ddos(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;               /* ARP, IPv6...: not our business */

    // TODO 1: point an iphdr at the bytes after the Ethernet header, and
    //         check that the whole header lies before data_end
    // TODO 2: find (or create) the rate_t of ip->saddr in `rates`
    // TODO 3: if the window is over, start a new one; count this packet
    // TODO 4: above RATE_LIMIT: count it in `dropped` and return XDP_DROP
    // BEGIN SOLUTION
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return XDP_PASS;

    u32 src = ip->saddr;
    u64 now = bpf_ktime_get_ns();
    struct rate_t fresh = {.window_start = now, .count = 0};
    struct rate_t *r = rates.lookup_or_try_init(&src, &fresh);
    if (!r)
        return XDP_PASS;
    if (now - r->window_start > WINDOW_NS) {
        r->window_start = now;
        r->count = 0;
    }
    r->count += 1;
    if (r->count > RATE_LIMIT) {
        dropped.atomic_increment(src);
        return XDP_DROP;
    }
    // END SOLUTION
    return XDP_PASS;
}
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# A rate limit needs a memory *per source*: one record for each source
# address, holding when its current window began and how many packets it
# sent since. A packet starts a new window if the old one is over, then
# counts; past the limit it is dropped. One shared record would let the
# attacker use up everybody's budget; a record that never starts a new
# window turns a rate limit into a ban. And before reading the IP header,
# prove to the verifier that it lies inside the packet.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `struct iphdr *ip = (void *)(eth + 1);` points at the IP header;
#   `(void *)(ip + 1) > data_end` is the bounds test the verifier needs.
# * `ip->saddr` is the source address (network byte order is fine for a key).
# * `bpf_ktime_get_ns()` is the clock.
# * `rates.lookup_or_try_init(&key, &fresh)` returns a pointer to the entry,
#   creating it from `fresh` if needed, or NULL (then let the packet pass).
# * `dropped.atomic_increment(key)` counts a drop; `XDP_DROP` and `XDP_PASS` are
#   the verdicts.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# struct rate_t fresh = {.window_start = now, .count = 0};
# struct rate_t *r = rates.lookup_or_try_init(&src, &fresh);
# if (!r) return XDP_PASS;
# if (now - r->window_start > WINDOW_NS) { /* new window: start and count */ }
# r->count += 1;
# if (r->count > RATE_LIMIT) { /* count the drop, XDP_DROP */ }
# ```
# </details>

# %% [markdown]
# ## Try it
#
# A victim behind a router, two clients. The attacker sends 2000 packets in
# a burst; the program, with its default limit of 100 per second, lets about
# 100 through, and all 10 of the other client's. Map keys are addresses as
# the packet carries them (network byte order): `struct.pack("I", ...)` gives
# the bytes back.

# %% tags=["try"]
with net.Star(["attacker", "legit", "victim"], hub="router") as lan, \
        Program(PROGRAM) as prog, \
        xdp.attach(prog, "xdp_ddos", *lan.where("victim")), \
        traffic.UdpSink(lan.ns["victim"], 9000) as sink, \
        traffic.UdpFlow(lan.ns["attacker"], lan.ip["victim"], 9000) as flood, \
        traffic.UdpFlow(lan.ns["legit"], lan.ip["victim"], 9000) as legit:
    flood.send(2000)
    legit.send(10)
    sink.settle()
    print("arrived per source:", dict(sink.by_src))
    print("dropped per source:", {socket.inet_ntoa(struct.pack("I", k.value)): v.value
                                  for k, v in prog["dropped"].items()})

# %% [markdown]
# ## Check

# %% tags=["check"]
check("7.1", program=PROGRAM)
