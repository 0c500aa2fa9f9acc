"""Chapter 2 checks: process counter (hash), packet-size histogram (log2),
stack trace collector (perf sampling + stack trace map)."""
from __future__ import annotations

import contextlib
import ctypes as ct
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ..verdict import LabFailed, expect, lab
from ...sandbox.net import VethPair, inside
from ...program import Program, close_all
from ..workload import unique_name
from . import count_of, has_table, require_table


# ---------------------------------------------------------------- helpers --
def _text(value) -> str:
    """A char-array field (bytes, or a ctypes char array) as str."""
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode(errors="replace")
    if isinstance(value, ct.Array) and value._type_ is ct.c_char:
        return value.value.decode(errors="replace")
    return str(value)


def _fields(ctype) -> list[str]:
    return [f[0] for f in getattr(ctype, "_fields_", [])]


def compile_c(source: str, out: Path, *flags: str) -> Path:
    """Compile a small C program with gcc (frame pointers kept, no optimisation)."""
    src = out.with_suffix(".c")
    src.write_text(source)
    r = subprocess.run(["gcc", "-O0", "-fno-omit-frame-pointer", "-o", str(out), str(src), *flags],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"gcc failed to build the check's workload:\n{r.stderr}")
    return out


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -------------------------------------------------------------------- 2.1 --
WRITER_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

static int per_thread, pin;

static void *writer(void *cpu) {
    if (pin) {                      /* one thread per CPU: they really run at once */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((long)cpu % sysconf(_SC_NPROCESSORS_ONLN), &set);
        sched_setaffinity(0, sizeof(set), &set);
    }
    for (int i = 0; i < per_thread; i++)
        write(1, "x\n", 2);
    return NULL;
}

/* writer TOTAL THREADS [pin]: TOTAL write() calls of 2 bytes; the first one
   alone, before any thread starts (so the map's key exists before two
   threads can race to create it), then (TOTAL - 1) / THREADS per thread. */
int main(int argc, char **argv) {
    int threads = atoi(argv[2]);
    pthread_t t[8];
    pin = argc > 3;
    write(1, "x\n", 2);
    per_thread = (atoi(argv[1]) - 1) / threads;
    for (long i = 1; i < threads; i++)
        pthread_create(&t[i], NULL, writer, (void *)i);
    writer((void *)0L);
    for (int i = 1; i < threads; i++)
        pthread_join(t[i], NULL);
    return 0;
}
"""
RACE_PER_THREAD = 150_000   # two pinned threads; a plain `+=` loses some of these (measured:
                            # 58 to 3,389 of 300,001 lost in 6 runs, and 0 in some), an atomic add none
RACE_ROUNDS = 6             # at most this many racing processes...
RACE_EVIDENCE = 20          # ...until the check's own plain `+=` has lost this many updates

# The check's witness: a deliberately non-atomic counter per process. When it
# has lost updates, the two threads really ran at the same moment, and a
# learner's non-atomic counter, running in the same system calls, had the
# same chance to lose some.
WITNESS = r"""
BPF_HASH(witness, u32, u64, 65536);
TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 zero = 0, *n = witness.lookup_or_try_init(&tgid, &zero);
    if (n)
        *n += 1;
    return 0;
}
"""


@lab("2.1", "process counter")
def check_process_counter(program: str) -> str:
    """Four programs with fresh names make a known number of write() calls
    (two of them from two threads, one of those with its threads pinned to
    two CPUs so that they race); the learner's `writes` map must hold exactly
    that count under each one's (pid, comm). The stretch map `bytes`, if
    declared, must hold 2 bytes per call."""
    rng = random.Random()
    plan = [(unique_name("ebw"), rng.randrange(3, 16), 1, False),
            (unique_name("ebw"), 1 + 2 * rng.randrange(6, 20), 2, False),   # two threads
            (unique_name("ebw"), 1, 1, False)]
    races = [(unique_name("ebw"), 1 + 2 * RACE_PER_THREAD, 2, True) for _ in range(RACE_ROUNDS)]
    with scratch_dir("ebt-lab21-") as d:
        binary = compile_c(WRITER_C, d / "writer", "-pthread")
        for name, *_ in plan + races:
            shutil.copy(binary, d / name)
        try:
            with Program(WITNESS, name="check 2.1 witness") as witness, \
                    Program(program, name="lab 2.1") as prog:
                table = require_table(prog, "writes", "2.1",
                                      "declare it: BPF_HASH(writes, struct proc_t, u64);")
                expect({"pid", "comm"} <= set(_fields(table.Key)), "2.1",
                       f"the key of `writes` has fields {_fields(table.Key)}",
                       "key the map by `struct proc_t { u32 pid; char comm[16]; }`")
                pids = {}

                def run(name: str, writes: int, threads: int, pin: bool) -> int:
                    p = subprocess.Popen([str(d / name), str(writes), str(threads)]
                                         + (["pin"] if pin else []), stdout=subprocess.DEVNULL)
                    p.wait()
                    pids[name] = p.pid
                    return p.pid

                for entry in plan:
                    run(*entry)
                evidence = 0        # updates the witness lost: proof that the threads raced
                for entry in races:
                    pid = run(*entry)
                    plan.append(entry)
                    counted = witness["witness"].get(witness["witness"].Key(pid))
                    evidence += entry[1] - (counted.value if counted else 0)
                    learner = sum(count_of(v) for k, v in table.items() if _text(k.comm) == entry[0])
                    if evidence >= RACE_EVIDENCE or learner != entry[1]:
                        break
                seen = [(k.pid, _text(k.comm), count_of(v)) for k, v in table.items()]
                stretch = None
                if has_table(prog, "bytes"):
                    stretch = {(k.pid, _text(k.comm)): count_of(v) for k, v in prog["bytes"].items()}
        finally:
            close_all()
    expect(bool(seen), "2.1", "the `writes` map stayed empty while processes called write()",
           "attach with TRACEPOINT_PROBE(syscalls, sys_enter_write) and update the map "
           "with writes.increment(key)")
    for name, writes, threads, pin in plan:
        mine = [(pid, count) for pid, comm, count in seen if comm == name]
        if not mine:
            sample = ", ".join(repr(c) for _, c, _ in seen[:4])
            raise LabFailed("2.1", f"process {name!r} called write() {writes} times, but no key "
                            f"of `writes` has comm {name!r} (comms look like: {sample})",
                            "fill key.comm with bpf_get_current_comm(&key.comm, sizeof(key.comm))")
        expect(len(mine) == 1, "2.1",
               f"process {name!r} ({threads} threads) appears under {len(mine)} keys, with "
               f"pids {sorted(p for p, _ in mine)}: one process must be one key",
               "key by the process id (tgid): the upper 32 bits of bpf_get_current_pid_tgid(), "
               "not the thread id in the lower 32")
        pid, got = mine[0]
        expect(pid == pids[name], "2.1", f"process {name!r} has pid {pids[name]}, but its key in "
               f"`writes` says pid {pid}",
               "key.pid is the process id: bpf_get_current_pid_tgid() >> 32")
        if pin and got < writes:
            raise LabFailed("2.1", f"process {name!r} called write() {writes:,} times from two "
                            f"threads running at once on two CPUs; `writes` says {got:,}: "
                            f"{writes - got} updates were lost",
                            "two CPUs updated the same value at the same moment: a plain "
                            "`*count += 1` (and BCC's increment()) is a load and a store that "
                            "can interleave; use writes.atomic_increment(key), or "
                            "__sync_fetch_and_add(count, 1) on the pointer")
        expect(got == writes, "2.1",
               f"process {name!r} called write() {writes} times (2 bytes each); `writes` says {got}",
               _hint_21(got, writes))
        if stretch is not None:
            b = stretch.get((pid, name), 0)
            expect(b == 2 * writes, "2.1",
                   f"stretch goal: process {name!r} wrote {2 * writes} bytes in {writes} calls; "
                   f"`bytes` says {b}",
                   "add args->count (the bytes asked for) atomically, under the same key")
    total = sum(w for _, w, _, _ in plan)
    return (f"counted {total:,} write() calls of {len(plan)} fresh processes exactly, "
            f"{len(plan) - 2} of them two-threaded, {len(plan) - 3} racing on two CPUs"
            + (", and the stretch goal: `bytes` is right" if stretch is not None
               else " (stretch goal `bytes` not attempted)"))


def _hint_21(got: int, want: int) -> str:
    if got == 2 * want:
        return "count calls, not bytes: add one per event (writes.increment(key))"
    if got > want:
        return "count only write(): TRACEPOINT_PROBE(syscalls, sys_enter_write), one increment per event"
    return "attach to syscalls:sys_enter_write and add one per event"


# -------------------------------------------------------------------- 2.2 --
ETH_IP_UDP = 14 + 20 + 8           # header bytes in front of a UDP payload on Ethernet
FRAME_SIZES = [60, 64, 127, 128, 300, 1000, 1514]
UDP_PORT = 9000


def quiet_link(pair: VethPair) -> None:
    """Make the two namespaces silent but for what the check sends: no IPv6
    (router solicitations, MLD, DAD) and no ARP (a permanent neighbour entry)."""
    for side in "ab":
        pair.run_in(side, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                           "net.ipv6.conf.default.disable_ipv6=1"], check=True)
    link = json.loads(pair.run_in("b", ["ip", "-j", "link", "show", pair.ifname["b"]],
                                  check=True).stdout)
    pair.run_in("a", ["ip", "neigh", "replace", pair.ip_b, "lladdr", link[0]["address"],
                      "dev", pair.ifname["a"], "nud", "permanent"], check=True)


def close_raw_sockets(prog) -> None:
    """BCC 0.26's attach_raw_socket opens a packet socket and never closes it:
    the socket would keep the program (and its namespace) alive."""
    for fn in list(getattr(prog, "funcs", {}).values()):
        sock = getattr(fn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                os.close(sock)
            fn.sock = None


def _slot(n: int) -> int:
    """The log2 slot bpf_log2l(n) gives: n.bit_length()."""
    return n.bit_length()


def _ranges(hist: dict[int, int]) -> str:
    def rng(s: int) -> str:
        return "0" if s == 0 else f"{1 << (s - 1)}-{(1 << s) - 1}"
    return ", ".join(f"slot {s} ({rng(s)} B): {c}" for s, c in sorted(hist.items()) if c) or "nothing"


@lab("2.2", "packet-size histogram")
def check_packet_sizes(program: str, attach) -> str:
    """Frames of known sizes are sent between two private namespaces; the
    learner's socket filter on the receiving veth must file each one in the
    right log2 slot of `sizes`, exactly once."""
    rng = random.Random()
    plan = {size: rng.randrange(1, 7) for size in FRAME_SIZES}
    want: dict[int, int] = {}
    for size, n in plan.items():
        want[_slot(size)] = want.get(_slot(size), 0) + n
    got: dict[int, int] = {}
    prog = None
    try:
        with VethPair() as pair:
            quiet_link(pair)
            prog = Program(program, name="lab 2.2")
            table = require_table(prog, "sizes", "2.2", "declare it: BPF_HISTOGRAM(sizes);")
            with inside(pair.ns["b"]):
                attach(prog, pair.ifname["b"])
                rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # so b sends no ICMP back
            with inside(pair.ns["a"]):
                tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with rx, tx:
                rx.bind((pair.ip_b, UDP_PORT))
                expect(any(getattr(fn, "sock", None) is not None for fn in prog.funcs.values()),
                       "2.2", "attach() did not attach a socket filter to the interface",
                       "load the function with prog.load_func('packet_size', BPF.SOCKET_FILTER), "
                       "then BPF.attach_raw_socket(fn, ifname)")
                for size, n in plan.items():
                    for _ in range(n):
                        tx.sendto(b"\0" * (size - ETH_IP_UDP), (pair.ip_b, UDP_PORT))
                _wait_received(rx, sum(plan.values()))
            for k, v in table.items():
                if v.value:
                    got[int(k.value)] = int(v.value)
            stretch = prog["total_bytes"][0].value if has_table(prog, "total_bytes") else None
            close_raw_sockets(prog)
    finally:
        if prog is not None:
            close_raw_sockets(prog)
        close_all()
    sent = ", ".join(f"{n}×{s} B" for s, n in plan.items())
    expect(bool(got), "2.2", f"`sizes` stayed empty while these frames arrived: {sent}",
           "attach() must attach packet_size to the interface it is given "
           "(BPF.attach_raw_socket(fn, ifname)), and the program must call "
           "sizes.increment(bpf_log2l(skb->len))")
    if got != want:
        raise LabFailed("2.2", f"frames sent: {sent}.\n  expected {_ranges(want)}\n  yours:   "
                        f"{_ranges(got)}", _hint_22(got, want))
    done = f"{sum(plan.values())} frames of 7 sizes filed in the right log2 slots"
    if stretch is None:
        return done + " (stretch goal `total_bytes` not attempted)"
    total = sum(size * n for size, n in plan.items())
    expect(stretch == total, "2.2",
           f"stretch goal: the frames add up to {total} bytes; `total_bytes[0]` says {stretch}",
           "add skb->len (the whole frame) to slot 0 of total_bytes, once per packet, atomically")
    return done + f", and the stretch goal: total_bytes = {total}"


def _wait_received(rx: socket.socket, n: int, timeout: float = 2.0) -> None:
    """Read the n datagrams on the receiver (they went through the filter first)."""
    rx.settimeout(timeout)
    for _ in range(n):
        try:
            rx.recv(2048)
        except socket.timeout:
            break


def _hint_22(got: dict[int, int], want: dict[int, int]) -> str:
    if sum(got.values()) == sum(want.values()):
        if {s + 1: c for s, c in want.items()} == got or {s - 1: c for s, c in want.items()} == got:
            return "every packet is one slot off: the index is bpf_log2l(skb->len), nothing added"
        return "the number of packets is right, the slots are not: use bpf_log2l(skb->len) as the index"
    if sum(got.values()) > 2 * sum(want.values()):
        return "add one per packet: sizes.increment(slot), not the length as the increment"
    if sum(got.values()) < sum(want.values()):
        return ("some packets were not counted: count every packet, and index by "
                "bpf_log2l(skb->len) (a histogram has 64 slots, not one per byte)")
    return "index the histogram by bpf_log2l(skb->len) and add one per packet"


# -------------------------------------------------------------------- 2.3 --
TARGET_C = r"""
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile unsigned long sink;

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void SPIN(double secs) {
    double end = cpu_seconds() + secs;
    while (cpu_seconds() < end)
        for (int i = 0; i < 200000; i++)
            sink += i;
}

__attribute__((noinline)) void DECOY(double secs) { SPIN(secs); }

int main(int argc, char **argv) {      /* usage: target spin|decoy SECONDS */
    double secs = atof(argv[2]);
    if (strcmp(argv[1], "decoy") == 0)
        DECOY(secs);
    else
        SPIN(secs);
    pause();                 /* stay alive, asleep, until the check kills us */
    return 0;
}
"""
BURN = {"spin": 1.0, "decoy": 0.2}     # CPU seconds: about 99 and 20 samples at 99 Hz
SAMPLE_HZ = 99


def _cpu_seconds(pid: int) -> tuple[float, str]:
    """CPU time used by a process so far, and its state letter."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), fields[0]


def _wait_burnt(procs: dict[str, subprocess.Popen], timeout: float = 15.0) -> float:
    """Wait until each process has burnt its CPU time and sleeps; return the target's CPU s."""
    deadline = time.monotonic() + timeout
    while True:
        states = {role: _cpu_seconds(p.pid) for role, p in procs.items()}
        if all(st == "S" and cpu >= BURN[role] * 0.9 for role, (cpu, st) in states.items()) \
                or time.monotonic() > deadline:
            return states["spin"][0]
        time.sleep(0.02)


@lab("2.3", "stack trace collector")
def check_stack_traces(program: str, start, folded) -> str:
    """A program of the check's own, with a fresh function name, burns 1 s
    of CPU while a decoy burns in another function; the learner's
    99 Hz sampler must give folded user stacks of the target, root first,
    with the target's function in them and the decoy's not."""
    token = unique_name("")
    spin, decoy = f"ebt_spin_{token}", f"ebt_decoy_{token}"
    source = TARGET_C.replace("SPIN", spin).replace("DECOY", decoy)
    procs: dict[str, subprocess.Popen] = {}
    with scratch_dir("ebt-lab23-") as d:
        binary = compile_c(source, d / f"ebt{token}")
        try:
            prog = Program(program, name="lab 2.3")
            require_table(prog, "stacks", "2.3", "declare it: BPF_STACK_TRACE(stacks, 4096);")
            start(prog)
            expect(bool(getattr(prog, "open_perf_events", None)), "2.3",
                   "start() attached nothing to a perf event",
                   "prog.attach_perf_event(ev_type=PerfType.SOFTWARE, "
                   "ev_config=PerfSWConfig.CPU_CLOCK, fn_name='on_sample', sample_freq=99)")
            for role, secs in BURN.items():
                procs[role] = subprocess.Popen([str(binary), role, str(secs)])
            cpu = _wait_burnt(procs)
            result = folded(prog, procs["spin"].pid)
        finally:
            for p in procs.values():
                p.kill()
                p.wait()
            close_all()
    expect(isinstance(result, dict), "2.3", f"folded() returned {type(result).__name__}, not a dict",
           "return {'main;f;g': count, ...}: one folded stack (frames joined by ';') per key")
    expect(bool(result), "2.3", f"folded() found no samples for pid {procs['spin'].pid}, which burnt "
           f"{cpu:.2f} s of CPU while sampled",
           "count samples per (pid, user stack id) in on_sample, attach it at 99 Hz in start(), "
           "and keep the samples whose pid is the one asked for")
    stacks = {str(k): int(v) for k, v in result.items()}
    frames = [s.split(";") for s in stacks]
    expect(not any(decoy in f for f in frames), "2.3",
           f"the stacks returned for pid {procs['spin'].pid} contain {decoy}(), which only another "
           "process ran", "keep only the samples whose key.pid equals the pid argument")
    with_spin = [f for f in frames if spin in f]
    if not with_spin:
        sample = max(stacks, key=stacks.get)
        raise LabFailed("2.3", f"the target spent {cpu:.2f} s in {spin}(), but no folded stack "
                        f"names it; the most common stack is {sample!r}",
                        "take the USER stack (get_stackid(ctx, BPF_F_USER_STACK)) and symbolize "
                        "each address with prog.sym(addr, pid).decode()")
    expect(all("main" in f and f.index("main") < f.index(spin) for f in with_spin), "2.3",
           f"in your stacks {spin} comes before main, e.g. {';'.join(with_spin[0])!r}",
           "fold root first: reverse the frames that stacks.walk() gives (leaf first)")
    total = sum(stacks.values())
    expected = cpu * SAMPLE_HZ
    expect(0.5 * expected <= total <= 1.6 * expected, "2.3",
           f"{total} samples for {cpu:.2f} s of CPU; at {SAMPLE_HZ} Hz that is about {expected:.0f}",
           f"sample at {SAMPLE_HZ} Hz (sample_freq=99) on CPU_CLOCK, and count each sample once")
    share = sum(stacks[";".join(f)] for f in with_spin) / total
    return (f"{total} samples in {cpu:.2f} s of CPU, {share:.0%} of them in {spin}() "
            "called from main, none from the decoy")
