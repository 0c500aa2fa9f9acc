"""Architecture detection and per-architecture syscall numbers."""
import os
import platform
import re
from pathlib import Path

import pytest

from ebpf_tutor.kernel import arch

UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
GENERIC = Path("/usr/include/asm-generic/unistd.h")


def header_numbers(path: Path) -> dict[str, int]:
    """__NR_name numbers as a C header defines them (plain numbers only)."""
    out = {}
    for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", path.read_text()):
        out.setdefault(m.group(1), int(m.group(2)))
    return out


REQUIRED = ["bpf", "perf_event_open", "getpid", "getppid", "openat", "read", "write", "close",
            "execve", "clone", "exit_group", "connect", "accept4", "sendto", "recvfrom"]


@pytest.mark.parametrize("name", list(arch.ARCHES))
def test_every_arch_has_every_required_syscall(name):
    a = arch.get(name)
    assert set(REQUIRED) <= set(a.syscalls)
    numbers = list(a.syscalls.values())
    assert len(numbers) == len(set(numbers)), "two syscalls share a number"


@pytest.mark.skipif(not UNISTD_64.exists(), reason="x86-64 kernel headers not installed")
def test_x86_64_matches_the_installed_header():
    want = header_numbers(UNISTD_64)
    for name, nr in arch.get("x86_64").syscalls.items():
        assert want[name] == nr, name


@pytest.mark.skipif(not GENERIC.exists(), reason="asm-generic headers not installed")
@pytest.mark.parametrize("name", ["arm64", "riscv64"])
def test_generic_table_arches_match_asm_generic(name):
    want = header_numbers(GENERIC)
    for sc, nr in arch.get(name).syscalls.items():
        assert want[sc] == nr, sc


def test_known_numbers():
    assert arch.syscall_nr("bpf", arch="x86_64") == 321
    assert arch.syscall_nr("bpf", arch="aarch64") == 280
    assert arch.syscall_nr("bpf", arch="s390x") == 351
    assert arch.syscall_nr("bpf", arch="ppc64le") == 361
    assert arch.syscall_nr("sys_openat", arch="riscv64") == 56
    assert arch.syscall_name(59, arch="amd64") == "execve"
    assert arch.syscall_name(221, arch="arm64") == "execve"


def test_aliases_and_errors():
    assert arch.normalize("AArch64") == "arm64"
    assert arch.normalize("amd64") == "x86_64"
    assert arch.normalize("ppc64el") == "ppc64le"
    with pytest.raises(arch.UnsupportedArch, match="mips"):
        arch.get("mips")
    with pytest.raises(KeyError, match="no number known"):
        arch.syscall_nr("frobnicate", arch="x86_64")
    with pytest.raises(KeyError):
        arch.syscall_name(99999, arch="x86_64")


def test_function_prefixes_and_kernel_names():
    assert arch.syscall_function("openat", arch="x86_64") == "__x64_sys_openat"
    assert arch.syscall_function("sys_openat", arch="arm64") == "__arm64_sys_openat"
    assert arch.syscall_prefix("s390x") == "__s390x_sys_"
    assert arch.syscall_prefix("riscv64") == "__riscv_sys_"
    assert arch.syscall_prefix("ppc64le") == "sys_"
    assert [arch.kernel_arch(a) for a in arch.ARCHES] == ["x86", "arm64", "s390", "powerpc", "riscv"]


def test_audit_arch_values():
    # AUDIT_ARCH_* from <linux/audit.h>: EM_* | 64-bit | little-endian
    assert arch.get("x86_64").audit_arch == 0xC000003E
    assert arch.get("arm64").audit_arch == 0xC00000B7
    assert arch.get("s390x").audit_arch == 0x80000016
    assert arch.get("ppc64le").audit_arch == 0xC0000015
    assert arch.get("riscv64").audit_arch == 0xC00000F3


def test_current_machine():
    if platform.machine().lower() not in arch.ALIASES:
        with pytest.raises(arch.UnsupportedArch):
            arch.current()
        return
    cur = arch.current()
    assert cur.name == arch.normalize(platform.machine())
    assert arch.syscall_nr("getpid") == cur.syscalls["getpid"]


def test_the_number_really_is_getpid_here():
    """Call the syscall by our number through libc's syscall(2): it must
    behave as getpid() (so the table for this machine is right)."""
    import ctypes
    if platform.machine().lower() not in arch.ALIASES:
        pytest.skip("unsupported architecture")
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(arch.syscall_nr("getpid")) == os.getpid()
    assert libc.syscall(arch.syscall_nr("getppid")) == os.getppid()


def test_table_is_sorted_and_read_only():
    t = arch.syscall_table("x86_64")
    assert list(t.values()) == sorted(t.values())
    with pytest.raises(TypeError):
        arch.get("x86_64").syscalls["bpf"] = 1


def test_possible_cpus(tmp_path, monkeypatch):
    assert arch.possible_cpus() >= (os.cpu_count() or 1) >= 1
    listing = tmp_path / "possible"
    monkeypatch.setattr(arch, "CPU_POSSIBLE", listing)
    for text, n in [("0\n", 1), ("0-3\n", 4), ("0,2-5,7\n", 6)]:
        listing.write_text(text)
        assert arch.possible_cpus() == n
    listing.write_text("garbage\n")
    assert arch.possible_cpus() == (os.cpu_count() or 1)
    listing.unlink()
    assert arch.possible_cpus() == (os.cpu_count() or 1)
