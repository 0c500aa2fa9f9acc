"""Chapter 5 checks: kernel function tracer, TCP connection tracker, lock
contention analyzer.

Each lab has two variants written by the learner: one on kprobes (the
chapter's subject) and one on a stable tracepoint (the fallback). Where the
kernel has kprobes, both are attached and judged on the same workload. Where
it has none, the kprobe variant is compiled and loaded as a kprobe program
(so the verifier checks it) but NOT attached, and the PASS line says so; the
tracepoint variant is judged for real.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ... import features
from ..verdict import LabFailed, expect, lab
from ...program import Program, close_all
from ..workload import GatedChild, unique_name
from . import has_table

Judge = Callable[[Program, str], str]


def _verify_only(lab_id: str, source: str) -> int:
    """Compile `source` and load every function in it as a kprobe program: the
    verifier checks them, nothing is attached. Returns how many were loaded."""
    from ...kernel.bcc_import import BPF
    with Program(source, name=f"lab {lab_id} kprobe variant") as prog:
        return len(prog.load_funcs(BPF.KPROBE))


def _two_variants(lab_id: str, kprobe_program: str, attach_kprobes: Callable[[Program], str],
                  tracepoint_program: str, judge: Judge) -> str:
    """Judge the kprobe variant where kprobes exist (else only verify it), then
    the tracepoint variant; return the PASS detail naming what really ran."""
    kprobe_part = tracepoint_part = ""
    try:
        if features.available("kprobes"):
            with Program(kprobe_program, name=f"lab {lab_id} kprobe variant") as prog:
                target = attach_kprobes(prog)
                expect(isinstance(target, str) and bool(target), lab_id,
                       f"attach_kprobes() returned {target!r}, not the kernel function's name",
                       "return the name of the function you attached to, e.g. 'do_sys_openat2'")
                kprobe_part = f"kprobe on {target}: {judge(prog, 'kprobe')}"
        else:
            n = _verify_only(lab_id, kprobe_program)
            kprobe_part = (f"kprobe variant: {n} function(s) passed the verifier but were NOT "
                           f"attached (kprobes: {features.reason('kprobes')})")
        with Program(tracepoint_program, name=f"lab {lab_id} tracepoint variant") as prog:
            tracepoint_part = f"tracepoint variant: {judge(prog, 'tracepoint')}"
    finally:
        close_all()
    parts = [kprobe_part, tracepoint_part]
    if not features.available("kprobes"):
        parts.reverse()                          # what really ran comes first
    return "; ".join(parts)


# -------------------------------------------------------------------- 5.1 --
def _opens_work(ok_path: str, n_ok: int, n_fail: int) -> Callable[[], None]:
    """What each thread of the 5.1 workload does."""
    def opens() -> None:
        for _ in range(n_ok):
            os.close(os.open(ok_path, os.O_RDONLY))
        for _ in range(n_fail):
            try:
                os.open(ok_path + ".missing", os.O_RDONLY)
            except OSError:
                pass
    return opens


def _judge_opens(prog: Program, how: str) -> str:
    expect(has_table(prog, "opens"), "5.1", "your program has no map named `opens`",
           "declare it: BPF_HASH(opens, u32, struct stats_t);")
    n_ok, n_fail = random.randint(3, 9), random.randint(2, 6)

    def table() -> dict[int, tuple[int, int]]:
        return {k.value: (v.calls, v.failed) for k, v in prog["opens"].items()}

    with tempfile.NamedTemporaryFile(prefix="ebt-open-") as f, \
            GatedChild(_opens_work(f.name, n_ok, n_fail)) as child:
        pid = child.pid
        before = table()
        tid = child.go()
    after = table()
    calls, failed = 2 * (n_ok + n_fail), 2 * n_fail
    where = "kprobe+kretprobe" if how == "kprobe" else "tracepoint"
    if pid not in after:
        if tid in after:
            raise LabFailed("5.1", f"`opens` has the worker thread's id {tid} as a key, not the "
                            f"process id {pid}", "key by the process (tgid): "
                            "bpf_get_current_pid_tgid() >> 32")
        expect(bool(after), "5.1", f"`opens` stayed empty ({where} variant) while a process "
               f"opened files {calls} times",
               "are the probes attached and do they update `opens`? In the tracepoint variant "
               "use TRACEPOINT_PROBE(syscalls, sys_enter_openat)")
        raise LabFailed("5.1", f"process {pid} opened files {calls} times, but `opens` has no "
                        f"entry for it ({len(after)} other entries)",
                        "the key must be the process id: bpf_get_current_pid_tgid() >> 32")
    expect(tid not in after, "5.1", f"`opens` has an entry for {tid}, the id of the workload's "
           f"second thread: it counts per thread, but should count per process ({pid})",
           "key by the process (tgid): bpf_get_current_pid_tgid() >> 32")
    b_calls, b_failed = before.get(pid, (0, 0))
    got_calls, got_failed = after[pid][0] - b_calls, after[pid][1] - b_failed
    expect(got_calls == calls, "5.1", f"{where} variant: process {pid} opened files {calls} times "
           f"(2 threads x {n_ok + n_fail}); `opens` counted {got_calls} calls",
           "count once per call, on entry only" if got_calls > calls else
           "count every call of the function, in every thread of the process")
    expect(got_failed == failed, "5.1", f"{where} variant: {failed} of those opens failed "
           f"(ENOENT); `opens` counted {got_failed} failures",
           "a failed call returns a negative errno (-2 for ENOENT), not -1: count ret < 0")
    return f"{calls} calls and {failed} failures of a fresh 2-thread process, exactly"


@lab("5.1", "kernel function tracer")
def check_function_tracer(kprobe_program: str, attach_kprobes, tracepoint_program: str) -> str:
    """A fresh process (2 threads) opens a file a random number of times and a
    missing file a random number of times; `opens[pid]` must hold exactly
    that many calls and failures."""
    return _two_variants("5.1", kprobe_program, attach_kprobes, tracepoint_program, _judge_opens)


# -------------------------------------------------------------------- 5.2 --
TCP_STATES = ["", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
              "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"]


def _mask(*names: str) -> int:
    return sum(1 << TCP_STATES.index(n) for n in names)


def _names(mask: int) -> str:
    return "{" + ", ".join(n for i, n in enumerate(TCP_STATES) if n and mask >> i & 1) + "}"


CLIENT_STATES = _mask("SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE")
SERVER_STATES = _mask("SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE")
LOOPBACK = int.from_bytes(socket.inet_aton("127.0.0.1"), sys.byteorder)  # a u32 copied from the packet bytes


def _tcp_workload(n: int) -> tuple[int, int, list[int]]:
    """A fresh process opens n TCP connections to a fresh loopback port and
    closes them first (active close); this process accepts and closes after.
    Returns (client pid, server port, client ports)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(n)
    port = srv.getsockname()[1]
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            srv.close()
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
            os.write(to_parent_w, " ".join(str(c.getsockname()[1]) for c in clients).encode())
            os.read(to_child_r, 1)               # wait until the server has accepted all
            for c in clients:
                c.close()
        finally:
            os._exit(0)
    accepted = []
    try:
        srv.settimeout(5)
        for _ in range(n):
            accepted.append(srv.accept()[0])
        ports = [int(p) for p in os.read(to_parent_r, 4096).split()]
        os.write(to_child_w, b"x")
        for s in accepted:                       # the client closed first: read its FIN
            s.settimeout(5)
            s.recv(1)
    finally:
        for s in accepted:
            s.close()
        srv.close()
        os.waitpid(pid, 0)
        for fd in (to_child_r, to_child_w, to_parent_r, to_parent_w):
            os.close(fd)
    _wait_settled(port)
    return pid, port, ports


def _wait_settled(port: int, timeout: float = 10.0) -> None:
    """Wait until every socket on `port` is gone or in TIME_WAIT: the last
    ACKs cross loopback in softirq, which a slow or busy machine (the course
    VM under emulation) may run well after close() returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if port in (int(local.split(":")[1], 16), int(remote.split(":")[1], 16)) \
                    and state != "06":                    # 06: TIME_WAIT
                busy = True
                break
        if not busy:
            return
        time.sleep(0.01)


def _judge_tcp(prog: Program, how: str) -> str:
    expect(has_table(prog, "conns"), "5.2", "your program has no map named `conns`",
           "declare it: BPF_HASH(conns, u64, struct conn_t);")
    n = random.randint(2, 4)
    pid, port, ports = _tcp_workload(n)
    rows = [v for _, v in prog["conns"].items()]
    ours = [v for v in rows if port in (v.sport, v.dport)]
    swapped = [v for v in rows if socket.htons(port) in (v.sport, v.dport)]
    expect(bool(rows), "5.2", f"`conns` stayed empty ({how} variant) while {n} TCP "
           "connections were opened and closed on 127.0.0.1",
           "does the probe run and update `conns`?")
    if not ours:
        if swapped:
            raise LabFailed("5.2", f"no entry has port {port}, but some have {socket.htons(port)}:"
                            " that is the same port with its bytes swapped",
                            "sport/dport in sock:inet_sock_set_state are already in host order; "
                            "in struct sock, skc_num is host order and skc_dport network order "
                            "(use bpf_ntohs() on skc_dport only)")
        raise LabFailed("5.2", f"{n} connections to port {port} were made, but no entry of "
                        "`conns` has that port", "copy sport and dport into the record on every "
                        "state change (the source port is only assigned after SYN_SENT)")
    for cport in ports:
        client = [v for v in ours if (v.sport, v.dport) == (cport, port)]
        server = [v for v in ours if (v.sport, v.dport) == (port, cport)]
        expect(len(client) == 1, "5.2", f"the connection 127.0.0.1:{cport} -> 127.0.0.1:{port} "
               f"should have one client-side entry; `conns` has {len(client)}",
               "key `conns` by the socket (args->skaddr or the struct sock pointer), and fill "
               "in the addresses and ports on every state change")
        c = client[0]
        expect(c.saddr == LOOPBACK and c.daddr == LOOPBACK, "5.2",
               f"addresses of the client side are {socket.inet_ntoa(c.saddr.to_bytes(4, sys.byteorder))}"
               f" -> {socket.inet_ntoa(c.daddr.to_bytes(4, sys.byteorder))}, not 127.0.0.1 -> 127.0.0.1",
               "copy the 4 bytes of saddr/daddr as they are (network order)")
        expect(c.states == CLIENT_STATES, "5.2", f"client socket :{cport} went through "
               f"{_names(CLIENT_STATES)}; `conns` has {_names(c.states)}",
               "OR in 1 << newstate on every transition, and start a fresh record when a "
               "socket enters SYN_SENT (the 4-tuple is not complete yet then: key by socket)")
        expect(c.pid == pid, "5.2", f"connect() was called by pid {pid}; `conns` says {c.pid}",
               "record the pid only at the CLOSE -> SYN_SENT transition: that one runs in the "
               "process calling connect(), most others run in softirq context")
        expect(len(server) == 1, "5.2", f"the accepted socket 127.0.0.1:{port} -> :{cport} "
               f"should have one entry; `conns` has {len(server)}",
               "track every TCP socket, not only the ones that call connect()")
        s_states = server[0].states
        # A kprobe on tcp_set_state never sees SYN_RECV (set by inet_sk_set_state),
        # and misses CLOSE on kernels where tcp_done() inlines tcp_set_state (6.12).
        ok = (s_states == SERVER_STATES if how == "tracepoint"
              else s_states & ~_mask("CLOSE") == SERVER_STATES & ~_mask("SYN_RECV", "CLOSE"))
        expect(ok, "5.2", f"the server socket for :{cport} went through {_names(SERVER_STATES)}; "
               f"`conns` has {_names(s_states)} ({how} variant)",
               "record the new state (newstate) of every transition, not the old one")
    extra = len(ours) - 2 * n - sum(1 for v in ours if v.dport == 0)
    expect(extra == 0, "5.2", f"`conns` has {extra} more entries for port {port} than the "
           f"{2 * n} sockets of the {n} connections",
           "one entry per socket: key by the socket address, not by the 4-tuple")
    return (f"{n} loopback connections to fresh port {port}: client and server sockets, "
            "their states and the connecting pid all right")


@lab("5.2", "TCP connection tracker")
def check_tcp_tracker(kprobe_program: str, attach_kprobes, tracepoint_program: str) -> str:
    """A fresh process opens 2-4 connections to a fresh loopback port; each
    client and server socket must appear once in `conns` with the right
    addresses, ports, TCP states and connecting pid."""
    return _two_variants("5.2", kprobe_program, attach_kprobes, tracepoint_program, _judge_tcp)


# -------------------------------------------------------------------- 5.3 --
CONTEND_C = r"""
/* n threads queue up on one pthread mutex; each measures its own wait. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long hold_us;
struct result { pid_t tid; long waited_ns, queued_ns; };

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* ns this thread has spent runnable but waiting for a CPU (the kernel's own
   accounting; no stdio: its locks would be futexes of their own) */
static long run_delay_ns(void) {
    char buf[128] = {0};
    int fd = open("/proc/thread-self/schedstat", O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    char *p = strchr(buf, ' ');
    return p ? strtol(p + 1, NULL, 10) : 0;
}

static void *worker(void *arg) {
    struct result *r = arg;
    r->tid = gettid();
    long queued = run_delay_ns();
    long start = now_ns();
    pthread_mutex_lock(&lock);
    r->waited_ns = now_ns() - start;
    r->queued_ns = run_delay_ns() - queued;
    usleep(hold_us);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    hold_us = atol(argv[2]);
    pthread_t th[16];
    struct result res[16];
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n && i < 16; i++)
        pthread_create(&th[i], NULL, worker, &res[i]);
    usleep(hold_us);                 /* every worker is now blocked on the mutex */
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < n && i < 16; i++)
        pthread_join(th[i], NULL);
    printf("main %d mutex %p\n", gettid(), (void *)&lock);
    for (int i = 0; i < n && i < 16; i++)
        printf("worker %d waited_ns %ld queued_ns %ld\n", res[i].tid, res[i].waited_ns,
               res[i].queued_ns);
    return 0;
}
"""


def _contention(n_threads: int, hold_us: int) -> tuple[int, int, dict[int, int], dict[int, int]]:
    """Build and run the contention program under a fresh name. Returns
    (pid = main thread id, mutex address, {worker tid: ns it measured waiting},
    {worker tid: ns of that time it sat runnable waiting for a CPU})."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("lab 5.3 needs a C compiler to build its workload: apt-get install gcc")
    folder = Path(tempfile.mkdtemp(prefix="ebt-lock-"))
    try:
        (folder / "contend.c").write_text(CONTEND_C)
        exe = folder / unique_name("ebtlk")
        subprocess.run([cc, "-O2", "-pthread", "-o", str(exe), str(folder / "contend.c")],
                       check=True, capture_output=True)
        out = subprocess.run([str(exe), str(n_threads), str(hold_us)], check=True,
                             capture_output=True, text=True, timeout=20).stdout
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    head = re.search(r"main (\d+) mutex (0x[0-9a-f]+)", out)
    rows = re.findall(r"worker (\d+) waited_ns (\d+) queued_ns (\d+)", out)
    waited = {int(t): int(ns) for t, ns, _ in rows}
    queued = {int(t): int(q) for t, _, q in rows}
    return int(head.group(1)), int(head.group(2), 16), waited, queued


def _judge_locks(prog: Program, how: str) -> str:
    expect(has_table(prog, "waits"), "5.3", "your program has no map named `waits`",
           "declare it: BPF_HASH(waits, struct wait_key_t, struct wait_t);")
    n, hold_us = random.randint(3, 4), random.randint(40, 60) * 1000
    pid, mutex, waited, queued = _contention(n, hold_us)
    mine = {(k.tid, k.uaddr): (v.wait_ns, v.waits) for k, v in prog["waits"].items()
            if k.tgid == pid}
    on_mutex = {tid: val for (tid, addr), val in mine.items() if addr == mutex}
    anything = len(prog["waits"]) > 0
    expect(bool(mine), "5.3", f"process {pid} had {n} threads blocked on a mutex for "
           f"{sum(waited.values()) / 1e6:.0f} ms in all, but `waits` has "
           + ("entries for other processes only" if anything else "no entries at all"),
           "do the probes run, and do they see glibc's waits? Those have op FUTEX_WAIT | "
           "FUTEX_PRIVATE_FLAG (128): compare op & FUTEX_CMD_MASK, not op itself"
           if how == "tracepoint" else
           "attach a kprobe and a kretprobe to futex_wait and update `waits` on return")
    if not any(tid in on_mutex for tid in waited):
        if pid in on_mutex or any(tid == pid for tid, _ in mine):
            raise LabFailed("5.3", "the waits of the process are filed under its main thread "
                            f"id {pid}, none under the {n} worker threads that waited",
                            "keep the start per thread: tid is the low 32 bits of "
                            "bpf_get_current_pid_tgid(), the tgid the high 32")
        addrs = ", ".join(hex(a) for _, a in list(mine)[:4])
        raise LabFailed("5.3", f"the workers waited on the mutex at {hex(mutex)}, but the uaddr "
                        f"in your keys is {addrs}", "the lock address is the futex word: "
                        "args->uaddr (tracepoint) or the first argument of futex_wait (kprobe)")
    for tid, user_ns in waited.items():
        expect(tid in on_mutex, "5.3", f"worker thread {tid} waited {user_ns / 1e6:.1f} ms for "
               f"the mutex; `waits` has no entry for it",
               "key by thread (tid), process (tgid) and lock address (uaddr)")
        got_ns, count = on_mutex[tid]
        expect(count >= 1, "5.3", f"thread {tid}: `waits` says it waited {count} times")
        # The thread's clock also runs while it sits runnable waiting for a CPU just
        # before or after its futex call (a busy machine): the kernel's own count of
        # its run-queue time over the whole measurement may be missing from `waits`.
        slack, late = 0.05 * user_ns + 3_000_000, queued[tid]
        expect(user_ns - late - slack <= got_ns <= user_ns + slack, "5.3",
               f"thread {tid} measured its own wait as {user_ns / 1e6:.1f} ms"
               + (f" ({late / 1e6:.1f} ms of it waiting for a CPU)" if late >= 1_000_000 else "")
               + f"; `waits` says {got_ns / 1e6:.3f} ms",
               "store the start time per thread (tid) at entry, and add "
               "bpf_ktime_get_ns() - start (in ns) at exit" if got_ns > 0 else
               "is the wait time computed at exit and added to wait_ns?")
    expect(pid not in on_mutex, "5.3", f"the main thread {pid} held the mutex and only woke "
           f"the others (FUTEX_WAKE); `waits` says it waited {on_mutex.get(pid, (0, 0))[0] / 1e6:.3f}"
           " ms on it", "count only the waiting operations: (op & FUTEX_CMD_MASK) is "
           "FUTEX_WAIT, FUTEX_WAIT_BITSET or FUTEX_LOCK_PI")
    total = sum(on_mutex[t][0] for t in waited) / 1e6
    return (f"{n} threads of a fresh process waited {total:.0f} ms in all on one mutex: "
            "each thread's wait matches its own clock, the lock holder is not charged")


@lab("5.3", "lock contention analyzer")
def check_lock_contention(kprobe_program: str, attach_kprobes, tracepoint_program: str) -> str:
    """A fresh C program makes 3-4 threads queue on one pthread mutex; for each
    thread, `waits[(tgid, tid, mutex address)]` must match the wait the thread
    measured itself (within 5% + 3 ms; less, at most, the time the kernel says
    the thread sat waiting for a CPU meanwhile), and the thread that only held
    the lock must not appear."""
    return _two_variants("5.3", kprobe_program, attach_kprobes, tracepoint_program, _judge_locks)
