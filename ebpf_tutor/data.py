"""From BPF maps and events to pandas and matplotlib.

    counts_df = table_df(prog["counts"])          # any hash/array map
    hist_df = log2_hist_df(prog["latency"])        # BPF_HISTOGRAM of log2 slots
    plot_log2_hist(hist_df, unit="us")
    events = EventCollector(prog, "events")        # ring buffer, decoded in batches
"""
from __future__ import annotations

import ctypes as ct
from typing import Any

import numpy as np
import pandas as pd


# ------------------------------------------------------------- ctypes -> py --
def _plain(value: Any) -> Any:
    """A ctypes scalar, array or char buffer as a plain Python value."""
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode(errors="replace")
    if isinstance(value, ct.Array):
        if value._type_ is ct.c_char:
            return value.value.decode(errors="replace")
        return [_plain(v) for v in value]
    if hasattr(value, "value"):
        return value.value
    return value


def flatten(obj: Any, prefix: str) -> dict[str, Any]:
    """Columns for one key or value: struct fields become their own columns."""
    if isinstance(obj, ct.Structure) or isinstance(obj, ct.Union):
        row: dict[str, Any] = {}
        for name, *_ in obj._fields_:
            row.update(flatten(getattr(obj, name), name))
        return row
    return {prefix: _plain(obj)}


def _items(table) -> list[tuple[Any, Any]]:
    """All (key, value) pairs, fetched with one batch syscall when the kernel
    and map type allow it (hash maps on 5.6+), else by iteration."""
    try:
        return list(table.items_lookup_batch())
    except Exception:  # noqa: BLE001 - batch ops unsupported for this map type
        return list(table.items())


def table_df(table, key: str = "key", value: str = "value", sort: bool = True,
             nonzero: bool = False) -> pd.DataFrame:
    """A BCC table (hash, array, per-CPU...) as a DataFrame, one row per entry.

    Struct keys and values are spread over columns named after their fields.
    Per-CPU values become one column per CPU plus a `total` (or the sum when
    `value` is not a struct). `nonzero=True` drops all-zero array slots."""
    rows = []
    for k, v in _items(table):
        row = flatten(k, key)
        if isinstance(v, ct.Array) and not isinstance(v, (bytes, str)) and v._type_ is not ct.c_char \
                and (getattr(table, "total_value", None) or getattr(table, "total_cpu", None)):
            # a per-CPU map: one value per CPU
            per_cpu = [_plain(x) for x in v]
            row.update({f"cpu{i}": x for i, x in enumerate(per_cpu)})
            row[value] = sum(per_cpu) if all(isinstance(x, (int, float)) for x in per_cpu) else None
        else:
            row.update(flatten(v, value))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if nonzero and value in df:
        df = df[df[value] != 0]
    if sort and value in df:
        df = df.sort_values(value, ascending=False, kind="stable")
    return df.reset_index(drop=True)


def log2_hist_df(table, slots: int | None = None) -> pd.DataFrame:
    """A log2 histogram map (key = slot index, value = count) as rows of
    [low, high) ranges, as BCC's bpf_log2l() files values: slot s >= 2 counts
    2**(s-1) <= v < 2**s, and slot 1 counts both v == 0 and v == 1, because
    bpf_log2l(v) is bpf_log2(v) + 1 and bpf_log2(0) == bpf_log2(1) == 0 (see
    helpers.h). bpf_log2l() never returns 0: slot 0 only fills if a program
    stores its own index there, and is shown as [0, 1)."""
    counts: dict[int, int] = {}
    for k, v in _items(table):
        slot = _plain(k) if not isinstance(k, ct.Structure) else getattr(k, "slot")
        counts[int(slot)] = counts.get(int(slot), 0) + int(_plain(v) if not isinstance(v, ct.Array)
                                                            else sum(_plain(v)))
    return log2_counts_df(counts, slots)


def slot_range(slot: int) -> tuple[int, int]:
    """[low, high) of the values bpf_log2l() files in `slot`: [0, 2) for slot 1
    (0 and 1 both land there), [2**(s-1), 2**s) above, [0, 1) for slot 0."""
    if slot <= 1:
        return 0, 1 << slot
    return 1 << (slot - 1), 1 << slot


def log2_counts_df(counts: dict[int, int], slots: int | None = None) -> pd.DataFrame:
    """The same rows, from a {slot: count} dict (also handy in tests)."""
    used = [s for s, c in counts.items() if c]
    top = (max(used) + 1) if used else 1
    if slots is not None:
        top = max(top, slots)
    lo = [slot_range(s)[0] for s in range(top)]
    hi = [slot_range(s)[1] for s in range(top)]
    return pd.DataFrame({"slot": range(top), "low": lo, "high": hi,
                         "count": [counts.get(s, 0) for s in range(top)]})


def plot_log2_hist(df: pd.DataFrame, unit: str = "", title: str = "", ax=None):
    """Bar chart of a log2 histogram DataFrame; returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    df = df[df["count"].cumsum() > 0]                     # drop empty leading slots
    df = df.iloc[: (df["count"][::-1].cumsum() > 0)[::-1].sum()]  # and empty trailing ones
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    labels = [f"{_si(lo)}–{_si(hi)}" for lo, hi in zip(df["low"], df["high"])]
    ax.bar(range(len(df)), df["count"], color="#4C72B0")
    ax.set_xticks(range(len(df)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel(f"value range{f' ({unit})' if unit else ''}, log2 buckets")
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    ax.figure.tight_layout()
    return ax


def _si(n: int) -> str:
    for div, suffix in ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


# ------------------------------------------------------------------ events --
def ctype_dtype(ctype) -> np.dtype:
    """The numpy dtype with the same memory layout as a ctypes struct;
    char arrays become byte strings (S16) rather than 16 single bytes."""
    dt = np.dtype(ctype)
    if dt.names is None:
        return dt
    formats = []
    for name in dt.names:
        fdt = dt.fields[name][0]
        if fdt.subdtype and fdt.subdtype[0] == np.dtype("S1") and len(fdt.subdtype[1]) == 1:
            fdt = np.dtype(f"S{fdt.subdtype[1][0]}")
        formats.append(fdt)
    return np.dtype({"names": list(dt.names), "formats": formats,
                     "offsets": [dt.fields[n][1] for n in dt.names], "itemsize": dt.itemsize})


def event_dtype(table) -> np.dtype | None:
    """The dtype of the event struct BCC parsed from the C source for a ring
    or perf buffer map; None when it found none (say, a plain u64 sample)."""
    from bcc.table import _get_event_class
    dt = ctype_dtype(_get_event_class(table))
    return dt if dt.itemsize else None


def records_frame(arr: np.ndarray, decode_strings: bool = True, copy: bool = True) -> pd.DataFrame:
    """A numpy array of records as a DataFrame, one column per field (a plain
    array: one `value` column). Byte-string fields such as `comm` become str
    columns unless `decode_strings=False`; array fields become list columns.
    `copy=False` lets columns be views of `arr` (which must then stay unchanged)."""
    if arr.dtype.names is None:
        return pd.DataFrame({"value": arr}, copy=copy)
    cols = {}
    for name in arr.dtype.names:
        col = arr[name]
        if col.dtype.kind == "S" and decode_strings:
            col = pd.Series(col).str.decode("utf-8", errors="replace").to_numpy()
        elif col.ndim > 1:
            col = list(col)
        cols[name] = col
    return pd.DataFrame(cols, copy=copy)


def records_df(raw: bytes, dtype: np.dtype) -> pd.DataFrame:
    """Decode many packed records at once (one numpy call, no per-event objects).
    Byte-string fields such as `comm` become str columns."""
    return records_frame(np.frombuffer(raw, dtype=dtype))


class EventCollector:
    """Drains a BPF_RINGBUF_OUTPUT (or BPF_PERF_OUTPUT) map into a DataFrame.

    Each event is copied as raw bytes in the callback (cheap); decoding
    happens once per `drain()`, for all events at once, with numpy."""

    def __init__(self, prog, map_name: str, ctype=None, page_cnt: int = 64):
        self._chunks: list[bytes] = []
        self.table = prog[map_name]
        self._size = 0
        self._dtype = ctype_dtype(ctype) if ctype is not None else None
        self.lost = 0
        self._is_ring = type(self.table).__name__ == "RingBuf"
        if self._is_ring:
            self.table.open_ring_buffer(self._on_event)
        else:
            self.table.open_perf_buffer(self._on_event, lost_cb=self._on_lost, page_cnt=page_cnt)
        self._prog = prog

    def _on_event(self, _ctx, data, size):
        self._chunks.append(ct.string_at(data, size))
        return 0

    def _on_lost(self, n):
        self.lost += n

    def poll(self, timeout_ms: int = 100) -> int:
        """Read whatever the kernel has queued; returns how many events are held."""
        if self._is_ring:
            self._prog.ring_buffer_consume() if timeout_ms == 0 else self._prog.ring_buffer_poll(timeout_ms)
        else:
            self._prog.perf_buffer_poll(timeout_ms)
        return len(self._chunks)

    def drain(self) -> pd.DataFrame:
        """All events received so far, decoded in one batch; clears the buffer."""
        self.poll(0)
        if self._dtype is None:
            self._dtype = event_dtype(self.table)
        size = self._dtype.itemsize if self._dtype is not None else 0
        if size == 0:
            raise ValueError("BCC knows no event struct for this map: pass ctype= (a ctypes "
                             "Structure) to EventCollector, or submit a named struct type")
        raw = b"".join(c[:size].ljust(size, b"\0") for c in self._chunks)
        self._chunks.clear()
        return records_df(raw, self._dtype)

    def close(self) -> None:
        """Stop reading. A perf buffer and BCC's table keep each other alive;
        without this, BCC later cleans up on a closed map and prints noise."""
        if not self._is_ring:
            for cpu in list(getattr(self.table, "_open_key_fds", {})):
                del self.table[cpu]

    def __enter__(self) -> "EventCollector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
