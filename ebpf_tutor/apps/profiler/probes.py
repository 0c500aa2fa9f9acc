"""The four modes' BPF programs (the .bpf.c files beside this module), loaded,
attached and read back as folded stacks or a histogram.

    with Session("oncpu", pid=1234, freq=99) as s:
        time.sleep(5)
        s.collect()          # symbolize what is new while the process lives
        folded = s.folded()  # {"comm;main;f;g": samples}
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...program import Program
from .fold import Folded, fold
from .symbols import Symbolizer

HERE = Path(__file__).parent
MODES = {
    "oncpu": ("samples", "on-CPU samples at FREQ Hz, kernel and user stacks"),
    "offcpu": ("ns", "time blocked off the CPU per stack (sched:sched_switch)"),
    "alloc": ("bytes", "bytes malloc'ed and not yet freed per stack (libc uprobes)"),
    "io": ("requests", "block I/O latency per device, log2 microseconds"),
}
MAX_KEYS, MAX_STACKS, MAX_BLOCKS = 16384, 16384, 262144
BLOCK_TRACEPOINTS = ("block/block_rq_issue", "block/block_rq_complete")
TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


class Unavailable(RuntimeError):
    """What a mode needs is missing on this kernel (said in one line)."""


def source(mode: str) -> str:
    return (HERE / f"{mode}.bpf.c").read_text()


def cflags(pid: int | None) -> list[str]:
    wanted = f"((p) == {int(pid)})" if pid else "1"
    return [f"-DWANTED(p)={wanted}", f"-DMAX_KEYS={MAX_KEYS}", f"-DMAX_STACKS={MAX_STACKS}",
            f"-DMAX_BLOCKS={MAX_BLOCKS}"]


def tracepoint_exists(name: str) -> bool:
    return any((root / "events" / name).is_dir() for root in TRACEFS)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return str(pid)


@dataclass
class IoBucket:
    dev: str        # "major:minor"
    low_us: int
    high_us: int
    count: int


class Session:
    """One mode's program loaded and attached; closes on exit."""

    def __init__(self, mode: str, pid: int | None = None, freq: int = 99):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, not {mode!r}")
        self.mode, self.pid, self.freq = mode, pid, freq
        if mode == "io":
            missing = [t for t in BLOCK_TRACEPOINTS if not tracepoint_exists(t)]
            if missing:
                raise Unavailable(f"{', '.join(missing)}: not on this kernel; io mode cannot run")
        self.prog = Program(source(mode), cflags=cflags(pid), name=f"profile {mode}")
        try:
            self._attach()
        except BaseException:
            self.prog.close()
            raise
        self.symbols = Symbolizer(self.prog) if mode != "io" else None
        self._folded: Folded = {}

    @property
    def unit(self) -> str:
        return MODES[self.mode][0]

    def _attach(self) -> None:
        if self.mode == "oncpu":
            from bcc import PerfSWConfig, PerfType
            self.prog.attach_perf_event(ev_type=PerfType.SOFTWARE,
                                        ev_config=PerfSWConfig.CPU_CLOCK,
                                        fn_name="on_sample", sample_freq=self.freq)
        elif self.mode == "alloc":
            pid = self.pid or -1
            self.prog.attach_uprobe(name="c", sym="malloc", fn_name="on_malloc", pid=pid)
            self.prog.attach_uretprobe(name="c", sym="malloc", fn_name="on_malloc_return", pid=pid)
            self.prog.attach_uprobe(name="c", sym="free", fn_name="on_free", pid=pid)
        # offcpu and io: TRACEPOINT_PROBE functions attach when loaded

    def _table(self) -> str:
        return {"oncpu": "counts", "offcpu": "blocked", "alloc": "outstanding"}[self.mode]

    def collect(self) -> Folded:
        """Read the map and symbolize every stack not named yet (call it while
        the profiled processes are alive); returns the folded stacks so far."""
        if self.mode == "io":
            raise ValueError("io mode gives a histogram: use histogram()")
        rows = []
        for k, v in self.prog[self._table()].items():
            if self.mode == "alloc":
                value, comm, uid, kid = v.bytes, _comm(k.pid), k.stack_id, -1
            else:
                value, comm = v.value, k.comm.decode(errors="replace")
                uid, kid = k.user_stack_id, k.kernel_stack_id
            if value:
                frames = self.symbols.frames(comm, k.pid, uid, kid)
                rows.append((frames, value))
        self._folded = fold(rows)
        return self._folded

    def folded(self) -> Folded:
        return self.collect()

    def histogram(self) -> list[IoBucket]:
        """io mode: non-empty log2 buckets per device, in microseconds."""
        out = []
        for k, v in sorted(self.prog["dist"].items(), key=lambda kv: (kv[0].dev, kv[0].slot)):
            low = 0 if k.slot == 0 else 1 << k.slot
            out.append(IoBucket(f"{k.dev >> 20}:{k.dev & 0xfffff}", low,
                                (1 << (k.slot + 1)) - 1, int(v.value)))
        return out

    def close(self) -> None:
        self.prog.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
