"""Scratch cgroups (v2): a fresh child cgroup to run a workload in and to
attach cgroup programs to, removed at the end.

    with ScratchCgroup() as cg:
        proc = cg.spawn(["sleep", "1"])     # runs inside the cgroup
        fd = cg.fd()                        # for BPF attach calls

Enforcement in this course only ever attaches to cgroups made here, under
`<cgroup2 mount>/ebpf-tutor/`, named `<pid>-<n>` for `sweep`.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import time
from pathlib import Path

_counter = itertools.count()


def cgroup2_root() -> Path:
    """Where cgroup v2 is mounted (unified hierarchy, or the hybrid's 'unified')."""
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, fstype, *_ = line.split()
        if fstype == "cgroup2":
            return Path(mnt)
    raise FileNotFoundError("cgroup v2 is not mounted: run "
                            "`mount -t cgroup2 none /sys/fs/cgroup/unified` (scripts/provision.sh does)")


def base_dir() -> Path:
    return cgroup2_root() / "ebpf-tutor"


class ScratchCgroup:
    def __init__(self, tag: str = ""):
        self.path = base_dir() / f"{os.getpid()}-{next(_counter)}{('-' + tag) if tag else ''}"
        self._fd: int | None = None

    def __enter__(self) -> "ScratchCgroup":
        self.path.mkdir(parents=True)
        return self

    def fd(self) -> int:
        """An O_RDONLY descriptor of the cgroup directory (what attach calls take)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        return self._fd

    @property
    def id(self) -> int:
        """The cgroup id, as bpf_get_current_cgroup_id() reports it (the inode number)."""
        return os.stat(self.path).st_ino

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start a process that is inside this cgroup from its first instruction."""
        procs = self.path / "cgroup.procs"
        return subprocess.Popen(argv, preexec_fn=lambda: procs.write_text(str(os.getpid())), **kw)

    def run(self, argv: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        p = self.spawn(argv, stdout=subprocess.PIPE if kw.pop("capture_output") else None,
                       stderr=subprocess.PIPE, **kw)
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        remove(self.path)

    def __exit__(self, *exc) -> None:
        self.close()


def remove(path: Path, timeout: float = 2.0) -> None:
    """Kill what still runs in a cgroup and remove it (with any children)."""
    if not path.exists():
        return
    for child in [p for p in path.iterdir() if p.is_dir()]:
        remove(child, timeout)
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
