"""VMSpawner's logic with a fake VM: a local process in place of QEMU.

The fake VM does what the guest does with the spawner's files: it reads the
environment from the student's share (`vm/work/<job>.env`), deletes it, and
answers HTTP on the forwarded port like a singleuser server. No QEMU, no image:
`launcher` replaces the QEMU command and a fake `qemu-img` records the overlay.
The real thing (3 students, 3 VMs) is tools/workshop_vms.py.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("jupyterhub")
from ebpf_tutor.workshop.vmspawner import VMSpawner, guest_job, pid_cmdline  # noqa: E402

TOKEN = "secret-token-0123456789abcdef"

FAKE_VM = r'''
import hashlib, http.server, json, shlex, sys, pathlib
share, job, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
envfile = pathlib.Path(share, "vm", "work", job + ".env")
env = dict(shlex.split(line)[0].split("=", 1) for line in envfile.read_text().splitlines())
envfile.unlink()                                   # as the guest's job does
if mode == "crash":
    sys.exit(3)
prefix = env["JUPYTERHUB_SERVICE_PREFIX"]

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == prefix + "api"
        body = json.dumps({"user": env["JUPYTERHUB_USER"], "api_url": env["JUPYTERHUB_API_URL"],
                           "service_url": env["JUPYTERHUB_SERVICE_URL"],
                           "token": hashlib.sha256(env["JUPYTERHUB_API_TOKEN"].encode()).hexdigest()})
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *a):
        pass

if mode == "silent":
    import time; time.sleep(3600)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''

FAKE_QEMU_IMG = r'''#!/usr/bin/env python3
import json, sys
if sys.argv[1] == "info":
    print(json.dumps({"format": "raw"}))
else:
    open(sys.argv[-1], "w").write(json.dumps(sys.argv[1:]))
'''


@pytest.fixture
def env(tmp_path):
    img = tmp_path / "image"
    img.mkdir()
    (img / "disk.img").write_bytes(b"\0" * 4096)
    course = tmp_path / "checkout"
    for rel in ("scripts/provision.sh", "notebooks/ch01.py", "vm/init.sh", "vm/work/other.env",
                "work/mine.ipynb", ".progress.json", "ebpf_tutor/__pycache__/x.pyc"):
        (course / rel).parent.mkdir(parents=True, exist_ok=True)
        (course / rel).write_text("x")
    qimg = tmp_path / "qemu-img"
    qimg.write_text(FAKE_QEMU_IMG.replace("/usr/bin/env python3", sys.executable))
    qimg.chmod(0o755)
    fake = tmp_path / "fake_vm.py"
    fake.write_text(FAKE_VM)
    return SimpleNamespace(tmp=tmp_path, img=img, course=course, qemu_img=qimg, fake=fake)


def make_spawner(env, mode: str = "serve", name: str = "alice", **kw) -> VMSpawner:
    user = SimpleNamespace(name=name, escaped_name=name, url=f"/user/{name}/",
                           progress_url=lambda n: "", settings={})
    hub = SimpleNamespace(api_url="http://127.0.0.1:8081/hub/api/", base_url="/hub/",
                          public_host="")
    server = SimpleNamespace(base_url=f"/user/{name}/")

    def launcher(sp: VMSpawner, port: int) -> list[str]:
        return [sys.executable, str(env.fake), str(sp.share), sp.job, str(port), mode]

    sp = VMSpawner(user=user, hub=hub, image=str(env.img), state_dir=str(env.tmp / "state"),
                   course=str(env.course), qemu_img=str(env.qemu_img), launcher=launcher,
                   ready_interval=0.05, stop_grace=2, **kw)
    sp.api_token = TOKEN
    sp.server = server                   # the ORM's server, as the hub sets it
    return sp


def leftovers(env, sp: VMSpawner) -> list[str]:
    """Runtime files the spawner must not leave behind."""
    d = Path(sp.student_dir)
    found = [str(p) for p in d.glob("overlay*")]
    found += [str(p) for p in (d / "course/vm/work").glob("*") if p.suffix in (".sh", ".env", ".rc")]
    return found


def test_start_poll_stop_state_cleanup(env):
    async def go():
        sp = make_spawner(env)
        ip, port = await sp.start()
        assert (ip, port) == ("127.0.0.1", sp.hostport)
        assert await sp.poll() is None
        argv = pid_cmdline(sp.pid)
        assert argv and not any(TOKEN in a for a in argv), "a secret in the VM's argv"
        # the guest got the hub's env through the share, and deleted the file
        from tornado.httpclient import AsyncHTTPClient
        r = json.loads((await AsyncHTTPClient().fetch(f"http://{ip}:{port}/user/alice/api")).body)
        import hashlib
        assert r["token"] == hashlib.sha256(TOKEN.encode()).hexdigest()
        assert r["api_url"] == "http://10.0.2.100:8081/hub/api/"     # the guestfwd relay
        assert r["service_url"] == "http://0.0.0.0:8888/user/alice/"
        assert not sp.job_file("env").exists()
        # the overlay is qcow2 over the image, in its format
        args = json.loads(Path(sp.overlay).read_text())
        assert args[:5] == ["create", "-q", "-f", "qcow2", "-F"] and args[5] == "raw"
        assert str(env.img / "disk.img") in args
        # the student's copy of the course: no host work, progress, caches or others' jobs
        share = sp.share
        assert (share / "notebooks/ch01.py").exists() and (share / "scripts/provision.sh").exists()
        for gone in ("work", ".progress.json", "ebpf_tutor/__pycache__", "vm/work/other.env"):
            assert not (share / gone).exists(), gone
        job = sp.job_file("sh").read_text()
        assert TOKEN not in job and "jupyterhub-singleuser --allow-root" in job
        # state round trip: a new spawner (a restarted hub) finds the same VM
        state = sp.get_state()
        assert state["pid"] == sp.pid and state["port"] == port and state["overlay"] == sp.overlay
        again = make_spawner(env)
        again.load_state(state)
        assert await again.poll() is None
        pid = sp.pid
        await again.stop()                   # the restarted hub stops a VM it did not start
        sp._proc.wait(timeout=5)             # reap it (it is this test's child)
        assert pid_cmdline(pid) == [] and await again.poll() == 0
        assert leftovers(env, again) == []
        again.clear_state()
        assert again.get_state() == {} and again.pid == 0
        assert (share / "notebooks/ch01.py").exists(), "the student's work is kept"
    asyncio.run(go())


def test_stop_kills_and_removes(env):
    async def go():
        sp = make_spawner(env, name="bob")
        await sp.start()
        proc = sp._proc
        t0 = time.monotonic()
        await sp.stop()
        assert proc.poll() is not None and time.monotonic() - t0 < 2
        assert await sp.poll() is not None
        assert leftovers(env, sp) == []
    asyncio.run(go())


def test_stop_escalates_to_sigkill(env):
    """A VM that ignores SIGTERM is killed after stop_grace."""
    async def go():
        sp = make_spawner(env, name="carol")
        sp.launcher = lambda s, port: [sys.executable, "-c",
                                       "import signal,time,socket\n"
                                       "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                       "import http.server as h\n"
                                       f"h.HTTPServer(('127.0.0.1',{port}),h.SimpleHTTPRequestHandler)"
                                       ".serve_forever()", s.job]
        sp.stop_grace = 0.5
        await sp.start()
        proc = sp._proc
        await sp.stop()
        assert proc.returncode == -9
        assert leftovers(env, sp) == []
    asyncio.run(go())


def test_failed_start_leaves_nothing(env):
    async def go():
        sp = make_spawner(env, mode="crash", name="dave")
        with pytest.raises(RuntimeError, match="exited"):
            await sp.start()
        assert leftovers(env, sp) == [] and sp._proc.poll() == 3
    asyncio.run(go())


def test_timeout_leaves_nothing(env):
    """The hub cancels a start that takes too long: the VM is killed, files removed."""
    async def go():
        sp = make_spawner(env, mode="silent", name="erin")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sp.start(), 1.0)
        assert sp._proc.poll() is not None
        assert leftovers(env, sp) == []
    asyncio.run(go())


def test_missing_image_is_explained(env):
    async def go():
        sp = make_spawner(env, name="frank")
        sp.image = str(env.tmp / "nope")
        with pytest.raises(RuntimeError, match="course_vm.py build"):
            await sp.start()
        assert leftovers(env, sp) == []
    asyncio.run(go())


def test_qemu_command_has_no_secret_and_forwards_loopback(env):
    sp = make_spawner(env, name="gina", accel="tcg")
    sp.job, sp.overlay = "gina-1", str(env.tmp / "o.qcow2")
    argv = sp.qemu_argv(env.img, 40000)
    joined = " ".join(argv)
    assert TOKEN not in joined
    assert "hostfwd=tcp:127.0.0.1:40000-:8888" in joined
    assert "-m 2048M" in joined and "-smp 2" in joined and "course.job=gina-1" in joined
    assert f"file={sp.overlay},format=qcow2" in joined
    # restricted (default): the guest reaches the hub's API only, through the relay
    assert ",restrict=on,guestfwd=tcp:10.0.2.100:8081-cmd:" in joined
    assert joined.endswith("relay.py 127.0.0.1 8081") or "relay.py 127.0.0.1 8081 " in joined


def test_hub_route_unrestricted_and_connect_url(env):
    sp = make_spawner(env, name="hank", restrict_network=False)
    assert sp.hub_route() == ("10.0.2.2", 8081, "127.0.0.1", 8081)
    assert "restrict" not in sp.nic(40000) and "guestfwd" not in sp.nic(40000)
    sp.hub_connect_url = "http://192.168.1.5:9000"
    assert sp.hub_route()[:2] == ("192.168.1.5", 9000)
    assert sp.guest_env()["JUPYTERHUB_API_URL"] == "http://192.168.1.5:9000/hub/api/"
    sp = make_spawner(env, name="ivan", hub_connect_url="http://10.0.2.2:8081")
    assert sp.hub_route() == ("10.0.2.100", 8081, "127.0.0.1", 8081)    # restricted wins


def test_relay_copies_both_ways():
    """The guestfwd helper: stdin/stdout <-> a TCP connection, per connection."""
    import socket
    import subprocess
    from ebpf_tutor.workshop import relay
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    guest, qemu_side = socket.socketpair()
    p = subprocess.Popen([sys.executable, relay.__file__, "127.0.0.1", str(port)],
                         stdin=qemu_side, stdout=qemu_side)
    qemu_side.close()
    conn, _ = srv.accept()
    guest.sendall(b"GET /hub/api HTTP/1.1\r\n\r\n")
    assert conn.recv(100) == b"GET /hub/api HTTP/1.1\r\n\r\n"
    conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    conn.close()
    assert guest.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert p.wait(timeout=5) == 0
    srv.close()
    guest.close()


def test_guest_job_reads_then_deletes_env():
    script = guest_job("j", ["/opt/ebpf-venv/bin/jupyterhub-singleuser", "--allow-root"])
    assert script.index(". /w/vm/work/j.env") < script.index("rm -f /w/vm/work/j.env") < \
        script.index("exec /opt/ebpf-venv/bin/jupyterhub-singleuser")


def test_a_vm_workshop_config_leaves_the_hub_reachable_and_hides_solutions(tmp_path):
    from traitlets.config import Config

    from ebpf_tutor.workshop import hub
    ws = hub.new(tmp_path / "ws", ["ana", "bo"], "vm", vm_suite="trixie", vm_memory="1G", vm_cpus=1)
    c = Config()
    hub.configure(c, ws)
    assert "hub_connect_url" not in c.JupyterHub          # the proxy uses it too: it stays the bind URL
    assert c.JupyterHub.spawner_class == hub.VM_SPAWNER
    assert "start_timeout" not in c.Spawner               # VMSpawner keeps its slow-boot default
    assert (c.VMSpawner.suite, c.VMSpawner.mem_limit, c.VMSpawner.cpu_limit) == ("trixie", "1G", 1)
    assert "solutions" in c.VMSpawner.exclude and ".git" in c.VMSpawner.exclude
