# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 14.1: Unit tests for BPF programs
#
# **Objective.** Write the unit tests of two programs, run with
# `BPF_PROG_TEST_RUN`, with no network and no real syscall:
#
# * `port_guard`, an XDP program that drops UDP/IPv4 datagrams to the ports
#   in its `blocked` map, counts each drop, and passes everything else;
# * `open_counter`, a raw tracepoint program for `sys_enter` that counts the
#   `openat` and `openat2` calls of one process, given the arguments the
#   kernel would pass (`ctx_in`).
#
# **Expected observation.** A test suite is only as good as the bugs it
# catches. The check runs your two test functions against the programs as
# written below (your tests must pass) and then against **seven buggy
# versions** of them, each with a bug that people really write (a
# forgotten byte-order conversion, a protocol not checked, an unparsable
# frame dropped, a drop not counted, a syscall forgotten, a filter
# ignored, the wrong argument read). Your tests must fail every buggy
# version: an `AssertionError` (a failed `assert`) is a failed test.
#
# **You will use:** `ebpf_tutor.sandbox.packets` (`udp_packet`, `tcp_packet`,
# `icmp_packet`, `cut`), and the two small handles the check gives your
# tests: `guard` and `tracer` (below).

# %%
import os

from ebpf_tutor.labs import check
from ebpf_tutor.labs.checks.ch14 import OPEN_COUNTER, PORT_GUARD, open_counter, port_guard
from ebpf_tutor.sandbox import packets

XDP_DROP, XDP_PASS = 1, 2
SYS_OPENAT, SYS_OPENAT2, SYS_READ = 257, 437, 0        # x86_64 syscall numbers

# %% [markdown]
# ## The programs under test
#
# Read them: your tests check what they *should* do, whatever they do.

# %%
print(PORT_GUARD)

# %%
print(OPEN_COUNTER)

# %% [markdown]
# ## The handles
#
# `port_guard()` loads the XDP program and gives a `guard` with:
# `guard.block(port)` (puts `port` into `blocked`), `guard.run(frame)` (runs
# the program once on `frame` with `BPF_PROG_TEST_RUN`, returns its verdict:
# 1 is `XDP_DROP`, 2 is `XDP_PASS`) and `guard.drops()` (the drop counter).
#
# `open_counter()` loads the tracer and gives a `tracer` with:
# `tracer.watch(tgid)` (the process to count), `tracer.call(nr)` (runs the
# program once as if the calling thread entered syscall `nr`: `ctx_in` is
# the raw tracepoint's arguments, `(struct pt_regs *regs, long id)`) and
# `tracer.opens()` (the counter).
#
# Each is a context manager: the program is unloaded at the end of the
# `with`. Try them:

# %% tags=["try"]
with port_guard() as guard:
    guard.block(5353)
    print(guard.run(packets.udp_packet(5353)), guard.run(packets.udp_packet(53)), guard.drops())
with open_counter() as tracer:
    tracer.watch(os.getpid())
    tracer.call(SYS_OPENAT)
    print(tracer.opens())

# %% [markdown]
# ## Your tests
#
# Each function gets a freshly loaded program (empty maps) and must
# `assert` what the program must do. Think of the cases a bug would hide
# in: both byte orders of a port, the protocols and families that must
# pass, frames too short to parse, what is counted and what is not, every
# syscall that opens, the process that is not watched.

# %% tags=["answer"]
def test_port_guard(guard):
    # BEGIN SOLUTION
    guard.block(5353)                              # 0x14e9: differs from its byte swap
    assert guard.run(packets.udp_packet(5353)) == XDP_DROP
    assert guard.drops() == 1
    assert guard.run(packets.udp_packet(0xE914)) == XDP_PASS     # 5353 byte-swapped
    assert guard.run(packets.udp_packet(53)) == XDP_PASS
    assert guard.run(packets.tcp_packet(5353)) == XDP_PASS       # TCP is not UDP
    assert guard.run(packets.udp_packet(5353, ip=6)) == XDP_PASS  # IPv4 only
    assert guard.run(packets.icmp_packet()) == XDP_PASS
    full = packets.udp_packet(5353)
    for length in (14, 14 + 10, 14 + 20 + 4):                  # cut in each header
        assert guard.run(full[:length]) == XDP_PASS
    assert guard.drops() == 1                                   # only the one drop
    # END SOLUTION


def test_open_counter(tracer):
    # BEGIN SOLUTION
    tracer.watch(os.getpid())
    tracer.call(SYS_OPENAT)
    assert tracer.opens() == 1
    tracer.call(SYS_OPENAT2)
    assert tracer.opens() == 2
    tracer.call(SYS_READ)
    tracer.call(1)
    assert tracer.opens() == 2                                   # other syscalls not counted
    tracer.watch(os.getpid() + 1)                               # someone else
    tracer.call(SYS_OPENAT)
    assert tracer.opens() == 2
    # END SOLUTION

# %% [markdown]
# <details><summary>Hint 1: which inputs?</summary>
#
# For each line of the program, ask what input would make a wrong version
# of that line give a different answer. `ntohs(udp->dest)`: a port that is
# not the same byte-swapped (5353 is `0x14e9`, swapped `0xe914`), and the
# swapped port must pass. `ip->protocol != 17`: a TCP segment to the
# blocked port. The bounds checks: frames cut inside the IP header and
# inside the UDP header (`packets.udp_packet(5353)[:24]`).
# </details>
#
# <details><summary>Hint 2: what to assert</summary>
#
# Assert the verdict *and* the counter: a version that drops but does not
# count passes a test that looks at verdicts only. For the tracer: a
# counted `openat`, a counted `openat2`, an uncounted `read`, and a
# `openat` that is not counted because `watch()` names another process
# (`os.getpid() + 1`). The tracer counts the *calling* process, and with
# `BPF_PROG_TEST_RUN` that is you.
# </details>

# %% [markdown]
# ## Check

# %% tags=["check"]
check("14.1", test_port_guard=test_port_guard, test_open_counter=test_open_counter)
