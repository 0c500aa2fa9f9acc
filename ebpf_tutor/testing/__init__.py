"""Helpers for testing BPF code: fixtures, builders, assertions, a benchmark.

    from ebpf_tutor.testing import (make_key, make_struct, build_packet,
        assert_bytes_equal, assert_raises_errno, benchmark, has_bpf_capabilities)

    make_key(42)                              # b'*\\x00\\x00\\x00' (4 bytes, little-endian)
    make_struct(Event, pid=1, comm=b"sh")     # bytes of a ctypes struct
    pkt = build_packet(protocol="tcp", dport=80)
    assert_bytes_equal(expected, got)         # fails with a hex diff of the rows that differ
    with assert_raises_errno(errno.EEXIST):
        m.update(1, 2, flags=BPF_NOEXIST)
    print(benchmark(lambda: m.lookup(1), n=10_000))

In pytest, import the fixtures you use into your test module (or list
`pytest_plugins = ["ebpf_tutor.testing"]` in a conftest.py):
`bpf_program` (a factory; every program is closed after the test),
`scratch_dir`, `bpffs_dir`, `mock_maps`, `kernel_maps`.

`KernelMap` is a real kernel map (created through libbpf) with the same raw
API as mock.MockMap, so one test can run against both.

The modules, one concern each (every name is importable from here):

- builders    make_key, make_value, make_struct, parse_struct, struct_type, build_packet
- asserts     hexdump, bytes_diff, assert_bytes_equal, errno_of, assert_raises_errno
- bench       benchmark, BenchmarkResult
- kernel_map  KernelMap, run_op
- fixtures    the pytest fixtures, effective_capabilities, has_bpf_capabilities
- mock/       maps in memory
"""
from __future__ import annotations

from ..bpfsys.libbpf import libbpf
from .asserts import assert_bytes_equal, assert_raises_errno, bytes_diff, errno_of, hexdump
from .bench import BenchmarkResult, benchmark
from .builders import build_packet, make_key, make_struct, make_value, parse_struct, struct_type
from .fixtures import effective_capabilities, has_bpf_capabilities
from .kernel_map import KernelMap, run_op
from .mock import lpm_key

try:  # the fixtures exist where pytest does; being names here lets pytest_plugins find them
    from .fixtures import bpf_program, bpffs_dir, kernel_maps, mock_maps, scratch_dir
except ImportError:
    _FIXTURES: list[str] = []
else:
    _FIXTURES = ["bpf_program", "scratch_dir", "bpffs_dir", "mock_maps", "kernel_maps"]


def __getattr__(name: str):
    # packets' own builders and parser, re-exported (imported when first used)
    if name in ("tcp_packet", "udp_packet", "icmp_packet", "parse", "checksum"):
        from ..sandbox import packets
        return getattr(packets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["has_bpf_capabilities", "effective_capabilities", "make_key", "make_value", "make_struct",
           "parse_struct", "struct_type", "lpm_key", "build_packet", "tcp_packet", "udp_packet",
           "icmp_packet", "parse", "checksum", "hexdump", "bytes_diff",
           "assert_bytes_equal", "assert_raises_errno", "errno_of", "benchmark", "BenchmarkResult",
           "KernelMap", "run_op", "libbpf", *_FIXTURES]
