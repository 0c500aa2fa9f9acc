"""Maps and events into pandas."""
import ctypes as ct
import os

import numpy as np

from ebpf_tutor import data
from tests.conftest import needs_root


def test_log2_ranges():
    df = data.log2_counts_df({0: 1, 1: 2, 4: 5})
    assert list(df["low"][:5]) == [0, 0, 2, 4, 8]     # slot 1 holds 0 and 1
    assert list(df["high"][:5]) == [1, 2, 4, 8, 16]
    assert list(df["count"]) == [1, 2, 0, 0, 5]


def test_records_decode_in_one_batch():
    class Ev(ct.Structure):
        _fields_ = [("pid", ct.c_uint32), ("comm", ct.c_char * 8), ("ts", ct.c_uint64)]
    evs = [Ev(i, b"proc%d" % i, 1000 + i) for i in range(3)]
    raw = b"".join(bytes(e) for e in evs)
    df = data.records_df(raw, data.ctype_dtype(Ev))
    assert list(df["pid"]) == [0, 1, 2]
    assert list(df["comm"]) == ["proc0", "proc1", "proc2"]
    assert df["ts"].dtype == np.uint64


def test_records_of_a_plain_type_are_one_value_column():
    raw = np.array([7, 8, 9], dtype=np.uint64).tobytes()
    df = data.records_df(raw, np.dtype(np.uint64))
    assert list(df.columns) == ["value"] and list(df["value"]) == [7, 8, 9]


@needs_root
def test_event_dtype_is_the_struct_bcc_parsed_or_none():
    from ebpf_tutor import Program
    src = """
    struct ev { u32 pid; char comm[16]; };
    BPF_RINGBUF_OUTPUT(events, 8);
    BPF_RINGBUF_OUTPUT(plain, 8);
    int out(void *ctx) { struct ev e = {}; events.ringbuf_output(&e, sizeof(e), 0);
                         u64 v = 1; plain.ringbuf_output(&v, sizeof(v), 0); return 0; }
    """
    with Program(src) as p:
        dt = data.event_dtype(p["events"])
        assert dt.names == ("pid", "comm") and dt.itemsize == 20
        assert data.event_dtype(p["plain"]) is None


def test_plot_log2_hist_draws_one_bar_per_used_slot():
    import matplotlib
    matplotlib.use("Agg")
    ax = data.plot_log2_hist(data.log2_counts_df({3: 4, 5: 1}), unit="us")
    assert len(ax.patches) == 3          # slots 3, 4 (empty, kept in the middle), 5


@needs_root
def test_hash_and_histogram_maps_to_frames():
    from ebpf_tutor import Program
    src = """
    struct key_t { u32 pid; char comm[16]; };
    BPF_HASH(calls, struct key_t, u64);
    BPF_HISTOGRAM(sizes, int, 64);
    TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
        struct key_t k = {};
        k.pid = bpf_get_current_pid_tgid() >> 32;
        if (k.pid != TGID) return 0;
        bpf_get_current_comm(&k.comm, sizeof(k.comm));
        calls.increment(k);
        sizes.increment(bpf_log2l(1000));
        return 0;
    }
    """.replace("TGID", str(os.getpid()))
    with Program(src) as p:
        for _ in range(4):
            os.getppid()
        df = data.table_df(p["calls"])
        hist = data.log2_hist_df(p["sizes"])
    assert list(df.columns) == ["pid", "comm", "value"]
    assert df.loc[0, "pid"] == os.getpid() and df.loc[0, "value"] == 4
    assert hist.loc[hist["count"] > 0, "low"].tolist() == [512]
    assert hist["count"].sum() == 4


@needs_root
def test_bpf_log2l_files_values_where_log2_hist_df_says():
    """bpf_log2l(v) is bpf_log2(v) + 1 in BCC's helpers.h: 0 and 1 both land
    in slot 1, never slot 0; each value lies in its slot's [low, high)."""
    from ebpf_tutor import Program
    values = [0, 1, 2, 3, 4, 1000, 1 << 31, (1 << 32) + 5]
    incs = "".join(f"h.increment(bpf_log2l({v}ULL));" for v in values)
    src = ("BPF_HISTOGRAM(h, int, 64);\nTRACEPOINT_PROBE(syscalls, sys_enter_getppid) {"
           f"if (bpf_get_current_pid_tgid() >> 32 != {os.getpid()}) return 0; {incs} return 0;}}")
    with Program(src) as p:
        os.getppid()
        hist = data.log2_hist_df(p["h"])
    got = {int(s): int(c) for s, c in zip(hist["slot"], hist["count"]) if c}
    assert got.get(0, 0) == 0 and got[1] == 2             # 0 and 1
    rows = hist.set_index("slot")
    for v in values:
        slot = max(1, v.bit_length())
        assert rows.loc[slot, "low"] <= v < rows.loc[slot, "high"] and rows.loc[slot, "count"] > 0


@needs_root
def test_ring_buffer_events_to_frame():
    from ebpf_tutor import EventCollector, Program
    src = """
    struct ev_t { u32 pid; u32 n; };
    BPF_RINGBUF_OUTPUT(events, 8);
    BPF_ARRAY(seq, u32, 1);
    TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
        if ((bpf_get_current_pid_tgid() >> 32) != TGID) return 0;
        int k = 0;
        u32 *s = seq.lookup(&k);
        if (!s) return 0;
        struct ev_t ev = {.pid = TGID, .n = *s};
        __sync_fetch_and_add(s, 1);
        events.ringbuf_output(&ev, sizeof(ev), 0);
        return 0;
    }
    """.replace("TGID", str(os.getpid()))
    with Program(src) as p:
        ec = EventCollector(p, "events")
        for _ in range(50):
            os.getppid()
        df = ec.drain()
    assert len(df) == 50
    assert df["n"].tolist() == list(range(50))
    assert (df["pid"] == os.getpid()).all()


@needs_root
def test_per_cpu_values_get_a_column_each_and_a_total():
    from ebpf_tutor import Program
    src = """
    BPF_PERCPU_ARRAY(n, u64, 1);
    TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
        if ((bpf_get_current_pid_tgid() >> 32) == TGID) n.increment(0);
        return 0;
    }
    """.replace("TGID", str(os.getpid()))
    with Program(src) as p:
        for _ in range(5):
            os.getppid()
        df = data.table_df(p["n"])
    cpu_cols = [c for c in df.columns if c.startswith("cpu")]
    assert len(cpu_cols) == os.cpu_count()
    assert df.loc[0, "value"] == 5 == df.loc[0, cpu_cols].sum()
