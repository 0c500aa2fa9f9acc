"""The chapter 4 check workloads do what the checks believe they do.

A check is only as good as its truth: these tests run the C targets of
ebpf_tutor.labs.targets without any BPF and compare their behaviour with the
plans the checks make (no root needed, only gcc)."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpf_tutor.labs.checks import ch04
from ebpf_tutor.labs.targets import (SOURCES, TargetDir, blocked_in_read, in_initial_pid_namespace,
                                read_line, stop, thread_states, wait_for)

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture
def tdir():
    with TargetDir() as t:
        yield t


@needs_gcc
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_target_builds(tdir, name):
    exe = tdir.build(name)
    assert exe.is_file() and os.access(exe, os.X_OK)


@given(seed=st.integers(0, 2**32))
@settings(max_examples=50, deadline=None)
def test_tree_plan_is_a_tree_of_seven(seed):
    paths = [Path(f"/x/n{i}") for i in range(7)]
    argv, codes = ch04._tree_plan(paths, random.Random(seed))
    assert argv[0] == "/x/n0" and int(argv[1]) == codes["n0"]
    assert len(argv) == 4                                  # root, its code, two children
    named = [part.split(":")[0] for spec in argv[2:] for part in spec.split(",")]
    assert sorted(named) == sorted(str(p) for p in paths[1:])
    assert [spec.split(",")[0].split(":")[0] for spec in argv[2:]] == ["/x/n1", "/x/n2"]
    assert all(len(spec.split(",")) >= 2 for spec in argv[2:])     # each child has a leaf
    assert len(set(codes.values())) == 7 and all(0 < c < 256 for c in codes.values())


@given(seed=st.integers(0, 2**32))
@settings(max_examples=50, deadline=None)
def test_alloc_plan_interleaves_frees_and_ends_on_a_kept_malloc(seed):
    text, sizes, frees = ch04._alloc_plan(random.Random(seed))
    assert 8 <= len(sizes) <= 128
    assert 2 <= len(frees) < len(sizes) and len(set(frees)) == len(frees)
    ops = [(op[0], int(op[1:])) for op in text.split(",")]
    assert [n for kind, n in ops if kind == "m"] == sizes
    assert sorted(n for kind, n in ops if kind == "f") == sorted(frees)
    made = 0
    for kind, n in ops:
        if kind == "m":
            made += 1
        else:
            assert n < made                       # a block is freed after its malloc
    assert ops[-1][0] == "m" and len(sizes) - 1 not in frees


@needs_gcc
def test_tree_node_reports_the_tree_it_was_asked_for(tdir):
    exe = tdir.build("tree_node")
    paths = [tdir.copy(exe, f"node{i}") for i in range(7)]
    argv, codes = ch04._tree_plan(paths, random.Random(4))
    root = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert root.returncode == codes["node0"]
    lines = [ln.split() for ln in root.stdout.splitlines()]
    by_name = {Path(path).name: (int(pid), int(ppid)) for pid, ppid, path in lines}
    assert set(by_name) == {p.name for p in paths}
    assert by_name["node0"][1] == os.getpid()
    for spec in argv[2:]:
        child, *leaves = [Path(part.split(":")[0]).name for part in spec.split(",")]
        assert by_name[child][1] == by_name["node0"][0]
        assert all(by_name[leaf][1] == by_name[child][0] for leaf in leaves)


@needs_gcc
def test_file_reader_makes_the_promised_calls(tdir):
    exe = tdir.build("file_reader")
    folder = tdir.path / "files"
    folder.mkdir()
    for i in range(3):
        (folder / f"f{i}").write_bytes(b"x" * 2 * 512)
    procs = ch04._start_readers(exe, folder, 3, 2, 512)
    try:
        wall_ns = ch04._drive_readers(procs)
        assert all(p.returncode == 0 for p in procs)
        assert wall_ns >= ch04.BLOCKED_S * 1e9
    finally:
        for p in procs:
            stop(p)


@needs_gcc
def test_file_reader_fails_loudly_on_short_files(tdir):
    exe = tdir.build("file_reader")
    (tdir.path / "f0").write_bytes(b"short")
    p = subprocess.Popen([str(exe), str(tdir.path), "1", "2", "512"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert read_line(p) == "ready"
        p.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: any(blocked_in_read(p.pid, t)
                                         for t in thread_states(p.pid) if t != p.pid))
        p.send_signal(signal.SIGUSR1)
        assert p.wait(timeout=5) == 123           # a read came back short
    finally:
        stop(p)


@needs_gcc
def test_allocator_follows_its_plan(tdir):
    exe = tdir.build("allocator")
    p = subprocess.Popen([str(exe), "m100,m200000,f0,m3,f2,m7"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    try:
        assert read_line(p) == "ready"
        p.stdin.write(b"go\n")
        p.stdin.flush()
        assert read_line(p) == "done"
        assert p.poll() is None                   # it waits to be read
        p.stdin.write(b"bye\n")
        p.stdin.flush()
        assert p.wait(timeout=5) == 0
    finally:
        stop(p)


def test_this_machine_is_in_the_initial_pid_namespace():
    # The course machines run with host pids (containers: --pid=host).
    assert in_initial_pid_namespace()
