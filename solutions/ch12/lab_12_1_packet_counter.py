# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 12.1: A high-performance packet counter
#
# **Objective.** Count the packets and bytes an interface receives, exactly,
# while two CPUs deliver packets at the same time, in two ways: one
# **per-CPU** slot per CPU (`BPF_PERCPU_ARRAY`), and one **shared** slot
# updated with atomic adds (`BPF_ARRAY` + `__sync_fetch_and_add`). Then
# read the per-CPU counter from Python, summing its slots. The `try` cell
# measures what each way costs per packet.
#
# **Expected observation.** The check builds a veth pair in two fresh
# network namespaces and attaches your `count_packets` (generic XDP) to
# the receiving end. Two senders, one pinned to each CPU, each send a
# random number of one-byte UDP datagrams (43-byte frames) at the same
# moment, three times. A veth hands a packet to the receiver on the *sending*
# CPU, so your program runs on both CPUs at once. Both counters must be
# exact: as many packets and bytes as were sent, not one fewer; each CPU's
# per-CPU slot must hold what that CPU's sender sent; `read_counters` must
# give the sums; and every packet must still reach the receiver's stack.
#
# **You will use:** `BPF_PERCPU_ARRAY`, `BPF_ARRAY`, `__sync_fetch_and_add`,
# `ctx->data_end - ctx->data`, a per-CPU map's value in BCC (one value per CPU).

# %% [markdown]
# ## Background
#
# * `x += 1` on a map value compiles to three instructions: load, add,
#   store. Two CPUs that load the same old value both store old + 1: one
#   count is lost. The chapter measured it.
# * `__sync_fetch_and_add(&x, n)` is one atomic instruction (`lock add` on
#   x86): no count is lost, but every CPU writes the same cache line, which
#   then travels between CPUs at every update.
# * A `BPF_PERCPU_ARRAY` gives each CPU its own copy of every value. A
#   program only ever sees the copy of the CPU it runs on, and a program
#   is not interrupted by another run of itself on the same CPU, so plain
#   adds are exact there. User space reads all copies and adds them up.
# * In BCC, a per-CPU map's value is a list with one entry per possible
#   CPU: `prog["per_cpu"][0]` is that list.

# %%
import sys

from ebpf_tutor import Program, xdp
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program

# %% tags=["answer"]
PROGRAM = r"""
struct counters {
    u64 packets;
    u64 bytes;
};
BPF_PERCPU_ARRAY(per_cpu, struct counters, 1);    /* one slot per CPU */
BPF_ARRAY(shared, struct counters, 1);            /* one slot for all CPUs */

int count_packets(struct xdp_md *ctx) {
    u64 len = ctx->data_end - ctx->data;          /* the whole frame, Ethernet header on */
    int zero = 0;
    // TODO 1: in per_cpu (this CPU's own slot), add 1 to packets and len to bytes
    // BEGIN SOLUTION
    struct counters *mine = per_cpu.lookup(&zero);
    if (mine) {
        mine->packets += 1;
        mine->bytes += len;
    }
    // END SOLUTION
    // TODO 2: in shared (the slot every CPU updates), the same, without losing counts
    // BEGIN SOLUTION
    struct counters *all = shared.lookup(&zero);
    if (all) {
        __sync_fetch_and_add(&all->packets, 1);
        __sync_fetch_and_add(&all->bytes, len);
    }
    // END SOLUTION
    return XDP_PASS;
}
"""


# %% tags=["answer"]
def read_counters(prog: Program) -> dict:
    """The per_cpu counter's totals over all CPUs: {"packets": n, "bytes": n}."""
    # TODO 3: prog["per_cpu"][0] is a list of struct counters, one per CPU: sum them
    # BEGIN SOLUTION
    slots = prog["per_cpu"][0]
    return {"packets": sum(s.packets for s in slots), "bytes": sum(s.bytes for s in slots)}
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Two ways to be exact when two CPUs count at once: give each CPU a counter
# nobody else touches (then a plain add is safe, and you add the counters
# up when you read), or make each add indivisible. The per-CPU map does the
# first for you; `__sync_fetch_and_add` does the second.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `struct counters *c = per_cpu.lookup(&zero);` then `if (c) { ... }`:
#   the verifier insists on the NULL test.
# * `__sync_fetch_and_add(&c->packets, 1);` adds atomically.
# * In Python, `prog["per_cpu"][0]` is a list with one `struct counters`
#   per CPU: `sum(s.packets for s in ...)`.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# struct counters *mine = per_cpu.lookup(&zero);
# if (mine) {
#     mine->packets += 1;
#     mine->bytes += len;
# }
# ```
# and for `shared`, the same lookup with `__sync_fetch_and_add(&all->packets, 1)`
# and `__sync_fetch_and_add(&all->bytes, len)`. If the check says the shared
# counter lost a few hundred packets, one of its adds is a plain `+=`.
# </details>

# %% [markdown]
# ## Try it: what each way costs
#
# The kernel's run-time statistics (`BPF_ENABLE_STATS`) time every run of a
# program. Two one-line variants of the count, each in its own program on
# the same interface, under the same two-CPU load: which is cheaper per
# packet, the per-CPU add or the atomic add to one shared line?

# %% tags=["try"]
from ebpf_tutor.bpfsys.stats import ProgStats, run_time_stats
from ebpf_tutor.contention import udp_blast, usable_cpus
from ebpf_tutor.sandbox.net import VethPair

VARIANTS = {
    "per-CPU": "BPF_PERCPU_ARRAY(c, u64, 1);\n"
               "int f(struct xdp_md *ctx) { int z = 0; u64 *v = c.lookup(&z); "
               "if (v) *v += 1; return XDP_PASS; }",
    "atomic": "BPF_ARRAY(c, u64, 1);\n"
              "int f(struct xdp_md *ctx) { int z = 0; u64 *v = c.lookup(&z); "
              "if (v) __sync_fetch_and_add(v, 1); return XDP_PASS; }",
}
with VethPair(quiet=True) as lab, run_time_stats():
    for name, src in VARIANTS.items():
        with Program(src) as p, xdp.attach(p, "f", *lab.where("b"), mode="generic") as att:
            before = ProgStats.of(p.funcs[b"f"].fd)
            udp_blast(lab.ns["a"], lab.ip_b, 9, 100_000, cpus=usable_cpus()[:2])
            used = ProgStats.of(p.funcs[b"f"].fd) - before
            print(f"{name:8} {used.run_cnt} runs, {used.ns_per_run:.0f} ns per packet")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("12.1", program=PROGRAM, read_counters=read_counters)
