#!/usr/bin/env python3
"""Ring-buffer consumers compared: BCC's per-event callback vs ebpf_tutor.events.

A BPF program on the tracepoint syscalls:sys_enter_getppid writes K records
into a ring buffer for every getppid() call of one process (a sequence
number, a timestamp, pid, cpu: 24 bytes). A separate producer process calls
getppid() in a tight loop, so the kernel, not Python, sets the event rate.

Phases (all in one run, same program, same map):
  1. drain   the producer fills the ring while nobody reads; then each
             consumer drains the same number of events. Measures the
             consumer alone: (a) BCC callback + .event(), (b) ours into
             pandas DataFrames.
  2. live    producer at full speed while the consumer runs: events/s
             delivered, kernel-side loss (failed ringbuf_reserve), drops.
  3. paced   producer paced at --rate events/s for --seconds: zero loss?
             Checks every sequence number arrived once, in order.

USAGE: sudo .venv/bin/python benchmarks/ring_buffer.py [--events N] [--rate R]

examples:
  benchmarks/ring_buffer.py                      # the full run (1-3 minutes)
  benchmarks/ring_buffer.py --events 1000000 --seconds 2 --json out.json
"""
from __future__ import annotations

import argparse
import ctypes as ct
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ebpf_tutor import Program  # noqa: E402
from ebpf_tutor.events import RingBufferConsumer, RingReader  # noqa: E402

BPF_TEXT = r"""
struct event { u64 ts; u64 seq; u32 pid; u32 cpu; };
BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_ARRAY(cfg, u64, 2);        // [0] tgid of the producer, [1] records per call
BPF_ARRAY(seqno, u64, 1);      // next sequence number
BPF_ARRAY(lost, u64, 1);       // records the ring had no room for

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u32 zero = 0, one = 1;
    u64 *tgid = cfg.lookup(&zero), *k = cfg.lookup(&one), *seq = seqno.lookup(&zero);
    if (!tgid || !k || !seq)
        return 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != *tgid)
        return 0;
    u64 n = *k, base = __sync_fetch_and_add(seq, n);
    u64 now = bpf_ktime_get_ns();
    u32 cpu = bpf_get_smp_processor_id();
    for (int i = 0; i < MAX_K; i++) {
        if (i >= n)
            break;
        struct event *e = events.ringbuf_reserve(sizeof(struct event));
        if (!e) {
            lost.atomic_increment(zero);
            continue;
        }
        e->ts = now;
        e->seq = base + i;
        e->pid = pid;
        e->cpu = cpu;
        events.ringbuf_submit(e, 0);
    }
    return 0;
}
"""
MAX_K = 256
PIN = False

# The producer: waits for "go", then makes `calls` getppid() calls, either
# flat out or paced to `calls_per_s` (busy-waiting on the clock in slices).
PRODUCER = r"""
import os, sys, time
calls, per_s = int(sys.argv[1]), float(sys.argv[2])
g = os.getppid
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
t0 = time.perf_counter()
if per_s <= 0:
    for _ in range(calls):
        g()
else:
    done, step = 0, max(1, int(per_s / 1000))      # 1 ms worth of calls at a time
    while done < calls:
        due = t0 + done / per_s
        while time.perf_counter() < due:
            pass
        for _ in range(min(step, calls - done)):
            g()
        done += step
sys.stdout.write(f"{time.perf_counter() - t0:.6f}\n"); sys.stdout.flush()
"""


class Producer:
    """A child process that makes getppid() calls when told to go."""

    def __init__(self, prog: Program, calls: int, k: int, calls_per_s: float = 0, cpu: int | None = 0):
        self.proc = subprocess.Popen([sys.executable, "-c", PRODUCER, str(calls), str(calls_per_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if PIN and cpu is not None and os.cpu_count() and os.cpu_count() > 1:
            os.sched_setaffinity(self.proc.pid, {cpu})
        assert self.proc.stdout.readline().strip() == "ready"
        prog["cfg"][ct.c_int(0)] = ct.c_uint64(self.proc.pid)
        prog["cfg"][ct.c_int(1)] = ct.c_uint64(k)
        self.expected = calls * k

    def go(self) -> float:
        """Start the calls; returns the start time (perf_counter)."""
        t0 = time.perf_counter()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return t0

    def wait(self) -> float:
        """Seconds the producer's loop took."""
        out = self.proc.stdout.readline().strip()
        self.proc.wait()
        return float(out)


def reset(prog: Program) -> None:
    prog["seqno"][ct.c_int(0)] = ct.c_uint64(0)
    prog["lost"][ct.c_int(0)] = ct.c_uint64(0)
    prog["cfg"][ct.c_int(0)] = ct.c_uint64(0)


def kernel_lost(prog: Program) -> int:
    return int(prog["lost"][ct.c_int(0)].value)


def fill(prog: Program, events: int, k: int) -> tuple[float, int]:
    """Let a producer write `events` records while nobody reads; returns its
    rate and how many records it made."""
    reset(prog)
    p = Producer(prog, events // k, k)
    p.go()
    secs = p.wait()
    prog["cfg"][ct.c_int(0)] = ct.c_uint64(0)
    return p.expected / secs, p.expected


class SeqCheck:
    """Sequence numbers: `disorder` counts any that went backwards or
    repeated, `gaps` any that skipped ahead (events lost on the way)."""

    def __init__(self):
        self.next, self.gaps, self.disorder, self.count = 0, 0, 0, 0

    def batch(self, seq: np.ndarray) -> None:
        if not len(seq):
            return
        d = np.diff(seq.astype(np.int64), prepend=self.next - 1)
        self.disorder += int(np.count_nonzero(d < 1))
        self.gaps += int(np.count_nonzero(d > 1))
        self.next = int(seq[-1]) + 1
        self.count += len(seq)

    @property
    def ok(self) -> bool:
        return self.gaps == 0 and self.disorder == 0


# ------------------------------------------------------------- consumers --
class BccCallback:
    """(a) BCC's way: one Python callback per event, decoded with .event().
    Opened once per program (BCC cannot close a ring buffer early); what
    it does with each event is switched by `keep_rows`."""

    def __init__(self, prog: Program):
        self.prog, self.rows, self.keep_rows = prog, [], False
        self.next, self.disorder, self.gaps, self.count = 0, 0, 0, 0
        table = prog["events"]

        def cb(_ctx, data, _size):
            ev = table.event(data)                 # ctypes struct over the record
            seq = ev.seq
            if seq < self.next:
                self.disorder += 1
            elif seq > self.next:
                self.gaps += 1
            self.next = seq + 1
            self.count += 1
            if self.keep_rows:
                self.rows.append((ev.ts, seq, ev.pid, ev.cpu))
        table.open_ring_buffer(cb)

    def reset(self, keep_rows: bool) -> None:
        self.rows, self.keep_rows = [], keep_rows
        self.next, self.disorder, self.gaps, self.count = 0, 0, 0, 0


def bcc_drain(bcc: BccCallback, expected: int, keep_rows: bool) -> dict:
    """Drain a filled ring with BCC's callback; with keep_rows, build a DataFrame too."""
    bcc.reset(keep_rows)
    c0 = time.process_time()
    t0 = time.perf_counter()
    while bcc.count < expected:
        before = bcc.count
        bcc.prog.ring_buffer_consume()
        if bcc.count == before:
            break
    if keep_rows:
        df = pd.DataFrame(bcc.rows, columns=["ts", "seq", "pid", "cpu"])
        assert len(df) == bcc.count
    secs = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"events": bcc.count, "seconds": secs, "rate": bcc.count / secs,
            "cpu_seconds": cpu, "cpu_rate": bcc.count / cpu,
            "in_order": bcc.disorder == 0 and bcc.gaps == 0}


def ours_sync_drain(prog: Program, expected: int) -> dict:
    """(b1) ours, no threads: read batches from the mmap, one DataFrame each."""
    check = SeqCheck()
    with RingReader.open(prog, "events") as reader:
        dtype = np.dtype([("ts", "<u8"), ("seq", "<u8"), ("pid", "<u4"), ("cpu", "<u4")])
        c0 = time.process_time()
        t0 = time.perf_counter()
        frames = []
        while True:
            r = reader.read_fixed(dtype, 1 << 18)
            if not r.count:
                break
            frames.append(pd.DataFrame({n: r.records[n] for n in dtype.names}, copy=False))
        secs = time.perf_counter() - t0
        cpu = time.process_time() - c0
    for f in frames:
        check.batch(f["seq"].to_numpy())
    return {"events": check.count, "seconds": secs, "rate": check.count / secs,
            "cpu_seconds": cpu, "cpu_rate": check.count / cpu, "in_order": check.ok}


def ours_threaded_drain(prog: Program, expected: int) -> dict:
    """(b2) ours, the RingBufferConsumer (reader thread -> bounded queue ->
    handler thread receiving DataFrames)."""
    check = SeqCheck()
    frames = []

    def handler(df: pd.DataFrame) -> None:
        frames.append(df)
    c = RingBufferConsumer(prog, "events", handler=handler, queue_size=expected + 1,
                           batch_size=1 << 18, lost=prog["lost"])
    c0 = time.process_time()
    t0 = time.perf_counter()
    c.start()
    c.wait_for(expected, timeout=60)
    secs = time.perf_counter() - t0
    cpu = time.process_time() - c0        # all threads of this process
    st = c.close()
    for f in frames:
        check.batch(f["seq"].to_numpy())
    return {"events": st.handled, "seconds": secs, "rate": st.handled / secs,
            "cpu_seconds": cpu, "cpu_rate": st.handled / cpu, "in_order": check.ok,
            "batches": st.batches}


def live(prog: Program, which: str, events: int, k: int, calls_per_s: float = 0,
         bcc: BccCallback | None = None, queue_size: int = 2_000_000) -> dict:
    """Producer and consumer at the same time."""
    reset(prog)
    check = SeqCheck()
    p = Producer(prog, events // k, k, calls_per_s)
    expected = p.expected
    if which == "ours":
        c = RingBufferConsumer(prog, "events", handler=lambda df: check.batch(df["seq"].to_numpy()),
                               queue_size=queue_size, lost=prog["lost"])
        c.start()
        t0 = p.go()
        prod_secs = p.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = c.stats
            if st.handled + st.dropped + kernel_lost(prog) >= expected:
                break
            time.sleep(0.01)
        secs = time.perf_counter() - t0
        st = c.close()
        res = {"delivered": st.handled, "dropped": st.dropped, "max_queue": st.max_queue_depth,
               "max_lag_ms": st.max_lag_s * 1e3, "max_ring_fill": st.max_ring_fill,
               "healthy": st.healthy, "batches": st.batches}
    else:
        bcc.reset(False)
        check = bcc
        t0 = p.go()
        done = False
        while not done:
            prog.ring_buffer_poll(50)
            done = p.proc.poll() is not None
        prod_secs = p.wait()
        while check.count + kernel_lost(prog) < expected:
            before = check.count
            prog.ring_buffer_consume()
            if check.count == before:
                break
        secs = time.perf_counter() - t0
        res = {"delivered": check.count, "dropped": 0}
    lost = kernel_lost(prog)
    zero_loss = lost == 0 and res["dropped"] == 0 and res["delivered"] == expected
    res.update({"expected": expected, "kernel_lost": lost, "seconds": secs,
                "producer_rate": expected / prod_secs, "delivered_rate": res["delivered"] / secs,
                "in_order": check.disorder == 0, "gaps": check.gaps, "zero_loss": zero_loss})
    return res


# ------------------------------------------------------------------ main --
def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor())
    return {"kernel": platform.release(), "arch": platform.machine(), "cpus": os.cpu_count(),
            "cpu": cpu, "python": platform.python_version(), "numpy": np.__version__,
            "pandas": pd.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="examples:" + __doc__.split("examples:")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000, help="events per drain/live phase")
    ap.add_argument("--k", type=int, default=64, help="records per getppid() call (<= %d)" % MAX_K)
    ap.add_argument("--rate", type=float, default=1_000_000, help="paced phase: events per second")
    ap.add_argument("--seconds", type=float, default=5, help="paced phase: duration")
    ap.add_argument("--paced-ring-mb", type=int, default=8, help="ring size for the paced phase")
    ap.add_argument("--bcc-events", type=int, default=1_000_000,
                    help="events per BCC drain (it is slow; a rate is a rate)")
    ap.add_argument("--repeat", type=int, default=3, help="drain measurements per consumer")
    ap.add_argument("--pin", action="store_true",
                    help="pin the producer to CPU 0 and this process to CPU 1")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (loads a BPF program)", file=sys.stderr)
        return 2
    global PIN
    PIN = a.pin
    if a.pin and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {1})          # consumer on CPU 1, producer on CPU 0
    results: dict = {"machine": machine(), "args": vars(a)}
    print(json.dumps(results["machine"]))

    record = 32                                 # 8-byte header + 24-byte sample
    ring = 1 << max(20, (a.events * record * 2 - 1).bit_length())   # room for all, power of 2
    src = BPF_TEXT.replace("MAX_K", str(MAX_K))
    with Program(src.replace("RING_PAGES", str(ring // 4096)), name="ringbench") as prog:
        bcc = BccCallback(prog)
        # 1. drain: consumer alone
        drains: dict = {"bcc_event": [], "bcc_event_df": [], "ours_sync_df": [], "ours_consumer_df": []}
        fills = []
        for _ in range(a.repeat):
            for name, fn in (("bcc_event", lambda n: bcc_drain(bcc, n, keep_rows=False)),
                             ("bcc_event_df", lambda n: bcc_drain(bcc, n, keep_rows=True)),
                             ("ours_sync_df", lambda n: ours_sync_drain(prog, n)),
                             ("ours_consumer_df", lambda n: ours_threaded_drain(prog, n))):
                rate, made = fill(prog, a.bcc_events if name.startswith("bcc") else a.events, a.k)
                fills.append(rate)
                lost = kernel_lost(prog)
                r = fn(made - lost)
                r["kernel_lost_while_filling"] = lost
                drains[name].append(r)
                print(f"drain {name:18s} {r['events']:>9d} ev in {r['seconds']:.3f} s = "
                      f"{r['rate'] / 1e6:6.2f} M ev/s wall, {r['cpu_rate'] / 1e6:6.2f} M ev/s per "
                      f"CPU-second, in_order={r['in_order']}", flush=True)
        results["drain"] = drains
        results["producer_fill_rate"] = fills
        best = {k: max(x["rate"] for x in v) for k, v in drains.items()}
        med = {k: float(np.median([x["rate"] for x in v])) for k, v in drains.items()}
        cpu_med = {k: float(np.median([x["cpu_rate"] for x in v])) for k, v in drains.items()}
        results["drain_best"], results["drain_median"], results["drain_cpu_median"] = best, med, cpu_med

        # 2. live at full speed
        results["live"] = {}
        for which in ("bcc", "ours"):
            r = live(prog, which, a.events, a.k, bcc=bcc)
            results["live"][which] = r
            print(f"live  {which:5s} producer {r['producer_rate'] / 1e6:5.2f} M ev/s, delivered "
                  f"{r['delivered']}/{r['expected']} at {r['delivered_rate'] / 1e6:5.2f} M ev/s, "
                  f"kernel lost {r['kernel_lost']}, dropped {r['dropped']}", flush=True)

    # 3. paced, with a smaller ring (what a real deployment would give it)
    pk = 100
    with Program(src.replace("RING_PAGES", str(a.paced_ring_mb * 256)), name="ringbench-paced") as prog:
        bcc = BccCallback(prog)
        results["paced"] = {}
        n = int(a.rate * a.seconds)
        for which in ("ours", "bcc"):
            r = live(prog, which, n, pk, calls_per_s=a.rate / pk, bcc=bcc)
            results["paced"][which] = r
            print(f"paced {which:5s} at {r['producer_rate'] / 1e6:4.2f} M ev/s for {a.seconds:.0f} s: "
                  f"delivered {r['delivered']}/{r['expected']}, kernel lost {r['kernel_lost']}, "
                  f"dropped {r['dropped']}, in order {r['in_order']}, zero loss {r['zero_loss']}",
                  flush=True)

    ratio = med["ours_consumer_df"] / med["bcc_event"]
    cpu_ratio = cpu_med["ours_consumer_df"] / cpu_med["bcc_event"]
    print(f"\nmedian drain: ours (consumer, DataFrames) {med['ours_consumer_df'] / 1e6:.2f} M ev/s, "
          f"BCC callback + .event() {med['bcc_event'] / 1e6:.2f} M ev/s: x{ratio:.1f} "
          f"(per CPU-second: {cpu_med['ours_consumer_df'] / 1e6:.2f} vs "
          f"{cpu_med['bcc_event'] / 1e6:.2f} M ev/s, x{cpu_ratio:.1f})")
    results["ratio_vs_bcc_event"], results["cpu_ratio_vs_bcc_event"] = ratio, cpu_ratio
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
