"""The ring buffer's memory as user space maps it, and `RingReader`, which
copies records straight out of it (the layout is described in the package
docstring, `ebpf_tutor.events`)."""
from __future__ import annotations

import mmap
import os
import select
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..bpfsys.maps import map_info

BUSY_BIT, DISCARD_BIT, HDR_SIZE = 1 << 31, 1 << 30, 8
PAGE = mmap.PAGESIZE


def record_stride(sample_size: int) -> int:
    """Bytes one record takes in the ring: header + sample, rounded up to 8."""
    return (sample_size + HDR_SIZE + 7) // 8 * 8


# --------------------------------------------------------------- reader ----
@dataclass
class ReadResult:
    """What one read of the ring gave."""
    records: Any            # numpy structured array (fixed) or list of bytes
    count: int              # records delivered (discarded ones excluded)
    discarded: int = 0
    malformed: int = 0
    fill: float = 0.0       # how full the ring was when read, 0..1


class RingReader:
    """Reads records straight out of a ring buffer's memory, no threads.

    `RingReader.open(prog, "events")` maps a BCC ring buffer map;
    `RingReader.from_mock(MockRingBuf(...))` reads the in-memory mock."""

    def __init__(self, consumer_pos: np.ndarray, producer_pos: np.ndarray, data: np.ndarray,
                 size: int, waiter: Callable[[float], None], closer: Callable[[], None] | None = None,
                 wake: Callable[[], None] | None = None, mocked: bool = False):
        self._cons, self._prod, self._data = consumer_pos, producer_pos, data
        self.size, self.mask = size, size - 1
        self._waiter, self._closer, self._wake = waiter, closer, wake
        self._mv = memoryview(data)
        self.mocked = mocked
        self.closed = False

    # ---------------------------------------------------------- opening --
    @classmethod
    def from_map_fd(cls, fd: int, size: int | None = None) -> "RingReader":
        """mmap a BPF_MAP_TYPE_RINGBUF map (size: its max_entries in bytes)."""
        if size is None:
            size = map_info(fd).max_entries
        cons_mm = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            data_mm = mmap.mmap(fd, PAGE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE)
        except OSError:
            cons_mm.close()
            raise
        ep = select.epoll()
        ep.register(fd, select.EPOLLIN)        # readable when the ring holds data
        stop_fd = os.eventfd(0, os.EFD_NONBLOCK)
        ep.register(stop_fd, select.EPOLLIN)   # written by wake(): ends a wait at once
        raw = np.frombuffer(data_mm, dtype=np.uint8)
        reader = cls(np.frombuffer(cons_mm, dtype=np.uint64, count=1), raw[:8].view(np.uint64),
                     raw[PAGE:], size, waiter=None)

        def wait(timeout: float) -> None:
            for efd, _ in ep.poll(timeout):
                if efd == stop_fd:
                    try:
                        os.eventfd_read(stop_fd)
                    except BlockingIOError:
                        pass

        def close() -> None:
            reader._cons = reader._prod = reader._data = reader._mv = None  # views first
            ep.close()
            os.close(stop_fd)
            cons_mm.close()
            data_mm.close()

        reader._waiter, reader._closer = wait, close
        reader._wake = lambda: os.eventfd_write(stop_fd, 1)
        return reader

    @classmethod
    def open(cls, prog, map_name: str) -> "RingReader":
        """Map the ring buffer `map_name` of a BCC program."""
        table = prog[map_name]
        if type(table).__name__ != "RingBuf":
            raise TypeError(f"{map_name!r} is a {type(table).__name__}, not a BPF_RINGBUF_OUTPUT map")
        return cls.from_map_fd(table.map_fd, int(table.max_entries) or None)

    @classmethod
    def from_mock(cls, ring) -> "RingReader":
        """Read a mock.MockRingBuf (same layout, in plain memory)."""
        def wake() -> None:
            ring._wakeup.set()
        return cls(ring.consumer_pos, ring.producer_pos, ring.data, ring.size,
                   waiter=ring.wait, wake=wake, mocked=True)

    # ---------------------------------------------------------- reading --
    def available(self) -> int:
        """Bytes written by producers and not consumed yet."""
        return int(self._prod[0]) - int(self._cons[0])

    def wait(self, timeout: float) -> None:
        """Sleep until the kernel signals new data, or `timeout` seconds."""
        self._waiter(timeout)

    def wake(self) -> None:
        """Interrupt a wait() from another thread."""
        if self._wake:
            self._wake()

    def _header(self, off: int) -> int:
        return int.from_bytes(self._mv[off:off + 4], "little")

    def read_fixed(self, dtype: np.dtype, max_records: int = 1 << 16) -> ReadResult:
        """Read up to `max_records` records whose samples are all exactly
        `dtype.itemsize` bytes, as one numpy structured array (a copy: the
        ring space is handed back to the kernel before returning).

        Records of another size are skipped and counted as malformed; the
        read stops at the first record still being written (BUSY)."""
        sample = dtype.itemsize
        stride = record_stride(sample)
        cons = int(self._cons[0])
        prod = int(self._prod[0])
        fill = (prod - cons) / self.size
        parts, count, discarded, malformed = [], 0, 0, 0
        while cons < prod and count < max_records:
            n = min((prod - cons) // stride, max_records - count)
            off = cons & self.mask
            k = 0
            if n:
                # n records side by side (the data area is mapped twice, so no wrap)
                raw = self._data[off: off + n * stride]
                rows = raw.reshape(n, stride)
                lens = raw.view(np.uint32)[:: stride // 4]        # each record's u32 len
                bad = np.flatnonzero((lens & ~np.uint32(DISCARD_BIT)) != sample)
                k = n if bad.size == 0 else int(bad[0])
            if k:
                keep = (lens[:k] & np.uint32(DISCARD_BIT)) == 0
                nk = int(np.count_nonzero(keep))
                body = rows[:k, HDR_SIZE: HDR_SIZE + sample]
                body = body[keep] if nk < k else body.copy()   # the one copy, never a view
                parts.append(body.view(dtype).reshape(nk))
                discarded += k - nk
                count += nk
                cons += k * stride
                continue
            # the record at `cons` is busy, or not of our size
            hdr = self._header(off)
            size = hdr & ~(BUSY_BIT | DISCARD_BIT)
            if hdr & BUSY_BIT or (n == 0 and size == sample):
                break
            if size == sample and not hdr & DISCARD_BIT:
                continue                  # submitted since we looked: read it as a batch
            if hdr & DISCARD_BIT:
                discarded += 1
            else:
                malformed += 1
            cons += record_stride(size)
        self._cons[0] = cons              # hand the space back to the kernel
        if not parts:
            records = np.empty(0, dtype=dtype)
        else:
            records = parts[0] if len(parts) == 1 else concat_records(parts)
        return ReadResult(records, count, discarded, malformed, fill)

    def read_records(self, max_records: int = 1 << 16) -> ReadResult:
        """Read up to `max_records` records of any size, one by one, as bytes."""
        cons = int(self._cons[0])
        prod = int(self._prod[0])
        fill = (prod - cons) / self.size
        out: list[bytes] = []
        discarded = 0
        mv = self._mv
        while cons < prod and len(out) < max_records:
            off = cons & self.mask
            hdr = int.from_bytes(mv[off:off + 4], "little")    # _header(), inlined: per record
            if hdr & BUSY_BIT:
                break
            size = hdr & ~(BUSY_BIT | DISCARD_BIT)
            if hdr & DISCARD_BIT:
                discarded += 1
            else:
                out.append(bytes(mv[off + HDR_SIZE: off + HDR_SIZE + size]))
            cons += record_stride(size)
        self._cons[0] = cons
        return ReadResult(out, len(out), discarded, 0, fill)

    def close(self) -> None:
        """Unmap the ring (safe to call twice)."""
        if self.closed:
            return
        self.closed = True
        if self._closer:
            self._closer()
        self._cons = self._prod = self._data = self._mv = None

    def __enter__(self) -> "RingReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def concat_records(parts: list[np.ndarray]) -> np.ndarray:
    """np.concatenate for structured arrays, as one plain memory copy
    (numpy copies structured arrays field by field, several times slower)."""
    dtype = parts[0].dtype
    raw = np.concatenate([p.view(np.dtype((np.void, dtype.itemsize))) for p in parts])
    return raw.view(dtype)
