# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 3.3: A protocol parser the verifier accepts
#
# **Objective.** Finish an XDP parser, written in raw instructions, that
# walks Ethernet, IPv4 or IPv6, and TCP or UDP headers, counts every frame
# in one of five categories, and drops the frames whose headers are
# truncated or malformed. You write the two hardest pieces: the IPv4 header
# (variable length) and the TCP/UDP header checks.
#
# **Expected observation.** The check creates the `counts` array map, loads
# your parser, and runs it with `BPF_PROG_TEST_RUN` on 17 crafted frames,
# each repeated 1 to 3 times: well-formed TCP, UDP, ICMP over IPv4 and IPv6
# (some with IP options), ARP, and eight broken frames (cut in the middle of
# a header, an IPv4 header length below 20 bytes or past the end of the
# frame). Every broken frame must get `XDP_DROP` and count as `MALFORMED`;
# every other frame gets `XDP_PASS` and counts in its category. If the
# verifier rejects your program, the check shows you why.
#
# | category | index | frames |
# |---|---|---|
# | `MALFORMED` | 0 | a header is cut short or invalid |
# | `TCP` | 1 | IPv4 or IPv6, with a complete 20-byte TCP header |
# | `UDP` | 2 | IPv4 or IPv6, with a complete 8-byte UDP header |
# | `OTHER_IP` | 3 | IPv4 or IPv6 carrying anything else (ICMP...) |
# | `NOT_IP` | 4 | neither IPv4 nor IPv6 (ARP...) |

# %% [markdown]
# ## Background
#
# The parser keeps its state in registers, and every piece follows the same
# conventions:
#
# | register | holds |
# |---|---|
# | R2 | `data`: the first byte of the frame |
# | R3 | `data_end`: one past the last byte |
# | R4 | the cursor: the start of the header being parsed |
# | R5 | scratch |
# | R6 | the category (starts as `MALFORMED`; R6 survives the helper call at the end) |
# | R7 | the L4 protocol number (6 TCP, 17 UDP, ...) once the IP header is parsed |
#
# Any piece that finds a problem jumps to `"count"` with R6 still
# `MALFORMED`. The IPv4 header length (IHL, low 4 bits of its first byte,
# in 32-bit words) must be at least 5, and all IHL*4 bytes must be in the
# frame. Remember the verifier's rule: every read through a packet pointer
# must be preceded by a comparison against `data_end` that proves it is in
# bounds.

# %%
from ebpf_tutor.bpfsys.asm import *
from ebpf_tutor.bpfsys import XDP_DROP, XDP_MD, XDP_PASS, MapType, ProgType, RawMap, load
from ebpf_tutor.labs import check
from ebpf_tutor.sandbox.packets import cut, describe, tcp_packet, udp_packet

MALFORMED, TCP, UDP, OTHER_IP, NOT_IP = range(5)


def start() -> list:
    """Ethernet: dispatch on the EtherType to "ipv4", "ipv6", or count NOT_IP."""
    return [
        ldx(U32, R2, R1, XDP_MD["data"]),
        ldx(U32, R3, R1, XDP_MD["data_end"]),
        mov(R6, MALFORMED),
        mov(R4, R2), add(R4, 14),             # R4 = the L3 header
        jgt(R4, R3, "count"),                 # not even an Ethernet header
        ldx(U16, R5, R2, 12), to_be(R5, 16),
        jeq(R5, 0x0800, "ipv4"),
        jeq(R5, 0x86DD, "ipv6"),
        mov(R6, NOT_IP),
        ja("count"),
    ]


def ipv6() -> list:
    """A fixed 40-byte header; the next-header field (offset 6) is the L4 protocol."""
    return [
        label("ipv6"),
        mov(R5, R4), add(R5, 40),
        jgt(R5, R3, "count"),
        ldx(U8, R7, R4, 6),
        mov(R4, R5),                          # R4 = the L4 header
        ja("l4"),
    ]


def count(counts_fd: int) -> list:
    """counts[R6] += 1, then XDP_DROP for MALFORMED, XDP_PASS otherwise."""
    return [
        label("count"),
        stx(U32, R10, R6, -4),                # the key, on the stack
        ld_map_fd(R1, counts_fd),
        mov(R2, R10), add(R2, -4),
        call("map_lookup_elem"),              # R0 = &counts[key] or NULL
        jeq(R0, 0, "verdict"),
        mov(R1, 1), atomic_add(U64, R0, R1),
        label("verdict"),
        mov(R0, XDP_PASS),
        jne(R6, MALFORMED, "out"),
        mov(R0, XDP_DROP),
        label("out"),
        exit_(),
    ]


# %% [markdown]
# ## Your pieces

# %% tags=["answer"]
def ipv4() -> list:
    """R4 points at an IPv4 header. Check it, set R7 = protocol, move R4 to
    the L4 header and jump to "l4"; jump to "count" when it is broken."""
    # Start the list with label("ipv4"): start() jumps there.
    # TODO 1: prove the 20 fixed bytes are in the frame
    # TODO 2: R7 = the protocol (u8 at offset 9)
    # TODO 3: R5 = IHL * 4; it must be at least 20 bytes
    # TODO 4: R4 += R5, and prove the whole header (options too) is in the frame
    # BEGIN SOLUTION
    return [
        label("ipv4"),
        mov(R5, R4), add(R5, 20),
        jgt(R5, R3, "count"),                 # 20 bytes are there
        ldx(U8, R7, R4, 9),                   # protocol
        ldx(U8, R5, R4, 0), and_(R5, 0x0F),   # IHL
        jlt(R5, 5, "count"),                  # shorter than 20 bytes: malformed
        lsh(R5, 2),
        add(R4, R5),                          # R4 = the L4 header
        jgt(R4, R3, "count"),                 # options cut short
        ja("l4"),
    ]
    # END SOLUTION


def l4() -> list:
    """R4 points at the L4 header, R7 holds its protocol. TCP needs 20 bytes,
    UDP 8; set R6 and jump to "count"."""
    # Start the list with label("l4"): ipv4() and ipv6() jump there.
    # TODO 5: TCP (6) with its 20 bytes in the frame -> R6 = TCP
    # TODO 6: UDP (17) with its 8 bytes in the frame -> R6 = UDP
    # TODO 7: any other protocol -> R6 = OTHER_IP
    # BEGIN SOLUTION
    return [
        label("l4"),
        jeq(R7, 6, "tcp"),
        jeq(R7, 17, "udp"),
        mov(R6, OTHER_IP),
        ja("count"),
        label("tcp"),
        mov(R5, R4), add(R5, 20),
        jgt(R5, R3, "count"),
        mov(R6, TCP),
        ja("count"),
        label("udp"),
        mov(R5, R4), add(R5, 8),
        jgt(R5, R3, "count"),
        mov(R6, UDP),
        ja("count"),
    ]
    # END SOLUTION


def parser(counts_fd: int) -> list:
    return [start(), ipv4(), ipv6(), l4(), count(counts_fd)]


# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# Every check has the same three instructions, with the size that must be
# present after R4:
#
# ```python
# mov(R5, R4), add(R5, 20),
# jgt(R5, R3, "count"),
# ```
#
# IHL: `ldx(U8, R5, R4, 0), and_(R5, 0x0F)`, then `jlt(R5, 5, "count")`
# and `lsh(R5, 2)` to turn words into bytes.
# </details>
#
# <details><summary>Hint 2</summary>
#
# After `add(R4, R5)`, R4 is the end of the IPv4 header, which is also the
# start of the L4 header: `jgt(R4, R3, "count")` proves the options are all
# there. In `l4()`, branch on R7 with `jeq(R7, 6, "tcp")` and
# `jeq(R7, 17, "udp")`, and give each branch its own label and size check.
# </details>

# %% [markdown]
# ## Try it

# %% tags=["try"]
with RawMap(MapType.ARRAY, 4, 8, 5, name="lab33_try") as counts:
    with load(parser(counts.fd), ProgType.XDP, name="lab33_try") as prog:
        for frame in (tcp_packet(), udp_packet(ip=6), cut(tcp_packet(), "l4", 10)):
            verdict = prog.test_run(frame).retval
            print(f"{describe(frame):70} -> {'PASS' if verdict == XDP_PASS else 'DROP'}")
    print(counts.ints())

# %% [markdown]
# ## Check

# %% tags=["check"]
check("3.3", parser=parser)
