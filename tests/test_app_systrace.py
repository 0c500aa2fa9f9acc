"""systrace (chapter 15): decoding, the syscall table, and the CLI on a known
workload (counts equal strace -c -f's; decoded openat calls; children
followed; comm and cgroup filters with decoys)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ebpf_tutor.apps.systrace import decode, report, syscalls, workload
from tests.conftest import ROOT, interruptible, needs_root


def systrace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ebpf_tutor", "systrace", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def marker(tmp_path):
    p = tmp_path / "marker"
    p.write_text("x")
    return p


def test_open_flags_and_errors_spelled_like_strace():
    assert decode.open_flags(os.O_RDONLY | os.O_CLOEXEC) == "O_RDONLY|O_CLOEXEC"
    assert decode.open_flags(os.O_WRONLY | os.O_CREAT | os.O_TRUNC) == "O_WRONLY|O_CREAT|O_TRUNC"
    assert decode.format_call("openat", [(-100) & (2**64 - 1), 0, os.O_RDONLY, 0, 0, 0], -2,
                              path="/nope") == \
        'openat(AT_FDCWD, "/nope", O_RDONLY) = -1 ENOENT (No such file or directory)'
    assert decode.format_call("openat", [3, 0, os.O_CREAT | os.O_WRONLY, 0o644, 0, 0], 4,
                              path="f") == 'openat(3, "f", O_WRONLY|O_CREAT, 0644) = 4'
    assert decode.format_return("mmap", 0x7F0000001000) == "0x7f0000001000"
    assert decode.errno_name(13) == "EACCES"


def test_syscall_names_per_arch():
    assert syscalls.name(257, "x86_64") == "openat"
    assert syscalls.name(56, "arm64") == "openat"
    assert syscalls.number("execve", "x86_64") == 59
    assert syscalls.name(99999) == "syscall_99999"


def test_parse_strace_c():
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 50.00    0.000010           2         5           read
 50.00    0.000010           1         8         3 openat
------ ----------- ----------- --------- --------- ----------------
100.00    0.000020           1        13         3 total
"""
    assert report.parse_strace_c(text) == {"read": (5, 0), "openat": (8, 3)}


def test_help_imports_fast():
    out = systrace("--help")
    assert out.returncode == 0 and "--summary" in out.stdout and "--cgroup" in out.stdout


@needs_root
def test_summary_equals_strace_c(marker):
    argv = workload.argv(marker, 4, 2, 2)
    out = systrace("-c", "--json", "--", *argv)
    assert out.returncode == 0, out.stderr
    ours = {r["syscall"]: (r["calls"], r["errors"]) for r in json.loads(out.stdout)["summary"]}
    from ebpf_tutor.apps.systrace.peers import strace_counts
    assert ours == strace_counts(argv)
    assert ours["getppid"] == (6, 0) and ours["wait4"] == (2, 0) and ours["clone"][0] == 2


@needs_root
def test_no_latency_summary_counts_alike(marker):
    argv = workload.argv(marker, 3, 1, 2)
    a = json.loads(systrace("-c", "--json", "--", *argv).stdout)["summary"]
    b = json.loads(systrace("-c", "--no-latency", "--json", "--", *argv).stdout)["summary"]
    assert {r["syscall"]: r["calls"] for r in a} == {r["syscall"]: r["calls"] for r in b}


@needs_root
def test_stream_decodes_openat_and_follows_children(marker):
    out = systrace("--json", "-e", "openat,getppid", "--", *workload.argv(marker, 4, 2, 2))
    assert out.returncode == 0, out.stderr
    recs = [json.loads(line) for line in out.stdout.splitlines()]
    mine = [r for r in recs if r["syscall"] == "openat" and str(marker) in r["args"][1]]
    ok = [r for r in mine if r["error"] is None]
    failed = [r for r in mine if r["error"] == "ENOENT"]
    assert len(ok) == 4 and len(failed) == 2
    assert all(r["args"][0] == "AT_FDCWD" and r["args"][2] == "O_RDONLY|O_CLOEXEC" for r in ok)
    assert all(r["args"][1] == f'"{marker}.missing"' and r["ret"] == -2 for r in failed)
    children = {r["pid"] for r in recs if r["syscall"] == "getppid"}
    parent = ok[0]["pid"]
    assert len(children) == 2 and parent not in children
    assert sum(r["syscall"] == "getppid" for r in recs) == 6
    assert all(r["latency_us"] >= 0 for r in recs)


@needs_root
def test_exit_status_and_output_file(tmp_path):
    dest = tmp_path / "trace.txt"
    out = systrace("-o", str(dest), "--", "sh", "-c", "exit 7")
    assert out.returncode == 7
    assert 'execve("/usr/bin/sh"' in dest.read_text() or 'execve("/bin/sh"' in dest.read_text()


def _named_copies(folder: Path, *names: str) -> list[str]:
    paths = []
    for n in names:
        shutil.copy(workload.binary(), folder / n)
        paths.append(str(folder / n))
    return paths


@needs_root
def test_comm_filter_ignores_decoys(marker):
    from ebpf_tutor.apps.systrace.probes import TraceOptions, Tracer
    from ebpf_tutor.labs.workload import unique_name
    target, decoy = unique_name("st"), unique_name("sd")
    with tempfile.TemporaryDirectory() as d:
        t_path, d_path = _named_copies(Path(d), target, decoy)
        with Tracer(TraceOptions(summary=True, comm=target)) as tr:
            subprocess.run([d_path, str(marker), "5", "5", "3"], check=True)
            subprocess.run([t_path, str(marker), "1", "2", "1"], check=True)
            stats = tr.summary()
    assert stats["getppid"].calls == 3        # the decoy's 9 are not there
    assert stats["wait4"].calls == 1


@needs_root
def test_cgroup_filter_ignores_decoys(marker):
    from ebpf_tutor.apps.systrace.cli import _cgroup_id
    from ebpf_tutor.apps.systrace.probes import TraceOptions, Tracer
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    with ScratchCgroup("systrace") as cg:
        assert _cgroup_id(str(cg.path)) == _cgroup_id(str(cg.id)) == cg.id
        with Tracer(TraceOptions(summary=True, cgroup_id=_cgroup_id(str(cg.path)))) as tr:
            cg.run(workload.argv(marker, 1, 1, 2))
            subprocess.run(workload.argv(marker, 1, 1, 4), check=True)   # the decoy, outside
            stats = tr.summary()
    assert stats["getppid"].calls == 6 and stats["wait4"].calls == 2


OPENS = """
import os, sys
d = sys.argv[1]
for f in (os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_NOFOLLOW,
          os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_APPEND,
          os.O_RDONLY | os.O_NOCTTY | os.O_SYNC | os.O_NOATIME | os.O_DIRECT | os.O_PATH,
          os.O_TMPFILE | os.O_RDWR):
    try:
        os.open(d + "/f" if f != os.O_TMPFILE | os.O_RDWR else d, f, 0o640)
    except OSError:
        pass
"""


@needs_root
def test_openat_lines_equal_strace(tmp_path):
    argv = ["/usr/bin/python3", "-c", OPENS, str(tmp_path)]
    st = tmp_path / "strace.txt"
    subprocess.run(["strace", "-q", "-e", "trace=openat", "-o", str(st), *argv], check=True)
    theirs = [line.split(" = ")[0] for line in st.read_text().splitlines() if str(tmp_path) in line]
    for f in tmp_path.glob("f"):
        f.unlink()
    out = systrace("--json", "-e", "openat", "--", *argv)
    ours = [f"openat({', '.join(r['args'])})" for r in map(json.loads, out.stdout.splitlines())
            if str(tmp_path) in " ".join(r["args"])]
    assert len(theirs) == 4 and ours == theirs


@needs_root
def test_ctrl_c_prints_the_summary_so_far(marker):
    import signal
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with interruptible([sys.executable, "-m", "ebpf_tutor", "systrace", "-c", "--json",
                            "-p", str(sleeper.pid)], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) as proc:
            assert "tracing" in proc.stderr.readline()      # attached
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert proc.returncode == 130
    assert json.loads(out)["summary"] == []           # sleep made no call meanwhile


@needs_root
def test_hash_fallback_counts_like_task_storage(marker):
    """The per-thread hash (kernels without task storage in tracing programs)
    gives the same counts as task storage."""
    from ebpf_tutor.apps.systrace.session import run_command
    from ebpf_tutor.apps.systrace.probes import TraceOptions
    argv = workload.argv(marker, 2, 2, 2)
    a = run_command(argv, TraceOptions(summary=True, task_storage=True)).stats
    b = run_command(argv, TraceOptions(summary=True, task_storage=False)).stats
    assert {k: (v.calls, v.errors) for k, v in a.items()} == \
        {k: (v.calls, v.errors) for k, v in b.items()}
    lines = []
    run_command(argv, TraceOptions(syscalls=["getppid"], task_storage=False), on_event=lines.append)
    assert len(lines) == 6


@needs_root
def test_csv_output(marker):
    import csv as csvmod
    out = systrace("--csv", "-e", "openat", "--", *workload.argv(marker, 1, 1, 0))
    rows = list(csvmod.DictReader(out.stdout.splitlines()))
    mine = [r for r in rows if str(marker) in r["args"]]
    assert [r["error"] for r in mine] == ["", "ENOENT"]
    assert mine[0]["args"] == f'AT_FDCWD, "{marker}", O_RDONLY|O_CLOEXEC'
    out = systrace("-c", "--csv", "--", *workload.argv(marker, 1, 1, 2))
    table = {r["syscall"]: r for r in csvmod.DictReader(out.stdout.splitlines())}
    assert table["getppid"]["calls"] == "6" and table["wait4"]["errors"] == "0"
