"""ebpf_tutor.bpfsys.pin: a pinned map outlives its program, reads back exactly,
and is freed when unpinned or when sweep finds its owner dead."""
from __future__ import annotations

import ctypes as ct
import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_root

pytestmark = needs_root

COUNTER = r"""
BPF_HASH(calls, u32, u64);
BPF_PERCPU_ARRAY(per_cpu, u64, 2);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((u32)bpf_get_current_pid_tgid() != ME) return 0;
    u32 key = 7;
    calls.increment(key);
    per_cpu.increment(1);
    return 0;
}
"""


@pytest.fixture
def counter():
    from ebpf_tutor import Program
    prog = Program(COUNTER, cflags=[f"-DME={threading.get_native_id()}"])
    try:
        yield prog
    finally:
        prog.close()


@pytest.fixture(autouse=True)
def no_pins_left():
    from ebpf_tutor import pin
    yield
    left = pin.our_pins()
    pin.unpin_all()
    assert not left, f"test left pins behind: {left}"


def test_pin_path_names_the_owner():
    from ebpf_tutor import pin
    from ebpf_tutor.sandbox.sweep import PIN_DIR, owner_pid
    a, b = pin.pin_path("x"), pin.pin_path("x")
    assert a != b
    assert a.parent == PIN_DIR and PIN_DIR.is_dir()
    assert owner_pid(a.name) == os.getpid()
    for bad in ("", "a/b"):
        with pytest.raises(ValueError):
            pin.pin_path(bad)


def test_pinned_map_outlives_its_program(counter):
    from ebpf_tutor import pin
    for _ in range(5):
        os.getppid()
    with pin.Pin(counter["calls"], "calls") as calls, pin.Pin(counter["per_cpu"], "cpu") as cpus:
        info = calls.info()
        assert (info.type, info.key_size, info.value_size) == ("hash", 4, 8)
        counter.close()
        assert pin.map_exists(info.id)
        assert calls.items() == [(7, 5)]
        df = calls.df()
        assert df.to_dict("records") == [{"key": 7, "value": 5}]
        assert pin.bpftool_dump(calls.path)[0]["formatted"] == {"key": 7, "value": 5}
        per_cpu = cpus.df().set_index("key")
        assert per_cpu.loc[1, "value"] == 5 and per_cpu.loc[0, "value"] == 0
        assert len([c for c in per_cpu.columns if c.startswith("cpu")]) == pin.possible_cpus()
    assert not calls.path.exists()
    assert pin.wait_map_gone(info.id)


def test_read_raw_and_typed_through_a_new_fd(counter):
    from ebpf_tutor import pin
    os.getppid()
    path = pin.pin_map(counter["calls"], "raw")
    try:
        fd = pin.open_pinned(path)
        try:
            assert pin.map_items(fd) == [((7).to_bytes(4, "little"), (1).to_bytes(8, "little"))]
            assert pin.map_items(fd, ct.c_uint32, ct.c_uint64) == [(7, 1)]
            assert pin.map_info(fd).id == pin.map_info(counter["calls"].map_fd).id
        finally:
            os.close(fd)
    finally:
        assert pin.unpin(path)
    assert not pin.unpin(path)            # a second unpin is a no-op


def test_bcc_table_pinned_reuses_the_map(counter):
    from ebpf_tutor import Program, pin
    os.getppid()
    with pin.Pin(counter["calls"], "shared") as shared:
        counter.close()
        reuse = COUNTER.replace("BPF_HASH(calls, u32, u64);",
                                f'BPF_TABLE_PINNED("hash", u32, u64, calls, 10240, "{shared.path}");')
        with Program(reuse, cflags=[f"-DME={threading.get_native_id()}"]) as again:
            os.getppid()
            assert again["calls"][ct.c_uint32(7)].value == 2
        assert shared.items() == [(7, 2)]


def test_one_libbpf_for_pins_and_cgroups():
    from ebpf_tutor import pin
    from ebpf_tutor.sandbox import cgroup
    assert pin.libbpf() is cgroup.libbpf()


def test_open_missing_pin_raises():
    from ebpf_tutor import pin
    with pytest.raises(pin.PinError) as e:
        pin.open_pinned(pin.PIN_DIR / f"{os.getpid()}-999-missing")
    assert e.value.errno == errno.ENOENT


def test_sweep_removes_the_pins_of_a_dead_run():
    """A process pins a map and dies without unpinning: the map survives it,
    until sweep sees that its owner is gone."""
    from ebpf_tutor import pin
    from ebpf_tutor.sandbox.sweep import sweep
    child = subprocess.run([sys.executable, "-c", (
        "import os\n"
        "from ebpf_tutor import Program, pin\n"
        "p = Program('BPF_ARRAY(kept, u64, 4);')\n"
        "path = pin.pin_map(p['kept'], 'orphan')\n"
        "print(path, pin.map_info(p['kept'].map_fd).id, flush=True)\n"
        "os._exit(0)\n")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert child.returncode == 0, child.stderr
    path_text, map_id = child.stdout.split()
    path = Path(path_text)
    assert path.exists() and pin.map_exists(int(map_id))
    removed = sweep()
    assert f"pin {path}" in removed
    assert not path.exists()
    assert pin.wait_map_gone(int(map_id))


def test_unpin_all_removes_only_ours(counter):
    from ebpf_tutor import pin
    a, b = pin.pin_map(counter["calls"], "a"), pin.pin_map(counter["per_cpu"], "b")
    assert set(pin.our_pins()) >= {a, b}
    assert set(pin.unpin_all()) >= {a, b}
    assert not a.exists() and not b.exists()
