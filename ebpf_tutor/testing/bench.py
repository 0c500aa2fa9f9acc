"""A small benchmark: time n calls of a function."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class BenchmarkResult:
    """Timings of n calls, in seconds."""
    name: str
    n: int
    total_s: float
    mean_s: float
    median_s: float
    p99_s: float
    min_s: float
    max_s: float
    stdev_s: float
    ops_per_s: float

    def __str__(self) -> str:
        f = _fmt_s
        return (f"{self.name or 'benchmark'}: {self.n} calls, mean {f(self.mean_s)}, median "
                f"{f(self.median_s)}, p99 {f(self.p99_s)}, min {f(self.min_s)}, "
                f"{self.ops_per_s:,.0f} ops/s")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fmt_s(s: float) -> str:
    for unit, mult in (("s", 1), ("ms", 1e3), ("µs", 1e6)):
        if s >= 1 / mult:
            return f"{s * mult:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def benchmark(fn: Callable[[], Any], n: int = 1000, *, warmup: int = 10, name: str = "") -> BenchmarkResult:
    """Call `fn()` n times (after `warmup` untimed calls) and time each call.

    Each timing includes the clock's own cost (tens of ns): for functions
    that take less than a microsecond, make fn run a loop and divide."""
    if n < 1:
        raise ValueError("n must be >= 1")
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    times = [0] * n
    start = clock()
    for i in range(n):
        t0 = clock()
        fn()
        times[i] = clock() - t0
    total = (clock() - start) / 1e9
    s = sorted(times)
    p99 = s[min(n - 1, max(0, int(round(0.99 * n + 0.5)) - 1))] / 1e9
    return BenchmarkResult(name or getattr(fn, "__name__", ""), n, total, statistics.fmean(s) / 1e9,
                           statistics.median(s) / 1e9, p99, s[0] / 1e9, s[-1] / 1e9,
                           (statistics.stdev(s) / 1e9) if n > 1 else 0.0, n / total if total else 0.0)
