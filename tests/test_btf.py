import pytest

from ebpf_tutor.kernel.btf import VMLINUX, kernel_btf

pytestmark = pytest.mark.skipif(not VMLINUX.exists(), reason="kernel has no BTF")


def test_finds_task_struct_members():
    btf = kernel_btf()
    assert btf.member_offset("task_struct", "tgid") == btf.member_offset("task_struct", "pid") + 4
    assert btf.struct_size("task_struct") > btf.member_offset("task_struct", "comm")


def test_anonymous_members_are_searched():
    # skc_daddr sits inside anonymous unions of struct sock_common
    btf = kernel_btf()
    assert btf.member_offset("sock_common", "skc_rcv_saddr") == btf.member_offset("sock_common", "skc_daddr") + 4


def test_nested_path():
    btf = kernel_btf()
    assert btf.member_offset("file", "f_path.dentry") == \
        btf.member_offset("file", "f_path") + btf.member_offset("path", "dentry")


def test_unknown_names_raise():
    btf = kernel_btf()
    with pytest.raises(KeyError, match="not in this kernel's BTF"):
        btf.find("no_such_struct_ebt")
    with pytest.raises(KeyError, match="no member"):
        btf.member_offset("task_struct", "no_such_member")


def test_layout_rows_are_ordered():
    rows = kernel_btf().layout("sk_buff")
    offsets = [off for _, off, _ in rows]
    assert offsets == sorted(offsets)
    assert any(name == "len" for name, _, _ in rows)
