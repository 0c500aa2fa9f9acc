"""overhead: calibrated rounds of a sane length, and hooks that run on the timed calls."""
from __future__ import annotations

import shutil
import time
from contextlib import contextmanager

import pytest

from ebpf_tutor import overhead
from tests.conftest import needs_root

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")

COUNT_GETPPID = """
BPF_ARRAY(calls, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { calls.increment(0); return 0; }
"""


def test_choose_calls_aims_at_one_round_length_with_a_floor():
    assert overhead.choose_calls(100.0) == overhead.ROUND_NS // 100
    assert overhead.choose_calls(overhead.ROUND_NS / 10) == overhead.MIN_CALLS


def test_unknown_syscall_is_refused():
    with pytest.raises(ValueError, match="getppid"):
        overhead.run_loop("read", 10)


@needs_cc
def test_the_loop_is_compiled_into_the_cache_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    overhead.loop_binary.cache_clear()
    try:
        binary = overhead.loop_binary()
        built = binary.stat().st_mtime_ns
        overhead.loop_binary.cache_clear()
        assert overhead.loop_binary() == binary and binary.stat().st_mtime_ns == built
        assert [p.name for p in (tmp_path / "ebpf-tutor").iterdir()] == [binary.name]
        assert overhead.run_loop("getppid", 100, rounds=1) > 0
    finally:
        overhead.loop_binary.cache_clear()


@needs_cc
@pytest.mark.parametrize("syscall", sorted(overhead.SYSCALLS))
def test_calibrated_rounds_last_about_the_target(syscall):
    calls = overhead.calls_per_round(syscall)
    start = time.monotonic()
    ns = overhead.ns_per_call(syscall)
    wall = time.monotonic() - start
    assert ns > 0 and calls >= overhead.MIN_CALLS
    round_ns = calls * ns
    assert round_ns >= overhead.ROUND_NS / 4, f"{calls} calls of {ns} ns: a round is too short"
    if calls > overhead.MIN_CALLS:          # above the floor, a round is not much longer
        assert round_ns <= overhead.ROUND_NS * 4, f"{calls} calls of {ns} ns: a round is too long"
    assert wall < 5, f"one measurement took {wall:.1f}s"


def test_added_cost_is_the_median_of_three_differences(monkeypatch):
    timings = iter([100.0, 150.0, 100.0, 400.0, 100.0, 120.0])   # base, with, ...
    monkeypatch.setattr(overhead, "ns_per_call", lambda syscall: next(timings))
    attached = []

    @contextmanager
    def make_program():
        attached.append("in")
        yield
        attached.append("out")

    assert overhead.added_cost(make_program, "getppid") == 50.0     # of 50, 300, 20
    assert attached == ["in", "out"] * 3


@needs_root
@needs_cc
def test_a_tracepoint_hook_runs_on_every_timed_call():
    from ebpf_tutor import Program

    calls = overhead.calls_per_round("getppid")       # calibrated before attaching
    with Program(COUNT_GETPPID) as prog:
        overhead.ns_per_call("getppid")
        counted = prog["calls"][0].value
    assert counted >= overhead.ROUNDS * calls
