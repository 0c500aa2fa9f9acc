"""Small containers made of namespaces and a scratch cgroup.

    with Container("web") as c:
        c.cgroup_id, c.pidns        # how a monitor tells it apart
        r = c.run(["cat", "/etc/hostname"])   # runs inside: r.rc, r.out

`unshare` gives the container new pid, mount, uts and network namespaces
and a fresh /proc; its first process (`container_init.py`) mounts a tmpfs
copy of /etc over /etc, brings loopback up and only then is moved into a
`ScratchCgroup`: the setup's own mount() calls happen before the container
exists as far as a monitor is concerned. Every command then runs as a child
of that first process, so it is in every namespace and in the cgroup from
its first instruction. The root filesystem is the host's (no image): this
is enough to watch and to enforce, not a sandbox to run hostile code in.

On exit (end of the `with`, an error, Ctrl-C) the cgroup kills everything
inside it and is removed; unmounts go with the mount namespace.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .cgroup import ScratchCgroup

INIT = Path(__file__).with_name("container_init.py")


@dataclass
class Result:
    rc: int | None
    out: str
    err: str


def _child_pids(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        pids += [int(p) for p in text]
    return pids


class Container:
    """A container: pid/mount/uts/net namespaces + a scratch cgroup."""

    def __init__(self, name: str = "ctr"):
        self.name = name
        self.cgroup: ScratchCgroup | None = None
        self.proc: subprocess.Popen | None = None
        self.init_pid = 0            # pid 1 of the container, as the host sees it
        self._cgroup_id = 0

    def __enter__(self) -> "Container":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self.cgroup = ScratchCgroup(f"ctr-{self.name}").__enter__()
        argv = ["unshare", "--pid", "--mount", "--uts", "--net", "--fork", "--mount-proc",
                "--kill-child", sys.executable, "-I", str(INIT), self.name]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"container {self.name} did not start: {line!r} {err.strip()}")
        children = _child_pids(self.proc.pid)
        if len(children) != 1:
            raise RuntimeError(f"container {self.name}: expected one init process, got {children}")
        self.init_pid = children[0]
        (self.cgroup.path / "cgroup.procs").write_text(str(self.init_pid))
        self._cgroup_id = self.cgroup.id

    @property
    def cgroup_id(self) -> int:
        """Its cgroup's id (kept after the container is gone, to judge records)."""
        return self._cgroup_id

    @property
    def pidns(self) -> int:
        """The inode number of its pid namespace (what `ls -i /proc/PID/ns/pid` shows)."""
        return os.stat(f"/proc/{self.init_pid}/ns/pid").st_ino

    def run(self, argv: list[str], timeout: float = 30, input: str | None = None) -> Result:
        """Run a command inside and wait for it."""
        req = {"argv": argv, "timeout": timeout, "input": input}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"container {self.name} stopped")
        return Result(**json.loads(line))

    def sh(self, script: str, timeout: float = 30) -> Result:
        """Run a /bin/sh -c script inside (itself a shell exec: a monitor sees it)."""
        return self.run(["/bin/sh", "-c", script], timeout=timeout)

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self.cgroup is not None:
            self.cgroup.close()           # kills what is still inside
            self.cgroup = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()
            self.proc = None
