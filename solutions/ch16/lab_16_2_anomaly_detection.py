# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 16.2: Port-scan and flood detection
#
# **Objective.** Write the detector of chapter 16's analyzer, in the kernel:
# per source address, in windows of `WINDOW_NS`, count the packets (a
# **flood** when they reach `FLOOD_PACKETS`) and the distinct (destination,
# port) pairs the source *tried* (a **scan** when they reach `SCAN_PORTS`).
# Each crossing sends one alert to the ring buffer `alerts`: one per kind,
# per source, per window.
#
# **Expected observation.** The check compiles your program with its own
# thresholds and window, attaches it (native XDP) to a sandbox veth, and
# sends crafted frames from seven source addresses:
#
# * a **scanner** (one SYN to each of many ports) and a **horizontal
#   scanner** (one port on many addresses): one scan alert each;
# * a **flooder**: one flood alert, and another in a later window;
# * a **busy client** (many datagrams, and the same connection attempt
#   retried many times), a **server** (SYN+ACK replies to many client
#   ports), a **slow scanner** and a **slow sender** (each under the
#   thresholds in every window, over them in total): no alert.
#
# The alert's `value` must be the count that reached the threshold.

# %% [markdown]
# ## Background
#
# * **Windows.** Keep a `struct source` per address. When a packet comes
#   more than `WINDOW_NS` after the window's start, a new window starts:
#   start = now, counts and "already alerted" flags back to zero. (A new
#   source's entry is all zeros, so its first packet starts a window.)
# * **Attempts.** A port is *tried* by a TCP SYN without ACK (a
#   connection attempt), or by a UDP datagram. A SYN+ACK is a server's
#   answer: the port it goes to is the client's, not a target.
# * **Distinct.** The map `touched` remembers, for (source, destination,
#   port, protocol), the start of the window in which it was last tried: a
#   try whose entry already holds this window's start is a repeat.
# * **Counting.** Two CPUs may count for one source at once:
#   `__sync_fetch_and_add(&s->ports, 1) + 1` is the new count.
# * **Alerting.** `send_alert(saddr, ALERT_SCAN, count)` is written for
#   you; set the flag before or after, but alert once per window.

# %%
import ctypes as ct
import socket
import struct

from ebpf_tutor import Program, net, packets, traffic, xdp
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# The parsing is done. Keep the names: the check attaches `detect_xdp`,
# compiles with `-DWINDOW_NS=... -DSCAN_PORTS=... -DFLOOD_PACKETS=...` and
# reads the ring buffer `alerts`.

# %% tags=["answer"]
PROGRAM = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

#ifndef WINDOW_NS
#define WINDOW_NS 1000000000ULL        /* 1 s */
#endif
#ifndef SCAN_PORTS
#define SCAN_PORTS 20
#endif
#ifndef FLOOD_PACKETS
#define FLOOD_PACKETS 1000
#endif
#define TCP_SYN 0x02
#define TCP_ACK 0x10
#define ALERT_SCAN 1
#define ALERT_FLOOD 2

struct source {
    u64 window_start;
    u64 packets;                       /* in this window */
    u64 ports;                         /* distinct (destination, port) tried in this window */
    u32 scan_alerted;
    u32 flood_alerted;
};
BPF_HASH(sources, u32, struct source, 1024);
struct touch_key { u32 saddr; u32 daddr; u16 dport; u8 proto; u8 pad; };
BPF_HASH(touched, struct touch_key, u64, 16384);   /* -> window_start when last tried */

struct alert { u32 saddr; u32 kind; u64 value; };
BPF_RINGBUF_OUTPUT(alerts, 8);

static __always_inline void send_alert(u32 saddr, u32 kind, u64 value) {
    struct alert *a = alerts.ringbuf_reserve(sizeof(struct alert));
    if (!a)
        return;
    a->saddr = saddr;
    a->kind = kind;
    a->value = value;
    alerts.ringbuf_submit(a, 0);
}

int detect_xdp(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return XDP_PASS;
    u32 saddr = ip->saddr, daddr = ip->daddr;
    u8 proto = ip->protocol, tcp_flags = 0;
    u16 dport = 0;
    u8 *l4 = (u8 *)ip + ip->ihl * 4;
    if ((proto == 6 || proto == 17) && (void *)(l4 + 4) <= data_end)
        dport = ((u16)l4[2] << 8) | l4[3];
    if (proto == 6 && (void *)(l4 + 14) <= data_end)
        tcp_flags = l4[13];
    u64 now = bpf_ktime_get_ns();

    // TODO 1: find or make this source's entry; start a new window if the
    //         current one is over (start = now, counts and flags to zero)
    // TODO 2: count the packet; at FLOOD_PACKETS, one flood alert per window
    // TODO 3: if this packet is an attempt that was not already tried in this
    //         window, remember it in `touched` and count it; at SCAN_PORTS,
    //         one scan alert per window
    // BEGIN SOLUTION
    struct source zero = {};
    struct source *s = sources.lookup_or_try_init(&saddr, &zero);
    if (!s)
        return XDP_PASS;
    if (now - s->window_start > WINDOW_NS) {
        s->window_start = now;
        s->packets = 0;
        s->ports = 0;
        s->scan_alerted = 0;
        s->flood_alerted = 0;
    }
    u64 packets = __sync_fetch_and_add(&s->packets, 1) + 1;
    if (packets >= FLOOD_PACKETS && !s->flood_alerted) {
        s->flood_alerted = 1;
        send_alert(saddr, ALERT_FLOOD, packets);
    }

    int attempt = proto == 17 || (proto == 6 && (tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN);
    if (!attempt)
        return XDP_PASS;
    struct touch_key t = {.saddr = saddr, .daddr = daddr, .dport = dport, .proto = proto};
    u64 *when = touched.lookup(&t);
    if (when && *when == s->window_start)
        return XDP_PASS;                /* tried already in this window */
    u64 start = s->window_start;
    touched.update(&t, &start);
    u64 ports = __sync_fetch_and_add(&s->ports, 1) + 1;
    if (ports >= SCAN_PORTS && !s->scan_alerted) {
        s->scan_alerted = 1;
        send_alert(saddr, ALERT_SCAN, ports);
    }
    // END SOLUTION
    return XDP_PASS;
}
"""

# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Everything is per source: one entry that says when its window began,
# how many packets and how many distinct tries it made since, and whether
# it was already reported. Every packet counts towards a flood; only a
# connection attempt counts towards a scan, and only the first time that
# (destination, port) is tried in the window. A window ends by itself:
# the first packet after it starts the next one.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `struct source zero = {}, *s = sources.lookup_or_try_init(&saddr, &zero);`
# * `if (now - s->window_start > WINDOW_NS) { ...reset... }`
# * `u64 n = __sync_fetch_and_add(&s->packets, 1) + 1;`
# * an attempt: `proto == 17`, or `proto == 6` with SYN set and ACK not:
#   `(tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN`
# * `u64 *when = touched.lookup(&t);` a repeat if `when && *when == s->window_start`;
#   then `touched.update(&t, &start)` with `u64 start = s->window_start;`.
# </details>
#
# <details><summary>Hint 3: what the check will try</summary>
#
# A busy client retries one connection many times: one (destination,
# port), one try. A server answers many clients: SYN+ACK is not an
# attempt. A slow scanner stays under `SCAN_PORTS` in each window: without
# the reset it adds up. A horizontal scanner tries one port on many
# addresses: the destination is part of what makes a try distinct. The
# flooder floods again in a later window: the flags reset with the window.
# And `value` is the count that reached the threshold (`>=`, not `>`).
# </details>

# %% [markdown]
# ## Try it
#
# One source sends SYNs to 30 ports within a window; the default threshold
# is 20.

# %% tags=["try"]
with net.VethPair(quiet=True) as lab, Program(PROGRAM) as prog, \
        xdp.attach(prog, "detect_xdp", *lab.where("b")):
    got = []
    prog["alerts"].open_ring_buffer(lambda _c, data, size: got.append(ct.string_at(data, size)))
    syns = [packets.tcp_packet(dport=p, sport=40000, src="10.200.0.77", dst=lab.ip_b)
            for p in range(1000, 1030)]
    traffic.send_frames(lab.ns["a"], lab.ifname["a"], syns)
    prog.ring_buffer_poll(100)
for raw in got:
    saddr, kind, value = struct.unpack("=IIQ", raw[:16])
    print(socket.inet_ntoa(struct.pack("=I", saddr)), {1: "scan", 2: "flood"}[kind], value)

# %% [markdown]
# ## Check

# %% tags=["check"]
check("16.2", program=PROGRAM)
