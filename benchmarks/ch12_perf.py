#!/usr/bin/env python3
"""Chapter 12's measurements, repeated: counters under contention, ring
buffer vs perf buffer, batch map reads.

The cases are the notebook's own (`ebpf_tutor.perfcases`); this script runs
them more times and writes what it measured, so `benchmarks/ch12.md` can
quote figures with their spread.

  counters   plain += / atomic add / per-CPU slot, on one tracepoint, two
             pinned processes making N marked close() calls each at once:
             counts lost, ns per run (BPF_ENABLE_STATS)
  channels   one pinned process making marked close() calls at a paced
             rate, one event each, through a ring buffer and a perf buffer
             of 256 KiB each, counted by a Python callback
  batch      empty a hash map key by key (BCC items() + delete) or with one
             items_lookup_and_delete_batch(): seconds, bpf() calls

USAGE: sudo .venv/bin/python benchmarks/ch12_perf.py [--runs R] [--json FILE]

examples:
  benchmarks/ch12_perf.py                        # everything, 10 runs each (about 2 min)
  benchmarks/ch12_perf.py --only counters --runs 20
  benchmarks/ch12_perf.py --json /tmp/ch12.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ebpf_tutor import perfcases  # noqa: E402
from ebpf_tutor.contention import usable_cpus  # noqa: E402

RATES = [10_000, 100_000, 1_000_000, 0]


def spread(df: pd.DataFrame, by: list[str], col: str) -> pd.DataFrame:
    return df.groupby(by)[col].agg(["mean", "std", "min", "max", "count"]).round(3)


def run_counters(runs: int, calls: int) -> pd.DataFrame:
    df = perfcases.counters(calls=calls, runs=runs, cpus=usable_cpus()[:2])
    print(f"\n== counters: {calls:,} calls per CPU, {runs} runs")
    print(spread(df, ["counter"], "lost").to_string())
    print(spread(df, ["counter"], "ns_per_run").to_string())
    return df


def run_channels(runs: int) -> pd.DataFrame:
    df = pd.concat([perfcases.event_channels(rate, seconds=0.5).assign(rep=r)
                    for r in range(runs) for rate in RATES], ignore_index=True)
    df["delivered"] = df["received"] / df["sent"]
    print(f"\n== channels: {runs} runs per rate")
    print(spread(df, ["rate", "channel"], "delivered").to_string())
    print(spread(df, ["rate", "channel"], "producer_ns_per_event").to_string())
    print(spread(df, ["rate", "channel"], "producer_cpu_ns_per_event").to_string())
    return df


def run_batch(runs: int) -> pd.DataFrame:
    df = pd.concat([perfcases.map_reads(n, runs=runs) for n in (1_000, 10_000, 100_000)],
                   ignore_index=True)
    print(f"\n== batch: {runs} runs per size")
    print(spread(df, ["entries", "way"], "seconds").to_string())
    print(df.groupby(["entries", "way"])["bpf_calls"].max().unstack().to_string())
    return df


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("examples:")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--calls", type=int, default=500_000, help="counters: calls per CPU")
    ap.add_argument("--only", choices=["counters", "channels", "batch"])
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args()
    if os.geteuid():
        print("needs root", file=sys.stderr)
        return 1
    print(f"{platform.node()} {platform.release()} {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    out = {}
    if args.only in (None, "counters"):
        out["counters"] = run_counters(args.runs, args.calls)
    if args.only in (None, "channels"):
        out["channels"] = run_channels(max(1, args.runs // 2))
    if args.only in (None, "batch"):
        out["batch"] = run_batch(max(1, args.runs // 2))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {k: v.to_dict(orient="records") for k, v in out.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
