"""The libbpf layer: BPFObject opens, loads, attaches every kind, reads and
writes globals and maps, polls a ring buffer, test-runs, pins, explains
failures, and always cleans up; vmlinux.h and the clang command."""
import ctypes as ct
import errno
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, bpf_prog_ids, held_prog_ids, needs_root

SOURCE = (ROOT / "tests/data/bpfobject_test.bpf.c").read_text()
MINIMAL = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
__u64 hits;
SEC("tp/syscalls/sys_enter_getppid")
int count(void *ctx) { __sync_fetch_and_add(&hits, 1); return 0; }
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def test_object(tmp_path_factory) -> Path:
    from ebpf_tutor.kernel.vmlinux import compile_bpf
    return compile_bpf(SOURCE, tmp_path_factory.mktemp("core") / "objtest.bpf.o", name="objtest")


def opened(path: Path, **rodata):
    from ebpf_tutor.bpfobject import BPFObject
    from ebpf_tutor.bpfsys import syscall_number
    values = {"target_tgid": os.getpid(), "getppid_nr": syscall_number("getppid"), **rodata}
    return BPFObject(path, name="objtest", source=SOURCE, rodata=values)


# ------------------------------------------------------------ compiling --
def test_vmlinux_h_is_cached_by_btf_hash():
    from ebpf_tutor.kernel import vmlinux
    h = vmlinux.vmlinux_h()
    assert h.parent.name == vmlinux.btf_hash()
    assert "struct task_struct {" in h.read_text()
    assert vmlinux.vmlinux_h() == h


def test_clang_command_is_the_documented_one(tmp_path):
    from ebpf_tutor.kernel.vmlinux import clang_command
    cmd = clang_command(tmp_path / "a.bpf.c", tmp_path / "a.bpf.o", tmp_path)
    assert cmd[:5] == ["clang", "-g", "-O2", "-target", "bpf"]
    assert f"-I{tmp_path}" in cmd and cmd[-2:] == ["-o", str(tmp_path / "a.bpf.o")]


def test_compile_error_points_at_the_line():
    from ebpf_tutor import CompileError
    from ebpf_tutor.kernel.vmlinux import compile_bpf
    bad = MINIMAL.replace("__sync_fetch_and_add(&hits, 1);", "hits += nope;")
    import tempfile
    before = set(Path(tempfile.gettempdir()).glob("ebpf-tutor-core-*"))
    with pytest.raises(CompileError) as e:
        compile_bpf(bad, name="bad")
    assert "nope" in e.value.summary and "line 6" in e.value.where
    left = set(Path(tempfile.gettempdir()).glob("ebpf-tutor-core-*")) - before
    assert not [d for d in left if (d / "bad.bpf.c").exists()]        # no work dir left behind


# ------------------------------------------------------ open, load, close --
@needs_root
def test_load_attach_count_and_close_releases_everything(test_object):
    with opened(test_object) as obj:
        mine = held_prog_ids()
        assert len(mine) == len(obj.programs) == 7
        obj.attach("on_tp")
        for _ in range(5):
            os.getppid()
        assert obj.get_global("tp_hits", ct.c_uint64) == 5
    assert obj.closed and not mine & bpf_prog_ids()
    obj.close()      # twice is harmless


@needs_root
def test_open_from_memory_and_load_later(test_object):
    from ebpf_tutor.bpfobject import BPFObject
    with BPFObject(test_object.read_bytes(), name="frommem", load=False) as obj:
        assert not obj.loaded and not obj.programs["on_tp"].fd >= 0
        obj.set_global("target_tgid", os.getpid())
        assert obj.get_global("target_tgid", ct.c_uint32) == os.getpid()
        obj.load()
        assert obj.loaded


@needs_root
def test_close_all_closes_objects(test_object):
    from ebpf_tutor.program import close_all
    obj = opened(test_object)
    mine = held_prog_ids()
    close_all()
    assert obj.closed and not mine & held_prog_ids()


@needs_root
def test_an_error_inside_with_still_closes(test_object):
    with pytest.raises(RuntimeError):
        with opened(test_object) as obj:
            mine = held_prog_ids()
            obj.attach("on_tp")
            raise RuntimeError("learner bug")
    assert not mine & bpf_prog_ids()


def test_open_of_a_non_object_says_so(tmp_path):
    from ebpf_tutor import BpfError
    from ebpf_tutor.bpfobject import BPFObject
    junk = tmp_path / "junk.o"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(BpfError, match="could not open"):
        BPFObject(junk)


# -------------------------------------------------------------- globals --
@needs_root
def test_rodata_is_frozen_after_load_and_bss_is_writable(test_object):
    from ebpf_tutor import BpfError
    with opened(test_object) as obj:
        assert obj.global_vars()["target_tgid"][0] == ".rodata"
        assert obj.global_vars()["tp_hits"][0] == ".bss"
        with pytest.raises(BpfError, match="frozen"):
            obj.set_global("target_tgid", 1)
        obj.set_global("tp_hits", 40)
        obj.attach("on_tp")
        os.getppid()
        assert obj.get_global("tp_hits", ct.c_uint64) == 41


# --------------------------------------------------------------- attach --
@needs_root
def test_tracepoint_tp_btf_and_raw_tp_see_the_same_calls(test_object):
    with opened(test_object) as obj:
        obj.attach_tracepoint("on_tp", "syscalls:sys_enter_getppid")
        obj.attach_tp_btf("on_tp_btf")
        obj.attach_raw_tracepoint("on_raw_tp", "sys_enter")
        for _ in range(3):
            os.getppid()
        hits = [obj.get_global(n, ct.c_uint64) for n in ("tp_hits", "tp_btf_hits", "raw_tp_hits")]
        assert hits == [3, 3, 3]


@needs_root
def test_uprobe_by_function_name(test_object):
    libc = next(p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6",
                            "/usr/lib64/libc.so.6") if Path(p).exists())
    with opened(test_object) as obj:
        obj.attach_uprobe("on_uprobe", libc, "getpid", pid=os.getpid())
        for _ in range(4):
            os.getpid()
        assert obj.get_global("uprobe_hits", ct.c_uint64) >= 4


@needs_root
def test_usdt_probe_of_python(test_object):
    python = "/usr/bin/python3.11"
    if not Path(python).exists():
        pytest.skip("needs Debian's python3.11 (it has USDT probes)")
    code = "def f(): pass\nfor _ in range(50): f()"
    with opened(test_object) as obj:
        obj.attach_usdt("on_usdt", python, "python", "function__return")
        subprocess.run([python, "-c", code], check=True)
        assert obj.get_global("usdt_hits", ct.c_uint64) >= 50


@needs_root
def test_cgroup_connect4_denies_inside_only(test_object):
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    probe = [sys.executable, "-c", f"import socket\ntry:\n socket.create_connection(('127.0.0.1', {port}))"
             "\n print('ok')\nexcept OSError as e: print(e.errno)"]
    try:
        with ScratchCgroup("bpfobj") as cg, opened(test_object, blocked_port=port) as obj:
            obj.attach_cgroup("on_connect4", cg.path)
            assert cg.run(probe).stdout.strip() == str(errno.EPERM)
            assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "ok"
            assert obj.get_global("connect_denied", ct.c_uint64) == 1
    finally:
        srv.close()


@needs_root
def test_auto_attach_of_a_section_without_target_is_explained(test_object):
    from ebpf_tutor import AttachError
    with opened(test_object) as obj:
        with pytest.raises(AttachError) as e:
            obj.attach("on_connect4")
        assert e.value.errno is not None


# ---------------------------------------------------- ring, maps, runs --
@needs_root
def test_ring_buffer_calls_back_per_record(test_object):
    got = []
    with opened(test_object) as obj:
        obj.attach("on_tp")
        with obj.ring_buffer("events", got.append):
            for _ in range(3):
                os.getppid()
            assert obj.poll(500) == 3
    assert got == [os.getpid().to_bytes(4, sys.byteorder)] * 3


@needs_root
def test_an_exception_in_the_callback_comes_out_of_poll(test_object):
    def boom(_data):
        raise ValueError("decoder bug")
    with opened(test_object) as obj:
        obj.attach("on_tp")
        obj.ring_buffer("events", boom)
        os.getppid()
        with pytest.raises(ValueError, match="decoder bug"):
            obj.poll(500)


@needs_root
def test_map_lookup_update_delete_iterate(test_object):
    with opened(test_object) as obj:
        table = obj.map("table")
        assert (table.key_size, table.value_size) == (4, 8)
        for k in range(3):
            table.update(k, k * 100)
        assert table.ints() == {0: 0, 1: 100, 2: 200}
        assert table.delete(1) and not table.delete(1)
        assert table.lookup(1) is None
        assert sorted(int.from_bytes(k, sys.byteorder) for k in table.keys()) == [0, 2]
        table.close()                  # the object owns the descriptor
        assert table.lookup(2) is not None


@needs_root
def test_test_run_of_xdp(test_object):
    with opened(test_object) as obj:
        packet = bytes(64)
        assert obj.test_run("on_xdp", packet).retval == 2              # XDP_PASS
        assert obj.test_run("on_xdp", b"\xff" + packet[1:]).retval == 1  # XDP_DROP
        assert obj.test_run("on_xdp", packet, repeat=100).duration_ns >= 0


@needs_root
def test_pins_are_removed_on_close_unless_kept(test_object):
    base = Path("/sys/fs/bpf") / f"ebt-{os.getpid()}-objtest"
    prog_pin, map_pin = Path(f"{base}-prog"), Path(f"{base}-map")
    try:
        with opened(test_object) as obj:
            obj.pin_program("on_xdp", prog_pin)
            obj.pin_map("table", map_pin, keep=True)
            assert prog_pin.exists() and map_pin.exists()
        assert not prog_pin.exists() and map_pin.exists()
    finally:
        for p in (prog_pin, map_pin):
            p.unlink(missing_ok=True)


# ------------------------------------------------------------- failures --
@needs_root
def test_verifier_rejection_is_explained_with_the_line():
    from ebpf_tutor import VerifierError
    from ebpf_tutor.bpfobject import BPFObject
    bad = MINIMAL.replace("__sync_fetch_and_add(&hits, 1); return 0;",
                          "__u64 *p = 0;\n    return *p;")
    before = held_prog_ids()
    with pytest.raises(VerifierError) as e:
        BPFObject.compile(bad, name="nullread")
    assert "line 7" in e.value.where and "return *p" in e.value.excerpt
    assert held_prog_ids() == before                # nothing half-open is left behind


@needs_root
def test_missing_field_relocation_is_explained():
    from ebpf_tutor import VerifierError
    from ebpf_tutor.bpfobject import BPFObject
    src = textwrap.dedent("""
        #include "vmlinux.h"
        #include <bpf/bpf_helpers.h>
        #include <bpf/bpf_core_read.h>
        struct task_struct___old { long state; } __attribute__((preserve_access_index));
        long state;
        SEC("tp/syscalls/sys_enter_getppid")
        int old(void *ctx) {
            struct task_struct___old *t = (void *)bpf_get_current_task();
            state = BPF_CORE_READ(t, state);
            return 0;
        }
        char LICENSE[] SEC("license") = "GPL";
    """)
    with pytest.raises(VerifierError) as e:
        BPFObject.compile(src, name="oldstate")
    assert "bpf_core_field_exists" in e.value.hint


@needs_root
def test_relocation_lines_name_the_kernel_offsets(test_object):
    from ebpf_tutor.kernel.btf import kernel_btf
    src = MINIMAL.replace('#include <bpf/bpf_helpers.h>',
                          '#include <bpf/bpf_helpers.h>\n#include <bpf/bpf_core_read.h>\n__u32 ppid;')
    src = src.replace("__sync_fetch_and_add(&hits, 1);",
                      "ppid = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), "
                      "real_parent, tgid);")
    from ebpf_tutor.bpfobject import BPFObject
    with BPFObject.compile(src, name="reloc") as obj:
        lines = "\n".join(obj.relocations())
        want = kernel_btf().member_offset("task_struct", "real_parent")
        assert f"struct task_struct.real_parent" in lines and f"offset {want})" in lines
        obj.attach("count")
        os.getppid()
        assert obj.get_global("ppid", ct.c_uint32) == os.getppid()


@needs_root
def test_relocation_lines_survive_a_bcc_load_in_between(test_object):
    """BCC sets libbpf's print callback whenever it loads a program: a capture
    after a BCC load must still hear libbpf (it heard nothing in a full run)."""
    from ebpf_tutor import Program
    with opened(test_object) as obj:
        assert obj.relocations()
    with Program("int f(void *ctx) { return 0; }") as p:
        p.load_func("f", 17)                      # BCC's load sets its own callback
    with opened(test_object) as obj:
        assert obj.relocations()


@needs_root
def test_a_verifier_log_longer_than_any_fixed_buffer_is_kept_whole():
    """libbpf prints a failed load's whole verifier log as one message: here
    about 30 KB, and the error at its end is the one explained."""
    from ebpf_tutor import VerifierError
    from ebpf_tutor.bpfobject import BPFObject
    branches = "\n".join(f"    if (bpf_get_prandom_u32() & 1) x += {i}; else x ^= {i};"
                         for i in range(60))
    bad = MINIMAL.replace("__sync_fetch_and_add(&hits, 1); return 0;",
                          f"__u64 x = 0;\n{branches}\n    return *(int *)x;")
    with pytest.raises(VerifierError) as e:
        BPFObject.compile(bad, name="longlog")
    assert "invalid mem access" in e.value.summary
    assert "return *(int *)x" in e.value.excerpt
