"""A whole trace: load, start or pick the target, stream or count, stop.

`run_command` is what `ebpf-tutor systrace -- cmd` and the chapter call:

    res = run_command(["ls", "/"], TraceOptions(summary=True))
    res.stats["openat"].calls

In stream mode, events come through the package's ring-buffer consumer
(`events.RingBufferConsumer`: one numpy batch at a time) and each becomes a
dict (`report.event_record`) handed to `on_event`.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from . import probes, report
from .probes import SyscallStat, TraceOptions, Tracer


@dataclass
class TraceResult:
    exit_status: int | None = None
    stats: dict[str, SyscallStat] = field(default_factory=dict)   # summary mode
    events: int = 0            # stream mode: events handled
    lost: int = 0              # ring buffer full in the kernel
    dropped: int = 0           # user-space queue full
    interrupted: bool = False
    pid: int | None = None


def _consumer(tracer: Tracer, on_event: Callable[[dict], None], result: TraceResult):
    from ...events import RingBufferConsumer

    def handle(batch) -> None:
        for e in batch:
            on_event(report.event_record(e))
            result.events += 1

    return RingBufferConsumer(tracer.prog, "events", ctype=probes.Event, handler=handle,
                              frames=False, overflow="block", lost=tracer.prog["lost"],
                              decode_strings=False)


def trace(opts: TraceOptions, *, argv: list[str] | None = None,
          on_event: Callable[[dict], None] | None = None, duration: float | None = None,
          until_pid_exits: int | None = None,
          on_ready: Callable[[str], None] | None = None) -> TraceResult:
    """Trace `argv` (started stopped, followed into children) or what `opts`
    selects, until the command ends, `duration` passes or Ctrl-C. `on_ready`
    is called once the program is attached (and before a command runs), with
    the tracer's one-line note ("" or what it fell back to)."""
    result = TraceResult()
    on_event = on_event or (lambda rec: None)
    child = None
    if argv:
        opts.follow = True
        child = probes.start_stopped(argv)      # before BCC: no threads to fork
        result.pid = child
    try:
        with Tracer(opts) as tracer:
            rb = None if opts.summary else _consumer(tracer, on_event, result)
            with (rb if rb is not None else contextlib.nullcontext()):
                try:
                    if on_ready is not None:
                        on_ready(tracer.note)
                    if child is not None:
                        tracer.add_pid(child)
                        probes.resume(child)
                        result.exit_status = probes.wait(child)
                        child = None
                    else:
                        _wait(duration, until_pid_exits)
                except KeyboardInterrupt:
                    result.interrupted = True
                if rb is not None:
                    rb.wait_idle(timeout=2.0)
                    stats = rb.close(drain=True)
                    result.dropped = stats.dropped
            if opts.summary:
                result.stats = tracer.summary()
            result.lost = tracer.lost()
    finally:
        if child is not None:                   # an error or Ctrl-C before it ended
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
                os.kill(child, signal.SIGCONT)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, 0)
    return result


def _wait(duration: float | None, pid: int | None) -> None:
    end = time.monotonic() + duration if duration else None
    while end is None or time.monotonic() < end:
        if pid is not None and not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.05)


def run_command(argv: list[str], opts: TraceOptions | None = None,
                on_event: Callable[[dict], None] | None = None) -> TraceResult:
    """Trace one command and its children to the end."""
    return trace(opts or TraceOptions(), argv=argv, on_event=on_event)
