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
# # Chapter 13: Event processing
#
# **After this chapter you will be able to**
#
# * choose between a perf buffer and a ring buffer, and show on one
#   workload how each one loses events and how each one tells you;
# * consume several ring buffers at once with the course's
#   `RingBufferConsumer`, and keep rare events safe from a flood of common ones;
# * account for every event: written, lost in the kernel, dropped in user
#   space, handled; and choose what backpressure does (drop or block);
# * batch the path to user space (wake-ups, batches) and filter in the
#   kernel, and measure what each costs the traced program;
# * aggregate in the kernel instead of streaming, and read intervals
#   without losing updates;
# * export the aggregates to Prometheus: a `prometheus_client` endpoint,
#   linted by `promtool`, scraped by a real Prometheus server, queried back;
#   and say how Cloudflare's `ebpf_exporter` does the same.
#
# Every code cell talks to the real kernel. Run them in order with the
# **eBPF (root)** kernel.

# %% [markdown]
# ## 13.1 The path of an event
#
# An event is born in a BPF program (a tracepoint fired), crosses into
# user space through a buffer that both sides share, and is processed
# there. Everything in this chapter is about that path: what happens when
# one part is slower than the others.
#
# ```mermaid
# flowchart LR
#     T["tracepoint fires"] --> R["reserve + submit<br/>(or lost: count it)"]
#     R --> B["ring buffer<br/>(shared memory)"]
#     B --> RD["reader thread<br/>copies batches out"]
#     RD --> Q["bounded queue<br/>(full: drop or block)"]
#     Q --> H["handler thread<br/>one DataFrame per batch"]
# ```
#
# The course's `ebpf_tutor.events.RingBufferConsumer` is the user-space
# half: it maps the ring buffer's memory, copies records out many at a time
# with numpy, and hands DataFrames to your handler in another thread. Its
# `stats` count each place an event can be lost.

# %%
import ctypes as ct
import os
import subprocess
import time
import urllib.request

import matplotlib.pyplot as plt
import pandas as pd

from ebpf_tutor import Program, log2_counts_df, plot_log2_hist
from ebpf_tutor.events import ConsumerGroup, RingBufferConsumer
from ebpf_tutor.labs.workload import Child, Executables, unique_name
from ebpf_tutor.sandbox.prometheus import PrometheusServer, check_metrics


# %% [markdown]
# One helper for the whole chapter: a child process that makes exactly
# `n` `getppid()` calls on CPU 0 when told to, and reports how long they
# took. Its pid is known before it starts, so a program can watch it alone.

# %%
class CallingChild(Child):
    """A child that, on go(), calls getppid() n times on CPU 0 and reports
    the seconds it took."""

    def __init__(self, n: int):
        self.n = n
        super().__init__(self._calls)

    def _calls(self) -> None:
        os.sched_setaffinity(0, {0})
        for _ in range(self.n):
            os.getppid()

    def _run(self, work) -> bytes:
        start = time.perf_counter()
        work()
        return f"{time.perf_counter() - start:.6f}".encode()

    def go(self) -> float:
        return float(super().go())


def set_target(prog: Program, pid: int) -> None:
    """Point a program's `target` filter at one process."""
    prog["target"][ct.c_int(0)] = ct.c_uint32(pid)


# %% [markdown]
# ## 13.2 Perf buffer or ring buffer?
#
# BPF has two ways to stream events to user space:
#
# * the **perf buffer** (`BPF_PERF_OUTPUT`, `perf_submit`): one buffer
#   **per CPU**, each its own piece of memory, read one after the other;
# * the **ring buffer** (`BPF_RINGBUF_OUTPUT`, `ringbuf_reserve`/`submit`,
#   since Linux 5.8): **one** buffer shared by all CPUs, so events come out
#   in the order they were reserved, and memory is sized once for the whole
#   machine rather than once per CPU.
#
# They also differ in how they lose events. Here one program writes the
# same event to both, for a child that makes 20000 calls while nobody
# reads; each buffer has 4 pages. The ring buffer's losses are counted by
# the program itself: `ringbuf_output` returns an error and nothing else
# happens. The perf buffer's losses are counted by the kernel, and BCC
# reports them through a `lost_cb` callback.

# %%
BOTH = r"""
struct event { u64 seq; u32 cpu; u32 pad; };
BPF_PERF_OUTPUT(perf_events);
BPF_RINGBUF_OUTPUT(ring_events, 4);
BPF_ARRAY(target, u32, 1);
BPF_ARRAY(seq, u64, 1);
BPF_ARRAY(ring_lost, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    int zero = 0;
    u32 *t = target.lookup(&zero);
    if (!t || bpf_get_current_pid_tgid() >> 32 != *t)
        return 0;                                  /* filter: one process only */
    u64 *s = seq.lookup(&zero);
    if (!s)
        return 0;
    struct event ev = {.seq = __sync_fetch_and_add(s, 1), .cpu = bpf_get_smp_processor_id()};
    perf_events.perf_submit(args, &ev, sizeof(ev));
    if (ring_events.ringbuf_output(&ev, sizeof(ev), 0) != 0) {
        u64 *n = ring_lost.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
    return 0;
}
"""

# %% [markdown]
# The child runs once with 20000 calls, then both buffers are drained; then
# a second child makes **one** more call on the same CPU, and both are
# drained again.

# %%
SENT = 20000
got = {"perf received": 0, "perf lost (lost_cb)": 0, "ring received": 0}


def on_perf(cpu, data, size):
    got["perf received"] += 1


def on_perf_lost(n):
    got["perf lost (lost_cb)"] += n


def on_ring(ctx, data, size):
    got["ring received"] += 1


rows = []
with Program(BOTH) as prog:
    prog["perf_events"].open_perf_buffer(on_perf, page_cnt=4, lost_cb=on_perf_lost)
    prog["ring_events"].open_ring_buffer(on_ring)
    for calls in (SENT, 1):
        child = CallingChild(calls)
        set_target(prog, child.pid)
        child.go()
        prog.perf_buffer_poll(100)
        prog.ring_buffer_consume()
        rows.append({**got, "ring lost (counted by the program)": prog["ring_lost"][0].value})
losses = pd.DataFrame(rows, index=[f"after {SENT} calls", "after 1 more call"])

# %% tags=["nbval-ignore-output"]
losses.T

# %% [markdown]
# (How many records fit depends on the record size and the page size, so
# the table is not compared between runs; what it shows is.)

# %%
first, second = losses.iloc[0], losses.iloc[1]
print("ring buffer: received + counted lost == sent:",
      first["ring received"] + first["ring lost (counted by the program)"] == SENT)
print("perf buffer: losses reported right after the flood:", first["perf lost (lost_cb)"] > 0)
print("perf buffer: losses reported after one more event:", second["perf lost (lost_cb)"] > 0)
print("perf buffer: received + reported lost == sent + 1:",
      second["perf received"] + second["perf lost (lost_cb)"] == SENT + 1)

# %% [markdown]
# Read those four lines carefully:
#
# * The ring buffer loses without telling anyone. Only a counter **you**
#   write in the BPF program accounts for it, and then exactly.
# * The perf buffer counts its losses itself, but it reports them *inside*
#   the buffer, as a "lost" record written before the next event that fits.
#   Right after the flood nothing is reported, however long you poll; the
#   report arrives with the next event on that CPU. A quiet CPU can hold a
#   loss report back for a long time.
#
# The other half of the difference is **order**. Each event of one process
# happens after the previous one: fork, then exec, then exit. With a ring
# buffer they are reserved in that order, so they are read in that order.
# With a perf buffer each lands in the buffer of the CPU it happened on,
# and BCC's `perf_buffer_poll()` waits until some buffer has data, then
# empties the ready ones one after the other, CPU 0 first
# (`perf_reader_poll()` in BCC's `perf_reader.c`). Here this
# notebook forks 200 children while it runs on CPU 1, and each child runs
# on CPU 0; the program sends every fork, exec and exit of our children to
# both buffers.

# %%
ORDER = r"""
struct ev { u32 pid; u32 kind; };               /* kind 0: fork, 1: exec, 2: exit */
BPF_PERF_OUTPUT(perf_ev);
BPF_RINGBUF_OUTPUT(ring_ev, 64);
BPF_ARRAY(target, u32, 1);
BPF_HASH(ours, u32, u32, 4096);

static __always_inline void emit(void *ctx, u32 pid, u32 kind) {
    struct ev e = {.pid = pid, .kind = kind};
    perf_ev.perf_submit(ctx, &e, sizeof(e));
    ring_ev.ringbuf_output(&e, sizeof(e), 0);
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    int zero = 0;
    u32 *t = target.lookup(&zero);
    if (!t || args->parent_pid != *t)
        return 0;
    u32 child = args->child_pid, one = 1;
    ours.update(&child, &one);
    emit(args, child, 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (ours.lookup(&pid))
        emit(args, pid, 1);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    if ((u32)id == pid && ours.lookup(&pid)) {
        emit(args, pid, 2);
        ours.delete(&pid);
    }
    return 0;
}
"""


def out_of_order(events: list[tuple[int, int]]) -> int:
    """How many processes' events did not arrive as fork, exec, exit."""
    kinds: dict[int, list[int]] = {}
    for pid, kind in events:
        kinds.setdefault(pid, []).append(kind)
    return sum(k != [0, 1, 2] for k in kinds.values())


class Ev(ct.Structure):
    _fields_ = [("pid", ct.c_uint32), ("kind", ct.c_uint32)]      # struct ev


def recorder(into: list):
    """A BCC callback (perf or ring) that appends (pid, kind) per event."""
    def record(_ctx_or_cpu, data, _size):
        event = ct.cast(data, ct.POINTER(Ev)).contents
        into.append((event.pid, event.kind))
    return record


# %%
with Program(ORDER) as prog:
    set_target(prog, os.getpid())
    arrived = {"perf": [], "ring": []}
    prog["perf_ev"].open_perf_buffer(recorder(arrived["perf"]), page_cnt=64)
    prog["ring_ev"].open_ring_buffer(recorder(arrived["ring"]))
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1})                 # this notebook forks on CPU 1 ...
    try:
        for _ in range(200):                     # ... and each child runs on CPU 0
            subprocess.run(["/bin/true"], preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    finally:
        os.sched_setaffinity(0, before)
    prog.perf_buffer_poll(100)
    prog.ring_buffer_consume()
for kind, events in arrived.items():
    print(f"{kind}: {len(events)} events, processes out of order: {out_of_order(events)}")

# %% [markdown]
# The ring buffer kept every process's story in order. The perf buffer
# handed over all of CPU 0's events (exec, exit) before CPU 1's (the
# forks): every child seemed to exit before it was born. A perf buffer
# reader that cares about order must carry a timestamp in each event and
# sort, holding events back long enough for the slowest CPU to catch up.
#
# Other differences, from the kernel's documentation
# (`Documentation/bpf/ringbuf.rst`) and its code (`kernel/bpf/ringbuf.c`):
#
# | | perf buffer | ring buffer |
# |---|---|---|
# | memory | one buffer per CPU: a quiet CPU's buffer sits empty while a busy one overflows | one buffer for all CPUs |
# | order | per CPU; user space must merge by timestamp | one order: the order of reservation |
# | writing | the event is built on the stack, then copied | `reserve` gives a pointer into the buffer: write in place, then `submit` or `discard` (or copy, with `ringbuf_output`) |
# | losses | counted by the kernel, reported late through `lost_cb` | the failed `reserve` is yours to count |
# | wake-ups | per event (BCC's default) or every N events | when the reader has caught up, or as `submit`'s flags say (13.5) |
#
# On kernels older than 5.8 only the perf buffer exists; everywhere else,
# prefer the ring buffer. The rest of this chapter uses it.

# %% [markdown]
# ## 13.3 Several ring buffers
#
# One ring is shared by every event written to it. When a flood of one
# kind fills it, the next `reserve` fails for every kind: the rare event
# you cared about is lost with the flood. The remedy is one ring per class
# of events. `ebpf_tutor.events.ConsumerGroup` runs one consumer per ring,
# starts and closes them together, and puts their health in one table.
#
# The program below sends `getppid()` calls of one child (the flood) and
# every program start on the machine (the rare events) either to one
# shared ring or to two rings, depending on `SHARED`.

# %%
TWO_KINDS = r"""
struct event { u32 kind; u32 pid; char comm[16]; };    /* kind 0: flood, 1: exec */
BPF_RINGBUF_OUTPUT(flood, 4);
BPF_RINGBUF_OUTPUT(rare, 4);
BPF_ARRAY(target, u32, 1);
BPF_ARRAY(lost, u64, 2);

static __always_inline int emit(u32 kind) {
    struct event *e;
    if (SHARED || kind == 0)
        e = flood.ringbuf_reserve(sizeof(struct event));
    else
        e = rare.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        int i = kind;
        u64 *n = lost.lookup(&i);
        if (n)
            __sync_fetch_and_add(n, 1);
        return 0;
    }
    e->kind = kind;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    if (SHARED || kind == 0)
        flood.ringbuf_submit(e, 0);
    else
        rare.ringbuf_submit(e, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    int zero = 0;
    u32 *t = target.lookup(&zero);
    if (!t || bpf_get_current_pid_tgid() >> 32 != *t)
        return 0;
    return emit(0);
}

TRACEPOINT_PROBE(sched, sched_process_exec) { return emit(1); }
"""


# %% [markdown]
# The experiment: a consumer that has fallen behind (here, one not started
# yet) while the flood fills the ring; then five commands with fresh names
# start; then the consumers run and we count what arrived.

# %%
def flood_then_commands(shared: bool) -> tuple[int, pd.DataFrame]:
    """Flood, then 5 fresh commands, nobody reading; then consume. Returns
    how many of the 5 starts arrived, and the group's stats."""
    names = [unique_name("rare") for _ in range(5)]
    source = TWO_KINDS.replace("SHARED", "1" if shared else "0")
    with Program(source) as prog, Executables(names) as commands:
        lost = prog["lost"]
        group = ConsumerGroup(
            flood=RingBufferConsumer(prog, "flood", lost=lambda: lost[0].value
                                     + (lost[1].value if shared else 0)),
            rare=RingBufferConsumer(prog, "rare", lost=lambda: lost[1].value))
        child = CallingChild(20000)
        set_target(prog, child.pid)
        child.go()                                   # the flood: its ring is full now
        for name in names:
            commands.run(name)                       # copies of /bin/true, fresh names
        with group:
            group["flood"].wait_idle()
            group["rare"].wait_idle()
        seen = pd.concat([group["flood"].take(), group["rare"].take()])
        arrived = sum(name in set(seen["comm"]) for name in names)
        return arrived, group.stats_frame()


# %%
arrived_shared, stats_shared = flood_then_commands(shared=True)
arrived_split, stats_split = flood_then_commands(shared=False)
print(f"one shared ring: {arrived_shared} of 5 program starts arrived")
print(f"two rings:       {arrived_split} of 5 program starts arrived")

# %% tags=["nbval-ignore-output"]
stats_split

# %% [markdown]
# With one ring, the flood left no room, and every start was lost with it.
# With two, the flood still loses events (its row shows `kernel_lost`, and
# `healthy` is False), but the rare ring kept all five. Lab 13.1 builds a
# processor on this design.

# %% [markdown]
# ## 13.4 Lost events and backpressure
#
# An event can be lost in three places, and a consumer must count all
# three, or its numbers lie:
#
# 1. **in the kernel**: `reserve` failed because the ring was full. Only
#    the BPF program can count it; pass its counter to the consumer as
#    `lost=`, and it appears as `kernel_lost`;
# 2. **in user space**: the reader copied the event out, but the queue to
#    the handler was full (`dropped`);
# 3. **in the handler**: it raised (`handler_errors`, `last_error`).
#
# What happens when the handler is slower than the kernel is a choice,
# the consumer's `overflow=`:
#
# * `"drop"`: the reader keeps draining the ring and drops what does not
#   fit in the queue. The ring stays as empty as the reader can keep it,
#   the newest data keeps flowing, and most losses are drops counted in
#   user space (the kernel still loses when even the reader falls behind).
# * `"block"`: the reader stops reading when the queue is full. The ring
#   fills, and the kernel's `reserve` fails instead. Nothing is dropped in
#   user space; the loss moves into the kernel, where your counter sees it.
#
# Here a handler that sleeps 10 ms per batch (a slow database, say) meets
# a child that makes 500000 calls as fast as it can, through a 4 MiB ring
# (room for about 170000 events) and a queue of 20000.

# %%
FLOW = r"""
struct event { u64 seq; u64 ts; };
BPF_RINGBUF_OUTPUT(events, PAGES);       /* 1024 pages: 4 MiB */
BPF_ARRAY(target, u32, 1);
BPF_ARRAY(seq, u64, 1);
BPF_ARRAY(lost, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    int zero = 0;
    u32 *t = target.lookup(&zero);
    if (!t || bpf_get_current_pid_tgid() >> 32 != *t)
        return 0;
    u64 *s = seq.lookup(&zero);
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        u64 *n = lost.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        return 0;
    }
    e->seq = s ? __sync_fetch_and_add(s, 1) : 0;
    e->ts = bpf_ktime_get_ns();
    events.ringbuf_submit(e, WAKEUP);
    return 0;
}
"""


def slow_handler(batch: pd.DataFrame) -> None:
    time.sleep(0.010)                    # 10 ms per batch, whatever its size


def under_pressure(overflow: str, calls: int = 500_000):
    source = FLOW.replace("WAKEUP", "0").replace("PAGES", "1024")
    with Program(source) as prog:
        child = CallingChild(calls)
        set_target(prog, child.pid)
        with RingBufferConsumer(prog, "events", handler=slow_handler, overflow=overflow,
                                queue_size=20_000, batch_size=2_000, lost=prog["lost"]) as rb:
            child.go()
        return rb.stats


pressure = {mode: under_pressure(mode) for mode in ("drop", "block")}

# %% tags=["nbval-ignore-output"]
pd.DataFrame({mode: {k: getattr(st, k) for k in
                     ("received", "handled", "dropped", "kernel_lost", "max_ring_fill")}
              for mode, st in pressure.items()})

# %%
for mode, st in pressure.items():
    print(f"{mode:5}: sent == handled + dropped in user space + lost in the kernel:",
          st.handled + st.dropped + st.kernel_lost == 500_000,
          "| healthy:", st.healthy)
print("block: nothing dropped in user space:", pressure["block"].dropped == 0)

# %% [markdown]
# Both modes account for every one of the 500000 events, and both say
# they are unhealthy (`problems` says why). With `"drop"` most losses are
# `dropped`, in user space; with `"block"` nothing is dropped and they all
# move into the kernel, behind a full ring (`max_ring_fill`). Neither mode makes a
# slow handler fast: backpressure only chooses *where* you lose. To lose
# nothing, make the path cheaper: filter and batch (13.5), or do not send
# events at all, and aggregate in the kernel (13.6).

# %% [markdown]
# ## 13.5 Filtering and batching: what the traced program pays
#
# Every program in this chapter filters **in the kernel**, first thing: a
# `target` map holds the one pid we watch, and the program returns before
# touching the ring for anyone else. User space changes the filter by
# writing the map, without reloading anything. An event that is filtered
# out costs a map lookup; an event that is sent costs a reservation, a
# copy, and maybe a **wake-up** of the reader.
#
# The kernel's rule for wake-ups (`bpf_ringbuf_commit` in
# `kernel/bpf/ringbuf.c`): by default, `submit` wakes the reader only if
# the reader had consumed everything before this record, that is, only
# when it is probably asleep waiting. The flags change it:
# `BPF_RB_FORCE_WAKEUP` wakes on every event, `BPF_RB_NO_WAKEUP` never
# (the reader then finds the data when its poll times out: 50 ms for the
# course's consumer). Fewer wake-ups mean larger batches and less work for
# both sides, at the price of latency.
#
# We time a child making 100000 `getppid()` calls in five set-ups, with a
# 4 MiB ring so that nothing is lost in any of them.

# %%
def traced_cost(wakeup: str | None, watched: bool = True, calls: int = 100_000) -> dict:
    """ns per getppid() call of a child, and what the consumer saw."""
    if wakeup is None:                          # no program at all
        return {"ns per call": CallingChild(calls).go() / calls * 1e9}
    source = FLOW.replace("WAKEUP", wakeup).replace("PAGES", "1024")
    with Program(source) as prog:
        child = CallingChild(calls)
        set_target(prog, child.pid if watched else 1)
        with RingBufferConsumer(prog, "events", lost=prog["lost"]) as rb:
            elapsed = child.go()
        st = rb.stats
    return {"ns per call": elapsed / calls * 1e9, "events": st.handled,
            "batches": st.batches, "lost": st.kernel_lost}


SETUPS = {
    "no program": (None, True),
    "program, filtered out": ("0", False),
    "sent, default wake-up": ("0", True),
    "sent, BPF_RB_FORCE_WAKEUP": ("BPF_RB_FORCE_WAKEUP", True),
    "sent, BPF_RB_NO_WAKEUP": ("BPF_RB_NO_WAKEUP", True),
}
ROUNDS = 3                       # interleaved; the fastest round of each is kept
runs = [{name: traced_cost(*args) for name, args in SETUPS.items()} for _ in range(ROUNDS)]
costs = pd.DataFrame({name: min((r[name] for r in runs), key=lambda x: x["ns per call"])
                      for name in SETUPS}).T

# %% tags=["nbval-ignore-output"]
costs.round(0)

# %% tags=["nbval-ignore-output"]
ax = costs["ns per call"].plot.barh(figsize=(7, 2.8), color="tab:blue")
ax.set_xlabel("ns per getppid() call of the traced child")
ax.invert_yaxis()
plt.tight_layout()

# %%
sent = costs.drop(index=["no program", "program, filtered out"])
print("every sent event arrived, none lost:",
      bool((sent["events"] == 100_000).all() and (sent["lost"] == 0).all()))
print("the filtered-out program sent nothing:", costs.loc["program, filtered out", "events"] == 0)

# %% tags=["nbval-ignore-output"]
ns = costs["ns per call"]
print(f"sending costs {ns['sent, default wake-up'] / ns['program, filtered out']:.1f} times "
      f"filtering out; a forced wake-up per event costs "
      f"{ns['sent, BPF_RB_FORCE_WAKEUP'] / ns['sent, default wake-up']:.1f} times the default")

# %% [markdown]
# The exact figures move with the machine's load (which is why this cell is
# not compared between runs), but the shape holds: a filtered-out event is
# nearly free, a sent one costs more, and a forced wake-up per event costs
# the traced program the most, because every `submit` then queues work to
# wake the reader. The default is adaptive, but a reader that keeps up is
# often caught up, so it may still be woken many times;
# `BPF_RB_NO_WAKEUP` removes even those, at the price of up to one poll
# timeout of latency. Force a wake-up only for the rare event that must be
# seen at once. In user space, the
# consumer batches too: look at `batches` against `events`.

# %% [markdown]
# ## 13.6 Aggregate in the kernel
#
# Often you do not want the events at all, only what they add up to:
# counts, sums, histograms. Then keep the sums in a map, in the kernel, and
# read the map now and then. Nothing is streamed, so nothing can be lost on
# the way, and the cost of user space depends on the number of keys, not
# on the event rate.
#
# Here the kernel keeps, for a child that makes 5000 writes of sizes drawn
# from a fixed distribution, a log2 histogram of the sizes and the totals.

# %%
AGG = r"""
struct totals_t { u64 calls; u64 bytes; };
BPF_ARRAY(target, u32, 1);
BPF_ARRAY(totals, struct totals_t, 1);
BPF_HISTOGRAM(sizes, u64, 64);

TRACEPOINT_PROBE(syscalls, sys_exit_write) {
    int zero = 0;
    u32 *t = target.lookup(&zero);
    if (!t || bpf_get_current_pid_tgid() >> 32 != *t || args->ret <= 0)
        return 0;
    struct totals_t *s = totals.lookup(&zero);
    if (s) {
        __sync_fetch_and_add(&s->calls, 1);
        __sync_fetch_and_add(&s->bytes, args->ret);
    }
    sizes.atomic_increment(bpf_log2l(args->ret));
    return 0;
}
"""


def writes(sizes: list[int]):
    def work():
        fd = os.open("/dev/null", os.O_WRONLY)
        for n in sizes:
            os.write(fd, b"x" * n)
        os.close(fd)
    return work


import random  # noqa: E402  (here, where the workload is drawn)

draw = random.Random(13)
SIZES = [max(1, int(draw.lognormvariate(7, 1.5))) for _ in range(5000)]

with Program(AGG) as prog:
    child = Child(writes(SIZES))
    set_target(prog, child.pid)
    child.go()
    hist = {k.value: v.value for k, v in prog["sizes"].items() if v.value}
    t = prog["totals"][ct.c_int(0)]
    calls, nbytes = t.calls, t.bytes
print(f"the child wrote {len(SIZES)} times, {sum(SIZES)} bytes")
print(f"the kernel counted {calls} writes, {nbytes} bytes, in {len(hist)} histogram slots")
print(f"user space read {len(hist) + 1} map entries instead of {len(SIZES)} events")

# %% tags=["nbval-ignore-output"]
ax = plot_log2_hist(log2_counts_df(hist), unit="bytes", title="write() sizes, aggregated in the kernel")

# %% [markdown]
# To watch a rate rather than a total, read the maps at intervals, each
# reading covering only what happened since the previous one. Reading and
# then zeroing would lose what the kernel adds in between; BCC's
# `items_lookup_and_delete_batch()` takes the entries out of a hash map in
# batches (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`, one system call per batch):
# each entry is copied and deleted in one step, so an update that comes
# later creates a fresh entry for the next interval. (An update already
# holding a pointer to the entry at that very instant can still be lost:
# the window shrinks from a whole read to one entry's copy.) Lab 13.2
# builds that pipeline, per command name.

# %% [markdown]
# ## 13.7 Exporting to Prometheus
#
# Prometheus *pulls*: every few seconds it fetches `http://host:port/metrics`
# from each target and stores what it reads. An eBPF exporter therefore
# needs no events either: at each scrape, it reads its maps and prints them
# in Prometheus's text format. With `prometheus_client` that is a
# **custom collector**: an object whose `collect()` yields metric families,
# called on every scrape.
#
# The program counts program starts per command name.

# %%
from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402
from prometheus_client.core import CounterMetricFamily  # noqa: E402

EXECS = r"""
struct key_t { char comm[16]; };
BPF_HASH(execs, struct key_t, u64, 10240);

TRACEPOINT_PROBE(sched, sched_process_exec) {
    struct key_t key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    execs.atomic_increment(key);
    return 0;
}
"""


class ExecCollector:
    """Reads the `execs` map at every scrape."""

    def __init__(self, prog: Program):
        self.prog = prog

    def collect(self):
        family = CounterMetricFamily("ebpf_execs", "Programs started, by command name",
                                     labels=["comm"])
        for key, value in self.prog["execs"].items():
            family.add_metric([key.comm.decode(errors="replace")], value.value)
        yield family


# %% [markdown]
# `start_http_server(port, addr="127.0.0.1", registry=...)` serves it on
# loopback only (the default address, `0.0.0.0`, would publish it on every
# interface); port 0 lets the kernel pick a free one. We start a command
# with a fresh name 7 times and fetch `/metrics` ourselves.

# %%
exec_prog = Program(EXECS)
registry = CollectorRegistry()
registry.register(ExecCollector(exec_prog))
server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
port = server.server_port
app = unique_name("app")
with Executables([app]) as commands:
    commands.run(app, times=7)
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
print("listening on", server.server_address[0])
print("\n".join(ln.replace(app, "<app>") for ln in text.splitlines()
                if ln.startswith("#") or f'"{app}"' in ln))

# %% [markdown]
# `prometheus_client` added `_total` to the counter's name: Prometheus's
# naming conventions ask for it, and the OpenMetrics format requires it. **promtool**, from the Prometheus project (Debian's `prometheus`
# package), lints an exposition: `promtool check metrics < metrics.txt`.
# Ours passes; a hand-written one with a counter missing its `_total` and
# its help text does not.

# %%
print("our exporter:", check_metrics(text))
print("hand-written:", check_metrics("# TYPE execs counter\nexecs 7\n"))

# %% [markdown]
# Now a real Prometheus server scrapes it. `PrometheusServer` writes a
# configuration like the one below (with our port) into a fresh temporary
# folder, runs the command below it (with that folder and a free port),
# and stops the server and removes the folder when the `with` block ends;
# if the notebook's kernel dies instead, the server dies with it.
# The scrape interval is 1 second, so this takes seconds, not minutes.

# %%
demo = PrometheusServer(["127.0.0.1:PORT"], scrape_interval=1.0)
print(demo.config())
print("$", " ".join(demo.argv()))

# %% [markdown]
# Its HTTP API answers PromQL queries: `/api/v1/query?query=...` for a
# value, `/api/v1/targets` for the scrape health, `/api/v1/metadata` for
# what the target said a metric is.
#
# Do not expect the first scrape at once, whatever the interval. Prometheus
# is ready within a fraction of a second, but its discovery manager hands
# new targets to the scrape manager at most once every 5 seconds (a fixed
# throttle, `updatert` in `discovery/legacymanager/manager.go`, the
# default in 2.42, and in `discovery/manager.go`; no flag or setting of
# 2.42 changes it), and each target then waits its own offset, less than
# one interval, so that a server's scrapes spread out. Start the server
# early, before the work it should see, and let the wait overlap it (the
# check of lab 13.3 does).

# %%
started = time.monotonic()
with PrometheusServer([f"127.0.0.1:{port}"], scrape_interval=1.0) as prom:
    prom.wait_for_fresh_scrape()
    first_scrape = time.monotonic() - started
    target = prom.target_health()[0]
    value = prom.query(f'ebpf_execs_total{{comm="{app}"}}')[0][1]
    kind = prom.metadata("ebpf_execs")["type"]
    with Executables([app]) as commands:
        commands.run(app, times=3)              # 3 more starts ...
    prom.wait_for_fresh_scrape()                # ... and one more scrape
    later = prom.query(f'ebpf_execs_total{{comm="{app}"}}')[0][1]
    folder = prom.folder
print("target health:", target["health"])
print(f"Prometheus says the fresh command started {value:.0f} times ({kind}), "
      f"then {later:.0f} times")
print("after the with block, its folder exists:", folder.exists())
print("the first scrape came after the 5 s discovery throttle:", first_scrape >= 5)

# %% tags=["nbval-ignore-output"]
print(f"first successful scrape {first_scrape:.1f} s after the server was started")

# %% [markdown]
# Prometheus stored what the map held at each scrape: the exporter keeps no
# state of its own. A histogram works the same way, with one more step:
# the kernel's log2 slots become Prometheus buckets `le="..."`, each
# counting the observations *at most* `le`, so the exporter adds the slots
# up in order. Lab 13.3 does it, with the bucket bounds exactly right.
#
# What does a scrape cost? The collector reads the whole map at each
# scrape, so the cost grows with the number of keys. Here we fill the map
# from user space with fake command names and time the scrapes.

# %%
def scrape_seconds(port: int, times: int = 5) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


table = exec_prog["execs"]
scrape, filled = {}, 0
for keys in (10, 100, 1000, 10000):
    for i in range(filled, keys):
        k = table.Key()
        k.comm = f"fake{i}".encode()
        table[k] = ct.c_uint64(1)
    filled = keys
    scrape[keys] = scrape_seconds(port) * 1e3
print("keys in the map, at least:", filled)

# %% tags=["nbval-ignore-output"]
print(pd.Series(scrape, name="ms per scrape (median of 5)").round(2).to_string())

# %%
server.shutdown()
server.server_close()
exec_prog.close()

# %% [markdown]
# The time per scrape grows with the number of keys: each key is BPF map
# reads (BCC's `items()` makes two `bpf()` calls per entry) and lines of
# text. (The figures above are not compared between runs: on a loaded
# machine the largest map's scrape varies several-fold.) `benchmarks/ch13_exporter.py`
# measures it properly and its report (`benchmarks/ch13_exporter.md`) gives
# the figures for this machine. At the usual scrape intervals (15 to 60
# seconds) even ten thousand series are cheap; but a label with unbounded
# values (a pid, a file name) makes the map, the scrape and Prometheus's
# storage grow without limit. Choose labels with few values, like a
# command name or a cgroup.

# %% [markdown]
# ## 13.8 How Cloudflare's `ebpf_exporter` does it
#
# `ebpf_exporter` (github.com/cloudflare/ebpf_exporter) is the production
# tool for exactly this job. Its design, from its README and code:
#
# * **Programs are compiled ahead of time, with libbpf and CO-RE.** Each
#   "config" is a `.bpf.c` file compiled to an ELF object against
#   `vmlinux.h`, plus a YAML file of the same name. Early versions used BCC
#   and compiled C from the YAML at start-up, like this chapter; the project
#   moved to libbpf ("more like libbpf-tools"), so a compiled example runs
#   on any kernel with BTF, without clang or headers on the target machine
#   (chapter 10 explains why).
# * **The YAML maps maps to metrics.** `metrics: counters:` and
#   `histograms:` name a map each, with its `labels`. Each label takes its
#   bytes of the map's key through a chain of **decoders**, among them
#   `string`, `uint`, `ksym` (a kernel address to a function name), `cgroup`
#   (an id to a path), `static_map`, `regexp` (keep only matching values),
#   `inet_ip`, `majorminor`, `syscall` and `errno`. Our collector does that decoding in
#   Python, by hand.
# * **Histograms are rebuilt in user space** from keys that carry a bucket
#   number, with `bucket_type` `exp2`, `exp2zero`, `linear` or `fixed`,
#   `bucket_min`/`bucket_max` (every bucket is emitted, zeros included) and a
#   `bucket_multiplier` (microseconds to seconds). Its `exp2` helper in the
#   kernel **rounds up** (since 2025, its issue #488), so that bucket `k`
#   holds values up to exactly `2**k`, the Prometheus `le`: the same fix
#   as lab 13.3.
# * **Maps are read at scrape time**, in its Go collector's `Collect`, as
#   here; a counter can instead be fed by events through a perf buffer
#   (`perf_event_array: true`): one increment per event in user space,
#   reset every `flush_interval` (an hour by default), with the perf
#   buffer's lost events exported as a drop counter. It can also turn
#   events into OpenTelemetry traces.
#
# | | this chapter | `ebpf_exporter` |
# |---|---|---|
# | BPF code | C strings compiled by BCC at start-up | `.bpf.c` compiled with clang, loaded by libbpf (CO-RE) |
# | map to metric | a Python collector per program | declared in YAML: labels, decoders, bucket types |
# | needs on the target | clang, kernel headers (chapter 10) | BTF only |
# | reading | at every scrape | at every scrape (plus flushed perf-event counters) |
# | language | Python | Go |
#
# The Python collector is the better place to learn and to prototype: the
# whole path fits on a screen. For a fleet, a compiled CO-RE object and a
# declarative config are what you want to ship.

# %% [markdown]
# ## Recap
#
# * The **ring buffer** is one buffer for all CPUs, in reservation order;
#   the **perf buffer** is one per CPU. The ring buffer's losses are yours
#   to count in the program; the perf buffer reports its own, but only with
#   the next event that fits.
# * Give rare, important events **their own ring**: a flood in one ring
#   cannot take their room. `ConsumerGroup` runs one consumer per ring.
# * Count every loss: `kernel_lost` (your counter), `dropped` (the queue),
#   `handler_errors`. **Backpressure** chooses where the loss happens:
#   `"drop"` in user space, `"block"` in the kernel. It does not remove it.
# * **Filter first** in the kernel, with a map user space can change. Let
#   the ring's default wake-up batch for you; `BPF_RB_FORCE_WAKEUP` on every
#   event is the expensive choice.
# * **Aggregate in the kernel** when you want numbers, not events; read
#   intervals with `items_lookup_and_delete_batch()`.
# * An **exporter** reads maps at scrape time; lint it with `promtool`,
#   scrape it with Prometheus, and keep labels few.
#
# **Questions to test yourself**
#
# 1. A perf buffer dropped 500 events on CPU 1 at noon, and CPU 1 has been
#    idle since. When does your `lost_cb` hear about it?
# 2. Your consumer runs with `overflow="block"` and reports `dropped == 0`.
#    Can you conclude that no event was lost?
# 3. Why does the ring buffer not wake the reader on every event by
#    default, and when would you pass `BPF_RB_FORCE_WAKEUP`?
# 4. An exporter labels a counter by pid. What grows, and where?
# 5. Your histogram's kernel side uses `bpf_log2l(v)` and the exporter
#    writes bucket `k` as `le = 2**k`. Which observations are counted in
#    the wrong bucket?
#
# <details><summary>Answers (try first, then click to open)</summary>
#
# 1. When the next event is written to CPU 1's buffer: the kernel writes a
#    "lost" record just before it (13.2). Until then, nothing tells you.
# 2. No: with `"block"` the loss moves into the kernel. Look at
#    `kernel_lost`, which exists only if the program counts its failed
#    reservations and you passed that counter as `lost=` (13.4).
# 3. A wake-up costs the producer (it queues work to wake the reader) and
#    the reader (a system call per wake-up). By default the kernel wakes
#    the reader only when it had caught up, which is when it sleeps. Force
#    a wake-up for rare events that must be handled at once (13.5).
# 4. Every new pid is a new map key and a new series: the map fills (then
#    updates fail), every scrape reads more, and Prometheus keeps every
#    series it ever saw for its whole retention period. Label by command
#    name, cgroup or service instead.
# 5. `bpf_log2l(v)` puts `v` in slot `floor(log2 v) + 1`; a value of
#    exactly `2**j` lands in slot `j + 1`, exported as `le = 2**(j+1)`,
#    though it belongs under `le = 2**j`. Every exact power of two is
#    counted one bucket too high. Round the slot up, `bpf_log2l(v - 1)`
#    for `v >= 2`, and `le = 2**k` is exact (lab 13.3).
#
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 13.1 | a real-time event processor: program starts and exits in two ring buffers, a live per-command table, kernel-side loss counters | `labs/ch13/lab_13_1_event_processor.ipynb` |
# | 13.2 | an in-kernel aggregation pipeline: calls, bytes, max and a log2 histogram of `write()` per command, read in intervals | `labs/ch13/lab_13_2_aggregation_pipeline.ipynb` |
# | 13.3 | a Prometheus exporter: counters and a histogram from maps, linted by promtool, scraped by a real Prometheus, checked through its query API | `labs/ch13/lab_13_3_prometheus_exporter.ipynb` |
#
# Each lab ends with a check cell that runs its own workload (commands with
# fresh names, known counts, random sizes and exit statuses) and compares
# what your code recorded. `ebpf-tutor progress` shows what you have
# passed; the solutions are in `solutions/ch13/`.
