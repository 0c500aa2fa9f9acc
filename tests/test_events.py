"""The ring-buffer consumer: every event once and in order, stats that add
up, drops counted, clean shutdown. Speed is measured by
benchmarks/ring_buffer.py, not here: no test depends on timing."""
import ctypes as ct
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebpf_tutor.bpfsys import map_info
from ebpf_tutor.events import ConsumerStats, RingBufferConsumer, RingReader, record_stride
from ebpf_tutor.testing.mock import MockMap, MockRingBuf
from ebpf_tutor.testing import bpf_program  # noqa: F401 - fixture
from tests.conftest import needs_root


class Ev(ct.Structure):
    _fields_ = [("seq", ct.c_uint64), ("pid", ct.c_uint32), ("comm", ct.c_char * 8), ("x", ct.c_uint16)]


EV_SIZE = ct.sizeof(Ev)        # 24: the sample; 32 with the record header


def ev(i: int) -> bytes:
    return bytes(Ev(i, 7, b"p%d" % (i % 100), i % 65536))


def produce(ring: MockRingBuf, seqs, wait_for_room: bool = True) -> int:
    """Write events; with wait_for_room, never fail (a patient producer)."""
    sent = 0
    for i in seqs:
        if wait_for_room:
            until(lambda: ring.size - ring.available() > record_stride(EV_SIZE))
        sent += ring.output(ev(i))
    return sent


def until(cond, timeout: float = 30.0) -> None:
    """Wait for a condition (a bound, so a bug fails instead of hanging)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def check_stats_add_up(st: ConsumerStats) -> None:
    assert st.received == st.handled + st.dropped + st.queue_depth


# -------------------------------------------------------- reading the ring --
def test_reader_stops_at_busy_and_skips_discarded():
    ring = MockRingBuf(4096)
    with RingReader.from_mock(ring) as r:
        dt = np.dtype(Ev)
        for i in range(3):
            ring.output(ev(i))
        busy = ring.reserve(EV_SIZE)
        ring.output(ev(4))
        got = r.read_fixed(dt)
        assert list(got.records["seq"]) == [0, 1, 2] and got.count == 3
        assert r.read_fixed(dt).count == 0                 # still busy: nothing more
        ring.write(busy, ev(3))
        ring.submit(busy)
        gone = ring.reserve(EV_SIZE)
        ring.discard(gone)
        ring.output(ev(5))
        got = r.read_fixed(dt)
        assert list(got.records["seq"]) == [3, 4, 5] and got.discarded == 1
        assert r.available() == 0


def test_reader_across_the_wrap_many_times():
    ring = MockRingBuf(4096)                               # 128 records of 32 bytes
    seen = []
    with RingReader.from_mock(ring) as r:
        for i in range(3000):
            if not ring.output(ev(i)):
                seen += list(r.read_fixed(np.dtype(Ev), 50).records["seq"])
                assert ring.output(ev(i))
        while r.available():
            seen += list(r.read_fixed(np.dtype(Ev)).records["seq"])
    assert seen == list(range(3000))


def test_records_of_another_size_are_counted_not_delivered():
    ring = MockRingBuf(4096)
    with RingBufferConsumer(ring, ctype=Ev, max_drop_ratio=1.0) as c:
        ring.output(ev(0))
        ring.output(b"short")
        ring.output(ev(1))
        c.wait_idle()
    df = c.take()
    assert list(df["seq"]) == [0, 1]
    st = c.stats
    assert st.malformed == 1 and not st.healthy
    assert any("unexpected size" in p for p in st.problems)


def test_records_mode_takes_any_size():
    ring = MockRingBuf(8192)
    sizes = [1, 8, 13, 100, 3, 64] * 20
    with RingBufferConsumer(ring) as c:                    # no record type: records mode
        assert c.mode == "records"
        for i, n in enumerate(sizes):
            record = bytes([i % 256]) * n
            until(lambda: ring.size - ring.available() > record_stride(n))
            assert ring.output(record)
    got = c.take()
    assert [len(b) for b in got] == sizes
    assert [b[0] for b in got] == [i % 256 for i in range(len(sizes))]


# ------------------------------------------------------- the consumer ------
def test_every_event_once_in_order_with_a_handler():
    ring = MockRingBuf(16 * 4096)
    frames = []
    with RingBufferConsumer(ring, ctype=Ev, handler=frames.append) as c:
        assert c.mocked
        t = threading.Thread(target=produce, args=(ring, range(20_000)))
        t.start()
        t.join()
    st = c.stats
    df = pd.concat(frames, ignore_index=True)
    assert (df["seq"].to_numpy() == np.arange(20_000)).all()
    assert list(df["comm"][:3]) == ["p0", "p1", "p2"]          # char arrays decoded to str
    assert st.received == st.handled == 20_000 and st.dropped == 0 and st.queue_depth == 0
    assert st.kernel_lost == 0 and st.healthy and st.batches == len(frames)
    check_stats_add_up(st)


def test_take_collects_without_a_handler():
    ring = MockRingBuf(4096)
    with RingBufferConsumer(ring, ctype=Ev) as c:
        produce(ring, range(50))
        assert c.wait_for(50)
        first = c.take()
        produce(ring, range(50, 60))
        assert c.wait_for(60)
    assert list(first["seq"]) == list(range(50))
    assert list(c.take()["seq"]) == list(range(50, 60))
    assert len(c.take()) == 0


def test_numpy_batches_when_frames_are_off():
    ring = MockRingBuf(4096)
    with RingBufferConsumer(ring, dtype=np.dtype(Ev), frames=False) as c:
        produce(ring, range(10))
    arr = c.take()
    assert isinstance(arr, np.ndarray) and list(arr["seq"]) == list(range(10))


def test_drops_are_counted_when_the_handler_is_slow_and_the_queue_small():
    ring = MockRingBuf(64 * 4096)                          # room for all 5000 events
    release = threading.Event()
    calls = []

    def slow(df):
        calls.append(len(df))
        release.wait(5)                                     # hold the first batch

    c = RingBufferConsumer(ring, ctype=Ev, handler=slow, queue_size=100, batch_size=64)
    with c:
        produce(ring, range(5000), wait_for_room=False)
        until(lambda: c.stats.received == 5000)
        st = c.stats
        assert st.dropped > 0 and st.queue_depth <= 100 and st.max_queue_depth <= 100
        assert not st.healthy and any("events lost" in p for p in st.problems)
        release.set()
    st = c.stats
    assert st.received == 5000 and st.kernel_lost == 0
    assert st.handled == sum(calls) and st.handled + st.dropped == 5000
    check_stats_add_up(st)


def test_block_mode_pushes_back_to_the_kernel_side():
    ring = MockRingBuf(4096)                               # 127 records fit
    release = threading.Event()
    c = RingBufferConsumer(ring, ctype=Ev, handler=lambda df: release.wait(5), queue_size=10,
                           batch_size=10, overflow="block")
    with c:
        sent = produce(ring, range(1000), wait_for_room=False)
        assert ring.lost > 0 and sent + ring.lost == 1000    # the ring filled: outputs failed
        st = c.stats
        assert st.dropped == 0 and st.kernel_lost == ring.lost and not st.healthy
        release.set()
    st = c.stats
    assert st.dropped == 0 and st.handled == st.received == sent
    check_stats_add_up(st)


def test_lag_makes_it_unhealthy_while_the_handler_is_stuck():
    ring = MockRingBuf(4096)
    stuck, entered = threading.Event(), threading.Event()

    def handler(df):
        entered.set()
        stuck.wait(5)
    with RingBufferConsumer(ring, ctype=Ev, handler=handler, max_lag_s=0.0) as c:
        produce(ring, range(5))
        assert entered.wait(5)
        st = c.stats
        assert st.lag_s > 0 and st.queue_depth == 5 and not st.healthy
        assert any(p.startswith("lag") for p in st.problems)
        stuck.set()
    assert c.stats.lag_s == 0 and c.stats.handled == 5


def test_handler_errors_are_counted_and_do_not_stop_the_pipeline():
    ring = MockRingBuf(4096)
    seen = []

    def flaky(df):
        seen.append(len(df))
        if len(seen) == 1:
            raise ValueError("bug in my handler")
    with RingBufferConsumer(ring, ctype=Ev, handler=flaky, linger_s=0) as c:
        produce(ring, range(3))
        c.wait_for(3)
        produce(ring, range(3, 6))
        c.wait_for(6)
    st = c.stats
    assert st.handler_errors == 1 and isinstance(c.last_error, ValueError) and not st.healthy
    assert st.handled == sum(seen) == 6


def test_clean_shutdown_releases_threads_and_can_be_repeated():
    ring = MockRingBuf(4096)
    c = RingBufferConsumer(ring, ctype=Ev, poll_timeout=5.0)   # a long wait must not delay close
    c.start()
    threads = list(c._threads)
    assert all(t.is_alive() for t in threads)
    produce(ring, range(3))
    st = c.close()                                        # drains what was already written
    assert not any(t.is_alive() for t in threads) and c.closed and c._reader.closed
    assert st.handled == 3 and c.close().handled == 3      # a second close is harmless
    assert "closed" in repr(c) and "mocked" in repr(c)


def test_loss_counter_sources():
    ring = MockRingBuf(4096)
    counts = MockMap("percpu_array", value_size=8, max_entries=1, ncpus=2)
    counts.increment(0, 3, cpu=0)
    c = RingBufferConsumer(ring, ctype=Ev, lost=counts)
    counts.increment(0, 2, cpu=1)
    assert c.stats.kernel_lost == 2                       # counted from when the consumer began
    assert RingBufferConsumer(ring, ctype=Ev, lost=lambda: 4).stats.kernel_lost == 0
    with pytest.raises(TypeError):
        RingBufferConsumer(ring, ctype=Ev, lost=object())
    with pytest.raises(ValueError):
        RingBufferConsumer(ring, ctype=Ev, overflow="sometimes")
    s = str(c.stats)
    assert "kernel lost 2" in s and "UNHEALTHY" in s     # 2 lost of 2: over the 1% default


# ------------------------------------------------------- a real kernel ring --
KERNEL_SRC = r"""
struct event { u64 seq; u32 pid; u32 k; };
BPF_RINGBUF_OUTPUT(events, 256);     // 1 MiB: room for all 20000 events, however late we read
BPF_ARRAY(seqno, u64, 1);
BPF_ARRAY(lost, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u32 zero = 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != TGID)
        return 0;
    u64 *seq = seqno.lookup(&zero);
    if (!seq)
        return 0;
    u64 base = __sync_fetch_and_add(seq, K);
    for (int i = 0; i < K; i++) {
        struct event *e = events.ringbuf_reserve(sizeof(struct event));
        if (!e) { lost.atomic_increment(zero); continue; }
        e->seq = base + i; e->pid = pid; e->k = K;
        events.ringbuf_submit(e, 0);
    }
    return 0;
}
"""


def bpf_map_mappings() -> int:
    return sum("bpf-map" in ln for ln in Path("/proc/self/maps").read_text().splitlines())


@pytest.fixture(scope="module")
def kernel_prog():
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    from ebpf_tutor import Program
    p = Program(KERNEL_SRC.replace("TGID", str(os.getpid())).replace("K", "8"), name="test-events")
    yield p
    p.close()


@needs_root
def test_kernel_ring_every_event_in_order(kernel_prog):
    p = kernel_prog
    p["seqno"][ct.c_int(0)] = ct.c_uint64(0)
    before = bpf_map_mappings()
    assert map_info(p["events"].map_fd).max_entries == p["events"].max_entries == 256 * 4096
    with RingBufferConsumer(p, "events", lost=p["lost"]) as c:
        assert c.mode == "fixed" and not c.mocked
        assert c.dtype.names == ("seq", "pid", "k")          # BCC's event struct, found for us
        assert bpf_map_mappings() == before + 2               # consumer page + data pages
        for _ in range(2500):
            os.getppid()
        assert c.wait_for(20_000, timeout=30)
    df = c.take()
    st = c.stats
    assert (df["seq"].to_numpy() == np.arange(20_000)).all()
    assert set(df["pid"]) == {os.getpid()} and set(df["k"]) == {8}
    assert st.received == st.handled == 20_000 and st.dropped == 0 and st.kernel_lost == 0
    check_stats_add_up(st)
    assert bpf_map_mappings() == before                       # unmapped on close


VAR_SRC = r"""
BPF_RINGBUF_OUTPUT(events, 4);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) != TGID)
        return 0;
    u64 small = 1;
    struct { u64 a; u64 b; u32 c; } big = {2, 3, 4};
    events.ringbuf_output(&small, sizeof(small), 0);
    events.ringbuf_output(&big, sizeof(big), 0);
    return 0;
}
"""


@needs_root
@pytest.mark.parametrize("mode", ["bcc", "records"])
def test_kernel_ring_variable_sizes(mode, bpf_program):
    p = bpf_program(VAR_SRC.replace("TGID", str(os.getpid())))
    with RingBufferConsumer(p, "events", mode=mode) as c:
        assert c.mode == mode
        for _ in range(100):
            os.getppid()
        assert c.wait_for(200, timeout=30)
    got = c.take()
    assert [len(b) for b in got] == [8, 24] * 100            # sizeof() includes padding
    assert got[1][:8] == (2).to_bytes(8, "little")


SCALAR_SRC = r"""
BPF_RINGBUF_OUTPUT(events, 4);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) != TGID)
        return 0;
    u64 one = 1;
    events.ringbuf_output(&one, sizeof(one), 0);
    return 0;
}
"""


@needs_root
def test_kernel_ring_without_a_known_struct_falls_back_to_bcc(bpf_program):
    """BCC found no struct (a plain u64 sample): not a 0-byte "fixed" record."""
    p = bpf_program(SCALAR_SRC.replace("TGID", str(os.getpid())))
    with RingBufferConsumer(p, "events") as c:
        assert c.mode == "bcc" and c.dtype is None
        for _ in range(10):
            os.getppid()
        assert c.wait_for(10, timeout=30)
    assert c.take() == [(1).to_bytes(8, "little")] * 10
    assert c.stats.healthy


def test_close_without_drain_gives_up_the_queue_and_counts_it():
    ring = MockRingBuf(4096)
    hold, entered = threading.Event(), threading.Event()

    def handler(df):
        entered.set()
        hold.wait(5)
    c = RingBufferConsumer(ring, ctype=Ev, handler=handler, linger_s=0).start()
    produce(ring, range(1))
    assert entered.wait(5)                 # the handler holds event 0
    produce(ring, range(1, 4))
    until(lambda: c.stats.received == 4)
    threading.Timer(0.05, hold.set).start()
    st = c.close(drain=False)
    assert st.handled == 1 and st.dropped == 3 and st.queue_depth == 0
    check_stats_add_up(st)


def test_event_lag_from_a_timestamp_field():
    class Stamped(ct.Structure):
        _fields_ = [("ts", ct.c_uint64), ("seq", ct.c_uint64)]
    ring = MockRingBuf(4096)
    with RingBufferConsumer(ring, ctype=Stamped, ts_field="ts") as c:
        assert c.stats.event_lag_s is None
        ring.output(bytes(Stamped(time.monotonic_ns(), 0)))   # bpf_ktime_get_ns() is this clock
        assert c.wait_for(1)
    assert c.stats.event_lag_s >= 0
    with pytest.raises(ValueError, match="mode"):
        RingBufferConsumer(ring, mode="fast")
    with pytest.raises(ValueError, match="record type"):
        RingBufferConsumer(ring, mode="fixed")
