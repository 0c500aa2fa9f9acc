"""`ConsumerGroup`: several ring buffers, one `RingBufferConsumer` each,
started and closed together, with one table of their health.

Why several rings: a ring buffer is shared by every event written to it, so
a flood of one kind fills it and the next reservation fails for every kind.
Give the rare, important events their own ring and a flood elsewhere cannot
make you lose them:

    with ConsumerGroup(execs=RingBufferConsumer(prog, "execs", handler=on_exec),
                       writes=RingBufferConsumer(prog, "writes", handler=on_write,
                                                 lost=prog["writes_lost"])) as group:
        ...
    group.stats_frame()          # one row per ring: received, dropped, kernel lost...
"""
from __future__ import annotations

import pandas as pd

from .consumer import RingBufferConsumer
from .stats import ConsumerStats

COLUMNS = ["received", "handled", "dropped", "kernel_lost", "batches", "max_ring_fill", "healthy"]


class ConsumerGroup:
    """Consumers by name; `with` starts them all and closes them all, even
    when one of them fails to start or to close."""

    def __init__(self, consumers: dict[str, RingBufferConsumer] | None = None,
                 **named: RingBufferConsumer):
        self.consumers: dict[str, RingBufferConsumer] = {**(consumers or {}), **named}
        if not self.consumers:
            raise ValueError("give at least one consumer: ConsumerGroup(name=RingBufferConsumer(...))")

    def __getitem__(self, name: str) -> RingBufferConsumer:
        return self.consumers[name]

    def start(self) -> "ConsumerGroup":
        try:
            for c in self.consumers.values():
                c.start()
        except BaseException:
            self.close(drain=False)
            raise
        return self

    def close(self, drain: bool = True) -> dict[str, ConsumerStats]:
        """Close every consumer (draining what is left when `drain`);
        returns the final stats by name. The first error is raised after
        all are closed."""
        error: BaseException | None = None
        for c in self.consumers.values():
            try:
                c.close(drain=drain)
            except BaseException as e:  # noqa: BLE001 - close the others first
                error = error or e
        if error is not None:
            raise error
        return self.stats

    @property
    def stats(self) -> dict[str, ConsumerStats]:
        return {name: c.stats for name, c in self.consumers.items()}

    @property
    def healthy(self) -> bool:
        return all(s.healthy for s in self.stats.values())

    def stats_frame(self) -> pd.DataFrame:
        """One row per ring buffer: what it received, dropped, lost in the kernel."""
        rows = {name: {k: getattr(s, k) for k in COLUMNS} for name, s in self.stats.items()}
        return pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS)

    def __enter__(self) -> "ConsumerGroup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ConsumerGroup {', '.join(self.consumers)}>"
