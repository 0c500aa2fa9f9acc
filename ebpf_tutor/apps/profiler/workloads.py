"""C workloads whose profiles are known in advance, built with frame pointers.

`hotcold`: main() calls hot() and cold() in turn; hot() runs HOT_SHARE of
the work loop iterations, so about 75% of its CPU time is in hot() and 25%
in cold(). `sleeper`: blocks in nanosleep() from two functions for known
times. `leaker`: mallocs from two functions, frees what one of them
allocated and keeps the rest.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from ...overhead import compiled_c

CFLAGS = ["-O0", "-fno-omit-frame-pointer", "-g"]   # -O1: gcc 12 gives leaf functions no frame
HOT_SHARE = 0.75                 # of the loop iterations, hence of the CPU time

HOTCOLD_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

volatile unsigned long sink;

__attribute__((noinline)) void spin(long n) {
    for (long i = 0; i < n; i++)
        sink += i;
}
/* The store after each call keeps gcc from making the call a jump (a tail
   call), which would leave hot() and cold() out of every stack. */
__attribute__((noinline)) void hot(void) { spin(3 * 200000); sink = 0; }
__attribute__((noinline)) void cold(void) { spin(200000); sink = 0; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {       /* hotcold SECONDS [wait] */
    double end = now() + (argc > 1 ? atof(argv[1]) : 2.0);
    while (now() < end) {
        hot();
        cold();
    }
    if (argc > 2)
        getchar();                      /* alive until stdin closes: still symbolizable */
    return 0;
}
"""

SLEEPER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

volatile long sink;

static void nap(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}
__attribute__((noinline)) void wait_long(long ms) { nap(ms); sink = 0; }
__attribute__((noinline)) void wait_short(long ms) { nap(ms); sink = 0; }

int main(int argc, char **argv) {       /* sleeper ROUNDS LONG_MS SHORT_MS [wait] */
    int rounds = atoi(argv[1]);
    if (argc > 4)
        getchar();                      /* with "wait": the profiler attaches first */
    for (int i = 0; i < rounds; i++) {
        wait_long(atol(argv[2]));
        wait_short(atol(argv[3]));
    }
    if (argc > 4) {
        printf("done\n");
        fflush(stdout);
        getchar();                      /* and stays alive to be symbolized */
    }
    return 0;
}
"""

LEAKER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

volatile long sink;

__attribute__((noinline)) void *leaky(size_t n) { void *p = malloc(n); sink = 0; return p; }
__attribute__((noinline)) void *tidy(size_t n) { void *p = malloc(n); sink = 0; return p; }

int main(int argc, char **argv) {  /* leaker ROUNDS LEAK_BYTES TIDY_BYTES: then waits on stdin */
    int rounds = atoi(argv[1]);
    size_t leak = atol(argv[2]), keep = atol(argv[3]);
    getchar();                                  /* the profiler attaches first */
    for (int i = 0; i < rounds; i++) {
        volatile char *p = leaky(leak);
        p[0] = 1;
        char *q = tidy(keep);
        q[0] = 1;
        free(q);
    }
    printf("done\n");
    fflush(stdout);
    getchar();                                  /* stays alive to be symbolized */
    return 0;
}
"""


def build(stem: str, source: str, flags: list[str] | None = None) -> Path:
    """`source` compiled with frame pointers (CFLAGS), cached like every C
    workload of the course (overhead.compiled_c)."""
    return compiled_c(stem, source, tuple(CFLAGS if flags is None else flags))


def hotcold() -> Path:
    return build("ebt-hotcold", HOTCOLD_C)


def sleeper() -> Path:
    return build("ebt-sleeper", SLEEPER_C)


def leaker() -> Path:
    return build("ebt-leaker", LEAKER_C)


class Gated:
    """A workload started with "wait": it blocks on its stdin until go(), says
    "done" when its work is over, and stays alive (symbolizable) until closed.

        with Gated(sleeper(), 5, 60, 20) as w:
            session = Session("offcpu", pid=w.pid)
            w.go(); w.wait_done()
            folded = session.collect()
    """

    def __init__(self, binary: Path, *args):
        self.proc = subprocess.Popen([str(binary), *map(str, args), "wait"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def go(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def wait_done(self, timeout: float = 60) -> None:
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready or self.proc.stdout.readline().strip() != "done":
            raise RuntimeError(f"{self.proc.args[0]} did not finish its work in {timeout} s")

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def __enter__(self) -> "Gated":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
