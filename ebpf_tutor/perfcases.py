"""The measured cases of chapter 12, one function each.

Each function loads real programs, drives a workload whose true size it
knows (`contention.hammer`: marked close() calls from pinned processes),
and returns one pandas row per run, so that the notebook and
`benchmarks/ch12_perf.py` show the same experiment, the notebook once and
the benchmark many times.

    counters(calls=200_000)          plain += vs atomic add vs per-CPU slots, 2 CPUs
    event_channels(rate=100_000)     ring buffer vs perf buffer at one event rate
    map_reads(entries=10_000)        per-key reads vs one batch call
"""
from __future__ import annotations

import threading
import time

import pandas as pd

from .bpfsys.stats import ProgStats, run_time_stats
from .bpfsys.tgid import kernel_tgid
from .contention import hammer, new_marker, usable_cpus
from .program import Program

# One program per way of counting, all on the same tracepoint: each has its
# own map and its own run-time statistics.
COUNTER_C = {
    "plain +=": r"""
BPF_ARRAY(count, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
    int zero = 0;
    u64 *c = count.lookup(&zero);
    if (c)
        *c += 1;                        /* load, add, store: not atomic */
    return 0;
}
""",
    "atomic": r"""
BPF_ARRAY(count, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
    int zero = 0;
    u64 *c = count.lookup(&zero);
    if (c)
        __sync_fetch_and_add(c, 1);     /* one `lock add` on x86 */
    return 0;
}
""",
    "per-CPU": r"""
BPF_PERCPU_ARRAY(count, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
    int zero = 0;
    u64 *c = count.lookup(&zero);       /* this CPU's own slot */
    if (c)
        *c += 1;                        /* nobody else writes it */
    return 0;
}
""",
}


def _fd(prog: Program) -> int:
    """The descriptor of a program's only function (BCC loaded it)."""
    return next(iter(prog.funcs.values())).fd


def _total(prog: Program) -> int:
    value = prog["count"][prog["count"].Key(0)]
    return value.value if hasattr(value, "value") else sum(value)


def counters(calls: int = 200_000, runs: int = 3, cpus: list[int] | None = None) -> pd.DataFrame:
    """Each run: every CPU in `cpus` makes `calls` marked close() calls at
    the same time; each way of counting reports its total, what it lost,
    and its mean run time (BPF_ENABLE_STATS)."""
    cpus = usable_cpus()[:2] if cpus is None else cpus
    marker = new_marker()
    progs = {}
    rows = []
    try:
        for name, src in COUNTER_C.items():
            progs[name] = Program(src, cflags=[f"-DMARKER={marker}"], name=name)
        with run_time_stats():
            for run in range(runs):
                for p in progs.values():
                    p["count"].clear()
                before = {n: ProgStats.of(_fd(p)) for n, p in progs.items()}
                hammer(marker, calls, cpus)
                for name, p in progs.items():
                    used = ProgStats.of(_fd(p)) - before[name]
                    got = _total(p)
                    rows.append({"run": run, "counter": name, "expected": calls * len(cpus),
                                 "counted": got, "lost": calls * len(cpus) - got,
                                 "ns_per_run": used.ns_per_run})
    finally:
        for p in progs.values():
            p.close()
    return pd.DataFrame(rows)


EVENTS_C = r"""
struct event { u64 seq; u32 pid; u32 cpu; };
#ifdef RINGBUF
BPF_RINGBUF_OUTPUT(events, PAGES);            /* one buffer, shared by all CPUs */
#else
BPF_PERF_OUTPUT(events);                      /* one buffer per CPU, sized at open */
#endif
BPF_PERCPU_ARRAY(failed, u64, 1);             /* events the kernel had no room for */

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if (args->fd != MARKER)
        return 0;
    int zero = 0;
    u64 *f = failed.lookup(&zero);
#ifdef RINGBUF
    struct event *e = events.ringbuf_reserve(sizeof(*e));   /* a slot in the ring itself */
    if (!e) {
        if (f) *f += 1;
        return 0;
    }
    e->seq = bpf_ktime_get_ns();
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->cpu = bpf_get_smp_processor_id();
    events.ringbuf_submit(e, 0);
#else
    struct event e = {};                      /* built on the stack, then copied */
    e.seq = bpf_ktime_get_ns();
    e.pid = bpf_get_current_pid_tgid() >> 32;
    e.cpu = bpf_get_smp_processor_id();
    if (events.perf_submit(args, &e, sizeof(e)) < 0 && f)
        *f += 1;
#endif
    return 0;
}
"""
BUFFER_BYTES = 256 * 1024     # both channels get the same memory in all


def event_channels(rate: int, seconds: float = 0.5, channels=("ring buffer", "perf buffer"),
                   cpu: int = 0) -> pd.DataFrame:
    """One hammer on `cpu` makes marked close() calls at `rate` per second
    (0: flat out) for about `seconds`; each call is one event. A Python
    callback counts what arrives through a BPF ring buffer, then through a
    perf buffer of the same total size. Rows: sent, received, lost, the
    producer's ns per call (wall clock, and CPU time)."""
    marker = new_marker()
    calls = int(rate * seconds) if rate else 1_000_000
    ncpu = len(usable_cpus())
    rows = []
    for channel in channels:
        ring = channel == "ring buffer"
        pages = BUFFER_BYTES // 4096 if ring else BUFFER_BYTES // 4096 // ncpu
        flags = [f"-DMARKER={marker}", f"-DPAGES={pages}"] + (["-DRINGBUF"] if ring else [])
        got = [0]
        lost_cb = [0]

        def on_event(*_args):
            got[0] += 1

        def on_lost(n):
            lost_cb[0] += n

        with Program(EVENTS_C, cflags=flags, name=channel) as prog:
            if ring:
                prog["events"].open_ring_buffer(on_event)
                poll = lambda: prog.ring_buffer_poll(10)            # noqa: E731
            else:
                prog["events"].open_perf_buffer(on_event, page_cnt=pages, lost_cb=on_lost)
                poll = lambda: prog.perf_buffer_poll(10)            # noqa: E731
            result = []
            worker = threading.Thread(target=lambda: result.extend(hammer(marker, calls, [cpu],
                                                                           rate=rate)))
            t0 = time.perf_counter()
            worker.start()
            while worker.is_alive():
                poll()
            for _ in range(20):                                      # drain what is left
                poll()
            wall = time.perf_counter() - t0
            failed = sum(prog["failed"][prog["failed"].Key(0)])
        run = result[0]
        rows.append({"channel": channel, "rate": rate, "sent": calls, "received": got[0],
                     "lost": failed, "lost_reported": lost_cb[0] if not ring else failed,
                     "producer_ns_per_event": run.ns / calls,
                     "producer_cpu_ns_per_event": run.cpu_ns / calls,
                     "events_per_s": got[0] / wall})
    return pd.DataFrame(rows)


def _int(x) -> int:
    """A key or value as an int: BCC hands out ctypes objects, or ints from batches."""
    return int(getattr(x, "value", x))


MAP_C = r"""
BPF_HASH(table, u32, u64, MAX_ENTRIES);
BPF_ARRAY(bpf_calls, u64, 1);                 /* bpf() system calls made by TGID */
TRACEPOINT_PROBE(syscalls, sys_enter_bpf) {
    if (bpf_get_current_pid_tgid() >> 32 != TGID)
        return 0;
    int zero = 0;
    u64 *n = bpf_calls.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
"""


def map_reads(entries: int = 10_000, runs: int = 3) -> pd.DataFrame:
    """Fill a hash map with `entries` keys from user space, then read and
    empty it two ways: key by key (BCC's items() walks with get_next_key
    and looks each key up, then one delete per key), and with one
    items_lookup_and_delete_batch() call. Rows: seconds, keys read, and
    the bpf() system calls it took (counted by a tracepoint on sys_enter_bpf)."""
    rows = []
    flags = [f"-DMAX_ENTRIES={entries}", f"-DTGID={kernel_tgid()}"]
    with Program(MAP_C, cflags=flags, name="batch") as prog:
        table, calls = prog["table"], prog["bpf_calls"]
        keys = (table.Key * entries)(*[table.Key(i) for i in range(entries)])
        values = (table.Leaf * entries)(*[table.Leaf(i * 3) for i in range(entries)])
        for run in range(runs):
            for way in ("per key", "batch"):
                table.items_update_batch(keys, values)
                calls_before = calls[calls.Key(0)].value
                t = time.perf_counter()
                if way == "per key":
                    got = {_int(k): _int(v) for k, v in table.items()}
                    for k in list(got):
                        del table[table.Key(k)]
                else:
                    got = {_int(k): _int(v) for k, v in table.items_lookup_and_delete_batch()}
                took = time.perf_counter() - t
                syscalls = calls[calls.Key(0)].value - calls_before - 1   # minus the read
                ok = len(got) == entries and all(got[i] == i * 3 for i in range(0, entries, 97))
                rows.append({"run": run, "way": way, "entries": entries, "seconds": took,
                             "bpf_calls": syscalls, "all_read": ok, "left_in_map": len(table)})
    return pd.DataFrame(rows)
