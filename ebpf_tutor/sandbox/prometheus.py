"""A real Prometheus server for a notebook or a check, and `promtool check metrics`.

    with PrometheusServer(["127.0.0.1:8000"], scrape_interval=1.0) as prom:
        prom.wait_for_scrapes(2)
        prom.query('ebpf_writes_total{comm="app"}')   # [({labels}, value), ...]

The server listens on 127.0.0.1 only, on a free port, with a config and a
data directory in a fresh temporary folder (/tmp/ebt-<pid>-prometheus-*).
On close (success, error or Ctrl-C) it is stopped and the folder removed.
If the Python process dies instead, the kernel kills the server with it
(PR_SET_PDEATHSIG), and the next server started removes folders whose owner
is gone.

The first scrape comes about 5 s after start, whatever the interval: the
discovery manager hands new targets to the scrape manager at most every 5 s
(`updatert`, fixed at 5 s in discovery/legacymanager/manager.go, 2.42's
default, and in discovery/manager.go; no flag or setting of 2.42 changes
it; the hidden --scrape.discovery-reload-interval only sets the scrape
manager's own 5 s ticker: measured, it does not help), then each target
waits an offset of less than one interval. Start the server before the work it
should see, so that the wait overlaps it; a target may start listening later.

The plain commands it runs: `prometheus --config.file=F
--storage.tsdb.path=D --web.listen-address=127.0.0.1:PORT`, then HTTP GETs
of /-/ready, /api/v1/query, /api/v1/targets and /api/v1/metadata.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
PR_SET_PDEATHSIG = 1
PREFIX = "prometheus"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MetricsCheck:
    """What `promtool check metrics` said about an exposition."""
    ok: bool
    problems: list[str]

    def __str__(self) -> str:
        return "promtool: OK" if self.ok else "promtool: " + "; ".join(self.problems)


def check_metrics(text: str, promtool: str = PROMTOOL) -> MetricsCheck:
    """Lint a /metrics text with `promtool check metrics` (reads stdin). A
    parse error or a lint warning (a counter without _total...) is a problem."""
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    problems = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    return MetricsCheck(r.returncode == 0 and not problems, problems)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the parent dies. (The
    kernel means the *thread* that started it: start servers from a thread
    that lives as long as they should, such as the main thread.)"""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def sweep_dead(tmp: Path | None = None) -> list[Path]:
    """Remove the folders (ebt-<pid>-prometheus-*) of servers whose owner
    process is gone."""
    removed = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"ebt-*-{PREFIX}-*"):
        m = re.match(rf"ebt-(\d+)-{PREFIX}-", d.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class PrometheusServer:
    """A Prometheus server scraping `targets` ("host:port") every
    `scrape_interval` seconds, for the life of a `with` block."""

    def __init__(self, targets: list[str], scrape_interval: float = 1.0, job: str = "ebpf",
                 binary: str = PROMETHEUS, start_timeout: float = 60.0):
        self.targets, self.interval, self.job = list(targets), scrape_interval, job
        self.binary, self.start_timeout = binary, start_timeout
        self.port: int | None = None
        self.folder: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """The prometheus.yml it runs with."""
        s = f"{self.interval:g}s"
        targets = ", ".join(f'"{t}"' for t in self.targets)
        return (f"global:\n  scrape_interval: {s}\n  scrape_timeout: {s}\n"
                f"scrape_configs:\n  - job_name: {self.job}\n"
                f"    static_configs:\n      - targets: [{targets}]\n")

    # ---------------------------------------------------------- lifecycle --
    def start(self) -> "PrometheusServer":
        sweep_dead()
        self.folder = Path(tempfile.mkdtemp(prefix=f"ebt-{os.getpid()}-{PREFIX}-"))
        try:
            (self.folder / "prometheus.yml").write_text(self.config())
            for _ in range(3):                # a free port may be taken before we bind it
                self.port = self._free_port()
                self._spawn()
                if self._wait_ready():
                    return self
                self._stop()
            raise RuntimeError("prometheus did not start:\n" + self.log_tail())
        except BaseException:
            self.close()
            raise

    def _free_port(self) -> int:
        """A free port that is not one of the targets' (a target may start
        listening only after the server, to overlap its discovery wait)."""
        taken = {t.rsplit(":", 1)[-1] for t in self.targets}
        while str(port := free_port()) in taken:
            pass
        return port

    def argv(self, folder: Path | str = "FOLDER", port: int | str = "PORT") -> list[str]:
        """The command line it runs (with placeholders before start)."""
        return [self.binary, f"--config.file={folder}/prometheus.yml",
                f"--storage.tsdb.path={folder}/data",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]

    def _spawn(self) -> None:
        log = open(self.folder / "prometheus.log", "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv(self.folder, self.port),
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        finally:
            log.close()

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def _stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except BaseException as e:        # too slow, or Ctrl-C while waiting: kill it
                self.proc.kill()
                self.proc.wait()
                if not isinstance(e, subprocess.TimeoutExpired):
                    raise
        self.proc = None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log."""
        try:
            text = (self.folder / "prometheus.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop the server and remove its folder (safe to call twice)."""
        try:
            self._stop()
        finally:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "PrometheusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- HTTP --
    def api(self, path: str, **params) -> dict | list:
        """GET /api/v1/<path>?params and return its `data`."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: (labels, value) per series."""
        data = self.api("query", query=expr)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def metadata(self, metric: str) -> dict:
        """What the targets said about `metric`: its type and help."""
        entries = self.api("metadata", metric=metric).get(metric, [])
        return entries[0] if entries else {}

    def target_health(self) -> list[dict]:
        """One dict per active target: scrapeUrl, health, lastError..."""
        return self.api("targets")["activeTargets"]

    def wait_for_fresh_scrape(self, timeout: float = 30.0) -> float:
        """Wait until every target was scraped successfully after this call
        began, so what a workload did before it is in Prometheus. Returns
        the seconds waited."""
        start = time.time()
        deadline = time.monotonic() + timeout
        while True:
            targets = self.target_health()
            if targets and all(t["health"] == "up" and _epoch(t["lastScrape"]) > start
                               for t in targets):
                return time.time() - start
            if time.monotonic() > deadline:
                seen = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
                raise TimeoutError(f"no fresh successful scrape in {timeout:.0f} s: {seen}")
            time.sleep(self.interval / 4)


def _epoch(rfc3339: str) -> float:
    """Seconds since the epoch of Prometheus's '2026-12-07T08:00:09.123456789Z'."""
    from datetime import datetime
    m = re.match(r"(.*?T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", rfc3339)
    if not m:
        return 0.0
    base = datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    return base.timestamp() + float(m.group(2) or 0)
