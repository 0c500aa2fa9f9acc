#!/usr/bin/env python3
"""What one Prometheus scrape of an eBPF exporter costs, by number of series.

The exporter is chapter 13's design (lab 13.3): a BPF program aggregates
write() calls per command name in two hash maps (totals, and log2 size
slots), and a prometheus_client custom collector reads both maps at every
scrape and renders two counters and a 26-bucket histogram per name.

The maps are filled from user space with N fake command names (every name
with 4 non-empty size slots), then the endpoint on 127.0.0.1 is fetched
--scrapes times. Reported per N: wall time per scrape (median, p90), the
exporter process's CPU time per scrape, the size of the exposition, and
how much of the time is reading the maps (collect() alone, no HTTP, no
text). Finally a real Prometheus server scrapes the largest exposition
every 10 seconds and reports its own scrape_duration_seconds. Both ways of
reading the maps are measured: BCC's items() (key by key) and
items_lookup_batch() (in batches).

USAGE: sudo .venv/bin/python benchmarks/ch13_exporter.py [--keys 10,100,1000,10000] [--json out.json]

examples:
  benchmarks/ch13_exporter.py                       # about a minute
  benchmarks/ch13_exporter.py --keys 10,1000 --scrapes 20
"""
from __future__ import annotations

import argparse
import ctypes as ct
import json
import platform
import resource
import statistics
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily  # noqa: E402

from ebpf_tutor import Program  # noqa: E402
from ebpf_tutor.sandbox.prometheus import PrometheusServer, check_metrics  # noqa: E402

MAX_SLOT = 24
PROGRAM = r"""
struct key_t { char comm[16]; };
struct stats_t { u64 calls; u64 bytes; };
struct slot_key_t { char comm[16]; u64 slot; };
BPF_HASH(write_stats, struct key_t, struct stats_t, 131072);
BPF_HASH(write_sizes, struct slot_key_t, u64, 524288);

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
    slot_key.slot = n > 1 ? bpf_log2l(n - 1) : 0;
    write_sizes.atomic_increment(slot_key);
    return 0;
}
"""


class WriteCollector:
    """Lab 13.3's collector: both maps read at every scrape, key by key
    (BCC's items(): two bpf() calls per entry), or in batches
    (items_lookup_batch(): one bpf() call per batch) with batch=True."""

    def __init__(self, prog: Program, batch: bool = False):
        self.prog, self.batch = prog, batch

    def entries(self, name: str):
        table = self.prog[name]
        return table.items_lookup_batch() if self.batch else table.items()

    def collect(self):
        calls = CounterMetricFamily("ebpf_write_calls", "Successful write() calls", labels=["comm"])
        nbytes = CounterMetricFamily("ebpf_write_bytes", "Bytes written by write()", labels=["comm"])
        sizes = HistogramMetricFamily("ebpf_write_size_bytes", "Sizes of write() calls",
                                      labels=["comm"])
        hist: dict[str, Counter] = defaultdict(Counter)
        for k, v in self.entries("write_sizes"):
            hist[k.comm.decode(errors="replace")][k.slot] += getattr(v, "value", v)
        for k, v in self.entries("write_stats"):
            comm = k.comm.decode(errors="replace")
            calls.add_metric([comm], v.calls)
            nbytes.add_metric([comm], v.bytes)
            buckets, total = [], 0
            for slot in range(MAX_SLOT + 1):
                total += hist[comm].get(slot, 0)
                buckets.append((str(2 ** slot), total))
            buckets.append(("+Inf", sum(hist[comm].values())))
            sizes.add_metric([comm], buckets, sum_value=v.bytes)
        yield calls
        yield nbytes
        yield sizes


def fill(prog: Program, start: int, stop: int) -> None:
    """Fake names fake<i> for i in [start, stop), 4 size slots each."""
    stats, sizes = prog["write_stats"], prog["write_sizes"]
    for i in range(start, stop):
        name = f"fake{i}".encode()
        k = stats.Key()
        k.comm = name
        stats[k] = stats.Leaf(4, 4 * 1000)
        for slot in (3, 7, 10, 12):
            sk = sizes.Key()
            sk.comm, sk.slot = name, slot
            sizes[sk] = ct.c_uint64(1)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(port: int, collector: WriteCollector, scrapes: int) -> dict:
    """Scrape `scrapes` times (3 when one scrape takes over a second)."""
    walls, cpus, size = [], [], 0
    for i in range(scrapes):
        if i >= 3 and walls[0] > 1.0:
            break
        c0, t0 = cpu_seconds(), time.perf_counter()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
        size = len(body)
    reads = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _family in collector.collect():
            pass
        reads.append(time.perf_counter() - t0)
    walls.sort()
    return {"wall_ms_median": statistics.median(walls) * 1e3,
            "wall_ms_p90": walls[int(0.9 * (len(walls) - 1))] * 1e3,
            "cpu_ms_median": statistics.median(cpus) * 1e3,
            "collect_ms_median": statistics.median(reads) * 1e3,
            "bytes": size, "lines": body.count(b"\n"), "lint_ok": None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("examples:")[1])
    ap.add_argument("--keys", default="10,100,1000,10000", help="numbers of command names")
    ap.add_argument("--scrapes", type=int, default=15, help="scrapes per size")
    ap.add_argument("--prometheus-seconds", type=float, default=1.0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    sizes = [int(k) for k in args.keys.split(",")]
    results: dict = {"machine": {"kernel": platform.release(), "python": platform.python_version(),
                                 "cpus": len(__import__("os").sched_getaffinity(0))},
                     "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": []}
    with Program(PROGRAM) as prog:
        servers = {}
        for mode in ("per key", "batch"):
            collector = WriteCollector(prog, batch=mode == "batch")
            registry = CollectorRegistry()
            registry.register(collector)
            servers[mode] = (start_http_server(0, addr="127.0.0.1", registry=registry)[0], collector)
        try:
            filled = 0
            for n in sizes:
                fill(prog, filled, n)
                filled = n
                for mode, (server, collector) in servers.items():
                    port = server.server_port
                    row = {"keys": n, "read": mode, **measure(port, collector, args.scrapes)}
                    if mode == "per key":
                        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
                        row["lint_ok"] = check_metrics(text).ok
                    results["runs"].append(row)
                    print(f"{n:>7} names, {mode:7}: {row['wall_ms_median']:8.2f} ms per scrape (p90 "
                          f"{row['wall_ms_p90']:.2f}), cpu {row['cpu_ms_median']:.2f} ms, maps read "
                          f"{row['collect_ms_median']:.2f} ms, {row['lines']} lines, "
                          f"{row['bytes'] / 1024:.0f} KiB, promtool ok: {row['lint_ok']}", flush=True)
            port = servers["batch"][0].server_port
            with PrometheusServer([f"127.0.0.1:{port}"], scrape_interval=10.0) as prom:
                prom.wait_for_fresh_scrape(timeout=60)
                time.sleep(args.prometheus_seconds)
                got = prom.query('scrape_duration_seconds{job="ebpf"}')
                samples = prom.query('scrape_samples_scraped{job="ebpf"}')
                results["prometheus"] = {"keys": filled, "scrape_duration_s": got[0][1] if got else None,
                                         "samples": samples[0][1] if samples else None}
                print(f"Prometheus scraping {filled} names: last scrape took "
                      f"{results['prometheus']['scrape_duration_s'] * 1e3:.1f} ms for "
                      f"{results['prometheus']['samples']:.0f} samples")
        finally:
            for server, _ in servers.values():
                server.shutdown()
                server.server_close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
