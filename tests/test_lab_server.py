"""`./course lab` really serves the course: JupyterLab on 127.0.0.1 with a
token, and Chapter 1's code runs through it on the "eBPF (root)" kernel with
its programs attached."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import jupytext
import pytest

from tests.conftest import ROOT, needs_root

websocket = pytest.importorskip("websocket")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_server():
    port = free_port()
    env = dict(os.environ, PORT=str(port))
    proc = subprocess.Popen([str(ROOT / "course"), "lab"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    token, lines, deadline = None, [], time.monotonic() + 120
    while token is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", line)
        if m:
            token = m.group(1)
    while token and time.monotonic() < deadline:   # the URL is printed just before it listens
        try:
            api(port, token, "GET", "/api/status")
            break
        except OSError:
            time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("JupyterLab did not come up:\n" + "".join(lines[-20:]))
    yield port, token
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def api(port: int, token: str, method: str, path: str, body: dict | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        text = r.read()
    return json.loads(text) if text else None


def run_cell(ws, code: str, timeout: float = 120) -> tuple[str, list[str]]:
    """Execute code on the kernel; return (status, stream texts)."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    # The reply (shell channel) can overtake the output (iopub): done when
    # both the reply and iopub's "idle" for this request have arrived.
    out, status, idle, deadline = [], None, False, time.monotonic() + timeout
    while time.monotonic() < deadline and not (status and idle):
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            out.append("\n".join(msg["content"]["traceback"]))
        elif kind == "execute_reply":
            status = msg["content"]["status"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    return status or "timeout", out


def test_token_is_required(lab_server):
    port, _ = lab_server
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sessions", timeout=10)
    assert e.value.code in (401, 403)


def test_listens_on_loopback_only(lab_server):
    port, _ = lab_server
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    addrs = {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}
    assert addrs and addrs <= {"127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"}, addrs


@needs_root
def test_chapter1_runs_on_the_root_kernel(lab_server):
    port, token = lab_server
    nb_path = "notebooks/ch01_introduction.ipynb"
    session = api(port, token, "POST", "/api/sessions",
                  {"path": nb_path, "type": "notebook", "kernel": {"name": "ebpf-root"}})
    kernel_id = session["kernel"]["id"]
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}", timeout=120)
    try:
        status, out = run_cell(ws, "import os; print('uid', os.geteuid())")
        assert status == "ok" and "uid 0" in "".join(out)
        cells = [c for c in jupytext.read(ROOT / nb_path).cells if c.cell_type == "code"
                 and "raises-exception" not in c.metadata.get("tags", [])]
        status, _ = run_cell(ws, "import os; os.chdir('notebooks')")
        texts = []
        for cell in cells:
            status, out = run_cell(ws, cell.source)
            assert status == "ok", "".join(out)[-2000:]
            texts += out
        joined = "".join(texts)
        assert re.search(r"true\s+5", joined) and re.search(r"uname\s+3", joined)
        assert "gone: bpftool no longer knows that id" in joined
    finally:
        ws.close()
        api(port, token, "DELETE", f"/api/sessions/{session['id']}")
