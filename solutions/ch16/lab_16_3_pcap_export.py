# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 16.3: Sampled packets to a pcap file
#
# **Objective.** Turn the samples an XDP program sends up a ring buffer
# into a **pcap file** that tshark, tcpdump and Wireshark open: write the
# file header, one record per sample, and the conversion of the kernel's
# timestamps (`bpf_ktime_get_ns()`, time since boot) into time since 1970.
#
# **Expected observation.** The check runs its own sampler (one frame in
# N, the first `snap_len` bytes of each, both chosen at random) on a
# sandbox veth, sends a few hundred frames whose IP identification field
# is their number, builds the file with your three functions, and reads it
# with `tshark -r`. Every sample must come back: its frame (by IP id), its
# original length, its captured length, and a time within a second of when
# the check sent it.

# %% [markdown]
# ## Background
#
# The classic pcap format (the `.pcap` that libpcap writes; pcapng is its
# successor):
#
# | part | size | fields, each in the writer's byte order |
# |---|---|---|
# | file header | 24 bytes | `u32 magic`, `u16 version_major` (2), `u16 version_minor` (4), `i32 thiszone` (0), `u32 sigfigs` (0), `u32 snaplen`, `u32 linktype` |
# | record header | 16 bytes | `u32 ts_sec`, `u32 ts_frac`, `u32 incl_len` (bytes that follow), `u32 orig_len` (length on the wire) |
# | record data | `incl_len` bytes | the captured bytes |
#
# * **magic** says the byte order and the time unit: `0xa1b2c3d4` means
#   `ts_frac` is in microseconds, `0xa1b23c4d` nanoseconds. A reader that
#   sees the magic byte-swapped swaps every field. `struct.pack("=I...")`
#   writes in this machine's order.
# * **linktype** 1 is Ethernet: the data starts with a 14-byte Ethernet
#   header.
# * **Clocks.** `bpf_ktime_get_ns()` reads `CLOCK_MONOTONIC`. Python reads
#   both clocks: `time.clock_gettime_ns(time.CLOCK_REALTIME)` and
#   `time.clock_gettime_ns(time.CLOCK_MONOTONIC)`; their difference is the
#   boot time on the wall clock.

# %%
import ctypes as ct
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from ebpf_tutor import Program, net, packets, traffic, xdp
from ebpf_tutor.labs import check

# %% [markdown]
# ## The sampler (given)
#
# Lab 7.3's program, with a timestamp: one frame in `SAMPLE_RATE`, its
# length, up to `SNAP_LEN` of its bytes, and `bpf_ktime_get_ns()`.

# %%
SAMPLER = r"""
#ifndef SAMPLE_RATE
#define SAMPLE_RATE 4
#endif
#ifndef SNAP_LEN
#define SNAP_LEN 96
#endif
struct sample { u64 ts_ns; u32 pkt_len; u32 cap_len; u8 data[SNAP_LEN]; };
BPF_RINGBUF_OUTPUT(samples, 64);
BPF_ARRAY(seen, u64, 1);

int xdp_sample(struct xdp_md *ctx) {
    u32 zero = 0;
    u64 *count = seen.lookup(&zero);
    if (!count || __sync_fetch_and_add(count, 1) % SAMPLE_RATE != 0)
        return XDP_PASS;
    struct sample *s = samples.ringbuf_reserve(sizeof(struct sample));
    if (!s)
        return XDP_PASS;
    u64 len = ctx->data_end - ctx->data;
    u64 cap = len < SNAP_LEN ? len : SNAP_LEN;
    s->ts_ns = bpf_ktime_get_ns();
    s->pkt_len = len;
    s->cap_len = cap;
    if (cap == 0 || bpf_xdp_load_bytes(ctx, 0, s->data, cap) != 0) {
        samples.ringbuf_discard(s, 0);
        return XDP_PASS;
    }
    samples.ringbuf_submit(s, 0);
    return XDP_PASS;
}
"""

# %% [markdown]
# ## Your functions
#
# `pcap_header(snap_len)` returns the 24-byte file header for Ethernet
# frames; `pcap_record(ts_ns, data, orig_len)` returns one record (header
# and data) for a frame seen at `ts_ns` nanoseconds since 1970;
# `wall_clock_ns(ktime_ns)` turns a `bpf_ktime_get_ns()` value into
# nanoseconds since 1970.

# %% tags=["answer"]
LINKTYPE_ETHERNET = 1


def pcap_header(snap_len: int) -> bytes:
    # TODO: magic (nanosecond timestamps), version 2.4, zone 0, sigfigs 0,
    #       snap_len, link type
    # BEGIN SOLUTION
    return struct.pack("=IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snap_len, LINKTYPE_ETHERNET)
    # END SOLUTION


def pcap_record(ts_ns: int, data: bytes, orig_len: int) -> bytes:
    # TODO: seconds, nanoseconds, captured length, original length, then the data
    # BEGIN SOLUTION
    sec, nsec = divmod(ts_ns, 1_000_000_000)
    return struct.pack("=IIII", sec, nsec, len(data), orig_len) + data
    # END SOLUTION


def wall_clock_ns(ktime_ns: int) -> int:
    # TODO: CLOCK_MONOTONIC nanoseconds -> nanoseconds since 1970
    # BEGIN SOLUTION
    boot = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return ktime_ns + boot
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# The file is the header once, then header + bytes for each packet, all
# fixed-size unsigned integers in one byte order. The magic number you
# choose decides how a reader reads the fraction of a second. The
# captured length is what follows the record header; the original length
# is how long the frame was. A kernel timestamp counts from boot: add
# the moment of boot on the wall clock.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `struct.pack("=IHHiIII", magic, 2, 4, 0, 0, snap_len, 1)` is the file
#   header, `struct.pack("=IIII", sec, frac, incl_len, orig_len)` a record
#   header (`=`: native order, no padding).
# * `divmod(ts_ns, 1_000_000_000)` splits seconds and nanoseconds.
# * `time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)`
# </details>
#
# <details><summary>Hint 3: what goes wrong</summary>
#
# * `0xa1b2c3d4` with nanoseconds in the record: every fraction is read as
#   microseconds. Use `0xa1b23c4d`, or divide by 1000.
# * `incl_len` must be `len(data)`, not the frame's length: a sample of a
#   1500-byte frame carries only `snap_len` bytes, and the reader would
#   take the next record's header as data.
# * Link type 0 is BSD loopback, 101 raw IP: tshark would not find an
#   Ethernet header.
# </details>

# %% [markdown]
# ## Try it
#
# 40 UDP frames through the sampler (one in 4), written to a file, read
# back by tshark.

# %% tags=["try"]
samples = []
with net.VethPair(quiet=True) as lab, Program(SAMPLER) as prog, \
        xdp.attach(prog, "xdp_sample", *lab.where("b")):
    prog["samples"].open_ring_buffer(lambda _c, data, size: samples.append(ct.string_at(data, size)))
    frames = [packets.udp_packet(dport=6000, src=lab.ip_a, dst=lab.ip_b, ident=i,
                                 payload=bytes(10 * i)) for i in range(40)]
    traffic.send_frames(lab.ns["a"], lab.ifname["a"], frames)
    prog.ring_buffer_poll(100)
with tempfile.TemporaryDirectory(prefix="ebt-lab16-") as folder:
    path = Path(folder) / "try.pcap"
    with open(path, "wb") as f:
        f.write(pcap_header(96))
        for raw in samples:
            ts, pkt_len, cap_len = struct.unpack_from("=QII", raw)
            f.write(pcap_record(wall_clock_ns(ts), raw[16:16 + cap_len], pkt_len))
    print(subprocess.run(["tshark", "-n", "-r", str(path)], capture_output=True, text=True).stdout)

# %% [markdown]
# ## Check

# %% tags=["check"]
check("16.3", pcap_header=pcap_header, pcap_record=pcap_record, wall_clock_ns=wall_clock_ns)
