"""Chapter 1 checks: hello eBPF, system info, program lifecycle."""
from __future__ import annotations

import ctypes as ct
import gzip
import itertools
import json
import os
import random
import subprocess
import tempfile
from pathlib import Path

from ...doctor import CAPS, capabilities, kernel_config
from ..verdict import LabFailed, expect, lab
from ...program import Program, close_all
from ..workload import Executables, unique_name
from . import count_of, has_table


def _key_text(key) -> str:
    """A map key that holds a string (char array, or a struct of one) as str."""
    if isinstance(key, bytes):              # ctypes gives char-array fields as bytes
        return key.split(b"\0", 1)[0].decode(errors="replace")
    if isinstance(key, ct.Array) and key._type_ is ct.c_char:
        return key.value.decode(errors="replace")
    if isinstance(key, ct.Structure):
        return "".join(_key_text(getattr(key, f[0])) for f in key._fields_)
    return ""


# -------------------------------------------------------------------- 1.1 --
@lab("1.1", "hello eBPF on sys_enter_execve")
def check_hello(program: str) -> str:
    """Two programs with fresh names are exec'd 5 and 3 times; the learner's
    `execs` map must count exactly that per file name."""
    want = {unique_name("ebt"): 5, unique_name("ebt"): 3}
    try:
        with Program(program, name="lab 1.1") as prog, Executables(list(want)) as exe:
            expect(has_table(prog, "execs"), "1.1",
                   "your program has no map named `execs`",
                   "declare it: BPF_HASH(execs, struct fname_t, u64);")
            last = {name: exe.run(name, times)[-1] for name, times in want.items()}
            seen: dict[str, int] = {}
            for k, v in prog["execs"].items():
                text = _key_text(k)
                seen[text] = seen.get(text, 0) + count_of(v)
            stretch = ({_key_text(k): v.value for k, v in prog["last_pid"].items()}
                       if has_table(prog, "last_pid") else None)
    finally:
        close_all()
    expect(any(seen.values()), "1.1", "the `execs` map stayed empty while programs were executed",
           "does the probe run? It must be TRACEPOINT_PROBE(syscalls, sys_enter_execve), "
           "and it must update the map with execs.increment(key)")
    for name, times in want.items():
        path = exe.path(name)
        got = seen.get(path, 0)
        if got == 0 and not any(path in s or s.endswith(name) for s in seen):
            sample = ", ".join(repr(s) for s in list(seen)[:3])
            raise LabFailed("1.1", f"{path} was executed {times} times, but no key of `execs` "
                            f"is that file name (keys look like: {sample})",
                            "copy args->filename with bpf_probe_read_user_str() into the key")
        expect(got == times, "1.1", f"{path} was executed {times} times; `execs` says {got}",
               "count once per sys_enter_execve event, keyed by the file name")
    if stretch is None:
        return (f"counted {sum(want.values())} execs of 2 fresh programs exactly "
                "(stretch goal `last_pid` not attempted)")
    for name in want:
        path = exe.path(name)
        expect(stretch.get(path) == last[name], "1.1",
               f"the last exec of {path} was by pid {last[name]}; `last_pid` says "
               f"{stretch.get(path)}",
               "store bpf_get_current_pid_tgid() >> 32 (the process id) with "
               "last_pid.update(&key, &pid), under the same key as `execs`")
    return (f"counted {sum(want.values())} execs of 2 fresh programs exactly, "
            "and the stretch goal: `last_pid` holds each one's latest pid")


# -------------------------------------------------------------------- 1.2 --
CONFIG_KEYS = ["CONFIG_BPF_SYSCALL", "CONFIG_BPF_JIT", "CONFIG_DEBUG_INFO_BTF",
               "CONFIG_KPROBES", "CONFIG_BPF_LSM"]
BPF_CAPS = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_ADMIN"]


def _truth(root: Path) -> dict:
    """What system_info(root) must return, computed independently."""
    status = root / "proc/self/status"
    cfg = kernel_config() if root == Path("/") else _config_of(root)
    return {
        "kernel_release": os.uname().release if root == Path("/")
        else (root / "proc/sys/kernel/osrelease").read_text().strip(),
        "btf": (root / "sys/kernel/btf/vmlinux").exists(),
        "jit_enabled": int((root / "proc/sys/net/core/bpf_jit_enable").read_text()),
        "unprivileged_bpf_disabled": int((root / "proc/sys/kernel/unprivileged_bpf_disabled").read_text()),
        "bpf_caps": sorted(c for c in capabilities("CapEff", str(status)) if c in BPF_CAPS),
        "config": {k: cfg.get(k) for k in CONFIG_KEYS},
    }


def _config_of(root: Path) -> dict[str, str]:
    import re
    text = gzip.decompress((root / "proc/config.gz").read_bytes()).decode()
    return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M))


def _fake_root(tmp: Path, rng: random.Random, btf: bool, caps: list[str]) -> Path:
    """A made-up /proc and /sys with values no real machine here has, holding
    the capabilities `caps` (names from doctor.CAPS)."""
    root = Path(tempfile.mkdtemp(prefix="root", dir=tmp))     # a fresh name, never shared
    rel = f"5.{rng.randrange(4, 19)}.0-ebt{rng.randrange(1000)}"
    files = {
        "proc/sys/kernel/osrelease": rel + "\n",
        "proc/sys/net/core/bpf_jit_enable": f"{rng.choice([0, 1, 2])}\n",
        "proc/sys/kernel/unprivileged_bpf_disabled": f"{rng.choice([0, 1, 2])}\n",
    }
    mask = sum(1 << CAPS[c] for c in caps) | (1 << 5)   # plus CAP_KILL, not a BPF cap
    files["proc/self/status"] = f"Name:\tfake\nCapInh:\t0000000000000000\nCapEff:\t{mask:016x}\n"
    for rel_path, text in files.items():
        p = root / rel_path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    cfg = []
    for k in CONFIG_KEYS:
        choice = rng.choice(["y", "n", "absent"])
        cfg.append(f"{k}=y" if choice == "y" else f"# {k} is not set" if choice == "n" else "")
    (root / "proc/config.gz").write_bytes(gzip.compress(("\n".join(cfg) + "\n").encode()))
    if btf:
        (root / "sys/kernel/btf").mkdir(parents=True)
        (root / "sys/kernel/btf/vmlinux").write_bytes(b"\x9f\xeb")
    return root


_ANY = list(itertools.product([False, True], repeat=3))   # which of the 3 test trees hold a cap
_SOME_NOT_ALL = [t for t in _ANY if any(t) and not all(t)]


@lab("1.2", "system info from Python")
def check_system_info(system_info) -> str:
    """system_info(root) is called on the real machine and on 3 made-up
    /proc + /sys trees; every field must match."""
    rng = random.Random()
    with tempfile.TemporaryDirectory(prefix="ebt-sysinfo-") as tmp:
        btf = [True, False, rng.random() < 0.5]     # both answers, always
        rng.shuffle(btf)
        # Each BPF capability is held in at least one tree and missing from
        # another (which trees is random), so a wrong bit always shows.
        held = {c: rng.choice(_SOME_NOT_ALL) if c in BPF_CAPS else rng.choice(_ANY)
                for c in sorted(CAPS)}
        caps = [[c for c, trees in held.items() if trees[i]] for i in range(len(btf))]
        roots = [Path("/")] + [_fake_root(Path(tmp), rng, b, c) for b, c in zip(btf, caps)]
        for root in roots:
            want = _truth(root)
            got = system_info(str(root))
            expect(isinstance(got, dict), "1.2", f"system_info() returned {type(got).__name__}, not a dict")
            for key, value in want.items():
                where = "this machine" if root == Path("/") else f"a test tree ({root.name})"
                expect(key in got, "1.2", f"the result has no key {key!r}",
                       f"return a dict with keys {', '.join(want)}")
                expect(got[key] == value, "1.2",
                       f"on {where}, {key} should be {value!r}, yours is {got[key]!r}",
                       _hint_12(key))
    return "all 6 fields right on this machine and on 3 test trees"


def _hint_12(key: str) -> str:
    return {
        "kernel_release": "read <root>/proc/sys/kernel/osrelease (not os.uname(): it ignores root)",
        "btf": "BTF is there when <root>/sys/kernel/btf/vmlinux exists",
        "jit_enabled": "int() of <root>/proc/sys/net/core/bpf_jit_enable",
        "unprivileged_bpf_disabled": "int() of <root>/proc/sys/kernel/unprivileged_bpf_disabled",
        "bpf_caps": "parse CapEff in <root>/proc/self/status as hex; bit 39 is CAP_BPF, 38 "
                    "CAP_PERFMON, 21 CAP_SYS_ADMIN, 12 CAP_NET_ADMIN; return sorted names",
        "config": "gunzip <root>/proc/config.gz; 'CONFIG_X=y' gives 'y', '# CONFIG_X is not "
                  "set' and absent keys give None",
    }[key]


# -------------------------------------------------------------------- 1.3 --
LIFECYCLE_SRC = """
BPF_ARRAY(hits, u64, 1);
int FN(void *ctx) {
    if ((bpf_get_current_pid_tgid() >> 32) != TGID) return 0;
    hits.increment(0);
    return 0;
}
"""


def bpftool_progs() -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    return json.loads(out.stdout or "[]")


@lab("1.3", "program lifecycle")
def check_lifecycle(lifecycle) -> str:
    """lifecycle(source, fn_name, times) must load, attach, find the program
    with bpftool, trigger it `times` times, read the counter, close it and
    prove it gone. `times` is drawn afresh, never 3 (the old fixed count), so
    a hard-coded count fails."""
    times = random.choice([2, 4, 5, 6, 7, 8, 9])
    fn_name = unique_name("ebt_lc_")
    source = LIFECYCLE_SRC.replace("FN", fn_name).replace("TGID", str(os.getpid()))
    decoy_name = unique_name("ebt_decoy_")   # loaded first, so "the first program" is wrong
    decoy = Program(LIFECYCLE_SRC.replace("FN", decoy_name).replace("TGID", "0"))
    try:
        decoy.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name=decoy_name)
        got = lifecycle(source, fn_name, times)
        leaked = [p for p in bpftool_progs() if p.get("name") == fn_name]
    finally:
        close_all()
    expect(isinstance(got, dict), "1.3", f"lifecycle() returned {type(got).__name__}, not a dict")
    for key in ("id", "tag", "hits", "gone"):
        expect(key in got, "1.3", f"the result has no key {key!r}",
               "return {'id': ..., 'tag': ..., 'hits': ..., 'gone': ...}")
    expect(not leaked, "1.3", f"program {fn_name} is still loaded after lifecycle() returned",
           "close the Program (prog.close(), or a `with` block) before checking that it is gone")
    with Program(source) as mine:
        mine.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name=fn_name)
        real = [p for p in bpftool_progs() if p.get("name") == fn_name]
    expect(len(real) == 1, "1.3", "the check could not find its own copy of the program (bpftool)")
    expect(got["tag"] == real[0]["tag"], "1.3",
           f"tag {got['tag']!r} is not the tag of {fn_name} ({real[0]['tag']})",
           "find your program in `bpftool -j prog show` by its name, then report its id and tag")
    expect(isinstance(got["id"], int) and got["id"] > 0, "1.3", f"id {got['id']!r} is not a program id")
    gone_really = subprocess.run(["bpftool", "prog", "show", "id", str(got["id"])],
                                 capture_output=True).returncode != 0
    expect(gone_really, "1.3", f"program id {got['id']} is still loaded: it is not the one you closed",
           "report the id of the program whose name is fn_name")
    expect(got["hits"] == times, "1.3",
           f"hits is {got['hits']!r}; after {times} getppid() calls it must be {times}",
           "attach to syscalls:sys_enter_getppid, call os.getppid() `times` times, "
           "then read hits[0]")
    expect(got["gone"] is True, "1.3", "gone is not True",
           "after close(), look the id up again with bpftool and report whether it is absent")
    return f"loaded, found by bpftool (id {got['id']}), counted {times} calls, and unloaded"
