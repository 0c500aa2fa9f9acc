"""The bpf() system call from Python, with nothing in between.

BCC and libbpf both end in one system call, `bpf(cmd, attr, size)`: `cmd`
says what to do, `attr` is a C union holding one struct per command. This
package builds those structs with ctypes, so every step is visible:

    with RawMap(MapType.ARRAY, 4, 8, 1) as counts:          # BPF_MAP_CREATE
        with load(prog, ProgType.XDP, name="demo") as p:    # BPF_PROG_LOAD
            r = p.test_run(packet, repeat=10)               # BPF_PROG_TEST_RUN
        counts.lookup(0)                                    # BPF_MAP_LOOKUP_ELEM

A program or map is a file descriptor; the kernel frees it when the last
descriptor (or attachment, or pin) goes away. Every object here closes its
descriptor when its `with` block ends, or on `close()`.

Attaching to a tracepoint goes through a perf event: `perf_event_open()` on
the tracepoint's id, then the ioctl PERF_EVENT_IOC_SET_BPF (`attach_tracepoint`).

The modules, one concern each; the public names of the first five are also
importable from here (`from ebpf_tutor.bpfsys import RawMap, load`):

- syscall      the system call: its number, commands, attr structs, errors,
               descriptors (`close_all` closes every one still open),
               BPF_OBJ_GET_INFO_BY_FD
- maps         `RawMap`: create, lookup, update, delete, walk; `map_info`
- programs     `load`, `RawProgram.test_run`, `prog_id`, `prog_info`, readable rejections
- tracepoints  tracefs formats and ids, `attach_tracepoint` through a perf event
- tgid         the process ids BPF sees (`kernel_tgid`), which differ in a container
- asm/         a small assembler for the instructions `load` takes
- libbpf       libbpf's library through ctypes (used by pin, cgroups, testing, and
               bpfobject, which loads CO-RE objects with it)
- pin          pinning maps under /sys/fs/bpf
- stats        BPF_ENABLE_STATS: run_time_ns / run_cnt per program
"""
from .maps import (BPF_ANY, BPF_EXIST, BPF_NOEXIST, PERCPU_MAPS, Bytes, MapInfo, MapType, RawMap,
                   map_info)
from .programs import (ASM_HINTS, LOG_SIZES, XDP_ABORTED, XDP_DROP, XDP_MD, XDP_PASS,
                       XDP_REDIRECT, XDP_TX, ProgInfo, ProgramCode, ProgType, RawProgram,
                       RunResult, load, prog_id, prog_info)
from .syscall import (Cmd, FdObject, InfoAttr, MapCreateAttr, MapElemAttr, MapInfoStruct,
                      ProgInfoStruct, ProgLoadAttr, TestRunAttr, bpf, close_all, obj_info,
                      syscall_number, u32, u64)
from .tgid import MARKER_TAG, TgidProbe, kernel_tgid
from .tracepoints import (PERF_FLAG_FD_CLOEXEC, PERF_SAMPLE_RAW, PERF_TYPE_TRACEPOINT,
                          TRACEFS_DIRS, PerfEventAttr, TracepointField, TracepointLink,
                          attach_tracepoint, perf_ioctls, tracepoint_dir, tracepoint_format,
                          tracepoint_id)

__all__ = [
    # syscall
    "syscall_number", "Cmd", "u32", "u64", "MapCreateAttr", "MapElemAttr", "ProgLoadAttr",
    "TestRunAttr", "InfoAttr", "ProgInfoStruct", "MapInfoStruct", "bpf", "obj_info", "FdObject",
    "close_all",
    # maps
    "MapType", "PERCPU_MAPS", "BPF_ANY", "BPF_NOEXIST", "BPF_EXIST", "Bytes", "RawMap", "MapInfo",
    "map_info",
    # programs
    "ProgType", "XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT", "XDP_MD",
    "RunResult", "ProgInfo", "ProgramCode", "LOG_SIZES", "RawProgram", "prog_id", "prog_info", "load",
    "ASM_HINTS",
    # tracepoints
    "TRACEFS_DIRS", "tracepoint_dir", "TracepointField", "tracepoint_format", "tracepoint_id",
    "PerfEventAttr", "PERF_TYPE_TRACEPOINT", "PERF_SAMPLE_RAW", "PERF_FLAG_FD_CLOEXEC",
    "perf_ioctls", "TracepointLink", "attach_tracepoint",
    # tgid
    "MARKER_TAG", "TgidProbe", "kernel_tgid",
]
