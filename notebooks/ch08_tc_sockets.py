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
# # Chapter 8: TC and socket-level networking
#
# **After this chapter you will be able to**
#
# * say where the TC hooks sit, next to XDP: after the `sk_buff` exists, on
#   the way in *and* on the way out, with the socket in reach;
# * attach a direct-action program to the `clsact` qdisc of an interface,
#   read `struct __sk_buff`, and return `TC_ACT_OK`, `TC_ACT_SHOT` or
#   `TC_ACT_REDIRECT`;
# * rewrite a packet with `bpf_skb_store_bytes` and keep its checksums right
#   with `bpf_l3_csum_replace` / `bpf_l4_csum_replace`;
# * tell policing from shaping, steer flows into `htb` classes, and explain
#   what an EDT timestamp (`skb->tstamp`) needs to mean anything;
# * filter what one socket sees (socket filters), and move data between
#   sockets without the TCP/IP stack (SOCKMAP, `sk_msg`).
#
# Every code cell talks to the real kernel. Run them in order with the
# **eBPF (root)** kernel.

# %% [markdown]
# ## 8.1 Where TC sits
#
# *TC* is Linux's traffic control layer: the queues (qdiscs) in front of
# every interface, and the classifiers that sort packets into them. Since
# Linux 4.1 a classifier can be a BPF program, and the `clsact` qdisc gives
# such programs two hooks per interface that need no queue at all:
#
# ```mermaid
# flowchart LR
#     subgraph in["receive"]
#       NIC1["NIC / veth"] --> X{"XDP"} --> SKB["sk_buff<br/>allocated"] --> TI{"TC ingress"} --> IP1["netfilter,<br/>routing"] --> S1["socket"]
#     end
#     subgraph out["send"]
#       S2["socket"] --> IP2["routing,<br/>netfilter"] --> TE{"TC egress"} --> Q["root qdisc<br/>(tbf, htb, fq...)"] --> NIC2["NIC / veth"]
#     end
# ```
#
# | | XDP | TC (clsact) |
# |---|---|---|
# | runs | in the driver, before any `sk_buff` | once the `sk_buff` exists |
# | directions | receive only | ingress **and** egress |
# | context | `struct xdp_md`: the frame's bytes | `struct __sk_buff`: bytes plus metadata (mark, priority, tstamp, the socket...) |
# | on egress | (nothing) | sees what the local stack sends, after routing, before the queue |
# | cost per packet | lowest | an `sk_buff` was already paid for |
# | typical use | drop floods, load-balance at line rate | policy, rewriting, redirecting, marking, pacing |
#
# A TC program is a *filter*. In **direct-action** mode (the only one this
# course uses) its return value is the verdict:
#
# | verdict | value | what happens |
# |---|---|---|
# | `TC_ACT_OK` | 0 | the packet continues |
# | `TC_ACT_SHOT` | 2 | dropped |
# | `TC_ACT_REDIRECT` | 7 | sent where `bpf_redirect()` said: another interface's egress or ingress |
# | `TC_ACT_UNSPEC` | -1 | "no opinion": the next filter of the hook decides |

# %%
import ctypes as ct
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ebpf_tutor.commands import shell_in
from ebpf_tutor import Program, bpfsys, flows, net, packets, tc

# %% [markdown]
# ## 8.2 A first program, both directions
#
# The lab network is the one of Chapter 7: `net.VethPair()` makes two
# fresh network namespaces, `a` and `b`, joined by a veth pair. `tc.attach`
# loads a function as a `SCHED_CLS` program, adds the `clsact` qdisc to the
# interface and puts the program on one of its hooks; it refuses any
# interface the sandbox did not create. One program with two functions
# counts IPv4 packets by protocol, one counter per direction.

# %%
COUNT = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

struct key_t { u8 direction; u8 proto; };      /* 0 = ingress, 1 = egress */
BPF_HASH(packets_seen, struct key_t, u64);

static __always_inline int count(struct __sk_buff *skb, u8 direction) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return TC_ACT_OK;
    struct key_t key = {.direction = direction, .proto = ip->protocol};
    packets_seen.increment(key);
    return TC_ACT_OK;
}

int tc_ingress(struct __sk_buff *skb) { return count(skb, 0); }
int tc_egress(struct __sk_buff *skb)  { return count(skb, 1); }
"""

# %% [markdown]
# Both functions go on veth-a, in namespace `a`. Then `a` pings `b` 3 times
# and sends 5 UDP datagrams to a socket listening in `b`: the pings go out
# and their replies come in; the datagrams only go out. (With nobody
# listening, `b` would answer each datagram with an ICMP "port unreachable",
# which the ingress counter would see too.)

# %%
with net.VethPair() as lab, Program(COUNT) as prog, flows.UdpSinks(lab.ns["b"], [9000]):
    where = (lab.ns["a"], lab.ifname["a"])
    with tc.attach(prog, "tc_ingress", *where, "ingress") as f_in, \
            tc.attach(prog, "tc_egress", *where, "egress") as f_out:
        for f in tc.filters(*where):
            print(f"{f['direction']:8} prio {f['prio']}: {f['name']} "
                  f"(direct-action: {f['direct_action']})")
        replies = flows.icmp_echo(lab.ns["a"], lab.ip_b, 3)
        flows.udp_send(lab.ns["a"], lab.ip_b, 9000, 5)
        time.sleep(0.1)
    print("after the with block:", tc.filters(*where) or "no filters left")
    seen = {(k.direction, k.proto): v.value for k, v in prog["packets_seen"].items()}
names = {1: "ICMP", 6: "TCP", 17: "UDP"}
print(f"\n{replies} of 3 pings answered")
for (direction, proto), n in sorted(seen.items()):
    print(f"{['ingress', 'egress'][direction]:8} {names.get(proto, proto):5} {n}")

# %% [markdown]
# 3 ICMP out (requests), 3 in (replies), 5 UDP out and none in. An XDP
# program on the same interface would have seen only the 3 replies.
#
# Two details of the machinery:
#
# * a filter holds its own reference to the program. Closing the `Program`
#   does **not** detach it; deleting the filter (the `with` block does) or
#   the interface does. `tc.filters()` reads what is attached back from
#   the kernel (`tc filter show dev veth-a egress` in a shell);
# * pyroute2 0.9's blocking API runs an asyncio loop of its own, which
#   collides with Jupyter's; every netlink call of the helpers goes through
#   `net.netlink()`, which runs it on a thread of its own.

# %% [markdown]
# ### The same with the standard tools
#
# What `tc.attach` does is what the `tc` command does. Compiled by clang
# into an object file (a `SEC("tc")` function, maps in `.maps`, as libbpf
# expects), a program goes on an interface in three commands: add the
# `clsact` qdisc, add a `bpf` filter in direct-action mode (`da`) on a
# hook, and look. The cells run them inside the sandbox's namespace
# (`tc -n <netns>`); on your own machine you would drop `-n`.

# %%
TC_COUNT_C = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} sent SEC(".maps");

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
    __u32 zero = 0;
    __u64 *n = bpf_map_lookup_elem(&sent, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
"""
workdir = Path(tempfile.mkdtemp(prefix="ebt-ch08-"))
(workdir / "tc_count.bpf.c").write_text(TC_COUNT_C)


shell = shell_in(workdir)   # prints each command, returns its output


shell("clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu "
      "-c tc_count.bpf.c -o tc_count.bpf.o")
print("tc_count.bpf.o written:", (workdir / "tc_count.bpf.o").exists())

# %%
with net.VethPair(quiet=True) as lab:
    ns, dev = lab.ns["a"], lab.ifname["a"]
    shell(f"tc -n {ns} qdisc add dev {dev} clsact")
    shell(f"tc -n {ns} filter add dev {dev} egress bpf da obj tc_count.bpf.o sec tc")
    listed = shell(f"tc -n {ns} filter show dev {dev} egress")
    print("  ", listed.splitlines()[-1].strip())
    shown = shell(f"ip netns exec {ns} bpftool net show dev {dev}")
    print("  ", re.search(r"veth-a.*", shown).group(0))
    flows.icmp_echo(ns, lab.ip_b, 3)
    prog_id = json.loads(shell(f"ip netns exec {ns} bpftool -j net show dev {dev}"))[0]["tc"][0]["id"]
    map_id = json.loads(shell(f"bpftool -j prog show id {prog_id}",
                              **{"prog id": str(prog_id)}))["map_ids"][0]
    dump = json.loads(shell(f"bpftool -j map dump id {map_id}", **{"map id": str(map_id)}))
    print("   sent[0] =", dump[0]["formatted"]["value"], "(the 3 echo requests that left a)")
    shell(f"tc -n {ns} qdisc del dev {dev} clsact")
    print("   filters left:", shell(f"tc -n {ns} filter show dev {dev} egress") or "none")

# %% [markdown]
# `tc` loaded the object, attached it, and exited; the filter kept the
# program alive and counting. Deleting the `clsact` qdisc removed both
# hooks' filters at once. Nothing here is specific to the course: the same
# commands work on any interface of any machine (mind which one you pick).

# %% [markdown]
# ## 8.3 The context: `struct __sk_buff`
#
# TC programs (and socket filters, and cgroup skb programs) receive a
# `struct __sk_buff *skb`: a stable, checked view of the kernel's
# `struct sk_buff`. The fields used most:
#
# | field | meaning | writable in TC |
# |---|---|---|
# | `data`, `data_end` | where the packet's linear bytes start and end | |
# | `len` | the packet's whole length (on egress up to 64 KiB: a GSO "super packet" is split later) | |
# | `protocol` | the EtherType, network order | |
# | `ifindex`, `ingress_ifindex` | the interface now, the one it came in on | |
# | `mark` | a 32-bit tag shared with netfilter and routing rules | yes |
# | `priority` | picks the class in `htb` (and the band in `prio`) | yes |
# | `tc_classid` | in direct-action mode, the class the program picks: `cls_bpf` hands it to a classful qdisc (`htb`) as the filter's result | yes |
# | `tstamp` | receive time, or on egress the *earliest departure time* | yes |
# | `cb[5]` | 20 bytes of scratch space passed between programs | yes |
# | `sk` | the socket the packet belongs to, if any | |
#
# **TC has the socket.** On egress, a locally sent packet still carries its
# socket, and helpers can ask about it: `bpf_get_socket_uid()`,
# `bpf_get_socket_cookie()`, `bpf_skb_cgroup_id()`. XDP never can: on
# receive there is no socket yet. This program counts egress packets per
# uid of the sending socket; then root sends 3 datagrams and a process
# running as uid 4242 sends 5.

# %%
BY_UID = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
BPF_HASH(by_uid, u32, u64);
int tc_uid(struct __sk_buff *skb) {
    if (skb->protocol != htons(ETH_P_IP))   /* IPv4 only: no ARP, no IPv6 housekeeping */
        return TC_ACT_OK;
    u32 uid = bpf_get_socket_uid(skb);     /* 65534 (overflowuid) when there is no socket */
    by_uid.increment(uid);
    return TC_ACT_OK;
}
"""
SEND = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "[s.sendto(b'hi', ('{ip}', 9000)) for _ in range({n})]")

with net.VethPair() as lab, Program(BY_UID) as prog, \
        tc.attach(prog, "tc_uid", lab.ns["a"], lab.ifname["a"], "egress"):
    lab.run_in("a", ["/usr/bin/python3", "-c", SEND.format(ip=lab.ip_b, n=3)], check=True)
    lab.run_in("a", ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups",
                     "/usr/bin/python3", "-c", SEND.format(ip=lab.ip_b, n=5)], check=True)
    by_uid = {k.value: v.value for k, v in prog["by_uid"].items()}
print("packets sent by uid 0:", by_uid.get(0), "  by uid 4242:", by_uid.get(4242))

# %% [markdown]
# A packet that belongs to no socket (a forwarded one, or an ARP request)
# would be counted under 65534, the "overflow" uid. Per-user or
# per-container egress policy starts here; Chapter 9 attaches programs to
# cgroups for the same purpose.

# %% [markdown]
# ## 8.4 Rewriting and redirecting: a ping answered by TC
#
# A TC program may change the packet. `bpf_skb_store_bytes(skb, offset,
# &src, len, flags)` writes bytes (direct writes through `skb->data` work
# too, after a bounds check); every change to a covered field must then be
# folded into the checksums:
#
# * `bpf_l3_csum_replace(skb, csum_offset, old, new, size)` for the IPv4
#   header checksum;
# * `bpf_l4_csum_replace(skb, csum_offset, old, new, flags)` for TCP, UDP
#   and ICMP; add `BPF_F_PSEUDO_HDR` to `flags` when the field is an address
#   (TCP and UDP checksums also cover the IP addresses).
#
# Both update the checksum incrementally, from the old and new value of the
# field, as RFC 1624 describes: no need to sum the whole packet.
#
# The program below sits on veth-b **ingress**. For an ICMP echo request it
# swaps the MAC and IP addresses, turns the request (type 8) into a reply
# (type 0), fixes the ICMP checksum, and returns
# `bpf_redirect(skb->ifindex, 0)`: out of the interface it came in on. So
# `b` answers pings without its IP stack ever seeing them. (Swapping the two
# addresses leaves the IP header checksum unchanged: a sum does not care
# about order.)

# %%
REFLECT = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/icmp.h>

#define ICMP_OFF (ETH_HLEN + sizeof(struct iphdr))
BPF_ARRAY(reflected, u64, 1);

int tc_reflect(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct icmphdr *icmp = (void *)(ip + 1);
    if ((void *)(icmp + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return TC_ACT_OK;
    if (ip->protocol != IPPROTO_ICMP || ip->ihl != 5 || icmp->type != ICMP_ECHO)
        return TC_ACT_OK;

    u8 mac[ETH_ALEN];                                  /* swap the MAC addresses */
    __builtin_memcpy(mac, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
    u32 addr = ip->saddr;                              /* and the IP addresses */
    ip->saddr = ip->daddr;
    ip->daddr = addr;

    u8 reply = ICMP_ECHOREPLY;                         /* type 8 -> 0: the first byte */
    bpf_skb_store_bytes(skb, ICMP_OFF + offsetof(struct icmphdr, type), &reply, 1, 0);
    FIX_CHECKSUM
    reflected.increment(0);
    return bpf_redirect(skb->ifindex, 0);              /* out the way it came */
}
"""
FIX = ("bpf_l4_csum_replace(skb, ICMP_OFF + offsetof(struct icmphdr, checksum), "
       "htons(ICMP_ECHO << 8), htons(ICMP_ECHOREPLY << 8), sizeof(u16));")


def snmp(lab: net.VethPair, side: str, proto: str, field: str) -> int:
    """One counter of /proc/net/snmp inside a namespace (e.g. Icmp InEchos)."""
    rows = [ln.split() for ln in lab.run_in(side, ["cat", "/proc/net/snmp"]).stdout.splitlines()
            if ln.startswith(proto + ":")]
    return int(rows[1][rows[0].index(field)])


def reflect_pings(fix: str) -> dict:
    with net.VethPair() as lab, Program(REFLECT.replace("FIX_CHECKSUM", fix)) as prog, \
            tc.attach(prog, "tc_reflect", lab.ns["b"], lab.ifname["b"], "ingress"):
        echos, errors = snmp(lab, "b", "Icmp", "InEchos"), snmp(lab, "a", "Icmp", "InCsumErrors")
        answered = flows.icmp_echo(lab.ns["a"], lab.ip_b, 3)
        return {"answered": answered, "reflected by TC": prog["reflected"][0].value,
                "seen by b's stack": snmp(lab, "b", "Icmp", "InEchos") - echos,
                "bad checksums at a": snmp(lab, "a", "Icmp", "InCsumErrors") - errors}


print("with the checksum fixed:   ", reflect_pings(FIX))
print("without fixing the checksum:", reflect_pings(""))

# %% [markdown]
# With the fix, 3 of 3 pings are answered and `b`'s ICMP layer never saw a
# request. Without it, the replies still arrive (the program ran 3 times),
# but `a`'s kernel counts 3 checksum errors and throws them away. UDP and
# TCP are subtler: on a veth, locally sent packets usually carry a checksum
# "to be completed later" (`CHECKSUM_PARTIAL`): the field holds only the
# sum of the pseudo-header, and the rest is summed over the bytes as they
# are when it is completed. `bpf_l4_csum_replace` knows it: on such a packet
# it adjusts the field only for a change the pseudo-header covers (an
# address, `BPF_F_PSEUDO_HDR`), and on a complete checksum it adjusts for
# any change (`inet_proto_csum_replace4()` in `net/core/utils.c`). Always
# call it; it does the right thing either way.

# %% [markdown]
# ## 8.5 Queues: policing, shaping, and what this kernel has
#
# A BPF program sees one packet at a time and can pass it or drop it; it
# cannot *hold* a packet. Limiting a rate by dropping is **policing**
# (Lab 8.1 builds a policer). **Shaping** delays packets in a queue until
# they may leave, and queues are qdiscs:
#
# * `tbf` (token bucket filter) shapes a whole interface to a rate;
# * `htb` (hierarchical token bucket) has classes, each with its own rate;
#   a TC program picks the class by writing `skb->priority` (major:minor,
#   e.g. `0x10020` for class 1:20);
# * `fq` (fair queue) paces each flow and honours the departure time a
#   program writes into `skb->tstamp` (section 8.6);
# * `netem` emulates delay and loss.
#
# Which of them exist is a property of the kernel build. `tc.available_qdiscs()`
# decides by adding each one to a throwaway veth:

# %%
have = tc.available_qdiscs()
print(", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in have.items()))
if not have["fq"]:
    print("fq is not in this kernel: EDT timestamps (skb->tstamp) will be ignored here")

# %% [markdown]
# On the course's CI kernel only `tbf` and `htb` exist: that kernel has no
# modules and was built without `fq`, `netem`, `etf` and `fq_codel`. Stock
# distribution kernels (and the course VM) have them all.
#
# Now three ways to send the same two UDP flows (to ports 9010 and 9020)
# as fast as Python can, measured at the receiving interface:
#
# 1. no qdisc at all;
# 2. `tbf` at 8 Mbit/s on veth-a: the whole interface is shaped;
# 3. `htb` with a fast class 1:10 and a slow class 1:20 at 8 Mbit/s, and a
#    TC egress program that puts only the flow to port 9020 into 1:20.

# %%
STEER = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

int tc_steer(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return TC_ACT_OK;
    if (ip->protocol == IPPROTO_UDP && udp->dest == htons(9020))
        skb->priority = 0x10020;                 /* htb class 1:20 */
    return TC_ACT_OK;
}
"""
# %% tags=["nbval-ignore-output"]
rates = {}
with net.VethPair() as lab, Program(STEER) as prog:
    a = (lab.ns["a"], lab.ifname["a"])
    setups = {"no qdisc": lambda: None,
              "tbf 8 Mbit/s": lambda: tc.root_qdisc(*a, "tbf", rate="8mbit", burst=16000,
                                                     latency=50000),
              "htb + BPF steering": lambda: tc.root_qdisc(*a, "htb", classes={0x10: "1gbit",
                                                                              0x20: "8mbit"})}
    for name, setup in setups.items():
        queue = setup()
        att = tc.attach(prog, "tc_steer", *a, "egress") if "htb" in name else None
        rates[name] = {port: flows.udp_flow(lab, port, 0.5).rate * 8 / 1e6 for port in (9010, 9020)}
        if att:
            att.detach()
            classes = [r for r in queue.stats() if r["what"] == "class"]
        if queue:
            queue.remove()
table = pd.DataFrame(rates).T.rename(columns={9010: "port 9010 (Mbit/s)", 9020: "port 9020 (Mbit/s)"})
print(table.round(1).to_string())

# %% [markdown]
# The numbers depend on the machine, so here is what to look for: with no
# qdisc both flows run as fast as the sender can; with `tbf` both are held
# near 8 Mbit/s; with `htb`, only the flow the program steered into class
# 1:20 is. The classes' own counters say the same:

# %%
by_class = {r["handle"]: r["packets"] for r in classes}
print("class 1:20 carried packets:", by_class["1:20"] > 0,
      "| class 1:10 carried packets:", by_class["1:10"] > 0)

# %% tags=["nbval-ignore-output"]
ax = table.plot.barh(figsize=(7, 2.6))
ax.axvline(8, color="grey", linestyle=":", label="8 Mbit/s")
ax.set_xscale("log")
ax.set_xlim(left=1)
ax.set_xlabel("delivered rate, Mbit/s (log scale)")
ax.invert_yaxis()
ax.legend(loc="lower right", fontsize=8)
plt.tight_layout()

# %% [markdown]
# A shaped UDP sender does not lose much: when the queue is full, its
# socket's send buffer fills and `sendto()` blocks, so the sender slows down
# to the rate. A policer gives no such back-pressure; it just drops.

# %% [markdown]
# ## 8.6 Departure times (EDT) and what they need
#
# Since Linux 4.20 a packet can carry its **earliest departure time** in
# `skb->tstamp` (nanoseconds, CLOCK_MONOTONIC, the clock of
# `bpf_ktime_get_ns()`). A TC egress program writes it; the `fq` qdisc
# holds each packet until then, with a single timer for the whole queue.
# That is how Cilium's bandwidth manager paces pods, and a cheap way to add
# latency to one flow: `skb->tstamp = max(skb->tstamp, now) + delay`.
#
# The program below stamps every UDP packet to port 7000 with now + 30 ms.
# First, on a crafted packet, no network involved (`BPF_PROG_TEST_RUN`,
# Chapter 14), the stamp is really written. The program's `now` is a moment
# somewhere inside the test-run call, which also spends time in Python and
# in the system call around the run; so the cell does not subtract a clock
# read before the call (that would add the call's own duration to the 30
# ms). It checks that the stamp minus 30 ms falls between the clock reads
# just before and just after the call:

# %%
EDT = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
#define DELAY_NS 30000000ULL

int tc_edt(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return TC_ACT_OK;
    if (ip->protocol != IPPROTO_UDP || udp->dest != htons(7000))
        return TC_ACT_OK;
    u64 now = bpf_ktime_get_ns(), t = skb->tstamp;
    skb->tstamp = (t > now ? t : now) + DELAY_NS;
    return TC_ACT_OK;
}
"""
probe = packets.udp_packet(7000, payload=b"probe")
with Program(EDT) as prog:
    tc.load(prog, "tc_edt")                  # load (and verify) first: not part of the call
    before = time.monotonic_ns()
    run = tc.test_run(prog, "tc_edt", probe)
    after = time.monotonic_ns()
ran_at = run.tstamp - 30_000_000             # the program's `now`, if it added 30 ms
print(f"verdict {run.action}; departure time - 30 ms falls inside the call: "
      f"{before <= ran_at <= after}")

# %% [markdown]
# Now on the wire: 100 UDP echo probes each to port 7000 (stamped) and 7001
# (not stamped), round-trip times measured from `a`. With `fq` as veth-a's
# root qdisc the stamped probes come back 30 ms later. Without `fq`, nothing
# looks at the stamp:

# %%
with net.VethPair() as lab, flows.UdpEcho(lab.ns["b"], [7000, 7001]), Program(EDT) as prog:
    a = (lab.ns["a"], lab.ifname["a"])
    queue = tc.root_qdisc(*a, "fq") if have["fq"] else None
    with tc.attach(prog, "tc_edt", *a, "egress"):
        rtts = flows.udp_probes(lab.ns["a"], lab.ip_b, [7000, 7001], 100, wait=0.5)
    if queue:
        queue.remove()
gap = flows.median_ms(rtts[7000]) - flows.median_ms(rtts[7001])
print(f"qdisc: {'fq' if queue else 'none (no fq in this kernel)'}; stamped probes came back "
      f"{'about 30 ms later' if gap > 20 else 'no later'} than the others")

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(7, 2.6))
bins = [i * 0.5 for i in range(81)]                     # 0 to 40 ms, the same for both
for port, label in [(7001, "port 7001, not stamped"), (7000, "port 7000, stamped +30 ms")]:
    ax.hist([min(r * 1e3, 40) for r in rtts[port] if r is not None], bins=bins, alpha=0.6,
            label=label)
ax.axvline(flows.median_ms(rtts[7001]) + 30, color="grey", linestyle=":",
           label="baseline + 30 ms (where fq holds them)")
ax.set_xlabel("round trip, ms")
ax.set_ylabel("probes")
ax.legend(fontsize=8)
plt.tight_layout()

# %% [markdown]
# On this kernel the two histograms lie on top of each other: the stamp was
# written (the test run proved it) and ignored. Neither `tbf` nor `htb`
# reads it, and `netem`, the classic delay line, is missing too. So here a
# BPF program can **drop** (loss injection works everywhere, Lab 8.3) but
# cannot **delay**. Lab 8.3 checks the delay on crafted packets and, on a
# kernel with `fq`, measures it live.

# %% [markdown]
# ## 8.7 Socket filters: what one socket sees
#
# The oldest BPF of all (tcpdump's, 1992) lives on: a `SOCKET_FILTER`
# program attached to a socket decides, for each packet, how many bytes of
# it *this socket* receives: 0 drops it from the socket, `-1` (or any
# length >= the packet) keeps all of it, a smaller number truncates. The
# traffic itself is untouched, every other socket still gets it.
#
# BCC's `attach_raw_socket(fn, ifname)` opens a packet socket bound to an
# interface and attaches the program. It does so in the namespace of the
# calling thread, so `tc.attach_socket_filter` runs it inside namespace `b`.
# BCC 0.26 never closes that socket (and the socket keeps the program
# alive); the helper hands it to you as a Python socket, closed by `with`.

# %%
KEEP_7000 = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
BPF_ARRAY(verdicts, u64, 2);                    /* [0] dropped, [1] kept */

int keep_7000(struct __sk_buff *skb) {
    u8 proto, ihl;
    u16 dport;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &ihl, 1) < 0 ||
        bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1) < 0 || proto != IPPROTO_UDP)
        goto drop;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + (ihl & 0x0f) * 4 + 2, &dport, 2) < 0 ||
        ntohs(dport) != 7000)
        goto drop;
    verdicts.increment(1);
    return -1;                                  /* keep the whole packet */
drop:
    verdicts.increment(0);
    return 0;                                   /* not for this socket */
}
"""
with net.VethPair() as lab, Program(KEEP_7000) as prog, \
        flows.UdpSinks(lab.ns["b"], [7000, 7001]) as sinks:
    with tc.attach_socket_filter(prog, "keep_7000", lab.ns["b"], lab.ifname["b"]) as raw:
        for port in (7000, 7001):
            flows.udp_send(lab.ns["a"], lab.ip_b, port, 5)
        flows.icmp_echo(lab.ns["a"], lab.ip_b, 2)
        time.sleep(0.1)
        frames = tc.drain(raw)
    ports = [packets.parse(f).dport for f in frames]
    print("the filtered packet socket got", len(frames), "frames, to ports", sorted(set(ports)))
    print("the UDP sockets got:", dict(sinks.counts()))

# %% [markdown]
# The packet socket received only the 5 datagrams to port 7000; the
# program also saw (and turned away) the other 5 datagrams, the pings, the
# replies leaving `b` and ARP, since a packet socket sees both directions.
# Meanwhile the ordinary UDP sockets got all their 10 datagrams.

# %% [markdown]
# ## 8.8 SOCKMAP: sockets talking without the stack
#
# A **SOCKMAP** (or SOCKHASH) holds sockets. Programs attached *to the map*
# run on the sockets in it:
#
# * `sk_msg` runs on every `sendmsg()` of a socket in the map and can pass
#   the data, drop it, or redirect it (`bpf_msg_redirect_hash`) into
#   another socket of the map, to that socket's receive queue
#   (`BPF_F_INGRESS`) or its send queue;
# * `sk_skb` (stream parser and verdict) runs on data a socket *receives*,
#   and can redirect it the same way: a proxy that never copies to user
#   space.
#
# Between two sockets on one machine, the redirect skips TCP, IP, loopback
# and back. Here a client and a server connected over 127.0.0.1 (inside
# namespace `a`) go into a SOCKHASH; the `sk_msg` program sends each
# message straight into the peer's receive queue.

# %%
SPLICE = r"""
#include <uapi/linux/bpf.h>
BPF_SOCKHASH(peers, u32, 2);              /* 0 = client, 1 = server side */
BPF_ARRAY(moved, u64, 2);                 /* [0] messages, [1] bytes */

int splice(struct sk_msg_md *msg) {
    moved.increment(0);
    int one = 1;
    u64 *bytes = moved.lookup(&one);
    if (bytes)
        __sync_fetch_and_add(bytes, msg->size);
    u32 peer = msg->local_port == SERVER_PORT ? 0 : 1;   /* local_port: host order */
    return peers.msg_redirect_hash(msg, &peer, BPF_F_INGRESS);
}
"""
PORT, TOTAL = 7100, 8_000_000


def connected_pair(ns: str) -> tuple[socket.socket, socket.socket]:
    server = flows.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", PORT))
    server.listen(1)
    client = flows.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    client.connect(("127.0.0.1", PORT))
    accepted, _ = server.accept()
    server.close()
    return client, accepted


def transfer(client: socket.socket, accepted: socket.socket) -> float:
    """Send TOTAL bytes client -> server; return the seconds it took."""
    got, chunk = 0, b"x" * 65536

    def read() -> None:
        nonlocal got
        while got < TOTAL:
            data = accepted.recv(1 << 20)
            if not data:
                return
            got += len(data)
    reader = threading.Thread(target=read)
    start = time.perf_counter()
    reader.start()
    for _ in range(TOTAL // len(chunk) + 1):
        client.sendall(chunk)
    reader.join(5)
    assert got >= TOTAL, f"only {got} bytes arrived"
    return time.perf_counter() - start


results = {}
with net.VethPair() as lab, Program(SPLICE.replace("SERVER_PORT", str(PORT))) as prog:
    ns = lab.ns["a"]
    for mode in ("TCP over loopback", "SOCKMAP sk_msg redirect"):
        client, accepted = connected_pair(ns)
        lo_before = flows.link_counters(ns, "lo")["tx_bytes"]
        if mode.startswith("SOCKMAP"):
            with tc.sock_map_program(prog, "splice", "peers", "sk_msg"):
                tc.sock_map_set(prog, "peers", 0, client)
                tc.sock_map_set(prog, "peers", 1, accepted)
                seconds = transfer(client, accepted)
                client.close()
                accepted.close()
        else:
            seconds = transfer(client, accepted)
            client.close()
            accepted.close()
        lo_bytes = flows.link_counters(ns, "lo")["tx_bytes"] - lo_before
        results[mode] = {"seconds": seconds, "loopback bytes": lo_bytes}
    moved = prog["moved"][ct.c_int(1)].value
for mode, r in results.items():
    print(f"{mode:25} loopback carried the payload: {r['loopback bytes'] >= TOTAL}")
print("bytes the sk_msg program redirected >= bytes sent:", moved >= TOTAL)

# %% tags=["nbval-ignore-output"]
pd.DataFrame({mode: {"MB/s": TOTAL / r["seconds"] / 1e6, "bytes on lo": r["loopback bytes"]}
              for mode, r in results.items()}).T.round(1)

# %% [markdown]
# The payload never touched the loopback interface (a few hundred bytes of
# handshake and teardown did). Whether it is *faster* depends on message
# sizes: for big writes TCP over loopback is already cheap; the gain shows
# with many small messages, which is where service meshes use it.
#
# Two practical notes. BCC 0.26's Python has no table class for SOCKMAP and
# SOCKHASH, so `tc.sock_map_set` writes the map through libbcc directly; and
# BCC turns `peers.msg_redirect_hash(...)` into the helper call, while a
# plain `bpf_msg_redirect_map(msg, &map, ...)` would reach the verifier with
# no map at all.

# %% [markdown]
# ## 8.9 tcx: the same hooks, owned by a link
#
# Since Linux 6.6 the two hooks of `clsact` have a second front door,
# **tcx**: no qdisc and no filter, just programs in an ordered list per
# hook, attached with the `bpf()` system call. Attached through a **link**
# (`BPF_LINK_CREATE` with attach type `BPF_TCX_INGRESS` or
# `BPF_TCX_EGRESS`), a program stays exactly as long as the link does: the
# link is a file descriptor, and when the last reference to it goes (the
# process closes it or exits, and nobody pinned it), the program is
# detached. That is the lifetime of a libbpf skeleton's attachment, and the
# opposite of a `tc` filter, which outlives everything until someone
# deletes it (section 8.2).
#
# | attached with | held by | detached when |
# |---|---|---|
# | `tc filter ... bpf da` (netlink) | the filter, on the interface | the filter, the qdisc or the interface is deleted |
# | tcx link (`BPF_LINK_CREATE`) | the link's file descriptors and pins | the last one is closed, or `bpf_link_detach` |
#
# BCC 0.26, libbpf 1.1 and bpftool 7.1 (Debian 12) predate tcx; the kernel
# decides whether it exists. So the cell makes the system call itself: a
# `union bpf_attr` whose first fields are the program, the interface index,
# the attach type and flags. The interface index is read in the namespace
# of the calling thread, so the call runs inside the sandbox.

# %%
class LinkCreateAttr(ct.Structure):
    """The start of union bpf_attr for BPF_LINK_CREATE (the rest stays zero)."""
    _fields_ = [("prog_fd", ct.c_uint32), ("target_ifindex", ct.c_uint32),
                ("attach_type", ct.c_uint32), ("flags", ct.c_uint32),
                ("relative_fd", ct.c_uint32), ("_pad", ct.c_uint32),
                ("expected_revision", ct.c_uint64), ("_rest", ct.c_uint8 * 32)]


BPF_LINK_CREATE, BPF_TCX_EGRESS = 28, 47
libc = ct.CDLL(None, use_errno=True)
SYS_bpf = bpfsys.syscall_number("bpf")                # 321 on x86-64


def tcx_attach(prog_fd: int, ns: str, ifindex: int) -> int:
    """Attach a SCHED_CLS program to the tcx egress hook; returns the link fd."""
    attr = LinkCreateAttr(prog_fd=prog_fd, target_ifindex=ifindex, attach_type=BPF_TCX_EGRESS)
    with net.inside(ns):
        fd = libc.syscall(SYS_bpf, BPF_LINK_CREATE, ct.byref(attr), ct.sizeof(attr))
    if fd < 0:
        raise OSError(ct.get_errno(), os.strerror(ct.get_errno()))
    return fd


TCX_COUNT = r"""
BPF_ARRAY(sent, u64, 1);
int tcx_count(struct __sk_buff *skb) {
    sent.increment(0);
    return 0;                                          /* TCX_PASS, same value as TC_ACT_OK */
}
"""

# %%
with net.VethPair(quiet=True) as lab, Program(TCX_COUNT) as prog:
    ns = lab.ns["a"]
    prog_fd = tc.load(prog, "tcx_count").fd
    try:
        link_fd = tcx_attach(prog_fd, ns, lab.ifindex("a"))
    except OSError as e:
        link_fd = None
        print(f"tcx is not available on this kernel ({e.strerror}): only tc filters here")
    if link_fd is not None:
        prog_id = tc.prog_id(prog_fd)
        links = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True,
                                          text=True).stdout)
        ours = [ln for ln in links if ln.get("prog_id") == prog_id]
        print("bpftool link show: a tcx link for our program:",
              len(ours) == 1 and ours[0]["type"] in (11, "tcx"))     # 11 = BPF_LINK_TYPE_TCX
        flows.icmp_echo(ns, lab.ip_b, 3)
        print("while the link is open, pings counted:", prog["sent"][0].value)
        os.close(link_fd)                              # the last reference to the link
        time.sleep(0.1)
        flows.icmp_echo(ns, lab.ip_b, 3)
        print("after closing it, pings counted:     ", prog["sent"][0].value)

# %% [markdown]
# Three pings were counted while the link was open; after `close()`, three
# more pings left and the count did not move: the program was detached with
# its last link reference, though the program itself was still loaded.
# Debian 12's bpftool 7.1 shows the link only by number (`type 11`,
# `BPF_LINK_TYPE_TCX`) and its `net show` does not list tcx programs;
# newer versions name the type and list them. To keep a tcx program
# attached after its loader exits, pin the link (`bpf_link__pin` in
# libbpf, which also has `bpf_program__attach_tcx` since version 1.3).

# %% [markdown]
# ## Recap
#
# * TC programs run where the `sk_buff` exists: ingress after XDP, egress
#   after the stack and before the queue. They see both directions and, on
#   egress, the sending socket.
# * Direct-action filters on the `clsact` qdisc return the verdict:
#   `TC_ACT_OK`, `TC_ACT_SHOT`, `TC_ACT_REDIRECT`. A filter keeps its program
#   alive until the filter (or the interface) goes.
# * Rewrite with `bpf_skb_store_bytes` and keep checksums right with
#   `bpf_l3/l4_csum_replace`; forget it and the receiver throws the packet
#   away.
# * A program polices (drops); qdiscs shape (delay). `skb->priority` steers
#   into `htb` classes; `skb->tstamp` asks `fq` for a departure time, and is
#   ignored where `fq` is missing, as on this course's CI kernel.
# * Socket filters choose what one socket sees; SOCKMAP programs move data
#   between sockets without the TCP/IP stack.
# * The same hooks without a qdisc: tcx (6.6+). A tcx link detaches its
#   program when its last file descriptor closes; a `tc` filter stays until
#   someone deletes it.
#
# **Questions to test yourself**
#
# 1. Why can a TC egress program see the sending process's uid, and an XDP
#    program never?
# 2. A program rewrites a UDP destination port and the receiver still gets
#    every datagram, though the program never fixed the checksum. Why, and
#    why is that no excuse?
# 3. What is the difference between `TC_ACT_SHOT` and `TC_ACT_UNSPEC`?
# 4. Why does a policer hurt a TCP flow more than a shaper with the same
#    rate?
# 5. A program writes `skb->tstamp = now + 10 ms` on a kernel with no `fq`.
#    What happens to the packet?
#
# <details><summary>Answers (try first, then click to open)</summary>
#
# 1. On egress a locally sent packet still points to the socket that sent
#    it (`skb->sk`), and `bpf_get_socket_uid()` reads that socket's owner.
#    XDP runs on receive, in the driver, before the stack has looked up a
#    socket (and before an `sk_buff` exists on a real NIC): there is no
#    socket to ask.
# 2. A UDP packet that this machine sends over a veth is usually
#    `CHECKSUM_PARTIAL`: its checksum is completed later over the bytes as
#    they are then (ports included), and a veth receiver trusts it without
#    checking. A packet that arrived from a network (ingress, or one being
#    forwarded) carries a complete checksum; rewrite its port without
#    `bpf_l4_csum_replace` and the receiver drops it. The helper handles
#    both cases, so always call it.
# 3. `TC_ACT_SHOT` drops the packet. `TC_ACT_UNSPEC` (-1) has no opinion:
#    the next filter on the hook decides, and if none does, the packet goes
#    on as with `TC_ACT_OK`.
# 4. A policer drops what exceeds the rate; TCP reads each loss as
#    congestion, halves its window and retransmits, so its throughput saws
#    well below the rate, with retransmission timeouts on bursts of loss. A
#    shaper queues the excess: TCP sees a longer round trip and settles at
#    the rate without losses (until the queue overflows).
# 5. Nothing: the stamp is written and ignored. No qdisc on the path reads
#    `skb->tstamp` (`tbf` and `htb` do not), so the packet leaves as soon as
#    it would have anyway, as the histograms of section 8.6 show.
#
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 8.1 | a token-bucket bandwidth limiter on TC egress, checked against measured rates | `labs/ch08/lab_8_1_bandwidth_limiter.ipynb` |
# | 8.2 | an egress firewall: protocols and ports from a map, changed live | `labs/ch08/lab_8_2_egress_firewall.ipynb` |
# | 8.3 | latency (EDT) and loss injection for one service, with what this kernel allows | `labs/ch08/lab_8_3_latency_injection.ipynb` |
#
# Each lab ends with a check cell. `ebpf-tutor progress` shows what you have
# passed; the solutions are in `solutions/ch08/`.
