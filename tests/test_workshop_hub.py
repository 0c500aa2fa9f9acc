"""Workshop mode, trusted room: a real JupyterHub with 3 students, driven over
its REST API only.

Each student gets a server running as their own Linux user, whose "eBPF
(root)" kernel runs as root and loads a real tracepoint program; a student's
token is refused on another's server; stopping leaves nothing behind. The
users, the sudoers rule, the hub, the proxy and every process are removed on
success, failure and interrupt (SIGINT or SIGTERM).
"""
from __future__ import annotations

import json
import os
import pwd
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="workshop mode creates Linux users, "
                                "a sudoers rule and root kernels: run as root (CI does)")

requests = pytest.importorskip("requests")
websocket = pytest.importorskip("websocket")

from ebpf_tutor.workshop import hub, progress  # noqa: E402

TAG = f"{os.getpid() % 100000}"
STUDENTS = [f"ebtci{TAG}s{i}" for i in (1, 2, 3)]
SUDOERS = f"/etc/sudoers.d/ebpf-tutor-workshop-test{TAG}"
N_CHILDREN = 3

# Runs in each student's root kernel: count execve per process with a real
# tracepoint program, start marker children, and report what it saw and who it is.
KERNEL_CODE = r"""
import json, os, subprocess
from ebpf_tutor import Program
C = '''
BPF_HASH(execs, u32, u64);
TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    execs.increment(tgid);
    return 0;
}
'''
with Program(C) as prog:
    kids = [subprocess.Popen(["/bin/true"]) for _ in range(%d)]
    for k in kids:
        k.wait()
    seen = {k.value: v.value for k, v in prog["execs"].items()}
from ebpf_tutor.labs import record   # where a lab check records, from this root kernel
record("1.1", True, "workshop test")
record("1.2", False, "workshop test")
print("RESULT " + json.dumps({"uid": os.getuid(), "server_pid": int(os.environ["JPY_PARENT_PID"]),
      "children": [seen.get(k.pid, 0) for k in kids],
      "progress": os.environ.get("EBPF_TUTOR_PROGRESS", "")}))
""" % N_CHILDREN


@pytest.fixture(scope="module")
def workshop(tmp_path_factory):
    """A started hub; torn down (users, sudoers, processes) whatever happens."""
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ws = hub.new(tmp_path_factory.mktemp("workshop"), STUDENTS, "trusted-room",
                 port=hub.free_port(), authenticator="dummy", sudoers=SUDOERS)
    try:
        hub.start(ws, log=lambda _: None)
        yield ws
    finally:
        hub.teardown(ws, log=lambda _: None)
        signal.signal(signal.SIGTERM, previous)


def run_in_kernel(ws: hub.Workshop, user: str, token: str, code: str, timeout: float = 120) -> str:
    """Start an ebpf-root kernel on `user`'s server through the proxy, run `code`
    over the kernel's websocket, return what it printed."""
    base = f"{ws.url}/user/{user}/api"
    auth = {"Authorization": f"token {token}"}
    r = requests.post(f"{base}/kernels", json={"name": "ebpf-root"}, headers=auth, timeout=60)
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    ws_url = f"ws://{ws.url.removeprefix('http://')}/user/{user}/api/kernels/{kid}/channels"
    conn = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout)
    msg_id = uuid.uuid4().hex
    conn.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    out, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = json.loads(conn.recv())
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = m["msg_type"], m["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                out.append("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                break
    finally:
        conn.close()
        requests.delete(f"{base}/kernels/{kid}", headers=auth, timeout=30)
    return "".join(out)


def start_server(ws: hub.Workshop, user: str, timeout: float = 90) -> None:
    code, body = hub.api(ws, "POST", f"/users/{user}/server")
    assert code in (201, 202), (code, body)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        srv = hub.api(ws, "GET", f"/users/{user}")[1]["servers"].get("", {})
        if srv.get("ready"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{user}'s server was not ready in {timeout} s")


def student_session(ws: hub.Workshop, user: str) -> dict:
    start_server(ws, user)
    code, body = hub.api(ws, "POST", f"/users/{user}/tokens", {"note": "test", "expires_in": 600})
    assert code == 201, (code, body)
    printed = run_in_kernel(ws, user, body["token"], KERNEL_CODE)
    lines = [ln for ln in printed.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"{user}'s kernel printed no result:\n{printed}"
    return {"token": body["token"], **json.loads(lines[-1].removeprefix("RESULT "))}


def test_three_students(workshop):
    ws = workshop
    t0 = time.monotonic()
    # every call below goes to 127.0.0.1 only
    assert ws.url.startswith("http://127.0.0.1:") and ws.hub_bind_url.startswith("http://127.0.0.1:")
    assert Path(SUDOERS).exists() and oct(Path(SUDOERS).stat().st_mode)[-3:] == "440"
    with ThreadPoolExecutor(len(STUDENTS)) as pool:
        results = dict(zip(STUDENTS, pool.map(lambda u: student_session(ws, u), STUDENTS)))

    rows = {r["user"]: r for r in hub.status(ws)}
    for user, res in results.items():
        pw = pwd.getpwnam(user)
        assert rows[user]["server"] == "ready"
        assert res["uid"] == 0, f"{user}'s ebpf-root kernel is not root"
        assert os.stat(f"/proc/{res['server_pid']}").st_uid == pw.pw_uid, \
            f"{user}'s server does not run as {user}"
        assert "jupyterhub-singleuser" in Path(f"/proc/{res['server_pid']}/cmdline").read_text()
        assert res["children"] == [1] * N_CHILDREN, f"{user}'s program saw {res['children']}"
        assert res["progress"] == f"{pw.pw_dir}/{hub.WORK_FOLDER}/.progress.json"
        # the server serves the student's own copy of the course
        r = requests.get(f"{ws.url}/user/{user}/api/contents/notebooks", timeout=30,
                         headers={"Authorization": f"token {res['token']}"})
        assert r.status_code == 200 and "ch01_introduction.ipynb" in {f["name"] for f in r.json()["content"]}

    # a student's token is refused on another student's server
    for mine, other in zip(STUDENTS, STUDENTS[1:] + STUDENTS[:1]):
        r = requests.get(f"{ws.url}/user/{other}/api/kernels",
                         headers={"Authorization": f"token {results[mine]['token']}"}, timeout=30)
        assert r.status_code == 403, (mine, other, r.status_code)
        assert requests.get(f"{ws.url}/user/{mine}/api/kernels", timeout=30,
                            headers={"Authorization": f"token {results[mine]['token']}"}).status_code == 200

    # the root kernels recorded into each student's work folder; the table reads them all
    table = progress.summarise(progress.collect(ws))
    assert list(table["student"]) == sorted(STUDENTS)
    assert list(table["labs_passed"]) == ["1.1"] * 3 and list(table["attempts"]) == [2] * 3

    # stop every server over the API; then the hub
    for user in STUDENTS:
        assert hub.api(ws, "DELETE", f"/users/{user}/server")[0] in (202, 204)
    hub.stop_servers(ws)
    assert all(r["server"] == "stopped" for r in hub.status(ws))
    uids = {pwd.getpwnam(u).pw_uid for u in STUDENTS}
    proxy_pid = int((Path(ws.dir) / "proxy.pid").read_text())
    left = hub.teardown(ws, log=lambda _: None)
    assert left == [], f"processes left after the servers and the hub stopped: {left}"
    assert not hub._alive(proxy_pid), "the proxy still runs"
    assert hub.hub_pid(ws) is None
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                assert p.stat().st_uid not in uids, f"process {p.name} of a student survived"
            except FileNotFoundError:
                pass
    for user in STUDENTS:
        with pytest.raises(KeyError):
            pwd.getpwnam(user)
    assert not Path(SUDOERS).exists()
    print(f"3 students: servers, root kernels, BPF, 403s and teardown in {time.monotonic() - t0:.1f} s")
