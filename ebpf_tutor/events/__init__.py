"""Ring-buffer events at full speed, with backpressure and health statistics.

BCC calls a Python function once per event. That costs about a microsecond
each, so it tops out near a million events a second. This module reads the
ring buffer's memory itself, many records at a time, and decodes each batch
with one numpy call:

    with RingBufferConsumer(prog, "events", ctype=Event, handler=on_frame,
                            queue_size=1_000_000) as rb:
        ...                       # on_frame(df) runs in a thread, one DataFrame per batch
        print(rb.stats)           # received, handled, dropped, lag...
        assert rb.healthy

How a BPF ring buffer looks from user space (kernel/bpf/ringbuf.c): mmap the
map's fd and you get a consumer page (a u64 consumer_pos, the one thing we
may write), a producer page (u64 producer_pos) and the data area, which the
kernel maps twice in a row so a record that wraps past the end is still one
contiguous piece. Each record is an 8-byte header, then the sample, padded
to 8 bytes. The header's u32 length has two flag bits: BUSY (reserved, not
yet submitted: stop there) and DISCARD (skip it). Reading is: load
producer_pos, walk records from consumer_pos, copy them out, store the new
consumer_pos so the kernel may reuse the space.

Backpressure: records go from the reader thread to the handler thread
through a bounded queue (counted in events). When the handler is slower
than the kernel, `overflow="drop"` drops what does not fit (and counts it),
`overflow="block"` stops reading, so the ring buffer fills and the kernel's
bpf_ringbuf_reserve() fails instead (count those in your BPF program and
pass the counter as `lost=`).

Strings: char arrays (comm[16]) become str columns, which costs a few
hundred ns per event; `decode_strings=False` keeps them as bytes (S16)
columns at no cost.

One consumer per ring buffer: do not also open it with BCC's
open_ring_buffer() or data.EventCollector. Close the consumer before the
program (nest the `with` blocks).

Variable-size records: without a fixed record type, the consumer reads
records one by one (`mode="records"`, a Python walk over the same memory)
or lets BCC's ring_buffer_poll() call back per record (`mode="bcc"`).
The fast path relies on the CPU keeping memory loads in order (x86-64,
s390x); elsewhere (arm64...) the default is mode="bcc", whose C code has
the proper memory barriers.
"""
from __future__ import annotations

import ctypes as ct
import mmap
import os
import select
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

BUSY_BIT, DISCARD_BIT, HDR_SIZE = 1 << 31, 1 << 30, 8
PAGE = mmap.PAGESIZE


def record_stride(sample_size: int) -> int:
    """Bytes one record takes in the ring: header + sample, rounded up to 8."""
    return (sample_size + HDR_SIZE + 7) // 8 * 8


# ------------------------------------------------------------- map info ----
class _BpfMapInfo(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16)]


class _InfoAttr(ct.Structure):
    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


def map_info(fd: int) -> dict[str, Any]:
    """A map's type, sizes, max_entries and name, from BPF_OBJ_GET_INFO_BY_FD
    (the raw bpf() syscall, numbered for this machine's architecture)."""
    from ..kernel import arch
    libc = ct.CDLL(None, use_errno=True)
    info = _BpfMapInfo()
    attr = _InfoAttr(fd, ct.sizeof(info), ct.addressof(info))
    BPF_OBJ_GET_INFO_BY_FD = 15
    libc.syscall.restype = ct.c_long
    ret = libc.syscall(ct.c_long(arch.syscall_nr("bpf")), ct.c_int(BPF_OBJ_GET_INFO_BY_FD),
                       ct.byref(attr), ct.c_uint(ct.sizeof(attr)))
    if ret < 0:
        err = ct.get_errno()
        raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD on fd {fd}: {os.strerror(err)}")
    return {"type": info.type, "id": info.id, "key_size": info.key_size,
            "value_size": info.value_size, "max_entries": info.max_entries,
            "map_flags": info.map_flags, "name": info.name.decode(errors="replace")}


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
            size = map_info(fd)["max_entries"]
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
            hdr = int.from_bytes(mv[off:off + 4], "little")
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


# ---------------------------------------------------------------- stats ----
@dataclass(frozen=True)
class ConsumerStats:
    """A snapshot of a consumer's counters.

    received = handled + dropped + queue_depth (events read from the ring
    are handled, dropped because the queue was full, or still waiting)."""
    received: int = 0          # events read from the ring buffer
    handled: int = 0           # events the handler finished
    dropped: int = 0           # events dropped because the queue was full
    kernel_lost: int | None = None   # events the kernel could not write (None: not measurable)
    discarded: int = 0         # records the BPF program discarded (not a loss)
    malformed: int = 0         # records of an unexpected size, skipped
    queue_depth: int = 0       # events read but not handled yet
    max_queue_depth: int = 0
    batches: int = 0           # handler calls
    handler_errors: int = 0
    lag_s: float = 0.0         # age of the oldest event read but not handled
    max_lag_s: float = 0.0
    event_lag_s: float | None = None  # now - the last handled event's timestamp (ts_field)
    ring_fill: float = 0.0     # how full the ring was at the last read, 0..1
    max_ring_fill: float = 0.0
    elapsed_s: float = 0.0
    healthy: bool = True
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rate(self) -> float:
        """Events handled per second since start."""
        return self.handled / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rate"] = self.rate
        return d

    def __str__(self) -> str:
        lost = "n/a" if self.kernel_lost is None else str(self.kernel_lost)
        text = (f"received {self.received}, handled {self.handled}, dropped {self.dropped}, "
                f"kernel lost {lost}, queue {self.queue_depth} (max {self.max_queue_depth}), "
                f"lag {self.lag_s * 1e3:.1f} ms (max {self.max_lag_s * 1e3:.1f}), "
                f"ring fill max {self.max_ring_fill:.0%}: "
                f"{'healthy' if self.healthy else 'UNHEALTHY'}")
        return text + ("" if self.healthy else " (" + "; ".join(self.problems) + ")")


def _counter_source(lost) -> Callable[[], int] | None:
    """A function reading a kernel-side loss counter: a callable, a BCC table
    or MockMap (all values summed, per-CPU values too), or a MockRingBuf."""
    if lost is None:
        return None
    if callable(lost) and not hasattr(lost, "items"):
        return lambda: int(lost())
    if hasattr(lost, "items"):
        def total() -> int:
            s = 0
            for _, v in lost.items():
                if isinstance(v, ct.Array):
                    s += sum(int(getattr(x, "value", x)) for x in v)
                else:
                    s += int(getattr(v, "value", v))
            return s
        return total
    if hasattr(lost, "lost"):
        return lambda: int(lost.lost)
    raise TypeError(f"cannot read a loss count from {type(lost).__name__}")


# ------------------------------------------------------------- consumer ----
class RingBufferConsumer:
    """Drains a ring buffer in a reader thread and hands batches to `handler`
    in a handler thread, through a queue bounded to `queue_size` events.

    source      a BCC program (with map_name), a mock.MockRingBuf, or a RingReader
    ctype/dtype the record type (ctypes struct or numpy dtype). Without one:
                the event struct BCC found in the C source, else mode="bcc"
    handler     called with a pandas DataFrame per batch (numpy array if
                frames=False, list of bytes in records/bcc mode). Without a
                handler, batches are kept: take() returns them as one DataFrame.
    overflow    "drop": drop what does not fit in the queue (counted);
                "block": stop reading; the kernel-side ring fills instead
    lost        kernel-side loss counter: callable, BCC table or MockMap
    max_drop_ratio, max_lag_s   thresholds of `healthy`
    """

    def __init__(self, source, map_name: str | None = None, *, ctype=None, dtype=None,
                 handler: Callable[[Any], Any] | None = None, queue_size: int = 1_000_000,
                 batch_size: int = 1 << 16, overflow: str = "drop", frames: bool = True,
                 lost=None, mode: str | None = None, max_drop_ratio: float = 0.01,
                 max_lag_s: float = 1.0, ts_field: str | None = None, poll_timeout: float = 0.05,
                 linger_s: float = 0.001, decode_strings: bool = True):
        if overflow not in ("drop", "block"):
            raise ValueError("overflow must be 'drop' or 'block'")
        if mode not in (None, "fixed", "records", "bcc"):
            raise ValueError("mode must be 'fixed', 'records' or 'bcc'")
        self.handler, self.queue_size, self.batch_size = handler, queue_size, batch_size
        self.overflow, self.frames, self.ts_field = overflow, frames, ts_field
        self.max_drop_ratio, self.max_lag_s = max_drop_ratio, max_lag_s
        self.poll_timeout, self.linger_s, self.decode_strings = poll_timeout, linger_s, decode_strings
        self.mocked = False
        self._prog = None
        self._reader: RingReader | None = None
        self.dtype = _as_dtype(ctype, dtype)
        if lost is None and getattr(source, "mocked", False) and hasattr(source, "lost"):
            lost = source          # a MockRingBuf counts its own failed outputs
        self._lost = _counter_source(lost)
        self._lost_base = self._lost() if self._lost else 0
        self._open_source(source, map_name, mode)     # last: nothing to undo if the above fails

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[tuple[float, int, Any]] = deque()
        self._collected: list = []
        self._n = dict(received=0, handled=0, dropped=0, discarded=0, malformed=0, depth=0,
                       max_depth=0, batches=0, errors=0)
        self._fill = self._max_fill = self._max_lag = 0.0
        self._event_lag: float | None = None
        self._in_handler_since: float | None = None
        self.last_error: BaseException | None = None
        self._stop = threading.Event()
        self._drain = True
        self._readers_done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = time.monotonic()
        self._t_end: float | None = None
        self.closed = False

    # ----------------------------------------------------------- source --
    def _open_source(self, source, map_name, mode) -> None:
        if isinstance(source, RingReader):
            self._reader, self.mocked = source, source.mocked
            self.mode = mode or ("fixed" if self.dtype is not None else "records")
        elif getattr(source, "mocked", False) and hasattr(source, "producer_pos"):
            self._reader, self.mocked = RingReader.from_mock(source), True
            self.mode = mode or ("fixed" if self.dtype is not None else "records")
        else:
            if map_name is None:
                raise ValueError("give the name of the ring buffer map: RingBufferConsumer(prog, 'events')")
            self._prog, self._map_name = source, map_name
            table = source[map_name]
            if self.dtype is None and mode in (None, "fixed"):
                self.dtype = _bcc_event_dtype(table)
            self.mode = mode or ("fixed" if self.dtype is not None and _loads_are_ordered()
                                 else "bcc")
            if self.mode != "bcc":
                self._reader = RingReader.open(source, map_name)
        if self.mode == "fixed" and self.dtype is None:
            if self._reader is not None and self._reader is not source:
                self._reader.close()
            raise ValueError("mode='fixed' needs the record type: ctype= or dtype=")

    # ---------------------------------------------------------- threads --
    def start(self) -> "RingBufferConsumer":
        """Start the reader and handler threads (the with-statement does it)."""
        if self._threads:
            return self
        target = self._bcc_loop if self.mode == "bcc" else self._read_loop
        self._threads = [threading.Thread(target=target, name="ringbuf-reader", daemon=True),
                         threading.Thread(target=self._handle_loop, name="ringbuf-handler",
                                          daemon=True)]
        self._t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def _room(self) -> int:
        return self.queue_size - self._n["depth"]

    def _read_once(self, limit: int) -> int:
        if self.mode == "fixed":
            r = self._reader.read_fixed(self.dtype, limit)
        else:
            r = self._reader.read_records(limit)
        with self._lock:
            self._fill = r.fill
            self._max_fill = max(self._max_fill, r.fill)
            self._n["discarded"] += r.discarded
            self._n["malformed"] += r.malformed
        if r.count:
            self._offer(r.records, r.count)
        return r.count + r.discarded + r.malformed

    def _offer(self, records, n: int) -> None:
        """Queue a batch; in drop mode, what does not fit is dropped and counted."""
        now = time.monotonic()
        with self._cond:
            self._n["received"] += n
            room = self._room()
            if n > room:
                keep = max(room, 0)
                self._n["dropped"] += n - keep
                records, n = records[:keep], keep
            if n:
                self._queue.append((now, n, records))
                self._n["depth"] += n
                self._n["max_depth"] = max(self._n["max_depth"], self._n["depth"])
                self._cond.notify()

    def _wait_for_room(self, final: bool = False) -> int:
        """Block mode: wait until the queue has room; returns how much. The
        final pass (closing with drain) waits even though stop is set."""
        handler = self._threads[1] if len(self._threads) > 1 else None
        with self._cond:
            while self._room() <= 0 and (final or not self._stop.is_set()):
                if handler is not None and not handler.is_alive():
                    break
                self._cond.wait(0.05)
            return max(self._room(), 0)

    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                limit = self.batch_size
                if self.overflow == "block":
                    limit = min(limit, self._wait_for_room())
                    if limit <= 0:
                        continue
                got = self._read_once(limit)
                if got == 0:
                    self._reader.wait(self.poll_timeout)
                elif got < limit and self.linger_s:
                    time.sleep(self.linger_s)   # let a batch build up: fewer, larger batches
            # final pass: what the kernel wrote before we were told to stop
            while self._drain:
                limit = self.batch_size
                if self.overflow == "block":
                    limit = min(limit, self._wait_for_room(final=True))
                    if limit <= 0:
                        break
                if self._read_once(limit) == 0:
                    break
        except Exception as e:  # noqa: BLE001 - reported through stats, never lost silently
            self._fail(e)
        finally:
            self._readers_done.set()
            with self._cond:
                self._cond.notify_all()

    def _bcc_loop(self) -> None:
        """Fallback: BCC's ring_buffer_poll() calls back once per record."""
        batch: list[bytes] = []

        def on_event(_ctx, data, size):
            batch.append(ct.string_at(data, size))
            return 0
        try:
            self._prog[self._map_name].open_ring_buffer(on_event)
            while True:
                stopping = self._stop.is_set()
                if self.overflow == "block":
                    self._wait_for_room(final=stopping)
                if stopping:
                    if self._drain:
                        self._prog.ring_buffer_consume()
                else:
                    self._prog.ring_buffer_poll(int(self.poll_timeout * 1000))
                if batch:
                    self._offer(batch, len(batch))
                    batch = []
                if stopping:
                    break
        except Exception as e:  # noqa: BLE001
            self._fail(e)
        finally:
            self._readers_done.set()
            with self._cond:
                self._cond.notify_all()

    def _fail(self, e: BaseException) -> None:
        with self._lock:
            self._n["errors"] += 1
            self.last_error = e

    def _handle_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._readers_done.is_set():
                    self._cond.wait(0.1)
                if not self._queue:
                    return                     # reader finished and queue empty
                items = [self._queue.popleft()]
                n = items[0][1]
                while self._queue and n + self._queue[0][1] <= self.batch_size:
                    items.append(self._queue.popleft())   # small batches: join them into one
                    n += items[-1][1]
                self._in_handler_since = items[0][0]
            try:
                batch = self._join([i[2] for i in items])
                if self.ts_field and self.mode == "fixed" and n:
                    self._event_lag = time.monotonic() - int(batch[self.ts_field][-1]) / 1e9
                out = self._frame(batch) if self.frames and self.mode == "fixed" else batch
                if self.handler is None:
                    self._collected.append(out)
                else:
                    self.handler(out)
            except Exception as e:  # noqa: BLE001 - a handler bug must not kill the pipeline
                self._fail(e)
            now = time.monotonic()
            with self._cond:
                self._n["handled"] += n
                self._n["depth"] -= n
                self._n["batches"] += 1
                self._max_lag = max(self._max_lag, now - items[0][0])
                self._in_handler_since = None
                self._cond.notify_all()

    def _join(self, parts: list):
        if len(parts) == 1:
            return parts[0]
        if self.mode == "fixed":
            return concat_records(parts)
        return [r for p in parts for r in p]

    def _frame(self, arr: np.ndarray):
        import pandas as pd
        if arr.dtype.names is None:
            return pd.DataFrame({"value": arr})
        cols = {}
        for name in arr.dtype.names:
            col = arr[name]
            if col.dtype.kind == "S" and self.decode_strings:
                col = pd.Series(col).str.decode("utf-8", errors="replace").to_numpy()
            elif col.ndim > 1:
                col = list(col)
            cols[name] = col
        return pd.DataFrame(cols, copy=False)

    # ----------------------------------------------------------- public --
    def take(self):
        """Everything handled so far when there is no handler: one DataFrame
        (fixed mode with frames), else a list of batches. Clears it."""
        with self._lock:
            got, self._collected = self._collected, []
        if self.mode == "fixed" and self.frames:
            import pandas as pd
            if not got:
                return self._frame(np.empty(0, dtype=self.dtype))
            return pd.concat(got, ignore_index=True) if len(got) > 1 else got[0]
        if self.mode == "fixed":
            return concat_records(got) if got else np.empty(0, dtype=self.dtype)
        return [r for p in got for r in p]

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until `n` events were handled (True) or `timeout` passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._n["handled"] < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def wait_idle(self, timeout: float = 5.0, quiet: float = 0.05) -> bool:
        """Wait until the ring is empty and every read event is handled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = self._n["depth"] > 0
            if not busy and self._reader is not None and self._reader.available() == 0:
                time.sleep(quiet)
                with self._lock:
                    if self._n["depth"] == 0 and self._reader.available() == 0:
                        return True
            elif not busy and self._reader is None:
                time.sleep(quiet)
                return True
            time.sleep(0.005)
        return False

    @property
    def stats(self) -> ConsumerStats:
        """Counters now, with `healthy` and the reasons when it is not."""
        lost = (self._lost() - self._lost_base) if self._lost else None
        now = self._t_end or time.monotonic()
        with self._lock:
            n = dict(self._n)
            oldest = self._in_handler_since
            if oldest is None and self._queue:
                oldest = self._queue[0][0]
            lag = (now - oldest) if oldest is not None else 0.0
            max_lag = max(self._max_lag, lag)
            fill, max_fill, ev_lag = self._fill, self._max_fill, self._event_lag
        problems = []
        total = n["received"] + (lost or 0)
        if total and (n["dropped"] + (lost or 0)) / total > self.max_drop_ratio:
            problems.append(f"{n['dropped'] + (lost or 0)} of {total} events lost "
                            f"(> {self.max_drop_ratio:.1%})")
        if lag > self.max_lag_s:
            problems.append(f"lag {lag:.2f} s > {self.max_lag_s:.2f} s")
        if n["errors"]:
            problems.append(f"{n['errors']} handler/reader error(s), last: {self.last_error!r}")
        if n["malformed"]:
            problems.append(f"{n['malformed']} record(s) of an unexpected size skipped")
        return ConsumerStats(received=n["received"], handled=n["handled"], dropped=n["dropped"],
                             kernel_lost=lost, discarded=n["discarded"], malformed=n["malformed"],
                             queue_depth=n["depth"], max_queue_depth=n["max_depth"],
                             batches=n["batches"], handler_errors=n["errors"], lag_s=lag,
                             max_lag_s=max_lag, event_lag_s=ev_lag, ring_fill=fill,
                             max_ring_fill=max_fill, elapsed_s=now - self._t0,
                             healthy=not problems, problems=tuple(problems))

    @property
    def healthy(self) -> bool:
        return self.stats.healthy

    def close(self, drain: bool = True) -> ConsumerStats:
        """Stop the threads and unmap the ring. With `drain`, events already
        in the ring or the queue are handled first. Returns the final stats."""
        if self.closed:
            return self.stats
        self._drain = drain
        self._stop.set()
        if self._reader is not None:
            self._reader.wake()
        if not drain:            # what is queued is given up, and counted as dropped
            with self._cond:
                waiting = sum(i[1] for i in self._queue)
                self._n["dropped"] += waiting
                self._n["depth"] -= waiting
                self._queue.clear()
        for t in self._threads:
            t.join()
        self._readers_done.set()
        self._t_end = time.monotonic()
        if self._reader is not None:
            self._reader.close()
        self.closed = True
        return self.stats

    def __enter__(self) -> "RingBufferConsumer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self._threads else "not started")
        return f"<RingBufferConsumer {self.mode} {state}{' (mocked)' if self.mocked else ''}: {self.stats}>"


def _loads_are_ordered() -> bool:
    """True where the CPU keeps loads in order (x86-64, s390x), which the
    numpy fast path relies on; elsewhere the default is BCC's reader."""
    from ..kernel import arch
    try:
        return arch.current().name in ("x86_64", "s390x")
    except arch.UnsupportedArch:
        return False


def _as_dtype(ctype, dtype) -> np.dtype | None:
    if dtype is not None:
        return np.dtype(dtype)
    if ctype is not None:
        from ..data import ctype_dtype
        return ctype_dtype(ctype)
    return None


def _bcc_event_dtype(table) -> np.dtype | None:
    """The dtype of the struct BCC found for this ring buffer, if it found one."""
    try:
        from bcc.table import _get_event_class
        from ..data import ctype_dtype
        return ctype_dtype(_get_event_class(table))
    except Exception:  # noqa: BLE001 - no struct known: the caller falls back
        return None


__all__ = ["RingBufferConsumer", "RingReader", "ConsumerStats", "ReadResult", "map_info",
           "record_stride", "BUSY_BIT", "DISCARD_BIT", "HDR_SIZE"]
