# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 12.3: Adaptive sampling
#
# **Objective.** A tracer that sends every event to user space costs in
# proportion to the event rate, and a busy machine can have millions per
# second. Keep **1 event in `every`** instead, with `every` in a map that
# user space rewrites as the rate changes, so that about a fixed budget of
# samples per second arrives, whatever the load. The samples must stay
# **unbiased**: each event kept with the same probability, so that each
# sample, weighted by the `every` it was taken at, estimates the whole.
#
# **Expected observation.** The check makes `close()` calls on two
# descriptor numbers nobody has open, `MARKER` and `MARKER + 1` (your
# program gets `-DMARKER=`), in a fixed pattern: one `MARKER` then three
# `MARKER + 1`, over and over. Three phases:
# 1. `every` fixed at 4 by the check: a quarter of the events are sampled,
#    and a quarter of the samples are `MARKER`'s, as in the workload;
# 2. a budget of 2,000 samples/s: the check asks your `next_every` at a few
#    known rates, then runs 100,000 calls/s for 1.2 s, calls `next_every` 5
#    times a second with the rate it measured and writes the answer to
#    `config`. Each answer must keep the sample rate within the budget (at
#    most 2x over, 4x under; 1 when the rate is under the budget), the
#    kernel must keep about 1 event in `every`, and your `estimate` of the
#    calls of each kind must be within 15% of the truth;
# 3. at a rate under the budget, with your `next_every`'s answer in
#    `config`: every event is kept.
#
# **You will use:** `bpf_get_prandom_u32`, `ringbuf_reserve`/`submit`, a
# config map written from user space, weighted counts.

# %% [markdown]
# ## Background
#
# * "Keep every 4th event" is **not** unbiased: if the workload itself has
#   a period that shares a factor with 4, it keeps the same kind of event
#   every time (aliasing). A random draw per event cannot lock onto any
#   pattern: `bpf_get_prandom_u32() % every == 0` holds with probability
#   1/every, independently for each event.
# * If each event is kept with probability 1/every, then each sample
#   "stands for" `every` events, and the sum of `every` over the samples
#   is an unbiased estimate of how many events there were (the
#   Horvitz-Thompson estimator). Record `every` in each sample, because
#   user space may change it between two samples.
# * The in-kernel cost of an event that is *not* sampled is a map lookup
#   and a random number: tens of nanoseconds. The cost of a sample is the
#   ring buffer plus everything user space does with it: microseconds.
#   Sampling trades the second for the first.

# %%
import math
import threading
import time

from ebpf_tutor import Program
from ebpf_tutor.contention import hammer, new_marker, usable_cpus
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program

# %% tags=["answer"]
PROGRAM = r"""
struct sample {
    u32 fd;         /* which descriptor was closed: MARKER or MARKER + 1 */
    u32 every;      /* the sampling period this sample was taken at */
};
BPF_ARRAY(config, u32, 1);              /* [0]: keep 1 event in `every` (user space writes it) */
BPF_PERCPU_ARRAY(seen, u64, 1);         /* every marked event, sampled or not */
BPF_RINGBUF_OUTPUT(samples, 64);        /* the events kept */

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u32 fd = args->fd;
    if (fd != MARKER && fd != MARKER + 1)
        return 0;
    int zero = 0;
    u64 *n = seen.lookup(&zero);
    if (n)
        *n += 1;
    u32 *cfg = config.lookup(&zero);
    u32 every = cfg && *cfg > 1 ? *cfg : 1;
    // TODO 1: keep this event with probability 1 / every (return 0 otherwise),
    //         deciding at random for each event, never by its position
    // TODO 2: reserve a struct sample in `samples`, fill in fd and every, submit
    // BEGIN SOLUTION
    if (bpf_get_prandom_u32() % every != 0)
        return 0;
    struct sample *s = samples.ringbuf_reserve(sizeof(*s));
    if (!s)
        return 0;
    s->fd = fd;
    s->every = every;
    samples.ringbuf_submit(s, 0);
    // END SOLUTION
    return 0;
}
"""


# %% tags=["answer"]
def next_every(seen_per_s: float, budget_per_s: float) -> int:
    """Keep 1 event in how many, so that about `budget_per_s` samples per
    second arrive when events come at `seen_per_s`? At least 1."""
    # TODO 3
    # BEGIN SOLUTION
    return max(1, math.ceil(seen_per_s / budget_per_s))
    # END SOLUTION


def estimate(samples: list[tuple[int, int]]) -> dict[int, float]:
    """From (fd, every) samples: the estimated number of events per fd."""
    # TODO 4: each sample stands for `every` events
    # BEGIN SOLUTION
    totals: dict[int, float] = {}
    for fd, every in samples:
        totals[fd] = totals.get(fd, 0) + every
    return totals
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# The kernel side flips a biased coin per event: heads (probability
# 1/every) the event goes to the ring. The user side divides: if events
# arrive at R per second and you can afford B samples per second, keep 1
# in R/B (rounded up, never below 1). Each sample then stands for `every`
# events: add up the `every`s to count.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `bpf_get_prandom_u32()` is a fresh 32-bit pseudo-random number per call;
#   `% every == 0` is true 1 time in `every` (every is small: the modulo
#   bias is negligible).
# * `struct sample *s = samples.ringbuf_reserve(sizeof(*s)); if (!s) return 0;`
#   then `samples.ringbuf_submit(s, 0);`.
# * `math.ceil(seen_per_s / budget_per_s)`, and `max(1, ...)`.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# if (bpf_get_prandom_u32() % every != 0)
#     return 0;
# struct sample *s = samples.ringbuf_reserve(sizeof(*s));
# ...
# s->fd = fd;
# s->every = every;
# ```
# If the check says phase 1 sampled one kind only, your decision depends on
# a counter (the event's position), not on a random number.
# </details>

# %% [markdown]
# ## Try it: one controller, two rates
#
# 0.6 s at 50,000 calls/s, then 0.6 s at 5,000 calls/s, with a budget of
# 2,000 samples/s. Watch `every` follow the rate.

# %% tags=["try"]
marker = new_marker()
kept = []
with Program(PROGRAM, cflags=[f"-DMARKER={marker}"]) as prog:
    prog["samples"].open_ring_buffer(
        lambda ctx, data, size: kept.append((prog["samples"].event(data).fd,
                                             prog["samples"].event(data).every)))
    one_cpu = usable_cpus()[:1]
    work = threading.Thread(target=lambda: [hammer(marker, 30_000, one_cpu, rate=50_000, period=4),
                                            hammer(marker, 3_000, one_cpu, rate=5_000, period=4)])
    last, t_last = 0, time.monotonic()
    work.start()
    while work.is_alive():
        while time.monotonic() < t_last + 0.2:
            prog.ring_buffer_poll(20)
        now, total = time.monotonic(), sum(prog["seen"][0])
        every = next_every((total - last) / (now - t_last), 2_000)
        prog["config"][0] = prog["config"].Leaf(every)
        print(f"{(total - last) / (now - t_last):9,.0f} events/s -> keep 1 in {every}")
        last, t_last = total, now
    prog.ring_buffer_consume()
    print("estimated per fd:", {fd - marker: round(n) for fd, n in estimate(kept).items()},
          "| true: {0: 8250, 1: 24750}")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("12.3", program=PROGRAM, next_every=next_every, estimate=estimate)
