"""Header trees are used only when their layouts equal BTF's."""
import os
import re
import shutil
from pathlib import Path

import pytest

from ebpf_tutor import headers

pytestmark = pytest.mark.skipif(not headers.VMLINUX.exists(), reason="kernel has no BTF")


@pytest.fixture(scope="module")
def verified():
    try:
        return headers.ensure(log=lambda *_: None, prepare=False)
    except headers.HeadersError as e:
        pytest.skip(f"no prepared headers on this machine: {e}")


def test_verified_tree_matches_btf(verified):
    st = headers.verify(Path(verified.path), verified.origin)
    assert st.verified, st.summary()
    assert len(st.checks) >= 15
    fields = {c.field for c in st.checks}
    assert {"task_struct.real_parent", "sk_buff.len", "sock_common.skc_dport", "file.f_path"} <= fields


def _shifted_tree(src: Path, dst: Path) -> str:
    """A copy of a tree (symlinks) whose autoconf.h drops an option that
    changes task_struct's layout, as `make olddefconfig` alone once did."""
    dst.mkdir()
    for p in src.iterdir():
        if p.name != "include":
            (dst / p.name).symlink_to(p)
    (dst / "include").mkdir()
    for p in (src / "include").iterdir():
        if p.name != "generated":
            (dst / "include" / p.name).symlink_to(p)
    gen = dst / "include" / "generated"
    shutil.copytree(src / "include" / "generated", gen, symlinks=True)
    conf = (gen / "autoconf.h").read_text()
    # each of these adds a member to task_struct before pid (8 bytes for the first)
    for option in ("CONFIG_PREEMPT_NOTIFIERS", "CONFIG_SCHED_INFO", "CONFIG_TASKS_RCU"):
        if f"#define {option} 1\n" in conf:
            (gen / "autoconf.h").write_text(conf.replace(f"#define {option} 1\n", ""))
            return option
    pytest.skip("none of the layout-changing options is set in this kernel")


def test_wrong_layouts_are_reported(verified, tmp_path):
    bad = tmp_path / "tree"
    _shifted_tree(Path(verified.path), bad)
    st = headers.verify(bad, "test")
    assert not st.verified
    assert "task_struct.pid" in {c.field for c in st.mismatches}
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
