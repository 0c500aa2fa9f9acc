"""Three students, three course VMs: VMSpawner under a real JupyterHub, checked end to end.

    sudo .venv/bin/python tools/workshop_vms.py [--students 3] [--suite bookworm]

Starts a JupyterHub on loopback (DummyAuthenticator, configurable-http-proxy
from the venv, the hub's API where the guests reach it: 10.0.2.2) with
VMSpawner, and drives it over the hub's REST API as an instructor would:

1. every student's server starts (one VM each, all at once);
2. each student, with their own token, through the proxy, starts the
   "eBPF (root)" kernel in their VM and attaches a BCC tracepoint program
   (sched:sched_process_exec, counted by comm); then each starts a process
   with a fresh name unique to them; then each reads what its program saw.
   Each must see its own marker and never another student's: separate kernels;
3. a student's token on another student's server is refused (403);
4. every server but the last stops over the API, the last when the hub stops:
   no QEMU left, overlays, job and env files removed.
It also checks from each guest that the hub's API is reachable and the host's
loopback (the proxy) is not (VMSpawner.restrict_network).

It prints each boot's time, the time until all were ready, the guests' and
QEMU's memory, and the total. It needs root (QEMU, BCC in the guests) and the
image (`vm/course_vm.py build --suite S`). Too slow for every CI run under
software emulation (minutes per boot); tests/test_vmspawner.py is the CI part.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ebpf_tutor.sandbox.prometheus import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"

ATTACH = r'''
import json, os, shutil, subprocess, time
from bcc import BPF
prog = BPF(text="""
struct key_t { char comm[16]; };
BPF_HASH(execs, struct key_t, u64);
TRACEPOINT_PROBE(sched, sched_process_exec) {
    struct key_t k = {};
    bpf_get_current_comm(&k.comm, sizeof(k.comm));
    execs.increment(k);
    return 0;
}
""", cflags=["-w"])
print("attached", os.uname().release, os.geteuid())
'''

MARK = r'''
marker = "/tmp/" + {marker!r}
shutil.copy("/bin/true", marker)
subprocess.run([marker], check=True)
print("ran", {marker!r})
'''

READ = r'''
import socket
def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False
print("NET", json.dumps({{"hub": reach("10.0.2.100", {hub_port}), "host_proxy": reach("10.0.2.2", {proxy_port})}}))
heavy = BPF(text="#include <net/sock.h>\n#include <linux/sched.h>\n"
            "int f(struct pt_regs *ctx) {{ struct sock *sk = 0; return sk ? 1 : 0; }}", cflags=["-w"])
heavy.cleanup()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print("KERNEL_PEAK_MB", int(hwm) // 1024)
seen = {{k.comm.decode(): v.value for k, v in prog["execs"].items()}}
print("SEEN " + json.dumps({{c: n for c, n in seen.items() if c.startswith("mk")}}))
print("USED_MB", int(subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.split()[8]))
'''


def log(msg: str) -> None:
    print(f"[workshop-vms {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Api:
    """The hub's REST API (and the proxy) with one token."""

    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            return e.code, {}


def hub_config(tmp: Path, hub_port: int, proxy_port: int, students: list[str], args):
    """The instructor's own configuration (`ebpf-tutor workshop start --mode vm`), with
    dummy logins and this run's sizes: what is proven here is what a room gets."""
    from ebpf_tutor.workshop import hub
    ws = hub.new(tmp / "workshop", students, "vm", port=proxy_port, hub_port=hub_port,
                 authenticator="dummy", vm_suite=args.suite, vm_memory=args.memory,
                 vm_cpus=args.cpus)
    cfg = Path(ws.dir) / "jupyterhub_config.py"
    with cfg.open("a") as f:
        f.write(f"c.VMSpawner.tcg_tb_mb = {args.tb_mb}\nc.JupyterHub.cleanup_servers = True\n")
    return cfg, ws.admin_token, hub.vm_state_dir(ws)


class Kernel:
    """A kernel in a student's server, driven over its websocket through the proxy."""

    def __init__(self, proxy: str, user: str, token: str, name: str):
        api = Api(f"{proxy}/user/{user}/api", token)
        code, specs = api.call("GET", "/kernelspecs")
        assert code == 200, f"{user}: kernelspecs {code}"
        self.name = name if name in specs.get("kernelspecs", {}) else specs["default"]
        code, k = api.call("POST", "/kernels", {"name": self.name})
        assert code == 201, f"{user}: start kernel {code}"
        self.api, self.id = api, k["id"]
        ws_url = proxy.replace("http", "ws", 1) + f"/user/{user}/api/kernels/{self.id}/channels"
        self.ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"],
                                              timeout=600)

    def send(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "",
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        return msg_id

    def collect(self, msg_id: str) -> str:
        out, done = [], False
        while not done:
            m = json.loads(self.ws.recv())
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            t = m["msg_type"]
            if t == "stream":
                out.append(m["content"]["text"])
            elif t == "error":
                raise RuntimeError("\n".join(m["content"]["traceback"]))
            elif t == "status" and m["content"]["execution_state"] == "idle":
                done = True
        return "".join(out)

    def close(self) -> None:
        self.ws.close()
        self.api.call("DELETE", f"/kernels/{self.id}")


def qemus(tmp: Path) -> list[int]:
    """pids of QEMU processes running one of this run's overlays."""
    found = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            argv = (p / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if argv.startswith("qemu-system") and str(tmp) in argv:
            found.append(int(p.name))
    return found


def rss_mb(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (VmRSS) or its peak (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=3)
    ap.add_argument("--suite", default="bookworm")
    ap.add_argument("--memory", default="2G")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--tb-mb", type=int, default=0, help="VMSpawner.tcg_tb_mb")
    ap.add_argument("--restart", action="store_true",
                    help="restart the hub once the VMs are up: they must be found again")
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (logs)")
    args = ap.parse_args()
    t_total = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="workshop-vms-", dir="/var/tmp"))
    hub_port, proxy_port = free_port(), free_port()
    students = [f"student{i + 1}" for i in range(args.students)]
    cfg, admin, vms = hub_config(tmp, hub_port, proxy_port, students, args)
    env = dict(os.environ, PATH=f"{VENV}/bin:{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    hub_log = open(tmp / "hub.log", "a")
    proxy = f"http://127.0.0.1:{proxy_port}"
    api = Api(f"{proxy}/hub/api", admin)

    def start_hub(*extra: str) -> subprocess.Popen:
        proc = subprocess.Popen([f"{VENV}/bin/jupyterhub", "-f", str(cfg), *extra], cwd=tmp,
                                env=env, stdout=hub_log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        for _ in range(60):
            try:
                if api.call("GET", "/")[0] == 200:
                    return proc
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError("the hub did not answer in 60 s")

    kernels: dict[str, Kernel] = {}
    ok = False
    # --restart: the first hub leaves its servers running when it stops
    hub = start_hub(*(["--JupyterHub.cleanup_servers=False"] if args.restart else []))
    try:
        log(f"hub up (proxy {proxy}, hub API 127.0.0.1:{hub_port}); run folder {tmp}")
        tokens = {}
        for s in students:
            assert api.call("POST", f"/users/{s}")[0] in (201, 409)
            code, t = api.call("POST", f"/users/{s}/tokens", {"note": "workshop-vms"})
            assert code in (200, 201), f"token for {s}: {code}"
            tokens[s] = t["token"]

        # 1. all servers at once: one VM each
        t0 = time.monotonic()
        for s in students:
            code, _ = api.call("POST", f"/users/{s}/server")
            assert code in (201, 202), f"start {s}: {code}"
        boot: dict[str, float] = {}
        while len(boot) < len(students):
            for s in students:
                if s in boot:
                    continue
                code, u = api.call("GET", f"/users/{s}")
                srv = u.get("servers", {}).get("")
                if srv and srv.get("ready"):
                    boot[s] = time.monotonic() - t0
                    log(f"{s}: server ready in {boot[s]:.0f} s")
                elif not srv and time.monotonic() - t0 > 30:
                    raise RuntimeError(f"{s}'s server failed to start (see {tmp}/hub.log)")
            if time.monotonic() - t0 > 900:
                raise RuntimeError("servers not ready in 900 s")
            time.sleep(2)
        all_ready = time.monotonic() - t0
        pids = qemus(tmp)
        assert len(pids) == len(students), f"{len(pids)} QEMU for {len(students)} students"
        log(f"all {len(students)} ready in {all_ready:.0f} s; {len(pids)} QEMU processes")

        if args.restart:   # the hub restarts; the VMs run on, found again from saved state
            t_r = time.monotonic()
            hub.send_signal(signal.SIGTERM)
            hub.wait(timeout=60)
            assert len(qemus(tmp)) == len(students), "a VM died with the hub"
            hub = start_hub()
            for s in students:
                srv = api.call("GET", f"/users/{s}")[1].get("servers", {}).get("")
                assert srv and srv.get("ready"), f"{s}'s server lost across the hub's restart"
            assert qemus(tmp) == pids
            log(f"hub restarted in {time.monotonic() - t_r:.0f} s; all {len(students)} servers "
                f"found again (same QEMU pids)")

        # 2. one tracepoint program per student, a marker per student
        t1 = time.monotonic()
        for s in students:
            kernels[s] = Kernel(proxy, s, tokens[s], "ebpf-root")
        log("kernels started: " + ", ".join(f"{s}={k.name}" for s, k in kernels.items()))
        ids = {s: k.send(ATTACH) for s, k in kernels.items()}
        for s, k in kernels.items():
            log(f"{s}: {k.collect(ids[s]).strip()}")
        markers = {s: f"mk{i + 1}{secrets.token_hex(4)}" for i, s in enumerate(students)}
        ids = {s: k.send(MARK.format(marker=markers[s])) for s, k in kernels.items()}
        for s, k in kernels.items():
            k.collect(ids[s])
        ids = {s: k.send(READ.format(hub_port=hub_port, proxy_port=proxy_port))
               for s, k in kernels.items()}
        mem = {}
        for s, k in kernels.items():
            out = k.collect(ids[s])
            seen = json.loads(out.split("SEEN ", 1)[1].splitlines()[0])
            mem[s] = int(out.split("USED_MB", 1)[1].split()[0])
            peak = int(out.split("KERNEL_PEAK_MB", 1)[1].split()[0])
            net = json.loads(out.split("NET ", 1)[1].splitlines()[0])
            others = [m for o, m in markers.items() if o != s and m in seen]
            log(f"{s}: marker {markers[s]} seen {seen.get(markers[s], 0)}x; others' markers "
                f"seen: {others or 'none'}; guest memory used {mem[s]} MB, kernel peak "
                f"{peak} MB (after a net/sock.h compile); from the guest: {net}")
            assert net == {"hub": True, "host_proxy": False}, net
            assert seen.get(markers[s]) == 1, f"{s} did not see its own marker: {seen}"
            assert not others, f"ISOLATION BROKEN: {s} saw {others}"
        log(f"isolation held for {len(students)} students ({time.monotonic() - t1:.0f} s for "
            f"kernels, compile, attach, markers)")
        log("QEMU resident memory on the host (now/peak): " +
            ", ".join(f"{rss_mb(p)}/{rss_mb(p, 'VmHWM')} MB" for p in pids))

        # 3. a student's token on another student's server
        if len(students) > 1:
            a, b = students[0], students[1]
            code, _ = Api(f"{proxy}/user/{b}/api", tokens[a]).call("GET", "/kernels")
            log(f"{a}'s token on {b}'s server: {code}")
            assert code == 403, code
            code, _ = Api(f"{proxy}/user/{a}/api", tokens[a]).call("GET", "/kernels")
            assert code == 200, code

        # 4. stop all, nothing left
        for k in kernels.values():
            k.close()
        kernels.clear()
        t2 = time.monotonic()
        by_api, by_hub = students[:-1], students[-1]   # the last one: left to the hub's shutdown
        for s in by_api:
            assert api.call("DELETE", f"/users/{s}/server")[0] in (202, 204)
        while any(api.call("GET", f"/users/{s}")[1].get("servers") for s in by_api):
            if time.monotonic() - t2 > 120:
                raise RuntimeError("servers did not stop in 120 s")
            time.sleep(1)
        left = qemus(tmp)
        log(f"{len(by_api)} stopped over the API in {time.monotonic() - t2:.0f} s; QEMU left: "
            f"{len(left)} (expected 1: {by_hub}'s)")
        assert len(left) == 1
        t3 = time.monotonic()
        hub.send_signal(signal.SIGTERM)                # the hub's shutdown stops the last VM
        hub.wait(timeout=120)
        left = qemus(tmp)
        files = [p for p in vms.glob("*/*") if p.name.startswith("overlay")]
        files += [p for p in vms.glob("*/course/vm/work/*") if p.suffix != ".log"]
        log(f"hub stopped in {time.monotonic() - t3:.0f} s; QEMU left: {left or 'none'}; "
            f"overlays/job/env files left: {files or 'none'}")
        assert not left and not files
        ok = True
    finally:
        for k in kernels.values():
            try:
                k.close()
            except Exception:
                pass
        if hub.poll() is None:
            hub.send_signal(signal.SIGTERM)     # the hub stops what is still running
        try:
            hub.wait(timeout=120)
        except subprocess.TimeoutExpired:
            hub.kill()
        hub_log.close()
        left = qemus(tmp)
        if left:
            log(f"QEMU left after the hub stopped: {left}; killing them")
            for p in left:
                os.kill(p, signal.SIGKILL)
        log(f"hub stopped; total {time.monotonic() - t_total:.0f} s; {'PASS' if ok else 'FAIL'}")
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"logs kept in {tmp}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
