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
# # Chapter 12: Performance
#
# **After this chapter you will be able to**
#
# * measure what a BPF program costs per run with the kernel's own
#   statistics (`BPF_ENABLE_STATS`: `run_time_ns` / `run_cnt`), and say
#   which of bpftool's profiling commands work on a given machine;
# * show, with a count you can check, that a plain `+=` on a shared map
#   value loses updates when two CPUs run the program, and pick between
#   an atomic add and a per-CPU map by measuring both;
# * choose between a ring buffer and a perf buffer from measured throughput,
#   losses and the cost each puts on the traced process;
# * keep a tracer's overhead under a target with adaptive sampling that user
#   space steers through a map, without biasing the sample;
# * read and empty a large map in one batch call instead of three system
#   calls per key.
#
# Every figure in this chapter comes from a run in this notebook, on this
# machine, repeated so that you see its spread. Timings differ from machine
# to machine, so the cells that print raw timings are not compared when the
# course is tested; the verdicts they lead to (lost counts: yes or no, which
# way is cheaper) are printed by separate cells, which are.
#
# Every code cell talks to the real kernel. Run them in order with the
# **eBPF (root)** kernel.

# %%
import subprocess
import threading
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ebpf_tutor import Program, perfcases
from ebpf_tutor.bpfsys.programs import prog_id, prog_info
from ebpf_tutor.bpfsys.stats import ProgStats, run_time_stats
from ebpf_tutor.contention import hammer, new_marker, usable_cpus

CPUS = usable_cpus()[:2]
print("CPUs used for contention:", len(CPUS))

# %% [markdown]
# ## 12.1 A workload whose size we know
#
# To measure, we need the program to run a known number of times, on two
# CPUs at once, and nobody else's activity in the count. The course's
# `contention.hammer` does that: it starts one small C process per CPU,
# pinned there, and all of them call `close(marker)` the same number of
# times, starting together. `marker` is a descriptor number nobody has
# open (it is above `fs.nr_open`, the most any process may have, here
# 1,048,576), so each call fails at once with `EBADF`, and
# a program on `syscalls:sys_enter_close` that keeps only
# `args->fd == marker` counts exactly these calls.

# %%
marker = new_marker()
CLOSE_COUNT = r"""
BPF_PERCPU_ARRAY(calls, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
    int zero = 0;
    u64 *n = calls.lookup(&zero);
    if (n)
        *n += 1;
    return 0;
}
"""
nr_open = int(open("/proc/sys/fs/nr_open").read())
print("fs.nr_open:", nr_open, "| the marker is above it:", marker > nr_open)
with Program(CLOSE_COUNT, cflags=[f"-DMARKER={marker}"]) as prog:
    runs = hammer(marker, 50_000, CPUS)
    slots = prog["calls"][0]                      # one value per possible CPU
    per_cpu = [slots[cpu] for cpu in CPUS]
print("calls made:", sum(r.calls for r in runs), "| counted per CPU:", per_cpu)

# %% [markdown]
# Each pinned process's calls were counted on its own CPU. (The per-CPU
# map used here is the subject of section 12.3.)

# %% [markdown]
# ## 12.2 What a program costs: `BPF_ENABLE_STATS`
#
# The kernel can time every run of every BPF program: it then adds the
# nanoseconds of each run to the program's `run_time_ns` and 1 to its
# `run_cnt`. Reading the clock twice per run costs time itself, so this is
# off by default. It is on while some process holds the file descriptor
# that the `bpf(BPF_ENABLE_STATS)` command returns (or while the sysctl
# `kernel.bpf_stats_enabled` is 1). `bpfsys.stats.run_time_stats()` is that
# descriptor, closed when its `with` block ends; `ProgStats.of(fd)` reads the
# two counters through `BPF_OBJ_GET_INFO_BY_FD`.

# First 20,000 calls with statistics off, then 20,000 with them on. (The
# first line can show runs if another process on the machine holds
# statistics on at the same time: the switch is machine-wide. That is why
# its output is not compared when the course is tested.)

# %% tags=["nbval-ignore-output"]
with Program(CLOSE_COUNT, cflags=[f"-DMARKER={marker}"]) as prog:
    fd = prog.funcs[b"tracepoint__syscalls__sys_enter_close"].fd
    hammer(marker, 20_000, CPUS[:1])
    print("stats off:", ProgStats.of(fd))
    with run_time_stats():
        before = ProgStats.of(fd)
        hammer(marker, 20_000, CPUS[:1])
        used = ProgStats.of(fd) - before

# %%
print("stats on: at least 20000 runs counted:", used.run_cnt >= 20_000)

# %% [markdown]
# The program runs for *every* `close()` on the machine (the marker test
# is inside it), so `run_cnt` is at least our 20,000, plus whatever else
# closed files meanwhile. Here is the cost per run:

# %% tags=["nbval-ignore-output"]
print(f"{used.run_cnt} runs, {used.run_time_ns} ns in all: {used.ns_per_run:.1f} ns per run")

# %% [markdown]
# The timing has a price of its own: two clock reads and a counter update
# around *every* run of *every* BPF program on the machine, as long as any
# process holds statistics on. To see it, one pinned process makes 200,000
# calls with statistics off, then 200,000 with them on, seven times in
# turn, and `hammer` reports what each call cost it in CPU time (the
# system call and every BPF program it runs). If another process holds
# statistics on during the "off" rounds, the difference vanishes: this
# cell's output is not compared when the course is tested.

# %% tags=["nbval-ignore-output"]
timed = {"off": [], "on": []}
with Program(CLOSE_COUNT, cflags=[f"-DMARKER={marker}"]) as prog:
    for _ in range(7):
        r, = hammer(marker, 200_000, CPUS[:1])
        timed["off"].append(r.cpu_ns / r.calls)
        with run_time_stats():
            r, = hammer(marker, 200_000, CPUS[:1])
            timed["on"].append(r.cpu_ns / r.calls)
timed = pd.DataFrame(timed)
print("CPU ns per close() call, 7 rounds each:")
print(timed.agg(["mean", "std", "min", "max"]).round(1))
print(f"median extra per call with statistics on: {(timed['on'] - timed['off']).median():.1f} ns")

# %% [markdown]
# Compare that extra with the program's own run time above: on a virtual
# machine, where reading the clock is not free, the timing can cost as much
# as a small program itself. That is why the switch is off by default, and
# why you turn it on to measure, not forever.
#
# `bpftool` shows the same two counters next to each program while stats
# are on, so you can watch a program in production without any code:

# %% tags=["nbval-ignore-output"]
with Program(CLOSE_COUNT, cflags=[f"-DMARKER={marker}"]) as prog, run_time_stats():
    pid_ = prog_id(prog.funcs[b"tracepoint__syscalls__sys_enter_close"].fd)
    hammer(marker, 20_000, CPUS[:1])
    print(subprocess.run(["bpftool", "prog", "show", "id", str(pid_)],
                         capture_output=True, text=True).stdout)

# %% [markdown]
# Two other tools you will read about do not work on this machine. We ran
# them: `bpftool prog profile` (hardware counters per program) needs a
# bpftool built with BPF skeletons, and `bpftool prog dump jited` (the
# machine code the JIT made) needs one built with libbfd. Debian 12's
# bpftool has neither. (Hardware counters, which `prog profile` reads, are
# missing in this virtual machine anyway: `perf stat -e instructions` reports
# `<not supported>`, see `benchmarks/ch12.md`.) The cell below runs both
# bpftool commands and prints the first line of what each said.

# %%
with Program(CLOSE_COUNT, cflags=[f"-DMARKER={marker}"]) as prog:
    pid_ = prog_id(prog.funcs[b"tracepoint__syscalls__sys_enter_close"].fd)
    for cmd in (["prog", "profile", "id", str(pid_), "duration", "1", "cycles"],
                ["prog", "dump", "jited", "id", str(pid_)]):
        r = subprocess.run(["bpftool", *cmd], capture_output=True, text=True)
        said = (r.stdout + r.stderr).strip().splitlines()
        print(f"bpftool {' '.join(cmd[:2])}: {said[0] if said else 'ok'}")

# %% [markdown]
# What works everywhere is what we use from here on: `run_time_ns /
# run_cnt` per program, counts that we check against a known workload, and
# the wall-clock time of the process that pays for the tracing.

# %% [markdown]
# ## 12.3 Counting from two CPUs: plain, atomic, per-CPU
#
# A counter in a map value looks innocent:
#
# ```c
# u64 *c = count.lookup(&zero);
# if (c) *c += 1;
# ```
#
# BPF has no "add to memory" instruction that is not atomic, so `*c += 1`
# compiles to three: load the value into a register, add 1, store it back.
# If two CPUs load the same old value, both store old + 1, and one count
# is gone. There are two cures:
#
# * `__sync_fetch_and_add(c, 1)`: one atomic add instruction (BPF's
#   `BPF_ATOMIC` with `BPF_ADD`; the x86 JIT makes it a `lock add`, or a
#   `lock xadd` when the program uses the old value). Exact, but both CPUs
#   write the same cache line, which has to move from one CPU's cache to
#   the other at every update.
# * `BPF_PERCPU_ARRAY`: every CPU gets its own copy of the value. A program
#   sees only its CPU's copy, and one run of a program is never interrupted
#   by another run on the same CPU, so the plain `+=` is exact there. User
#   space reads the copies and adds them up.
#
# `perfcases.COUNTER_C` has the three programs. All three are attached at
# once, each with its own map, and two pinned processes call `close(marker)`
# 500,000 times each, together. Five runs:

# %%
print(perfcases.COUNTER_C["plain +="])

# %% [markdown]
# We cannot dump the JIT's machine code here (section 12.2), but the
# instructions after the verifier show how each program updates its
# counter: the plain and per-CPU ones store back (opcode `0x7b`, a 64-bit
# store) the value they loaded and added 1 to, the atomic one makes a single
# atomic add (opcode `0xdb` with `BPF_ADD` in its `imm`, and no `BPF_FETCH`:
# the old value is not used):

# %%
for name, src in perfcases.COUNTER_C.items():
    with Program(src, cflags=[f"-DMARKER={marker}"]) as prog:
        xl = prog_info(next(iter(prog.funcs.values())).fd).xlated
    ops = [(xl[i], int.from_bytes(xl[i + 4:i + 8], "little")) for i in range(0, len(xl), 8)]
    print(f"{name:9} 64-bit stores: {sum(op == 0x7b for op, _ in ops)}, "
          f"atomic adds: {sum(op == 0xdb and imm == 0x00 for op, imm in ops)}")

# %% tags=["nbval-ignore-output"]
counts = perfcases.counters(calls=500_000, runs=5, cpus=CPUS)
counts.pivot(index="run", columns="counter", values="lost")

# %% [markdown]
# The verdicts, from those five runs:

# %%
by = counts.groupby("counter")
print("expected per run:", counts["expected"].iloc[0])
print("plain += lost counts in at least one run:", bool((by.get_group("plain +=")["lost"] > 0).any()))
print("atomic exact in every run:", bool((by.get_group("atomic")["lost"] == 0).all()))
print("per-CPU exact in every run:", bool((by.get_group("per-CPU")["lost"] == 0).all()))

# %% [markdown]
# How much each way costs per run, from `BPF_ENABLE_STATS` in the same five
# runs (mean and standard deviation):

# %% tags=["nbval-ignore-output"]
cost = by["ns_per_run"].agg(["mean", "std", "min", "max"]).round(1)
lost = by["lost"].agg(["mean", "std", "min", "max"])
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.bar(lost.index, lost["mean"], yerr=lost["std"], capsize=4, color="tab:red")
ax1.set_title("counts lost of 1,000,000 (mean of 5 runs)")
ax2.bar(cost.index, cost["mean"], yerr=cost["std"], capsize=4)
ax2.set_title("ns per run (BPF_ENABLE_STATS)")
plt.tight_layout()
cost

# %% tags=["nbval-ignore-output"]
means = by["ns_per_run"].mean()
print("per-CPU cheaper per run than atomic:", bool(means["per-CPU"] < means["atomic"]))
print("per-CPU cheaper per run than plain +=:", bool(means["per-CPU"] < means["plain +="]))

# %% [markdown]
# Two things to read in the numbers. The plain `+=` loses a small, varying
# number of counts: few enough to go unnoticed in a dashboard, which is
# what makes it dangerous. And it is *not* much cheaper than the atomic
# add: when the two CPUs really collide, most of the cost of both is the
# shared cache line moving between the CPUs, not the `lock` prefix. The
# per-CPU counter touches only memory its own CPU owns, so its cost does
# not depend on the other CPU at all: look at its tiny spread. How much it
# saves depends on how often the CPUs collide, which varies with what else
# the machine is doing, so the last cell's two lines are not compared when
# the course is tested (the chapter's benchmark report, `benchmarks/ch12.md`,
# has repeated runs, and one where the gap was four-fold). The price is paid on
# read: user space gets one value per CPU and adds them up, so a per-CPU
# map is the right tool for counters that are written often and read
# rarely, which is what most counters are. (An atomic shared value is
# still the tool for a value the program must *decide* on, such as a
# global rate limit: a per-CPU copy cannot see the others.)
#
# BCC's `table.increment(key)` is a convenience for the same thing. Is it
# atomic? BCC 0.26 has `increment` and `atomic_increment`; the same test
# tells them apart:

# %%
INCREMENTS = r"""
BPF_ARRAY(by_increment, u64, 1);
BPF_ARRAY(by_atomic_increment, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
    int zero = 0;
    by_increment.increment(zero);
    by_atomic_increment.atomic_increment(zero);
    return 0;
}
"""
lost_by = {"increment": 0, "atomic_increment": 0}
with Program(INCREMENTS, cflags=[f"-DMARKER={marker}"]) as prog:
    for _ in range(3):
        prog["by_increment"].clear()
        prog["by_atomic_increment"].clear()
        sent = sum(r.calls for r in hammer(marker, 400_000, CPUS))
        for name in lost_by:
            lost_by[name] += sent - prog[f"by_{name}"][0].value
print("increment() lost counts:", lost_by["increment"] > 0,
      "| atomic_increment() lost counts:", lost_by["atomic_increment"] > 0)

# %% [markdown]
# `increment()` is a plain `+=`: that is why the course's solutions count
# with `__sync_fetch_and_add`, `atomic_increment` or per-CPU maps. Lab 12.1
# makes you write both cures, on packets.

# %% [markdown]
# ## 12.4 Getting events out: ring buffer or perf buffer
#
# Two BPF maps carry events to user space:
#
# | | `BPF_PERF_OUTPUT` (perf buffer) | `BPF_RINGBUF_OUTPUT` (ring buffer, kernel 5.8+) |
# |---|---|---|
# | buffers | one per CPU | one, shared by all CPUs |
# | order across CPUs | lost: each CPU's buffer is read separately | kept: one sequence |
# | writing an event | build it on the stack, `perf_submit` copies it | `ringbuf_reserve` gives a slot in the ring; fill it in place, `ringbuf_submit` (zero copy), or `ringbuf_output` to copy |
# | when full | the event is dropped, the kernel counts it and user space hears of it later (`lost_cb`) | the reservation fails: your program knows at once, and must count it |
# | waking the reader | BCC asks for a wake-up after every event (`wakeup_events=1`) | at a submit only if the reader had read everything before it (it may be asleep); flags can force or skip it |
#
# `perfcases.EVENTS_C` is one program written both ways (`#ifdef RINGBUF`),
# each given 256 KiB in all: the ring buffer 64 pages, the perf buffer 32
# pages on each of the two CPUs. One pinned process calls `close(marker)` at
# a paced rate, one event per call, and a Python callback in this notebook
# counts what arrives. We repeat each rate three times. (With one producer,
# only CPU 0's half of the perf buffer fills: 128 KiB against the ring's
# 256 KiB. Equal memory in all is the fair terms for a tracer whose events
# come from every CPU; here it favours the ring buffer's share delivered,
# and it does not change what each event costs the producer, which is the
# comparison the verdicts below make.)

# %% tags=["nbval-ignore-output"]
RATES = [10_000, 100_000, 1_000_000, 0]          # events/s; 0: as fast as the process can
channels = pd.concat([perfcases.event_channels(rate, seconds=0.5).assign(rep=rep)
                      for rep in range(3) for rate in RATES], ignore_index=True)
channels["delivered"] = channels["received"] / channels["sent"]
summary = channels.groupby(["rate", "channel"]).agg(
    delivered=("delivered", "mean"), delivered_sd=("delivered", "std"),
    lost=("lost", "mean"), producer_cpu_ns=("producer_cpu_ns_per_event", "mean"),
    producer_sd=("producer_cpu_ns_per_event", "std")).round(3)
summary

# %% [markdown]
# The same, drawn: what share of the events arrived, and what each event
# cost the process that made it, at each rate: its CPU time per call (the
# system call, the BPF program and whatever else runs in its context, such
# as a wake-up; time it spent waiting for the CPU is left out, so a busy
# machine does not blur it). "flat out" is the process calling as fast as
# it can.

# %% tags=["nbval-ignore-output"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
labels = [f"{r:,}/s" if r else "flat out" for r in RATES]
for ch, marker_ in (("ring buffer", "o"), ("perf buffer", "s")):
    rows = summary.xs(ch, level="channel").reindex(RATES)
    ax1.errorbar(labels, rows["delivered"], yerr=rows["delivered_sd"], marker=marker_, label=ch,
                 capsize=3)
    ax2.errorbar(labels, rows["producer_cpu_ns"], yerr=rows["producer_sd"], marker=marker_,
                 label=ch, capsize=3)
ax1.set_title("share of events delivered")
ax2.set_title("producer: CPU ns per call")
ax2.set_yscale("log")
ax1.legend()
plt.tight_layout()

# %% [markdown]
# What holds on any machine, printed from those runs:

# %%
low = channels[channels["rate"] == RATES[0]]
print(f"at {RATES[0]:,} events/s both delivered every event in every run:",
      bool((low["received"] == low["sent"]).all()))
print("every event accounted for (received + counted lost = sent) by both, at every rate:",
      bool((channels["received"] + channels["lost"] == channels["sent"]).all()))
flat = channels[channels["rate"] == 0].groupby("channel")["producer_cpu_ns_per_event"].mean()
print("flat out, the perf buffer cost the traced process more CPU per call than the ring buffer:",
      bool(flat["perf buffer"] > flat["ring buffer"]))

# %% [markdown]
# Read the plot from left to right. At low rates both deliver everything:
# the choice does not matter. As the rate rises, the Python reader (a
# callback per event) falls behind and both start to drop. The two buffers
# then fail differently:
#
# * The **perf buffer** makes the producer pay: with a wake-up after every
#   event, each `close()` also wakes the reader, and flat out the traced
#   process spends more CPU time per call than with the ring buffer (the
#   right-hand plot). That
#   slowdown is why it loses less flat out: it throttles the very process
#   you meant to observe.
# * The **ring buffer** keeps the producer fast and drops what does not fit,
#   and your program knows about each drop as it happens (the reservation
#   returns NULL), so the count of losses is exact and immediate.
#
# Either way the lesson for a tracer is the same: at a high event rate, the
# way out is not a faster channel but fewer events: aggregate in the kernel
# (chapters 2 and 13) or sample (section 12.5). The course's own consumer,
# `RingBufferConsumer`, reads a ring buffer in batches with numpy, many times
# faster than a Python callback per event; `benchmarks/REPORT.md` measured it.
#
# ### Zero copy, measured
#
# `ringbuf_output` copies an event built elsewhere into the ring;
# `ringbuf_reserve` + `ringbuf_submit` writes it in place. A small event
# costs little to copy, so take a large one: a 4 KiB record (a packet
# header plus payload, a file's first page), too big for the 512-byte
# stack, so the copying version builds it in a per-CPU map first. Both
# programs fill in the same header word; 10,000 calls at 20,000 per second,
# with the ring drained as they come (and big enough to hold them all, so
# that no reservation fails and takes the cheap way out), three times each
# way. At this pace other processes' `close()` calls are not negligible
# next to ours, so we divide the program's total run time by *our* calls
# (their runs stop at the filter, and cost both versions the same):

# %%
ZERO_COPY = r"""
struct big { u64 header[4]; u8 payload[4064]; };      /* 4 KiB */
BPF_RINGBUF_OUTPUT(events, 16384);                    /* 64 MiB: holds all 10,000 */
BPF_PERCPU_ARRAY(scratch, struct big, 1);             /* room to build one, per CPU */

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
#ifdef RESERVE
    struct big *e = events.ringbuf_reserve(sizeof(*e));   /* a slot in the ring */
    if (!e)
        return 0;
    e->header[0] = bpf_ktime_get_ns();                    /* written in place */
    events.ringbuf_submit(e, 0);
#else
    int zero = 0;
    struct big *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    e->header[0] = bpf_ktime_get_ns();
    events.ringbuf_output(e, sizeof(*e), 0);               /* 4 KiB copied */
#endif
    return 0;
}
"""


def ns_per_event(reserve: bool, calls: int = 10_000) -> tuple[float, int]:
    """The program's run time per call we made, and how many events arrived."""
    flags = [f"-DMARKER={marker}"] + (["-DRESERVE"] if reserve else [])
    got = [0]
    with Program(ZERO_COPY, cflags=flags) as prog, run_time_stats():
        prog["events"].open_ring_buffer(lambda *a: got.__setitem__(0, got[0] + 1))
        fd = prog.funcs[b"tracepoint__syscalls__sys_enter_close"].fd
        worker = threading.Thread(target=hammer, args=(marker, calls, CPUS[:1]),
                                  kwargs={"rate": 20_000})
        before = ProgStats.of(fd)
        worker.start()
        while worker.is_alive():
            prog.ring_buffer_poll(10)
        prog.ring_buffer_consume()
        return (ProgStats.of(fd) - before).run_time_ns / calls, got[0]


zc = pd.DataFrame([dict(zip(("way", "ns_per_event", "received"),
                            (way, *ns_per_event(way == "reserve/submit"))))
                   for _ in range(3) for way in ("reserve/submit", "copy (ringbuf_output)")])

# %% tags=["nbval-ignore-output"]
zc.groupby("way")["ns_per_event"].agg(["mean", "std", "min", "max"]).round(1)

# %%
zmean = zc.groupby("way")["ns_per_event"].mean()
print("every event arrived, both ways:", bool((zc["received"] == 10_000).all()))
print("reserve/submit cheaper than the copy for a 4 KiB event:",
      bool(zmean["reserve/submit"] < zmean["copy (ringbuf_output)"]))

# %% [markdown]
# Lab 12.2 builds the reserve/submit producer with an exact loss count.

# %% [markdown]
# ## 12.5 Adaptive sampling under an overhead target
#
# Say a tracer may use at most 5% of one CPU. Its cost has two parts:
#
# * a small cost for **every** event the program sees (the tracepoint fires,
#   the filter runs, a coin is flipped);
# * a much larger cost for every event **sent** to user space (the ring
#   buffer, the wake-up, and above all the reader's work).
#
# Sampling 1 event in `every` cuts the second part by `every`. The right
# `every` depends on the event rate, which changes, so user space measures
# and adjusts it, and writes it into a map the program reads on every run.
#
# What we measure each tick (0.2 s) of wall time:
# * the BPF program's run time, from `BPF_ENABLE_STATS`;
# * the reader's CPU time (`time.thread_time()` of the thread that polls
#   the ring and runs the callbacks).
#
# Their sum over the tick's length is the overhead, as a share of one CPU.
# If the sampled part dominates, the overhead scales like 1/`every`, so the
# controller sets `every ← every × overhead / target` (at most ×4 or ÷4 per
# tick, so that one odd tick cannot swing it wildly).

# %%
SAMPLER = r"""
struct sample { u64 ts; u32 pid; u32 every; };
BPF_ARRAY(config, u32, 1);                  /* [0]: keep 1 event in `every` */
BPF_RINGBUF_OUTPUT(samples, 256);

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
    int zero = 0;
    u32 *cfg = config.lookup(&zero);
    u32 every = cfg && *cfg > 1 ? *cfg : 1;
    if (bpf_get_prandom_u32() % every != 0)   /* a coin per event: no aliasing */
        return 0;
    struct sample *s = samples.ringbuf_reserve(sizeof(*s));
    if (!s)
        return 0;
    s->ts = bpf_ktime_get_ns();
    s->pid = bpf_get_current_pid_tgid() >> 32;
    s->every = every;                        /* each sample stands for `every` events */
    samples.ringbuf_submit(s, 0);
    return 0;
}
"""
TARGET = 0.05                                # 5% of one CPU


def next_every(every: int, overhead: float, target: float = TARGET) -> int:
    """every x overhead / target, changed by at most 4x per tick, at least 1."""
    wanted = every * overhead / target
    return max(1, round(min(max(wanted, every / 4), every * 4)))

# %% [markdown]
# The reader does what a real one would do with each sample: decode it
# into a Python object (`table.event`) and keep a weighted count. The
# workload runs in three steps of 1.5 s each: 20,000, then 200,000, then
# 50,000 calls per second.

# %%
STEPS = [(20_000, 1.5), (200_000, 1.5), (50_000, 1.5)]


def adaptive_run(adapt: bool) -> pd.DataFrame:
    """Run the steps; with adapt=False, every stays 1 (sample everything)."""
    estimate = [0]
    ticks = []
    with Program(SAMPLER, cflags=[f"-DMARKER={marker}"]) as prog, run_time_stats():
        table, fd = prog["samples"], prog.funcs[b"tracepoint__syscalls__sys_enter_close"].fd

        def on_sample(_ctx, data, _size):
            estimate[0] += table.event(data).every

        table.open_ring_buffer(on_sample)
        work = threading.Thread(target=lambda: [hammer(marker, int(r * s), CPUS[:1], rate=r)
                                                for r, s in STEPS])
        every, t0 = 1, time.monotonic()
        last = (t0, time.thread_time(), ProgStats.of(fd), 0)
        work.start()
        while work.is_alive():
            while time.monotonic() < last[0] + 0.2:
                prog.ring_buffer_poll(10)
            now, cpu, stats = time.monotonic(), time.thread_time(), ProgStats.of(fd)
            bpf_ns = (stats - last[2]).run_time_ns
            overhead = (bpf_ns / 1e9 + cpu - last[1]) / (now - last[0])
            ticks.append({"t": now - t0, "events_per_s": (estimate[0] - last[3]) / (now - last[0]),
                          "every": every, "overhead": overhead})
            if adapt:
                every = next_every(every, overhead)
                prog["config"][0] = prog["config"].Leaf(every)
            last = (now, cpu, stats, estimate[0])
        prog.ring_buffer_consume()
    total = sum(int(r * s) for r, s in STEPS)
    print(f"{'adaptive' if adapt else 'sample everything'}: estimated {estimate[0]:,} events "
          f"of {total:,} ({estimate[0] / total - 1:+.1%})")
    return pd.DataFrame(ticks)

# %% tags=["nbval-ignore-output"]
fixed = adaptive_run(adapt=False)
adaptive = adaptive_run(adapt=True)

# %% tags=["nbval-ignore-output"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
for df, label in ((fixed, "sample everything"), (adaptive, "adaptive")):
    ax1.plot(df["t"], 100 * df["overhead"], marker=".", label=label)
ax1.axhline(100 * TARGET, color="gray", ls="--", label="target")
ax1.set_ylabel("% of one CPU")
ax1.set_xlabel("s")
ax1.legend()
ax2.plot(adaptive["t"], adaptive["every"], marker=".", color="tab:orange")
ax2.set_ylabel("adaptive: keep 1 in every")
ax2.set_xlabel("s")
ax2.set_ylim(bottom=0)
plt.tight_layout()

# %% [markdown]
# The verdicts. Each tick is put with the step whose rate is nearest to
# the rate it measured (starting a step's process can take a moment on a
# busy machine, so the clock alone would misplace some), and ticks with
# hardly any events (between two steps) are left out. The controller runs
# in this notebook's own process: on a machine so busy that the process
# waits for a CPU for a second or more, its ticks stretch and these lines
# can come out False. So they are not compared when the course is tested;
# lab 12.3's check judges a controller by behaviour, with margins made for
# a busy machine.

# %% tags=["nbval-ignore-output"]
def with_steps(df: pd.DataFrame) -> pd.DataFrame:
    rates = np.array([r for r, _ in STEPS], dtype=float)
    busy = df[df["events_per_s"] > rates.min() / 2].copy()
    busy["step"] = [int(np.argmin(abs(np.log(r / rates)))) for r in busy["events_per_s"]]
    return busy


fix_s, ada_s = with_steps(fixed), with_steps(adaptive)
top = int(np.argmax([r for r, _ in STEPS]))
fix_top = fix_s[fix_s["step"] == top]["overhead"].median()
ada_top = ada_s[ada_s["step"] == top]["overhead"].median()
print(f"at {STEPS[top][0]:,}/s, sampling everything went over the target:", bool(fix_top > TARGET))
print(f"at {STEPS[top][0]:,}/s, adaptive's median overhead within 2x the target:",
      bool(ada_top <= 2 * TARGET))
med = ada_s.groupby("step")["every"].median().reindex(range(len(STEPS)))
print("every rose with the rate, then fell again:", bool(med[1] > med[0] and med[2] < med[1]))

# %% [markdown]
# Two remarks. The weighted count (the sum of `every` over the samples)
# estimates the number of events closely even when only a few percent were
# sent, because each event is kept with the same probability; sampling
# "every Nth event" instead would alias with any periodic workload (lab
# 12.3 shows it). And the floor: the cost of the events *not* sampled does
# not go away, so at a high enough rate no `every` keeps a tracer under its
# target; then the tracer must stop tracing that event, or aggregate in the
# kernel instead of sending anything.

# %% [markdown]
# ## 12.6 Reading a big map: batches
#
# Reading a hash map from user space the classic way takes a system call
# per step: `get_next_key` to find the next key, `lookup` to read its value,
# and `delete` if you drain the map. BCC's `items()` does exactly that. Since
# kernel 5.6, `BPF_MAP_LOOKUP_AND_DELETE_BATCH` reads and removes many
# entries per call, and BCC wraps it as `items_lookup_and_delete_batch()`.
# `perfcases.map_reads` fills a hash map from user space, empties it both
# ways, and counts this process's `bpf()` system calls with a tracepoint on
# `sys_enter_bpf`, three runs per size:

# %%
reads = pd.concat([perfcases.map_reads(n, runs=3) for n in (1_000, 10_000, 100_000)],
                  ignore_index=True)
calls = reads.groupby(["entries", "way"])["bpf_calls"].max().unstack()
calls

# %% [markdown]
# Exactly 3 system calls per key (plus the final `get_next_key` that says
# "no more"), against one for the whole map. The time, with its spread:

# %% tags=["nbval-ignore-output"]
times = reads.groupby(["entries", "way"])["seconds"].agg(["mean", "std"]).unstack()
times.plot(kind="bar", y="mean", yerr="std", logy=True, capsize=3, figsize=(6, 3), rot=0,
           ylabel="seconds", title="empty a hash map: per key vs one batch")
(times["mean"]["per key"] / times["mean"]["batch"]).round(1).rename("per key / batch")

# %%
ratio = (times["mean"]["per key"] / times["mean"]["batch"])
print("every read was complete:", bool(reads["all_read"].all()),
      "| maps empty after:", bool((reads["left_in_map"] == 0).all()))
print("batch faster than per key at 10,000 entries and more:",
      bool((ratio[ratio.index >= 10_000] > 1).all()))

# %% [markdown]
# The batch call is also *consistent*: per key, a busy BPF program may
# add and remove entries between your calls, and `get_next_key` restarts
# from the first key when the key you hold has just been deleted. For a
# map you drain at each reporting interval, the batch call is the right
# one; for a per-CPU map the batch returns every CPU's values in one go too.

# %% [markdown]
# ## 12.7 A note on the verifier's limits
#
# Speed has a second, static side: a program must get through the
# verifier, which walks every path. The kernel caps that walk at one
# million instructions *processed* (not written), so a loop the verifier
# must unroll, or many branches whose paths it cannot merge, can make a
# short program too "big". The kernel reports how many instructions it
# processed for each program (`verified_insns` in the program's info),
# which is the number to watch when a program grows: chapter 14's
# regression detector records it. For the three counters of section 12.3
# (the numbers depend on the compiler and on the rewrites each kernel
# version makes, so they are not compared when the course is tested):

# %% tags=["nbval-ignore-output"]
for name, src in perfcases.COUNTER_C.items():
    with Program(src, cflags=[f"-DMARKER={marker}"]) as prog:
        info = prog_info(next(iter(prog.funcs.values())).fd)
        print(f"{name:9} {len(info.xlated) // 8:3} instructions after the verifier, "
              f"{info.verified_insns:3} processed")

# %% [markdown]
# ## Recap
#
# * Measure before you optimise, with what works on the machine:
#   `BPF_ENABLE_STATS` gives `run_time_ns` and `run_cnt` per program
#   (`bpftool prog show` prints them), at the price of two clock reads
#   per run of every program while on; `bpftool prog profile` and JIT dumps
#   depend on how bpftool was built, and hardware counters on the machine.
# * A plain `+=` on a shared map value loses counts under concurrency. An
#   atomic add is exact but bounces a cache line; a per-CPU map is exact and
#   cheap, and pays at read time.
# * Ring buffer: one shared, ordered buffer, in-place writes, a failed
#   reservation your program sees. Perf buffer: per-CPU buffers, and (as BCC
#   sets it up) a wake-up per event that the traced process pays for. At a
#   high rate, neither saves you: send fewer events.
# * Adaptive sampling keeps the cost near a target: measure, then write the
#   new `every` into a map. Draw at random, and weight each sample by the
#   `every` it was taken at.
# * Read and drain big maps with batch calls: one system call instead of
#   three per key, and a consistent snapshot.
#
# **Questions to test yourself**
#
# 1. A counter is incremented on every packet and read once a minute. A
#    second counter is a global budget that every packet checks and
#    decrements. Which map type and which update for each?
# 2. Your perf-buffer tracer reports no lost events, yet the traced service
#    got slower when you started tracing. What is a likely cause, and what
#    would you measure to confirm it?
# 3. Why is "send every 10th event" a biased sample, and what does
#    `bpf_get_prandom_u32() % 10 == 0` change?
# 4. `run_time_ns / run_cnt` says a few tens of nanoseconds per run. What does that figure
#    leave out of the cost a traced process pays?
#
# <details><summary>Answers (try first, then click to open)</summary>
#
# 1. The per-packet counter: `BPF_PERCPU_ARRAY` (or `PERCPU_HASH`), plain
#    add, summed when read. The budget: a shared value with atomic
#    operations, because each packet must see what the others took (a
#    per-CPU copy would let each CPU spend the whole budget).
# 2. The wake-up per event (`wakeup_events=1` in BCC's perf buffer), and the
#    copy, in the traced process's context. Measure the traced process's
#    time per operation with and without the tracer (section 12.4 measured
#    CPU time per call), or switch to a ring buffer, or wake up less often.
# 3. Any workload with a period that shares a factor with 10 (a loop doing
#    two different things alternately, a timer, batches of 5) is seen through
#    the same phase every time: some kinds are never sampled, others always.
#    A random draw per event keeps each event with probability 1/10,
#    independently of the others and of any pattern.
# 4. The cost of reaching the program (the tracepoint, the trampoline or
#    kprobe before it), everything user space does with what the program
#    sends, wake-ups, and the cache misses the program causes in the code
#    around it.
#
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 12.1 | a packet counter, per-CPU and atomic, exact under two CPUs of traffic, and its cost | `labs/ch12/lab_12_1_packet_counter.ipynb` |
# | 12.2 | zero-copy events with `ringbuf_reserve`/`submit` and an exact loss count | `labs/ch12/lab_12_2_zero_copy_events.ipynb` |
# | 12.3 | an adaptive, unbiased sampler steered from user space | `labs/ch12/lab_12_3_adaptive_sampling.ipynb` |
#
# Each check drives its own workload from pinned processes on both CPUs
# and judges by counts, never by speed. `ebpf-tutor progress` shows what
# you have passed; the solutions are in `solutions/ch12/`.
