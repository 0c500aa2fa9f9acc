"""What a BPF hook costs per system call, timed in a tight C loop.

A Python loop costs more than the system call it makes, which would drown
the few nanoseconds a hook adds, so a small C program (`LOOP_C`, compiled
with `cc` and cached) makes the calls and times them with its CPU-time
clock: a hook runs in the calling process and counts, while time that other
processes hold the CPU does not. The number of calls is calibrated so that
one round lasts about `ROUND_NS`, on a fast machine and under software
emulation alike; the best of `ROUNDS` rounds counts.

    from ebpf_tutor import Program, overhead

    overhead.ns_per_call("getppid")                         # nothing attached
    overhead.added_cost(lambda: Program(SOURCE), "getppid")  # ns SOURCE adds
"""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, ContextManager

SYSCALLS = {"open": "open() + close() of /dev/null", "getppid": "getppid()"}
ROUNDS = 5                  # best of this many rounds counts
ROUND_NS = 25_000_000       # calibrated length of one round: 25 ms
MIN_CALLS = 1_000           # calls per round, however slow each call is

LOOP_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {     /* loop MODE N ROUNDS: best ns per call */
    long n = atol(argv[2]);
    int rounds = atoi(argv[3]);
    double best = 1e18;
    for (int round = 0; round < rounds; round++) {
        struct timespec a, b;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
        for (long i = 0; i < n; i++) {
            if (argv[1][0] == 'o')
                close(open("/dev/null", O_RDONLY));
            else
                syscall(SYS_getppid);
        }
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
        double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
        best = ns < best ? ns : best;
    }
    printf("%.1f\n", best);
    return 0;
}
"""


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/ebpf-tutor, else ~/.cache/ebpf-tutor."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ebpf-tutor"


def compiled_c(stem: str, source: str, flags: tuple[str, ...] = ("-O2",)) -> Path:
    """`source` compiled with `cc` and `flags`, kept in cache_dir() under a name
    made from `stem`, the machine, the source and the flags, so a run compiles
    it only if one of them changed."""
    key = source if flags == ("-O2",) else source + " ".join(flags)   # -O2 binaries keep their names
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    binary = cache_dir() / f"{stem}-{os.uname().machine}-{digest}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:
        (Path(tmp) / f"{stem}.c").write_text(source)
        try:
            subprocess.run(["cc", *flags, "-o", f"{tmp}/{stem}", f"{tmp}/{stem}.c"],
                           check=True, capture_output=True, text=True)
        except FileNotFoundError:
            raise RuntimeError(f"{stem} needs a C compiler: `cc` was not found") from None
        os.replace(f"{tmp}/{stem}", binary)      # atomic: other runs see all or nothing
    return binary


@functools.cache
def loop_binary() -> Path:
    """LOOP_C, compiled once per source and machine (compiled_c)."""
    return compiled_c("syscall-loop", LOOP_C)


def run_loop(syscall: str, calls: int, rounds: int = ROUNDS) -> float:
    """Best ns per call over `rounds` rounds of `calls` calls each."""
    if syscall not in SYSCALLS:
        raise ValueError(f"syscall must be one of {list(SYSCALLS)}, not {syscall!r}")
    out = subprocess.run([str(loop_binary()), syscall, str(calls), str(rounds)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout)


def choose_calls(ns: float) -> int:
    """Calls per round for a round of ROUND_NS, at ns per call (at least MIN_CALLS)."""
    return max(MIN_CALLS, round(ROUND_NS / max(ns, 1.0)))


@functools.cache
def calls_per_round(syscall: str) -> int:
    """Calibrated once per process: try rounds 10 times longer until one lasts
    a tenth of ROUND_NS, long enough to trust its ns per call, then scale."""
    calls = MIN_CALLS
    while True:
        ns = run_loop(syscall, calls, rounds=3)
        if calls * ns >= ROUND_NS / 10 or calls >= 10**9:
            return choose_calls(ns)
        calls *= 10


def ns_per_call(syscall: str = "getppid") -> float:
    """ns per call of `syscall` ("open" or "getppid"), best of ROUNDS calibrated rounds."""
    return run_loop(syscall, calls_per_round(syscall))


def added_cost(make_program: Callable[[], ContextManager], syscall: str = "getppid") -> float:
    """ns a program adds per call: median over 3 tries of (with it) - (just before, without).

    `make_program()` loads and attaches a fresh program, e.g. `lambda: Program(src)`;
    it is detached when its `with` block ends."""
    diffs = []
    for _ in range(3):
        base = ns_per_call(syscall)
        with make_program():
            diffs.append(ns_per_call(syscall) - base)
    return sorted(diffs)[1]
