# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Chapter 7: XDP, packets at the driver
#
# **After this chapter you will be able to**
#
# * say where XDP runs, before the kernel has spent anything on a packet,
#   and what its five verdicts do;
# * build a private network of namespaces and veth pairs, and attach XDP
#   programs there, and nowhere else;
# * read a packet through `struct xdp_md`, with the bounds checks the
#   verifier insists on;
# * drop, pass, bounce (`XDP_TX`) and forward (`XDP_REDIRECT`, devmaps)
#   packets, rewriting headers and fixing checksums on the way;
# * tell native from generic mode, and measure what XDP costs on the
#   machine in front of you instead of quoting a brochure.
#
# Every code cell talks to the real kernel. Run them in order with the
# **eBPF (root)** kernel.

# %% [markdown]
# ## 7.1 Where XDP runs
#
# A packet that arrives on a network card normally climbs a long way: the
# driver wraps it in a socket buffer (`struct sk_buff`, a few hundred bytes of
# metadata), then come the TC hooks, netfilter, routing, and at last a
# socket. **XDP** (eXpress Data Path) hooks in *before* all of that, in the
# driver's receive loop, on the raw bytes of the frame. On a network card
# with native XDP support, whatever the program decides costs almost
# nothing more, and a dropped packet never cost an `sk_buff` allocation.
#
# Virtual interfaces bend that rule, and this chapter's labs use them. A
# veth runs native XDP on what arrives from its peer, and how it arrives
# depends on who sent it. A frame that the peer's network stack sent is
# already an `sk_buff`: the veth driver (`veth_xdp_rcv_skb()` in
# `drivers/net/veth.c`) points the XDP context at that buffer's bytes, and
# if the verdict is `XDP_DROP` it frees an allocation that was already made.
# A frame that another XDP program redirected into the veth
# (`XDP_REDIRECT`) arrives as a bare `xdp_frame`, and no `sk_buff` is made
# unless the program passes it.
#
# ```mermaid
# flowchart LR
#     NIC["NIC / veth<br/>receive"] --> X{"XDP<br/>(native)"}
#     X -->|XDP_DROP| D["freed at once"]
#     X -->|XDP_TX| NIC
#     X -->|XDP_REDIRECT| O["another interface,<br/>CPU or AF_XDP socket"]
#     X -->|XDP_PASS| S["sk_buff allocated"]
#     S --> G{"XDP<br/>(generic)"}
#     G --> T["TC ingress"] --> N["netfilter, routing"] --> K["socket"]
# ```
#
# | verdict | value | what happens |
# |---|---|---|
# | `XDP_ABORTED` | 0 | dropped, and the tracepoint `xdp:xdp_exception` fires: "my program failed" |
# | `XDP_DROP` | 1 | dropped, silently |
# | `XDP_PASS` | 2 | continues into the normal network stack |
# | `XDP_TX` | 3 | sent back out of the interface it came in on |
# | `XDP_REDIRECT` | 4 | sent out of another interface (or to another CPU, or a socket) |
#
# *Native* XDP runs in the driver and needs driver support (most 10G+ NICs,
# and veth, with the caveat above). *Generic* XDP runs a little later, once
# the `sk_buff` exists;
# it works on any interface and is much slower, but it runs the same programs.

# %%
import ctypes as ct
import json
import re
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ebpf_tutor.commands import shell_in
from ebpf_tutor import Program, net, table_df, traffic, xdp

# %% [markdown]
# ## 7.2 A network of our own
#
# An XDP program on the wrong interface can cut a machine off the network.
# So in this course XDP only ever attaches inside **network namespaces that
# the notebook creates**: private copies of the network stack, joined by
# **veth pairs** (two virtual interfaces: what enters one leaves the other).
# `net.VethPair()` makes two namespaces, `a` and `b`, with one pair between
# them. `quiet=True` switches IPv6 off and fills the ARP tables in advance,
# so the only packets on this wire are the ones we send: counts are exact.

# %%
def sandbox() -> net.VethPair:
    """The chapter's lab network: exact counts, ready for XDP_TX and redirects."""
    return net.VethPair(quiet=True, xdp_ready=True)


with sandbox() as lab:
    print("namespaces:", lab.ns)
    print("a:", lab.ifname["a"], lab.ip_a, "   b:", lab.ifname["b"], lab.ip_b)
    print(traffic.ping(lab, "a", lab.ip_b, count=3))
print("after the with block:", [n for n in net.our_namespaces() if n in lab.ns.values()])

# %% [markdown]
# The helper refuses to attach to any interface it did not create. Here it
# is asked for the host's loopback and for the interface of the host's
# default route (the machine's uplink):

# %%
uplink = net.uplink() or "eth0"
with Program("int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }") as anything:
    for ifname, what in [("lo", "<lo>"), (uplink, "<uplink>")]:
        try:
            xdp.attach(anything, "xdp_pass", None, ifname)
        except net.NotOurInterface as e:
            print("refused:", str(e).split(":")[0].replace(ifname, what))

# %% [markdown]
# ## 7.3 The context: `struct xdp_md`
#
# An XDP program receives one argument, `struct xdp_md *ctx`:
#
# | field | meaning |
# |---|---|
# | `data`, `data_end` | where the frame starts and ends (32-bit fields the verifier turns into pointers) |
# | `data_meta` | room in front of the frame for metadata passed on to TC |
# | `ingress_ifindex` | the interface the frame came in on |
# | `rx_queue_index` | the receive queue (one per CPU on real NICs) |
# | `egress_ifindex` | for programs in a devmap: where the frame is going |
#
# Our first program passes everything and counts frames by EtherType and
# IP protocol. The headers come from the kernel's `uapi` files: BCC here
# compiles against a full kernel tree, where `<linux/ip.h>` drags in
# thousands of lines (about ten times the compile time) for the same
# struct. Protocol numbers from `<linux/in.h>` cost as much, so we write
# them: 1 ICMP, 6 TCP, 17 UDP.

# %%
COUNT = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

struct key_t { u16 ethertype; u8 proto; };
BPF_HASH(frames, struct key_t, u64);
BPF_ARRAY(last_ifindex, u32, 1);

int xdp_count(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct key_t key = {};
    u32 zero = 0, ifindex = ctx->ingress_ifindex;   /* copy: helpers take no ctx pointers */
    last_ifindex.update(&zero, &ifindex);

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)          /* shorter than an Ethernet header */
        return XDP_PASS;
    key.ethertype = ntohs(eth->h_proto);
    if (eth->h_proto == htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > data_end)
            return XDP_PASS;
        key.proto = ip->protocol;
    }
    frames.increment(key);
    return XDP_PASS;
}
"""

# %% [markdown]
# Attach it to `veth-b` (native mode), send 5 pings and 7 UDP datagrams from
# `a`, and read the map. The program sees only what *arrives* at `b`: the 5
# echo requests and the 7 datagrams, not the replies.

# %%
with sandbox() as lab, Program(COUNT) as count:
    with xdp.attach(count, "xdp_count", *lab.where("b"), mode="native") as att:
        print(att.mode, "mode, on", att.ifname)
        traffic.ping(lab, "a", lab.ip_b, count=5)
        with traffic.UdpFlow(lab.ns["a"], lab.ip_b, 9999) as flow:
            flow.send(7)
        time.sleep(0.1)
    counted = table_df(count["frames"])
    seen_on, veth_b = count["last_ifindex"][0].value, lab.ifindex("b")
counted["ethertype"] = counted["ethertype"].map(lambda t: f"{t:#06x}")
print(counted[["ethertype", "proto", "value"]].to_string(index=False))
print("ingress_ifindex seen:", seen_on, "| veth-b's ifindex:", veth_b)

# %% [markdown]
# ## 7.4 Bounds checks: the verifier's one rule for packets
#
# The frame is just memory between `data` and `data_end`. Every read must be
# proven, on every path, to stay below `data_end`. Leave one check out and
# the program never loads; the verifier names the instruction and the
# offending offset:

# %% tags=["raises-exception"]
Program(r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
int xdp_unsafe(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);      /* no check of ip + 1 */
    return ip->protocol == 1 ? XDP_DROP : XDP_PASS;
}
""").load_func("xdp_unsafe", Program.XDP)

# %% [markdown]
# Two habits keep the verifier happy: compare `(void *)(header + 1)` with
# `data_end` right before using a header, and re-check after anything that
# moves `data` (`bpf_xdp_adjust_head`). Variable-length headers (the IPv4
# header length `ihl`) are fine as long as the check uses the computed
# pointer.

# %% [markdown]
# ## 7.5 The verdicts, seen from the wire
#
# One program, three behaviours for ICMP, chosen with a compile-time macro.
# UDP always passes. A second program, on the tracepoint
# `xdp:xdp_exception`, counts the `XDP_ABORTED` events of our interface.

# %%
VERDICT = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
int xdp_verdict(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return XDP_PASS;
    return ip->protocol == 1 ? ICMP_VERDICT : XDP_PASS;
}
"""
EXCEPTIONS = """
BPF_ARRAY(aborted, u64, 1);
TRACEPOINT_PROBE(xdp, xdp_exception) {
    if (args->ifindex == IFINDEX) aborted.increment(0);
    return 0;
}
"""

rows = []
with sandbox() as lab, Program(EXCEPTIONS.replace("IFINDEX", str(lab.ifindex("b")))) as watch:
    for verdict in ["XDP_PASS", "XDP_DROP", "XDP_ABORTED"]:
        with Program(VERDICT, cflags=[f"-DICMP_VERDICT={verdict}"]) as prog, \
                xdp.attach(prog, "xdp_verdict", *lab.where("b")), \
                traffic.UdpSink(lab.ns["b"], 7000) as sink, \
                traffic.UdpFlow(lab.ns["a"], lab.ip_b, 7000) as flow:
            before = watch["aborted"][0].value
            pings = traffic.ping(lab, "a", lab.ip_b, count=4, wait=0.5)
            flow.send(4)
            sink.settle(idle=0.1)
            rows.append({"ICMP verdict": verdict, "pings answered": f"{pings.received}/4",
                         "UDP received": f"{sink.total}/4",
                         "xdp_exception events": watch["aborted"][0].value - before})
print(pd.DataFrame(rows).to_string(index=False))

# %% [markdown]
# `XDP_DROP` and `XDP_ABORTED` look the same from the wire. The difference
# is for you: an aborted packet is an *error*, visible to `perf`, `bpftrace`
# or, as here, another BPF program. Use `XDP_ABORTED` for "cannot happen"
# branches, so that they show up when they do.

# %% [markdown]
# ## 7.6 Native and generic mode
#
# The same program attaches in both modes; the kernel reports which one it
# got (`ip link` shows `xdp` or `xdpgeneric`). An interface holds at most one
# XDP program, in one mode.

# %%
with sandbox() as lab, Program(COUNT) as count:
    for mode in ["native", "generic"]:
        count["frames"].clear()
        with xdp.attach(count, "xdp_count", *lab.where("b"), mode=mode):
            state = xdp.state(*lab.where("b"))
            shown = lab.run_in("b", ["ip", "link", "show", lab.ifname["b"]]).stdout
            traffic.ping(lab, "a", lab.ip_b, count=3)
            time.sleep(0.1)
        icmp = sum(v.value for k, v in count["frames"].items() if k.proto == 1)
        tag = re.search(r"\b(xdp\w*)\b", shown).group(1)
        print(f"{mode:8} kernel says {state['mode']!r:10} ip link says {tag!r:13} "
              f"ICMP frames seen: {icmp}")

# %% [markdown]
# Generic mode sees the same frames, later: after the driver has built the
# `sk_buff`. It exists so that XDP programs can be developed and run on any
# interface; for speed you want native mode. We measure the difference in
# section 7.9.

# %% [markdown]
# ### The same with the standard tools
#
# `xdp.attach` is a thin guard around one netlink request. Outside this
# course you would compile the program into an object file with clang
# (libbpf's conventions: a `SEC("xdp")` function and maps in `.maps`) and
# let `ip` load and attach it; `bpftool` then shows what runs where. The
# cells below do exactly that, on the sandbox's `veth-b` (`ip -n <netns>`
# runs `ip` inside the sandbox's namespace; on your own machine you would
# name your own interface and leave `-n` out).

# %%
XDP_COUNT_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} frames SEC(".maps");

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
    __u32 zero = 0;
    __u64 *n = bpf_map_lookup_elem(&frames, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
"""
workdir = Path(tempfile.mkdtemp(prefix="ebt-ch07-"))
(workdir / "xdp_count.bpf.c").write_text(XDP_COUNT_C)


shell = shell_in(workdir)   # prints each command, returns its output


shell("clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu "
      "-c xdp_count.bpf.c -o xdp_count.bpf.o")
obj = (workdir / "xdp_count.bpf.o").read_bytes()
print("an ELF object for the BPF machine (EM_BPF = 247):",
      obj[:4] == b"\x7fELF" and struct.unpack_from("<H", obj, 18)[0] == 247)

# %%
with sandbox() as lab:
    ns, dev = lab.ns["b"], lab.ifname["b"]
    shell(f"ip -n {ns} link set dev {dev} xdpdrv obj xdp_count.bpf.o sec xdp")
    link = shell(f"ip -n {ns} link show dev {dev}")
    print("  ", re.search(r"prog/xdp.*", link).group(0).strip())
    shown = shell(f"ip netns exec {ns} bpftool net show dev {dev}")
    print("  ", re.search(r"veth-b.*", shown).group(0))
    traffic.ping(lab, "a", lab.ip_b, count=4)
    prog_id = json.loads(shell(f"ip netns exec {ns} bpftool -j net show dev {dev}"))[0]["xdp"][0]["id"]
    map_id = json.loads(shell(f"bpftool -j prog show id {prog_id}",
                              **{"prog id": str(prog_id)}))["map_ids"][0]
    dump = json.loads(shell(f"bpftool -j map dump id {map_id}", **{"map id": str(map_id)}))
    print("   frames[0] =", dump[0]["formatted"]["value"], "(the 4 echo requests that arrived at b)")
    shell(f"ip -n {ns} link set dev {dev} xdpdrv off")
    after = shell(f"ip netns exec {ns} bpftool -j net show dev {dev}")
    print("   XDP programs on the interface now:", json.loads(after)[0]["xdp"])

# %% [markdown]
# `xdpdrv` asks for native mode (`xdpgeneric` for generic, plain `xdp` for
# "native if possible"). The attachment belongs to the interface, not to
# `ip`: the command exited at once and the program kept counting until
# `xdpdrv off` (or until the interface went away). `bpftool prog show`,
# `bpftool map dump` and `bpftool net show` work on any program, whoever
# loaded it, BCC included.

# %% [markdown]
# ## 7.7 Rewriting a packet: an XDP ping responder
#
# A program may write into the frame, then send it back with `XDP_TX`. Our
# responder answers ICMP echo requests itself: swap the MAC addresses, swap
# the IP addresses, turn type 8 (request) into type 0 (reply), and fix the
# ICMP checksum.
#
# **Checksums.** IPv4, ICMP, TCP and UDP carry a 16-bit ones'-complement sum
# of their bytes. Swapping source and destination leaves the IPv4 sum as it
# was (addition does not care about order). Changing one 16-bit word from
# `old` to `new` changes the checksum incrementally (RFC 1624):
# `csum' = ~(~csum + ~old + new)`, folded back to 16 bits. Here the word
# `type,code` goes from `0x0800` to `0x0000`. (`bpf_csum_diff` computes the
# same for larger changes; TC programs also have `bpf_l3_csum_replace`.)
#
# To be sure who answers, the kernel of `b` is told to ignore pings.

# %%
RESPONDER = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

struct icmp_echo { u8 type; u8 code; __sum16 checksum; __be16 id; __be16 seq; };
BPF_ARRAY(answered, u64, 1);

static __always_inline __sum16 csum_replace16(__sum16 csum, __be16 old, __be16 new) {
    u32 sum = (u16)~csum + (u16)~old + (u16)new;      /* RFC 1624, eqn. 3 */
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

int xdp_responder(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->protocol != 1 || ip->ihl != 5)
        return XDP_PASS;
    struct icmp_echo *icmp = (void *)(ip + 1);
    if ((void *)(icmp + 1) > data_end || icmp->type != 8)
        return XDP_PASS;

    u8 mac[ETH_ALEN];                                  /* swap Ethernet addresses */
    __builtin_memcpy(mac, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
    __be32 addr = ip->saddr;                           /* swap IP addresses */
    ip->saddr = ip->daddr;
    ip->daddr = addr;
    icmp->type = 0;                                    /* echo reply */
    icmp->checksum = csum_replace16(icmp->checksum, htons(0x0800), htons(0x0000));
    answered.increment(0);
    return XDP_TX;
}
"""

# %% [markdown]
# On `a`, a second small program counts the replies that arrive. It has a
# practical role too: a veth delivers `XDP_TX` frames promptly only to a peer
# that runs XDP itself (without one, they wait in a queue until the next
# packet wakes it up).

# %%
ARRIVALS = r"""
BPF_ARRAY(arrived, u64, 1);
int xdp_arrivals(struct xdp_md *ctx) { arrived.increment(0); return XDP_PASS; }
"""

with sandbox() as lab, Program(RESPONDER) as responder, Program(ARRIVALS) as arrivals:
    lab.sysctl("b", "net.ipv4.icmp_echo_ignore_all", 1)
    print("b's kernel ignores pings. Without XDP:", traffic.ping(lab, "a", lab.ip_b, count=3, wait=0.5))
    with xdp.attach(responder, "xdp_responder", *lab.where("b")), \
            xdp.attach(arrivals, "xdp_arrivals", *lab.where("a")):
        result = traffic.ping(lab, "a", lab.ip_b, count=5)
    print("With the XDP responder:", result)
    print("answered by XDP on b:", responder["answered"][0].value,
          "| frames arriving at a:", arrivals["arrived"][0].value)

# %% [markdown]
# `ping` accepted every reply: addresses and checksum are right, or the
# kernel of `a` would have dropped them. The replies left through `veth-b`
# without `b`'s stack ever seeing the requests.
#
# Two more veth details, both handled by `xdp_ready=True` in our sandbox: a
# veth accepts redirected frames only if GRO is on at the receiving end (or
# it runs XDP), and TX checksum offload must be off. A locally sent TCP or
# UDP packet normally carries only a *partial* checksum, for the hardware to
# finish; a frame that XDP redirects loses that note and arrives with a
# wrong sum. Real NICs deliver complete checksums, so both are quirks of
# virtual test networks like ours, but they are the first thing to check
# when a program works in generic mode and not in native mode.

# %% [markdown]
# ## 7.8 Redirect: an XDP router
#
# `XDP_REDIRECT` sends a frame out of *another* interface, straight from
# the driver. The target comes from `bpf_redirect(ifindex, 0)`, or from a
# **devmap** (`BPF_DEVMAP`), a map of interfaces that lets the kernel batch
# frames per target: `tx_port.redirect_map(key, 0)`.
#
# Which interface, and which MAC addresses? The kernel already knows:
# `bpf_fib_lookup()` asks its routing table and neighbour cache. With it, a
# router fits in one page: look the destination up, decrement the TTL (and
# patch the IP checksum), rewrite both MACs, redirect. We put it on both
# inner interfaces of a router namespace between two hosts, and compare with
# the kernel's own forwarding counter.
#
# A devmap holds interface *indexes*, and the kernel resolves an index in the
# network namespace of the process that writes the entry. Written from the
# notebook (the host namespace), index 2 would be this machine's own network
# card. `xdp.devmap_add()` therefore writes from inside the router's
# namespace, and only for interfaces of our sandbox.

# %%
ROUTER = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#define AF_INET 2

BPF_DEVMAP(tx_port, 64);             /* key: ifindex, value: ifindex */
BPF_ARRAY(forwarded, u64, 1);

int xdp_router(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
        return XDP_PASS;                           /* let the kernel send "time exceeded" */

    struct bpf_fib_lookup fib = {};
    fib.family = AF_INET;
    fib.ipv4_src = ip->saddr;
    fib.ipv4_dst = ip->daddr;
    fib.tos = ip->tos;
    fib.l4_protocol = ip->protocol;
    fib.tot_len = ntohs(ip->tot_len);
    fib.ifindex = ctx->ingress_ifindex;
    if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
        return XDP_PASS;                           /* local, unknown, no neighbour: kernel */

    ip->ttl--;                                     /* TTL is the high byte of a 16-bit word */
    u32 sum = ip->check + htons(0x0100);
    ip->check = sum + (sum >> 16);
    __builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
    forwarded.increment(0);
    return tx_port.redirect_map(fib.ifindex, 0);
}
"""


def forwarded_by_kernel(lan: net.Star) -> int:
    """ForwDatagrams of the router's IP statistics (/proc/net/snmp)."""
    snmp = lan.run_in("router", ["cat", "/proc/net/snmp"]).stdout.splitlines()
    names, values = [ln.split()[1:] for ln in snmp if ln.startswith("Ip:")][:2]
    return int(values[names.index("ForwDatagrams")])


# %%
with net.Star(["left", "right"], hub="router") as lan, Program(ROUTER) as router:
    inner = [lan.hub_if["left"], lan.hub_if["right"]]
    for ifname in inner:
        xdp.devmap_add(router["tx_port"], *lan.where("router", ifname))
    rows = []
    for with_xdp in [False, True]:
        kernel_before, xdp_before = forwarded_by_kernel(lan), router["forwarded"][0].value
        attachments = [xdp.attach(router, "xdp_router", *lan.where("router", i)) for i in inner] \
            if with_xdp else []
        pings = traffic.ping(lan, "left", lan.ip["right"], count=10)
        for a in attachments:
            a.detach()
        rows.append({"XDP router": "on" if with_xdp else "off",
                     "pings answered": f"{pings.received}/10",
                     "forwarded by the kernel": forwarded_by_kernel(lan) - kernel_before,
                     "forwarded by XDP": router["forwarded"][0].value - xdp_before})
print(pd.DataFrame(rows).to_string(index=False))

# %% [markdown]
# 10 requests and 10 replies: 20 packets crossed the router either way.
# With the program attached, the router's IP layer forwarded none of them:
# each frame went from one veth's receive path to the other's transmit path
# with no routing decision in the stack and no netfilter. It was not free of
# `sk_buff`s, though: the hosts' stacks sent these pings, so each one
# reached the router's veth already in an `sk_buff` (section 7.1). On a
# network card with native XDP the same program would have handled bare
# frames.
# Lab 7.2 uses the same moves (rewrite the MACs, redirect) to build a load
# balancer.

# %% [markdown]
# ## 7.9 How fast is it here?
#
# The outline this course follows promises "line-rate processing (15+
# Mpps)". That figure belongs to a server NIC with many queues and cores.
# This notebook runs on a **veth pair inside a 2-core VM** that other work
# shares, so we measure, briefly, what XDP does *here*.
#
# **The program alone.** `BPF_PROG_TEST_RUN` runs a loaded program on one
# frame a million times in the kernel, no interface involved, and reports
# the time per run.

# %%
DROP = r"""
BPF_PERCPU_ARRAY(dropped, u64, 1);
int xdp_drop(struct xdp_md *ctx) {
    u32 zero = 0;
    u64 *n = dropped.lookup(&zero);
    if (n)
        *n += 1;
    return XDP_DROP;
}
"""
frame = traffic.udp_frame("02:00:00:00:00:0a", "02:00:00:00:00:0b", "10.200.0.1", "10.200.0.2",
                      40000, 9, bytes(18))
with Program(DROP) as drop:
    run = xdp.test_run(drop, "xdp_drop", frame, repeat=1_000_000)
print(f"verdict: {run.action}, frame of {len(frame)} bytes")

# %% tags=["nbval-ignore-output"]
print(f"{run.ns_per_run} ns per run: at most {1e3 / max(run.ns_per_run, 1):.0f} Mpps per core "
      "for the program itself")

# %% [markdown]
# **On the wire.** To load a veth harder than a Python loop can,
# `xdp.flood()` uses the same test-run command in its *live frames* mode:
# the kernel runs a one-line generator program (`XDP_REDIRECT` to `veth-a`)
# on 200,000 copies of the frame, which arrive at `veth-b` like any
# received traffic. We count what `veth-b` dropped, for each way of
# dropping: XDP native, XDP generic, and no XDP at all (the frames climb the
# stack to a UDP port nobody listens on). Each run is bounded by its frame
# count: a fraction of a second for XDP, a second or two for the stack.

# %%
N_FRAMES = 200_000


def measure(lab: net.VethPair, drop: Program, mode: str | None) -> dict:
    """Flood veth-b with N_FRAMES frames; count what it discarded, and how fast."""
    frame = traffic.udp_frame(lab.mac("a"), lab.mac("b"), lab.ip_a, lab.ip_b, 40000, 9, bytes(18))
    drop["dropped"].clear()
    rx_before = lab.stats("b")["rx_packets"]
    if mode:
        with xdp.attach(drop, "xdp_drop", *lab.where("b"), mode=mode):
            seconds = xdp.flood(*lab.where("a"), frame, N_FRAMES)
        handled = sum(drop["dropped"][0])
    else:
        seconds = xdp.flood(*lab.where("a"), frame, N_FRAMES)
        handled = lab.stats("b")["rx_packets"] - rx_before
    return {"how": f"XDP {mode}" if mode else "no XDP (stack)", "frames": handled,
            "seconds": seconds, "Mpps": handled / seconds / 1e6}


with sandbox() as lab, Program(DROP) as drop:
    speed = pd.DataFrame([measure(lab, drop, m) for m in ["native", "generic", None]])
print("every frame accounted for:", bool((speed["frames"] == N_FRAMES).all()))

# %% tags=["nbval-ignore-output"]
print(speed.round(3).to_string(index=False))
ax = speed.plot.barh(x="how", y="Mpps", legend=False, figsize=(6, 2.2), color="#4C72B0")
ax.invert_yaxis()
ax.set_xlabel("million packets per second dropped (veth, 2-core VM)")
ax.set_ylabel("")
plt.tight_layout()

# %% [markdown]
# What the numbers say, honestly:
#
# * On this machine the program costs some tens of nanoseconds per packet:
#   tens of Mpps *per core* if nothing else had to happen.
# * Through a veth, a few Mpps at most: the generator, the veth and the
#   program share one CPU, and a veth is a software device. That is far from
#   15 Mpps, and it says nothing about a real NIC.
# * The order holds everywhere: native XDP drops faster than generic XDP,
#   and both beat letting the stack discard the packet (by how much on this
#   run: the table above; it moves with the machine and its load). The
#   flood's frames come from an XDP generator (`XDP_REDIRECT`), so they
#   reach `veth-b` as bare frames: native XDP drops them before any
#   `sk_buff` exists, generic XDP only after one was built. The cheapest
#   packet is the one dropped before an `sk_buff` exists.
#
# To check the brochure's figure you need a NIC with native XDP, a traffic
# generator on another machine, and one receive queue per core.

# %% [markdown]
# ## Recap
#
# * XDP runs in the driver on raw frames, before the driver builds an
#   `sk_buff` (on a veth, frames the peer's stack sent arrive already in
#   one); it returns a verdict: `ABORTED`, `DROP`, `PASS`, `TX` or
#   `REDIRECT`.
# * `ctx->data` and `ctx->data_end` bound the frame; the verifier accepts a
#   read only after a comparison with `data_end` covers it.
# * Rewriting a frame means keeping its checksums right; an incremental
#   update (RFC 1624) costs a few instructions.
# * `bpf_redirect` and devmaps forward frames between interfaces;
#   `bpf_fib_lookup` borrows the kernel's routes and neighbours.
# * Native mode is the fast one; generic mode runs anywhere. Measure on
#   your own hardware before you believe a packet rate.
#
# **Questions to test yourself**
#
# 1. Why can a program not read `ip->protocol` right after checking only
#    that the Ethernet header fits?
# 2. Swapping the source and destination IP addresses leaves the IPv4
#    checksum unchanged. Why?
# 3. Your XDP load balancer works in generic mode but not in native mode on
#    a veth. Name two reasons this chapter showed.
# 4. Which verdict would you return for a packet your parser considers
#    impossible, and how would you notice it in production?
#
# <details><summary>Answers (try first, then click to open)</summary>
#
# 1. The verifier knows only what a comparison with `data_end` proved: after
#    `eth + 1 <= data_end`, the first 14 bytes. `ip->protocol` is byte 23 of
#    the frame, and a 14-byte frame is legal on the wire, so the read could
#    run past the packet. Check `(void *)(ip + 1) > data_end` first
#    (section 7.4 shows the refusal).
# 2. The checksum is a ones'-complement *sum* of the header's 16-bit words,
#    and a sum does not depend on the order of its terms. Swapping the two
#    addresses moves four words around without changing any of them.
# 3. Section 7.7: a veth delivers redirected (and `XDP_TX`) frames only to a
#    peer that runs an XDP program itself or has GRO on; and locally sent
#    TCP/UDP packets carry only a partial checksum (TX offload), which a
#    frame loses when native XDP redirects it, so it arrives with a wrong
#    sum. Generic mode works on the `sk_buff` and avoids both.
# 4. `XDP_ABORTED`: it drops the packet like `XDP_DROP`, and also fires the
#    tracepoint `xdp:xdp_exception` (with the interface and the program), so
#    a counter on that tracepoint (section 7.5, `perf`, `bpftrace`) tells you
#    when the "impossible" happens.
#
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 7.1 | DDoS protection: a per-source rate limit that drops a flood and spares everyone else | `labs/ch07/lab_7_1_ddos_protection.ipynb` |
# | 7.2 | an L4 load balancer: VIP, flow hash, MAC rewrite and redirect to 3 backends | `labs/ch07/lab_7_2_load_balancer.ipynb` |
# | 7.3 | packet sampling: 1 in N frames to a ring buffer, decoded in Python | `labs/ch07/lab_7_3_packet_sampling.ipynb` |
#
# Each lab ends with a check cell. `ebpf-tutor progress` shows what you have
# passed; the solutions are in `solutions/ch07/`.
