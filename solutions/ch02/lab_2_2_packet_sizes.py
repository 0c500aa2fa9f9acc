# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 2.2: A packet-size histogram
#
# **Objective.** Build a log2 histogram of the sizes of the packets that
# cross one network interface, in the kernel, with a socket filter; then
# draw it.
#
# **Expected observation.** The check makes two private network namespaces,
# `a` and `b`, joined by a veth pair, and silences them (no IPv6, no ARP).
# It calls your `attach()` *inside* namespace `b` with the name of `b`'s
# interface, then sends UDP datagrams from `a` whose Ethernet frames are 60,
# 64, 127, 128, 300, 1000 and 1514 bytes long, a random number of each. Your
# histogram `sizes` must then count exactly those frames, each in its log2
# slot: 60 in slot 6 (32–63), 64 and 127 in slot 7 (64–127), 128 in slot 8,
# and so on.
#
# **Stretch goal (optional, checked if present).** An array `total_bytes`
# of one `u64`: the sum of the lengths of all the frames seen. The check
# compares it with the bytes it sent.
#
# **You will use:** a `SOCKET_FILTER` program, `struct __sk_buff`,
# `BPF_HISTOGRAM`, `bpf_log2l`, `BPF.attach_raw_socket`, `log2_hist_df` and
# `plot_log2_hist`.

# %% [markdown]
# ## Background
#
# * A **socket filter** is a BPF program attached to a socket. The kernel
#   runs it on every packet the socket would receive; its return value says
#   how many bytes of the packet to keep (0 drops it *for that socket only*).
#   Nothing else on the machine is affected, which makes it a safe way to
#   watch traffic.
# * BCC's `BPF.attach_raw_socket(fn, ifname)` opens a raw packet socket bound
#   to one interface, which receives every frame in and out of it, and
#   attaches `fn` to it. `fn` comes from
#   `prog.load_func("packet_size", BPF.SOCKET_FILTER)`.
# * The program gets a `struct __sk_buff *skb`; `skb->len` is the length of
#   the whole frame, Ethernet header included.
# * `BPF_HISTOGRAM(sizes)` is an array of 64 counters, and
#   `bpf_log2l(n)` gives the slot for `n`: slot *s* holds
#   2<sup>s-1</sup> ≤ n < 2<sup>s</sup> (and n = 0 lands in slot 1, with
#   n = 1: BCC defines `bpf_log2l(n)` as `bpf_log2(n) + 1`).
# * Packets can be processed on several CPUs at once: update shared
#   counters with `atomic_increment(index)` (or `atomic_increment(index,
#   amount)`), not `increment()`, whose `+=` two CPUs can interleave.
# * Interfaces and their names belong to a network namespace: the name
#   `veth-b` only means something inside namespace `b`. The check (and the
#   try cell below) calls your `attach()` from inside it.

# %%
import os

from bcc import BPF

from ebpf_tutor import Program, log2_hist_df, plot_log2_hist
from ebpf_tutor.labs import check
from ebpf_tutor.sandbox.net import VethPair, inside

# %% [markdown]
# ## Your program
#
# Write the C program (the map and the function) and complete `attach()`.
# Keep the names: the check looks for the function `packet_size` and the map
# `sizes`.

# %% tags=["answer"]
PROGRAM = r"""
// TODO 1: declare a log2 histogram named `sizes`
// TODO 2: write `int packet_size(struct __sk_buff *skb)`: add one to the
//         slot of this frame's length, and return 0 (keep nothing: this
//         socket only counts)
// Stretch: an array `total_bytes` of one u64 that adds up the lengths
// BEGIN SOLUTION
BPF_HISTOGRAM(sizes);
BPF_ARRAY(total_bytes, u64, 1);

int packet_size(struct __sk_buff *skb) {
    sizes.atomic_increment(bpf_log2l(skb->len));
    total_bytes.atomic_increment(0, skb->len);
    return 0;
}
// END SOLUTION
"""


def attach(prog: Program, ifname: str) -> None:
    """Attach `packet_size` from `prog` to interface `ifname` as a socket filter."""
    # TODO 3: load packet_size as a socket filter, attach it to a raw socket on ifname
    # BEGIN SOLUTION
    fn = prog.load_func("packet_size", BPF.SOCKET_FILTER)
    BPF.attach_raw_socket(fn, ifname)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# A histogram is an array whose index is a *bucket*, not a value: turn the
# frame's length into its power-of-two bucket, and add one (not the length)
# to that bucket. The program only counts, so it keeps no bytes of the
# packet for the socket. On the Python side: the function must be loaded as
# the right program type, then put on a socket that sees the interface you
# are given, and only that one.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `BPF_HISTOGRAM(name);` declares 64 `u64` slots; `bpf_log2l(n)` is the
#   slot of `n`; `name.atomic_increment(index)` adds one.
# * `skb->len` is the whole frame's length, Ethernet header included.
# * `prog.load_func("packet_size", BPF.SOCKET_FILTER)` loads the function;
#   `BPF.attach_raw_socket(fn, ifname)` opens a raw socket on `ifname` and
#   attaches it.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# BPF_HISTOGRAM(sizes);
#
# int packet_size(struct __sk_buff *skb) {
#     sizes.atomic_increment(/* the slot of skb->len */);
#     return 0;
# }
# ```
# and in `attach()`: `fn = prog.load_func(...)`, then
# `BPF.attach_raw_socket(fn, ifname)` with the `ifname` you are given
# (`"lo"` or the host's interface would see other traffic, or none).
# </details>

# %% [markdown]
# ## Try it
#
# Ping from `a` to `b` with three payload sizes and draw what the filter on
# `veth-b` saw: requests and replies, plus what the namespaces say to each
# other by themselves (ARP before the first ping, perhaps some IPv6
# neighbour discovery). BCC 0.26 never closes the raw socket that `attach_raw_socket`
# opens (`fn.sock`); close it yourself, or it keeps the program and the
# namespace alive.

# %% tags=["try"]
with VethPair() as lab, Program(PROGRAM) as prog:
    with inside(lab.ns["b"]):
        attach(prog, lab.ifname["b"])
    for size in (56, 400, 1400):
        lab.run_in("a", ["ping", "-c", "3", "-i", "0.01", "-s", str(size), lab.ip_b])
    hist = log2_hist_df(prog["sizes"])
    for fn in prog.funcs.values():
        if getattr(fn, "sock", None) is not None:
            os.close(fn.sock)
plot_log2_hist(hist, unit="bytes", title="frames on veth-b");
hist[hist["count"] > 0]

# %% [markdown]
# ## Check

# %% tags=["check"]
check("2.2", program=PROGRAM, attach=attach)
