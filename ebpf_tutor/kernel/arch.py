"""Which CPU architecture this is, and the numbers that differ between them.

A system call has a different number on each architecture: `bpf` is 321 on
x86_64 but 280 on arm64. A BPF program that filters on a syscall id, or a
tool that calls `syscall(2)` by number, must use the right table:

    >>> from ebpf_tutor import arch
    >>> arch.current().name                 # doctest: +SKIP
    'x86_64'
    >>> arch.syscall_nr("bpf", arch="arm64")
    280
    >>> arch.syscall_name(321, arch="x86_64")
    'bpf'
    >>> arch.syscall_function("openat", arch="arm64")
    '__arm64_sys_openat'

Numbers come from the kernel's own tables (kernel 6.18 source); each table
below names the file it was read from. Architectures that use the generic
table (arm64, riscv64) share one set of numbers.

`possible_cpus()` counts the CPUs this machine could ever bring online: a
per-CPU map holds one value for each of them.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

# x86_64: arch/x86/entry/syscalls/syscall_64.tbl ("common"/"64" rows),
# checked against /usr/include/x86_64-linux-gnu/asm/unistd_64.h.
_X86_64 = {
    "read": 0, "write": 1, "close": 3, "getpid": 39, "sendto": 44, "recvfrom": 45,
    "connect": 42, "clone": 56, "execve": 59, "getppid": 110, "exit_group": 231,
    "openat": 257, "accept4": 288, "perf_event_open": 298, "bpf": 321,
}

# arm64 and riscv64: include/uapi/asm-generic/unistd.h (scripts/syscall.tbl
# since 6.11), checked against /usr/include/asm-generic/unistd.h.
_GENERIC = {
    "openat": 56, "close": 57, "read": 63, "write": 64, "exit_group": 94,
    "getpid": 172, "getppid": 173, "connect": 203, "sendto": 206, "recvfrom": 207,
    "clone": 220, "execve": 221, "perf_event_open": 241, "accept4": 242, "bpf": 280,
}

# s390x: arch/s390/kernel/syscalls/syscall.tbl ("common"/"64" rows).
_S390X = {
    "read": 3, "write": 4, "close": 6, "execve": 11, "getpid": 20, "getppid": 64,
    "clone": 120, "exit_group": 248, "openat": 288, "perf_event_open": 331,
    "bpf": 351, "connect": 362, "accept4": 364, "sendto": 369, "recvfrom": 371,
}

# ppc64le: arch/powerpc/kernel/syscalls/syscall.tbl ("common"/"64"/"nospu" rows).
_PPC64 = {
    "read": 3, "write": 4, "close": 6, "execve": 11, "getpid": 20, "getppid": 64,
    "clone": 120, "exit_group": 234, "openat": 286, "perf_event_open": 319,
    "connect": 328, "sendto": 335, "recvfrom": 337, "accept4": 344, "bpf": 361,
}


@dataclass(frozen=True)
class Arch:
    """Constants of one architecture."""

    name: str            # our canonical name: x86_64, arm64, s390x, ppc64le, riscv64
    human: str           # a name for people
    kernel: str          # the kernel's arch/ directory (and ARCH= for make)
    syscall_prefix: str  # prefix of syscall entry functions, e.g. __x64_sys_
    audit_arch: int      # AUDIT_ARCH_* (what seccomp filters compare against)
    syscalls: Mapping[str, int] = field(repr=False)
    table: str = field(default="", repr=False)  # where the numbers come from

    def syscall_nr(self, name: str) -> int:
        """The number of syscall `name` ("bpf" or "sys_bpf" both work)."""
        key = name[4:] if name.startswith("sys_") else name
        try:
            return self.syscalls[key]
        except KeyError:
            raise KeyError(f"no number known for syscall {name!r} on {self.name}; known: "
                           f"{', '.join(sorted(self.syscalls))}") from None

    def syscall_name(self, nr: int) -> str:
        """The name of syscall number `nr`."""
        for name, n in self.syscalls.items():
            if n == nr:
                return name
        raise KeyError(f"syscall number {nr} is not in the table of {self.name}")

    def syscall_function(self, name: str) -> str:
        """The kernel function that implements a syscall, e.g. __x64_sys_openat
        (what a kprobe or fentry program attaches to)."""
        return self.syscall_prefix + (name[4:] if name.startswith("sys_") else name)


_EM_X86_64, _EM_AARCH64, _EM_S390, _EM_PPC64, _EM_RISCV = 62, 183, 22, 21, 243
_AUDIT_64BIT, _AUDIT_LE = 0x80000000, 0x40000000

ARCHES: Mapping[str, Arch] = MappingProxyType({
    "x86_64": Arch("x86_64", "x86-64 (AMD64)", "x86", "__x64_sys_",
                   _EM_X86_64 | _AUDIT_64BIT | _AUDIT_LE, MappingProxyType(_X86_64),
                   "arch/x86/entry/syscalls/syscall_64.tbl"),
    "arm64": Arch("arm64", "ARM64 (AArch64)", "arm64", "__arm64_sys_",
                  _EM_AARCH64 | _AUDIT_64BIT | _AUDIT_LE, MappingProxyType(_GENERIC),
                  "include/uapi/asm-generic/unistd.h"),
    "s390x": Arch("s390x", "IBM Z (s390x)", "s390", "__s390x_sys_",
                  _EM_S390 | _AUDIT_64BIT, MappingProxyType(_S390X),
                  "arch/s390/kernel/syscalls/syscall.tbl"),
    # powerpc's wrappers keep the plain sys_ name (they take a pt_regs pointer).
    "ppc64le": Arch("ppc64le", "POWER (ppc64le)", "powerpc", "sys_",
                    _EM_PPC64 | _AUDIT_64BIT | _AUDIT_LE, MappingProxyType(_PPC64),
                    "arch/powerpc/kernel/syscalls/syscall.tbl"),
    "riscv64": Arch("riscv64", "RISC-V 64-bit", "riscv", "__riscv_sys_",
                    _EM_RISCV | _AUDIT_64BIT | _AUDIT_LE, MappingProxyType(_GENERIC),
                    "include/uapi/asm-generic/unistd.h"),
})

# Other spellings of the same architectures (uname -m, Debian, Go, LLVM...).
ALIASES: Mapping[str, str] = MappingProxyType({
    "x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "x86-64": "x86_64",
    "arm64": "arm64", "aarch64": "arm64", "armv8": "arm64",
    "s390x": "s390x", "s390": "s390x",
    "ppc64le": "ppc64le", "ppc64el": "ppc64le", "powerpc64le": "ppc64le",
    "riscv64": "riscv64", "riscv": "riscv64",
})


class UnsupportedArch(ValueError):
    """An architecture this package has no table for."""


def normalize(name: str) -> str:
    """The canonical name of an architecture, from any of its spellings."""
    key = name.strip().lower()
    if key not in ALIASES:
        raise UnsupportedArch(f"unsupported architecture {name!r}; supported: "
                              f"{', '.join(ARCHES)} (aliases: {', '.join(sorted(ALIASES))})")
    return ALIASES[key]


def get(name: str | None = None) -> Arch:
    """The Arch named `name` (any alias), or this machine's when None."""
    return ARCHES[normalize(name if name is not None else platform.machine())]


def current() -> Arch:
    """This machine's architecture (from platform.machine(), i.e. uname -m)."""
    return get(None)


def syscall_nr(name: str, arch: str | None = None) -> int:
    """Number of syscall `name` on `arch` (default: this machine)."""
    return get(arch).syscall_nr(name)


def syscall_name(nr: int, arch: str | None = None) -> str:
    """Name of syscall number `nr` on `arch` (default: this machine)."""
    return get(arch).syscall_name(nr)


def syscall_prefix(arch: str | None = None) -> str:
    """Prefix of the kernel's syscall entry functions, e.g. '__x64_sys_'."""
    return get(arch).syscall_prefix


def syscall_function(name: str, arch: str | None = None) -> str:
    """Kernel function name of a syscall, e.g. '__arm64_sys_openat'."""
    return get(arch).syscall_function(name)


def kernel_arch(arch: str | None = None) -> str:
    """The kernel's name for the architecture (x86, arm64, s390, powerpc, riscv)."""
    return get(arch).kernel


def syscall_table(arch: str | None = None) -> "dict[str, int]":
    """All known syscall numbers of `arch`, as a plain dict sorted by number."""
    return dict(sorted(get(arch).syscalls.items(), key=lambda kv: kv[1]))


CPU_POSSIBLE = Path("/sys/devices/system/cpu/possible")


def possible_cpus() -> int:
    """How many CPUs are possible here (/sys/devices/system/cpu/possible,
    e.g. "0-3" or "0,2-5"); os.cpu_count() if that cannot be read."""
    try:
        n = 0
        for part in CPU_POSSIBLE.read_text().strip().split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
        return n
    except (OSError, ValueError):
        return os.cpu_count() or 1


__all__ = ["Arch", "ARCHES", "ALIASES", "UnsupportedArch", "normalize", "get", "current",
           "syscall_nr", "syscall_name", "syscall_prefix", "syscall_function", "kernel_arch",
           "syscall_table", "possible_cpus"]
