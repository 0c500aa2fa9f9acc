"""Shared fixtures. The session sweeps leftovers first, and at the end fails
if the run left behind any BPF program, namespace or cgroup it created."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def held_prog_ids(pid: int | str = "self") -> set[int]:
    """Programs this process still holds a file descriptor of (fdinfo prog_id)."""
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            for line in info.read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def bpf_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    return {p["id"] for p in json.loads(out.stdout or "[]")}


def leftovers(everyone: bool = True) -> dict[str, list]:
    """Namespaces and cgroups named by ebpf_tutor. With everyone=False, only
    those of this process or of processes that have exited: what another
    run, still alive on the same machine, holds is not ours to count."""
    from ebpf_tutor import cgroup, net
    from ebpf_tutor.sandbox.sweep import owner_pid

    def ours(name: str) -> bool:
        pid = owner_pid(name)
        return everyone or pid is None or pid == os.getpid() or not Path(f"/proc/{pid}").exists()

    found: dict[str, list] = {"netns": [n for n in net.our_namespaces() if ours(n)], "cgroups": []}
    try:
        base = cgroup.base_dir()
        if base.is_dir():
            found["cgroups"] = [p.name for p in base.iterdir() if p.is_dir() and ours(p.name)]
    except FileNotFoundError:
        pass
    return found


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF programs")


@pytest.fixture(scope="session", autouse=True)
def clean_machine(tmp_path_factory):
    """Sweep what killed runs left; check at the end that we leave nothing."""
    os.environ["EBPF_TUTOR_PROGRESS"] = str(tmp_path_factory.mktemp("progress") / "progress.json")
    if os.geteuid() != 0:
        yield
        return
    from ebpf_tutor.sandbox.sweep import sweep
    sweep()
    before = bpf_prog_ids()
    yield
    from ebpf_tutor.program import close_all
    close_all()
    # On a machine of its own (CI), any program loaded since the start is ours.
    # Where other work loads programs at the same time, set
    # EBPF_TUTOR_SHARED_MACHINE=1: then only what this process holds counts.
    shared = os.environ.get("EBPF_TUTOR_SHARED_MACHINE")
    new_progs = held_prog_ids() if shared else bpf_prog_ids() - before
    left = leftovers(everyone=not shared)
    problems = []
    if new_progs:
        problems.append(f"BPF programs still loaded: ids {sorted(new_progs)}")
    for kind, items in left.items():
        if items:
            problems.append(f"{kind} left behind: {items}")
    if problems:
        pytest.fail("the test run leaked kernel objects:\n" + "\n".join(problems), pytrace=False)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def interruptible(argv: list[str], **popen_kw):
    """A child that a test stops with Ctrl-C (SIGINT), killed on the way out
    whatever happened, so a failed test leaves no CLI with programs attached.
    Its SIGINT is reset to the default: a shell that ran the tests in the
    background (`.ci/run &`, nohup) left it ignored, and Python keeps an
    inherited SIG_IGN instead of raising KeyboardInterrupt."""
    proc = subprocess.Popen(argv, preexec_fn=_sigint_default, **popen_kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
