# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 7.3: Packet sampling to user space
#
# **Objective.** Build the kernel half and the user half of a packet
# sampler, the way sFlow and many flow monitors work: an XDP program keeps one
# packet in `SAMPLE_RATE`, copies its first bytes and its length into a ring
# buffer, and lets every packet pass; a Python function decodes the copied
# bytes into header fields.
#
# **Expected observation.** The check attaches your program (native XDP) to a
# sandbox veth, compiles it with its own `SAMPLE_RATE`, and puts 3000
# crafted frames on the wire (UDP, TCP and ICMP, 42 to 161 bytes long, each
# one different). It knows every byte it sent, so:
#
# * the number of samples must be right: exactly one in `SAMPLE_RATE` for a
#   counter (every `SAMPLE_RATE`-th packet), or within the binomial
#   4.5-sigma bound of 3000 / `SAMPLE_RATE` for a random choice;
# * each sample's `pkt_len`, `cap_len` and bytes must be those of the frame
#   it came from, short frames included;
# * `decode()` must give that frame's addresses, protocol and ports.

# %% [markdown]
# ## Background
#
# * **Which packets.** A counter makes sampling deterministic: packet *n*
#   is kept when `n % SAMPLE_RATE == 0`. Two CPUs may run the program at
#   once, so take the number with an atomic add:
#   `u64 n = __sync_fetch_and_add(count, 1);` returns the value *before*
#   the increment. (`bpf_get_prandom_u32() % SAMPLE_RATE == 0` is the random
#   alternative.)
# * **Copying bytes.** `bpf_xdp_load_bytes(ctx, offset, dest, len)` copies
#   from the packet; the verifier wants `len` provably between 1 and the
#   size of `dest`. A frame may be shorter than `SNAP_LEN`: copy
#   `min(pkt_len, SNAP_LEN)` bytes. Keep that length in a `u64`: squeezed
#   through a `u32`, the verifier loses track of its bounds.
# * **Ring buffer.** `samples.ringbuf_reserve(sizeof(struct sample))`
#   returns space in the buffer (or NULL when it is full); fill it, then
#   `ringbuf_submit` (or `ringbuf_discard` to give it back).
# * **Decoding.** Ethernet is 14 bytes; the IPv4 header follows, with its
#   length in 32-bit words in the low 4 bits of its first byte; protocol at
#   byte 9, source and destination at 12 and 16. TCP and UDP both start with
#   source and destination port. Everything is in network byte order
#   (`struct.unpack("!H", ...)`).

# %%
import ctypes as ct
import socket
import struct

from ebpf_tutor import Program, net, traffic, xdp
from ebpf_tutor.labs import check

# %% [markdown]
# ## The kernel half
#
# Keep the names: the check attaches `xdp_sample` and reads the ring buffer
# `samples`; it compiles with `-DSAMPLE_RATE=...`.

# %% tags=["answer"]
PROGRAM = r"""
#ifndef SAMPLE_RATE
#define SAMPLE_RATE 10                 /* keep 1 packet in SAMPLE_RATE */
#endif
#define SNAP_LEN 64                    /* bytes of a sampled packet sent up */

struct sample {
    u32 pkt_len;                       /* length of the whole frame */
    u32 cap_len;                       /* bytes in head: min(pkt_len, SNAP_LEN) */
    u8 head[SNAP_LEN];                 /* the first cap_len bytes of the frame */
};
BPF_RINGBUF_OUTPUT(samples, 64);       /* 64 pages: 256 KiB */
BPF_ARRAY(seen, u64, 1);               /* packets seen so far */

int xdp_sample(struct xdp_md *ctx) {
    u32 zero = 0;
    // TODO 1: count the packet in seen[0], atomically, keeping the old value
    // TODO 2: return XDP_PASS unless this is one packet in SAMPLE_RATE
    // TODO 3: reserve a struct sample in `samples`, fill pkt_len, cap_len and
    //         head (bpf_xdp_load_bytes), submit it; XDP_PASS in every case
    // BEGIN SOLUTION
    u64 *count = seen.lookup(&zero);
    if (!count)
        return XDP_PASS;
    u64 n = __sync_fetch_and_add(count, 1);
    if (n % SAMPLE_RATE != 0)
        return XDP_PASS;

    struct sample *s = samples.ringbuf_reserve(sizeof(struct sample));
    if (!s)
        return XDP_PASS;
    u64 len = ctx->data_end - ctx->data;
    u64 cap = len < SNAP_LEN ? len : SNAP_LEN;
    s->pkt_len = len;
    s->cap_len = cap;
    if (cap == 0 || bpf_xdp_load_bytes(ctx, 0, s->head, cap) != 0) {
        samples.ringbuf_discard(s, 0);
        return XDP_PASS;
    }
    samples.ringbuf_submit(s, 0);
    // END SOLUTION
    return XDP_PASS;
}
"""

# %% [markdown]
# ## The user half
#
# `decode(head)` gets the copied bytes of one sample (`head[:cap_len]`) and
# returns its header fields: `src` and `dst` as dotted strings, `proto` as a
# number (1 ICMP, 6 TCP, 17 UDP), `sport` and `dport` as numbers for TCP and
# UDP, `None` for anything else.

# %% tags=["answer"]
def decode(head: bytes) -> dict:
    # TODO: read ihl and the protocol from the IPv4 header (after 14 bytes of
    #       Ethernet), the two addresses, and for TCP/UDP the two ports
    # BEGIN SOLUTION
    ihl = (head[14] & 0x0F) * 4
    proto = head[14 + 9]
    src, dst = socket.inet_ntoa(head[26:30]), socket.inet_ntoa(head[30:34])
    sport = dport = None
    if proto in (6, 17):
        sport, dport = struct.unpack_from("!HH", head, 14 + ihl)
    return {"src": src, "dst": dst, "proto": proto, "sport": sport, "dport": dport}
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Keep a counter of packets; a packet is sampled when its number is a
# multiple of the rate. Several CPUs may receive at once, so take a
# number with one atomic operation that also tells you the old value. A
# sample is a fixed-size record: the frame's length, how much of it was
# copied, and the copy. Short frames are frames too: copy what there is,
# up to SNAP_LEN. In Python, the ports sit after an IP header whose length
# the header itself states.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `seen.lookup(&zero)` gives a pointer to the counter;
#   `__sync_fetch_and_add(ptr, 1)` adds one and returns the value before.
# * `samples.ringbuf_reserve(sizeof(struct sample))` gives a record to fill
#   (or NULL), `samples.ringbuf_submit(s, 0)` sends it,
#   `samples.ringbuf_discard(s, 0)` throws it away.
# * `ctx->data_end - ctx->data` is the frame's length;
#   `bpf_xdp_load_bytes(ctx, offset, dst, len)` copies bytes of the frame.
# * In `decode`: `head[14] & 0x0F` is the IP header length in 32-bit words;
#   `struct.unpack_from("!HH", head, offset)` reads two big-endian ports.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# u64 n = __sync_fetch_and_add(count, 1);
# if (n % SAMPLE_RATE != 0) return XDP_PASS;
# ...
# u64 len = ctx->data_end - ctx->data;
# u64 cap = len < SNAP_LEN ? len : SNAP_LEN;
# if (cap == 0 || bpf_xdp_load_bytes(ctx, 0, s->head, cap) != 0) { discard; return XDP_PASS; }
# ```
# Use `SAMPLE_RATE`, not a number of your own: the check picks the rate.
# Refusing frames shorter than `SNAP_LEN` would skip every TCP SYN here (54
# bytes). In `decode`, the ports are at `14 + ihl` bytes, `ihl` in bytes.
# </details>

# %% [markdown]
# ## Try it
#
# 50 pings from `a` to `b`, through a sampler with the default rate of 10.
# XDP sees only what *arrives* at `b`: the 50 echo requests (the replies
# leave `b`). So 5 samples come up; we decode the first three.

# %% tags=["try"]
got = []
with net.VethPair(quiet=True) as lab, Program(PROGRAM) as prog, \
        xdp.attach(prog, "xdp_sample", *lab.where("b")):
    prog["samples"].open_ring_buffer(
        lambda _ctx, data, size: got.append(ct.string_at(data, size)))
    traffic.ping(lab, "a", lab.ip_b, count=50, interval=0.01)
    prog.ring_buffer_poll(100)
    seen = prog["seen"][0].value
for raw in got[:3]:
    pkt_len, cap_len = struct.unpack_from("II", raw)
    print(pkt_len, cap_len, decode(raw[8:8 + cap_len]))
print(f"{len(got)} samples of {seen} packets")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("7.3", program=PROGRAM, decode=decode)
