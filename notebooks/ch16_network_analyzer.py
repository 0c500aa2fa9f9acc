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
# # Chapter 16: A network traffic analyzer
#
# **After this chapter you will be able to**
#
# * build a flow table of 5-tuples in the kernel, at XDP or at TC, and say
#   exactly what its packet and byte counts mean;
# * prove those counts against tshark on the same interface, in the same
#   run, flow by flow;
# * derive protocol shares and top talkers from the table;
# * detect a port scan and a flood per source, in time windows, without
#   flagging a busy but honest client;
# * sample packets into a ring buffer and write them as a pcap file that
#   tshark, tcpdump and Wireshark open.
#
# The analyzer is a tool of the course package, `ebpf_tutor/apps/netflow/`,
# and a command: `ebpf-tutor netflow`. This chapter shows how it is built
# and checks it. Chapter 7 (XDP), chapter 8 (TC) and chapter 13 (ring
# buffers) are the parts it is made of.

# %%
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ebpf_tutor import net, packets, traffic, xdp
from ebpf_tutor.apps.netflow import flowtable, pcap, peer, records, workload
from ebpf_tutor.apps.netflow.flowtable import Analyzer, Options
from ebpf_tutor.bpfsys.stats import ProgStats, run_time_stats

workdir = Path(tempfile.mkdtemp(prefix="ebt-ch16-"))

# %% [markdown]
# ## 16.1 The tool, first
#
# `ebpf-tutor netflow --demo` makes a veth pair between two fresh network
# namespaces, attaches the analyzer to one end, sends scripted traffic (two
# TCP exchanges, a few UDP datagrams, a SYN scan of 40 ports and a UDP
# flood), and prints what it saw. On your own traffic you give it a
# namespace and an interface: `--netns NS --dev IF`. It refuses the host's
# namespace, even under another name; `--json` prints one JSON object;
# Ctrl-C detaches and prints what was measured so far. Below, `--top 6`
# keeps the report to the six largest flows and talkers. An alert is
# printed when it happens (the first two lines) and again in the summary.

# %% tags=["nbval-ignore-output"]
demo = subprocess.run([sys.executable, "-m", "ebpf_tutor", "netflow", "--demo", "--top", "6"],
                      capture_output=True, text=True)
print(demo.stdout)

# %% [markdown]
# The flow lines and byte totals depend on the machine (ephemeral ports, TCP
# acknowledgments), so the stored output above is not compared. What must
# hold everywhere:

# %%
doc = json.loads(subprocess.run([sys.executable, "-m", "ebpf_tutor", "netflow", "--demo",
                                 "--json"], capture_output=True, text=True).stdout)
scanned = [f for f in doc["flows"] if f["proto"] == "tcp" and 1000 <= f["dport"] < 1040]
print("alerts:", sorted((a["kind"], a["source"]) for a in doc["alerts"]))
print("flows of the SYN scan:", len(scanned), "| each one packet of 54 bytes:",
      all((f["packets"], f["bytes"]) == (1, 54) for f in scanned))
print("flow sources seen at XDP on veth-b:", sorted({f["src"] for f in doc["flows"]}))

# %% [markdown]
# XDP runs on what *arrives* at `veth-b`: every flow comes from
# `10.200.0.1` (namespace `a`); the replies that `b` sends are not in the
# table. We come back to that choice in 16.3.

# %% [markdown]
# ## 16.2 The flow key, and what a byte is
#
# The program (`ebpf_tutor/apps/netflow/netflow.bpf.c`) keeps one entry per
# **direction** of a conversation, keyed by the classic 5-tuple:

# %%
src = flowtable.source()
print(src[src.index("struct flow_key {"):src.index("BPF_TABLE(\"lru_hash\", struct flow_key")])

# %% [markdown]
# Choices worth naming:
#
# * **Directions are separate flows.** A TCP connection is two entries,
#   client to server and back: their counts differ (requests and replies),
#   and tshark reports them separately too.
# * **Addresses stay in network order, ports are stored in host order.**
#   Addresses are only compared and printed; ports are read as numbers.
# * **The IP header length is read from the header** (`ihl * 4`): with
#   IP options the ports are not at byte 34 of the frame. A later IP
#   fragment has no TCP/UDP header at all; it is counted under ports 0.
# * **Bytes are frame bytes**: from the first byte of the Ethernet header
#   to the last byte of the frame, no frame check sequence (a veth has
#   none, and network cards normally strip it before the kernel sees the
#   frame). At XDP that is `ctx->data_end - ctx->data`; at TC it is
#   `skb->len`, which covers the Ethernet header at both hooks. It is
#   also what a packet socket receives, hence what tshark calls the
#   frame's length.
# * **The table is an LRU hash**: when it is full, a new flow evicts the
#   least recently used one instead of being lost. A flood of spoofed
#   sources cannot freeze the table.
#
# The accounting itself is a few atomic adds on the entry found or made
# by `lookup_or_try_init`:

# %%
print(src[src.index("    if (ethertype == ETH_P_IP && key.saddr) {"):
          src.index("        detect(&key, tcp_flags, now);")])

# %% [markdown]
# One frame of each kind, crafted byte by byte and put on the wire of `a`
# (`traffic.send_frames`): the table must hold exactly their lengths.

# %%
with net.VethPair(quiet=True) as lab, Analyzer(Options(hook="xdp")) as nf:
    nf.attach(*lab.where("b"))
    crafted = {
        "udp, 10-byte payload": packets.udp_packet(dport=6000, sport=5001, payload=b"x" * 10,
                                                   src=lab.ip_a, dst=lab.ip_b),
        "tcp SYN": packets.tcp_packet(dport=80, sport=5002, src=lab.ip_a, dst=lab.ip_b),
        "udp, IP options": packets.udp_packet(dport=6000, sport=5003, src=lab.ip_a, dst=lab.ip_b,
                                              ip_options=traffic.IP_NOP_OPTIONS),
        "icmp echo": packets.icmp_packet(src=lab.ip_a, dst=lab.ip_b),
    }
    traffic.send_frames(lab.ns["a"], lab.ifname["a"], crafted.values())
    time.sleep(0.05)
    table = {(f.sport, f.dport, f.proto): f for f in nf.flows()}
for what, frame in crafted.items():
    p = packets.parse(frame)
    f = table[(p.sport or 0, p.dport or 0, packets.L4_NAMES[p.proto])]
    print(f"{what:22} frame {len(frame):3} bytes   table: {f.packets} packet, {f.bytes:3} bytes,"
          f" ports {f.sport} -> {f.dport}")

# %% [markdown]
# ## 16.3 XDP or TC?
#
# | | XDP | TC (clsact) |
# |---|---|---|
# | directions | ingress only | ingress and egress |
# | runs | in the driver's receive path: on a NIC with native XDP, before an `sk_buff` exists; on a veth, on the `sk_buff` its peer sent (chapter 7) | on the `sk_buff`: at ingress after packet sockets (tshark) have seen it and before the IP stack; at egress after the IP stack, before the qdisc |
# | sees | frames as the wire delivers them | what the stack sends and receives, large offloaded segments included |
# | can drop early | yes, cheapest | yes, later |
#
# A monitor that must see both directions of one interface uses TC; a
# monitor on the receive path of a busy machine, or one that will also drop
# (chapter 7's DDoS filter), uses XDP. The same C serves both: three entry
# points, `netflow_xdp`, `netflow_tc_in` and `netflow_tc_out`, call one
# `account()` function.
#
# Attaching XDP changes the traffic itself on a veth: when an XDP program
# is attached to one end, the veth driver clears the software segmentation
# offload (GSO) features of the *other* end (`veth_xdp_set()` in
# `drivers/net/veth.c`). So `a` then sends MTU-sized segments where it
# would otherwise hand the veth one large segment. One 6000-byte request,
# both ways:

# %% tags=["nbval-ignore-output"]
request = {}
for hook in ("xdp", "tc"):
    with net.VethPair(quiet=True) as lab, Analyzer(Options(hook=hook)) as nf:
        nf.attach(*lab.where("b"))
        with workload.SizedServer(lab.ns["b"], 8080):
            workload.tcp_exchange(lab.ns["a"], lab.ip_b, 8080, 6000)
        request[hook] = next(f for f in nf.flows() if f.proto == "tcp" and f.dport == 8080)
        print(f"{hook}: client -> server {request[hook].packets} frames, {request[hook].bytes} "
              f"bytes, of which {request[hook].bytes - 6000} are headers")

# %%
print("XDP on veth-b: more frames and more header bytes for the same request:",
      request["xdp"].packets > request["tc"].packets and request["xdp"].bytes > request["tc"].bytes)

# %% [markdown]
# Neither count is wrong: each is what crossed the hook. It matters when
# you compare with another tool: compare at the same place, with the same
# program attached. That is what the next section does.

# %% [markdown]
# ## 16.4 Checked against tshark
#
# tshark (Debian `tshark`, Wireshark's command-line program) is the tool
# people would use instead. We attach the analyzer with TC to `veth-b`, so
# it sees both directions, and capture the same interface with tshark
# inside the namespace (`ip netns exec NS tshark -i veth-b -w file`). Then
# four TCP connections with known request sizes (the server answers half
# the request plus one byte) and three UDP datagrams.
#
# **When is tshark capturing?** It prints "Capturing on 'veth-b'" before
# its capture process receives anything, and the frames it captures reach
# it with a delay. So `peer.Capture` sends marker datagrams (UDP to port 9)
# across the interface until tshark has printed one, before the traffic,
# and again after it: every frame in between is then in the file. The
# markers are left out of both sides of the comparison.

# %%
cap_file = workdir / "veth-b.pcapng"
with net.VethPair(quiet=True) as lab, Analyzer(Options(hook="tc")) as nf:
    nf.attach(*lab.where("b"))
    with peer.Capture(lab.ns["b"], lab.ifname["b"], cap_file, marker=(lab.ip_a, peer.MARKER_PORT)):
        with workload.SizedServer(lab.ns["b"], 8080) as server:
            exchanges = [workload.tcp_exchange(lab.ns["a"], lab.ip_b, 8080, n)
                         for n in (100, 1000, 3000, 6000)]
        udp_port = workload.udp_datagrams(lab.ns["a"], lab.ip_b, 6001, [10, 200, 1400])
    ours = nf.flows()
convs = peer.conversations(cap_file, "tcp") + peer.conversations(cap_file, "udp")
print("requests/replies (bytes):", [(e.sent, e.received) for e in exchanges])

# %% [markdown]
# tshark's own summary, `tshark -r file -q -z conv,tcp` (its "->" column is
# left to right, "<-" right to left):

# %% tags=["nbval-ignore-output"]
print(peer.conv_text(cap_file, "tcp"))

# %% [markdown]
# Flow by flow, ours beside tshark's (ports change from run to run):

# %% tags=["nbval-ignore-output"]
comparison = pd.DataFrame(peer.compare(ours, convs))
print(comparison.to_string(index=False))

# %%
print(f"directed flows compared: {len(comparison)} "
      f"(tcp {sum(comparison.proto == 'tcp')}, udp {sum(comparison.proto == 'udp')})")
print("packets equal tshark's frames, bytes equal tshark's bytes, every flow:",
      "yes" if comparison.equal.all() else "NO")

# %% [markdown]
# **Why they are equal, and when they would not be.** tshark's conversation
# table counts *frames* and *frame bytes*: the Ethernet header is in, the
# frame check sequence is not (the capture never sees it). Our byte is the
# same byte. Three things would break the equality, and the chapter's
# traffic avoids each on purpose:
#
# * **a different place**: XDP on `veth-b` counts only what arrives there,
#   and changes segmentation (16.3); tshark on `veth-a` would see the
#   frames before `b`'s ingress hooks could drop any (on `veth-b` itself,
#   tshark's packet socket still sees a frame that TC ingress then drops,
#   but not one that XDP drops);
# * **IP fragments**: tshark puts a reassembled UDP datagram into the
#   conversation as one frame, the one that completed the reassembly
#   (the other fragments' frames carry no UDP header), while the flow
#   table counts the first fragment under the ports and the later ones
#   under ports 0; the datagrams here fit in one frame;
# * **rounding**: tshark prints a byte count of 10,000 or more rounded
#   ("15 kB"); each direction here stays under that, and `peer.conversations`
#   refuses a rounded figure rather than compare it.
#
# Large segments are *not* a problem: the 6000-byte request crossed
# `veth-b` as one frame of 6066 bytes, and both tools counted one frame of
# that size.

# %%
big = [f for f in ours if f.proto == "tcp" and f.dport == 8080 and f.bytes > 6000]
print("client -> server flow of the 6000-byte request:",
      [(f.packets, f.bytes) for f in big])
print("frames longer than 1514 bytes in the capture:", subprocess.run(
    ["tshark", "-n", "-r", str(cap_file), "-Y", "frame.len > 1514", "-T", "fields",
     "-e", "frame.len"], capture_output=True, text=True).stdout.split())

# %% [markdown]
# ## 16.5 Protocol shares and top talkers
#
# Two smaller tables come from the same program. `protocols` counts every
# frame by EtherType and IPv4 protocol, so IPv6 or ARP show up there even
# though the flow table keeps IPv4 only. Top talkers add up the flow table
# by address, sent and received. Here, three sources with known amounts:
# `a` itself, and two more addresses crafted into the frames it sends.

# %%
with net.VethPair(quiet=True) as lab, Analyzer(Options(hook="xdp")) as nf:
    nf.attach(*lab.where("b"))
    mix = ([packets.udp_packet(dport=53, sport=3000 + i, src="10.200.0.21", dst=lab.ip_b,
                               payload=b"d" * 58) for i in range(30)]
           + [packets.tcp_packet(dport=443, sport=4000, src="10.200.0.22", dst=lab.ip_b,
                                 flags="PA", payload=b"t" * 946) for _ in range(10)]
           + [packets.icmp_packet(src=lab.ip_a, dst=lab.ip_b, payload=b"p" * 58)
              for _ in range(5)]
           + [packets.udp_packet(dport=53, ip=6) for _ in range(2)])
    traffic.send_frames(lab.ns["a"], lab.ifname["a"], mix)
    time.sleep(0.05)
    shares = pd.DataFrame(nf.protocols())
    talkers = pd.DataFrame(records.top_talkers(nf.flows()))
print(shares.to_string(index=False, float_format=lambda v: f"{v:.1%}"))
print()
print(talkers.to_string(index=False))

# %%
fig, ax = plt.subplots(1, 2, figsize=(9, 2.6))
ax[0].barh(shares.protocol, shares.packet_share * 100)
ax[0].set_xlabel("% of packets")
ax[1].barh(shares.protocol, shares.byte_share * 100)
ax[1].set_xlabel("% of bytes")
fig.suptitle("protocol shares at XDP on veth-b")
fig.tight_layout()
plt.show()

# %% [markdown]
# Ten TCP segments of 1000 bytes outweigh thirty DNS-sized datagrams in
# bytes, not in packets: look at both columns before you call a protocol
# dominant.

# %% [markdown]
# ## 16.6 Port scans and floods
#
# Both detections run in the kernel, per source address, in **windows**:
# a source's window starts with its first packet and lasts `WINDOW_NS`;
# the next packet after that starts a new one, with its counts at zero.
#
# * **Flood:** the packets a source sent in its window reach
#   `FLOOD_PACKETS` (a rate: packets per window).
# * **Port scan:** the distinct (destination, port) pairs a source *tried*
#   in its window reach `SCAN_PORTS`. A second map, `touched`, remembers in
#   which window each (source, destination, port, protocol) was last
#   tried, so a repeated try counts once. An attempt is a TCP SYN without
#   ACK, or a UDP datagram: the SYN+ACK replies of a server to many client
#   ports are not a scan.
#
# Each crossing sends one record to the `alerts` ring buffer (one per kind
# and window). The part of `detect()` that counts ports:

# %%
print(src[src.index("    if (!is_attempt(k->proto, tcp_flags))"):
          src.index("/* Read the headers between")])

# %% [markdown]
# A scripted test, with frames crafted from four sources through `a`'s
# veth. Thresholds: 20 ports or 2000 packets within one second.
#
# * `10.200.0.31` scans: one SYN to each of 60 ports;
# * `10.200.0.32` is busy but honest: 1500 datagrams to one port, and
#   30 connection attempts to port 443 from 30 different source ports;
# * `10.200.0.33` floods: 3000 datagrams to one port;
# * `10.200.0.34` is a server answering 50 clients: SYN+ACKs to 50 ports.

# %%
def crafted_sources(lab) -> dict[str, list[bytes]]:
    ip_b = lab.ip_b
    return {
        "scanner": [packets.tcp_packet(dport=p, sport=40000, src="10.200.0.31", dst=ip_b)
                    for p in range(1000, 1060)],
        "busy client": [packets.udp_packet(dport=6000, sport=5000, src="10.200.0.32", dst=ip_b)
                        for _ in range(1500)]
        + [packets.tcp_packet(dport=443, sport=41000 + i, src="10.200.0.32", dst=ip_b)
           for i in range(30)],
        "flooder": [packets.udp_packet(dport=6000, sport=5001, src="10.200.0.33", dst=ip_b)
                    for _ in range(3000)],
        "server": [packets.tcp_packet(dport=50000 + i, sport=443, flags="SA", src="10.200.0.34",
                                      dst=ip_b) for i in range(50)],
    }


detect_opts = Options(hook="xdp", scan_ports=20, flood_packets=2000, window=1.0)
with net.VethPair(quiet=True) as lab, Analyzer(detect_opts) as nf:
    nf.attach(*lab.where("b"))
    for who, frames in crafted_sources(lab).items():
        traffic.send_frames(lab.ns["a"], lab.ifname["a"], frames)
    nf.poll(100)
for a in sorted(nf.alerts, key=lambda a: a.source):
    print(f"{a.kind:5} from {a.source}: threshold reached after {a.value} "
          f"{'ports' if a.kind == 'scan' else 'packets'}")
flagged = {a.source for a in nf.alerts}
print("busy client flagged:", "10.200.0.32" in flagged, "| server flagged:", "10.200.0.34" in flagged)

# %% [markdown]
# A window-based count has a known blind spot: a scanner that tries 19
# ports per window, forever, is never flagged. Longer windows (or a second,
# slower detector on the flow table in user space) narrow it; they cost
# memory and reaction time. Lab 16.2 has you write this detector and
# defend it against a slow scan and a busy client.

# %% [markdown]
# ## 16.7 Sampled packets to a pcap file
#
# One packet in `SAMPLE_RATE` is copied (its first `SNAP_LEN` bytes and its
# real length) into the `samples` ring buffer, as in lab 7.3. User space
# turns each sample into a pcap record. The classic pcap format is small
# enough to write by hand (`ebpf_tutor/apps/netflow/pcap.py`):
#
# | part | bytes | fields |
# |---|---|---|
# | file header | 24 | magic `0xa1b23c4d` (nanosecond timestamps), version 2.4, time zone 0, accuracy 0, snap length, link type 1 (Ethernet) |
# | each record | 16 + data | seconds, nanoseconds, captured length, original length |
#
# Every field is in the writer's byte order: the reader tells which from
# the magic. The kernel stamps a sample with `bpf_ktime_get_ns()`, the
# monotonic clock (time since boot); a pcap wants time since 1970, so user
# space adds the difference between `CLOCK_REALTIME` and
# `CLOCK_MONOTONIC`.
#
# The test: 200 UDP frames whose IP identification field is their number
# and whose payloads have 200 different lengths, sampled 1 in 4 with a
# snap length of 64 bytes, then read back with `tshark -r`.

# %%
pcap_file = workdir / "samples.pcap"
sent_at = time.time()
with net.VethPair(quiet=True) as lab, \
        pcap.PcapWriter(pcap_file, snap_len=64) as writer, \
        Analyzer(Options(hook="xdp", sample_rate=4, snap_len=64),
                 on_sample=lambda s: writer.write(
                     s.data, s.pkt_len, int(records.monotonic_to_wall(s.ts_ns) * 1e9))) as nf:
    nf.attach(*lab.where("b"))
    frames = [packets.udp_packet(dport=6000, sport=7000, src=lab.ip_a, dst=lab.ip_b, ident=i,
                                 payload=bytes(i % 256 for _ in range(i))) for i in range(200)]
    traffic.send_frames(lab.ns["a"], lab.ifname["a"], frames)
    nf.poll(100)
fields = subprocess.run(["tshark", "-n", "-r", str(pcap_file), "-T", "fields", "-e", "ip.id",
                         "-e", "frame.len", "-e", "frame.cap_len", "-e", "frame.time_epoch"],
                        capture_output=True, text=True, check=True).stdout
read_back = [line.split("\t") for line in fields.splitlines()]
print("tshark read", len(read_back), "packets; sampled ip.id:",
      [int(r[0], 16) for r in read_back[:8]], "...")
lengths_right = all(int(r[1]) == len(frames[int(r[0], 16)]) and
                    int(r[2]) == min(64, len(frames[int(r[0], 16)])) for r in read_back)
bytes_right = all(data == frames[(data[18] << 8) | data[19]][:64]
                  for _, _, data in pcap.read(pcap_file))
times_right = all(abs(float(r[3]) - sent_at) < 10 for r in read_back)
print("original and captured lengths right:", lengths_right, "| bytes right:", bytes_right,
      "| timestamps within 10 s of the send:", times_right)
shutil.rmtree(workdir)          # the capture and the pcap file of this chapter

# %% [markdown]
# With `ebpf-tutor netflow --pcap out.pcap --sample-rate N` the command does
# the same on any namespace's interface. Sampling keeps the cost bounded:
# the ring carries one packet in N, whatever the rate on the wire, and a
# full ring loses samples (counted in `counters`), never packets.

# %% [markdown]
# ## 16.8 What it costs
#
# The kernel can time every run of a program (`BPF_ENABLE_STATS`, chapter
# 12): `run_time_ns / run_cnt` is the analyzer's own cost per packet. Chapter
# 7's in-kernel generator (`xdp.flood`: `BPF_PROG_TEST_RUN` in live-frames
# mode, each copy redirected out of `veth-a`) sends 100,000 copies of one
# UDP frame into `veth-b`, where the analyzer runs at XDP:

# %% tags=["nbval-ignore-output"]
with net.VethPair(quiet=True, xdp_ready=True) as lab, Analyzer(Options(hook="xdp")) as nf:
    nf.attach(*lab.where("b"))
    frame = traffic.udp_frame(lab.mac("a"), lab.mac("b"), lab.ip_a, lab.ip_b, 40000, 9999,
                              b"p" * 18)
    fd = nf.prog.funcs[b"netflow_xdp"].fd
    with run_time_stats():
        before = ProgStats.of(fd)
        took = xdp.flood(lab.ns["a"], lab.ifname["a"], frame, 100_000)
        cost = ProgStats.of(fd) - before
    flood_flow = [f for f in nf.flows() if f.dport == 9999]
print(f"{cost.run_cnt} runs, {cost.ns_per_run:.0f} ns per packet in the analyzer; "
      f"{100_000 / took / 1e6:.2f} M packets/s through the veth with statistics on")

# %%
print("every frame of the flood counted in its flow:",
      [(f.packets, f.bytes) for f in flood_flow] == [(100_000, 100_000 * 60)])

# %% [markdown]
# `benchmarks/ch16_pps.py` measures packets per second through the veth
# with no program, with the analyzer at XDP and at TC, and with an
# `iptables` counter rule instead, over many alternated rounds; its report,
# `benchmarks/ch16.md`, gives the figures and their spread. A throughput
# measurement on shared cores needs more repetitions than a chapter should
# run, so it lives there.

# %% [markdown]
# ## Recap
#
# * A flow table is a hash map from a **directed 5-tuple** to packets and
#   bytes, filled with atomic adds. Read the IP header length from the
#   header; keep an LRU map so a flood of new flows evicts old ones.
# * Say **which bytes** you count. Ours are frame bytes, Ethernet header
#   included, which is what tshark counts; with that, our per-flow packets
#   and bytes equal tshark's `conv,tcp` and `conv,udp` exactly, when both
#   look at the same interface.
# * **XDP** sees ingress only, early; **TC** sees both directions, on the
#   `sk_buff`. On a veth, attaching XDP also changes segmentation.
# * **Detection** counts per source in windows: packets for a flood,
#   distinct (destination, port) attempts for a scan. Count attempts, not
#   replies; count distinct ports, not packets.
# * **pcap** is 24 bytes of header and 16 per record; nanosecond magic,
#   wall-clock time, captured and original length.
# * **Measured in this run:** the per-flow packets and bytes equal tshark's
#   for every directed flow of 16.4 (printed there), and `BPF_ENABLE_STATS`
#   gives the program's own time per packet (16.8); the throughput against
#   no program and against an iptables rule is in `benchmarks/ch16.md`.
#
# **Questions to test yourself**
#
# 1. Your XDP flow table on `veth-b` says a TCP request took 10 frames;
#    tshark on `veth-b`, run on another day without the XDP program, says
#    the same request took 6. Which is wrong?
# 2. Why are the ports stored in host order but the addresses not?
# 3. A server answers 500 clients a second. Which rule keeps it from being
#    flagged as a scanner, and what would it take to fool that rule?
# 4. The pcap file opens, but every packet is dated 1970. What was
#    forgotten?
#
# <details><summary>Answers (try first, then click to open)</summary>
#
# 1. Neither: they count different frames. With XDP on `veth-b`, the veth
#    driver takes GSO away from `veth-a`, so `a` sends MTU-sized segments
#    (more frames, more headers). A capture without the XDP program sees
#    one large segment. Compare at the same place with the same programs.
# 2. Ports are compared with numbers a user types (`--port 443`) and
#    printed; addresses are only compared for equality and printed through
#    `inet_ntoa`, which wants network order anyway. Either choice works if
#    it is written down and kept.
# 3. Only SYN without ACK (and UDP) counts as an attempt. A scanner that
#    sends SYN+ACK or ACK probes (`nmap -sA`) is not seen by that rule; a
#    detector for those would count RSTs the scanned host sends back.
# 4. The conversion from `bpf_ktime_get_ns()` (time since boot) to time
#    since the epoch: add `CLOCK_REALTIME - CLOCK_MONOTONIC`.
#
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 16.1 | the 5-tuple flow table at XDP: packets and frame bytes per directed flow, IP options and fragments handled | `labs/ch16/lab_16_1_flow_table.ipynb` |
# | 16.2 | scan and flood detection per source in windows, against a scripted scan, a flood, a slow scan, a busy client and a server | `labs/ch16/lab_16_2_anomaly_detection.ipynb` |
# | 16.3 | pcap export: the file header, records and timestamps for sampled frames, read back by tshark | `labs/ch16/lab_16_3_pcap_export.ipynb` |
#
# Each lab ends with a check cell that sends its own traffic in its own
# namespaces and compares what your code recorded with what it sent.
