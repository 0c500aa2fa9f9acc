"""What chapter 17's monitor costs the processes it watches (root needed).

    sudo .venv/bin/python benchmarks/ch17_overhead.py [--rounds 5]

A workload runs inside a Container, timed inside (so container start-up is
not counted): N execs of /bin/true, and M open-for-write + close of a file
in /tmp. Three cases, interleaved round by round: no monitor; the monitor
loaded but watching another container (its programs run for every task and
stop at the cgroup lookup); the monitor watching this container (every exec
and write-open becomes an event and goes through the rules). Best and median
of the rounds, per operation.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ebpf_tutor.apps.containermon.monitor import Monitor   # noqa: E402
from ebpf_tutor.sandbox.container import Container          # noqa: E402

WORK = r"""
import os, subprocess, sys, time
n_exec, n_open = int(sys.argv[1]), int(sys.argv[2])
t0 = time.perf_counter()
for _ in range(n_exec):
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/true", ["true"])
    os.waitpid(pid, 0)
t1 = time.perf_counter()
for _ in range(n_open):
    os.close(os.open("/tmp/ch17-bench", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
t2 = time.perf_counter()
print((t1 - t0) / n_exec * 1e6, (t2 - t1) / n_open * 1e6)
"""


def run(c: Container, n_exec: int, n_open: int) -> tuple[float, float]:
    r = c.run([sys.executable, "-I", "-c", WORK, str(n_exec), str(n_open)], timeout=300)
    a, b = r.out.split()
    return float(a), float(b)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--execs", type=int, default=300)
    ap.add_argument("--opens", type=int, default=20000)
    args = ap.parse_args()
    res: dict[str, list[tuple[float, float]]] = {"none": [], "other": [], "watched": []}
    with Container("bench") as c, Container("other") as other:
        for _ in range(args.rounds):
            res["none"].append(run(c, args.execs, args.opens))
            with Monitor() as mon:
                mon.watch(other)
                res["other"].append(run(c, args.execs, args.opens))
            with Monitor() as mon:
                mon.watch(c)
                res["watched"].append(run(c, args.execs, args.opens))
                mon.settle()
                events, lost = len(mon.events), mon.lost()
    out = {}
    for case, rows in res.items():
        ex, op = [r[0] for r in rows], [r[1] for r in rows]
        out[case] = {"exec_us_best": round(min(ex), 1), "exec_us_median": round(statistics.median(ex), 1),
                     "open_us_best": round(min(op), 2), "open_us_median": round(statistics.median(op), 2)}
    out["events_last_watched_round"] = events
    out["lost_last_watched_round"] = lost
    out["loadavg"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
