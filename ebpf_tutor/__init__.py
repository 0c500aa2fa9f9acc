"""ebpf_tutor: the helper package of the hands-on eBPF course.

Small modules, one concern each, all meant to be read:

- headers  kernel headers for BCC, prepared if needed, checked against BTF
- layouts  every struct of the header set compared with BTF, member by member
- repair   structs that differ from BTF rewritten from it, or made unusable
- btf      a small reader of the kernel's BTF type information
- program  Program: BCC's BPF with readable errors and guaranteed cleanup
- errors   compile / verifier / permission / transient errors, retry
- data     maps and events as pandas DataFrames, histogram plots
- doctor   what this machine can do, each feature decided by trying it
- features does this kernel have feature X? decided once, by trying; one-line notices
- labs     lab checks that drive a workload and judge what your program did
- workload known processes, files and syscalls for checks to count
- overhead what a BPF hook costs per system call: a calibrated C loop, median of 3
- net      network sandboxes (veth pairs, stars) and the guard on their interfaces
- traffic  UDP flows, raw frames, a TCP service, ping: traffic with known counts
- xdp      XDP attach/detach on sandbox interfaces, test runs, flood
- tc       TC filters on sandbox interfaces, qdiscs, socket filters, SOCKMAP
- flows    UDP/TCP/ICMP traffic with known counts for the TC labs
- cgroup   scratch cgroups; attach/detach cgroup programs on them only
- sweep    removes what a killed run left behind
- arch     architecture detection, syscall numbers for five architectures
- mock     in-memory maps with the kernel's semantics, failure injection
- testing  fixtures, key/value and packet builders, byte/errno assertions
- events   a fast ring-buffer consumer with backpressure and health stats
- asm      a small BPF assembler: alu, mem, jump, one unified import
- bpfsys   the raw bpf() syscall: load, maps, BPF_PROG_TEST_RUN, tracepoint attach
- packets  test packets (Ethernet, IPv4/6, UDP/TCP/ICMP) with checksums
- pin      pinning maps under /sys/fs/bpf/ebpf-tutor and reading them back
- commands clang, ip, tc and bpftool run from a notebook as a learner types them
"""
from .doctor import doctor  # the function; binds over the submodule's name
from .errors import (AttachError, BpfError, BpfPermissionError, CompileError,
                     FeatureUnavailable, TransientError, VerifierError, retry)

__version__ = "0.1.0"


def __getattr__(name: str):
    # BCC and pandas load only when first used, so `import ebpf_tutor` is fast
    # and works on a machine without BCC (the doctor then says how to get it).
    if name in ("Program", "close_all"):
        from . import program
        return getattr(program, name)
    if name in ("table_df", "log2_hist_df", "log2_counts_df", "plot_log2_hist",
                "EventCollector", "records_df"):
        from . import data
        return getattr(data, name)
    if name in ("RingBufferConsumer",):
        from . import events
        return getattr(events, name)
    if name in ("MockMap", "inject_failure"):
        from . import mock
        return getattr(mock, name)
    if name == "check":
        from .labs import check
        return check
    raise AttributeError(f"module 'ebpf_tutor' has no attribute {name!r}")


__all__ = ["Program", "close_all", "table_df", "log2_hist_df", "log2_counts_df",
           "plot_log2_hist", "EventCollector", "records_df", "doctor", "check", "retry",
           "RingBufferConsumer", "MockMap", "inject_failure",
           "BpfError", "CompileError", "VerifierError", "BpfPermissionError",
           "TransientError", "AttachError", "FeatureUnavailable"]
