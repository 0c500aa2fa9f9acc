# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 8.1: A bandwidth limiter on TC egress
#
# **Objective.** Write a TC program for the egress hook of an interface that
# lets traffic leave at most at `RATE_BYTES` bytes per second (with bursts of
# up to `BURST_BYTES`), using a **token bucket** kept in a map, and drops
# what goes beyond.
#
# **Expected observation.** The check builds a veth pair of its own and
# measures, at the receiving interface, how many bytes per second arrive from
# a UDP sender that sends as fast as it can:
#
# 1. with no program: as fast as this machine goes (tens of MB/s);
# 2. with your program on veth-a egress, compiled with a `RATE_BYTES` the
#    check picks (at most 1.5 MB/s, well below the first figure): between
#    0.5x and 1.3x that rate;
# 3. a gentle flow at 30% of the rate: at least 90% of its packets arrive.

# %% [markdown]
# ## Background
#
# A token bucket fills at a steady rate, up to a size; a packet may leave
# if it finds enough tokens in the bucket, and takes them out. So on
# average nothing leaves faster than the rate, and a sender that was quiet
# may burst up to the bucket's size.
#
# The obvious unit for tokens is the byte, but integers make that a trap:
# at 100 000 packets per second, the 10 µs between two packets earn 10.4
# bytes at 1.04 MB/s, the fraction is cut off each time, and the limiter
# runs slow (or, at higher packet rates, earns nothing at all). So we do
# what the kernel's own `tbf` qdisc does: **count tokens in nanoseconds of
# sending time**.
#
# * Time refills the bucket exactly: `tokens += elapsed_ns`.
# * The bucket holds at most `BURST_NS = BURST_BYTES * 1e9 / RATE_BYTES`.
# * A packet of `skb->len` bytes costs `skb->len * 1e9 / RATE_BYTES` ns.
#
# The program keeps two numbers in a one-entry array map:
#
# ```
# tokens   nanoseconds of sending the bucket holds now
# last_ns  when tokens was last brought up to date (bpf_ktime_get_ns())
# ```
#
# On each packet: refill by the time elapsed since `last_ns`, cap at
# `BURST_NS`, remember `now`; then pass (`TC_ACT_OK`) and take the packet's
# cost out, or drop it (`TC_ACT_SHOT`).
#
# **Policing, not shaping.** A program can only pass or drop a packet: it
# cannot hold it back until tokens arrive. Holding back is a *queue's* job:
# a `tbf` or `htb` qdisc, or the `fq` qdisc honouring a departure time the
# program writes into `skb->tstamp` (EDT, "earliest departure time", what
# Cilium's bandwidth manager does). The course's CI kernel has no `fq`
# (section 8.5 of the chapter shows how to tell), so this lab polices,
# which works on every kernel. TCP suffers from a policer (every drop is a
# loss), which is why the check uses UDP.
#
# Several CPUs may run the program at once; the read-modify-write of the
# bucket is then racy. For a lab that costs a few percent of accuracy;
# production code uses `bpf_spin_lock` or per-CPU buckets.

# %%
from ebpf_tutor import Program, flows, net, tc
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check attaches the function `tc_limit` and compiles
# with `-DRATE_BYTES=...` and `-DBURST_BYTES=...` (the `#ifndef` defaults
# are for your own tries).

# %% tags=["answer"]
PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>     /* TC_ACT_OK, TC_ACT_SHOT */

#ifndef RATE_BYTES
#define RATE_BYTES 1000000           /* bytes per second */
#endif
#ifndef BURST_BYTES
#define BURST_BYTES 20000            /* the bucket's size, in bytes */
#endif
#define NSEC_PER_SEC 1000000000ULL
#define BURST_NS (BURST_BYTES * NSEC_PER_SEC / RATE_BYTES)   /* the same, in ns of sending */

struct bucket {
    u64 tokens;                      /* nanoseconds of sending the bucket holds */
    u64 last_ns;                     /* when tokens was last brought up to date */
};
BPF_ARRAY(buckets, struct bucket, 1);
BPF_ARRAY(stats, u64, 2);            /* [0] packets passed, [1] packets dropped */

int tc_limit(struct __sk_buff *skb) {
    int zero = 0;
    struct bucket *b = buckets.lookup(&zero);
    if (!b)
        return TC_ACT_OK;
    u64 now = bpf_ktime_get_ns();
    u64 len = skb->len;              /* the whole frame, Ethernet header included */
    int verdict = TC_ACT_OK;

    // TODO 1: refill. Add the time elapsed since b->last_ns to the tokens,
    //         never more than BURST_NS in all; store now in b->last_ns.
    // TODO 2: the packet costs len * NSEC_PER_SEC / RATE_BYTES ns. If the
    //         bucket holds less, the packet is over the rate:
    //         verdict = TC_ACT_SHOT. Otherwise take the cost out.
    //         Write the bucket's new tokens back.
    // BEGIN SOLUTION
    u64 tokens = b->tokens + (now - b->last_ns);
    if (tokens > BURST_NS)
        tokens = BURST_NS;
    b->last_ns = now;
    u64 cost = len * NSEC_PER_SEC / RATE_BYTES;
    if (tokens < cost) {
        verdict = TC_ACT_SHOT;
    } else {
        tokens -= cost;
    }
    b->tokens = tokens;
    // END SOLUTION

    stats.atomic_increment(verdict == TC_ACT_SHOT ? 1 : 0);
    return verdict;
}
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Keep the bucket in *time*: tokens are nanoseconds of sending allowed.
# On every packet, passed or dropped, first refill by the time elapsed
# since the last packet, capped at the burst; then a packet of `len` bytes
# costs the time it takes at the rate. Enough tokens: take them and pass.
# Too few: drop, and take nothing. The very first packet sees "time since
# boot" as elapsed: the cap is what keeps that from becoming a huge burst.
# </details>
#
# <details><summary>Hint 2: the API and the units</summary>
#
# * `bpf_ktime_get_ns()` is the clock; `b->last_ns` and `b->tokens` are the
#   bucket's state (update both before returning).
# * `skb->len` is bytes; `RATE_BYTES` is bytes per second, so a packet costs
#   `len * NSEC_PER_SEC / RATE_BYTES` nanoseconds. No bits anywhere.
# * `TC_ACT_OK` passes, `TC_ACT_SHOT` drops.
# * Unsigned numbers: `tokens - cost` when `tokens < cost` wraps around to
#   a huge bucket.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# u64 tokens = b->tokens + (now - b->last_ns);
# if (tokens > BURST_NS) tokens = BURST_NS;
# b->last_ns = now;
# u64 cost = len * NSEC_PER_SEC / RATE_BYTES;
# if (tokens < cost) verdict = TC_ACT_SHOT; else tokens -= cost;
# b->tokens = tokens;
# ```
# </details>

# %% [markdown]
# ## Try it
#
# The same measurement as the check, at the default rate of 1 MB/s: first
# without, then with the program. `flows.udp_flow` sends for the given time
# and reports what the other interface received.

# %% tags=["try"]
with net.VethPair() as lab:
    free = flows.udp_flow(lab, 9000, 0.5)
    with Program(PROGRAM) as prog, tc.attach(prog, "tc_limit", lab.ns["a"], lab.ifname["a"]):
        limited = flows.udp_flow(lab, 9000, 1.0)
        passed, dropped = prog["stats"][0].value, prog["stats"][1].value
print(f"no program: {free.rate / 1e6:.1f} MB/s; with the limiter: {limited.rate / 1e6:.2f} MB/s "
      f"({passed} packets passed, {dropped} dropped)")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("8.1", program=PROGRAM)
