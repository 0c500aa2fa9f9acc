# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 13.3: A Prometheus exporter
#
# **Objective.** Publish the kernel's write statistics as Prometheus
# metrics, the way Cloudflare's `ebpf_exporter` does: the BPF program
# aggregates in maps, and a `prometheus_client` **custom collector** reads
# the maps at every scrape and turns them into two counters and a
# histogram per command name:
#
# | metric | type | value |
# |---|---|---|
# | `ebpf_write_calls_total{comm}` | counter | successful `write()` calls |
# | `ebpf_write_bytes_total{comm}` | counter | bytes written |
# | `ebpf_write_size_bytes{comm}` | histogram | sizes, buckets `le` = 1, 2, 4, ... 2**24 and `+Inf` |
#
# The endpoint listens on **127.0.0.1 only**.
#
# **Expected observation.** The check starts your exporter on a free port,
# runs commands with fresh names that write random sizes (powers of two
# among them: the edges of the buckets), and then:
# 1. `promtool check metrics` (from the Prometheus project) must find
#    nothing to complain about in your `/metrics`;
# 2. in your `/metrics`, the counters must be the workload's, and for every
#    bucket `le` the count must be the number of writes of at most `le`
#    bytes; after more writes, the next scrape must show the new totals;
# 3. a real Prometheus server, started for the check with a one-second
#    scrape interval, scrapes your endpoint over loopback (its first scrape
#    comes about 5 seconds after it starts: Prometheus hands new targets
#    to its scrapers at most every 5 s); through its HTTP query API, the
#    types must be counter, counter and histogram, and the values the same.
#
# **You will use:** `prometheus_client`'s `CounterMetricFamily`,
# `HistogramMetricFamily`, `CollectorRegistry`, `start_http_server`.

# %% [markdown]
# ## Background
#
# * A Prometheus **histogram** is a set of counters `_bucket{le="x"}`, each
#   the number of observations **at most** `x` (cumulative), plus
#   `le="+Inf"` (all of them), `_count` and `_sum`. Every series should
#   carry the same buckets, zeros included, or queries over time break.
# * BCC's `bpf_log2l(v)` puts `v` in bucket `floor(log2 v) + 1`, which
#   holds `2**(k-1)` to `2**k - 1`: its natural bound would be `2**k - 1`,
#   not a power of two. Round **up** instead, the smallest `k` with
#   `v <= 2**k`, and bucket `k`'s bound is exactly `le = 2**k`. For
#   `v >= 2` that is `bpf_log2l(v - 1)`; `ebpf_exporter` rounds up the same
#   way for the same reason.
# * A custom collector is any object with a `collect()` method that yields
#   metric families; `prometheus_client` calls it on every scrape, so the
#   values are always the maps' values of that moment.

# %%
from collections import Counter, defaultdict

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from ebpf_tutor import Program, check

MAX_SLOT = 24        # the last finite bucket: 2**24 bytes (16 MiB)

# %% [markdown]
# ## Your program
#
# The aggregation is lab 13.2's, without `max`; you write the bucketing.

# %% tags=["answer"]
PROGRAM = r"""
struct key_t { char comm[16]; };
struct stats_t { u64 calls; u64 bytes; };
struct slot_key_t { char comm[16]; u64 slot; };

BPF_HASH(write_stats, struct key_t, struct stats_t, 4096);
BPF_HASH(write_sizes, struct slot_key_t, u64, 16384);

/* The bucket of a write of v bytes: the smallest k with v <= 2**k. */
static __always_inline u64 slot_of(u64 v) {
    u64 slot = 0;
    // TODO 1: for v >= 2, slot = bpf_log2l(v - 1)   (check: 4 -> 2, 5 -> 3)
    // BEGIN SOLUTION
    if (v > 1)
        slot = bpf_log2l(v - 1);
    // END SOLUTION
    return slot;
}

TRACEPOINT_PROBE(syscalls, sys_exit_write) {
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
    }
    struct slot_key_t slot_key = {};
    __builtin_memcpy(slot_key.comm, key.comm, sizeof(slot_key.comm));
    slot_key.slot = slot_of(n);
    write_sizes.atomic_increment(slot_key);
    return 0;
}
"""


# %% tags=["answer"]
class WriteCollector:
    """Reads the maps at every scrape and yields the three metric families."""

    def __init__(self, prog: Program):
        self.prog = prog

    def collect(self):
        calls = CounterMetricFamily("ebpf_write_calls", "Successful write() calls", labels=["comm"])
        nbytes = CounterMetricFamily("ebpf_write_bytes", "Bytes written by write()", labels=["comm"])
        sizes = HistogramMetricFamily("ebpf_write_size_bytes", "Sizes of write() calls",
                                      labels=["comm"])
        hist: dict[str, Counter] = defaultdict(Counter)
        for k, v in self.prog["write_sizes"].items():
            hist[k.comm.decode(errors="replace")][k.slot] += v.value
        # TODO 2: for each entry of write_stats: add_metric([comm], value) to
        #         calls and nbytes, and add_metric([comm], buckets, sum_value=...)
        #         to sizes, with buckets = [("1", n0), ("2", n0 + n1), ...,
        #         (str(2**MAX_SLOT), ...), ("+Inf", all of them)]
        # BEGIN SOLUTION
        for k, v in self.prog["write_stats"].items():
            comm = k.comm.decode(errors="replace")
            calls.add_metric([comm], v.calls)
            nbytes.add_metric([comm], v.bytes)
            buckets, total = [], 0
            for slot in range(MAX_SLOT + 1):
                total += hist[comm].get(slot, 0)
                buckets.append((str(2 ** slot), total))
            buckets.append(("+Inf", sum(hist[comm].values())))
            sizes.add_metric([comm], buckets, sum_value=v.bytes)
        # END SOLUTION
        yield calls
        yield nbytes
        yield sizes


def start_exporter(prog: Program, port: int):
    """Serve a registry holding a WriteCollector on 127.0.0.1:port; return
    the HTTP server (the caller shuts it down)."""
    # TODO 3: a fresh CollectorRegistry, register the collector,
    #         start_http_server(port, addr=..., registry=...)
    # BEGIN SOLUTION
    registry = CollectorRegistry()
    registry.register(WriteCollector(prog))
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Nothing is pushed: Prometheus comes and asks, and `collect()` answers
# with what the maps hold at that moment. Counters are the maps' values as
# they are. The histogram is rebuilt from the slot counts: walk the slots
# in order, keep a running total, and give every slot a bucket, even an
# empty one. Listening on 127.0.0.1 keeps the endpoint off the network.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `CounterMetricFamily("ebpf_write_calls", help, labels=["comm"])` is
#   exposed as `ebpf_write_calls_total` (the client adds `_total`);
#   `.add_metric(["name"], value)` adds one series.
# * `HistogramMetricFamily(...).add_metric(["name"], buckets, sum_value=s)`
#   takes `buckets` as a list of `(le, cumulative count)` pairs of
#   increasing `le`, ending with `("+Inf", count)`.
# * `start_http_server(port, addr="127.0.0.1", registry=registry)` returns
#   `(server, thread)`.
# * In C, `bpf_log2l(v - 1)` for `v = 4` is 2 and for `v = 5` is 3.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```python
# buckets, total = [], 0
# for slot in range(MAX_SLOT + 1):
#     total += hist[comm].get(slot, 0)
#     buckets.append((str(2 ** slot), total))
# buckets.append(("+Inf", sum(hist[comm].values())))
# sizes.add_metric([comm], buckets, sum_value=v.bytes)
# ```
# If `promtool` complains about a missing `_total` or help text, look at
# the metric family you used and its second argument.
# </details>

# %% [markdown]
# ## Try it
#
# Scrape your own endpoint once and print this notebook's lines.

# %% tags=["try"]
import os
import urllib.request

from ebpf_tutor.sandbox.prometheus import check_metrics, free_port

with Program(PROGRAM) as prog:
    port = free_port()
    server = start_exporter(prog, port)
    try:
        fd = os.open("/dev/null", os.O_WRONLY)
        for size in [1, 4, 5, 4096]:
            os.write(fd, b"x" * size)
        os.close(fd)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        server.shutdown()
        server.server_close()
me = open("/proc/self/comm").read().strip()
print("\n".join(ln for ln in text.splitlines() if f'comm="{me}"' in ln and 'le="' not in ln))
print(check_metrics(text))

# %% [markdown]
# ## Check

# %% tags=["check"]
check("13.3", program=PROGRAM, start_exporter=start_exporter)
