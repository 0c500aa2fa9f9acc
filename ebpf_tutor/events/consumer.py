"""`RingBufferConsumer`: a reader thread drains the ring into a bounded queue,
a handler thread turns batches into DataFrames; overflow drops (counted) or
blocks (the kernel-side ring fills instead)."""
from __future__ import annotations

import contextlib
import ctypes as ct
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from .ring import RingReader, concat_records
from .stats import ConsumerStats, counter_source


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
        self._lost = counter_source(lost)
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
                from ..data import event_dtype
                with contextlib.suppress(Exception):     # no struct known: fall back below
                    self.dtype = event_dtype(table)
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
            self._reader_finished()

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
            self._reader_finished()

    def _reader_finished(self) -> None:
        """Tell the handler thread that no more batches will come."""
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
        """A batch as a DataFrame; its columns are views of `arr`, our own copy."""
        from ..data import records_frame
        return records_frame(arr, decode_strings=self.decode_strings, copy=False)

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
        if not got:
            return np.empty(0, dtype=self.dtype) if self.mode == "fixed" else []
        return self._join(got)

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
    """The record type given as dtype= (first) or ctype=, or None."""
    if dtype is not None:
        return np.dtype(dtype)
    if ctype is not None:
        from ..data import ctype_dtype
        return ctype_dtype(ctype)
    return None
