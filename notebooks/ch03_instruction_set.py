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
# # Chapter 3: The BPF instruction set
#
# **After this chapter you will be able to**
#
# * name the eleven registers of the BPF machine and its calling convention;
# * read and write the 8-byte instruction format, by hand and with a small
#   Python assembler;
# * load a program with the raw `bpf()` system call and run it on crafted
#   packets with `BPF_PROG_TEST_RUN`, with no network at all;
# * attach a hand-written program to a tracepoint;
# * read the bytecode that clang produces, and what the verifier turned it into.
#
# In Chapters 1 and 2, BCC compiled C for you. This chapter removes every
# layer: we write the instructions ourselves, encode them into bytes, and hand
# them to the kernel with one system call. Nothing is hidden, so everything
# the verifier says will make sense afterwards.

# %% [markdown]
# ## 3.1 A small virtual machine
#
# eBPF is a 64-bit register machine with a deliberately small design, so
# that it maps one-to-one onto real CPUs (the JIT turns most instructions
# into a single x86 or arm64 instruction):
#
# | register | role |
# |---|---|
# | R0 | return value of helper calls, and of the program itself |
# | R1 - R5 | arguments of helper calls; **clobbered** by every call. At entry, R1 holds the context (the packet, the tracepoint record...) |
# | R6 - R9 | callee-saved: they survive helper calls |
# | R10 | frame pointer, read-only: the 512-byte stack lies just below it |
#
# A program is a list of instructions that ends in `exit`. It can call
# *helpers* (kernel functions with a fixed number) and, since Linux 5.13,
# *kfuncs* (kernel functions exported to BPF, named in the `call` by their
# BTF id, with `src` = 2), and read and write *maps*. The verifier tracks, for every register at every instruction, what
# kind of value it holds (a number, a pointer to the stack, to the context,
# to a packet, to a map value, or a pointer that may be NULL) and refuses any
# access it cannot prove safe.

# %%
import os
import re
import subprocess
import sys

import matplotlib.pyplot as plt
import pandas as pd

from ebpf_tutor import Program, VerifierError, packets
from ebpf_tutor.bpfsys.asm import *
from ebpf_tutor.bpfsys.asm.insn import CLASS_NAMES, JMP, PSEUDO_CALL, Insn
from ebpf_tutor.bpfsys.asm.jump import JMP_OPS
from ebpf_tutor.bpfsys import (XDP_DROP, XDP_MD, XDP_PASS, MapType, ProgLoadAttr, ProgType,
                               RawMap, attach_tracepoint, kernel_tgid, load, prog_info,
                               tracepoint_format)
from ebpf_tutor.kernel.btf import kernel_btf

# %% [markdown]
# ## 3.2 Eight bytes per instruction
#
# Every instruction has the same layout (`struct bpf_insn`):
#
# ```
#  byte:    0          1           2    3      4    5    6    7
#        +--------+-----+-----+----------+---------------------+
#        | opcode | src | dst |   off    |         imm         |
#        +--------+-----+-----+----------+---------------------+
#          8 bits  4     4     signed 16      signed 32 bits
# ```
#
# The low 3 bits of the opcode are the **class**: `alu64`/`alu` (64- and
# 32-bit arithmetic), `ldx`/`stx`/`st` (loads and stores), `ld` (the wide
# 64-bit load), `jmp`/`jmp32`. For arithmetic and jumps, bit 3 says whether
# the operand is `imm` (K) or the `src` register (X), and the high 4 bits
# name the operation. For loads and stores, the bits name the size (1, 2, 4
# or 8 bytes) and the addressing mode.
#
# The assembler in `ebpf_tutor.bpfsys.asm` builds instructions from Python calls.
# Here are a few, taken apart:

# %%
def taken_apart(insn: Insn) -> dict:
    raw = insn.encode()
    return {"instruction": str(insn).split(") ", 1)[1], "bytes": raw[:8].hex(" "),
            "opcode": f"0x{insn.opcode:02x}", "class": CLASS_NAMES[insn.cls],
            "dst": insn.dst, "src": insn.src, "off": insn.off, "imm": insn.imm}


pd.DataFrame([taken_apart(i) for i in [
    mov(R0, 42), add(R1, R2), add32(R1, 5), ldx(U32, R2, R1, 4),
    stx(U64, R10, R1, -8), jeq(R1, 0, 3), call("ktime_get_ns"), exit_()]])

# %% [markdown]
# Things to notice:
#
# * `off` and `imm` are little-endian on this machine: bytecode uses the
#   host's byte order (on s390x, a big-endian machine, the same program has
#   different bytes).
# * `mov(R0, 42)` and `add32(R1, 5)` differ in their class: `alu64` works
#   on the whole register (`r1`), `alu` on its low half (`w1`).
# * A jump's `off` counts instructions from the *next* one: `goto pc+3`
#   skips three.
# * A helper call carries the helper's number in `imm`: `ktime_get_ns` is 5.
#
# Decoding is the reverse, and gives back the same instructions:

# %%
code = assemble([mov(R0, 42), exit_()])
print(code.hex(" "))
print(decode(code))

# %% [markdown]
# ## 3.3 A first program, loaded by hand
#
# The smallest valid program sets R0 and exits. `listing()` prints it in the
# notation of the kernel's verifier log and of `bpftool`:

# %%
first = [
    mov(R0, 42),    # the return value
    exit_(),
]
print(listing(first))

# %% [markdown]
# To load it, `ebpf_tutor.bpfsys` calls `bpf(BPF_PROG_LOAD, attr, size)`
# through ctypes. `attr` is a C struct; these are the fields we fill in:
# the program type, the instructions and their count, the license, and a
# buffer for the verifier's log.

# %%
print([name for name, _ in ProgLoadAttr._fields_])

# %% [markdown]
# A socket filter is the oldest program type; its context is the packet.
# `BPF_PROG_TEST_RUN` runs a loaded program once on bytes we give it, here
# a UDP datagram built by `ebpf_tutor.sandbox.packets`, and hands back R0:

# %%
frame = packets.udp_packet(dport=53, payload=b"hello")
print(packets.describe(frame))
with load(first, ProgType.SOCKET_FILTER, name="ch03_first") as prog:
    result = prog.test_run(frame)
    log = prog.verifier_log
print("R0 at exit:", result.retval)
print(re.search(r"processed \d+ insns", log).group())

# %% [markdown]
# The verifier walked two instructions and accepted them. When the `with`
# block ends, the file descriptor is closed and the kernel frees the program.

# %% [markdown]
# ## 3.4 Arithmetic: 64 bits, 32 bits, and a few surprises
#
# A program returns 32 bits, so to see all 64 bits of a result we run it
# twice: once returning R0, once returning R0 shifted right by 32.

# %%
PACKET = packets.udp_packet()


def run64(body: list) -> int:
    """Run `body` (which leaves a value in R0) in the kernel; return R0's 64 bits."""
    halves = []
    for tail in ([], [rsh(R0, 32)]):
        with load([*body, *tail, exit_()], ProgType.SOCKET_FILTER, name="ch03_alu") as p:
            halves.append(p.test_run(PACKET).retval)
    return halves[1] << 32 | halves[0]


def as_text(body: list) -> str:
    return "; ".join(disasm_insn(i).split(") ", 1)[1] for i in resolve(body))


examples = [
    ([mov(R0, -1)], "a 64-bit op sign-extends its 32-bit imm"),
    ([mov32(R0, -1)], "a 32-bit op clears the upper half"),
    ([mov(R0, -1), add32(R0, 1)], "w0 wraps to 0, and the upper half is cleared"),
    ([ld_imm64(R0, 0x1122334455667788)], "a 64-bit constant needs ld_imm64 (two slots)"),
    ([mov(R0, 7), mov(R1, 0), div(R0, R1)], "division by zero gives 0, no trap"),
    ([mov(R0, 7), mov(R1, 0), mod(R0, R1)], "x % 0 leaves x"),
    ([mov(R0, -16), rsh(R0, 2)], "logical shift: zeros come in"),
    ([mov(R0, -16), arsh(R0, 2)], "arithmetic shift keeps the sign"),
    ([mov(R0, 5), neg(R0)], "two's complement"),
    ([mov(R0, 0x1234), to_be(R0, 16)], "host to big-endian: a swap on x86"),
]
pd.DataFrame([{"program": as_text(body), "R0 (hex)": f"0x{run64(body):016x}", "why": why}
              for body, why in examples])

# %% [markdown]
# Each line was verified, JIT-compiled and run by the kernel. Two details
# matter later: a 64-bit immediate is not possible in one instruction (our
# assembler refuses `mov(R0, 0xffffffff)` rather than silently give you -1),
# and `to_be` is how packet fields, which are big-endian, become numbers.

# %% tags=["raises-exception"]
mov(R0, 0xFFFFFFFF)

# %% [markdown]
# ## 3.5 Jumps, labels and loops
#
# Conditional jumps compare a register with another register or with `imm`,
# unsigned unless the name says signed (`jsgt`). Offsets are counted in
# instructions, which is tedious by hand, so the assembler takes label names
# and computes them. Here is a loop that adds up 1 + 2 + ... + n:

# %%
def sum_to(n: int) -> list:
    return [
        mov(R0, 0),
        mov(R1, n),
        label("loop"),
        add(R0, R1),
        sub(R1, 1),
        jne(R1, 0, "loop"),     # back to "loop" while r1 != 0
        exit_(),
    ]


print(listing(sum_to(10)))
print("sum_to(10) =", run64(sum_to(10)[:-1]))

# %% [markdown]
# `goto pc-3` jumps backwards. Since Linux 5.3 the verifier accepts loops,
# but only because it can *simulate* them: it follows the loop iteration by
# iteration until it sees the exit. The work grows with the bound, and a
# program may make the verifier process at most one million instructions.

# %%
bounds = [1, 10, 100, 1_000, 10_000, 50_000]
work = []
for n in bounds:
    with load(sum_to(n), ProgType.SOCKET_FILTER, name="ch03_loop") as p:
        work.append(int(re.search(r"processed (\d+) insns", p.verifier_log).group(1)))
print(dict(zip(bounds, work)))

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(5, 3))
ax.loglog(bounds, work, marker="o")
ax.axhline(1_000_000, color="red", linestyle="--", label="verifier limit")
ax.set_xlabel("loop bound n")
ax.set_ylabel("instructions the verifier processed")
ax.legend()
plt.tight_layout()

# %% [markdown]
# Three instructions per iteration (the loop's body), plus the three outside
# it: the verifier checks each iteration separately, because `r1` is a
# different known number each time. A loop over a value the verifier does
# not know (a packet length, say) needs an explicit bound it can see, or the
# `bpf_loop()` helper.

# %% [markdown]
# ## 3.6 Memory, and the verifier's view of it
#
# `ldx` loads, `stx` stores a register, `st` stores an immediate. The
# address is always a register plus a 16-bit offset, and what the register
# points to decides what is allowed. The stack is addressed from R10:

# %%
swap = [
    mov(R1, 1), mov(R2, 2),
    stx(U64, R10, R1, -8),     # *(u64 *)(r10 - 8) = r1
    stx(U64, R10, R2, -16),
    ldx(U64, R1, R10, -16),    # r1 = *(u64 *)(r10 - 16): now 2
    ldx(U64, R2, R10, -8),
    mov(R0, R1), lsh(R0, 4), or_(R0, R2),    # 0x21
]
print(hex(run64(swap)))

# %% [markdown]
# With `log_level=2`, the verifier writes its state after each instruction:
# the type it inferred for each register (`ctx()`, `fp-8`, a known number)
# and what each stack slot holds (`fp-8=...`). This is the verifier's view of
# your program, and reading it is the key to understanding a rejection.

# %% tags=["nbval-ignore-output"]
with load([*swap, exit_()], ProgType.SOCKET_FILTER, name="ch03_swap", log_level=2) as p:
    print(p.verifier_log)

# %% [markdown]
# And here is what it says about some classic mistakes. Each of these is
# refused at load time, with nothing run:

# %%
mistakes = {
    "read a register never written": [mov(R0, R2), exit_()],
    "write the frame pointer": [mov(R10, 0), mov(R0, 0), exit_()],
    "go below the 512-byte stack": [stx(U64, R10, R1, -520), mov(R0, 0), exit_()],
    "exit without setting R0": [exit_()],
    "jump out of the program": [mov(R0, 0), ja(5), exit_()],
    "loop forever": [mov(R0, 0), label("spin"), ja("spin")],
    "use R1 after a helper call": [call("ktime_get_ns"), mov(R0, R1), exit_()],
}
said = {}
for what, prog in mistakes.items():
    try:
        load(prog, ProgType.SOCKET_FILTER, name="ch03_mistake").close()
        said[what] = "accepted?!"
    except VerifierError as e:
        said[what] = e.summary
pd.Series(said, name="the verifier says").to_frame()

# %% [markdown]
# The last one is the calling convention at work: a helper call leaves R1 to
# R5 undefined, so anything you need afterwards must live in R6 to R9 or on
# the stack. `bpfsys.load` turns a rejection into a `VerifierError` that
# points at the instruction:

# %% tags=["raises-exception"]
load(mistakes["use R1 after a helper call"], ProgType.SOCKET_FILTER, name="ch03_mistake")

# %% [markdown]
# ## 3.7 Maps: a 64-bit load and a helper call
#
# A program refers to a map through a special `ld_imm64`: its `src` field
# is 1 (`BPF_PSEUDO_MAP_FD`) and its `imm` holds the map's file descriptor.
# At load time the kernel replaces the descriptor by the map's address. It
# is the only instruction that takes two slots:

# %%
for slot in range(2):
    print(ld_map_fd(R1, 7).encode()[8 * slot:8 * slot + 8].hex(" "))

# %% [markdown]
# Counting packets in an array map, by hand, follows the calling convention
# of `bpf_map_lookup_elem(map, &key)`: the map in R1, a *pointer* to the key
# in R2 (the key lives on the stack), the result in R0: a pointer to the
# value, or NULL. The verifier insists on the NULL test.

# %% tags=["nbval-ignore-output"]
counts = RawMap(MapType.ARRAY, 4, 8, 1, name="ch03_counts")
count_packets = [
    st(U32, R10, -4, 0),                 # key = 0, on the stack
    ld_map_fd(R1, counts.fd),            # R1 = the map
    mov(R2, R10), add(R2, -4),           # R2 = &key
    call("map_lookup_elem"),             # R0 = &value, or NULL
    jeq(R0, 0, "out"),
    mov(R1, 1),
    atomic_add(U64, R0, R1),             # *value += 1, safe against other CPUs
    label("out"),
    mov(R0, XDP_PASS),
    exit_(),
]
print(listing(count_packets))      # map[fd:N]: the fd of `counts` in this process

# %%
with load(count_packets, ProgType.XDP, name="ch03_count") as prog:
    prog.test_run(PACKET, repeat=1000)
    info = prog.info()
print("packets counted:", int.from_bytes(counts.lookup(0), "little"))

# %% [markdown]
# `repeat=1000` ran the program a thousand times in the kernel. What the
# kernel actually runs is not quite what we wrote: `info().xlated` returns
# the instructions after the verifier rewrote them
# (`BPF_OBJ_GET_INFO_BY_FD`). The map reference now names the map by its
# id (inside, the instruction holds the map's address), and the call to the
# lookup helper was replaced by the array lookup itself, inline: an index
# check, a shift and an add.
#
# Before those, R1 is moved from the map to the start of its values, by
# `offsetof(struct bpf_array, value)`. That number depends on how the kernel
# was configured and built, so the listing shows it by name, and only where
# it equals the offset BTF gives for the field.

# %%
print(f"we wrote {sum(i.slots for i in resolve(count_packets))} slots; "
      f"the kernel runs {len(info.xlated) // 8}")
value_offset = kernel_btf().member_offset("bpf_array", "value")
print(re.sub(rf"r1 \+= {value_offset}$", "r1 += offsetof(struct bpf_array, value)",
             disasm(info.xlated, map_ref="id"), flags=re.M))

# %%
counts.close()

# %% [markdown]
# ## 3.8 Packets: `data`, `data_end` and bounds checks
#
# An XDP program's context is `struct xdp_md`. The kernel's BTF gives its
# layout; `data` and `data_end` are loaded as 32-bit fields, and the
# verifier turns them into a packet pointer and an end pointer.

# %%
pd.DataFrame(kernel_btf().layout("xdp_md"), columns=["field", "offset", "size"])

# %% [markdown]
# A packet byte may be read only once a comparison has shown it lies before
# `data_end`. The pattern is always the same three instructions: copy the
# pointer, add the length needed, compare. This filter lets IPv4 through and
# drops everything else:

# %%
def ipv4_only(bounds_check: bool = True) -> list:
    check = [
        mov(R4, R2), add(R4, 14),
        jgt(R4, R3, "drop"),                 # not even an Ethernet header
    ]
    return [
        ldx(U32, R2, R1, XDP_MD["data"]),    # r2 = first byte
        ldx(U32, R3, R1, XDP_MD["data_end"]),  # r3 = one past the last byte
        check if bounds_check else [],
        ldx(U16, R5, R2, 12), to_be(R5, 16), # the EtherType, big-endian
        jne(R5, 0x0800, "drop"),
        mov(R0, XDP_PASS), exit_(),
        label("drop"),
        mov(R0, XDP_DROP), exit_(),
    ]


frames = {
    "IPv4 UDP": packets.udp_packet(),
    "IPv6 TCP": packets.tcp_packet(ip=6),
    "IPv4 ICMP echo": packets.icmp_packet(),
    "ARP request": packets.arp_packet(),
    "IPv4 cut to 20 bytes": packets.truncate(packets.udp_packet(), 20),
}
with load(ipv4_only(), ProgType.XDP, name="ch03_ipv4") as prog:
    verdicts = {what: "PASS" if prog.test_run(f).retval == XDP_PASS else "DROP"
                for what, f in frames.items()}
pd.DataFrame({"frame": [packets.describe(f) for f in frames.values()],
              "verdict": list(verdicts.values())}, index=list(frames))

# %% [markdown]
# The cut frame passes: this filter only looks at the EtherType, and those
# bytes are there. (`BPF_PROG_TEST_RUN` refuses frames shorter than an
# Ethernet header for XDP, so 14 bytes is the shortest test.) Now drop the
# bounds check and the verifier refuses to load the program:

# %% tags=["raises-exception"]
load(ipv4_only(bounds_check=False), ProgType.XDP, name="ch03_nocheck")

# %% [markdown]
# ## 3.9 A hand-written tracepoint program
#
# A tracepoint program receives in R1 a pointer to the event's record. The
# record's layout is published by the kernel in tracefs; here are the fields
# of `getpriority(which, who)`'s entry tracepoint:

# %%
for f in tracepoint_format("syscalls:sys_enter_getpriority").values():
    print(f"{f.c_type:15} {f.name:22} offset {f.offset:3}  size {f.size}")

# %% [markdown]
# Every syscall tracepoint has `__syscall_nr` at offset 8. This program
# counts calls per system call number, in a hash map. A hash map has no
# entry until one is created, so it first inserts 0 with `BPF_NOEXIST`
# (which fails harmlessly when the key exists), then increments. Only our
# own process is counted: `kernel_tgid()` is our process id as BPF sees it
# (inside a container with its own PID namespace, it differs from
# `os.getpid()`). The same program is attached to two tracepoints, each
# through `perf_event_open()` and the `PERF_EVENT_IOC_SET_BPF` ioctl.

# %%
per_syscall = RawMap(MapType.HASH, 4, 8, 16, name="ch03_per_sys")
count_syscalls = [
    mov(R6, R1),                          # the record; R1 will be clobbered
    call("get_current_pid_tgid"),
    rsh(R0, 32),                          # upper half: the process id
    jne(R0, kernel_tgid(), "out"),
    ldx(U32, R1, R6, 8),                  # __syscall_nr
    stx(U32, R10, R1, -4),                # key on the stack
    st(U64, R10, -16, 0),                 # value 0 on the stack
    ld_map_fd(R1, per_syscall.fd),
    mov(R2, R10), add(R2, -4),
    mov(R3, R10), add(R3, -16),
    mov(R4, 1),                           # BPF_NOEXIST: only if absent
    call("map_update_elem"),
    ld_map_fd(R1, per_syscall.fd),
    mov(R2, R10), add(R2, -4),
    call("map_lookup_elem"),
    jeq(R0, 0, "out"),
    mov(R1, 1), atomic_add(U64, R0, R1),
    label("out"),
    mov(R0, 0), exit_(),
]
with load(count_syscalls, ProgType.TRACEPOINT, name="ch03_per_sys") as prog:
    with attach_tracepoint(prog, "syscalls:sys_enter_getsid"), \
         attach_tracepoint(prog, "syscalls:sys_enter_getpriority"):
        for _ in range(5):
            os.getsid(0)
        for _ in range(3):
            os.getpriority(os.PRIO_PROCESS, 0)
    seen = per_syscall.ints()
per_syscall.close()
print("calls per syscall number, smallest count first:", sorted(seen.values()))

# %% tags=["nbval-ignore-output"]
seen     # keys: this architecture's syscall numbers (x86_64: getpriority 140, getsid 124)

# %% [markdown]
# ## 3.10 Reading what clang produced
#
# Let us go the other way: write C, let BCC's clang compile it, and read the
# bytecode. This XDP program drops ping requests:

# %%
DROP_PING = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

int drop_ping(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return XDP_PASS;
    if (ip->protocol != 1)                        /* ICMP */
        return XDP_PASS;
    unsigned char *icmp = (void *)ip + ip->ihl * 4;
    if ((void *)(icmp + 1) > data_end)
        return XDP_PASS;
    return icmp[0] == 8 ? XDP_DROP : XDP_PASS;   /* type 8: echo request */
}
"""
bcc_prog = Program(DROP_PING)
clang_code = bcc_prog.dump_func("drop_ping")      # the bytes clang produced
print(disasm(clang_code))

# %% [markdown]
# Compare with the C: the same three-instruction bounds checks we wrote by
# hand (`r3 = r1; r3 += 14; if r3 > r2 goto ...`), and the same
# `ihl * 4` arithmetic. Two choices of clang's stand out. It reads the
# EtherType byte by byte and compares it with `0x8`, which is `htons(0x0800)`
# folded at compile time. And it computes `ip->ihl * 4` as
# `r3 = *(u8 *)(r1 +14); r3 <<= 2; r3 &= 60`: `ihl` is a 4-bit bitfield, the
# low four bits of the IP header's first byte (the version is the high four),
# so clang loads the whole byte and must mask the version away. Shifting
# first and masking with 60 (`0b111100`, that is 15 × 4) gives
# `(byte & 15) * 4` in two instructions. The mask is the C semantics of the
# bitfield; clang knows nothing of the verifier. The verifier, for its part,
# tracks the result as an unknown number from 0 to 60 (a multiple of 4): the
# packet pointer moved by it has a variable but bounded offset, and the
# bounds check that follows (`r3 = r1; r3 += 1; if r3 > r2`) proves the ICMP
# byte is inside the packet whatever the value.
#
# Now let BCC load it, and ask `bpftool` what the kernel holds:

# %%
fn = bcc_prog.load_func("drop_ping", bcc_prog.XDP)
kernel = prog_info(fn.fd)
dump = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(kernel.id)],
                      capture_output=True, text=True, check=True).stdout
bpftool_lines = [ln for ln in dump.splitlines() if re.match(r"\s*\d+: \(", ln)]
ours = disasm(clang_code).splitlines()
differ = [(a, b) for a, b in zip(ours, bpftool_lines) if a != b]
print(f"{len(ours)} instructions; bpftool and our disassembler of clang's bytes agree "
      f"on {len(ours) - len(differ)}. The others:")
for a, b in differ:
    print(f"  clang:  {a.strip():40}  kernel: {b.strip()}")

# %% [markdown]
# The two lines that differ are the context accesses. Our program reads
# `struct xdp_md` (32-bit fields at offsets 0 and 4); the verifier rewrote
# them into 64-bit loads from the kernel's real `struct xdp_buff`. That is
# why the context is an ABI: its layout can stay fixed while the kernel's
# own structures change.
#
# Our disassembler also reads the kernel's version, from
# `BPF_OBJ_GET_INFO_BY_FD`, and agrees with bpftool on every line:

# %%
print(disasm(kernel.xlated).splitlines() == [ln.rstrip() for ln in bpftool_lines])

# %% [markdown]
# Bytecode is just bytes: load clang's output with our own loader, and test
# it on crafted frames:

# %%
with load(clang_code, ProgType.XDP, name="ch03_clang") as prog:
    for f in (packets.icmp_packet(), packets.icmp_packet(reply=True), packets.udp_packet()):
        verdict = "PASS" if prog.test_run(f).retval == XDP_PASS else "DROP"
        print(f"{packets.describe(f):45} -> {verdict}")
bcc_prog.close()

# %% [markdown]
# ## 3.11 Calling other BPF code: functions and tail calls
#
# Two instructions run BPF code that is not inline in the program.
#
# A **BPF-to-BPF call** is a `call` whose `src` field is 1
# (`BPF_PSEUDO_CALL`): `imm` is not a helper number but the distance, in
# instructions, to a function in the same program. The callee gets its
# arguments in R1 to R5 and its own stack frame (all frames of a call chain
# share the 512-byte limit), returns in R0, and the
# caller continues. Clang emits these for C functions it does not inline.
# Here `double(x)` is called with 20:

# %%
def call_local(offset: int) -> Insn:
    """Call the BPF function `offset` instructions after the next one."""
    return Insn(JMP | JMP_OPS["call"], 0, PSEUDO_CALL, 0, offset)


with_function = [
    mov(R1, 20),
    call_local(2),              # to instruction 1 + 1 + 2 = 4
    add(R0, 1),                 # back here with R0 = double(20)
    exit_(),
    # double(r1): a second function, with its own frame
    mov(R0, R1),
    add(R0, R1),
    exit_(),
]
print(listing(with_function))
with load(with_function, ProgType.SOCKET_FILTER, name="ch03_bpf2bpf") as prog:
    print("2 * 20 + 1 =", prog.test_run(PACKET).retval)

# %% [markdown]
# A **tail call** is the helper `bpf_tail_call(ctx, prog_array, index)`. It
# looks up a program in a map of type `PROG_ARRAY` and *jumps* to it: the
# target runs with the same context and replaces the caller, which never
# gets control back. If the slot is empty, the helper returns and the caller
# goes on. Below, the caller returns 1 unless the tail call happens, and the
# target returns 2:

# %%
jump_table = RawMap(MapType.PROG_ARRAY, 4, 4, 4, name="ch03_jumps")
target = load([mov(R0, 2), exit_()], ProgType.SOCKET_FILTER, name="ch03_target")
caller = [
    # R1 still holds the context, as the tail call needs it
    ld_map_fd(R2, jump_table.fd),
    mov(R3, 0),                 # index 0
    call("tail_call"),          # does not return if slot 0 holds a program
    mov(R0, 1),
    exit_(),
]
with load(caller, ProgType.SOCKET_FILTER, name="ch03_caller") as prog:
    print("slot 0 empty:  returns", prog.test_run(PACKET).retval)
    jump_table.update((0).to_bytes(4, sys.byteorder), target.fd.to_bytes(4, sys.byteorder))
    print("slot 0 filled: returns", prog.test_run(PACKET).retval)
target.close()
jump_table.close()

# %% [markdown]
# Writing the map from user space changed what the attached caller does, with
# no reload: that is how tools swap parts of a packet pipeline at run time,
# split one program into stages too large for the verifier together, or
# dispatch on a protocol number. A chain may hold at most 33 tail calls, and
# only programs of the same type can be in one `PROG_ARRAY`.

# %% [markdown]
# ## Recap
#
# * eBPF is a register machine: R0 result, R1-R5 arguments (clobbered by
#   calls), R6-R9 preserved, R10 the read-only frame pointer over 512 bytes
#   of stack.
# * Every instruction is 8 bytes (opcode, two registers, a 16-bit offset, a
#   32-bit immediate); only `ld_imm64` takes two slots, and a map reference
#   is an `ld_imm64` whose fd the kernel replaces.
# * `bpf(BPF_PROG_LOAD)` runs the verifier; `BPF_PROG_TEST_RUN` runs a
#   program on data you give it; a tracepoint attaches through a perf event.
# * The verifier tracks the type of every register: packet reads need a
#   bounds check, map lookups a NULL check, registers a value before use.
# * What runs is the verifier's rewrite of your code: compare `dump_func()`
#   with `bpftool prog dump xlated`.
# * A BPF-to-BPF call (`call` with `src` = 1) returns to its caller; a tail
#   call (`bpf_tail_call` through a `PROG_ARRAY`) replaces the caller.
#
# **Questions to test yourself**
#
# 1. Why does `mov(R0, 0xffffffff)` not give R0 = 4294967295, and what two
#    ways are there to get that value?
# 2. After `call("map_lookup_elem")`, which registers may you still read
#    without writing them first?
# 3. Why does the verifier need `if r3 > r2 goto` *before* a packet load,
#    and why is the same check not needed for a stack load?
# 4. The loop in 3.5 costs the verifier three instructions per iteration,
#    plus three. What happens at n = 300 000, at n = 400 000, and what would
#    you do instead?
# 5. A tail call and a BPF-to-BPF call both run another piece of BPF code.
#    Which one comes back, and which one can be replaced while the caller
#    keeps running?
#
# <details><summary>Answers (click to open)</summary>
#
# 1. The `imm` field is a signed 32-bit number, in which `0xffffffff` is -1,
#    and a 64-bit `mov` sign-extends it: R0 would be `0xffffffffffffffff`
#    (our assembler refuses to encode it, rather than silently give you
#    that). To get 4294967295: a 32-bit `mov32(R0, -1)`, since 32-bit
#    operations set the upper half to zero, or a two-slot `ld_imm64`, which
#    carries all 64 bits.
# 2. R0 (the result: a pointer to the value, or NULL, which you must test
#    before dereferencing), R6 to R9 (callee-saved: they keep what you put
#    in them), and R10 (the frame pointer). R1 to R5 are clobbered by the
#    call: the verifier marks them unreadable until written.
# 3. Packet data has a length known only at run time: the verifier tracks
#    the packet pointer's offset, and allows a load only when a comparison
#    with `data_end` has proved, on that path, that the bytes exist. The
#    stack has a fixed size (512 bytes) and R10 a fixed meaning, so the
#    verifier checks a stack access's offset at load time; it also checks
#    that the slot was written before it is read.
# 4. 3 × 300 000 + 3 = 900 003 processed instructions: under the limit of
#    one million, so the verifier accepts the program, after a long walk
#    (one saved state every 20 iterations: 15 001 of them). One trap: our
#    `load()` asks for the verifier's log, and that log outgrows even its
#    largest buffer (16 MiB), so the load fails with `ENOSPC`; a loader that
#    asks for no log (BCC and libbpf ask only after a failure) gets the
#    program. At n = 400 000 the count would pass one million, and the
#    verifier stops: "BPF program is too large. Processed 1000001 insn".
#    Instead: the `bpf_loop()` helper (5.17+), whose callback is verified
#    once whatever the count; the closed form n(n+1)/2 here; or leave the
#    work to user space.
# 5. A BPF-to-BPF call returns to its caller, like a C function call (with
#    its own stack frame, at most 8 frames deep). A tail call never comes
#    back: it replaces the running program with another, reusing its stack
#    frame, at most 33 times in a chain. Because the target is looked up in
#    a `PROG_ARRAY` map at run time, user space can swap it by writing
#    the map while the caller stays attached and running; a BPF-to-BPF
#    callee is part of the caller's own program and changes only with it.
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 3.1 | an XDP filter in raw instructions: only IPv4 UDP to one port passes | `labs/ch03/lab_3_1_port_filter.ipynb` |
# | 3.2 | a tracepoint program that records `lseek()` arguments of one process | `labs/ch03/lab_3_2_syscall_args.ipynb` |
# | 3.3 | an Ethernet/IPv4/IPv6/TCP/UDP parser with bounds checks, counting per protocol | `labs/ch03/lab_3_3_protocol_parser.ipynb` |
#
# Each lab ends with a check cell. `ebpf-tutor progress` shows what you have
# passed; the solutions are in `solutions/ch03/`.
