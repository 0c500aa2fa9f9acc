"""sandbox.prometheus: a real Prometheus server on loopback, released on every
exit path, and promtool's lint."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from ebpf_tutor.sandbox import prometheus as pm

needs_prometheus = pytest.mark.skipif(not (shutil.which(pm.PROMETHEUS) and shutil.which(pm.PROMTOOL)),
                                      reason="Debian package prometheus not installed")


def exporter():
    """A prometheus_client endpoint on 127.0.0.1 with one counter at 5."""
    from prometheus_client import CollectorRegistry, Counter, start_http_server
    reg = CollectorRegistry()
    Counter("t_events", "test events", ["comm"], registry=reg).labels("x").inc(5)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=reg)
    return server, reg


def test_config_lists_targets_and_interval():
    cfg = pm.PrometheusServer(["127.0.0.1:1", "127.0.0.1:2"], scrape_interval=0.5).config()
    assert "scrape_interval: 0.5s" in cfg and '["127.0.0.1:1", "127.0.0.1:2"]' in cfg
    argv = pm.PrometheusServer(["127.0.0.1:1"]).argv("/d", 9999)
    assert "--web.listen-address=127.0.0.1:9999" in argv and "--storage.tsdb.path=/d/data" in argv


def test_the_server_never_takes_a_target_port(monkeypatch):
    ports = iter([8001, 8001, 8002])
    monkeypatch.setattr(pm, "free_port", lambda: next(ports))
    assert pm.PrometheusServer(["127.0.0.1:8001"])._free_port() == 8002


def test_free_port_is_bindable():
    port = pm.free_port()
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_epoch_parses_nanoseconds():
    assert pm._epoch("1970-01-01T00:00:10.5Z") == pytest.approx(10.5)
    assert pm._epoch("1970-01-01T00:00:10.123456789Z") == pytest.approx(10.123456789)
    assert pm._epoch("garbage") == 0.0


@needs_prometheus
def test_check_metrics_accepts_client_output_and_flags_lint():
    from prometheus_client import generate_latest
    server, reg = exporter()
    try:
        assert pm.check_metrics(generate_latest(reg).decode()).ok
    finally:
        server.shutdown()
    bad = pm.check_metrics("# TYPE foo counter\nfoo 1\n")
    assert not bad.ok and any("_total" in p for p in bad.problems)
    assert not pm.check_metrics("this is not { metrics\n").ok


@needs_prometheus
def test_server_scrapes_queries_and_cleans_up():
    server, _ = exporter()
    try:
        with pm.PrometheusServer([f"127.0.0.1:{server.server_port}"]) as prom:
            folder, pid = prom.folder, prom.proc.pid
            assert folder.is_dir() and (folder / "prometheus.yml").exists()
            assert prom.url.startswith("http://127.0.0.1:")
            prom.wait_for_fresh_scrape()
            assert prom.query("t_events_total") and prom.query("t_events_total")[0][1] == 5.0
            assert prom.metadata("t_events")["type"] == "counter"
        assert not folder.exists()
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    finally:
        server.shutdown()


@needs_prometheus
def test_server_is_released_on_error():
    with pytest.raises(ZeroDivisionError):
        with pm.PrometheusServer(["127.0.0.1:9"]) as prom:
            folder, proc = prom.folder, prom.proc
            1 / 0
    assert not folder.exists() and proc.poll() is not None


def test_a_server_that_cannot_start_says_why(tmp_path):
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\necho 'bad flag' >&2\nexit 1\n")
    fake.chmod(0o755)
    srv = pm.PrometheusServer(["127.0.0.1:9"], binary=str(fake), start_timeout=2)
    with pytest.raises(RuntimeError, match="bad flag"):
        srv.start()
    assert not srv.folder.exists()


@needs_prometheus
def test_server_dies_with_its_parent_and_its_folder_is_swept():
    code = textwrap.dedent("""
        import os, sys, time
        from ebpf_tutor.sandbox.prometheus import PrometheusServer
        p = PrometheusServer(["127.0.0.1:9"]).start()
        print(p.proc.pid, p.folder, flush=True)
        os.kill(os.getpid(), 9)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL
    pid, folder = r.stdout.split()
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            break
        import time
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()
    assert Path(folder).exists()
    assert Path(folder) in pm.sweep_dead()
    assert not Path(folder).exists()


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) of sockets listening on port."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":          # 0A: LISTEN
            found.add(addr)
    return found


@needs_prometheus
def test_server_listens_on_loopback_only_and_stops_on_ctrl_c():
    with pytest.raises(KeyboardInterrupt):
        with pm.PrometheusServer(["127.0.0.1:9"]) as prom:
            folder, proc, port = prom.folder, prom.proc, prom.port
            assert _listeners(port) == {"0100007F"}        # 127.0.0.1, nothing else
            raise KeyboardInterrupt
    assert not folder.exists() and proc.poll() is not None
    assert not _listeners(port)
