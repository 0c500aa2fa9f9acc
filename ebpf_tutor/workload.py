"""Known workloads for lab checks: things to count whose true count we know.

A check never trusts the machine to be quiet. It creates activity that only
it could have created (a program with a fresh random name, a marker file in a
fresh folder), then looks for exactly that in what the learner's program
recorded.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def unique_name(prefix: str = "ebt") -> str:
    """A name no other process on the machine is using: prefix + 6 hex digits.
    Fits in a 15-character comm when the prefix has at most 8."""
    return f"{prefix}{secrets.token_hex(3)}"


@dataclass
class Executables:
    """Copies of /bin/true under fresh names in a private folder, so that
    each exec of one is ours alone. Use as a context manager."""

    names: list[str]
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ebt-exec-")))

    def __post_init__(self):
        for n in self.names:
            shutil.copy("/bin/true", self.folder / n)

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def run(self, name: str, times: int = 1) -> list[int]:
        """exec the named program `times` times; returns the child pids."""
        pids = []
        for _ in range(times):
            p = subprocess.Popen([self.path(name)])
            pids.append(p.pid)
            p.wait()
        return pids

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Executables":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def marker_files(n: int, prefix: str = "ebt-marker") -> tuple[Path, list[Path]]:
    """A fresh folder with n empty files; returns (folder, files)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix + "-"))
    files = []
    for i in range(n):
        f = folder / f"{prefix}-{i}"
        f.touch()
        files.append(f)
    return folder, files


def loop_getppid(times: int) -> None:
    """Make exactly `times` getppid() system calls from this process."""
    for _ in range(times):
        os.getppid()
