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
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


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


class Child:
    """A fresh process whose pid is known before it does anything: it runs
    `work()` only when `go()` is called, and `go()` returns once it is done.
    A program can be loaded with that pid in its text, then the child let go.

        child = Child(work)
        prog = Program(SOURCE.replace("PID", str(child.pid)))
        child.go()
    """

    def __init__(self, work: Callable[[], None]):
        go_r, self._go_w = os.pipe()
        self._back_r, back_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child
            try:
                os.close(self._go_w)             # so that a dead parent means EOF here
                os.close(self._back_r)
                os.write(back_w, b"r")           # ready: nothing more happens before go
                if os.read(go_r, 1) == b"x":
                    os.write(back_w, self._run(work))
            finally:
                os._exit(0)
        os.close(go_r)
        os.close(back_w)
        self._reaped = False
        os.read(self._back_r, 1)                 # wait until the child is ready

    def _run(self, work: Callable[[], None]) -> bytes:
        """In the child: do the work; what it returns is sent back to go()."""
        work()
        return b""

    def go(self) -> bytes:
        """Let the child work; returns what it sent back, once it has exited."""
        os.write(self._go_w, b"x")
        report = os.read(self._back_r, 32)       # its report, or EOF when it exits
        self.close()
        return report

    def close(self) -> None:
        if self._reaped:
            return
        self._reaped = True
        os.close(self._go_w)                     # a child still waiting reads EOF and exits
        os.waitpid(self.pid, 0)
        os.close(self._back_r)

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GatedChild(Child):
    """A Child that runs `work` in two threads at once and reports the second
    thread's id. Whatever the fork itself costs in system calls (at-fork
    handlers of the libraries loaded here) happens before `go()`, so a check
    can snapshot its counters first and judge only the difference.

        with GatedChild(work) as child:
            before = snapshot(child.pid)
            tid = child.go()                  # the second thread's id
            after = snapshot(child.pid)
    """

    tid = 0

    def _run(self, work: Callable[[], None]) -> bytes:
        tids: list[int] = []
        th = threading.Thread(target=lambda: (tids.append(threading.get_native_id()), work()))
        th.start()
        work()
        th.join()
        return str(tids[0]).encode()

    def go(self) -> int:
        """Let the child work; returns the id of its second thread once it is done."""
        self.tid = int(super().go() or 0)
        return self.tid
