"""Mock maps: the kernel's semantics in memory, checked against real maps.

The property tests run random sequences of operations on a MockMap and on a
kernel map of the same type (made through libbpf) and demand the same
results and the same errnos, operation by operation.
"""
import ctypes as ct
import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebpf_tutor import errors
from ebpf_tutor.testing.mock import (BPF_ANY, BPF_EXIST, BPF_NOEXIST, ENOTSUPP, InjectedFailure, MockBPF,
                             MockMap, MockRingBuf, inject_failure, lpm_key)
from ebpf_tutor.testing import (KernelMap, assert_raises_errno, bpf_program,  # noqa: F401 - fixtures
                                has_bpf_capabilities, make_key, make_value, mock_maps, run_op)
from tests.conftest import needs_root

needs_bpf = pytest.mark.skipif(not has_bpf_capabilities(), reason="needs CAP_BPF or root")


# ------------------------------------------------------------------ hash --
def test_hash_flags_full_and_missing():
    m = MockMap("hash", key_size=4, value_size=8, max_entries=2)
    assert m.mocked and m.map_type == "hash"
    m.update(1, 10)
    m.update(2, 20)
    with assert_raises_errno(errno.E2BIG):
        m.update(3, 30)                           # full: a new key does not fit
    m.update(1, 11)                               # an existing key still updates
    assert_raises_errno(errno.EEXIST, m.update, 1, 12, BPF_NOEXIST)
    m.delete(2)
    assert_raises_errno(errno.ENOENT, m.update, 2, 1, BPF_EXIST)
    assert_raises_errno(errno.ENOENT, m.delete, 2)
    assert_raises_errno(errno.ENOENT, m.lookup, 2)
    assert_raises_errno(errno.EINVAL, m.update, 5, 1, 3)
    assert m.lookup(1) == make_value(11)
    assert m.lookup_and_delete(1) == make_value(11)
    assert len(m) == 0


def test_hash_speaks_bcc():
    Key = type("Key", (ct.Structure,), {"_fields_": [("pid", ct.c_uint32), ("cpu", ct.c_uint32)]})
    m = MockMap("hash", key_type=Key, value_type=ct.c_uint64, max_entries=8)
    m[Key(1, 0)] = ct.c_uint64(5)
    m[Key(2, 1)] = ct.c_uint64(7)
    assert m[Key(1, 0)].value == 5
    assert sorted((k.pid, v.value) for k, v in m.items()) == [(1, 5), (2, 7)]
    assert Key(2, 1) in m and Key(3, 0) not in m
    with pytest.raises(KeyError):
        m[Key(3, 0)]
    del m[Key(1, 0)]
    with pytest.raises(KeyError):
        del m[Key(1, 0)]
    m.zero()
    assert [v.value for v in m.values()] == [0]
    m.clear()
    assert len(m) == 0 and m.items() == []


def test_increment_inserts_and_fails_silently_when_full():
    m = MockMap("hash", key_size=4, value_size=8, max_entries=1)
    assert m.increment(1) and m.increment(1, 4)
    assert m[1].value == 5
    assert m.increment(2) is False                # full: the kernel would just not count
    assert 2 not in m


def test_table_df_reads_a_mock():
    from ebpf_tutor.data import table_df
    m = MockMap("hash", key_size=4, value_size=8)
    for pid, n in [(10, 3), (11, 9)]:
        m[pid] = n
    df = table_df(m)
    assert list(df["key"]) == [11, 10] and list(df["value"]) == [9, 3]


# ----------------------------------------------------------------- array --
def test_array_semantics():
    m = MockMap("array", value_size=8, max_entries=4)
    assert len(m) == 4 and m.lookup(3) == bytes(8)
    assert_raises_errno(errno.E2BIG, m.update, 4, 1)
    assert_raises_errno(errno.ENOENT, m.lookup, 4)
    assert_raises_errno(errno.EEXIST, m.update, 0, 1, BPF_NOEXIST)
    assert_raises_errno(errno.EINVAL, m.delete, 0)
    m.update(0, 9, BPF_EXIST)
    assert m[0].value == 9 and m[-4].value == 9
    del m[0]                                       # BCC zeroes instead of deleting
    assert m[0].value == 0
    with pytest.raises(IndexError):
        m[4]
    assert m.get_next_key(None) == make_key(0)
    assert m.get_next_key(2) == make_key(3)
    assert m.get_next_key(99) == make_key(0)
    assert_raises_errno(errno.ENOENT, m.get_next_key, 3)
    assert_raises_errno(ENOTSUPP, m.lookup_and_delete, 0)


def test_percpu_array_values_per_cpu():
    m = MockMap("percpu_array", value_size=8, max_entries=2, ncpus=4)
    assert m.increment(0, 5, cpu=1) and m.increment(0, 2, cpu=3)
    assert [v for v in m[0]] == [0, 5, 0, 2]
    assert m.sum(0).value == 7 and m.max(0).value == 5 and m.average(0) == 1.75
    m[1] = [1, 2, 3, 4]
    assert m.cpu_value(1, 2) == make_value(3)
    assert len(m.lookup(1)) == 4 * 8              # the syscall's buffer: one slot per CPU
    with pytest.raises(ValueError):
        m[1] = [1, 2]


def test_lru_evicts_least_recently_used():
    m = MockMap("lru_hash", key_size=4, value_size=8, max_entries=3)
    for k in (1, 2, 3):
        m.update(k, k)
    m.lookup(1)                                    # 1 is now the most recent
    m.update(4, 4)                                 # full: evicts 2, the least recently used
    assert sorted(int.from_bytes(k, "little") for k in m._raw_keys()) == [1, 3, 4]
    assert m.evicted == [make_key(2)]
    assert_raises_errno(errno.EEXIST, m.update, 4, 0, BPF_NOEXIST)


def test_lpm_longest_prefix_wins():
    m = MockMap("lpm_trie", key_size=8, value_size=4, max_entries=3)
    m.update("10.0.0.0/8", 8)
    m.update("10.1.0.0/16", 16)
    m.update("10.1.2.0/24", 24)
    assert m["10.1.2.3"].value == 24
    assert m["10.1.9.9"].value == 16
    assert m["10.9.9.9"].value == 8
    with pytest.raises(KeyError):
        m["11.0.0.1"]
    assert_raises_errno(errno.ENOSPC, m.update, "192.168.0.0/16", 1)
    assert_raises_errno(errno.EINVAL, m.update, lpm_key(b"\x0a\0\0\0", 33), 1)
    assert_raises_errno(errno.EEXIST, m.update, "10.0.0.0/8", 1, BPF_NOEXIST)
    # iteration: the more specific prefix comes before the one containing it
    order = [(k.prefixlen, bytes(k.data)) for k in m]
    assert order == [(24, bytes([10, 1, 2, 0])), (16, bytes([10, 1, 0, 0])), (8, bytes([10, 0, 0, 0]))]
    m.delete("10.1.0.0/16")
    assert m["10.1.9.9"].value == 8
    assert_raises_errno(errno.ENOENT, m.delete, "10.1.0.0/16")


def test_queue_and_stack():
    q = MockMap("queue", value_size=4, max_entries=2)
    s = MockMap("stack", value_size=4, max_entries=2)
    for m in (q, s):
        m.push(1)
        m.push(2)
        assert_raises_errno(errno.E2BIG, m.push, 3)
        m.push(3, BPF_EXIST)                      # full + BPF_EXIST: the oldest (1) goes
        assert_raises_errno(errno.EINVAL, m.push, 4, BPF_NOEXIST)
        assert_raises_errno(errno.EINVAL, m.delete)
        assert_raises_errno(errno.EINVAL, m.get_next_key)
    assert [q.pop().value, q.pop().value] == [2, 3]      # FIFO
    assert [s.pop().value, s.pop().value] == [3, 2]      # LIFO
    with pytest.raises(KeyError):
        q.pop()
    assert_raises_errno(errno.ENOENT, s.peek_raw)
    q.push(7)
    assert q.peek().value == 7 and len(q) == 1 and [v.value for v in q.values()] == [7]


def test_unknown_type_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown map type"):
        MockMap("bloom")
    m = MockMap("hash", key_size=4, value_size=8)
    with pytest.raises(ValueError, match="key is 8 bytes"):
        m.update(b"12345678", 1)
    with pytest.raises(TypeError):
        m.update(1.5, 1)


# --------------------------------------------------------------- failures --
def test_inject_failure_times_after_and_scope(mock_maps):
    a, b = mock_maps("hash"), mock_maps("hash")
    with inject_failure("update", errno.EAGAIN, times=2) as inj:
        for _ in range(2):
            with assert_raises_errno(errno.EAGAIN):
                a.update(1, 1)
        a.update(1, 1)                              # the third call goes through
        assert inj.triggered == 2
    with b.inject_failure("lookup", errno.EBUSY, times=None, after=1):
        b.update(1, 1)
        b.lookup(1)                                  # `after=1`: the first passes
        assert_raises_errno(errno.EBUSY, b.lookup, 1)
        assert_raises_errno(errno.EBUSY, b.lookup, 1)
        a.lookup(1)                                  # another map is not affected
    b.lookup(1)                                      # disarmed after the block
    with inject_failure("*", errno.EPERM):
        with pytest.raises(InjectedFailure) as e:
            del a[1]                                 # dict API: not turned into KeyError
        assert e.value.errno == errno.EPERM and "injected" in str(e.value)
    with pytest.raises(ValueError):
        with inject_failure("frobnicate", errno.EIO):
            pass


def test_retry_gets_through_transient_injected_failures(mock_maps):
    m = mock_maps("hash")
    with inject_failure("update", errno.EAGAIN, times=2):
        errors.retry(lambda: m.update(1, 1), attempts=3, delay=0)
    assert m[1].value == 1 and m.calls["update"] == 3
    with inject_failure("update", errno.EPERM, times=1):
        with assert_raises_errno(errno.EPERM):     # not transient: no retry
            errors.retry(lambda: m.update(1, 2), attempts=3, delay=0)


def test_mock_bpf_holds_tables():
    with MockBPF(counts=MockMap("hash"), q=MockMap("queue", value_size=4)) as b:
        assert b.mocked and b["counts"].name == "counts" and "q" in b
        b["counts"].increment(1)
        assert b.get_table("counts")[1].value == 1
        with pytest.raises(KeyError, match="no mock table"):
            b["nope"]


def test_mock_ring_buffer_layout():
    r = MockRingBuf(4096)
    assert r.output(b"abc") and r.available() == 16          # 8 header + 3 padded to 8
    hdr = int.from_bytes(bytes(r.data[:4]), "little")
    assert hdr == 3 and bytes(r.data[8:11]) == b"abc"
    assert bytes(r.data[4096 + 8:4096 + 11]) == b"abc"        # the second mapping
    pos = r.reserve(5)
    assert int.from_bytes(bytes(r.data[16:20]), "little") & (1 << 31)   # BUSY until submitted
    r.discard(pos)
    assert int.from_bytes(bytes(r.data[16:20]), "little") == 5 | (1 << 30)
    assert not r.output(bytes(5000)) and r.lost == 1


@needs_root
def test_like_copies_a_real_tables_shape(bpf_program):
    p = bpf_program("""
        struct key_t { u32 pid; char comm[16]; };
        BPF_HASH(counts, struct key_t, u64, 32);
        BPF_PERCPU_ARRAY(per, u32, 4);
    """)
    m = MockMap.like(p["counts"])
    assert (m.map_type, m.max_entries, m.key_size, m.value_size) == ("hash", 32, 20, 8)
    m[m.Key(7, b"sh")] = m.Leaf(3)
    assert list(m.keys())[0].comm == b"sh"
    per = MockMap.like(p["per"])
    assert per.map_type == "percpu_array" and per.ncpus == p["per"].total_cpu


# ------------------------------------------------ properties vs. the kernel --
FLAGS = st.sampled_from([BPF_ANY, BPF_NOEXIST, BPF_EXIST, 3, 4])
VALUES = st.integers(0, 2**64 - 1)
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def keyed_ops(keys):
    return st.lists(st.one_of(
        st.tuples(st.just("update"), keys, VALUES, FLAGS),
        st.tuples(st.just("lookup"), keys),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("lookup_and_delete"), keys),
        st.tuples(st.just("get_next_key"), st.none() | keys)), max_size=30)


def contents(m, keys):
    out = {}
    for k in keys:
        kind, v = run_op(m, "lookup", k)
        if kind == "ok":
            out[k] = v
    return out


@needs_bpf
@SETTINGS
@given(ops=keyed_ops(st.integers(0, 7)))
def test_property_hash_matches_kernel(ops):
    with KernelMap("hash", 4, 8, 4) as real:
        mock = MockMap("hash", key_size=4, value_size=8, max_entries=4)
        for op, *args in ops:
            got_real, got_mock = run_op(real, op, *args), run_op(mock, op, *args)
            if op == "get_next_key" and args[0] is not None and args[0] in contents(mock, range(8)):
                # from a present key, the next one depends on the kernel's bucket order:
                # only insist that an answer is a present key
                for kind, v in (got_real, got_mock):
                    assert kind == "err" or int.from_bytes(v, "little") in contents(mock, range(8))
                continue
            if op == "get_next_key" and got_real[0] == "ok":
                assert got_mock[0] == "ok"
                assert int.from_bytes(got_real[1], "little") in contents(mock, range(8))
                continue
            assert got_real == got_mock, (op, args)
        assert contents(real, range(8)) == contents(mock, range(8))
        assert sorted(real.keys()) == sorted(mock._raw_keys())


@needs_bpf
@SETTINGS
@given(ops=keyed_ops(st.integers(0, 6)))
def test_property_array_matches_kernel(ops):
    with KernelMap("array", 4, 8, 4) as real:
        mock = MockMap("array", value_size=8, max_entries=4)
        for op, *args in ops:
            assert run_op(real, op, *args) == run_op(mock, op, *args), (op, args)
        assert contents(real, range(6)) == contents(mock, range(6))


@needs_bpf
@SETTINGS
@given(ops=keyed_ops(st.integers(0, 5)))
def test_property_percpu_array_matches_kernel(ops):
    with KernelMap("percpu_array", 4, 8, 4) as real:
        mock = MockMap("percpu_array", value_size=8, max_entries=4)
        for op, *args in ops:
            assert run_op(real, op, *args) == run_op(mock, op, *args), (op, args)


LPM_KEYS = st.builds(lambda plen, data: lpm_key(data, plen), st.integers(0, 17),
                     st.binary(min_size=2, max_size=2))


@needs_bpf
@SETTINGS
@given(ops=keyed_ops(LPM_KEYS))
def test_property_lpm_trie_matches_kernel(ops):
    with KernelMap("lpm_trie", 6, 4, 3) as real:
        mock = MockMap("lpm_trie", key_size=6, value_size=4, max_entries=3)
        for op, *args in ops:
            if op == "update":
                args[1] %= 2**32
            assert run_op(real, op, *args) == run_op(mock, op, *args), (op, args)
        assert real.keys() == mock._raw_keys()      # same post-order walk


@needs_bpf
@SETTINGS
@given(kind=st.sampled_from(["queue", "stack"]),
       ops=st.lists(st.one_of(st.tuples(st.just("push"), st.integers(0, 2**32 - 1),
                                         st.sampled_from([0, 1, 2, 3])),
                              st.tuples(st.just("pop_raw")), st.tuples(st.just("peek_raw"))),
                    max_size=30))
def test_property_queue_stack_match_kernel(kind, ops):
    with KernelMap(kind, 0, 4, 3) as real:
        mock = MockMap(kind, value_size=4, max_entries=3)
        for op, *args in ops:
            assert run_op(real, op, *args) == run_op(mock, op, *args), (kind, op, args)


def top_counts(table, n=3):
    """Code written against a BCC table: items(), Key/Leaf, value."""
    rows = sorted(((k.value, v.value) for k, v in table.items()), key=lambda kv: -kv[1])
    return rows[:n]


@needs_root
def test_same_code_runs_on_a_real_table_and_its_mock(bpf_program):
    p = bpf_program("""
        BPF_HASH(calls, u32, u64, 64);
        TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
            u32 tgid = bpf_get_current_pid_tgid() >> 32;
            if (tgid == TGID) calls.increment(tgid);
            return 0;
        }
    """.replace("TGID", str(os.getpid())))
    for _ in range(5):
        os.getppid()
    real = p["calls"]
    mock = MockMap.like(real)
    for _ in range(5):
        mock.increment(os.getpid())          # what the BPF program did, in memory
    assert top_counts(real) == top_counts(mock) == [(os.getpid(), 5)]
    real.clear()
    mock.clear()
    assert top_counts(real) == top_counts(mock) == []


def test_percpu_accepts_bcc_leaf_arrays():
    m = MockMap("percpu_hash", key_size=4, value_size=8, max_entries=4, ncpus=2)
    leaf = m.Leaf()
    leaf[0], leaf[1] = 3, 4
    m[1] = leaf
    assert list(m[1]) == [3, 4] and m.sum(1).value == 7
    m[2] = 5                                  # a single value: the same on every CPU
    assert list(m[2]) == [5, 5]
