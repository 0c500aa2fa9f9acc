"""Sandboxes clean up after themselves, refuse foreign interfaces, and what a
killed run leaves is swept by the next start."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import leftovers, needs_root


@needs_root
def test_veth_pair_connects_two_private_namespaces():
    from ebpf_tutor.sandbox.net import VethPair, our_namespaces
    with VethPair() as lab:
        assert set(lab.ns.values()) <= set(our_namespaces())
        r = lab.run_in("a", ["ping", "-c", "2", "-i", "0.2", "-W", "2", lab.ip_b])
        assert r.returncode == 0, r.stdout + r.stderr
    assert not set(lab.ns.values()) & set(our_namespaces())


def test_guard_refuses_host_interfaces():
    from ebpf_tutor.sandbox.net import NotOurInterface, guard
    for ifname in ("lo", "eth0"):
        with pytest.raises(NotOurInterface, match="not created by an ebpf_tutor sandbox"):
            guard(None, ifname)
    guard(None, "lo", allow_foreign=True)   # the explicit override


@needs_root
def test_scratch_cgroup_runs_a_process_inside_and_is_removed():
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    with ScratchCgroup("t") as cg:
        r = cg.run(["cat", "/proc/self/cgroup"])
        assert cg.path.name in r.stdout
    assert not cg.path.exists()


@needs_root
def test_sweep_removes_what_a_killed_run_left():
    from ebpf_tutor.sandbox.sweep import sweep
    code = textwrap.dedent("""
        import time
        from ebpf_tutor.sandbox.net import VethPair
        from ebpf_tutor.sandbox.cgroup import ScratchCgroup
        VethPair().__enter__(); ScratchCgroup("killed").__enter__()
        print("ready", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    left = leftovers()
    assert any(n.startswith(f"ebt-{child.pid}-") for n in left["netns"])
    assert any(c.startswith(f"{child.pid}-") for c in left["cgroups"])
    child.send_signal(signal.SIGKILL)
    child.wait()
    removed = sweep()
    assert any(str(child.pid) in r for r in removed)
    left = leftovers()
    assert not any(str(child.pid) in n for n in left["netns"] + left["cgroups"])


@needs_root
def test_sweep_removes_the_loop_devices_of_a_killed_lab_6_3_check(tmp_path):
    """Check 6.3 freezes a file system on loop devices it creates; a check
    killed mid-way leaves them, named after its pid: sweep thaws and frees them."""
    from ebpf_tutor.labs.checks.ch06 import _scratch_dir
    from ebpf_tutor.sandbox.sweep import sweep
    folder = _scratch_dir()
    if folder is None or not shutil.which("fsfreeze"):
        pytest.skip("no folder on a block device, or no fsfreeze")
    code = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from ebpf_tutor.labs.checks import ch06
        def hang(*a, **k):          # B's read comes once A's write is held in flight
            print("ready", flush=True)
            time.sleep(60)
        os.preadv = hang
        ch06._same_sector_on_two_devices(Path({str(folder)!r}))
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    loops = subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"],
                           capture_output=True, text=True).stdout
    assert f"ebt-{child.pid}-bio2-" in loops
    child.send_signal(signal.SIGKILL)
    while "\nState:\tZ" not in Path(f"/proc/{child.pid}/status").read_text():
        time.sleep(0.01)          # its writer thread waits on the frozen file system
    removed = sweep()
    child.wait(10)
    assert any(f"ebt-{child.pid}-bio2-" in r for r in removed), removed
    loops = subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"],
                           capture_output=True, text=True).stdout
    assert f"ebt-{child.pid}-bio2-" not in loops
    assert not list(folder.glob(f"ebt-{child.pid}-bio2-*"))
