# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 14.2: The verifier gym
#
# **Objective.** Seventeen programs below were each rejected by the compiler
# or the verifier, for seventeen different reasons taken from real rejections.
# Make each one load **and** do what its comment says.
#
# **Expected observation.** The check loads every program, then runs it with
# `BPF_PROG_TEST_RUN` on inputs it draws at random (packets, context
# arguments, map contents) and compares what the program recorded with the
# right answer. A program that loads but answers wrongly fails, for example a
# NULL check that returns before counting, or a bounds check one slot too
# loose.
#
# **You will use:** the error explainer (`Program` prints the kind of error,
# your line and a hint), `bpf_probe_read_user`, ring buffers, XDP packet
# pointers.
#
# Each program is in its own cell. Run `try_program("null_map_value")` (any name) to see
# the diagnostic; edit the program until it loads; the check does the rest.

# %%
from ebpf_tutor import Program
from ebpf_tutor.labs import check
from ebpf_tutor.labs.checks.ch14 import try_program

# %% [markdown]
# ## 1. Count the watched keys
#
# `watched` holds the keys to count (Python puts them there, with value 0).
# Count every call whose first argument is a watched key; ignore the others.

# %% tags=["answer"]
NULL_MAP_VALUE = r"""
BPF_HASH(watched, u64, u64);
int count_watched(struct bpf_raw_tracepoint_args *ctx) {
    u64 key = ctx->args[0];
    u64 *n = watched.lookup(&key);
    // BEGIN SOLUTION
    if (!n)
        return 0;
    // END SOLUTION
    __sync_fetch_and_add(n, 1);
    return 0;
}
"""

# %% [markdown]
# ## 2. Drop UDP to blocked ports
#
# An XDP program: drop UDP/IPv4 datagrams whose destination port is in
# `blocked`, pass everything else, including packets too short to hold the
# headers.

# %% tags=["answer"]
PACKET_BOUNDS = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
#define IPPROTO_UDP 17
BPF_HASH(blocked, u16, u8);
int drop_blocked(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    // BEGIN SOLUTION
    if ((void *)(ip + 1) > data_end)
        return XDP_PASS;
    // END SOLUTION
    if (ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > data_end)
        return XDP_PASS;
    u16 port = ntohs(udp->dest);
    if (blocked.lookup(&port))
        return XDP_DROP;
    return XDP_PASS;
}
"""

# %% [markdown]
# ## 3. Note the receiving interface
#
# Store the index of the interface the packet arrived on.

# %% tags=["answer"]
BAD_CTX = r"""
BPF_ARRAY(last_ifindex, u32, 1);
int note_ifindex(struct xdp_md *ctx) {
// BEGIN SOLUTION
#if 0
// END SOLUTION
    u32 ifindex = ctx->egress_ifindex;
// BEGIN SOLUTION
#endif
    u32 ifindex = ctx->ingress_ifindex;
// END SOLUTION
    int zero = 0;
    last_ifindex.update(&zero, &ifindex);
    return XDP_PASS;
}
"""

# %% [markdown]
# ## 4. Who called?
#
# Store the process id (tgid) of the caller. The team may not relicense
# this program: keep it proprietary.

# %% tags=["answer"]
GPL_ONLY = r"""
#define BPF_LICENSE Proprietary
#include <linux/sched.h>
BPF_ARRAY(caller, u32, 1);
int who_called(struct bpf_raw_tracepoint_args *ctx) {
// BEGIN SOLUTION
#if 0
// END SOLUTION
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    u32 tgid = 0;
    bpf_probe_read_kernel(&tgid, sizeof(tgid), &task->tgid);
// BEGIN SOLUTION
#endif
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
// END SOLUTION
    int zero = 0;
    caller.update(&zero, &tgid);
    return 0;
}
"""

# %% [markdown]
# ## 5. Report non-zero values
#
# Send one event per call whose first argument is not zero, carrying that
# argument; send nothing for zero.

# %% tags=["answer"]
RINGBUF_LEAK = r"""
struct event { u64 value; };
BPF_RINGBUF_OUTPUT(events, 8);
int report(struct bpf_raw_tracepoint_args *ctx) {
    struct event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    if (ctx->args[0] == 0) {
        // BEGIN SOLUTION
        events.ringbuf_discard(e, 0);
        // END SOLUTION
        return 0;
    }
    e->value = ctx->args[0];
    events.ringbuf_submit(e, 0);
    return 0;
}
"""

# %% [markdown]
# ## 6. Snapshot a user buffer
#
# Send one event holding the first argument as `id` and the 70 words found
# at the user address in the second argument.

# %% tags=["answer"]
STACK_512 = r"""
struct sample { u64 id; u64 words[70]; };
BPF_RINGBUF_OUTPUT(samples, 16);
int snapshot(struct bpf_raw_tracepoint_args *ctx) {
// BEGIN SOLUTION
#if 0
// END SOLUTION
    struct sample s = {};
    s.id = ctx->args[0];
    bpf_probe_read_user(s.words, sizeof(s.words), (void *)ctx->args[1]);
    samples.ringbuf_output(&s, sizeof(s), 0);
// BEGIN SOLUTION
#endif
    struct sample *s = samples.ringbuf_reserve(sizeof(*s));
    if (!s)
        return 0;
    s->id = ctx->args[0];
    if (bpf_probe_read_user(s->words, sizeof(s->words), (void *)ctx->args[1]) < 0)
        __builtin_memset(s->words, 0, sizeof(s->words));
    samples.ringbuf_submit(s, 0);
// END SOLUTION
    return 0;
}
"""

# %% [markdown]
# ## 7. Count IPv4 frames
#
# An XDP program: count the IPv4 frames (EtherType 0x0800) and pass every
# frame.

# %% tags=["answer"]
HELPER_TYPE = r"""
#include <uapi/linux/if_ether.h>
BPF_ARRAY(seen, u64, 1);
int count_ipv4(struct xdp_md *ctx) {
    u16 proto = 0;
// BEGIN SOLUTION
#if 0
// END SOLUTION
    bpf_skb_load_bytes(ctx, 12, &proto, sizeof(proto));
// BEGIN SOLUTION
#endif
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    proto = eth->h_proto;
// END SOLUTION
    if (proto == htons(0x0800))
        seen.atomic_increment(0);
    return XDP_PASS;
}
"""

# %% [markdown]
# ## 8. A histogram from a signed value
#
# Count the first argument (an int) into slot `value` of the histogram when
# 0 <= value < 16; ignore other values, negative ones included.

# %% tags=["answer"]
SIGNED_INDEX = r"""
struct hist { u64 slots[16]; };
BPF_ARRAY(hist, struct hist, 1);
int bucket(struct bpf_raw_tracepoint_args *ctx) {
    int slot = ctx->args[0];
    int zero = 0;
    struct hist *h = hist.lookup(&zero);
    if (!h)
        return 0;
    if (slot >= 16)
        return 0;
    // BEGIN SOLUTION
    slot &= 15;              /* the verifier follows a mask, not the sign extension */
    if (slot != ctx->args[0])
        return 0;            /* the value was negative */
    // END SOLUTION
    __sync_fetch_and_add(&h->slots[slot], 1);
    return 0;
}
"""

# %% [markdown]
# ## 9. A histogram, one slot too far
#
# Count the first argument into slot `value` when value < 16; ignore larger
# values.

# %% tags=["answer"]
OFF_BY_ONE = r"""
struct hist { u64 slots[16]; };
BPF_ARRAY(hist, struct hist, 1);
int bucket(struct bpf_raw_tracepoint_args *ctx) {
// BEGIN SOLUTION
#if 0
// END SOLUTION
    u32 slot = ctx->args[0];
// BEGIN SOLUTION
#endif
    u64 slot = ctx->args[0];     /* no 32-bit copy: checked in the register that indexes */
// END SOLUTION
    int zero = 0;
    struct hist *h = hist.lookup(&zero);
    if (!h)
        return 0;
// BEGIN SOLUTION
#if 0
// END SOLUTION
    if (slot > 16)
// BEGIN SOLUTION
#endif
    if (slot >= 16)
// END SOLUTION
        return 0;
    __sync_fetch_and_add(&h->slots[slot], 1);
    return 0;
}
"""

# %% [markdown]
# ## 10. Strip the outer Ethernet header
#
# An XDP program for frames that carry a second Ethernet header: remove
# the outer one and record the EtherType of the **inner** header.

# %% tags=["answer"]
STALE_PACKET = r"""
#include <uapi/linux/if_ether.h>
BPF_ARRAY(inner_proto, u16, 1);
int strip_outer(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) + sizeof(struct ethhdr) > data_end)
        return XDP_PASS;
    if (bpf_xdp_adjust_head(ctx, sizeof(struct ethhdr)))
        return XDP_ABORTED;
    // BEGIN SOLUTION
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_ABORTED;
    // END SOLUTION
    u16 proto = ntohs(eth->h_proto);
    int zero = 0;
    inner_proto.update(&zero, &proto);
    return XDP_PASS;
}
"""

# %% [markdown]
# ## 11. Copy a message of a given length
#
# Copy the message at the user address in the first argument, of the length
# in the second argument, into `copied` (at most 64 bytes: longer messages
# are cut to 64), and store the length copied.

# %% tags=["answer"]
VAR_SIZE = r"""
struct msg { u64 len; char text[64]; };
BPF_PERCPU_ARRAY(scratch, struct msg, 1);
BPF_ARRAY(copied, struct msg, 1);
int copy_msg(struct bpf_raw_tracepoint_args *ctx) {
    u32 len = ctx->args[1];
    int zero = 0;
    struct msg *m = scratch.lookup(&zero);
    if (!m)
        return 0;
    // BEGIN SOLUTION
    if (len > sizeof(m->text))
        len = sizeof(m->text);
    // END SOLUTION
    bpf_probe_read_user(m->text, len, (void *)ctx->args[0]);
    m->len = len;
    copied.update(&zero, m);
    return 0;
}
"""

# %% [markdown]
# ## 12. Keep a name
#
# Copy the NUL-terminated string at the user address in the first argument
# into `last_name` (16 bytes: longer names are cut, and still end in NUL).

# %% tags=["answer"]
STR_OVERFLOW = r"""
struct name_t { char text[16]; };
BPF_ARRAY(last_name, struct name_t, 1);
int note_name(struct bpf_raw_tracepoint_args *ctx) {
    int zero = 0;
    struct name_t *n = last_name.lookup(&zero);
    if (!n)
        return 0;
// BEGIN SOLUTION
#if 0
// END SOLUTION
    bpf_probe_read_user_str(n->text, 32, (void *)ctx->args[0]);
// BEGIN SOLUTION
#endif
    bpf_probe_read_user_str(n->text, sizeof(n->text), (void *)ctx->args[0]);
// END SOLUTION
    return 0;
}
"""

# %% [markdown]
# ## 13. Trace and count
#
# Count the calls in `calls`, and print the first four arguments to the
# trace pipe (the check reads the count).

# %% tags=["answer"]
PRINTK_ARGS = r"""
BPF_ARRAY(calls, u64, 1);
int trace_args(struct bpf_raw_tracepoint_args *ctx) {
    calls.atomic_increment(0);
// BEGIN SOLUTION
#if 0
// END SOLUTION
    bpf_trace_printk("%llx %llx %llx %llx\n", ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[3]);
// BEGIN SOLUTION
#endif
    bpf_trace_printk("%llx %llx\n", ctx->args[0], ctx->args[1]);
    bpf_trace_printk("%llx %llx\n", ctx->args[2], ctx->args[3]);
// END SOLUTION
    return 0;
}
"""

# %% [markdown]
# ## 14. The caller's thread id
#
# Store the thread id (the low 32 bits of `bpf_get_current_pid_tgid()`) of
# the caller.

# %% tags=["answer"]
UNDECLARED_HELPER = r"""
BPF_ARRAY(caller_tid, u32, 1);
int who_calls(struct bpf_raw_tracepoint_args *ctx) {
// BEGIN SOLUTION
#if 0
// END SOLUTION
    u32 tid = bpf_get_current_tid();
// BEGIN SOLUTION
#endif
    u32 tid = bpf_get_current_pid_tgid();
// END SOLUTION
    int zero = 0;
    caller_tid.update(&zero, &tid);
    return 0;
}
"""

# %% [markdown]
# ## 15. Count flows, loaded with least privilege
#
# An XDP program: count UDP/IPv4 frames per flow (destination address,
# destination port, protocol) in `flows`. A production loader holds only
# the capabilities it needs: this one is loaded with `CAP_BPF` and
# `CAP_NET_ADMIN`, without `CAP_PERFMON` or `CAP_SYS_ADMIN`
# (`try_program` and the check load it that way; as full root it would load,
# and count under keys that Python could not find).

# %% tags=["answer"]
UNINIT_STACK = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
struct flow { u32 daddr; u16 dport; u8 proto; };
BPF_HASH(flows, struct flow, u64);
// BEGIN SOLUTION
BPF_PERCPU_ARRAY(scratch, struct flow, 1);
// END SOLUTION
int count_flows(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > data_end || eth->h_proto != htons(ETH_P_IP) || ip->protocol != 17)
        return XDP_PASS;
// BEGIN SOLUTION
#if 0
// END SOLUTION
    struct flow f;
    f.daddr = ip->daddr;
    f.dport = ntohs(udp->dest);
    f.proto = ip->protocol;
    u64 one = 1;
    u64 *n = flows.lookup(&f);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        flows.update(&f, &one);
// BEGIN SOLUTION
#endif
    int zero = 0;
    struct flow *f = scratch.lookup(&zero);   /* a map value: all 8 bytes are initialised */
    if (!f)
        return XDP_PASS;
    __builtin_memset(f, 0, sizeof(*f));       /* the padding byte too: it is part of the key */
    f->daddr = ip->daddr;
    f->dport = ntohs(udp->dest);
    f->proto = ip->protocol;
    u64 one = 1;
    u64 *n = flows.lookup(f);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        flows.update(f, &one);
// END SOLUTION
    return XDP_PASS;
}
"""

# %% [markdown]
# ## 16. Sum the first n entries
#
# `table` holds 64 numbers. Store in `total` the sum of the first `n`
# entries, `n` being the first argument (all 64 when `n` is larger).

# %% tags=["answer"]
UNBOUNDED_LOOP = r"""
BPF_ARRAY(table, u64, 64);
BPF_ARRAY(total, u64, 1);
int sum_first(struct bpf_raw_tracepoint_args *ctx) {
    u32 n = ctx->args[0];
    u64 sum = 0;
// BEGIN SOLUTION
#if 0
// END SOLUTION
    for (u32 i = 0; i < n; i++) {
// BEGIN SOLUTION
#endif
    for (u32 i = 0; i < 64; i++) {   /* a constant bound the verifier can see */
        if (i >= n)
            continue;                /* not break: see hint 2 */
// END SOLUTION
        u32 key = i;
        u64 *v = table.lookup(&key);
        if (v)
            sum += *v;
    }
    int zero = 0;
    total.update(&zero, &sum);
    return 0;
}
"""

# %% [markdown]
# ## 17. Count into a slot, checked
#
# `hist` maps a group (the second argument) to 16 counters; Python creates
# the groups. Count the call in slot `args[0] & 15` of its group; ignore
# calls for a group that does not exist. (`barrier_var` keeps the compiler
# from moving the address computation below the check, as it cannot in
# larger programs: without it clang quietly repairs this bug.)

# %% tags=["answer"]
NULLABLE_ARITH = r"""
#define barrier_var(var) asm volatile("" : "+r"(var))
struct hist { u64 slots[16]; };
BPF_HASH(hist, u32, struct hist);
int bucket(struct bpf_raw_tracepoint_args *ctx) {
    u32 slot = ctx->args[0] & 15;
    u32 group = ctx->args[1];
    struct hist *h = hist.lookup(&group);
    // BEGIN SOLUTION
    if (!h)
        return 0;
    // END SOLUTION
    u64 *p = &h->slots[slot];
    barrier_var(p);
    if (!h)
        return 0;
    __sync_fetch_and_add(p, 1);
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1: read the diagnostic, then the line</summary>
#
# `try_program(NAME)` loads one program and prints what the explainer says:
# the kind (compile error or verifier rejection), the line the compiler or
# the verifier stopped at, and a hint. The line is where the verifier *lost
# track*: the missing check usually belongs just above it.
# </details>
#
# <details><summary>Hint 2: the usual fixes</summary>
#
# * A lookup may return NULL: `if (!p) return 0;` before using `p`.
# * Loops need a bound the verifier can see: a constant (`i < 64`), then
#   `if (i >= n) continue;` inside. Clamping `n` first is not enough, nor is
#   `break`: clang folds either into one exit test `i != min(n, 64)`, and
#   older verifiers (6.1) learn nothing from `!=` and walk on past 64.
# * A lookup's result may be NULL: check it *before* computing an address
#   from it (`&h->slots[i]`), not after.
# * A struct used as a map key must be fully written, padding included.
#   Root may read uninitialised stack; a loader without `CAP_PERFMON` may
#   not. `__builtin_memset(&key, 0, sizeof(key))` before the fields works on
#   new kernels, but 6.1 rejects it and every other way of writing the key
#   on the stack we tried ("attempt to corrupt spilled pointer on stack":
#   without `CAP_PERFMON` it refuses a partial write into a stack slot that
#   holds a stored register). Portable: build the key
#   in a per-CPU array value (`BPF_PERCPU_ARRAY(scratch, struct flow, 1)`):
#   every byte of a map value is initialised; zero it, then write the fields.
# * Packet reads need `if ((void *)(hdr + 1) > data_end)` first, and again
#   after any helper that moves the packet (`bpf_xdp_adjust_head`).
# * Indexes and sizes: unsigned (a signed index is sign-extended in a way the
#   verifier cannot follow), and compared against the real size
#   (`slot < 16`, not `slot <= 16`); clamp a size before a helper call.
# * A `u32` copy of a 64-bit argument is compared in one register and used
#   from another, so the verifier may not connect the check with the
#   access: keep such an index 64-bit (`u64 slot = ctx->args[0];`).
# * A ring-buffer reservation must be submitted or discarded on every path.
# * More than 512 bytes: reserve the record in the ring buffer instead.
# * A GPL-only helper in a proprietary program: find a helper that is not
#   GPL-only (`bpf_get_current_pid_tgid`).
# * XDP has no `bpf_skb_*` helpers: read the packet directly.
# * `bpf_trace_printk` takes 3 values at most; misspelt helpers are
#   undeclared functions.
# </details>

# %% [markdown]
# ## Check

# %% tags=["check"]
check("14.2", programs={name: globals()[name.upper()] for name in (
    "null_map_value", "packet_bounds", "bad_ctx", "gpl_only", "ringbuf_leak",
    "stack_512", "helper_type", "signed_index", "off_by_one", "stale_packet", "var_size",
    "str_overflow", "printk_args", "undeclared_helper", "uninit_stack", "unbounded_loop",
    "nullable_arith")})
