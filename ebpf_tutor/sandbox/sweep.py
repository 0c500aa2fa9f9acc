"""Remove what a killed run left behind: namespaces, cgroups, pins and lab
6.3's loop devices named after a process that no longer exists. Runs at the start of every test run
and lab check; `ebpf-tutor sweep` runs it by hand."""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from ..bpfsys.pin import PIN_DIR


def _pid_alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a killed lab 6.3 check stays
    a zombie until the file system it froze is thawed)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


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
    removed += _sweep_loop_devices(everything)
    from . import prometheus
    removed += [f"prometheus {d}" for d in prometheus.sweep_dead()]
    if PIN_DIR.is_dir():
        for p in list(PIN_DIR.iterdir()):
            pid = owner_pid(p.name)
            if everything or pid is None or not _pid_alive(pid):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(f"pin {p}")
    return removed


def release_loop_stack(work: Path, inner: list[str], outer: list[str]) -> None:
    """Undo lab 6.3's scratch disks in `work`: thaw the file system mounted
    on `outer` at work/mnt, detach the `inner` loop devices whose files live
    on it, unmount, detach `outer`, remove `work`. The check does this when
    it ends, sweep when it was killed."""
    import subprocess
    mnt = work / "mnt"
    subprocess.run(["fsfreeze", "--unfreeze", str(mnt)], capture_output=True)
    # once thawed, a write held in flight finishes and lets go of the inner
    # devices; the mount is busy until then
    for _ in range(50):
        for node in inner:
            subprocess.run(["losetup", "--detach", node], capture_output=True)
        if not os.path.ismount(mnt) or subprocess.run(["umount", str(mnt)],
                                                      capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    for node in outer:
        subprocess.run(["losetup", "--detach", node], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


def _sweep_loop_devices(everything: bool) -> list[str]:
    """Loop devices, and the frozen scratch file system under them, that a
    killed lab 6.3 check left: their backing files live in ebt-<pid>-bio2-*."""
    removed: list[str] = []
    leftovers: dict[Path, list[str]] = {}
    for f in Path("/sys/block").glob("loop*/loop/backing_file"):
        backing = f.read_text().strip()
        m = re.search(r"(.*/ebt-(\d+)-bio2-[^/]+)/", backing)
        if m and (everything or not _pid_alive(int(m.group(2)))):
            leftovers.setdefault(Path(m.group(1)), []).append(f"/dev/{f.parent.parent.name}")
    for work, loops in leftovers.items():
        outer = [d for d in loops if Path(f"/sys/block/{Path(d).name}/loop/backing_file")
                 .read_text().strip() == str(work / "outer.img")]
        release_loop_stack(work, [d for d in loops if d not in outer], outer)
        removed.append(f"loop devices {' '.join(loops)} of {work}")
    return removed


if __name__ == "__main__":
    print("\n".join(sweep()) or "nothing to sweep")
    os._exit(0)
