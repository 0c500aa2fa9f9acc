"""VMSpawner: one course VM per student, so that each has a kernel of their own.

eBPF programs are kernel-global and need root, so students who share a kernel
are not isolated. This JupyterHub spawner boots the course VM image
(`vm/course_vm.py build`) once per student:

* the disk is a copy-on-write qcow2 overlay over the image, thrown away on stop;
* the guest's /w (the 9p share `vm/init.sh` mounts) is the student's own copy
  of the course, kept on the host under `state_dir/<student>/course`, so their
  work and `.progress.json` survive a restart and the instructor can read them;
* `vm/init.sh` runs the job `vm/work/<job>.sh` of that share: it brings up the
  network, reads the hub's environment (API token...) from `vm/work/<job>.env`,
  deletes it, fills the work folder (`ebpf-tutor work`) and runs
  `jupyterhub-singleuser` as root (the guest is the student's machine, and BPF
  needs root) on port 8888, forwarded to a free port on the host's loopback;
* the network is QEMU's user networking, restricted by default: the guest
  reaches nothing on the host or beyond but the hub's API, at 10.0.2.100,
  relayed by `relay.py` (unrestricted, it reaches the host's loopback as 10.0.2.2).

No secret ever appears in QEMU's argv (visible in the host's `ps`): the token
travels in the share's env file only, readable by root and that student's VM.
Leave `JupyterHub.hub_connect_url` unset: the proxy uses it too, and the
spawner works out the guest's route to the hub itself.

    c.JupyterHub.spawner_class = "ebpf_tutor.workshop.vmspawner.VMSpawner"
    c.VMSpawner.suite = "bookworm"        # or trixie
    c.Spawner.mem_limit = "2G"            # per VM
    c.Spawner.cpu_limit = 2               # vCPUs per VM
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..sandbox.prometheus import free_port
from urllib.parse import urlparse, urlunparse

from jupyterhub.spawner import Spawner
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Callable, Float, Integer, List, Unicode, default

CHECKOUT = Path(__file__).resolve().parents[2]
GUEST_PORT = 8888
LOOPBACK = ("127.0.0.1", "localhost", "0.0.0.0", "::1", None)
RELAY = Path(__file__).with_name("relay.py")
TOP_IGNORE = [".git", ".venv", "build", "work", "node_modules", ".progress.json"]
CACHES = {"__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints"}


def course_vm():
    """vm/course_vm.py (image location, kernel command line, KVM choice), imported once."""
    mod = sys.modules.get("course_vm")
    if mod is None:
        spec = importlib.util.spec_from_file_location("course_vm", CHECKOUT / "vm/course_vm.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["course_vm"] = mod
        spec.loader.exec_module(mod)
    return mod


def pid_cmdline(pid: int) -> list[str]:
    """The argv of process `pid`, [] when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def guest_job(job: str, command: list[str]) -> str:
    """The script vm/init.sh runs in the guest (as root, cwd /w) after provisioning."""
    env = f"/w/vm/work/{job}.env"
    return "\n".join([
        "#!/bin/bash",
        "set -e",
        "# QEMU user networking: the guest is 10.0.2.15, its gateway 10.0.2.2",
        "modprobe virtio_net 2>/dev/null || true",
        "dev=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)",
        'ip link set "$dev" up',
        'ip addr add 10.0.2.15/24 dev "$dev"',
        "ip route add default via 10.0.2.2",
        f"set -a; . {env}; set +a",
        f"rm -f {env}",
        "# the student's work folder (ebpf-tutor work), else the course itself",
        "cd /w",
        "python -m ebpf_tutor work >/dev/null 2>&1 || true",
        'if [ -d /w/work ]; then nb=/w/work; else nb=/w; fi',
        'export JUPYTERHUB_ROOT_DIR="${JUPYTERHUB_ROOT_DIR:-$nb}"',
        'cd "$JUPYTERHUB_ROOT_DIR"',
        "free -m",
        "exec " + " ".join(shlex.quote(c) for c in command),
        "",
    ])


class VMSpawner(Spawner):
    """Boot one course VM per student and run jupyterhub-singleuser in it."""

    suite = Unicode("bookworm", help="Course VM image: bookworm (6.1) or trixie (6.12).").tag(config=True)
    image = Unicode("", help="Image folder (vmlinuz, initrd.img, disk.img); "
                    "default: the one vm/course_vm.py builds for `suite`.").tag(config=True)
    state_dir = Unicode("/var/lib/ebpf-tutor/workshop",
                        help="Per-student folders: course copy, overlay, console log.").tag(config=True)
    course = Unicode(str(CHECKOUT), help="The checkout each student gets a copy of.").tag(config=True)
    exclude = List(Unicode(), TOP_IGNORE, help="Top-level names of the checkout left out of "
                   "the students' copies (add 'solutions' to hide them).").tag(config=True)
    accel = Unicode("", help="kvm or tcg; default: as vm/course_vm.py decides.").tag(config=True)
    guest_hub_host = Unicode(help="Where the guest reaches the hub's API: the guestfwd address "
                             "10.0.2.100 when restricted, else 10.0.2.2 (the host's loopback "
                             "as a QEMU user-net guest sees it).").tag(config=True)
    restrict_network = Bool(True, help="The guest reaches nothing on the host or beyond but "
                            "the hub's API (QEMU restrict=on and a guestfwd relay).").tag(config=True)
    tcg_tb_mb = Integer(0, help="Under TCG, the translation cache in MB (0: QEMU's default, "
                        "up to 1 GiB, which adds to each VM's resident memory).").tag(config=True)
    qemu = Unicode("qemu-system-x86_64").tag(config=True)
    qemu_img = Unicode("qemu-img").tag(config=True)
    stop_grace = Float(10.0, help="Seconds between SIGTERM and SIGKILL of QEMU.").tag(config=True)
    ready_interval = Float(1.0, help="Seconds between readiness probes.").tag(config=True)
    launcher = Callable(None, allow_none=True, help="launcher(spawner, port) -> argv: replaces "
                        "the QEMU command (tests run a fake VM with it).").tag(config=True)

    _proc: subprocess.Popen | None = None
    pid = Integer(0)
    hostport = Integer(0)
    overlay = Unicode("")
    job = Unicode("")

    @default("guest_hub_host")
    def _guest_hub_host(self) -> str:
        return "10.0.2.100" if self.restrict_network else "10.0.2.2"

    @default("mem_limit")
    def _mem(self) -> int:
        return 2 * 1024 ** 3

    @default("cpu_limit")
    def _cpus(self) -> float:
        return 2.0

    @default("start_timeout")
    def _start_timeout(self) -> int:
        return 600                     # a TCG boot takes 1-2 min alone, more on a busy host

    @default("http_timeout")
    def _http_timeout(self) -> int:
        return 120

    @default("cmd")
    def _cmd(self) -> list[str]:
        return [f"{course_vm().VENV_IN_VM}/bin/jupyterhub-singleuser"]

    # ------------------------------------------------------------ paths --
    @property
    def student_dir(self) -> Path:
        name = self.user.escaped_name + (f"-{self.name}" if self.name else "")
        return Path(self.state_dir) / name

    @property
    def share(self) -> Path:
        return self.student_dir / "course"

    def job_file(self, ext: str) -> Path:
        return self.share / "vm" / "work" / f"{self.job}.{ext}"

    def image_path(self) -> Path:
        img = Path(self.image) if self.image else course_vm().image_dir(self.suite)
        if not (img / "disk.img").exists():
            raise RuntimeError(f"no course VM image at {img}: build it with "
                               f"`vm/course_vm.py build --suite {self.suite}`")
        return img

    # ----------------------------------------------------------- state --
    def get_state(self) -> dict:
        state = super().get_state()
        if self.pid:
            state.update(pid=self.pid, port=self.hostport, overlay=self.overlay, job=self.job)
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.pid = state.get("pid", 0)
        self.hostport = state.get("port", 0)
        self.overlay = state.get("overlay", "")
        self.job = state.get("job", "")

    def clear_state(self) -> None:
        super().clear_state()
        self.pid = self.hostport = 0
        self.overlay = self.job = ""
        self._proc = None

    # ---------------------------------------------------------- guest --
    def hub_route(self) -> tuple[str, int, str, int]:
        """(host, port) of the hub's API as the guest reaches it, and as the host does."""
        hub = urlparse(self.hub.api_url)
        target = hub.hostname if hub.hostname not in (None, "", "0.0.0.0", "::") else "127.0.0.1"
        given = urlparse(self.hub_connect_url) if self.hub_connect_url else hub
        if self.restrict_network or given.hostname in LOOPBACK:
            return self.guest_hub_host, given.port or hub.port, target, hub.port
        return given.hostname, given.port, target, hub.port

    def guest_env(self) -> dict[str, str]:
        """The hub's environment for the singleuser server, as the guest must see it."""
        env = self.get_env()
        api = urlparse(env["JUPYTERHUB_API_URL"])
        host, port, _, _ = self.hub_route()
        guest_api = urlunparse(api._replace(netloc=f"{host}:{port}"))
        for key in ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL"):
            env[key] = env[key].replace(env["JUPYTERHUB_API_URL"], guest_api, 1)
        base = self.server.base_url if self.server else "/"
        env["JUPYTERHUB_SERVICE_URL"] = f"http://0.0.0.0:{GUEST_PORT}{base}"
        env["HOME"] = "/root"
        return env

    def nic(self, port: int) -> str:
        """QEMU user networking: the student's server forwarded to the host's
        loopback; restricted, the guest reaches nothing but the hub's API."""
        nic = f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:{GUEST_PORT}"
        if self.restrict_network:
            host, gport, target, tport = self.hub_route()
            relay = f"{shlex.quote(sys.executable)} {shlex.quote(str(RELAY))} {target} {tport}"
            nic += f",restrict=on,guestfwd=tcp:{host}:{gport}-cmd:{relay}"
        return nic

    def qemu_argv(self, img: Path, port: int) -> list[str]:
        """The QEMU command line: nothing secret in it (it shows in `ps`)."""
        cvm = course_vm()
        accel = self.accel or ("kvm" if cvm.kvm_works() else "tcg")
        tb = f",tb-size={self.tcg_tb_mb}" if accel == "tcg" and self.tcg_tb_mb else ""
        argv = [self.qemu, "-accel", accel + tb, "-smp", str(max(1, int(self.cpu_limit or 1))),
                "-m", f"{int(self.mem_limit) // 2**20}M", "-nographic", "-no-reboot",
                "-kernel", str(img / "vmlinuz"), "-initrd", str(img / "initrd.img"),
                "-drive", f"file={self.overlay},format=qcow2,if=virtio",
                "-virtfs", f"local,path={self.share},mount_tag=repo,security_model=none,id=repo",
                "-nic", self.nic(port),
                "-append", f"{cvm.KERNEL_CMDLINE} course.job={self.job}"]
        if accel == "tcg":
            argv[1:1] = ["-cpu", "max"]
        return argv

    def _prepare(self, img: Path) -> None:
        """The student's course copy (first start only), overlay, job and env files."""
        self.student_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.student_dir, 0o700)
        if not self.share.exists():
            tmp = self.student_dir / "course.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.course, tmp, symlinks=True, ignore=_course_ignore(Path(self.course), set(self.exclude)))
            tmp.rename(self.share)
        self.job_file("sh").parent.mkdir(parents=True, exist_ok=True)
        base = img / "disk.img"
        info = json.loads(subprocess.run([self.qemu_img, "info", "--output=json", str(base)],
                                         check=True, capture_output=True, text=True).stdout)
        subprocess.run([self.qemu_img, "create", "-q", "-f", "qcow2", "-F", info["format"],
                        "-b", str(base.resolve()), self.overlay], check=True, capture_output=True)
        command = list(self.cmd) + ["--allow-root"] + list(self.get_args())
        self.job_file("sh").write_text(guest_job(self.job, command))
        env = self.job_file("env")
        fd = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{k}={shlex.quote(str(v))}\n" for k, v in self.guest_env().items())

    # ------------------------------------------------------------ start --
    async def start(self) -> tuple[str, int]:
        """Boot the student's VM; return the forwarded address once its server answers."""
        self.job = f"{self.student_dir.name}-{int(time.time())}"
        self.overlay = str(self.student_dir / "overlay.qcow2")
        try:
            img = self.image_path()
            await asyncio.to_thread(self._prepare, img)
            port = free_port()
            argv = (self.launcher(self, port) if self.launcher is not None
                    else self.qemu_argv(img, port))
            console = open(self.student_dir / "console.log", "wb")
            with console:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                              stderr=subprocess.STDOUT, start_new_session=True)
            self.pid, self.hostport = self._proc.pid, port
            self.log.info("VM of %s: pid %d, port %d, overlay %s", self.user.name, self.pid,
                          port, self.overlay)
            t0 = time.monotonic()
            await self._wait_ready()
            self.log.info("VM of %s ready in %.0f s", self.user.name, time.monotonic() - t0)
            return ("127.0.0.1", port)
        except BaseException:          # a failure, a timeout or a cancel: leave nothing behind
            await self._release()
            raise

    async def _wait_ready(self) -> None:
        """Until the guest's server answers HTTP (QEMU accepts on the port long before)."""
        base = self.server.base_url if self.server else "/"
        url = f"http://127.0.0.1:{self.hostport}{base}api"
        client = AsyncHTTPClient()
        while True:
            rc = await self.poll()
            if rc is not None:
                log = self.job_file("log")
                if not log.exists():
                    log = self.student_dir / "console.log"
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the VM of {self.user.name} exited ({rc}) before its "
                                   f"server answered; {log.name}:\n{tail}")
            try:
                resp = await client.fetch(url, raise_error=False, request_timeout=5)
                if resp.code < 500:
                    return
            except (OSError, HTTPClientError):   # refused or reset: nothing listens yet
                pass
            await asyncio.sleep(self.ready_interval)

    # ------------------------------------------------------------- poll --
    def _ours(self) -> bool:
        """Whether pid is still the QEMU we started (after a hub restart the pid may be reused)."""
        argv = pid_cmdline(self.pid)
        return bool(argv) and (self.overlay in " ".join(argv) or self.job in " ".join(argv))

    async def poll(self) -> int | None:
        """None while the VM runs, else its exit status (0 if not our child)."""
        if self._proc is not None:
            return self._proc.poll()
        if self.pid and self._ours():
            return None
        return 0

    # ------------------------------------------------------------- stop --
    async def stop(self, now: bool = False) -> None:
        """Power the VM off (SIGTERM, SIGKILL after stop_grace), remove its files."""
        await self._release(grace=0 if now else self.stop_grace)

    async def _release(self, grace: float | None = None) -> None:
        await self._kill(self.stop_grace if grace is None else grace)
        for path in (Path(self.overlay) if self.overlay else None,
                     *(self.job_file(e) for e in ("sh", "env", "rc") if self.job)):
            if path is not None:
                path.unlink(missing_ok=True)
        if self.job and self.job_file("log").exists():   # the guest's server log, kept once
            self.job_file("log").replace(self.student_dir / "server.log")

    async def _kill(self, grace: float) -> None:
        proc = self._proc
        if proc is None and not (self.pid and self._ours()):
            return
        pid = proc.pid if proc is not None else self.pid
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if (proc.poll() is not None) if proc is not None else not self._ours():
                    return
                await asyncio.sleep(0.1)
        if proc is not None:
            proc.wait(timeout=5)


def _course_ignore(root: Path, exclude: set[str]):
    """copytree's ignore: build output, caches, the host's venv and learner files."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in CACHES or n.endswith(".egg-info")}
        if Path(folder) == root:
            skip |= exclude & set(names)
        if Path(folder) == root / "vm":
            skip.add("work")                 # other jobs' files; recreated empty
        return skip
    return ignore
