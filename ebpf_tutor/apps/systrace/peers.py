"""systrace beside the tools people use: `strace -c -f` and BCC's syscount.

Counts: `strace_counts(argv)` runs a command under `strace -c -f` and
returns its table; `systrace_counts(argv)` the same command under systrace.

Overhead: `dd if=/dev/zero of=/dev/null bs=1 count=N` makes two system calls
per byte. dd times its own copy loop and prints it ("..., 0.05 s, ..."), so
every tool is judged on the same clock, without its own start-up: the tool is
attached first (dd is started stopped and resumed once the tool is ready),
then dd runs. `overhead_round(n)` runs dd bare and under each tool once;
`overhead(n, repeats)` keeps each tool's best (shortest) time, which is the
least disturbed by other work on a shared machine.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from . import probes, report

SYSCOUNT = ("syscount-bpfcc", "syscount")
TOOLS = ("bare", "strace -c", "syscount", "syscount -L", "systrace -c --no-latency", "systrace -c",
         "systrace stream")
_DD_TIME = re.compile(rb"copied, ([0-9.e+-]+) s")


def syscount_path() -> str | None:
    for name in SYSCOUNT:
        path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
        if path:
            return path
    return None


def strace_counts(argv: list[str]) -> dict[str, tuple[int, int]]:
    """{syscall: (calls, errors)} from `strace -c -f` of `argv`."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(["strace", "-q", "-c", "-f", "-o", out.name, *argv], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return report.parse_strace_c(open(out.name).read())


def systrace_counts(argv: list[str]) -> dict[str, tuple[int, int]]:
    """{syscall: (calls, errors)} from systrace -c of `argv` (children followed)."""
    from .session import run_command
    res = run_command(argv, probes.TraceOptions(summary=True))
    return {name: (s.calls, s.errors) for name, s in res.stats.items()}


def dd_argv(n: int) -> list[str]:
    return ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={n}"]


def dd_seconds(stderr: bytes) -> float:
    m = _DD_TIME.search(stderr)
    if not m:
        raise RuntimeError(f"dd printed no timing: {stderr[-200:]!r}")
    return float(m.group(1))


def _dd_stopped(n: int) -> tuple[int, str]:
    """dd started stopped, its stderr going to a temp file (returned)."""
    fd, errfile = tempfile.mkstemp(suffix=".dd")
    pid = probes.start_stopped(dd_argv(n), stderr_fd=fd)
    os.close(fd)
    return pid, errfile


def _finish(pid: int, errfile: str) -> float:
    probes.resume(pid)
    probes.wait(pid)
    try:
        with open(errfile, "rb") as f:
            return dd_seconds(f.read())
    finally:
        os.unlink(errfile)


def _reap(pid: int, errfile: str) -> None:
    """A run that did not reach _finish: kill its stopped dd, remove its file."""
    if os.path.exists(errfile):
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
            os.waitpid(pid, 0)
        os.unlink(errfile)


def run_bare(n: int) -> float:
    pid, errfile = _dd_stopped(n)
    return _finish(pid, errfile)


def run_strace(n: int) -> float:
    out = subprocess.run(["strace", "-q", "-c", "-f", "-o", os.devnull, *dd_argv(n)],
                         capture_output=True, check=True)
    return dd_seconds(out.stderr)


def run_syscount(n: int, latency: bool = False) -> float:
    """dd under syscount -p (attached before dd runs)."""
    path = syscount_path()
    if path is None:
        raise FileNotFoundError("syscount-bpfcc not found (Debian package bpfcc-tools)")
    from ...program import use_verified_headers
    use_verified_headers()        # BCC_KERNEL_SOURCE for syscount's own compile, as for ours
    pid, errfile = _dd_stopped(n)
    cmd = ["/usr/bin/python3", path, "-p", str(pid)] + (["-L"] if latency else [])
    tool = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = tool.stdout.readline()            # "Tracing syscalls, ..." once attached
        if not line.startswith(b"Tracing"):
            raise RuntimeError(f"syscount did not start: {line!r}")
        return _finish(pid, errfile)
    finally:
        tool.send_signal(signal.SIGINT)
        try:
            tool.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            tool.kill()
            tool.communicate()
        _reap(pid, errfile)


def run_systrace(n: int, summary: bool = True, latency: bool = True, **opts) -> float:
    """dd under systrace (-c: counted in the kernel; else streamed and decoded)."""
    from .session import _consumer, TraceResult
    pid, errfile = _dd_stopped(n)
    try:
        with probes.Tracer(probes.TraceOptions(summary=summary, latency=latency, pids=[pid], **opts)) as tr:
            if summary:
                secs = _finish(pid, errfile)
                calls = sum(s.calls for s in tr.summary().values())
            else:
                res = TraceResult()
                with _consumer(tr, lambda rec: None, res) as rb:
                    secs = _finish(pid, errfile)
                    rb.wait_idle(timeout=10)
                calls = res.events
            lost = tr.lost()
        if calls + lost < 2 * n:
            raise RuntimeError(f"systrace saw {calls} calls of dd (+{lost} lost), expected {2 * n}+")
        LAST_RUN.update(mode="summary" if summary else "stream", calls=calls, lost=lost)
        return secs
    finally:
        _reap(pid, errfile)


LAST_RUN: dict = {}      # what the last systrace run saw: calls, lost (ring full)

RUNNERS = {
    "bare": run_bare,
    "strace -c": run_strace,
    "syscount": run_syscount,
    "syscount -L": lambda n: run_syscount(n, latency=True),
    "systrace -c --no-latency": lambda n: run_systrace(n, latency=False),
    "systrace -c": run_systrace,
    "systrace stream": lambda n: run_systrace(n, summary=False),
}


@dataclass
class Overhead:
    """Best dd time per tool over the repeats, and each tool's ratio to bare."""
    n: int
    repeats: int
    times: dict[str, list[float]] = field(default_factory=dict)

    def best(self, tool: str) -> float:
        return min(self.times[tool])

    def ratio(self, tool: str) -> float:
        """dd's time under `tool` / dd's time bare (1.0 = no overhead)."""
        return self.best(tool) / self.best("bare")

    def extra(self, tool: str) -> float:
        """Seconds the tool added to dd's run."""
        return max(self.best(tool) - self.best("bare"), 1e-9)

    def less_than_strace(self, tool: str) -> float:
        """How many times less overhead than strace -c (extra time / extra time)."""
        return self.extra("strace -c") / self.extra(tool)

    def per_call_ns(self, tool: str) -> float:
        return self.extra(tool) / (2 * self.n) * 1e9

    def rows(self) -> list[dict]:
        return [{"tool": t, "best_s": self.best(t), "ratio_to_bare": self.ratio(t),
                 "added_ns_per_call": self.per_call_ns(t) if t != "bare" else 0.0,
                 "runs": len(self.times[t])} for t in self.times]


def overhead(n: int = 50_000, repeats: int = 3, tools=TOOLS) -> Overhead:
    """Interleaved rounds (bare, then each tool), best of `repeats` per tool."""
    res = Overhead(n, repeats, {t: [] for t in tools})
    if "bare" not in res.times:
        res.times["bare"] = []
    for _ in range(repeats):
        for tool in res.times:
            res.times[tool].append(RUNNERS[tool](n))
            time.sleep(0.05)
    return res
