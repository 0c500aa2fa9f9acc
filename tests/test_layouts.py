"""The full layout audit, the repair from BTF and the poisoning of structs
that cannot be repaired, on a copy of this machine's prepared tree."""
import ctypes
import os
import shutil
from pathlib import Path

import pytest

from ebpf_tutor import headers
from ebpf_tutor.kernel import layouts, repair
from ebpf_tutor.kernel.btf import kernel_btf

pytestmark = pytest.mark.skipif(not headers.VMLINUX.exists(), reason="kernel has no BTF")


@pytest.fixture(scope="module")
def verified():
    try:
        return headers.ensure(log=lambda *_: None, prepare=False)
    except headers.HeadersError as e:
        pytest.skip(f"no verified headers on this machine: {e}")


def copy_tree(tree: Path, dst: Path) -> Path:
    """A copy of `tree` whose include/ is real files (edits stay in the copy)
    and whose other parts are symlinks."""
    dst.mkdir()
    for p in tree.iterdir():
        if p.name == "include":
            shutil.copytree(p, dst / "include", symlinks=True)
        else:
            (dst / p.name).symlink_to(p)
    return dst


def shift(tree: Path, record: str, header: str) -> None:
    """Insert an 8-byte member at the top of `record`'s definition."""
    path = tree / "include" / header
    text = path.read_text()
    head = f"\n{record} {{\n"
    assert head in text, f"{record} is not defined in {header}"
    path.write_text(text.replace(head, f"{head}\tunsigned long ebt_shift;\n", 1))


def test_audit_covers_every_struct_of_the_header_set(verified):
    a = layouts.audit(headers.compile_flags(Path(verified.path)), kernel_btf())
    assert a.records > 1000 and a.members > 8000, a.summary()
    assert {m.record for m in a.mismatches} <= set(verified.poisoned), a.summary()


def test_a_shifted_struct_outside_any_list_is_caught_and_repaired(verified, tmp_path):
    """sched_entity is in no fixed list; shifting it also shifts task_struct,
    which embeds it by value. The audit names both; the repair makes them exact."""
    tree = copy_tree(Path(verified.path), tmp_path / "tree")
    shift(tree, "struct sched_entity", "linux/sched.h")
    flags = headers.compile_flags(tree)
    before = layouts.audit(flags, kernel_btf(), only={"struct sched_entity", "struct task_struct"})
    assert {"struct sched_entity", "struct task_struct"} <= set(before.wrong_records)
    assert any(m.member == "vruntime" for m in before.mismatches)
    result = repair.repair(flags, before.wrong_records, log=lambda *_: None)
    assert {"struct sched_entity", "struct task_struct"} <= set(result.repaired)
    after = layouts.audit(flags, kernel_btf(), only={"struct sched_entity", "struct task_struct"})
    assert not after.mismatches, after.summary()
    assert "rewritten by ebpf-tutor" in (tree / "include/linux/sched.h").read_text()


def test_bcc_reads_repaired_structs_at_btf_offsets(verified):
    """The audit compiles for the host; BCC compiles for the BPF target, which
    once laid out bpftool's unnamed padding wider (mm_struct.arg_start 16 bytes
    late). Offsets computed at run time inside a BPF program must equal BTF's."""
    from ebpf_tutor import Program
    probes = [("mm_struct", "arg_start"), ("mm_struct", "mmap_lock"), ("task_struct", "se"),
              ("sched_entity", "vruntime"), ("inet_sock", "inet_saddr"), ("tcp_sock", "srtt_us"),
              ("net_device", "ifindex"), ("inode", "i_ino")]
    lines = "".join(f"k = {i}; d = (u64)&((struct {s} *)p)->{m} - (u64)p; out.update(&k, &d);\n"
                    for i, (s, m) in enumerate(probes))
    src = ("#include <linux/sched.h>\n#include <linux/mm_types.h>\n#include <net/inet_sock.h>\n"
           "#include <linux/tcp.h>\n#include <linux/netdevice.h>\n#include <linux/fs.h>\n"
           "BPF_ARRAY(out, u64, 16);\nTRACEPOINT_PROBE(syscalls, sys_enter_getppid) {\n"
           f"if ((bpf_get_current_pid_tgid() >> 32) != {os.getpid()}) return 0;\n"
           "void *p = (void *)bpf_get_current_task(); int k; u64 d;\n" + lines + "return 0;\n}\n")
    btf = kernel_btf()
    with Program(text=src) as prog:
        os.getppid()
        got = {p: prog["out"][ctypes.c_int(i)].value for i, p in enumerate(probes)}
    assert got == {(s, m): btf.member_offset(s, m) for s, m in probes}


def test_a_poisoned_struct_gives_a_named_compile_error(verified, tmp_path, monkeypatch):
    """A struct that cannot be repaired keeps its definition, but reading any
    member fails to compile, naming the struct; the header set still compiles."""
    tree = copy_tree(Path(verified.path), tmp_path / "tree")
    flags = headers.compile_flags(tree)
    result = repair.repair(flags, ["struct sched_entity"], log=lambda *_: None,
                           poison={"struct sched_entity"})
    assert result.poisoned == ["struct sched_entity"]
    _, err = layouts.compile_probe(flags, [], emit=False)
    assert " error: " not in err, err[:500]
    from ebpf_tutor import Program
    from ebpf_tutor import errors, program
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tree))
    monkeypatch.setattr(program, "use_verified_headers", lambda: None)
    src = ("#include <linux/sched.h>\nint f(void *ctx) {\n"
           "    struct task_struct *t = (struct task_struct *)bpf_get_current_task();\n"
           "    return t->se.vruntime;\n}\n")
    with pytest.raises(errors.CompileError) as e:
        Program(text=src)
    text = str(e.value)
    assert "struct sched_entity" in text and "BTF" in text and "line 4" in text, text


def test_status_is_cached_by_btf_identity(verified):
    st = headers._read_status(Path(verified.path))
    assert st is not None and st.btf_id == headers.btf_identity() and st.recipe == headers.RECIPE
    assert st.members == verified.members > 0


def test_a_header_that_does_not_compile_is_left_out_not_fatal(verified, tmp_path, monkeypatch):
    """On a kernel where one header of the set does not compile, the audit
    covers the others and names the one it left out."""
    # a part of the set (one compile per header once one fails: 27 s for all)
    monkeypatch.setattr(layouts, "HEADER_SET", ["linux/sched.h", "net/tcp_states.h", "linux/tcp.h",
                                                "linux/fs.h", "net/tcp.h"])
    tree = copy_tree(Path(verified.path), tmp_path / "tree")
    broken = tree / "include/net/tcp_states.h"
    broken.write_text(broken.read_text() + "\n#error ebpf-tutor test: this header is broken\n")
    flags = headers.compile_flags(tree)
    good, bad = layouts.usable_headers(flags)
    # it, and the headers that include it (linux/tcp.h, net/sock.h...), are left out
    assert "net/tcp_states.h" in bad and {"linux/tcp.h", "net/tcp.h"} <= set(bad)
    assert {"linux/sched.h", "linux/fs.h"} <= set(good)
    a = layouts.audit(flags, kernel_btf(), only={"struct task_struct", "struct file"})
    assert a.skipped_headers == bad and a.records == 2 and not a.mismatches
