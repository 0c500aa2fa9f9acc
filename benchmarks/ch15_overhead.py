#!/usr/bin/env python3
"""Chapter 15's overhead comparison, repeated: what tracing costs
`dd if=/dev/zero of=/dev/null bs=1 count=N` (two system calls per byte).

Each round runs dd bare, then under each tool, interleaved, so a slow moment
of a shared machine hits them alike. dd times its own copy loop and prints
it; every tool is attached before dd runs (dd is started stopped and resumed
once the tool is ready), so no tool's start-up is in the figure. Per tool,
the best (shortest) of the rounds is kept, and also the median.

  bare                       dd alone
  strace -c                  strace -q -c -f (ptrace: two stops per call)
  syscount                   BCC's syscount-bpfcc -p PID (counts at sys_exit)
  syscount -L                ... -L (latency: sys_enter too)
  systrace -c --no-latency   ours, counted at sys_exit in a per-CPU hash
  systrace -c                ours, with latency (sys_enter + sys_exit)
  systrace stream            ours, one ring-buffer event per call, decoded in Python
  empty program              the floor: a BPF program that does nothing, on
                             raw_syscalls:sys_exit (what any such tracer pays)

USAGE: sudo .venv/bin/python benchmarks/ch15_overhead.py [--n N] [--rounds R] [--json FILE]

examples:
  benchmarks/ch15_overhead.py                     # N=100000, 7 rounds (about 3 min)
  benchmarks/ch15_overhead.py --n 20000 --rounds 3 --json /tmp/ch15.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ebpf_tutor.apps.systrace import peers  # noqa: E402

GOAL_VS_STRACE = 500        # the goal: at least 500x less overhead than strace
EMPTY = "TRACEPOINT_PROBE(raw_syscalls, sys_exit) { return 0; }"


def run_empty(n: int) -> float:
    """dd with an empty program on raw_syscalls:sys_exit: the tracepoint's own cost."""
    from ebpf_tutor.program import Program
    with Program(EMPTY, name="empty"):
        return peers.run_bare(n)


TOOLS = (*peers.TOOLS, "empty program")
RUNNERS = {**peers.RUNNERS, "empty program": run_empty}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="bytes dd copies (2 calls each)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", type=Path, help="write the raw times here")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (BPF, strace of a child, syscount)", file=sys.stderr)
        return 2

    load0 = os.getloadavg()
    t0 = time.time()
    res = peers.Overhead(args.n, args.rounds, {t: [] for t in TOOLS})
    stream = []
    for r in range(args.rounds):
        for tool in TOOLS:
            res.times[tool].append(RUNNERS[tool](args.n))
            if tool == "systrace stream":
                stream.append(dict(peers.LAST_RUN))
            time.sleep(0.05)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    load1 = os.getloadavg()

    bare_med = statistics.median(res.times["bare"])
    print(f"dd bs=1 count={args.n} ({2 * args.n} read+write calls), {args.rounds} rounds, "
          f"{time.time() - t0:.0f} s; load {load0[0]:.1f} -> {load1[0]:.1f} "
          f"on {os.cpu_count()} CPUs; {platform.release()}")
    print(f"{'tool':26} {'best s':>9} {'median s':>9} {'best/bare':>10} {'median/bare':>12} "
          f"{'ns/call':>8} {'x less than strace':>19}")
    for tool in TOOLS:
        med = statistics.median(res.times[tool])
        less = "" if tool in ("bare", "strace -c") else f"{res.less_than_strace(tool):19.0f}"
        print(f"{tool:26} {res.best(tool):9.4f} {med:9.4f} {res.ratio(tool):10.2f} "
              f"{med / bare_med:12.2f} {res.per_call_ns(tool) if tool != 'bare' else 0:8.0f} {less}")
    lost = [s.get("lost", 0) for s in stream]
    calls = [s.get("calls", 0) for s in stream]
    print(f"systrace stream: events handled per round {calls}, lost in the kernel {lost}")
    for tool in ("systrace -c --no-latency", "systrace -c"):
        print(f"goal {GOAL_VS_STRACE}x less added time than strace -c, {tool}: "
              f"{'met' if res.less_than_strace(tool) >= GOAL_VS_STRACE else 'not met'} "
              f"({res.less_than_strace(tool):.0f}x)")
    for ours, theirs in (("systrace -c --no-latency", "syscount"), ("systrace -c", "syscount -L")):
        print(f"{ours} vs {theirs}: best {res.best(ours) / res.best(theirs):.2f}, median "
              f"{statistics.median(res.times[ours]) / statistics.median(res.times[theirs]):.2f} "
              "(1.00 or less: no worse)")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "rounds": args.rounds, "times": res.times,
                                         "stream": stream, "load": [load0, load1],
                                         "kernel": platform.release()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
