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
#   2<sup>s-1</sup> ≤ n < 2<sup>s</sup>.
# * Interfaces and their names belong to a network namespace: the name
#   `veth-b` only means something inside namespace `b`. The check (and the
#   try cell below) calls your `attach()` from inside it.

# %%
import os

from bcc import BPF

from ebpf_tutor import Program, log2_hist_df, plot_log2_hist
from ebpf_tutor.labs import check
from ebpf_tutor.net import VethPair, inside

# %% [markdown]
# ## Your program
#
# Complete the TODOs in the C program and in `attach()`. Keep the names: the
# check looks for the function `packet_size` and the map `sizes`.

# %% tags=["answer"]
PROGRAM = r"""
// TODO 1: declare a log2 histogram named `sizes`
// BEGIN SOLUTION
BPF_HISTOGRAM(sizes);
// END SOLUTION

int packet_size(struct __sk_buff *skb) {
    // TODO 2: add one to the slot of this packet's length
    // BEGIN SOLUTION
    sizes.increment(bpf_log2l(skb->len));
    // END SOLUTION
    return 0;   // keep nothing: this socket only counts
}
"""


def attach(prog: Program, ifname: str) -> None:
    """Attach `packet_size` from `prog` to interface `ifname` as a socket filter."""
    # TODO 3: load packet_size as a socket filter, attach it to a raw socket on ifname
    # BEGIN SOLUTION
    fn = prog.load_func("packet_size", BPF.SOCKET_FILTER)
    BPF.attach_raw_socket(fn, ifname)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# `BPF_HISTOGRAM(sizes);` declares the 64 slots.
# `sizes.increment(bpf_log2l(skb->len));` adds one to the right slot: the
# index is the slot, the increment is 1 (not the length).
# </details>
#
# <details><summary>Hint 2</summary>
#
# ```python
# fn = prog.load_func("packet_size", BPF.SOCKET_FILTER)
# BPF.attach_raw_socket(fn, ifname)
# ```
# Use the `ifname` you are given: `"lo"` or the host's interface would see
# other traffic (or none).
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
