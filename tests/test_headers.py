"""Header trees are used only when their layouts equal BTF's."""
import re
from pathlib import Path

import pytest

from ebpf_tutor import headers
from tests.test_layouts import copy_tree, shift, verified  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not headers.VMLINUX.exists(), reason="kernel has no BTF")


def test_verified_tree_matches_btf(verified):
    st = headers.verify(Path(verified.path), verified.origin, poisoned=verified.poisoned)
    assert st.verified, st.summary()
    assert not st.wrong and st.members > 8000
    assert len(st.checks) >= 15
    fields = {c.field for c in st.checks}
    assert {"task_struct.real_parent", "sk_buff.len", "sock_common.skc_dport", "file.f_path"} <= fields


def test_wrong_layouts_are_reported(verified, tmp_path):
    """A member inserted at the top of task_struct shifts pid: the tree is refused."""
    bad = copy_tree(Path(verified.path), tmp_path / "tree")
    shift(bad, "struct task_struct", "linux/sched.h")
    st = headers.verify(bad, "test", poisoned=verified.poisoned)
    assert not st.verified
    assert "task_struct.pid" in {c.field for c in st.mismatches}
    assert "struct task_struct" in st.wrong_structs
    assert "WRONG layouts" in st.summary()


def test_autoconf_is_regenerated_verbatim(tmp_path):
    (tmp_path / "include/generated").mkdir(parents=True)
    headers._regenerate_autoconf(tmp_path, 'CONFIG_A=y\nCONFIG_B=m\nCONFIG_C="x"\n'
                                           "CONFIG_D=0x10\n# CONFIG_E is not set\n")
    text = (tmp_path / "include/generated/autoconf.h").read_text()
    assert "#define CONFIG_A 1" in text
    assert "#define CONFIG_B_MODULE 1" in text
    assert '#define CONFIG_C "x"' in text
    assert "#define CONFIG_D 0x10" in text
    assert "CONFIG_E" not in text


def test_mirror_uri_comes_from_apt_config():
    uri = headers._mirror_uri()
    assert re.match(r"https?://", uri)


def test_version_sort_prefers_newest():
    versions = ["6.18.5-1", "6.18.15-1", "6.18.9-1"]
    assert sorted(versions, key=headers._version_key, reverse=True)[0] == "6.18.15-1"


def test_generated_offsets_take_btf_values(tmp_path):
    """A generated header's offsetof() constants are set from BTF, whatever
    the tree computed (make prepare used the olddefconfig'd config)."""
    from ebpf_tutor.kernel.btf import kernel_btf
    h = tmp_path / "rq-offsets.h"
    h.write_text("#define RQ_nr_pinned 1 /* offsetof(struct rq, nr_pinned) */\n"
                 "#define TASK_threadsp 2 /* offsetof(struct task_struct, thread.sp) */\n"
                 "#define NR_PAGEFLAGS 24 /* __NR_PAGEFLAGS */\n")
    headers._offsets_from_btf(h)
    btf = kernel_btf()
    assert h.read_text().splitlines() == [
        f"#define RQ_nr_pinned {btf.member_offset('rq', 'nr_pinned')} /* offsetof(struct rq, nr_pinned) */",
        f"#define TASK_threadsp {btf.member_offset('task_struct', 'thread.sp')} "
        "/* offsetof(struct task_struct, thread.sp) */",
        "#define NR_PAGEFLAGS 24 /* __NR_PAGEFLAGS */"]


def test_nearest_series_when_the_running_one_has_no_source():
    listed = {"6.16.3-1", "6.16.7-1", "6.17.2-1", "7.0.1-1", "6.19.1-1"}
    assert headers._nearest_series(listed, (6, 18)) == ["6.17.2-1"]       # older on a tie
    assert headers._nearest_series(listed, (6, 16)) == ["6.16.7-1", "6.16.3-1"]
    assert headers._nearest_series(listed, (7, 2)) == ["7.0.1-1"]
    assert headers._nearest_series(set(), (6, 18)) == []
