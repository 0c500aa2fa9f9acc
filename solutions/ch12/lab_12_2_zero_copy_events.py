# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 12.2: Zero-copy events, and an honest loss count
#
# **Objective.** Send one event per marked `close()` call to user space
# through a BPF **ring buffer**, writing each event straight into the
# ring's memory (`ringbuf_reserve`, fill in, `ringbuf_submit`): no copy
# from the stack. When the ring is full, the reservation fails: count every
# such event in a per-CPU `lost` counter, so that user space knows exactly
# how much it missed. Then sum that counter from Python.
#
# **Expected observation.** The check runs one process pinned to each CPU;
# each calls `close(MARKER)` a random number of times, where `MARKER` is a
# descriptor number nobody has open (your program gets it as `-DMARKER=`).
# Three rounds: a few events that fit in the ring, a burst far larger than
# the ring while nobody reads, and a paced stream read while it runs. In
# every round, **received + lost = sent**, exactly. Each event carries the
# pid and the CPU of the process that made the call, and the check
# compares them with the processes it ran. It also reads the helpers your
# loaded program calls: it must reserve and submit in the ring, not copy
# an event in with `ringbuf_output`.
#
# **You will use:** `BPF_RINGBUF_OUTPUT`, `events.ringbuf_reserve`,
# `events.ringbuf_submit`, `BPF_PERCPU_ARRAY`, `bpf_get_smp_processor_id`.

# %% [markdown]
# ## Background
#
# * `bpf_perf_event_output` (BCC's `perf_submit`) and `bpf_ringbuf_output`
#   copy an event you built on the 512-byte BPF stack into the buffer.
#   `bpf_ringbuf_reserve` instead hands you a pointer *into the ring*: you
#   write the event in place, then `bpf_ringbuf_submit` makes it visible
#   to the reader (or `bpf_ringbuf_discard` drops it). No copy, and no
#   stack limit on the event's size.
# * A reservation fails (returns NULL) when the ring has no room: the
#   reader is behind. The verifier insists that you test for NULL, and
#   that every successful reservation is submitted or discarded.
# * The kernel does not count what you could not reserve: you must.
#   Several CPUs fail at once when the ring is full: count per CPU.
# * `BPF_RINGBUF_OUTPUT(events, 16)`: 16 pages (64 KiB), shared by all
#   CPUs; the page count must be a power of two. Each record costs its
#   size rounded up to 8 bytes, plus an 8-byte header.

# %%
from ebpf_tutor import Program
from ebpf_tutor.contention import hammer, new_marker, usable_cpus
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program

# %% tags=["answer"]
PROGRAM = r"""
struct event {
    u32 pid;        /* the process that called close() */
    u32 cpu;        /* the CPU it ran on */
    u64 fd;         /* the descriptor it closed */
};
BPF_RINGBUF_OUTPUT(events, 16);          /* 16 pages: 64 KiB for all CPUs */
BPF_PERCPU_ARRAY(lost, u64, 1);          /* events the ring had no room for */

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
    // TODO 1: reserve a struct event in `events`; if that fails, add 1 to this
    //         CPU's slot of `lost` and return 0
    // TODO 2: fill in pid, cpu and fd, then submit the event
    // BEGIN SOLUTION
    struct event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        int zero = 0;
        u64 *n = lost.lookup(&zero);
        if (n)
            *n += 1;
        return 0;
    }
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->cpu = bpf_get_smp_processor_id();
    e->fd = args->fd;
    events.ringbuf_submit(e, 0);
    // END SOLUTION
    return 0;
}
"""


# %% tags=["answer"]
def lost_total(prog: Program) -> int:
    """Events lost so far, all CPUs together."""
    # TODO 3: prog["lost"][0] is a list, one number per CPU
    # BEGIN SOLUTION
    return sum(prog["lost"][0])
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Ask the ring for room first, and write the event where it will be read.
# If there is no room, nothing is sent, so the only trace of that event is
# your counter: add to it on exactly that path. A full ring fails on every
# CPU at once, so give each CPU its own counter slot.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `struct event *e = events.ringbuf_reserve(sizeof(*e));` returns NULL
#   when the ring is full. `sizeof(*e)` is the struct; `sizeof(e)` would be
#   the 8 bytes of a pointer, and the verifier refuses writes past them.
# * `events.ringbuf_submit(e, 0);` publishes it (flags 0: wake the reader
#   when it is waiting).
# * `bpf_get_current_pid_tgid() >> 32` is the process id;
#   `bpf_get_smp_processor_id()` the CPU.
# * `u64 *n = lost.lookup(&zero); if (n) *n += 1;` is safe in a per-CPU map.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# struct event *e = events.ringbuf_reserve(sizeof(*e));
# if (!e) {
#     /* lost.lookup(&zero), then += 1 */
#     return 0;
# }
# e->pid = ...; e->cpu = ...; e->fd = args->fd;
# events.ringbuf_submit(e, 0);
# ```
# and `lost_total` is `sum(prog["lost"][0])`. If the check says received +
# lost is short of what was sent, a failed reservation was not counted.
# </details>

# %% [markdown]
# ## Try it: a burst bigger than the ring
#
# 50,000 calls from each CPU while nobody reads: the ring keeps what fits,
# your counter says what did not.

# %% tags=["try"]
marker = new_marker()
received = []
with Program(PROGRAM, cflags=[f"-DMARKER={marker}"]) as prog:
    prog["events"].open_ring_buffer(lambda ctx, data, size: received.append(
        prog["events"].event(data).cpu))
    runs = hammer(marker, 50_000, cpus=usable_cpus()[:2])
    prog.ring_buffer_consume()
    print(f"sent {sum(r.calls for r in runs):,}, received {len(received):,}, "
          f"lost {lost_total(prog):,}; received per CPU:",
          {cpu: received.count(cpu) for cpu in sorted(set(received))})

# %% [markdown]
# ## Try it: your ring buffer against a perf buffer
#
# The same event sent through `BPF_PERF_OUTPUT` (built on the stack,
# copied by `perf_submit`), under the same paced workload, both read live.
# What does each cost per event inside the program? `BPF_ENABLE_STATS`
# gives the program's total run time; divided by our calls it also holds
# the few nanoseconds each *other* `close()` on the machine costs the
# filter, the same for both. The perf buffer's figure includes the wake-up
# of the reader that BCC asks for after every event, paid by the traced
# process.

# %% tags=["try"]
import threading

from ebpf_tutor.bpfsys.stats import ProgStats, run_time_stats

PERF_VERSION = r"""
struct event { u32 pid; u32 cpu; u64 fd; };
BPF_PERF_OUTPUT(events);
TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
    struct event e = {};
    e.pid = bpf_get_current_pid_tgid() >> 32;
    e.cpu = bpf_get_smp_processor_id();
    e.fd = args->fd;
    events.perf_submit(args, &e, sizeof(e));
    return 0;
}
"""


def cost(source: str, ring: bool, calls: int = 20_000) -> float:
    with Program(source, cflags=[f"-DMARKER={marker}"]) as prog, run_time_stats():
        if ring:
            prog["events"].open_ring_buffer(lambda *a: None)
            poll = lambda: prog.ring_buffer_poll(10)           # noqa: E731
        else:
            prog["events"].open_perf_buffer(lambda *a: None, page_cnt=64)
            poll = lambda: prog.perf_buffer_poll(10)           # noqa: E731
        fd = next(iter(prog.funcs.values())).fd
        before = ProgStats.of(fd)
        work = threading.Thread(target=hammer, args=(marker, calls, usable_cpus()[:1]),
                                kwargs={"rate": 100_000})
        work.start()
        while work.is_alive():
            poll()
        used = ProgStats.of(fd) - before
    return used.run_time_ns / calls


print(f"ring buffer, reserve/submit: {cost(PROGRAM, ring=True):5.0f} ns per event")
print(f"perf buffer, perf_submit:    {cost(PERF_VERSION, ring=False):5.0f} ns per event")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("12.2", program=PROGRAM, lost_total=lost_total)
