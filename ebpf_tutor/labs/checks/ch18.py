"""Chapter 18 checks: flame graph input, off-CPU time, allocation tracking.

Each check compiles a small C program with fresh function names (gcc -O0,
frame pointers kept), starts it held on its standard input until the
learner's program is attached, lets it do a known amount of work (CPU split
3:1 between two functions, sleeps of random lengths, mallocs of random
sizes), and reads the learner's maps while the process is still alive, so
that its addresses can be named. What is asserted is what the workload did.
"""
from __future__ import annotations

import contextlib
import platform
import random
import select
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator

from ..verdict import LabFailed, expect, lab
from ...program import Program, close_all
from ..workload import unique_name
from . import require_table

SAMPLE_HZ = 99
KSUFFIX = "_[k]"
# Where a system call enters the kernel: the root of its kernel stack.
SYSCALL_ENTRY = {"x86_64": "entry_SYSCALL_64"}


# ---------------------------------------------------------------- helpers --
@contextlib.contextmanager
def _built(source: str, name: str) -> Iterator[Path]:
    """`source` compiled to a binary called `name` in a fresh folder."""
    d = Path(tempfile.mkdtemp(prefix="ebt-lab18-"))
    try:
        (d / f"{name}.c").write_text(source)
        r = subprocess.run(["gcc", "-O0", "-fno-omit-frame-pointer", "-pthread", "-o",
                            str(d / name), str(d / f"{name}.c")], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"gcc failed to build the check's workload:\n{r.stderr}")
        yield d / name
    finally:
        shutil.rmtree(d, ignore_errors=True)


class _Held:
    """The workload, waiting on stdin until go(); it prints "done" when its
    work is over and stays alive until close()."""

    def __init__(self, *argv: str):
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.pid = self.proc.pid

    def go(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def wait_done(self, timeout: float = 60) -> None:
        if not select.select([self.proc.stdout], [], [], timeout)[0] \
                or self.proc.stdout.readline().strip() != "done":
            raise RuntimeError(f"the check's workload {self.proc.args[0]} did not finish")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100   # utime + stime, in clock ticks

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def _stack_of(prog: Program, stack_id: int, pid: int) -> list[str]:
    """User frames of one stack id, root first (the check's own symbolizing)."""
    if stack_id < 0:
        return []
    return [prog.sym(a, pid).decode(errors="replace") for a in reversed(list(prog["stacks"].walk(stack_id)))]


def _under(weights: dict[tuple[str, ...], int], function: str) -> int:
    return sum(n for frames, n in weights.items() if function in frames)


# -------------------------------------------------------------------- 18.1 --
FLAME_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile unsigned long sink;
static char buf[1 << 16];
static int zero_fd;

void spin_T(long n) { for (long i = 0; i < n; i++) sink += i; }
void hot_T(void) { spin_T(3 * 100000); }
void cold_T(void) { spin_T(100000); }
void sys_T(void) { for (int i = 0; i < 48; i++) sink += read(zero_fd, buf, sizeof buf); }
void decoy_T(void) { spin_T(100000); }

static double cpu_time(void) {        /* CPU seconds used: the same work on a busy machine */
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {      /* target|decoy CPU_SECONDS */
    int decoy = strcmp(argv[1], "decoy") == 0;
    zero_fd = open("/dev/zero", O_RDONLY);
    getchar();
    double end = cpu_time() + atof(argv[2]);
    while (cpu_time() < end) {
        if (decoy) {
            decoy_T();
        } else {
            hot_T();
            cold_T();
            sys_T();
        }
    }
    printf("done\n");
    fflush(stdout);
    getchar();
    return 0;
}
"""


@lab("18.1", "flame graph input")
def check_flame_graph(program: str, start, folded) -> str:
    """A fresh program splits its CPU 3:1 between hot_X and cold_X and reads
    /dev/zero in sys_X; a decoy copy runs decoy_X. folded(prog, pid) must
    give the target's stacks, comm first, user frames root first, kernel
    frames (suffix _[k]) after them rooted at the system call entry."""
    token = unique_name("")
    comm = f"ebt18{token}"
    names = {f: f"{f}_{token}" for f in ("spin", "hot", "cold", "sys", "decoy")}
    source = FLAME_C
    for f, n in names.items():
        source = source.replace(f"{f}_T", n)
    seconds = {"target": 1.0, "decoy": 0.3}      # of CPU time
    held: list[_Held] = []
    with _built(source, comm) as binary:
        try:
            prog = Program(program, name="lab 18.1")
            require_table(prog, "counts", "18.1", "keep the starter's BPF_HASH(counts, ...)")
            require_table(prog, "stacks", "18.1", "keep the starter's BPF_STACK_TRACE(stacks, ...)")
            start(prog)
            target = _Held(str(binary), "target", str(seconds["target"]))
            decoy = _Held(str(binary), "decoy", str(seconds["decoy"]))
            held += [target, decoy]
            for h in held:
                h.go()
            for h in held:
                h.wait_done()
            cpu = target.cpu_seconds()
            result = folded(prog, target.pid)
        finally:
            for h in held:
                h.close()
            close_all()
    expect(isinstance(result, dict), "18.1", f"folded() returned {type(result).__name__}, not a dict",
           "return {'comm;main;f;g': count, ...}")
    expect(bool(result), "18.1", f"folded() gave nothing for pid {target.pid}, which ran "
           f"{cpu:.2f} s on a CPU while sampled",
           "keep the samples whose key.pid is the pid asked for, and return them")
    stacks = {tuple(str(s).split(";")): int(n) for s, n in result.items()}
    total = sum(stacks.values())
    expect(not _under(stacks, names["decoy"]), "18.1",
           f"the stacks of pid {target.pid} contain {names['decoy']}(), which only the decoy "
           "process ran", "keep only the keys whose key.pid equals the pid argument")
    firsts = Counter(f[0] for f in stacks)
    expect(firsts.get(comm, 0) == len(stacks), "18.1",
           f"each folded stack should start with the process name {comm!r}; yours start with "
           f"{', '.join(repr(x) for x in list(firsts)[:3])}",
           "frames = [key.comm.decode()] first; fill key.comm with bpf_get_current_comm()")
    for f in stacks:
        ks = [i for i, x in enumerate(f) if x.endswith(KSUFFIX)]
        expect(not ks or ks == list(range(ks[0], len(f))), "18.1",
               f"in {';'.join(f)!r} a user frame comes after a kernel frame",
               "the user frames first (root first), then the kernel frames on top")
    hot, cold = _under(stacks, names["hot"]), _under(stacks, names["cold"])
    expect(hot and cold, "18.1", f"the target ran {names['hot']}() and {names['cold']}() for most "
           f"of {cpu:.2f} s; {hot} and {cold} of your {total} samples name them",
           "name the user stack's addresses with prog.sym(addr, pid).decode()")
    with_hot = [f for f in stacks if names["hot"] in f]
    expect(all("main" in f and f.index("main") < f.index(names["hot"]) for f in with_hot), "18.1",
           f"in your stacks {names['hot']} comes before main, e.g. {';'.join(with_hot[0])!r}",
           "stacks.walk() gives the leaf first: reverse the user frames")
    share = hot / (hot + cold)
    expect(0.55 <= share <= 0.92, "18.1", f"{names['hot']}() does 3 times the work of "
           f"{names['cold']}(), so about 75% of their samples; yours give {share:.0%} ({hot} and "
           f"{cold})", "count each sample once, with its count from `counts`")
    expected = cpu * SAMPLE_HZ
    expect(0.5 * expected <= total <= 1.6 * expected, "18.1",
           f"{total} samples for {cpu:.2f} s of CPU; at {SAMPLE_HZ} Hz that is about {expected:.0f}",
           "add each key's count once")
    # libc's read() keeps no frame pointer: the walk skips its caller sys_X,
    # so a kernel stack sits on ...;main;__read (or however libc names it)
    sys_k = {f: n for f, n in stacks.items() if "main" in f and f[-1].endswith(KSUFFIX)}
    expect(bool(sys_k), "18.1", f"{names['sys']}() spent its time reading /dev/zero, in the "
           "kernel, but none of your stacks through main has kernel frames (ending in _[k])",
           "take the kernel stack too, stacks.get_stackid(ctx, 0), name its addresses with "
           "prog.ksym(addr).decode() + '_[k]', and put them after the user frames")
    roots = Counter()
    for f, n in sys_k.items():
        roots[next(x for x in f if x.endswith(KSUFFIX))] += n
    entry = SYSCALL_ENTRY.get(platform.machine())
    root, most = roots.most_common(1)[0]
    if entry:
        right = sum(n for r, n in roots.items() if r.startswith(entry))
        expect(right >= 0.8 * sum(roots.values()), "18.1",
               f"the first kernel frame above the read() of {names['sys']}() should be the system call entry "
               f"({entry}...); in your stacks it is most often {root!r}",
               "stacks.walk() gives the kernel's leaf first too: reverse the kernel frames")
    else:
        expect(most >= 0.8 * sum(roots.values()), "18.1",
               f"the first kernel frame above the read() of {names['sys']}() should be the same system call "
               f"entry in every stack; yours vary ({dict(roots.most_common(3))})",
               "stacks.walk() gives the kernel's leaf first too: reverse the kernel frames")
    return (f"{total} samples in {cpu:.2f} s of CPU: {names['hot']} {share:.0%} of hot+cold, "
            f"kernel frames rooted at {root}, no decoy")


# -------------------------------------------------------------------- 18.2 --
SLEEPER_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int rounds;
static long long_ms, short_ms, thread_ms;
volatile long sink;

static void nap(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}
void wait_long_T(void) { nap(long_ms); sink++; }
void wait_short_T(void) { nap(short_ms); sink++; }
void wait_thread_T(void) { nap(thread_ms); sink++; }

void *thread_T(void *arg) {
    for (int i = 0; i < rounds; i++)
        wait_thread_T();
    return arg;
}

int main(int argc, char **argv) {      /* ROUNDS LONG SHORT THREAD (ms) */
    rounds = atoi(argv[1]);
    long_ms = atol(argv[2]);
    short_ms = atol(argv[3]);
    thread_ms = atol(argv[4]);
    pthread_t t;
    getchar();
    pthread_create(&t, NULL, thread_T, NULL);
    for (int i = 0; i < rounds; i++) {
        wait_long_T();
        wait_short_T();
    }
    pthread_join(t, NULL);
    printf("done\n");
    fflush(stdout);
    getchar();
    return 0;
}
"""


@lab("18.2", "off-CPU time")
def check_offcpu(program: str) -> str:
    """A fresh 2-thread program sleeps known random times in three functions
    (two in the main thread, one in the other); the time the learner's
    `offcpu` map adds up under each must be what it slept, up to 30% more
    and 5 ms per wake-up (waiting for a CPU on a busy machine)."""
    token = unique_name("")
    name = f"ebt18{token}"
    funcs = {f: f"{f}_{token}" for f in ("wait_long", "wait_short", "wait_thread", "thread")}
    source = SLEEPER_C
    for f in ("wait_long", "wait_short", "wait_thread", "thread"):
        source = source.replace(f"{f}_T", funcs[f])
    rounds = random.randint(4, 6)
    ms = {"wait_long": random.randint(50, 70), "wait_short": random.randint(10, 25)}
    ms["wait_thread"] = random.randint(100, 120)
    held = None
    with _built(source, name) as binary:
        try:
            prog = Program(program, name="lab 18.2")
            require_table(prog, "offcpu", "18.2", "keep the starter's BPF_HASH(offcpu, ...)")
            require_table(prog, "stacks", "18.2", "keep the starter's BPF_STACK_TRACE(stacks, ...)")
            held = _Held(str(binary), str(rounds), str(ms["wait_long"]), str(ms["wait_short"]),
                         str(ms["wait_thread"]))
            held.go()
            held.wait_done()
            rows = [(k.user_stack_id, v.value) for k, v in prog["offcpu"].items()
                    if k.pid == held.pid]
            weights: Counter = Counter()
            for stack_id, ns in rows:
                weights[tuple(_stack_of(prog, stack_id, held.pid))] += ns
        finally:
            if held is not None:
                held.close()
            close_all()
    expect(bool(rows), "18.2", f"`offcpu` has no key with pid {held.pid}, a process whose two "
           f"threads slept {rounds * (ms['wait_long'] + ms['wait_short'])} and "
           f"{rounds * ms['wait_thread']} ms", "at sched_switch, remember the leaving task "
           "(args->prev_pid) with key.pid = bpf_get_current_pid_tgid() >> 32; at its return "
           "(args->next_pid) add the time it was away to offcpu[key]")
    details = []
    for f in ("wait_long", "wait_short", "wait_thread"):
        want = rounds * ms[f] * 1e6
        got = _under(weights, funcs[f])
        hint = ("take the stacks when the thread leaves (it is then the current task), "
                "and key `left` by the thread id args->prev_pid" if got == 0 else
                "add now - the time it left, in nanoseconds, once per return" if got < want
                else "forget a thread's departure once used (left.delete(&next))")
        expect(want * 0.98 <= got <= want * 1.3 + rounds * 5e6, "18.2",
               f"{funcs[f]}() slept {rounds} x {ms[f]} ms = {want / 1e6:.0f} ms; your stacks "
               f"through it add up to {got / 1e6:.1f} ms", hint)
        details.append(f"{f} {got / 1e6:.0f}/{want / 1e6:.0f} ms")
    return f"off-CPU time of 2 threads in 3 functions: {', '.join(details)}"


# -------------------------------------------------------------------- 18.3 --
LEAKER_C = r"""
#include <stdio.h>
#include <stdlib.h>

volatile long sink;
static void *passed[64];

void *leaky_T(size_t n) { void *p = malloc(n); sink++; return p; }
void *tidy_T(size_t n) { void *p = malloc(n); sink++; return p; }
void *pass_T(size_t n) { void *p = malloc(n); sink++; return p; }
void release_T(int n) { for (int i = 0; i < n; i++) free(passed[i]); sink++; }

int main(int argc, char **argv) {      /* ROUNDS LEAK TIDY PASS (bytes) */
    int rounds = atoi(argv[1]);
    size_t leak = atol(argv[2]), tidy = atol(argv[3]), pass = atol(argv[4]);
    getchar();
    for (int i = 0; i < rounds; i++) {
        char *p = leaky_T(leak);
        p[0] = 1;
        char *q = tidy_T(tidy);
        q[0] = 1;
        free(q);
        passed[i] = pass_T(pass);
    }
    release_T(rounds);
    printf("done\n");
    fflush(stdout);
    getchar();
    return 0;
}
"""


@lab("18.3", "allocation tracking")
def check_allocations(program: str, attach) -> str:
    """A fresh program mallocs in three functions, R times each: leaky_X
    keeps its blocks, main frees tidy_X's at once, release_X frees
    pass_X's at the end. `outstanding` must hold exactly R x L bytes under
    leaky_X, zero under tidy_X and pass_X, and no negative site."""
    token = unique_name("")
    name = f"ebt18{token}"
    funcs = {f: f"{f}_{token}" for f in ("leaky", "tidy", "pass", "release")}
    source = LEAKER_C
    for f, n in funcs.items():
        source = source.replace(f"{f}_T", n)
    rounds = random.randint(5, 12)
    size = {"leaky": random.randint(1000, 5000), "tidy": random.randint(100, 900),
            "pass": random.randint(6000, 9000)}
    held = None
    with _built(source, name) as binary:
        try:
            prog = Program(program, name="lab 18.3")
            require_table(prog, "outstanding", "18.3",
                          "keep the starter's BPF_HASH(outstanding, struct site_t, s64)")
            require_table(prog, "stacks", "18.3", "keep the starter's BPF_STACK_TRACE(stacks, ...)")
            held = _Held(str(binary), str(rounds), str(size["leaky"]), str(size["tidy"]),
                         str(size["pass"]))
            attach(prog, held.pid)
            held.go()
            held.wait_done()
            rows = [(k.stack_id, v.value) for k, v in prog["outstanding"].items()
                    if k.pid == held.pid]
            sites: Counter = Counter()
            for stack_id, n in rows:
                sites[tuple(_stack_of(prog, stack_id, held.pid))] += n
        finally:
            if held is not None:
                held.close()
            close_all()
    expect(bool(rows), "18.3", f"`outstanding` has no site of pid {held.pid}, which kept "
           f"{rounds * size['leaky']} bytes from {rounds} mallocs",
           "at malloc's return, build the site {pid, stack id} and add the size to "
           "outstanding[site]")
    leak_want = rounds * size["leaky"]
    got = {f: _under(sites, funcs[f]) for f in ("leaky", "tidy", "pass", "release")}
    expect(got["leaky"] == leak_want, "18.3",
           f"{funcs['leaky']}() malloc'ed {rounds} x {size['leaky']} bytes and nothing freed "
           f"them; the sites through it hold {got['leaky']} bytes",
           "walk the stack at malloc's RETURN (stacks.get_stackid(ctx, BPF_F_USER_STACK)): at "
           "the entry the walk skips the caller" if got["leaky"] == 0 else
           "add the size the thread asked for (the stashed *size, not PT_REGS_PARM1 at the "
           "return), in bytes")
    negative = {";".join(f[-3:]): n for f, n in sites.items() if n < 0}
    expect(not negative and got["pass"] == 0, "18.3",
           f"{funcs['pass']}() allocated {rounds} blocks that {funcs['release']}() freed later; "
           f"its sites hold {got['pass']} bytes" + (f", and some sites are negative: {negative}"
                                                   if negative else ""),
           "at free, subtract from the site stored with the block (b->site), not from the "
           "stack of the code that frees it")
    expect(got["tidy"] == 0, "18.3", f"every block of {funcs['tidy']}() was freed; its sites "
           f"hold {got['tidy']} bytes", "at free, look the address up in `live` and subtract "
           "that block's size; then delete it")
    return (f"{rounds} x {size['leaky']} = {leak_want} bytes kept under {funcs['leaky']}, "
            f"0 under {funcs['tidy']} and {funcs['pass']} (freed elsewhere)")
