"""MockRingBuf: a BPF ring buffer in memory, with the kernel's layout."""
from __future__ import annotations

import errno as E
import threading

import numpy as np

from ...events.ring import BUSY_BIT, DISCARD_BIT, HDR_SIZE, record_stride
from .failures import bpf_error

PAGE = 4096     # this mock's own page: its layout does not depend on the machine's


class MockRingBuf:
    """A BPF ring buffer in memory, laid out as the kernel lays it out for
    mmap: a consumer page (consumer_pos), a producer page (producer_pos),
    then the data area, mapped twice in a row so that a record that wraps
    around the end can be read in one piece. Here the second copy is kept
    up to date by writing every byte to both halves.

    A Python producer stands in for the BPF program: `output(data)` is
    bpf_ringbuf_output(); `reserve(n)` / `submit(r)` / `discard(r)` are
    bpf_ringbuf_reserve/submit/discard. A full buffer makes output() return
    False and counts `lost`, as the kernel helper fails with -EAGAIN."""

    mocked = True

    def __init__(self, size: int = 64 * PAGE):
        if size < PAGE or size & (size - 1) or size % PAGE:
            raise bpf_error(E.EINVAL, "ring size must be a power of 2 and a multiple of the page size")
        self.size, self.mask = size, size - 1
        self._mem = np.zeros(2 * PAGE + 2 * size, dtype=np.uint8)
        self.consumer_pos = self._mem[:8].view(np.uint64)
        self.producer_pos = self._mem[PAGE:PAGE + 8].view(np.uint64)
        self.data = self._mem[2 * PAGE:]
        self.lost = 0
        self.produced = 0
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._pending: dict[int, int] = {}    # position -> sample size of reserved records
        self.max_entries = size
        self.map_fd = -1

    # ----------------------------------------------------------- producer --
    def _write(self, pos: int, raw: bytes) -> None:
        off, n = pos & self.mask, len(raw)
        buf = np.frombuffer(raw, dtype=np.uint8)
        first = min(n, self.size - off)
        for base in (0, self.size):         # both copies of the data area
            self.data[base + off: base + off + first] = buf[:first]
            if first < n:
                self.data[base: base + n - first] = buf[first:]

    def reserve(self, size: int) -> int | None:
        """Reserve room for a sample of `size` bytes; returns its position
        (pass it to submit/discard) or None when there is no room."""
        total = record_stride(size)
        with self._lock:
            cons, prod = int(self.consumer_pos[0]), int(self.producer_pos[0])
            if total > self.size or prod + total - cons > self.mask:
                self.lost += 1
                return None
            self._write(prod, (size | BUSY_BIT).to_bytes(4, "little") + bytes(4))
            self.producer_pos[0] = prod + total
            self._pending[prod] = size
            return prod

    def write(self, pos: int, sample: bytes) -> None:
        """Fill a reserved record's sample."""
        self._write(pos + HDR_SIZE, bytes(sample))

    def submit(self, pos: int, discard: bool = False) -> None:
        """Commit a reserved record: clears its BUSY bit (sets DISCARD if asked)."""
        with self._lock:
            size = self._pending.pop(pos)
            self._write(pos, (size | (DISCARD_BIT if discard else 0)).to_bytes(4, "little"))
            self.produced += 0 if discard else 1
        self._wakeup.set()

    def discard(self, pos: int) -> None:
        self.submit(pos, discard=True)

    def output(self, sample: bytes) -> bool:
        """bpf_ringbuf_output(): copy `sample` in; False (and lost += 1) when full."""
        pos = self.reserve(len(sample))
        if pos is None:
            return False
        self.write(pos, sample)
        self.submit(pos)
        return True

    def output_many(self, samples: np.ndarray) -> int:
        """Write a batch of fixed-size records (a numpy structured array) as
        one output() each, faster; returns how many fitted."""
        raw = samples.tobytes()
        size = samples.dtype.itemsize
        n = 0
        for i in range(len(samples)):
            if not self.output(raw[i * size:(i + 1) * size]):
                break
            n += 1
        return n

    # ----------------------------------------------------------- consumer --
    def wait(self, timeout: float) -> None:
        """Block until a producer submitted something, or `timeout` seconds."""
        if int(self.producer_pos[0]) == int(self.consumer_pos[0]):
            self._wakeup.wait(timeout)
        self._wakeup.clear()

    def available(self) -> int:
        """Bytes produced and not yet consumed."""
        return int(self.producer_pos[0]) - int(self.consumer_pos[0])

    def __repr__(self) -> str:
        return f"<MockRingBuf {self.size} B, {self.available()} B unread, lost {self.lost} (mocked)>"
