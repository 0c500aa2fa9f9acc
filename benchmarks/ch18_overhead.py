#!/usr/bin/env python3
"""What chapter 18's profiler costs the profiled process, against perf's.

A CPU-bound C program (the chapter's hot/cold workload, but a fixed number
of rounds instead of a fixed time) reports the CPU time its work took
(CLOCK_PROCESS_CPUTIME_ID). It runs bare, under our on-CPU profiler (pid
filter, a collector thread symbolizing every 0.25 s as the CLI does), and
under `perf record -F HZ -g -p PID`, at 99 Hz and at 999 Hz; the runs are
interleaved (bare, ours, perf, ...) so that the machine's load drifts over
all of them alike. Reported per configuration: the workload's CPU time
(median, and its ratio to bare), the samples taken, the BPF program's
mean run time per sample (BPF_ENABLE_STATS), the profiler's own CPU time
while sampling, and what turning samples into folded stacks cost (our
symbolizing, `perf script` for perf).

USAGE: sudo .venv/bin/python benchmarks/ch18_overhead.py [--reps 5] [--rounds 4000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ebpf_tutor.apps.profiler import fold, perf, probes, workloads  # noqa: E402
from ebpf_tutor.bpfsys.stats import ProgStats, run_time_stats  # noqa: E402

FIXED_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

volatile unsigned long sink;

__attribute__((noinline)) void spin(long n) { for (long i = 0; i < n; i++) sink += i; }
__attribute__((noinline)) void hot(void) { spin(3 * 50000); sink = 0; }
__attribute__((noinline)) void cold(void) { spin(50000); sink = 0; }

static double cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {      /* ROUNDS: waits for a line, works, prints CPU s */
    long rounds = atol(argv[1]);
    getchar();
    double t0 = cpu();
    for (long i = 0; i < rounds; i++) {
        hot();
        cold();
    }
    printf("%.6f\n", cpu() - t0);
    fflush(stdout);
    getchar();
    return 0;
}
"""


def start_workload(binary: Path, rounds: int) -> subprocess.Popen:
    return subprocess.Popen([str(binary), str(rounds)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def finish(work: subprocess.Popen) -> float:
    """Let it work; its CPU seconds for the work."""
    work.stdin.write("\n")
    work.stdin.flush()
    return float(work.stdout.readline())


def end(work: subprocess.Popen) -> None:
    work.stdin.close()
    work.wait()
    work.stdout.close()


def run_bare(binary: Path, rounds: int, hz: int) -> dict:
    work = start_workload(binary, rounds)
    cpu = finish(work)
    end(work)
    return {"work_cpu_s": cpu}


def run_ours(binary: Path, rounds: int, hz: int) -> dict:
    work = start_workload(binary, rounds)
    c0 = time.process_time()
    session = probes.Session("oncpu", pid=work.pid, freq=hz)
    load_cpu = time.process_time() - c0
    fd = next(iter(session.prog.funcs.values())).fd
    stop = threading.Event()

    def collector() -> None:              # what the CLI does while it samples
        while not stop.wait(0.25):
            session.collect()

    try:
        with run_time_stats():
            before = ProgStats.of(fd)
            t = threading.Thread(target=collector)
            c1 = time.process_time()
            t.start()
            cpu = finish(work)
            stop.set()
            t.join()
            during = time.process_time() - c1
            runs = ProgStats.of(fd) - before
        c2 = time.process_time()
        folded = session.collect()
        fold_cpu = time.process_time() - c2
    finally:
        session.close()
        end(work)
    return {"work_cpu_s": cpu, "samples": fold.total(folded), "bpf_ns_per_sample": runs.ns_per_run,
            "bpf_runs": runs.run_cnt, "tool_cpu_s": during, "load_cpu_s": load_cpu,
            "fold_cpu_s": fold_cpu, "hot_share": fold.share(folded, "hot")}


def run_perf(binary: Path, rounds: int, hz: int) -> dict:
    work = start_workload(binary, rounds)
    with tempfile.TemporaryDirectory(prefix="ebt-bench18-") as tmp:
        data = Path(tmp) / "perf.data"
        rec = subprocess.Popen(["perf", "record", "-q", "-F", str(hz), "-g", "-p", str(work.pid),
                                "-o", str(data)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(0.5)                    # perf attaches (no signal says when)
        cpu = finish(work)
        rec.send_signal(2)
        _, _, usage = os.wait4(rec.pid, 0)
        rec.returncode = 0
        end(work)
        t0 = time.monotonic()
        script = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,pid,ip,sym,dso"],
                                capture_output=True, text=True)
        script_wall = time.monotonic() - t0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
    folded = perf.parse_script(script.stdout)
    return {"work_cpu_s": cpu, "samples": fold.total(folded),
            "tool_cpu_s": usage.ru_utime + usage.ru_stime, "fold_wall_s": script_wall,
            "hot_share": fold.share(folded, "hot"), "_children": children.ru_utime}


RUNNERS = {"bare": run_bare, "ours": run_ours, "perf": run_perf}

# Per-event modes: what one malloc/free pair and one pipe round trip (two
# context switches each way) cost, bare and with the mode attached.
EVENTS_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(int cpu) {
    struct timespec t;
    clock_gettime(cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {      /* malloc|pingpong N: waits for a line, prints ns per op */
    long n = atol(argv[2]);
    getchar();
    if (argv[1][0] == 'm') {
        double t0 = now(1);
        for (long i = 0; i < n; i++) {
            void *volatile p = malloc(64);
            free(p);
        }
        printf("%.1f\n", (now(1) - t0) / n);
    } else {
        int a[2], b[2];
        char c = 0;
        pipe(a);
        pipe(b);
        if (fork() == 0) {
            for (long i = 0; i < n; i++) {
                read(a[0], &c, 1);
                write(b[1], &c, 1);
            }
            _exit(0);
        }
        double t0 = now(0);
        for (long i = 0; i < n; i++) {
            write(a[1], &c, 1);
            read(b[0], &c, 1);
        }
        printf("%.1f\n", (now(0) - t0) / n);
    }
    fflush(stdout);
    getchar();
    return 0;
}
"""


def run_event(binary: Path, kind: str, n: int, mode: str | None) -> float:
    work = subprocess.Popen([str(binary), kind, str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    session = probes.Session(mode, pid=work.pid if mode == "alloc" else None) if mode else None
    try:
        return finish(work)
    finally:
        if session:
            session.close()
        end(work)


def events(reps: int) -> list[dict]:
    binary = workloads.build("ebt-bench18-events", EVENTS_C)
    rows = []
    for kind, n, mode in (("malloc", 200_000, "alloc"), ("pingpong", 20_000, "offcpu")):
        for rep in range(reps):
            for attached in ((False, True) if rep % 2 else (True, False)):
                ns = run_event(binary, kind, n, mode if attached else None)
                rows.append({"kind": kind, "mode": mode if attached else "bare", "ns": ns})
                print(json.dumps(rows[-1]), flush=True)
    for kind, mode in (("malloc", "alloc"), ("pingpong", "offcpu")):
        bare = statistics.median(r["ns"] for r in rows if r["kind"] == kind and r["mode"] == "bare")
        on = statistics.median(r["ns"] for r in rows if r["kind"] == kind and r["mode"] == mode)
        unit = "malloc+free (CPU ns)" if kind == "malloc" else "pipe round trip (wall ns)"
        print(f"{kind:9} per {unit}: bare {bare:.0f}, with {mode} {on:.0f} (+{on - bare:.0f} ns, "
              f"x{on / bare:.1f})")
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4000, help="work rounds per run")
    ap.add_argument("--hz", default="99,999")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-events", action="store_true", help="skip the alloc/offcpu per-event part")
    args = ap.parse_args(argv)
    binary = workloads.build("ebt-bench18", FIXED_C)
    rows = []
    for hz in [int(h) for h in args.hz.split(",")]:
        for rep in range(args.reps):
            order = list(RUNNERS)
            order = order[rep % 3:] + order[:rep % 3]
            for name in order:
                r = RUNNERS[name](binary, args.rounds, hz)
                r.update(config=name, hz=hz, rep=rep)
                rows.append(r)
                print(json.dumps({k: round(v, 6) if isinstance(v, float) else v
                                  for k, v in r.items() if not k.startswith("_")}), flush=True)
    print()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, kernel "
          f"{platform.release()}, load {os.getloadavg()[0]:.1f}")
    print(f"{'Hz':>5} {'config':6} {'work CPU s':>10} {'x bare':>7} {'samples':>8} "
          f"{'BPF ns/sample':>13} {'tool CPU s':>10} {'fold s':>7} {'hot':>5}")
    for hz in sorted({r["hz"] for r in rows}):
        bare = statistics.median(r["work_cpu_s"] for r in rows if r["hz"] == hz and r["config"] == "bare")
        for name in RUNNERS:
            rs = [r for r in rows if r["hz"] == hz and r["config"] == name]
            med = lambda k: statistics.median(r[k] for r in rs) if k in rs[0] else float("nan")  # noqa: E731
            fold_s = med("fold_cpu_s") if name == "ours" else med("fold_wall_s")
            print(f"{hz:>5} {name:6} {med('work_cpu_s'):>10.3f} {med('work_cpu_s') / bare:>7.3f} "
                  f"{med('samples'):>8.0f} {med('bpf_ns_per_sample'):>13.0f} "
                  f"{med('tool_cpu_s'):>10.3f} {fold_s:>7.3f} {med('hot_share'):>5.2f}")
    event_rows = [] if args.no_events else events(args.reps)
    if args.json:
        args.json.write_text(json.dumps({"sampling": rows, "events": event_rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
