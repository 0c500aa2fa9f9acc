"""ebpf_tutor: the helper package of the hands-on eBPF course.

This file is the one list of what a learner uses. Notebooks import from here:

    from ebpf_tutor import Program, table_df, net, xdp

Everything loads on first use, so `import ebpf_tutor` is fast and works on a
machine without BCC (the doctor then says how to get it).

The package, by concern, lowest layer first (each module is short and meant
to be read; a module imports only from its own layer or the ones above it
in this list, and tests/test_imports.py keeps it so):

- errors    compile / verifier / permission / transient errors, retry
- data      maps and events as pandas DataFrames, histogram plots
- kernel/   the machine under the course: BCC's import, kernel headers
            checked member by member against BTF, a BTF reader, architectures
- bpfsys/   the bpf() system call without BCC: maps, programs, test runs,
            tracepoint links, pinning, libbpf's library, a small assembler
- program   Program: BCC's BPF with readable errors and guaranteed cleanup
- bpfobject BPFObject: a CO-RE object loaded with libbpf, the same guarantees
- events/   a fast ring-buffer consumer with backpressure and health stats
- sandbox/  network namespaces and veth pairs, traffic with known counts,
            packets, XDP, TC, scratch cgroups, and the sweep that cleans up
- doctor    what this machine can do, each feature decided by trying it
- features  does this kernel have feature X? one-line notices and fallbacks
- overhead  what a BPF hook costs per system call
- contention, perfcases  chapter 12's workloads and measured cases
- commands  clang, ip, tc and bpftool run from a notebook as a learner types them
- labs/     lab checks: verdicts, the check of every lab, workloads, targets,
            the course map and the learner's progress
- testing/  pytest fixtures, builders and assertions, in-memory mock maps
- apps/     the course's complete applications (chapters 15-22; none yet)
- cli       the `ebpf-tutor` command; kernelspec: the "eBPF (root)" Jupyter kernel
"""
from __future__ import annotations

import importlib

from .doctor import doctor  # the function; binds over the submodule's name
from .errors import (AttachError, BpfError, BpfPermissionError, CompileError,
                     FeatureUnavailable, TransientError, VerifierError, retry)

__version__ = "0.1.0"

# name a learner uses -> the module that defines it (loaded on first use)
_NAMES = {
    "Program": "program", "close_all": "program", "BPFObject": "bpfobject",
    "table_df": "data", "log2_hist_df": "data", "log2_counts_df": "data",
    "plot_log2_hist": "data", "EventCollector": "data", "records_df": "data",
    "RingBufferConsumer": "events", "ConsumerGroup": "events",
    "MockMap": "testing.mock", "inject_failure": "testing.mock",
    "check": "labs",
}
# modules a notebook imports by their short name
_MODULES = {
    "net": "sandbox.net", "traffic": "sandbox.traffic", "packets": "sandbox.packets",
    "flows": "sandbox.flows", "xdp": "sandbox.xdp", "tc": "sandbox.tc",
    "cgroup": "sandbox.cgroup", "headers": "kernel.headers", "btf": "kernel.btf",
    "vmlinux": "kernel.vmlinux",
    "bpfsys": "bpfsys", "asm": "bpfsys.asm", "pin": "bpfsys.pin",
    "features": "features", "overhead": "overhead", "commands": "commands",
    "workload": "labs.workload",
}


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    if name in _MODULES:
        return importlib.import_module(f".{_MODULES[name]}", __name__)
    raise AttributeError(f"module 'ebpf_tutor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES, *_MODULES])


__all__ = [*_NAMES, *_MODULES, "doctor", "retry", "BpfError", "CompileError", "VerifierError",
           "BpfPermissionError", "TransientError", "AttachError", "FeatureUnavailable"]
