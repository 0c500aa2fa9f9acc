# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 6.3: Block I/O latency, like `biolatency`
#
# **Objective.** Measure how long the disk takes to serve each request: from
# `block:block_rq_issue` (the request is handed to the device driver) to
# `block:block_rq_complete` (the device says it is done). Keep a log2
# histogram in **microseconds** of all requests, and, for each recently
# completed request, its latency in nanoseconds keyed by device and sector.
#
# **Expected observation.** The check writes a fresh file on the root disk,
# `fsync`s it, asks the file system where its blocks are on the disk
# (`FIEMAP`), and reads 6 to 10 of them back with `O_DIRECT` (no page cache:
# each read is one request to the disk), timing each read from user space.
# Then it makes two loop devices (block devices over files it creates) busy
# at the same sector at the same time: a write to the first is held in
# flight while the second serves a read. For each of those requests,
# `recent` must hold a latency no longer than the request took as seen from
# user space, and `dist` must count it in the right microsecond bucket.

# %% [markdown]
# ## Background
#
# This kernel's two tracepoints (see
# `/sys/kernel/tracing/events/block/block_rq_issue/format`):
#
# | field | `block_rq_issue` | `block_rq_complete` |
# |---|---|---|
# | `dev` | `dev_t`: major << 20 \| minor, of the whole disk | same |
# | `sector` | first sector (512 bytes) on the disk | same |
# | `nr_sector`, `rwbs` | size, and `R`/`W`/`S`(ync)/`F`(lush)... | same |
# | `bytes`, `comm` | yes | no (`error` instead) |
#
# There is no request pointer among these fields, so `{dev, sector}` is what
# ties a completion to its issue: two requests in flight on one device never
# start at the same sector, but two devices can be busy at the same sector at
# once, so the device is part of the key. (The request pointer exists: the
# raw tracepoints `RAW_TRACEPOINT_PROBE(block_rq_issue)` and
# `RAW_TRACEPOINT_PROBE(block_rq_complete)` receive `struct request *rq` in
# `ctx->args[0]`, as chapter 6's table shows, and the pointer itself is a
# good key while the request is in flight. This lab uses the tracepoint
# fields because the check reads `{dev, sector}` back from `recent`.)
#
# Several requests are in flight at once, on several CPUs: the start times
# live in a hash map, not in a variable.

# %%
import mmap
import os
import tempfile

from ebpf_tutor import Program, log2_hist_df, plot_log2_hist
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check reads `dist` and `recent`.

# %% tags=["answer"]
PROGRAM = r"""
struct req_t {
    u32 dev;
    u32 pad;       // keep it: the key has no hidden padding, and you set it to 0
    u64 sector;
};
BPF_HISTOGRAM(dist);                                        // slot -> requests
BPF_TABLE("lru_hash", struct req_t, u64, recent, 16384);    // request -> latency (ns)
// TODO 1: declare `start`, a hash from struct req_t to the issue time (u64 ns)
// BEGIN SOLUTION
BPF_HASH(start, struct req_t, u64, 16384);
// END SOLUTION

TRACEPOINT_PROBE(block, block_rq_issue) {
    // TODO 2: remember now under {args->dev, args->sector}
    // BEGIN SOLUTION
    struct req_t key = {.dev = args->dev, .sector = args->sector};
    u64 ts = bpf_ktime_get_ns();
    start.update(&key, &ts);
    // END SOLUTION
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete) {
    // TODO 3: find the issue time (none: return), store the latency in ns in
    //         `recent`, count it in `dist` in microseconds, forget the start
    // BEGIN SOLUTION
    struct req_t key = {.dev = args->dev, .sector = args->sector};
    u64 *tsp = start.lookup(&key);
    if (!tsp)
        return 0;
    u64 delta = bpf_ktime_get_ns() - *tsp;
    recent.update(&key, &delta);
    dist.atomic_increment(bpf_log2l(delta / 1000));
    start.delete(&key);
    // END SOLUTION
    return 0;
}
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# A latency is a pair of events: remember *when* each request was issued,
# and at its completion subtract. Many requests are in flight at once, so
# the start times live in a map, under a key that names the request the
# same way at both ends and that no other request in flight shares: the
# device *and* the sector (two disks can be busy at the same sector).
# Forget the start once used.
# </details>
#
# <details><summary>Hint 2</summary>
#
# The API: both tracepoints give `args->dev` and `args->sector`;
# `bpf_ktime_get_ns()` is the clock. `start.update(&key, &ts)` at issue,
# `start.lookup(&key)` at completion (NULL if the issue was missed: return),
# `recent.update(&key, &delta)` with the latency in ns,
# `dist.atomic_increment(bpf_log2l(...))` with the latency in µs,
# `start.delete(&key)`.
# </details>
#
# <details><summary>Hint 3</summary>
#
# With the `mq-deadline` or `bfq` scheduler, requests are queued
# (`block_rq_insert`) before they are issued; with `none`, or when the
# device is idle, they are issued directly and `block_rq_insert` never
# fires. Start the clock at `block_rq_issue` to measure the device alone.
# </details>

# <details><summary>Hint 4 (the code)</summary>
#
# The key, built the same way at both ends, `pad` zeroed by the initialiser:
# `struct req_t key = {.dev = args->dev, .sector = args->sector};`. At
# completion: `u64 delta = bpf_ktime_get_ns() - *tsp;`, then
# `recent.update(&key, &delta);` and `dist.atomic_increment(bpf_log2l(delta / 1000));`.
# </details>
#
# %% [markdown]
# ## Try it
#
# Write 8 MiB with `fsync` and read it back with `O_DIRECT`, then plot the
# latency of every request the disk served meanwhile.

# %% tags=["try"]
with Program(PROGRAM) as prog, tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
    path = os.path.join(tmp, "data")
    with open(path, "wb") as f:
        f.write(os.urandom(8 << 20))
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)
    while os.readv(fd, [buf]):
        pass
    os.close(fd)
    hist = log2_hist_df(prog["dist"])
plot_log2_hist(hist, unit="us", title="block I/O latency, issue to completion")
print(f"{hist['count'].sum()} requests")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("6.3", program=PROGRAM)
