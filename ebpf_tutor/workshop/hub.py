"""A workshop's JupyterHub: its configuration, its students, start, status, stop.

Everything a workshop owns lives in one folder (default
/var/lib/ebpf-tutor/workshop, never the checkout): `workshop.json` (the
settings, the secrets and what was created, mode 0600), `jupyterhub_config.py`
(two lines that call `configure` below), the hub's sqlite database, cookie
secret, pid files and `hub.log`. The instructor's tools drive the hub through
its REST API with the admin token kept in `workshop.json`.

Trusted room: the hub runs as root with JupyterHub's LocalProcessSpawner; each
student is a Linux user whose server runs as that user, and whose "eBPF (root)"
kernel starts through `sudo -n` allowed by one sudoers rule. That kernel is
root: the students are not isolated (see WARNING).
"""
from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..sandbox.prometheus import free_port

MODES = ("trusted-room", "vm")
DEFAULT_DIR = Path("/var/lib/ebpf-tutor/workshop")
SUDOERS = "/etc/sudoers.d/ebpf-tutor-workshop"
WORK_FOLDER = "ebpf-course"           # in each trusted-room student's home
ADMIN_SERVICE = "ebpf-tutor-admin"
VENV = Path(sys.prefix)
CHECKOUT = Path(__file__).resolve().parents[2]
PROXY = VENV / "node_modules/.bin/configurable-http-proxy"
VM_SPAWNER = "ebpf_tutor.workshop.vmspawner.VMSpawner"
QEMU_HOST = "10.0.2.2"               # the host's 127.0.0.1 as a QEMU user-net guest sees it

_WARNING_LINES = [
    "TRUSTED-ROOM MODE: STUDENTS ARE NOT ISOLATED.",
    "Every student shares this machine's one kernel, and the \"eBPF (root)\"",
    "kernel runs as root: each student can read every other student's work,",
    "trace their processes, stop their programs and take over this machine.",
    "Use it only with people you would give root on this machine; otherwise",
    "use --mode vm (one course VM per student).",
]
WARNING = "\n".join(["!" * 78, *(f"!! {line:<72} !!" for line in _WARNING_LINES), "!" * 78])


def student_names(n: int, prefix: str = "ebt-student") -> list[str]:
    return [f"{prefix}{i}" for i in range(1, n + 1)]


@dataclass
class Workshop:
    """One workshop's settings, secrets and what it created (`workshop.json`)."""
    dir: str
    students: list[str]
    mode: str = "trusted-room"
    ip: str = "127.0.0.1"
    port: int = 8000
    hub_port: int = 0                 # the hub's own API, on 127.0.0.1
    proxy_api_port: int = 0
    hub_bind_url: str = ""
    hub_connect_url: str = ""         # what single-user servers (or VMs) use to reach the hub
    authenticator: str = "shared-password"   # or "dummy" (tests)
    password: str = ""
    admin_token: str = ""
    proxy_token: str = ""
    sudoers: str = SUDOERS
    created_users: list[str] = field(default_factory=list)
    vm_suite: str = "bookworm"        # vm mode: the course VM image, its memory and vCPUs
    vm_memory: str = "2G"
    vm_cpus: int = 2

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def url(self) -> str:
        """The public URL (the proxy)."""
        host = "127.0.0.1" if self.ip in ("", "0.0.0.0") else self.ip
        return f"http://{host}:{self.port}"

    def save(self) -> None:
        f = self.path / "workshop.json"
        f.touch(mode=0o600)
        f.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: str | Path = DEFAULT_DIR) -> "Workshop":
        f = Path(folder) / "workshop.json"
        if not f.exists():
            raise FileNotFoundError(f"no workshop in {folder} (start one with `ebpf-tutor workshop start`)")
        return cls(**json.loads(f.read_text()))


def new(folder: str | Path, students: list[str], mode: str = "trusted-room", *,
        ip: str = "127.0.0.1", port: int = 8000, hub_port: int = 0,
        hub_bind_url: str = "", hub_connect_url: str = "",
        authenticator: str = "shared-password", password: str = "",
        sudoers: str = SUDOERS, vm_suite: str = "bookworm", vm_memory: str = "2G",
        vm_cpus: int = 2) -> Workshop:
    """Create the workshop folder with its settings, secrets and hub config."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    d = Path(folder).resolve()
    if d == CHECKOUT or CHECKOUT in d.parents:
        raise ValueError(f"keep the workshop's state out of the checkout: {d}")
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    hub_port = hub_port or free_port()
    ws = Workshop(
        dir=str(d), students=list(students), mode=mode, ip=ip, port=port,
        hub_port=hub_port, proxy_api_port=free_port(),
        hub_bind_url=hub_bind_url or f"http://127.0.0.1:{hub_port}",
        # vm mode: the spawner gives each guest its own route to the hub's API; the
        # proxy uses hub_connect_url too, so it must stay reachable from the host
        hub_connect_url=hub_connect_url,
        authenticator=authenticator, password=password or secrets.token_urlsafe(9),
        admin_token=secrets.token_hex(32), proxy_token=secrets.token_hex(32), sudoers=sudoers,
        vm_suite=vm_suite, vm_memory=vm_memory, vm_cpus=vm_cpus)
    ws.save()
    (d / "jupyterhub_config.py").write_text(
        "# written by ebpf-tutor workshop; the settings are in workshop.json\n"
        "from ebpf_tutor.workshop.hub import Workshop, configure\n"
        f"configure(c, Workshop.load({str(d)!r}))\n")
    return ws


def work_dir(user: str) -> Path:
    """A trusted-room student's work folder (EBPF_TUTOR_WORK)."""
    return Path(pwd.getpwnam(user).pw_dir) / WORK_FOLDER


def vm_state_dir(ws: Workshop) -> Path:
    """VM mode: the VMSpawner's per-student folders (`<student>/course` is the guest's /w)."""
    return ws.path / "vms"


def configure(c, ws: Workshop) -> None:
    """Fill JupyterHub's config object `c` for this workshop."""
    d = ws.path
    c.JupyterHub.bind_url = f"http://{ws.ip}:{ws.port}"
    c.JupyterHub.hub_bind_url = ws.hub_bind_url
    if ws.hub_connect_url:
        c.JupyterHub.hub_connect_url = ws.hub_connect_url
    c.JupyterHub.db_url = f"sqlite:///{d / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(d / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(d / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.command = [str(PROXY)]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{ws.proxy_api_port}"
    c.ConfigurableHTTPProxy.auth_token = ws.proxy_token
    c.ConfigurableHTTPProxy.pid_file = str(d / "proxy.pid")
    # the instructor's tools: a service with the built-in admin role
    c.JupyterHub.services = [{"name": ADMIN_SERVICE, "api_token": ws.admin_token}]
    c.JupyterHub.load_roles = [{"name": "admin", "services": [ADMIN_SERVICE]}]
    c.Authenticator.allowed_users = set(ws.students)
    if ws.authenticator == "dummy":
        c.JupyterHub.authenticator_class = "jupyterhub.auth.DummyAuthenticator"
    else:
        c.JupyterHub.authenticator_class = "jupyterhub.authenticators.shared.SharedPasswordAuthenticator"
        c.SharedPasswordAuthenticator.user_password = ws.password
    c.Spawner.default_url = "/lab"
    if ws.mode == "vm":                # the VMSpawner's own timeouts allow for slow boots
        c.JupyterHub.spawner_class = VM_SPAWNER
        c.VMSpawner.state_dir = str(vm_state_dir(ws))
        c.VMSpawner.suite = ws.vm_suite
        c.VMSpawner.mem_limit = ws.vm_memory
        c.VMSpawner.cpu_limit = ws.vm_cpus
        from .vmspawner import TOP_IGNORE
        c.VMSpawner.exclude = [*TOP_IGNORE, "solutions"]     # students do not get the solutions
        return
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 90
    c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
    c.Spawner.cmd = [str(VENV / "bin/jupyterhub-singleuser")]
    c.Spawner.notebook_dir = f"~/{WORK_FOLDER}"
    c.Spawner.environment = {
        "EBPF_TUTOR_WORK": lambda sp: str(work_dir(sp.user.name)),
        "EBPF_TUTOR_PROGRESS": lambda sp: str(work_dir(sp.user.name) / ".progress.json"),
    }


# --------------------------------------------------------- trusted room -----
def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def fill_work_folder(user: str) -> Path:
    """Create or update the student's copy of the course with `ebpf-tutor work`,
    run as the student: the same work folder a self-paced learner gets."""
    pw = pwd.getpwnam(user)
    work, home = work_dir(user), pw.pw_dir
    start = work / ".progress.json"    # a new student starts with none (`work` would
    if not start.exists():             # otherwise copy the checkout's old one in)
        work.mkdir(exist_ok=True)
        start.write_text("{}")
        for p in (work, start):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    r = subprocess.run(["runuser", "-u", user, "--", "env", f"HOME={home}", f"EBPF_TUTOR_WORK={work}",
                        str(VENV / "bin/ebpf-tutor"), "work", "--dir", str(work)],
                       cwd=home, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"`ebpf-tutor work` for {user} failed: {r.stderr or r.stdout}")
    return work


def create_users(ws: Workshop) -> list[str]:
    """Create the students' Linux users that do not exist yet (remembered, so
    that `teardown` removes only those) and fill their work folders."""
    for name in ws.students:
        try:
            pwd.getpwnam(name)
        except KeyError:
            _run("useradd", "--create-home", "--shell", "/bin/bash",
                 "--comment", "ebpf-tutor workshop student", name)
            ws.created_users.append(name)
            ws.save()
        fill_work_folder(name)
    return ws.created_users


def sudoers_rule(users: list[str], python: Path = VENV / "bin/python") -> str:
    """The one rule: these users may start the kernel command as root, keeping
    the variables the kernel needs (its parent's pid, where progress goes)."""
    return (f"# written by ebpf-tutor workshop; removed by `ebpf-tutor workshop stop`\n"
            f"Cmnd_Alias EBPF_TUTOR_WORKSHOP_KERNEL = {python} -m ipykernel_launcher *\n"
            f'Defaults!EBPF_TUTOR_WORKSHOP_KERNEL env_keep += "JPY_PARENT_PID EBPF_TUTOR_WORK EBPF_TUTOR_PROGRESS"\n'
            f"{', '.join(users)} ALL=(root) NOPASSWD: EBPF_TUTOR_WORKSHOP_KERNEL\n")


def write_sudoers(ws: Workshop) -> Path:
    path = Path(ws.sudoers)
    tmp = path.with_name(path.name + ".tmp")      # sudo ignores names with a dot
    tmp.write_text(sudoers_rule(ws.students))
    tmp.chmod(0o440)
    check = subprocess.run(["visudo", "-cq", "-f", str(tmp)], capture_output=True, text=True)
    if check.returncode:
        tmp.unlink()
        raise RuntimeError(f"visudo rejected the workshop's sudoers rule: {check.stderr or check.stdout}")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------ hub -----
def api(ws: Workshop, method: str, path: str, body: dict | None = None,
        token: str | None = None, timeout: float = 30) -> tuple[int, object]:
    """Call the hub's REST API (`path` after /hub/api) through the proxy."""
    req = urllib.request.Request(
        f"{ws.url}/hub/api{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token or ws.admin_token}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def _pid(file: Path) -> int | None:
    try:
        pid = int(file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def hub_pid(ws: Workshop) -> int | None:
    return _pid(ws.path / "jupyterhub.pid")


def start(ws: Workshop, timeout: float = 60, log=print) -> int:
    """Prepare users and sudoers (trusted room), start the hub in the
    background, and wait until its API answers. Returns the hub's pid."""
    if hub_pid(ws):
        raise RuntimeError(f"a hub already runs for {ws.dir} (pid {hub_pid(ws)})")
    if not PROXY.exists():
        raise FileNotFoundError(f"{PROXY} is missing: run `sudo scripts/provision.sh`")
    if ws.mode == "trusted-room":
        log(WARNING)
        create_users(ws)
        log(f"sudoers rule: {write_sudoers(ws)}")
    with open(ws.path / "hub.log", "ab") as out:
        proc = subprocess.Popen([str(VENV / "bin/jupyterhub"), "-f", str(ws.path / "jupyterhub_config.py")],
                                cwd=ws.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited ({proc.returncode}); see {ws.path / 'hub.log'}")
        try:
            if api(ws, "GET", "/", timeout=2)[0] == 200:
                return proc.pid
        except OSError:
            pass
        time.sleep(0.3)
    _terminate(proc.pid)                     # not left running behind a failed start
    raise TimeoutError(f"the hub did not answer in {timeout:.0f} s; see {ws.path / 'hub.log'}")


def status(ws: Workshop) -> list[dict]:
    """Every user the hub knows: server running or not, its URL, last activity."""
    code, users = api(ws, "GET", "/users")
    if code != 200:
        raise RuntimeError(f"GET /users: {code} {users}")
    rows = []
    for u in users:
        srv = u.get("servers", {}).get("", {})
        rows.append({"user": u["name"], "server": "ready" if srv.get("ready") else
                     ("pending" if srv.get("pending") else "stopped"),
                     "url": srv.get("url", ""), "last_activity": u.get("last_activity") or ""})
    return rows


def stop_servers(ws: Workshop, timeout: float = 60) -> None:
    """Stop every student's server through the API and wait until they are gone."""
    try:
        users = status(ws)
    except (OSError, RuntimeError):
        return
    for row in users:
        if row["server"] != "stopped":
            api(ws, "DELETE", f"/users/{row['user']}/server")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(r["server"] != "stopped" for r in status(ws)):
        time.sleep(0.3)


def _alive(pid: int) -> bool:
    """Running (a zombie is not; one that is our own child is reaped here)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _terminate(pid: int, timeout: float = 10) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, timeout):
            return


def processes_of(users: list[str]) -> list[int]:
    """Pids run by these users, and root kernels started from their homes
    (their command line names a connection file there)."""
    uids = {pwd.getpwnam(u).pw_uid for u in users if _exists(u)}
    homes = [pwd.getpwnam(u).pw_dir + "/" for u in users if _exists(u)]
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            uid = p.stat().st_uid
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if uid in uids or any(h in cmd for h in homes):
            found.append(int(p.name))
    return found


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def teardown(ws: Workshop, log=print) -> list[int]:
    """Stop the servers, the hub and the proxy; then remove what `start`
    created: leftover student processes, the users it made, the sudoers rule.
    Returns the pids that were still there after the hub stopped (and were
    killed here): none when the servers and their kernels shut down cleanly."""
    left: list[int] = []
    if hub_pid(ws):
        stop_servers(ws)
    pid = hub_pid(ws)
    if pid:
        _terminate(pid, 30)       # the hub stops its servers and its proxy on SIGTERM
        log(f"hub stopped (pid {pid})")
    proxy = _pid(ws.path / "proxy.pid")
    if proxy and b"configurable-http-proxy" in Path(f"/proc/{proxy}/cmdline").read_bytes():
        _terminate(proxy)
        log(f"proxy stopped (pid {proxy})")
    if ws.mode == "trusted-room":
        left = processes_of(ws.students)
        for pid in left:
            log(f"leftover process {pid} stopped")
            _terminate(pid, 5)
        for user in list(ws.created_users):
            if _exists(user):
                _run("userdel", "--remove", user)
            ws.created_users.remove(user)
            ws.save()
            log(f"user {user} removed")
        if Path(ws.sudoers).exists():
            Path(ws.sudoers).unlink()
            log(f"sudoers rule {ws.sudoers} removed")
    return left
