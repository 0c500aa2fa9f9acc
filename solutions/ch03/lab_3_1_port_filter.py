# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 3.1: A packet filter in raw instructions
#
# **Objective.** Write, instruction by instruction, an XDP program that lets
# through IPv4 UDP datagrams sent to one destination port and drops
# everything else. Your function `port_filter(port)` returns the program as
# a list of instructions for that port.
#
# **Expected observation.** The check picks a random port, assembles your
# program, loads it with the raw `bpf()` system call, and runs it with
# `BPF_PROG_TEST_RUN` on 13 crafted frames: UDP to the port (with and
# without IP options), UDP to another port, UDP *from* the port, TCP to the
# port, ICMP, IPv6, ARP, and frames cut short in the middle of a header.
# Only the three IPv4 UDP datagrams to the port may get `XDP_PASS`; every
# other frame must get `XDP_DROP`. Then it does it all again with another port.
#
# **You will use:** `ldx`, `mov`, `add`, `and_`, `lsh`, `to_be`, `jgt`,
# `jne`, labels, and `ebpf_tutor.bpfsys.load`.

# %% [markdown]
# ## Background
#
# An XDP program gets one argument, in R1: a pointer to `struct xdp_md`.
# Its first two fields are 32-bit values that the verifier turns into
# pointers: `data` (offset 0) is the first byte of the frame, `data_end`
# (offset 4) is one past the last byte.
#
# A frame starts with the 14-byte Ethernet header; bytes 12-13 are the
# EtherType (0x0800 for IPv4, 0x86DD for IPv6). Then the IPv4 header:
#
# | offset in IPv4 header | size | field |
# |---|---|---|
# | 0 | 1 | version (high 4 bits) and IHL, the header length in 32-bit words (low 4 bits) |
# | 9 | 1 | protocol: 6 TCP, 17 UDP, 1 ICMP |
# | 20 .. IHL*4 | | options, when IHL > 5 |
#
# The UDP header starts right after the IPv4 header, that is at
# `14 + IHL*4`: source port at +0, destination port at +2, both 16 bits.
#
# Two traps:
#
# * **Byte order.** Header fields are big-endian; `ldx(U16, ...)` reads in
#   the machine's order. `to_be(reg, 16)` converts (it swaps on x86 and arm64,
#   and does nothing on big-endian machines).
# * **The verifier.** Before any read at `ptr + k` of `size` bytes, the
#   verifier must have seen a comparison proving `ptr + k + size <= data_end`.
#   The usual pattern: copy the pointer, add the length, compare with
#   `data_end`, and jump to `drop` when it is past the end.

# %%
from ebpf_tutor.bpfsys.asm import *
from ebpf_tutor.bpfsys import XDP_DROP, XDP_MD, XDP_PASS, ProgType, load
from ebpf_tutor.labs import check
from ebpf_tutor.sandbox.packets import describe, tcp_packet, udp_packet

# %% [markdown]
# ## Your program
#
# The first two instructions and the two endings are given. Fill in the
# middle: every `jne`/`jgt` that rejects a frame jumps to `"drop"`; a frame
# that passes every test falls through to `XDP_PASS`. Keep R1 untouched
# after the start (you will not need it), and use R2 to R5 freely.

# %% tags=["answer"]
def port_filter(port: int) -> list:
    """XDP_PASS for IPv4 UDP datagrams to `port`, XDP_DROP for anything else."""
    prog = [
        ldx(U32, R2, R1, XDP_MD["data"]),       # r2 = first byte of the frame
        ldx(U32, R3, R1, XDP_MD["data_end"]),   # r3 = one past the last byte
    ]
    # TODO 1: prove that Ethernet + a minimal IPv4 header (14 + 20 bytes) are there
    # TODO 2: the EtherType (u16 at offset 12, big-endian) must be 0x0800
    # TODO 3: the IPv4 protocol (u8 at offset 14 + 9) must be 17
    # TODO 4: point a register at the UDP header (14 + IHL*4) and prove its 8 bytes are there
    # TODO 5: the destination port (u16 at +2 in the UDP header, big-endian) must be `port`
    # BEGIN SOLUTION
    prog += [
        mov(R4, R2), add(R4, 14 + 20),          # r4 = end of a minimal IPv4 header
        jgt(R4, R3, "drop"),
        ldx(U16, R5, R2, 12), to_be(R5, 16),    # EtherType
        jne(R5, 0x0800, "drop"),
        ldx(U8, R5, R2, 14 + 9),                # IPv4 protocol
        jne(R5, 17, "drop"),
        ldx(U8, R5, R2, 14), and_(R5, 0x0F), lsh(R5, 2),   # r5 = IHL * 4
        mov(R4, R2), add(R4, 14), add(R4, R5),  # r4 = UDP header
        mov(R5, R4), add(R5, 8),
        jgt(R5, R3, "drop"),
        ldx(U16, R5, R4, 2), to_be(R5, 16),     # destination port
        jne(R5, port, "drop"),
    ]
    # END SOLUTION
    prog += [
        mov(R0, XDP_PASS), exit_(),
        label("drop"),
        mov(R0, XDP_DROP), exit_(),
    ]
    return prog


# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# A bounds check, in instructions:
#
# ```python
# mov(R4, R2), add(R4, 34),     # r4 = data + 34
# jgt(R4, R3, "drop"),          # if r4 > data_end goto drop
# ```
#
# After it, the verifier knows bytes 0..33 may be read through R2. The
# EtherType is then `ldx(U16, R5, R2, 12), to_be(R5, 16)`.
# </details>
#
# <details><summary>Hint 2</summary>
#
# IHL is the low nibble of byte 14: `ldx(U8, R5, R2, 14), and_(R5, 0x0F),
# lsh(R5, 2)` gives the header length in bytes. The UDP header is at
# `R2 + 14 + R5`: build it in R4 with `mov`, `add(R4, 14)`, `add(R4, R5)`.
# Then check `R4 + 8 <= data_end` as in hint 1 before reading
# `ldx(U16, R5, R4, 2)`.
# </details>

# %% [markdown]
# ## Try it
#
# Load your filter for port 4242 and run it on two frames.

# %% tags=["try"]
print(listing(port_filter(4242)))
with load(port_filter(4242), ProgType.XDP, name="lab31_try") as prog:
    for frame in (udp_packet(dport=4242), tcp_packet(dport=4242)):
        verdict = prog.test_run(frame).retval
        print(f"{describe(frame):55} -> {'PASS' if verdict == XDP_PASS else 'DROP'}")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("3.1", port_filter=port_filter)
