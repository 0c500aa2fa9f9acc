"""CO-RE for real: notebooks/ch10/procinfo.bpf.o was compiled once, against
kernel 6.18's vmlinux.h, and is loaded unchanged on the running kernel. On
every kernel (the host, and the course VM's 6.1 and 6.12: scripts/ci-vm.sh
selects these tests with -k core_vm) the offsets libbpf patched in must be
this kernel's own, from its BTF, and the values read must equal /proc's."""
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, needs_root

OBJECT = ROOT / "notebooks/ch10/procinfo.bpf.o"
BUILT_ON = {"tgid": 1268, "pid": 1264, "real_parent": 1280, "comm": 1752}   # 6.18's offsets
sys.path.insert(0, str(OBJECT.parent))
import core_demo  # noqa: E402


@needs_root
def test_core_vm_same_object_reads_right_values_here():
    got = core_demo.read_with_core(OBJECT)
    assert got["seen_pid"] == os.getpid()
    assert got["seen_ppid"] == os.getppid()
    assert got["seen_comm"] == Path("/proc/self/comm").read_text().strip()


@needs_root
def test_core_vm_offsets_are_this_kernels():
    from ebpf_tutor.kernel.btf import kernel_btf
    offsets = core_demo.read_with_core(OBJECT)["offsets"]
    assert set(offsets) == set(BUILT_ON)
    for field, (built, here) in offsets.items():
        assert built == BUILT_ON[field]
        assert here == kernel_btf().member_offset("task_struct", field), field
    print("offsets here:", {f: here for f, (_b, here) in sorted(offsets.items())})


@needs_root
def test_core_vm_bpftool_shows_the_same_patches():
    from ebpf_tutor.kernel.btf import kernel_btf
    lines = core_demo.bpftool_relocations(OBJECT)
    assert len(lines) == len(BUILT_ON), lines
    want = {f"imm {BUILT_ON[f]} -> {kernel_btf().member_offset('task_struct', f)}" for f in BUILT_ON}
    assert {ln.split(") ", 1)[1] for ln in lines} == want


def test_core_vm_object_matches_its_source():
    """The stored object still has the one program and globals the source declares."""
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(OBJECT)], capture_output=True,
                         text=True, check=True).stdout
    for name in ("on_getppid", "target_tgid", "seen_ppid", "seen_comm"):
        assert f"'{name}'" in out
