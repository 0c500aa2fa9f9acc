"""Linux perf on the same process: `perf record -F 99 -g`, then `perf script`
folded by our own parser, for the chapter's peer check."""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .fold import Folded, fold
from .symbols import KERNEL_SUFFIX

FRAME = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)$")


def available() -> bool:
    return shutil.which("perf") is not None


def record(pid: int, seconds: float, freq: int = 99) -> Folded:
    """Sample `pid` with perf for `seconds` (cpu-clock, frame-pointer stacks)
    and return its folded stacks, comm first, kernel frames marked as ours are."""
    with tempfile.TemporaryDirectory(prefix="ebt-perf-") as tmp:
        data = Path(tmp) / "perf.data"
        subprocess.run(["perf", "record", "-q", "-F", str(freq), "-g", "-p", str(pid),
                        "-o", str(data), "--", "sleep", str(seconds)],
                       check=True, capture_output=True, text=True)
        out = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,pid,ip,sym,dso"],
                             check=True, capture_output=True, text=True).stdout
    return parse_script(out)


class Recorder:
    """`perf record -F FREQ -g -p PID` running in the background until stop(),
    which returns the folded stacks. Use as a context manager."""

    def __init__(self, pid: int, freq: int = 99):
        self._tmp = tempfile.TemporaryDirectory(prefix="ebt-perf-")
        self.data = Path(self._tmp.name) / "perf.data"
        self.proc = subprocess.Popen(["perf", "record", "-q", "-F", str(freq), "-g", "-p",
                                      str(pid), "-o", str(self.data)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.started = time.monotonic()

    def stop(self) -> Folded:
        """SIGINT (perf's Ctrl-C: it writes its file and exits), then fold."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        if not self.data.exists():
            raise RuntimeError(f"perf record wrote nothing: {err.strip()[-500:]}")
        out = subprocess.run(["perf", "script", "-i", str(self.data), "-F",
                              "comm,pid,ip,sym,dso"], check=True, capture_output=True,
                             text=True).stdout
        return parse_script(out)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._tmp.cleanup()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_script(text: str) -> Folded:
    """`perf script` output (a header line per sample, then its frames leaf
    first, one per line, then a blank line) -> folded stacks."""
    samples, comm, frames = [], None, []
    for line in text.splitlines() + [""]:
        if not line.strip():
            if comm is not None:
                samples.append(((comm, *reversed(frames)), 1))
            comm, frames = None, []
        elif comm is None:             # "comm pid": the comm may hold spaces
            comm = re.sub(r"\s+\d+$", "", line.strip())
        else:
            m = FRAME.match(line)
            if not m:
                continue
            sym, dso = m.group(2), m.group(3)
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            if dso.startswith("[kernel"):
                sym += KERNEL_SUFFIX
            frames.append(sym)
    return fold(samples)
