"""What a consumer reports: `ConsumerStats`, a snapshot of its counters and
health, and the source of the kernel-side loss count (`lost=`)."""
from __future__ import annotations

import ctypes as ct
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


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


def counter_source(lost) -> Callable[[], int] | None:
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
