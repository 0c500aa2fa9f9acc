"""events.ConsumerGroup: several ring buffers consumed together, closed
together, with one table of their health (in-memory rings: no root)."""
import ctypes as ct
import time

import pytest

from ebpf_tutor.events import ConsumerGroup, RingBufferConsumer
from ebpf_tutor.testing.mock import MockRingBuf


class Ev(ct.Structure):
    _fields_ = [("seq", ct.c_uint64), ("kind", ct.c_uint32), ("pad", ct.c_uint32)]


def fill(ring: MockRingBuf, n: int, kind: int) -> int:
    return sum(ring.output(bytes(Ev(i, kind, 0))) for i in range(n))


def test_each_ring_gets_its_own_events_and_stats():
    small, big = MockRingBuf(4096), MockRingBuf(16 * 4096)
    failed = [0]                               # what a BPF program would count
    group = ConsumerGroup(flood=RingBufferConsumer(small, ctype=Ev, lost=lambda: failed[0]),
                          rare=RingBufferConsumer(big, ctype=Ev))
    sent_flood = fill(small, 1000, 1)          # before anyone reads: a flood, most fail
    failed[0] = 1000 - sent_flood
    sent_rare = fill(big, 50, 2)
    with group:
        time.sleep(0.2)
    flood, rare = group["flood"].take(), group["rare"].take()
    assert len(rare) == sent_rare == 50 and set(rare["kind"]) == {2}
    assert len(flood) == sent_flood < 1000 and set(flood["kind"]) == {1}
    frame = group.stats_frame()
    assert list(frame.index) == ["flood", "rare"]
    assert frame.loc["flood", "kernel_lost"] == 1000 - sent_flood
    assert not frame.loc["flood", "healthy"] and frame.loc["rare", "healthy"]
    assert not group.healthy
    assert all(c.closed for c in group.consumers.values())


def test_close_closes_all_even_if_one_fails():
    a, b = RingBufferConsumer(MockRingBuf(4096), ctype=Ev), RingBufferConsumer(MockRingBuf(4096), ctype=Ev)

    def broken(drain=True):
        raise RuntimeError("boom")
    a.close, real_close = broken, a.close
    group = ConsumerGroup(a=a, b=b).start()
    with pytest.raises(RuntimeError, match="boom"):
        group.close()
    assert b.closed
    real_close()


def test_needs_a_consumer():
    with pytest.raises(ValueError):
        ConsumerGroup()
