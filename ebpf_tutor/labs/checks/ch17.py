"""Chapter 17 checks: exec events per container, reverse-shell detection,
a shell killed at its exec inside a guarded container.

Every check makes its own containers (`sandbox.container.Container`: pid,
mount, uts and network namespaces + a scratch cgroup), runs freshly named
programs a random, known number of times in them and on the host (the
decoys), and judges by what the learner's program recorded or did.
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from ...errors import BpfError
from ...program import Program, close_all
from ...sandbox.container import Container
from ..verdict import LabFailed, expect, lab


def _load(lab_id: str, program: str, cflags: list[str] | None = None) -> Program:
    try:
        return Program(program, cflags=cflags or [])
    except BpfError as e:
        raise LabFailed(lab_id, f"your program did not load: {str(e).splitlines()[0]}",
                        "read the compiler or verifier message above, fix that line") from None


def _table(prog: Program, name: str, lab_id: str, hint: str):
    try:
        return prog[name]
    except KeyError:
        raise LabFailed(lab_id, f"your program has no map named `{name}`", hint) from None


def _fresh(prefix: str) -> str:
    """A program name no other process on the machine uses (comm: 15 chars)."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"[:15]


@contextlib.contextmanager
def _programs(names: dict[str, str]):
    """Symlinks named `name` to `target`, in a fresh directory; removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="ebt17-"))
    try:
        paths = {}
        for name, target in names.items():
            (folder / name).symlink_to(shutil.which(target) or target)
            paths[name] = str(folder / name)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _watch(prog: Program, table: str, *containers: Container) -> None:
    for c in containers:
        prog[table][ct.c_uint64(c.cgroup_id)] = ct.c_uint8(1)


# -------------------------------------------------------------------- 17.1 --
@lab("17.1", "exec events per container")
def check_container_execs(program: str) -> str:
    """Two watched containers, one unwatched, the host: a fresh program name
    run a random number of times in each; exactly the watched counts."""
    rng = random.Random()
    name = _fresh("c17x")
    runs = {"a": rng.randint(1, 4), "b": rng.randint(2, 5), "decoy": rng.randint(1, 3),
            "host": rng.randint(1, 3)}
    try:
        with _load("17.1", program) as prog, _programs({name: "true"}) as paths, \
                Container("a") as a, Container("b") as b, Container("decoy") as decoy:
            execs = _table(prog, "execs", "17.1",
                           "keep BPF_HASH(execs, struct exec_key, u64, 1024);")
            _table(prog, "containers", "17.1", "keep BPF_HASH(containers, u64, u8, 64);")
            _watch(prog, "containers", a, b)
            ids = {a.cgroup_id: "a", b.cgroup_id: "b", decoy.cgroup_id: "the unwatched container"}
            for where, c in (("a", a), ("b", b), ("decoy", decoy)):
                for _ in range(runs[where]):
                    expect(c.run([paths[name]]).rc == 0, "17.1",
                           f"{name} did not run in container {where}", "")
            for _ in range(runs["host"]):
                subprocess.run([paths[name]], check=True)
            try:
                got = {(k.cgroup, k.comm.decode(errors="replace")): v.value for k, v in execs.items()}
            except AttributeError as e:
                raise LabFailed("17.1", f"the map's key lacks a field the lab names: {e}",
                                "keep struct exec_key {u64 cgroup; char comm[16];}") from None
    finally:
        close_all()
    mine = {cg: n for (cg, comm), n in got.items() if comm == name}
    expect(got, "17.1", "`execs` is empty after programs were started in two watched containers",
           "count every exec of a watched container: lookup_or_try_init, then __sync_fetch_and_add")
    expect(mine, "17.1", f"no entry for the program {name}, started {runs['a'] + runs['b']} "
           f"times in the watched containers; your keys: {sorted(got)[:3]}",
           "the key's comm is bpf_get_current_comm() of the task that exec'd; zero the key first")
    stray = [ids.get(cg, f"cgroup {cg} (not a container: the host?)") for cg in mine
             if cg not in (a.cgroup_id, b.cgroup_id)]
    expect(not stray, "17.1", f"{name} counted under {stray[0] if stray else ''}; only the "
           "containers listed in `containers` are watched",
           "return 0 unless containers.lookup(&cgroup) finds bpf_get_current_cgroup_id()")
    for cg, where in ((a.cgroup_id, "a"), (b.cgroup_id, "b")):
        n = mine.get(cg, 0)
        expect(n == runs[where], "17.1", f"{name} ran {runs[where]} times in container {where}, "
               f"your count under its cgroup id is {n}",
               "key by bpf_get_current_cgroup_id(), and add 1 for every exec "
               "(__sync_fetch_and_add), never an assignment")
    return (f"{runs['a']} and {runs['b']} execs counted under the two watched containers' cgroup "
            f"ids; the unwatched container ({runs['decoy']}) and the host ({runs['host']}) ignored")


# -------------------------------------------------------------------- 17.2 --
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# each script starts a listener on its own loopback and connects to it
_LISTEN = ("import os, socket\nsrv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(4)\n"
           "s = socket.create_connection(srv.getsockname())\n")
ATTACK_3 = _LISTEN + ("os.dup2(s.fileno(), 0); os.dup2(s.fileno(), 1)\n"
                      "os.dup2(s.fileno(), 2, inheritable=False)   # dup3\n")
ATTACK_COPY = _LISTEN + "os.dup2(s.fileno(), 1); os.dup2(1, 0)\n"
BENIGN = _LISTEN + (
    "c, _ = srv.accept(); s.sendall(b'ping'); assert c.recv(4) == b'ping'\n"
    "f = open(os.devnull, 'w'); os.dup2(f.fileno(), 1)           # output to a file\n"
    "os.dup2(s.fileno(), 7)                                       # a socket, not onto 0-2\n"
    "t = socket.socket(); n = t.fileno(); t.close()\n"
    "g = open(os.devnull, 'w'); assert g.fileno() == n             # the number, reused\n"
    "os.dup2(g.fileno(), 1)\n")


def has_tracepoint(name: str) -> bool:
    return any(os.path.isdir(f"{root}/events/{name}") for root in TRACEFS)


@lab("17.2", "reverse-shell detection")
def check_reverse_shell(program: str) -> str:
    """Two attacks and benign socket work in three containers, an attack on
    the host; exactly the attacks' socket copies onto 0-2, per container."""
    cflags = ["-DHAS_DUP2"] if has_tracepoint("syscalls/sys_enter_dup2") else []
    py = [sys.executable, "-I", "-c"]
    try:
        with _load("17.2", program, cflags) as prog, Container("attack") as attack, \
                Container("copy") as copy, Container("benign") as benign:
            flagged = _table(prog, "flagged", "17.2", "keep BPF_HASH(flagged, u64, u64, 64);")
            _table(prog, "containers", "17.2", "keep BPF_HASH(containers, u64, u8, 64);")
            _watch(prog, "containers", attack, copy, benign)
            for c, script in ((benign, BENIGN), (attack, ATTACK_3), (copy, ATTACK_COPY)):
                r = c.run(py + [script])
                expect(r.rc == 0, "17.2", f"the check's workload failed in {c.name}: {r.err[-300:]}", "")
            subprocess.run(py + [ATTACK_3], check=True, capture_output=True)     # the host
            got = {k.value: v.value for k, v in flagged.items()}
    finally:
        close_all()
    names = {attack.cgroup_id: "attack", copy.cgroup_id: "copy", benign.cgroup_id: "benign"}
    expect(got, "17.2", "`flagged` is empty after a reverse shell copied its socket onto 0, 1 "
           "and 2 in a watched container",
           "remember sockets at sys_exit_socket, and count dup2/dup3 of one onto fd 0-2")
    stray = [cg for cg in got if cg not in names]
    expect(not stray, "17.2", "a copy was counted under a cgroup that is not a watched container "
           "(the host ran the same attack)",
           "only in watched containers: containers.lookup(&cgroup) of bpf_get_current_cgroup_id()")
    expect(not got.get(benign.cgroup_id), "17.2",
           f"benign work was flagged ({got.get(benign.cgroup_id)} copies): a TCP client, output "
           "to a file, a socket copied onto 7, a file on a reused socket number copied onto 1",
           "count only copies onto 0, 1 or 2 of a descriptor that IS a socket now: forget it at "
           "close()")
    n = got.get(attack.cgroup_id, 0)
    expect(n == 3, "17.2", f"the reverse shell copied its socket onto 0 and 1 (dup2) and 2 "
           f"(dup3): 3 copies, your count is {n}",
           "handle both sys_enter_dup2 and sys_enter_dup3, and newfd <= 2 (stderr too)")
    n = got.get(copy.cgroup_id, 0)
    expect(n == 2, "17.2", f"`dup2(sock, 1); dup2(1, 0)` copies a socket twice onto 0-2, your "
           f"count is {n}", "a copy of a socket is a socket: add newfd to `sockets` too")
    return ("reverse shell 3/3 copies, the `0>&1` variant 2/2, benign work and the host's "
            "attack not flagged")


# -------------------------------------------------------------------- 17.3 --
@lab("17.3", "kill a shell at its exec (bpf_send_signal)")
def check_kill_shell(program: str) -> str:
    """Fresh shell names; a guarded and an unguarded container and the host.
    Shells die with SIGKILL in the guarded container only; other programs run."""
    rng = random.Random()
    shell, other_shell, tool = _fresh("c17sh"), _fresh("c17sh"), _fresh("c17ls")
    n_shell = rng.randint(1, 3)
    try:
        with _load("17.3", program) as prog, \
                _programs({shell: "/bin/sh", other_shell: "/bin/sh", tool: "ls"}) as paths, \
                Container("guarded") as g, Container("free") as free:
            kills = _table(prog, "kills", "17.3", "keep BPF_HASH(kills, u64, u64, 64);")
            _table(prog, "guarded", "17.3", "keep BPF_HASH(guarded, u64, u8, 64);")
            shells = _table(prog, "shells", "17.3", "keep BPF_HASH(shells, struct comm_t, u8, 64);")
            _watch(prog, "guarded", g)
            for name in (shell, other_shell):
                key = shells.Key()
                key.c = name.encode()
                shells[key] = ct.c_uint8(1)
            said = "echo alive"
            host = subprocess.run([paths[shell], "-c", said], capture_output=True, text=True)
            expect(host.returncode == 0 and host.stdout == "alive\n", "17.3",
                   f"a shell on the host (not in a guarded container) ended with status "
                   f"{host.returncode}", "kill only in cgroups listed in `guarded`")
            r = free.run([paths[shell], "-c", said])
            expect(r.rc == 0 and r.out == "alive\n", "17.3",
                   f"a shell in an unguarded container ended with status {r.rc}",
                   "kill only in cgroups listed in `guarded`")
            ls = g.run([paths[tool], "/"])
            expect(ls.rc == 0, "17.3", f"`ls` (under a fresh name) in the guarded container ended "
                   f"with status {ls.rc}: only shells are forbidden",
                   "test the name: shells.lookup(&name) with bpf_get_current_comm()")
            for i in range(n_shell):
                r = g.run([paths[shell if i % 2 == 0 else other_shell], "-c", said])
                expect(r.rc != 0 or r.out != "alive\n", "17.3",
                       "a shell in the guarded container ran to the end",
                       "bpf_send_signal(9) when the cgroup is guarded and the name is a shell")
                expect(r.rc == -9, "17.3", f"the shell died with status {r.rc}, not by SIGKILL "
                       "(-9)", "send SIGKILL (9): a shell can trap or ignore SIGTERM")
                expect(r.out == "", "17.3", "the shell printed before it died",
                       "kill at sched_process_exec, not later")
            got = {k.value: v.value for k, v in kills.items()}
    finally:
        close_all()
    expect(got == {g.cgroup_id: n_shell}, "17.3",
           f"{n_shell} shell(s) killed in the guarded container; `kills` says "
           f"{ {('guarded' if k == g.cgroup_id else k): v for k, v in got.items()} }",
           "add 1 to kills[cgroup id] for every kill (lookup_or_try_init, __sync_fetch_and_add)")
    return (f"{n_shell} shell(s) killed by SIGKILL in the guarded container; ls ran there; the "
            "same shell ran in another container and on the host")
