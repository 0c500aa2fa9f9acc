"""The raw bpf() syscall layer: struct layouts equal the kernel's (BTF),
maps and programs work and close, rejections are readable, tracepoints
attach and detach."""
from __future__ import annotations

import errno
import os
import sys

import pytest

from ebpf_tutor import bpfsys
from ebpf_tutor import errors
from ebpf_tutor.bpfsys.asm import *
from ebpf_tutor.kernel.arch import possible_cpus
from tests.conftest import held_prog_ids, needs_root

PACKET = bytes(range(64))


# --------------------------------------------------------- no privileges --
def test_syscall_numbers_per_architecture():
    assert bpfsys.syscall_number("bpf", "x86_64") == 321
    assert bpfsys.syscall_number("bpf", "aarch64") == 280
    assert bpfsys.syscall_number("bpf", "s390x") == 351
    assert bpfsys.syscall_number("bpf", "ppc64le") == 361
    assert bpfsys.syscall_number("bpf", "riscv64") == 280
    assert bpfsys.syscall_number("perf_event_open", "x86_64") == 298
    assert bpfsys.syscall_number("perf_event_open", "aarch64") == 241
    with pytest.raises(errors.FeatureUnavailable, match="mips"):
        bpfsys.syscall_number("bpf", "mips")


def test_perf_ioctl_numbers():
    assert bpfsys.perf_ioctls("x86_64") == {"ENABLE": 0x2400, "DISABLE": 0x2401,
                                            "SET_BPF": 0x40042408}
    assert bpfsys.perf_ioctls("ppc64le")["SET_BPF"] == 0x80042408
    assert bpfsys.perf_ioctls("ppc64le")["ENABLE"] == 0x20002400


def _offset_in(btf, type_name: str, kind: str, path: str) -> int:
    t = btf.find(type_name, kind)
    total = 0
    for part in path.split("."):
        hit = btf._find_member(t, part)
        assert hit is not None, f"{type_name} has no {path}"
        bits, t = hit
        total += bits
    return total // 8


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="needs kernel BTF")
@pytest.mark.parametrize("struct,kind,prefix,fields", [
    (bpfsys.MapCreateAttr, "union", "", None),
    (bpfsys.MapElemAttr, "union", "", None),
    (bpfsys.ProgLoadAttr, "union", "", None),
    (bpfsys.TestRunAttr, "union", "test.", None),
    (bpfsys.InfoAttr, "union", "info.", None),
    (bpfsys.ProgInfoStruct, "struct", "", None),
    (bpfsys.MapInfoStruct, "struct", "", None),
    (bpfsys.PerfEventAttr, "struct", "", ["type", "size", "config", "sample_period",
                                          "sample_type", "read_format", "wakeup_events",
                                          "bp_type", "config1", "config2"]),
])
def test_ctypes_layouts_equal_the_kernels(struct, kind, prefix, fields):
    """Every field we pass to the kernel sits where the running kernel's BTF
    says it does (bpf_attr, bpf_prog_info, perf_event_attr)."""
    from ebpf_tutor.kernel.btf import kernel_btf
    btf = kernel_btf()
    name = {"union": "bpf_attr"}.get(kind) or {bpfsys.ProgInfoStruct: "bpf_prog_info",
                                              bpfsys.MapInfoStruct: "bpf_map_info",
                                              bpfsys.PerfEventAttr: "perf_event_attr"}[struct]
    for field, _ in struct._fields_:
        if fields is not None and field not in fields:
            continue
        if struct is bpfsys.ProgInfoStruct and field == "gpl_compatible":
            continue                       # a bitfield: BTF has bit offsets only
        assert getattr(struct, field).offset == _offset_in(btf, name, kind, prefix + field), field


# --------------------------------------------------------------- maps --
@needs_root
def test_hash_map_operations():
    with bpfsys.RawMap(bpfsys.MapType.HASH, 8, 8, 16, name="t_hash") as m:
        for k in range(5):
            m.update(k, k * k)
        assert m.ints() == {k: k * k for k in range(5)}
        assert m.lookup(99) is None
        assert m.lookup(3) == (9).to_bytes(8, sys.byteorder)
        assert m.delete(3) is True
        assert m.delete(3) is False
        assert sorted(int.from_bytes(k, sys.byteorder) for k in m.keys()) == [0, 1, 2, 4]
        with pytest.raises(errors.BpfError) as e:
            m.update(1, 0, flags=bpfsys.BPF_NOEXIST)
        assert e.value.errno == errno.EEXIST
        with pytest.raises(ValueError, match="8 bytes"):
            m.update(b"abc", 1)
    assert m.closed


@needs_root
def test_array_and_percpu_maps():
    with bpfsys.RawMap(bpfsys.MapType.ARRAY, 4, 8, 3, name="t_array") as a:
        assert a.ints() == {0: 0, 1: 0, 2: 0}             # arrays are preallocated, zeroed
        with pytest.raises(errors.BpfError):
            a.update(5, 1)                                # past max_entries
    with bpfsys.RawMap(bpfsys.MapType.PERCPU_ARRAY, 4, 4, 1, name="t_percpu") as p:
        ncpu = possible_cpus()
        assert p.value_buffer_size == 8 * ncpu
        assert p.per_cpu(0) == [b"\0" * 4] * ncpu


@needs_root
def test_map_info_of_any_map_fd():
    with bpfsys.RawMap(bpfsys.MapType.LRU_PERCPU_HASH, 4, 16, 8, name="t_info") as m:
        info = bpfsys.map_info(m.fd)
        assert (info.type, info.type_id, info.name) == ("lru_percpu_hash", 10, "t_info")
        assert (info.key_size, info.value_size, info.max_entries) == (4, 16, 8)
        assert info.per_cpu and info.id > 0
    with bpfsys.RawMap(bpfsys.MapType.HASH, 4, 8, 8, name="t_info", flags=1) as m:
        info = bpfsys.map_info(m.fd)          # flags=1: BPF_F_NO_PREALLOC
        assert (info.type, info.map_flags, info.per_cpu) == ("hash", 1, False)
    with pytest.raises(errors.BpfError, match="reading map info"):
        bpfsys.map_info(m.fd)                 # closed


@needs_root
def test_bad_map_parameters_are_explained():
    with pytest.raises(errors.BpfError) as e:
        bpfsys.RawMap(bpfsys.MapType.ARRAY, 8, 8, 1, name="t_bad")
    assert e.value.errno == errno.EINVAL
    assert "key_size 4" in e.value.hint


# ----------------------------------------------------------- programs --
@needs_root
def test_load_run_and_close():
    with bpfsys.load([mov(R0, 42), exit_()], bpfsys.ProgType.SOCKET_FILTER, name="t_42") as p:
        assert held_prog_ids()
        r = p.test_run(PACKET, repeat=50)
        assert r.retval == 42
        assert "processed 2 insns" in p.verifier_log
        info = p.info()
        assert info.name == "t_42" and len(info.tag) == 16
        assert decode(info.xlated) == [mov(R0, 42), exit_()]
        assert info.verified_insns == 2
    assert p.closed
    assert info.id not in held_prog_ids()


@needs_root
def test_xdp_can_rewrite_the_packet():
    prog = [
        ldx(U32, R2, R1, bpfsys.XDP_MD["data"]), ldx(U32, R3, R1, bpfsys.XDP_MD["data_end"]),
        mov(R4, R2), add(R4, 1), jgt(R4, R3, "out"),
        st(U8, R2, 0, 0xAB),                      # first byte := 0xab
        label("out"), mov(R0, bpfsys.XDP_TX), exit_(),
    ]
    with bpfsys.load(prog, bpfsys.ProgType.XDP, name="t_rewrite") as p:
        r = p.test_run(PACKET)
    assert r.retval == bpfsys.XDP_TX
    assert r.data == b"\xab" + PACKET[1:]


@needs_root
def test_context_in_and_out():
    """A socket filter's context is struct __sk_buff: mark is at offset 8."""
    ctx = (7).to_bytes(4, sys.byteorder).rjust(12, b"\0")  # len=0, pkt_type=0, mark=7
    prog = [ldx(U32, R0, R1, 8), exit_()]
    with bpfsys.load(prog, bpfsys.ProgType.SOCKET_FILTER, name="t_ctx") as p:
        r = p.test_run(PACKET, ctx=ctx, ctx_out_size=256)   # the kernel returns all of it
    assert r.retval == 7
    assert r.ctx[8:12] == (7).to_bytes(4, sys.byteorder)


@needs_root
def test_bytes_load_like_a_list():
    code = assemble([mov(R0, 3), exit_()])
    with bpfsys.load(code, bpfsys.ProgType.SOCKET_FILTER, name="t_bytes") as p:
        assert p.test_run(PACKET).retval == 3
        assert p.listing.splitlines()[0].endswith("r0 = 3")


@needs_root
def test_rejection_points_at_the_instruction():
    prog = [ldx(U32, R2, R1, 0), ldx(U32, R3, R1, 4), ldx(U8, R0, R2, 23), exit_()]
    with pytest.raises(errors.VerifierError) as e:
        bpfsys.load(prog, bpfsys.ProgType.XDP, name="t_reject")
    err = e.value
    assert err.where == "instruction 2 of t_reject"
    assert ">" in err.excerpt and "r0 = *(u8 *)(r2 +23)" in err.excerpt
    assert "outside of the packet" in err.summary
    assert "jgt(" in err.hint                       # a hint in instructions, not C
    assert len(err.format().splitlines()) < 40


@needs_root
def test_loop_state_dumps_are_not_the_reason():
    with pytest.raises(errors.VerifierError) as e:
        bpfsys.load([mov(R0, 0), label("spin"), ja("spin")], bpfsys.ProgType.SOCKET_FILTER)
    assert e.value.summary.startswith("infinite loop detected")


@needs_root
def test_a_log_too_small_is_retried_bigger():
    loop = [mov(R0, 0), mov(R1, 6000), label("l"), add(R0, R1), sub(R1, 1),
            jne(R1, 0, "l"), exit_()]
    with bpfsys.load(loop, bpfsys.ProgType.SOCKET_FILTER, name="t_biglog", log_level=2) as p:
        assert len(p.verifier_log) > bpfsys.LOG_SIZES[0] // 2
        assert "processed" in p.verifier_log


@needs_root
def test_refused_before_verification():
    with pytest.raises(errors.BpfError) as e:
        bpfsys.load([mov(R0, 0), exit_()], 9999, name="t_type")
    assert e.value.errno == errno.EINVAL


@needs_root
def test_map_reference_and_info():
    with bpfsys.RawMap(bpfsys.MapType.ARRAY, 4, 8, 1, name="t_ref") as m:
        prog = [st(U32, R10, -4, 0), ld_map_fd(R1, m.fd), mov(R2, R10), add(R2, -4),
                call("map_lookup_elem"), jeq(R0, 0, "out"), mov(R1, 1), atomic_add(U64, R0, R1),
                label("out"), mov(R0, 0), exit_()]
        with bpfsys.load(prog, bpfsys.ProgType.SOCKET_FILTER, name="t_ref") as p:
            p.test_run(PACKET, repeat=25)
            info = p.info()
        assert m.ints() == {0: 25}
        assert len(info.map_ids) == 1


# --------------------------------------------------------- tracepoints --
def test_tracepoint_format():
    fields = bpfsys.tracepoint_format("syscalls:sys_enter_lseek")
    assert fields["__syscall_nr"].offset == 8
    assert [fields[n].offset for n in ("fd", "offset", "whence")] == [16, 24, 32]
    assert fields["common_pid"].signed and fields["common_pid"].size == 4
    with pytest.raises(errors.AttachError, match="no tracepoint"):
        bpfsys.tracepoint_format("syscalls:sys_enter_no_such_call")


def _getppid_counter(map_fd: int) -> list:
    return [call("get_current_pid_tgid"), rsh(R0, 32), jne(R0, bpfsys.kernel_tgid(), "out"),
            st(U32, R10, -4, 0), ld_map_fd(R1, map_fd), mov(R2, R10), add(R2, -4),
            call("map_lookup_elem"), jeq(R0, 0, "out"), mov(R1, 1), atomic_add(U64, R0, R1),
            label("out"), mov(R0, 0), exit_()]


@needs_root
def test_tracepoint_attach_counts_then_detaches():
    with bpfsys.RawMap(bpfsys.MapType.ARRAY, 4, 8, 1, name="t_tp") as m:
        with bpfsys.load(_getppid_counter(m.fd), bpfsys.ProgType.TRACEPOINT, name="t_tp") as p:
            with bpfsys.attach_tracepoint(p, "syscalls:sys_enter_getppid") as link:
                for _ in range(7):
                    os.getppid()
            assert link.closed
            for _ in range(3):
                os.getppid()                         # detached: not counted
        assert m.ints() == {0: 7}


@needs_root
def test_kernel_tgid_is_our_pid_outside_pid_namespaces():
    nspid = [ln for ln in open("/proc/self/status") if ln.startswith("NSpid:")][0].split()[1:]
    tgid = bpfsys.kernel_tgid()
    if len(nspid) == 1:
        assert tgid == os.getpid()
    assert not held_prog_ids()


@needs_root
def test_attaching_the_wrong_program_type_is_explained():
    with bpfsys.load([mov(R0, 0), exit_()], bpfsys.ProgType.SOCKET_FILTER, name="t_wrong") as p:
        with pytest.raises(errors.AttachError) as e:
            bpfsys.attach_tracepoint(p, "syscalls:sys_enter_getppid")
    assert "TRACEPOINT" in e.value.hint


@needs_root
def test_close_all_releases_everything():
    m = bpfsys.RawMap(bpfsys.MapType.ARRAY, 4, 8, 1, name="t_all")
    p = bpfsys.load([mov(R0, 0), exit_()], bpfsys.ProgType.TRACEPOINT, name="t_all")
    link = bpfsys.attach_tracepoint(p, "syscalls:sys_enter_getppid")
    prog_id = p.info().id
    assert bpfsys.close_all() >= 3
    assert m.closed and p.closed and link.closed
    assert prog_id not in held_prog_ids()
