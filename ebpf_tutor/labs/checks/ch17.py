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
