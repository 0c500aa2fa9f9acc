"""contention (pinned, marked workloads) and bpfsys.stats (BPF_ENABLE_STATS)."""
from __future__ import annotations

import random
import shutil

import pytest

from ebpf_tutor import Program
from ebpf_tutor.bpfsys.stats import ProgStats, run_time_stats
from ebpf_tutor.contention import (MARKER_RANGE, HammerRun, hammer, new_marker, udp_blast,
                                   usable_cpus)
from tests.conftest import needs_root

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")

COUNT = r"""
BPF_PERCPU_ARRAY(calls, u64, 2);      /* [0] MARKER, [1] MARKER + 1 */
TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    int k = args->fd - MARKER;
    if (k < 0 || k > 1)
        return 0;
    u64 *n = calls.lookup(&k);
    if (n)
        *n += 1;
    return 0;
}
"""


def test_markers_are_never_open_descriptors():
    rng = random.Random(1)
    assert all(MARKER_RANGE[0] <= new_marker(rng) < MARKER_RANGE[1] for _ in range(100))
    assert MARKER_RANGE[0] > 1 << 20          # above the kernel's nr_open default


def test_prog_stats_subtract_and_average():
    d = ProgStats(30, 900) - ProgStats(10, 100)
    assert d == ProgStats(20, 800) and d.ns_per_run == 40
    assert ProgStats(0, 0).ns_per_run == 0.0
    assert HammerRun(0, 1000, 10**6).calls_per_s == pytest.approx(10**6)


@needs_root
@needs_cc
def test_hammer_makes_exactly_its_calls_on_its_cpus_with_its_pattern():
    marker = new_marker()
    cpus = usable_cpus()[:2]
    with Program(COUNT, cflags=[f"-DMARKER={marker}"]) as prog:
        runs = hammer(marker, 4_000, cpus, period=4)
        per_kind = [list(prog["calls"][k])[:max(cpus) + 1] for k in (0, 1)]
    assert [r.cpu for r in runs] == cpus and all(r.pid > 0 and r.ns > 0 for r in runs)
    for cpu in cpus:                                   # 1 in 4 calls is MARKER's
        assert (per_kind[0][cpu], per_kind[1][cpu]) == (1_000, 3_000)


@needs_root
@needs_cc
def test_a_paced_hammer_keeps_its_rate():
    marker = new_marker()
    run, = hammer(marker, 2_000, usable_cpus()[:1], rate=20_000)
    assert 0.08 <= run.ns / 1e9 <= 2.0                 # 0.1 s nominal; generous on a busy machine


@needs_root
def test_run_time_stats_count_while_on():
    """(Whether they stop when the switch closes depends on every other
    process on the machine: any of them may hold stats on too.)"""
    marker = new_marker()
    with Program(COUNT, cflags=[f"-DMARKER={marker}"]) as prog:
        fd = next(iter(prog.funcs.values())).fd
        hammer(marker, 1_000, usable_cpus()[:1])
        off = ProgStats.of(fd)
        with run_time_stats() as switch:
            hammer(marker, 1_000, usable_cpus()[:1])
            on = ProgStats.of(fd) - off
        assert switch.closed
    assert on.run_cnt >= 1_000 and on.run_time_ns > 0


@needs_root
@needs_cc
def test_udp_blast_sends_from_each_cpu_into_the_namespace():
    from ebpf_tutor.sandbox import xdp
    from ebpf_tutor.sandbox.net import VethPair
    src = ("BPF_PERCPU_ARRAY(n, u64, 1);\nint f(struct xdp_md *ctx) { int z = 0; "
           "u64 *v = n.lookup(&z); if (v) *v += 1; return XDP_PASS; }")
    cpus = usable_cpus()[:2]
    with VethPair(quiet=True) as lab, Program(src) as prog, \
            xdp.attach(prog, "f", *lab.where("b"), mode="generic"):
        udp_blast(lab.ns["a"], lab.ip_b, 9, 3_000, cpus)
        import time
        time.sleep(0.2)
        got = list(prog["n"][0])
    assert [got[c] for c in cpus] == [3_000] * len(cpus)
