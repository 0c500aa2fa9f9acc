"""Remove what a killed run left behind: namespaces, cgroups and pins named
after a process that no longer exists. Runs at the start of every test run
and lab check; `ebpf-tutor sweep` runs it by hand."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

PIN_DIR = Path("/sys/fs/bpf/ebpf-tutor")


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def owner_pid(name: str) -> int | None:
    """The pid a resource name was made by: ebt-<pid>-<n>... or <pid>-<n>..."""
    m = re.match(r"(?:ebt-)?(\d+)-", name)
    return int(m.group(1)) if m else None


def sweep(everything: bool = False) -> list[str]:
    """Remove leftovers of dead ebpf_tutor processes (all of ours if
    `everything`). Returns what was removed."""
    removed: list[str] = []
    from . import cgroup, net
    for name in net.our_namespaces():
        pid = owner_pid(name)
        if everything or pid is None or not _pid_alive(pid):
            from pyroute2 import netns
            net.netlink(netns.remove, name)
            removed.append(f"netns {name}")
    try:
        base = cgroup.base_dir()
    except FileNotFoundError:
        base = None
    if base and base.is_dir():
        for d in [p for p in base.iterdir() if p.is_dir()]:
            pid = owner_pid(d.name)
            if everything or pid is None or not _pid_alive(pid):
                cgroup.remove(d)
                removed.append(f"cgroup {d}")
    if PIN_DIR.is_dir():
        for p in list(PIN_DIR.iterdir()):
            pid = owner_pid(p.name)
            if everything or pid is None or not _pid_alive(pid):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(f"pin {p}")
    return removed


if __name__ == "__main__":
    print("\n".join(sweep()) or "nothing to sweep")
    os._exit(0)
