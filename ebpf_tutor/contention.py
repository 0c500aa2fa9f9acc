"""A known number of marked system calls, from processes pinned to CPUs.

Chapter 12 needs the same BPF program to run on two CPUs at the same time,
a known number of times, and nothing else in the count. A small C program
(`HAMMER_C`, compiled with `cc` and cached like overhead's loop) calls
`close(marker)` N times. `marker` is a descriptor number that is never open
(above fs.nr_open, the most descriptors any process may have: 1,048,576 by
default), so each call fails at once with EBADF, and a program on
`syscalls:sys_enter_close` that keeps only `args->fd == marker` counts
exactly these calls and nobody else's.

    marker = new_marker()
    runs = hammer(marker, calls=100_000, cpus=[0, 1])   # both start together
    sum(r.calls for r in runs)                           # the true count
"""
from __future__ import annotations

import functools
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .overhead import compiled_c

HAMMER_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <sched.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* hammer close MARKER N [RATE [PERIOD]]
                               N calls of close(): RATE calls/s (0: flat out), paced in
                               1 ms slices; with PERIOD p > 0, call i closes MARKER when
                               i % p == 0 and MARKER + 1 otherwise (two kinds, 1 : p-1)
   hammer udp IP PORT N        N one-byte UDP datagrams to IP:PORT, 64 per sendmmsg()
   Both pin themselves to CPU $HAMMER_CPU if it is set, wait for one byte on
   stdin (the start signal), then print the ns they took: wall clock, and CPU
   time (which leaves out time the process waited). */
static long udp(const char *ip, int port, long n) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &to.sin_addr);
    char byte = 'x';
    struct iovec iov = {&byte, 1};
    struct mmsghdr msgs[64];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < 64; i++) {
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof(to);
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long sent = 0;
    while (sent < n) {
        int batch = n - sent < 64 ? n - sent : 64;
        int r = sendmmsg(s, msgs, batch, 0);
        if (r > 0)
            sent += r;
    }
    return sent;
}

static void closes(long marker, long n, long rate, long period, struct timespec start) {
    long per_slice = rate > 0 ? (rate + 999) / 1000 : n, slice = 0;
    for (long i = 0; i < n; i++) {
        syscall(SYS_close, period > 0 && i % period != 0 ? marker + 1 : marker);
        if (rate > 0 && (i + 1) % per_slice == 0) {       /* one slice done: wait for the next */
            slice++;
            struct timespec next = start;
            next.tv_nsec += slice * 1000000L;
            next.tv_sec += next.tv_nsec / 1000000000L;
            next.tv_nsec %= 1000000000L;
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        }
    }
}

int main(int argc, char **argv) {
    char go;
    const char *pin = getenv("HAMMER_CPU");       /* pin itself: the parent need not fork to */
    if (pin) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(atoi(pin), &set);
        if (sched_setaffinity(0, sizeof(set), &set) != 0)
            return 2;
    }
    int is_udp = argv[1][0] == 'u';
    long n = atol(argv[is_udp ? 4 : 3]), marker = atol(argv[2]);
    if (read(0, &go, 1) != 1)
        return 1;
    struct timespec a, b, ca, cb;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ca);
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (is_udp)
        udp(argv[2], atoi(argv[3]), n);
    else
        closes(marker, n, argc > 4 ? atol(argv[4]) : 0, argc > 5 ? atol(argv[5]) : 0, a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cb);
    printf("%ld %ld\n", (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec),
           (cb.tv_sec - ca.tv_sec) * 1000000000L + (cb.tv_nsec - ca.tv_nsec));
    return 0;
}
"""
MARKER_RANGE = (1 << 24, 1 << 30)    # far above fs.nr_open's default (1 << 20): never open


@dataclass
class HammerRun:
    """What one pinned process did: its CPU, its calls, its wall time, its
    pid, and its CPU time (user + system: what the calls cost it)."""
    cpu: int
    calls: int
    ns: int
    pid: int = 0
    cpu_ns: int = 0

    @property
    def calls_per_s(self) -> float:
        return self.calls / max(self.ns, 1) * 1e9


def new_marker(rng: random.Random | None = None) -> int:
    """A fresh marker: a descriptor number no process has open."""
    return (rng or random).randrange(*MARKER_RANGE)


@functools.cache
def hammer_binary() -> Path:
    """HAMMER_C, compiled once per source and machine (overhead.compiled_c)."""
    return compiled_c("hammer", HAMMER_C)


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def _run_pinned(argvs: list[list[str]], cpus: list[int], calls: int,
                timeout: float) -> list[HammerRun]:
    """Start one process per CPU, pinned there; release them together."""
    procs = []
    try:
        for cpu, argv in zip(cpus, argvs):
            # no preexec_fn: Python can then start it with vfork, which stays
            # fast when this process is big and the machine is busy
            procs.append(subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env={**os.environ, "HAMMER_CPU": str(cpu)}))
        for p in procs:                       # the start signal, to all of them
            p.stdin.write("g")
            p.stdin.flush()
        for p in procs:
            p.stdin.close()
        outs = [p.stdout.read() for p in procs]       # each prints once, at its end
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    times = [[int(x) for x in out.split()] or [0, 0] for out in outs]
    return [HammerRun(cpu, calls, t[0], p.pid, t[-1])
            for cpu, t, p in zip(cpus, times, procs)]


def hammer(marker: int, calls: int, cpus: list[int] | None = None, rate: int = 0,
           period: int = 0, timeout: float = 120.0) -> list[HammerRun]:
    """Run one hammer per CPU in `cpus` (default: every usable CPU), each
    pinned there and making `calls` calls of close(marker). All start at the
    same moment (a byte on their stdin), so their calls overlap in time.
    `rate`: calls per second per process (0: as fast as it can); `period`:
    see HAMMER_C (1 call in `period` closes `marker`, the others marker + 1)."""
    cpus = usable_cpus() if cpus is None else cpus
    argv = [str(hammer_binary()), "close", str(marker), str(calls), str(rate), str(period)]
    return _run_pinned([argv] * len(cpus), cpus, calls, timeout)


def udp_blast(ns_name: str, ip: str, port: int, packets: int, cpus: list[int] | None = None,
              timeout: float = 120.0) -> list[HammerRun]:
    """From inside network namespace `ns_name`, one sender per CPU in `cpus`,
    pinned there, sends `packets` one-byte UDP datagrams to ip:port (64 per
    sendmmsg). They start together. A veth delivers what a process sends on
    the sending CPU, so the receiver's hooks run on all of them at once."""
    cpus = usable_cpus() if cpus is None else cpus
    argv = ["ip", "netns", "exec", ns_name, str(hammer_binary()), "udp", ip, str(port),
            str(packets)]
    return _run_pinned([argv] * len(cpus), cpus, packets, timeout)
