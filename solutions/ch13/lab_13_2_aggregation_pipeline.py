# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 13.2: An in-kernel aggregation pipeline
#
# **Objective.** Measure every successful `write()` on the machine without
# sending a single event to user space. The kernel keeps, per command name,
# the number of calls, the bytes written, the largest write, and a log2
# histogram of write sizes. User space reads the maps at intervals and
# **empties them as it reads**, so each reading covers only the interval
# since the last one.
#
# **Expected observation.** The check runs three processes under fresh
# command names: one (A) and two of the same other name (B), each making
# writes of random sizes to `/dev/null`, plus writes that fail (a read-only
# descriptor: `EBADF`) and empty writes (0 bytes). Your `read_interval`
# must report exactly the successful, non-empty writes per name: calls,
# bytes, the maximum and the histogram. Then A writes again, and the
# second reading must hold only that second round.
#
# **You will use:** the tracepoint `syscalls:sys_exit_write` (its `ret` is
# the bytes written, or `-errno`), `lookup_or_try_init`,
# `__sync_fetch_and_add`, `atomic_increment`, `bpf_log2l`, and BCC's
# `items_lookup_and_delete_batch()`.

# %% [markdown]
# ## Background
#
# * Aggregating in the kernel turns a stream of events into a few map
#   entries: the cost of user space no longer grows with the event rate,
#   only with the number of keys.
# * `sys_exit_write` fires when `write()` returns; `args->ret` is what it
#   returned: the bytes written, 0, or a negative error number.
# * `bpf_log2l(v)` is BCC's bucket of a value: `floor(log2(v)) + 1` for
#   `v > 0`, so bucket `k` holds the values from `2**(k-1)` to `2**k - 1`.
#   (In Python: `v.bit_length()`.)
# * A map key may be a struct: `{comm, slot}` gives one histogram per
#   command in one map.
# * `table.items_lookup_and_delete_batch()` reads and deletes every entry
#   in batches, with one system call per batch: what a program adds after
#   an entry was taken lands in a fresh entry, for the next interval.

# %%
import os

import pandas as pd

from ebpf_tutor import Program, check

# %% [markdown]
# ## Your program

# %% tags=["answer"]
PROGRAM = r"""
struct key_t { char comm[16]; };
struct stats_t { u64 calls; u64 bytes; u64 max; };
struct slot_key_t { char comm[16]; u64 slot; };

BPF_HASH(write_stats, struct key_t, struct stats_t, 4096);
BPF_HASH(write_sizes, struct slot_key_t, u64, 16384);

TRACEPOINT_PROBE(syscalls, sys_exit_write) {
    // TODO 1: ignore failed and empty writes (args->ret is the result)
    // TODO 2: key by the command name: update calls, bytes and max of its
    //         write_stats entry (created at zero the first time)
    // TODO 3: add 1 to write_sizes[{comm, bpf_log2l(bytes)}]
    // BEGIN SOLUTION
    if (args->ret <= 0)
        return 0;
    u64 n = args->ret;

    struct key_t key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    struct stats_t zero = {};
    struct stats_t *s = write_stats.lookup_or_try_init(&key, &zero);
    if (s) {
        __sync_fetch_and_add(&s->calls, 1);
        __sync_fetch_and_add(&s->bytes, n);
        if (n > s->max)
            s->max = n;          /* two CPUs at once may keep the smaller: rare, never too big */
    }

    struct slot_key_t slot_key = {};
    __builtin_memcpy(slot_key.comm, key.comm, sizeof(slot_key.comm));
    slot_key.slot = bpf_log2l(n);
    write_sizes.atomic_increment(slot_key);
    // END SOLUTION
    return 0;
}
"""


# %% tags=["answer"]
def read_interval(prog: Program) -> pd.DataFrame:
    """What happened since the last call, one row per command name: columns
    calls, bytes, max, and hist (a dict: log2 slot -> number of writes).
    Both maps are emptied as they are read."""
    # TODO 4: take every entry out of write_stats and write_sizes with
    #         items_lookup_and_delete_batch(), and build the rows
    # BEGIN SOLUTION
    rows: dict[str, dict] = {}
    for k, v in prog["write_stats"].items_lookup_and_delete_batch():
        rows[k.comm.decode(errors="replace")] = {"calls": v.calls, "bytes": v.bytes,
                                                 "max": v.max, "hist": {}}
    for k, v in prog["write_sizes"].items_lookup_and_delete_batch():
        comm = k.comm.decode(errors="replace")
        row = rows.setdefault(comm, {"calls": 0, "bytes": 0, "max": 0, "hist": {}})
        row["hist"][k.slot] = v
    # END SOLUTION
    return pd.DataFrame.from_dict(rows, orient="index", columns=["calls", "bytes", "max", "hist"])


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# One tracepoint call per `write()`, one hash lookup per map, a few atomic
# adds: no event ever leaves the kernel. Skip what should not be counted
# first (a negative result is an error, 0 is nothing written). In user
# space, reading and clearing must be one step, or what is added between
# the read and the clear is lost.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `args->ret` is signed: `if (args->ret <= 0) return 0;`
# * `struct key_t key = {};` then `bpf_get_current_comm(&key.comm, sizeof(key.comm));`
# * `write_stats.lookup_or_try_init(&key, &zero)` returns the entry (NULL
#   only if the map is full); a plain `lookup()` never creates one.
# * `write_sizes.atomic_increment(slot_key)` adds 1 atomically.
# * In Python, keys and values are ctypes structs: `k.comm` (bytes),
#   `k.slot`, `v.calls`. A plain u64 value comes out of the batch call as
#   a Python int (`v`), not as a `c_ulong` (`v.value`) like `items()` gives.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# struct stats_t *s = write_stats.lookup_or_try_init(&key, &zero);
# if (s) {
#     __sync_fetch_and_add(&s->calls, 1);
#     __sync_fetch_and_add(&s->bytes, n);
#     if (n > s->max)
#         s->max = n;
# }
# ```
# ```python
# for k, v in prog["write_stats"].items_lookup_and_delete_batch():
#     rows[k.comm.decode()] = {"calls": v.calls, "bytes": v.bytes, "max": v.max, "hist": {}}
# ```
# </details>

# %% [markdown]
# ## Try it
#
# This notebook's own writes: 3 of 100 bytes and 2 of 5000 to `/dev/null`,
# under its own command name.

# %% tags=["try"]
with Program(PROGRAM) as prog:
    read_interval(prog)                            # start a fresh interval
    fd = os.open("/dev/null", os.O_WRONLY)
    for size in [100, 100, 100, 5000, 5000]:
        os.write(fd, b"x" * size)
    os.close(fd)
    me = open("/proc/self/comm").read().strip()
    print(read_interval(prog).loc[me])

# %% [markdown]
# ## Check

# %% tags=["check"]
check("13.2", program=PROGRAM, read_interval=read_interval)
