"""The test utilities test themselves: builders, assertions, benchmark, fixtures."""
import ctypes as ct
import errno
import ipaddress
import os
import struct
from pathlib import Path

import pytest

from ebpf_tutor import testing as T
from ebpf_tutor.testing import bpf_program, bpffs_dir, kernel_maps, mock_maps, scratch_dir  # noqa: F401
from tests.conftest import held_prog_ids, needs_root


class Event(ct.Structure):
    _fields_ = [("pid", ct.c_uint32), ("comm", ct.c_char * 8), ("ts", ct.c_uint64)]


def test_key_and_value_builders():
    assert T.make_key(42) == b"*\x00\x00\x00"
    assert T.make_key(1, size=2, byteorder="big") == b"\x00\x01"
    assert T.make_key(-1, size=4, signed=True) == b"\xff\xff\xff\xff"
    assert T.make_value(1) == b"\x01" + bytes(7)
    with pytest.raises(OverflowError):
        T.make_key(1 << 32)


def test_struct_builders_roundtrip():
    raw = T.make_struct(Event, pid=7, comm="bash", ts=99)
    assert len(raw) == ct.sizeof(Event) == 24
    ev = T.parse_struct(Event, raw)
    assert (ev.pid, ev.comm, ev.ts) == (7, b"bash", 99)
    with pytest.raises(AttributeError, match="no field 'nope'"):
        T.make_struct(Event, nope=1)
    with pytest.raises(ValueError):
        T.parse_struct(Event, raw[:-1])
    Pair = T.struct_type("Pair", [("a", "u32"), ("name", "char[4]"), ("b", ct.c_uint16)])
    assert ct.sizeof(Pair) == 12 and T.make_struct(Pair, a=1, name=b"ab", b=2)[:6] == b"\x01\0\0\0ab"
    Arr = T.struct_type("Arr", [("v", ct.c_uint8 * 3)])
    assert T.make_struct(Arr, v=[1, 2, 3]) == b"\x01\x02\x03"


def _ones_complement_ok(data: bytes) -> bool:
    return T.checksum(data) == 0


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_packet_builder_lengths_and_checksums(proto):
    pkt = T.build_packet(protocol=proto, src="192.0.2.1", dst="198.51.100.7", sport=1000,
                         dport=53, payload=b"hello", ttl=9)
    assert pkt[12:14] == b"\x08\x00"                           # IPv4 ethertype
    ip = pkt[14:34]
    assert ip[0] == 0x45 and ip[8] == 9
    assert struct.unpack("!H", ip[2:4])[0] == len(pkt) - 14    # total length
    assert _ones_complement_ok(ip)
    assert ipaddress.IPv4Address(ip[12:16]) == ipaddress.IPv4Address("192.0.2.1")
    seg = pkt[34:]
    assert seg.endswith(b"hello")
    if proto == "icmp":
        assert _ones_complement_ok(seg)
    else:
        pseudo = ip[12:20] + struct.pack("!BBH", 0, ip[9], len(seg))
        assert _ones_complement_ok(pseudo + seg)
        assert struct.unpack("!HH", seg[:4]) == (1000, 53)


def test_packet_builder_tcp_flags_ipv6_and_errors():
    pkt = T.build_packet(protocol="tcp", tcp_flags="SA")
    assert pkt[34 + 13] == 0x12
    assert len(T.build_packet(protocol="udp", ethernet=False)) == 28
    v6 = T.build_packet(protocol="udp", ip=6, ttl=3, dport=7)
    p = T.parse(v6)
    assert p.ok and p.ip_version == 6 and p.ttl == 3 and p.dport == 7 and p.l4_checksum_ok
    assert T.parse(T.build_packet(protocol="icmp")).l4 == "icmp"
    assert T.tcp_packet is not None and T.udp_packet is not None
    with pytest.raises(ValueError):
        T.build_packet(protocol="sctp")


def test_assert_bytes_equal_shows_a_hex_diff():
    a = bytes(range(40))
    T.assert_bytes_equal(a, bytearray(a))
    b = a[:17] + b"\xee" + a[18:]
    with pytest.raises(AssertionError) as e:
        T.assert_bytes_equal(a, b, "packet rewritten", layout=[("ip.ttl", 17, 1), ("other", 0, 2)])
    text = str(e.value)
    assert "packet rewritten" in text and "1 byte(s) differ, first at offset 17 (0x11)" in text
    assert "fields that differ: ip.ttl" in text
    assert "exp 10 11 12" in text and "got 10 ee 12" in text
    assert "   ^^" in text and "0020" in text                   # the next row, as context
    with pytest.raises(AssertionError, match="lengths differ: expected 40 bytes, got 39"):
        T.assert_bytes_equal(a, a[:-1])


def test_hexdump():
    assert T.hexdump(b"AB\x00") == "0000  41 42 00" + " " * 40 + " AB."


def test_assert_raises_errno_both_forms():
    def boom(code):
        raise OSError(code, os.strerror(code))
    e = T.assert_raises_errno(errno.EPERM, boom, errno.EPERM)
    assert e.errno == errno.EPERM
    with T.assert_raises_errno(errno.ENOENT) as caught:
        boom(errno.ENOENT)
    assert caught.exception.errno == errno.ENOENT
    with pytest.raises(AssertionError, match="expected errno EPERM.*got ENOENT"):
        T.assert_raises_errno(errno.EPERM, boom, errno.ENOENT)
    with pytest.raises(AssertionError, match="nothing was raised"):
        with T.assert_raises_errno(errno.EPERM):
            pass
    # BCC's plain Exception carrying strerror text counts too
    with T.assert_raises_errno(errno.EEXIST):
        raise Exception("Could not update table: File exists")
    from ebpf_tutor.errors import BpfPermissionError
    with T.assert_raises_errno(errno.EACCES):
        raise BpfPermissionError("denied", errno=errno.EACCES)


def test_benchmark_stats():
    calls = []
    r = T.benchmark(lambda: calls.append(1), n=200, warmup=5, name="append")
    assert len(calls) == 205 and r.n == 200 and r.name == "append"
    assert r.min_s <= r.median_s <= r.p99_s <= r.max_s
    assert r.min_s <= r.mean_s <= r.max_s and r.ops_per_s > 0 and r.total_s > 0
    assert "append: 200 calls" in str(r) and "ops/s" in str(r)
    assert set(r.as_dict()) >= {"mean_s", "median_s", "p99_s", "ops_per_s"}
    with pytest.raises(ValueError):
        T.benchmark(lambda: None, n=0)


def test_capabilities_match_the_process():
    caps = T.effective_capabilities()
    assert T.has_bpf_capabilities() == bool(caps >> 21 & 1 or (caps >> 39 & 1 and caps >> 38 & 1))
    if os.geteuid() == 0:
        assert T.has_bpf_capabilities(probe=True)


def test_scratch_dir_is_fresh(scratch_dir):
    assert scratch_dir.is_dir() and not any(scratch_dir.iterdir())
    (scratch_dir / "f").write_text("x")


def test_mock_maps_fixture(mock_maps):
    m = mock_maps("array", max_entries=2)
    assert m.mocked and len(m) == 2


@needs_root
def test_kernel_maps_fixture_and_errnos(kernel_maps):
    m = kernel_maps("hash", 4, 8, 1)
    assert not m.mocked
    m.update(1, 5)
    assert m.lookup(1) == T.make_value(5)
    T.assert_raises_errno(errno.E2BIG, m.update, 2, 5)
    T.assert_raises_errno(errno.EEXIST, m.update, 1, 5, 1)
    assert m.keys() == [T.make_key(1)]


@needs_root
def test_bpffs_dir_pins_and_goes(bpffs_dir):
    assert str(bpffs_dir).startswith("/sys/fs/bpf/")
    m = T.KernelMap("array", 4, 4, 1)
    from ebpf_tutor.testing import libbpf
    assert libbpf().bpf_obj_pin(m.fd, str(bpffs_dir / "m").encode()) == 0
    m.close()
    assert (bpffs_dir / "m").exists()


_made = []


@needs_root
def test_bpf_program_fixture_loads(bpf_program):
    p = bpf_program("BPF_ARRAY(n, u64, 1);\n"
                    "TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { n.increment(0); return 0; }")
    _made.append(held_prog_ids())
    assert _made[0]


@needs_root
def test_bpf_program_fixture_closed_them():
    if not _made:
        pytest.skip("the loading test did not run")
    assert not _made[0] & held_prog_ids()


def test_bytes_diff_stays_short_for_big_differences():
    text = T.bytes_diff(bytes(4096), b"\xff" * 4096)
    assert "4096 byte(s) differ" in text and "more row(s) that differ" in text
    assert len(text.splitlines()) < 40
