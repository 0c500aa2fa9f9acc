"""Chapter 13 checks: a real-time event processor on two ring buffers, an
in-kernel aggregation pipeline, a Prometheus exporter.

Every workload is ours alone: commands with fresh random names (copies of
/bin/sh, or a Python child that renames itself), run a random number of
times with random exit statuses or write sizes, so the check knows every
true count and no hard-coded answer can pass.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from ...events import ConsumerGroup, RingReader
from ...program import Program, close_all
from ...sandbox.prometheus import PrometheusServer, check_metrics, free_port
from ..verdict import LabFailed, expect, lab
from ..workload import unique_name
from . import require_table

PAGE = 4096


# ------------------------------------------------------------- workloads --
class Commands:
    """Copies of /bin/sh under fresh names in a private folder: each run of
    one is ours alone, and `exit N` makes its status N."""

    def __init__(self, names: list[str]):
        self.folder = Path(tempfile.mkdtemp(prefix=f"ebt-{os.getpid()}-c13-"))
        self.names = names
        for n in names:
            shutil.copy("/bin/sh", self.folder / n)

    def argv(self, name: str, code: int) -> list[str]:
        return [str(self.folder / name), "-c", f"exit {code}"]

    def run_all(self, plan: list[tuple[str, int]], together: bool = False) -> None:
        """Run (name, exit status) pairs; `together`: all at once."""
        if together:
            procs = [subprocess.Popen(self.argv(n, c)) for n, c in plan]
            for p in procs:
                p.wait()
        else:
            for n, c in plan:
                subprocess.run(self.argv(n, c))

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Commands":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _skip_unread(prog: Program, ring: str) -> None:
    """Hand back to the kernel what the ring holds now, unread (up to a
    record still being written), so the check's own events find room."""
    with RingReader.open(prog, ring) as reader:
        while reader.read_records().count:
            pass


def _raise_handler_error(lab_id: str, group: ConsumerGroup) -> None:
    """A handler that raised is the learner's bug: report it (an unfinished
    one as NotImplementedError, which the framework turns into a verdict)."""
    for name, consumer in group.consumers.items():
        err = consumer.last_error
        if err is None:
            continue
        if isinstance(err, NotImplementedError):
            raise err
        raise LabFailed(lab_id, f"the handler of ring `{name}` raised {type(err).__name__}: {err}",
                        "run your handler on a small DataFrame by hand and fix it")


# ------------------------------------------------------------------ 13.1 --
def _plan_13_1(rng: random.Random, names: list[str]) -> tuple[list, list, dict]:
    """Two rounds of (name, status) runs and the expected table. Name 0 always
    succeeds, name 1 always fails with one status, name 2 mixes both."""
    status = rng.randint(2, 250)
    first, second = [], []
    for i, name in enumerate(names):
        k1, k2 = rng.randint(3, 6), rng.randint(2, 4)
        if i == 0:
            codes = [0] * (k1 + k2)
        elif i == 1:
            codes = [status] * (k1 + k2)
        else:
            codes = [0, status] + [rng.choice([0, rng.randint(1, 255)]) for _ in range(k1 + k2 - 2)]
            rng.shuffle(codes)
        first += [(name, c) for c in codes[:k1]]
        second += [(name, c) for c in codes[k1:]]
    expected = {n: {"starts": 0, "exits": 0, "failures": 0} for n in names}
    for name, code in first + second:
        expected[name]["starts"] += 1
        expected[name]["exits"] += 1
        expected[name]["failures"] += code != 0
    rng.shuffle(first)
    return first, second, expected


def _seen_13_1(table, names: list[str]) -> dict:
    frame = table.frame()
    seen = {}
    for n in names:
        row = frame.loc[n] if n in getattr(frame, "index", []) else {}
        seen[n] = {k: int(row.get(k, 0)) if hasattr(row, "get") else 0
                   for k in ("starts", "exits", "failures")}
    return seen


@lab("13.1", "real-time event processor (two ring buffers)")
def check_event_processor(program: str, table_class, open_processor) -> str:
    """Round 1 runs before the consumers start (its events wait in the ring
    and arrive as one batch), then a flood overflows both one-page rings
    (the kernel-side counters must account for it), then the consumers run
    and round 2 happens live. The table must match, while still running."""
    lab_id = "13.1"
    rng = random.Random()
    names = [unique_name("p13") for _ in range(3)]
    flood_name = unique_name("f13")
    first, second, expected = _plan_13_1(rng, names)
    try:
        with Commands(names + [flood_name]) as cmds:
            prog = Program(program, name=f"lab {lab_id}")
            require_table(prog, "lost", lab_id, "keep the given BPF_ARRAY(lost, u64, 2)")
            for ring in ("execs", "exits"):
                table_map = require_table(prog, ring, lab_id, f"keep the given ring `{ring}`")
                expect(int(table_map.max_entries) <= 2 * PAGE, lab_id,
                       f"ring `{ring}` is {int(table_map.max_entries)} bytes",
                       "keep the rings at one page: the check needs them to overflow")
            table = table_class()
            group = open_processor(prog, table)
            expect(isinstance(group, ConsumerGroup) and set(group.consumers) == {"execs", "exits"},
                   lab_id, f"open_processor returned {group!r}",
                   "return ConsumerGroup(execs=RingBufferConsumer(...), exits=RingBufferConsumer(...))")
            for ring in ("execs", "exits"):
                _skip_unread(prog, ring)          # the machine's own events since the load
            cmds.run_all(first, together=True)            # waits in the rings: one batch later
            flood = 3 * PAGE // 32 + 100                  # far more than a page of records holds
            cmds.run_all([(flood_name, 0)] * flood)
            before = group.stats
            for ring, st in before.items():
                expect(st.kernel_lost is not None, lab_id,
                       f"the consumer of `{ring}` has no loss counter (kernel_lost is n/a)",
                       f"pass lost=lambda: prog['lost'][{0 if ring == 'execs' else 1}].value")
                expect(st.kernel_lost >= flood - PAGE // 32, lab_id,
                       f"{flood} processes started and exited while nobody read the one-page ring "
                       f"`{ring}` (it holds at most {PAGE // 32} records), yet your counter says "
                       f"only {st.kernel_lost} events were lost",
                       "when ringbuf_reserve() returns NULL, call count_lost() with the ring's index")
            with group:
                cmds.run_all(second)              # every event of round 2 is in a ring now
                deadline = time.monotonic() + 10
                while True:
                    _raise_handler_error(lab_id, group)
                    seen = _seen_13_1(table, names)
                    if seen == expected or time.monotonic() > deadline:
                        break
                    if all(c.wait_idle(timeout=1.0) for c in group.consumers.values()):
                        time.sleep(0.2)                   # rings drained, batches handled:
                        _raise_handler_error(lab_id, group)
                        seen = _seen_13_1(table, names)   # the table will not change now
                        break
                    time.sleep(0.1)
                live = seen == expected
            _raise_handler_error(lab_id, group)
            seen = _seen_13_1(table, names)
            for n in names:
                e, s = expected[n], seen[n]
                expect(s == e, lab_id,
                       f"command {n}: expected {e}, your table has {s}",
                       _hint_13_1(e, s))
            expect(live, lab_id, "the table was right only after the consumers closed",
                   "update the counts in the handlers, as each batch arrives")
            lost = {k: v.kernel_lost for k, v in group.stats.items()}
        total = sum(e["starts"] for e in expected.values())
        return (f"{total} starts of 3 fresh commands counted live, exits and failures exact; "
                f"flood of {flood}: kernel lost {lost['execs']} starts, {lost['exits']} exits")
    finally:
        close_all()


def _hint_13_1(e: dict, s: dict) -> str:
    if s["starts"] == 0 and s["exits"] == 0:
        return ("nothing arrived for this command: reserve, fill and submit the events in both "
                "tracepoints, and pass each handler to its ring's consumer")
    if s["exits"] == 0 and s["starts"] == e["starts"]:
        return "no exits arrived: reserve exit events from the `exits` ring, and hand them to on_exits"
    if s["starts"] and s["starts"] < e["starts"]:
        return ("fewer starts than runs: a handler gets a whole batch; add each command's "
                "number of rows (value_counts), not 1 per call")
    if s["failures"] != e["failures"] and s["exits"] == e["exits"]:
        return "a failure is any exit with code != 0 (the code is args->error_code)"
    return "compare your handlers with the columns of the batch they get"


# ------------------------------------------------------------------ 13.2 --
WRITER = r"""
import ctypes, json, os, sys
name, sizes, bad, empty = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)      # PR_SET_NAME: our comm from now on
fd, ro = os.open("/dev/null", os.O_WRONLY), os.open("/dev/null", os.O_RDONLY)
for i, size in enumerate(sizes):
    os.write(fd, b"w" * size)
    if i < bad:
        try:
            os.write(ro, b"x")           # EBADF: a failed write
        except OSError:
            pass
    if i < empty:
        os.write(fd, b"")                # returns 0: nothing written
os._exit(0)                              # no flush: no write we did not plan
"""


def run_writer(name: str, sizes: list[int], bad: int = 0, empty: int = 0) -> None:
    """A process that renames itself `name`, then writes `sizes` bytes to
    /dev/null, plus `bad` failed and `empty` zero-byte writes."""
    import json
    subprocess.run([sys.executable, "-c", WRITER, name, json.dumps(sizes), str(bad), str(empty)],
                   check=True, timeout=60)


def random_sizes(rng: random.Random, n: int) -> list[int]:
    """n write sizes with a power of two and a power of two minus one among
    them (the edges of log2 buckets), the largest never last."""
    k = rng.randint(3, 15)
    sizes = [1 << k, (1 << rng.randint(3, 15)) - 1] + [rng.randint(1, 65536) for _ in range(n - 2)]
    rng.shuffle(sizes)
    if sizes[-1] == max(sizes):                  # the last write is never the largest:
        i = max(j for j, v in enumerate(sizes) if v < sizes[-1])   # (2**k and 2**j - 1 differ)
        sizes[i], sizes[-1] = sizes[-1], sizes[i]
    return sizes


def expected_row(sizes: list[int]) -> dict:
    return {"calls": len(sizes), "bytes": sum(sizes), "max": max(sizes),
            "hist": dict(Counter(s.bit_length() for s in sizes))}


def _row_of(frame, name: str) -> dict | None:
    if frame is None or name not in getattr(frame, "index", []):
        return None
    row = frame.loc[name]
    hist = row.get("hist") if hasattr(row, "get") else None
    return {"calls": int(row.get("calls", 0)), "bytes": int(row.get("bytes", 0)),
            "max": int(row.get("max", 0)),
            "hist": {int(k): n for k, v in (hist or {}).items() if (n := int(getattr(v, "value", v)))}}


def _hint_13_2(e: dict, s: dict | None) -> str:
    if s is None:
        return ("no row for this command: key write_stats by bpf_get_current_comm(), create the "
                "entry with lookup_or_try_init, and index read_interval's rows by the command name")
    if s["calls"] == 0 and s["hist"]:
        return ("the histogram has writes but write_stats has none: create the entry with "
                "lookup_or_try_init (a plain lookup() returns NULL for a new key)")
    if s["calls"] > e["calls"]:
        return "count only successful, non-empty writes: return early when args->ret <= 0"
    if not s["hist"] and s["calls"]:
        return ("write_stats has this command but write_sizes has no slot for it: fill the slot "
                "key's comm with the command name (copy key.comm into slot_key.comm)")
    if s["max"] != e["max"]:
        return "max must be the largest write so far, not the last one"
    if s["hist"] != e["hist"] and s["calls"] == e["calls"]:
        return "a write of n bytes goes in slot bpf_log2l(n): in Python, n.bit_length()"
    return "compare your row with the expected one, field by field"


@lab("13.2", "in-kernel aggregation pipeline")
def check_aggregation(program: str, read_interval) -> str:
    """Round 1: A once, B twice (same name, two processes), with failed and
    empty writes. Round 2: A again. Each reading must be exactly its round."""
    lab_id = "13.2"
    rng = random.Random()
    a, b = unique_name("w13"), unique_name("w13")
    a1 = random_sizes(rng, rng.randint(5, 12))
    b1, b2 = random_sizes(rng, rng.randint(4, 8)), random_sizes(rng, rng.randint(4, 8))
    a2 = random_sizes(rng, rng.randint(5, 12))
    try:
        prog = Program(program, name=f"lab {lab_id}")
        require_table(prog, "write_stats", lab_id, "keep the given BPF_HASH(write_stats, ...)")
        require_table(prog, "write_sizes", lab_id, "keep the given BPF_HASH(write_sizes, ...)")
        run_writer(a, a1, bad=rng.randint(1, 3), empty=rng.randint(1, 3))
        run_writer(b, b1, bad=1)
        run_writer(b, b2, empty=1)
        first = read_interval(prog)
        for name, sizes in [(a, a1), (b, b1 + b2)]:
            e, s = expected_row(sizes), _row_of(first, name)
            expect(s == e, lab_id, f"first interval, command {name}: expected {e}, you read {s}",
                   _hint_13_2(e, s))
        run_writer(a, a2, bad=1, empty=1)
        second = read_interval(prog)
        e, s = expected_row(a2), _row_of(second, a)
        stale = s is not None and (s["calls"] > e["calls"] or sum(s["hist"].values()) > e["calls"])
        expect(s == e, lab_id, f"second interval, command {a}: expected {e} (this round only), "
               f"you read {s}",
               "empty both maps as you read them (items_lookup_and_delete_batch), so each "
               "reading starts from zero" if stale else _hint_13_2(e, s))
        s_b = _row_of(second, b)
        expect(s_b is None or s_b["calls"] == 0, lab_id,
               f"second interval: command {b} wrote nothing, you read {s_b}",
               "empty the maps as you read them (items_lookup_and_delete_batch)")
        return (f"{len(a1) + len(b1) + len(b2)} then {len(a2)} writes aggregated in the kernel, "
                f"exact per interval (calls, bytes, max, log2 histogram); failed and empty writes skipped")
    finally:
        close_all()


# ------------------------------------------------------------------ 13.3 --
METRICS = {"ebpf_write_calls": "counter", "ebpf_write_bytes": "counter",
           "ebpf_write_size_bytes": "histogram"}


def edge_sizes(rng: random.Random, n: int) -> list[int]:
    """n write sizes: powers of two and their neighbours (where a bucket
    bound that is off by one shows), and some at random."""
    sizes = [1 << rng.randint(1, 16)]                      # always one exact power of two
    for _ in range(n - 1):
        k = rng.randint(1, 16)
        sizes.append(rng.choice([1 << k, (1 << k) + 1, (1 << k) - 1, rng.randint(1, 1 << 16)]))
    rng.shuffle(sizes)
    return sizes


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _stop_server(server) -> None:
    if server is not None and hasattr(server, "shutdown"):
        server.shutdown()
        server.server_close()


def _buckets(prom: PrometheusServer, comm: str) -> dict[float, float]:
    return {float(labels["le"]): value for labels, value in
            prom.query(f'ebpf_write_size_bytes_bucket{{comm="{comm}"}}')}


def _one(prom: PrometheusServer, expr: str) -> float | None:
    res = prom.query(expr)
    return res[0][1] if res else None


@lab("13.3", "Prometheus exporter")
def check_exporter(program: str, start_exporter) -> str:
    """promtool lints the endpoint; its values must be the workload's, and
    more writes must show at the next scrape; a real Prometheus, started
    first (its first scrape waits ~5 s), scrapes it every second over
    loopback, and its query API must read the same values back."""
    lab_id = "13.3"
    rng = random.Random()
    a, b = unique_name("x13"), unique_name("x13")
    a1, b1, b2, a2 = (edge_sizes(rng, rng.randint(6, 12)) for _ in range(4))
    server = None
    port = free_port()
    try:
        # Prometheus first: it passes its first target on only after ~5 s (its
        # discovery manager's fixed throttle), so let that wait overlap the rest.
        with PrometheusServer([f"127.0.0.1:{port}"], scrape_interval=1.0) as prom:
            prog = Program(program, name=f"lab {lab_id}")
            require_table(prog, "write_stats", lab_id, "keep the given BPF_HASH(write_stats, ...)")
            server = start_exporter(prog, port)
            expect(hasattr(server, "server_address"), lab_id,
                   f"start_exporter returned {server!r}, not the HTTP server",
                   "return the server that start_http_server(...) gives back: server, _thread = ...")
            host = server.server_address[0]
            expect(host == "127.0.0.1", lab_id, f"your exporter listens on {host!r}",
                   "serve on loopback only: start_http_server(port, addr=\"127.0.0.1\", ...)")
            run_writer(a, a1)
            run_writer(b, b1)
            run_writer(b, b2)
            text = _scrape(port)
            lint = check_metrics(text)
            expect(lint.ok, lab_id, f"promtool check metrics found problems: {'; '.join(lint.problems)}",
                   "counters come from CounterMetricFamily (it adds _total), and every family needs "
                   "a help text")
            # Our own scrapes first: a wrong value fails here, without waiting for Prometheus.
            les = {}
            for comm, sizes in [(a, a1), (b, b1 + b2)]:
                series = _from_text(text, comm, lab_id)
                _expect_series(series, lab_id, comm, sizes, "your /metrics: ")
                les[comm] = sorted(series["buckets"])
            expect(les[a] == les[b] and len(les[a]) >= 17, lab_id,
                   f"the two commands have different or few buckets: {les[a]} and {les[b]}",
                   "give every series every bucket, 2**0 to 2**MAX_SLOT, zeros included, and +Inf")
            run_writer(a, a2)
            _expect_series(_from_text(_scrape(port), a, lab_id), lab_id, a, a1 + a2,
                           "after more writes, your /metrics: ", live=True)
            # Then what a real Prometheus scraped, read back through its query API.
            prom.wait_for_fresh_scrape()
            for metric, kind in METRICS.items():
                seen = prom.metadata(metric).get("type")
                expect(seen == kind, lab_id, f"Prometheus says {metric} is a {seen}, not a {kind}",
                       f"build {metric} with {kind.capitalize()}MetricFamily")
            for comm, sizes in [(a, a1 + a2), (b, b1 + b2)]:
                _expect_series(_from_prom(prom, comm), lab_id, comm, sizes,
                               "through Prometheus's query API, ", live=True)
            p50 = _one(prom, f'histogram_quantile(0.5, ebpf_write_size_bytes_bucket{{comm="{a}"}})')
        return (f"promtool clean; exact counters and {len(les[a])} cumulative buckets for 2 fresh "
                f"commands, live after more writes; a real Prometheus scraped 127.0.0.1 and its "
                f"query API read the same back (median write of {a}: {p50:.0f} bytes by "
                f"histogram_quantile)")
    finally:
        _stop_server(server)
        close_all()


def _from_prom(prom: PrometheusServer, comm: str) -> dict:
    """One command's series, as Prometheus stored them."""
    sel = f'{{comm="{comm}"}}'
    return {"calls": _one(prom, f"ebpf_write_calls_total{sel}"),
            "bytes": _one(prom, f"ebpf_write_bytes_total{sel}"),
            "buckets": _buckets(prom, comm),
            "count": _one(prom, f"ebpf_write_size_bytes_count{sel}"),
            "sum": _one(prom, f"ebpf_write_size_bytes_sum{sel}")}


def _from_text(text: str, comm: str, lab_id: str) -> dict:
    """One command's series, parsed from an exposition in the text format."""
    from prometheus_client.parser import text_string_to_metric_families
    names = {"ebpf_write_calls_total": "calls", "ebpf_write_bytes_total": "bytes",
             "ebpf_write_size_bytes_count": "count", "ebpf_write_size_bytes_sum": "sum"}
    series: dict = {"calls": None, "bytes": None, "buckets": {}, "count": None, "sum": None}
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except ValueError as e:
        raise LabFailed(lab_id, f"your /metrics could not be parsed: {e}",
                        "build the metrics with prometheus_client's metric families") from None
    for sample in samples:
        if sample.labels.get("comm") != comm:
            continue
        if sample.name == "ebpf_write_size_bytes_bucket":
            series["buckets"][float(sample.labels["le"])] = sample.value
        elif sample.name in names:
            series[names[sample.name]] = sample.value
    return series


def _expect_series(series: dict, lab_id: str, comm: str, sizes: list[int], where: str,
                   live: bool = False) -> None:
    """The counters, the histogram's buckets, _count and _sum of one command."""
    calls = series["calls"]
    expect(calls == len(sizes), lab_id,
           f"{where}ebpf_write_calls_total{{comm=\"{comm}\"}} is {calls}, expected {len(sizes)}",
           "read the maps inside collect(), at every scrape" if live and calls is not None
           else "add one series per write_stats entry, labelled with its comm, reading the maps "
                "inside collect(): the command ran after your exporter started")
    nbytes = series["bytes"]
    expect(nbytes == sum(sizes), lab_id,
           f"{where}ebpf_write_bytes_total{{comm=\"{comm}\"}} is {nbytes}, expected {sum(sizes)}",
           "the bytes counter is the entry's bytes field")
    buckets = series["buckets"]
    expect(float("inf") in buckets, lab_id, f"{where}no +Inf bucket for {comm}: {buckets}",
           "end the buckets with (\"+Inf\", count)")
    wrong = {le: (n, sum(s <= le for s in sizes)) for le, n in sorted(buckets.items())
             if n != sum(s <= le for s in sizes)}
    expect(not wrong, lab_id,
           f"{where}buckets of {comm} (le: yours, expected) differ: "
           + ", ".join(f"{le:g}: {y:g} vs {e}" for le, (y, e) in list(wrong.items())[:6]),
           _bucket_hint(buckets, wrong))
    count, total = series["count"], series["sum"]
    expect(count == len(sizes) and total == sum(sizes), lab_id,
           f"{where}{comm}: _count {count} and _sum {total}, expected {len(sizes)} and {sum(sizes)}",
           "the +Inf bucket is the count; sum_value is the bytes")


def _bucket_hint(buckets: dict[float, float], wrong: dict) -> str:
    counts = [n for _, n in sorted(buckets.items())]
    if any(b < a for a, b in zip(counts, counts[1:])):
        return ("your counts go down as le grows: each bucket counts every write of at most le "
                "bytes, so keep a running total over the slots")
    if all(y < e for y, e in wrong.values()) and all(le == 2 ** round(math.log2(le)) for le in wrong):
        return ("writes of exactly 2**k bytes are missing from le=2**k: round the slot up, "
                "slot_of(v) = bpf_log2l(v - 1) for v >= 2")
    return "each bucket counts every write of at most le bytes: keep a running total over the slots"
