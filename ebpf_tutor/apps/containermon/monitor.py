"""Load containermon's BPF program, watch containers, turn events into
alerts.

    with Monitor(Settings()) as mon, Container("a") as a:
        mon.watch(a)                       # by cgroup id (and its pid namespace)
        a.sh("cat /etc/hostname")
        mon.settle()                       # every event so far handled
        mon.events, mon.alerts

Events come from tracepoints only (`containermon.bpf.c`); tracepoints this
kernel lacks (sys_enter_dup2 on arm64, sys_exit_accept) are left out at
compile time. A thread polls the ring buffer and samples each container
process's CPU time for the miner rule. Enforcement: `Settings.enforce_shell_kill`
(bpf_send_signal(SIGKILL) at the shell's exec) and `Settings.deny_ports`
(a cgroup/connect4 program on each watched container's scratch cgroup).
"""
from __future__ import annotations

import ctypes as ct
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Callable

from .rules import Alert, CpuWatch, Settings, check

C_SOURCE = Path(__file__).with_name("containermon.bpf.c")
LSM_SOURCE = Path(__file__).with_name("containermon_lsm.bpf.c")
BIN_DIRS = ("/bin", "/usr/bin", "/usr/local/bin", "/sbin", "/usr/sbin")
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
OPTIONAL = {"HAS_DUP2": "syscalls/sys_enter_dup2", "HAS_ACCEPT": "syscalls/sys_exit_accept"}
REQUIRED = ("sched/sched_process_exec", "sched/sched_switch", "sched/sched_process_exit",
            "syscalls/sys_enter_openat", "syscalls/sys_enter_connect", "syscalls/sys_exit_socket",
            "syscalls/sys_exit_accept4", "syscalls/sys_enter_close", "syscalls/sys_enter_dup3",
            "syscalls/sys_enter_unshare", "syscalls/sys_enter_setns", "syscalls/sys_enter_mount")
KINDS = {1: "exec", 2: "open_w", 3: "connect", 4: "accept", 5: "dup_sock", 6: "unshare",
         7: "setns", 8: "mount", 9: "killed"}
POLICY_WATCH, POLICY_KILL_SHELL = 1, 2


class Event(ct.Structure):
    _fields_ = [("ts", ct.c_uint64), ("cgroup", ct.c_uint64), ("arg0", ct.c_uint64),
                ("arg1", ct.c_uint64), ("pid", ct.c_uint32), ("tid", ct.c_uint32),
                ("kind", ct.c_uint32), ("pad", ct.c_uint32), ("comm", ct.c_char * 16),
                ("path", ct.c_char * 128)]


def tracepoint_exists(name: str) -> bool:
    return any(os.path.isdir(f"{root}/events/{name}") for root in TRACEFS)


def missing_tracepoints() -> list[str]:
    return [tp for tp in REQUIRED if not tracepoint_exists(tp)]


def decode(e: Event, names: dict[int, str]) -> dict:
    """One event as a dict: kind, container, pid, comm and the kind's fields."""
    kind = KINDS.get(e.kind, str(e.kind))
    rec = {"kind": kind, "container": names.get(e.cgroup, str(e.cgroup)), "cgroup": e.cgroup,
           "pid": e.pid, "comm": e.comm.decode(errors="replace"), "ts_ns": e.ts}
    path = e.path.decode(errors="replace")
    if kind in ("exec", "killed", "mount"):
        rec["path"] = path
    if kind == "mount":
        rec["flags"] = e.arg0
    elif kind == "open_w":
        rec.update(path=path, flags=e.arg0)
    elif kind == "connect":
        rec.update(addr=socket.inet_ntoa(struct.pack("<I", e.arg0 & 0xFFFFFFFF)), port=e.arg1)
    elif kind == "accept":
        rec["fd"] = e.arg0
    elif kind == "dup_sock":
        rec.update(oldfd=e.arg0, newfd=e.arg1)
    elif kind == "unshare":
        rec["flags"] = e.arg0
    elif kind == "setns":
        rec.update(fd=e.arg0, nstype=e.arg1)
    return rec


class Monitor:
    """The loaded program, the containers it watches, what it saw."""

    def __init__(self, settings: Settings | None = None, *,
                 on_event: Callable[[dict], None] | None = None,
                 on_alert: Callable[[Alert], None] | None = None, sample_every: float = 0.25):
        self.settings = settings or Settings()
        self.on_event = on_event
        self.on_alert = on_alert
        self.sample_every = sample_every
        self.events: list[dict] = []
        self.alerts: list[Alert] = []
        self.names: dict[int, str] = {}           # cgroup id -> container name
        self.pidns: dict[str, int] = {}           # container name -> pid namespace inode
        self.left_out: list[str] = []             # optional tracepoints not on this kernel
        self.cpu = CpuWatch(self.settings.cpu_share, self.settings.cpu_seconds)
        self.prog = None
        self.lsm = None                           # the LSM refusal, where BPF LSM works
        self.lsm_note = ""                        # why it is not used, in one line
        self._attachments = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._handled = 0

    # -- lifecycle --
    def __enter__(self) -> "Monitor":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        from ...program import Program
        missing = missing_tracepoints()
        if missing:
            raise RuntimeError("this kernel lacks tracepoints containermon needs: " + ", ".join(missing))
        cflags = []
        for flag, tp in OPTIONAL.items():
            if tracepoint_exists(tp):
                cflags.append(f"-D{flag}")
            else:
                self.left_out.append(tp)
        self.prog = Program(C_SOURCE.read_text(), cflags=cflags, name="containermon")
        shells = self.prog["shells"]
        for name in self.settings.shells:
            key = shells.Key()
            key.c = name.encode()[:15]
            shells[key] = ct.c_uint8(1)
        self.prog["events"].open_ring_buffer(self._on_raw)
        if self.settings.enforce_shell_kill:
            self._load_lsm()
        self._thread = threading.Thread(target=self._loop, name="containermon", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for a in self._attachments:
            a.detach()
        self._attachments = []
        if self.prog is not None:
            self.prog.close()
            self.prog = None
        if self.lsm is not None:
            self.lsm.close()
            self.lsm = None

    def _load_lsm(self) -> None:
        """Refuse shells' execs in bprm_check_security where BPF LSM works;
        elsewhere the tracepoint's bpf_send_signal kill is all (one line says so)."""
        from ...features import available, reason
        from ...program import Program
        if not available("lsm"):
            self.lsm_note = (f"BPF LSM: not available on this kernel ({reason('lsm')}); "
                             "shells are killed at exec with bpf_send_signal instead.")
            return
        self.lsm = Program(LSM_SOURCE.read_text(), name="containermon_lsm")
        inodes = self.lsm["shell_inodes"]
        for name in self.settings.shells:
            for d in BIN_DIRS:
                try:
                    inodes[ct.c_uint64(os.stat(os.path.join(d, name)).st_ino)] = ct.c_uint8(1)
                except OSError:
                    continue

    # -- containers --
    def watch(self, container) -> None:
        """Watch a `Container` (its cgroup id), applying the enforcement settings."""
        policy = POLICY_WATCH | (POLICY_KILL_SHELL if self.settings.enforce_shell_kill else 0)
        self.names[container.cgroup_id] = container.name
        self.pidns[container.name] = container.pidns
        if self.settings.deny_ports:
            ports = self.prog["deny_ports"]
            for p in self.settings.deny_ports:
                ports[ports.Key(p)] = ct.c_uint8(1)
            self._attachments.append(container.cgroup.attach(self.prog, "deny_connect4", "connect4"))
        self.prog["containers"][ct.c_uint64(container.cgroup_id)] = ct.c_uint32(policy)
        if self.lsm is not None:
            self.lsm["lsm_guarded"][ct.c_uint64(container.cgroup_id)] = ct.c_uint8(1)

    def lsm_refusals(self) -> dict[str, int]:
        """Execs refused by the LSM program so far: {container: count}."""
        if self.lsm is None:
            return {}
        return {self.names.get(k.value, str(k.value)): v.value
                for k, v in self.lsm["lsm_denied"].items()}

    def watch_cgroup(self, path: str | Path, name: str | None = None) -> int:
        """Watch an existing cgroup (e.g. a Docker container's) by path: events
        and alerts only, no enforcement (that is for scratch cgroups)."""
        cid = os.stat(path).st_ino
        self.names[cid] = name or Path(path).name
        self.prog["containers"][ct.c_uint64(cid)] = ct.c_uint32(POLICY_WATCH)
        return cid

    def unwatch(self, container) -> None:
        try:
            del self.prog["containers"][ct.c_uint64(container.cgroup_id)]
        except KeyError:
            pass

    # -- events --
    def _on_raw(self, ctx, data, size) -> None:
        e = ct.cast(data, ct.POINTER(Event)).contents
        rec = decode(e, self.names)
        with self._lock:
            self.events.append(rec)
            self._handled += 1
            if self.on_event:
                self.on_event(rec)
            alert = check(rec, self.settings)
            if alert:
                self._alert(alert)

    def _alert(self, alert: Alert) -> None:
        self.alerts.append(alert)
        if self.on_alert:
            self.on_alert(alert)

    def _loop(self) -> None:
        next_sample = time.monotonic()
        while not self._stop.is_set():
            self.prog.ring_buffer_poll(50)
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + self.sample_every
                totals = self.cpu_totals()
                with self._lock:
                    for alert in self.cpu.sample(now, totals):
                        self._alert(alert)

    def cpu_totals(self) -> dict:
        """{(container, pid, comm): ns on CPU so far} for each container process,
        with the time of the one running now on each CPU."""
        now = time.monotonic_ns()          # the clock bpf_ktime_get_ns() reads
        totals = {}
        running = {}
        for cpu_val in self.prog["oncpu"].getvalue(0):
            if cpu_val.start and cpu_val.tid:
                running[cpu_val.tid] = now - cpu_val.start
        for k, v in self.prog["runtime"].items():
            pid = k.value
            key = self._process_key(pid)
            if key is None:
                continue
            totals[key] = v.value + running.get(pid, 0)
        return totals

    def _process_key(self, pid: int):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cg = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return None
        from ...sandbox.cgroup import cgroup2_root
        for line in cg.splitlines():
            if line.startswith("0::"):
                try:
                    cid = os.stat(cgroup2_root() / line[3:].lstrip("/")).st_ino
                except OSError:
                    return None
                name = self.names.get(cid)
                return (name, pid, comm) if name else None
        return None

    def settle(self, quiet: float = 0.15) -> None:
        """Wait until no event has arrived for `quiet` seconds (the ring drained)."""
        last = -1
        while True:
            time.sleep(quiet)
            with self._lock:
                if self._handled == last:
                    return
                last = self._handled

    def lost(self) -> int:
        """Events the kernel could not put in the ring buffer (it was full)."""
        return int(self.prog["lost"][ct.c_int(0)].value)

    def refused(self) -> dict[int, int]:
        """connect4 refusals so far: {port: count}."""
        return {k.value: v.value for k, v in self.prog["refused"].items()}

    def alerts_for(self, container: str) -> list[Alert]:
        with self._lock:
            return [a for a in self.alerts if a.container == container]
