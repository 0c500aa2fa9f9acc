"""Chapter 10 checks: a portable process monitor (CO-RE + ring buffer), a
version-adaptive program (field and type existence), a BTF inspector.

The learner's C is compiled with clang against vmlinux.h and loaded with
libbpf (BPFObject). Workloads use fresh random names; lab 10.2 is also
loaded against a second BTF, made from this kernel's by renaming one field
and adding one type, so a program that ignores the existence tests cannot
pass on this kernel alone; lab 10.3 is compared with bpftool's dump for
types drawn at random.
"""
from __future__ import annotations

import ctypes as ct
import inspect
import os
import random
import re
import secrets
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ...bpfobject import BPFObject
from ...errors import BpfError
from ...kernel.btf import VMLINUX, kernel_btf
from ..verdict import LabFailed, expect, lab


def _compile(lab_id: str, program: str, name: str, **kwargs) -> BPFObject:
    """The learner's object, compiled and loaded (failures are the learner's)."""
    return BPFObject.compile(program, name=name, **kwargs)


def _need_program(lab_id: str, obj: BPFObject, name: str, sec: str) -> None:
    expect(name in obj.programs, lab_id, f"your object has no program `{name}`",
           f"keep the function the lab gives: SEC(\"{sec}\") int {name}(...)")


# ---------------------------------------------------------------- lab 10.1 --
def _fresh_names(n: int) -> list[str]:
    return [f"e10{secrets.token_hex(4)}" for _ in range(n)]


@lab("10.1", "portable process monitor")
def check_monitor(program: str, decode) -> str:
    lab_id = "10.1"
    pid, ppid, comm = random.randrange(2, 1 << 22), random.randrange(2, 1 << 22), _fresh_names(1)[0]
    # a reserved record is not zeroed: after comm's NUL come left-over bytes
    sample = struct.pack("=II16s", pid, ppid, comm.encode() + b"\0" + secrets.token_bytes(4))
    got = decode(sample)
    expect(got == {"pid": pid, "ppid": ppid, "comm": comm}, lab_id,
           f"decode() of a record with pid={pid}, ppid={ppid}, comm={comm!r} (then a NUL and "
           f"left-over bytes) gave {got!r}",
           "unpack \"=II16s\" in the order of struct event, and cut comm at its first NUL "
           "(bpf_ringbuf_reserve() does not zero the record: what follows the NUL is junk)")
    names = _fresh_names(3)
    events: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ebt-lab101-") as tmp, \
            _compile(lab_id, program, "lab101") as obj:
        _need_program(lab_id, obj, "on_exec", "tp/sched/sched_process_exec")
        expect("events" in obj.maps, lab_id, "your object has no map `events`",
               "keep the ring buffer map the lab declares")
        obj.attach("on_exec")
        obj.ring_buffer("events", lambda raw: events.append(decode(raw)))
        for name in names:
            os.symlink("/bin/sh", Path(tmp, name))
        script = "; ".join(f'{tmp}/{n} -c \'echo $$ $PPID > {tmp}/{n}.marker\'' for n in names)
        parent = subprocess.run(["/bin/sh", "-c", script + "; true"], timeout=30)
        expect(parent.returncode == 0, lab_id, "the workload's shell failed", "run the check again")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not {e.get("comm") for e in events} >= set(names):
            obj.poll(100)
        truth = {n: tuple(map(int, Path(tmp, f"{n}.marker").read_text().split())) for n in names}
    expect(events, lab_id, "no record reached the ring buffer while 3 programs were started",
           "is bpf_ringbuf_submit() called on every record you reserved, and is the program "
           "SEC(\"tp/sched/sched_process_exec\")?")
    for name, (want_pid, want_ppid) in truth.items():
        mine = [e for e in events if e.get("comm") == name]
        if not mine:
            near = [e for e in events if e.get("pid") == want_pid][:1]
            raise LabFailed(lab_id, f"no record with comm {name!r} (pid {want_pid}); "
                            f"the record of that pid: {near or 'none'}",
                            "comm must be the task's own name, read after the exec "
                            "(BPF_CORE_READ_STR_INTO(&e->comm, task, comm))")
        e = mine[0]
        expect(e["pid"] == want_pid, lab_id, f"{name}: pid {e['pid']}, but the process says its "
               f"pid ($$) is {want_pid}", "the process id is task->tgid")
        expect(e["ppid"] == want_ppid, lab_id, f"{name}: ppid {e['ppid']}, but the process says "
               f"its parent ($PPID) is {want_ppid}",
               "the parent's process id is task->real_parent->tgid")
    return f"{len(names)} fresh programs seen with the right pid, ppid and comm ({len(events)} records)"


# ---------------------------------------------------------------- lab 10.2 --
BTF_HEADER = struct.Struct("<HBBIIIII")
BTF_STRUCT, BTF_UNION = 4, 5
TASK_STOPPED_BIT = 4                  # __TASK_STOPPED, in `state` and `__state` alike
# bytes that follow the 12-byte common part of a BTF type, by kind (vlen: v)
_EXTRA = {1: lambda v: 4, 3: lambda v: 12, 4: lambda v: 12 * v, 5: lambda v: 12 * v,
          6: lambda v: 8 * v, 13: lambda v: 8 * v, 14: lambda v: 4, 15: lambda v: 12 * v,
          17: lambda v: 4, 19: lambda v: 12 * v}


def pretend_pre514_btf(out: Path, source: Path = VMLINUX) -> Path:
    """A copy of this kernel's BTF as a kernel older than 5.14 would have
    it, for the two things lab 10.2 asks: task_struct's `__state` renamed
    `state` (same offset: its name now points 2 bytes further into the
    string "__state"), and an empty `struct mm_rss_stat` added at the end."""
    blob = bytearray(source.read_bytes())
    magic, ver, flags, hdr_len, type_off, type_len, str_off, str_len = BTF_HEADER.unpack_from(blob)
    types = bytearray(blob[hdr_len + type_off: hdr_len + type_off + type_len])
    strings = bytes(blob[hdr_len + str_off: hdr_len + str_off + str_len])

    def name(off: int) -> bytes:
        return strings[off: strings.index(b"\0", off)]

    pos, renamed = 0, False
    while pos < len(types):
        name_off, info = struct.unpack_from("<II", types, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == BTF_STRUCT and name(name_off) == b"task_struct":
            for i in range(vlen):
                m = pos + 12 + 12 * i
                m_name = struct.unpack_from("<I", types, m)[0]
                if name(m_name) == b"__state":
                    struct.pack_into("<I", types, m, m_name + 2)     # "__state" -> "state"
                    renamed = True
        pos += 12 + _EXTRA.get(kind, lambda v: 0)(vlen)
    if not renamed:
        raise RuntimeError("this kernel's task_struct has no __state: it is older than 5.14")
    types += struct.pack("<III", len(strings), BTF_STRUCT << 24, 32)  # struct mm_rss_stat, no members
    strings += b"mm_rss_stat\0"
    header = BTF_HEADER.pack(magic, ver, flags, hdr_len, 0, len(types), len(types), len(strings))
    out.write_bytes(header + bytes(blob[BTF_HEADER.size:hdr_len]) + bytes(types) + strings)
    return out


def btf_facts(btf) -> dict[str, int]:
    """What lab 10.2's three flags must say for a BTF (kernel.btf.Btf)."""
    members = {m.name for m in btf.find("task_struct").members}
    try:
        btf.find("mm_rss_stat")
        rss = 1
    except KeyError:
        rss = 0
    return {"has_state_new": int("__state" in members), "has_state_old": int("state" in members),
            "has_rss_stat": rss}


PARENT = r"""
import os, sys
pid = os.fork()
if pid == 0:
    print(os.getpid(), flush=True)
    sys.stdin.readline()          # the check stops our parent, then lets us go on
    os.getppid()
    print("done", flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _readline(stream, timeout: float) -> str:
    import select
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().strip() if ready else ""


def _run_adaptive(lab_id: str, program: str, btf_path: Path | None) -> dict[str, int]:
    """Load the learner's object (against `btf_path` if given), stop a parent,
    let its child call getppid(), return the globals."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        child = int(_readline(parent.stdout, 10) or 0)
        expect(child > 0, lab_id, "the workload's child did not start", "run the check again")
        with BPFObject.compile(program, name="lab102", load=False, btf_custom_path=btf_path) as obj:
            _need_program(lab_id, obj, "on_getppid", "tp/syscalls/sys_enter_getppid")
            obj.set_global("target_tgid", child)
            obj.load()
            obj.attach("on_getppid")
            os.kill(parent.pid, signal.SIGSTOP)
            deadline = time.monotonic() + 5
            while _proc_state(parent.pid) != "T" and time.monotonic() < deadline:
                time.sleep(0.01)
            parent.stdin.write("go\n")
            parent.stdin.flush()
            expect(_readline(parent.stdout, 10) == "done", lab_id, "the workload's child did not "
                   "finish", "run the check again")
            got = {v: obj.get_global(v, ct.c_int32) for v in
                   ("has_state_new", "has_state_old", "has_rss_stat", "calls")}
            got["parent_state"] = obj.get_global("parent_state", ct.c_int64)
            return got
    finally:
        os.kill(parent.pid, signal.SIGCONT)
        try:
            parent.stdin.close()
        except OSError:
            pass
        try:
            parent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def _judge_adaptive(lab_id: str, got: dict[str, int], facts: dict[str, int], where: str) -> None:
    expect(got["calls"] >= 1, lab_id, f"{where}: your program never counted the child's getppid()",
           "keep the target_tgid test and the __sync_fetch_and_add(&calls, 1) the lab gives")
    flags = {k: got[k] for k in facts}
    expect(flags == facts, lab_id, f"{where}: your flags say {flags}, the BTF says {facts}",
           "set each flag from bpf_core_field_exists() / bpf_core_type_exists(), not a constant: "
           "libbpf answers them from the BTF it relocates against")
    expect(got["parent_state"] & TASK_STOPPED_BIT, lab_id, f"{where}: the parent was stopped "
           f"(state T in /proc) but you read state {got['parent_state']:#x}, without the stopped bit "
           f"({TASK_STOPPED_BIT})", "read the state of task->real_parent, from the field that exists")


@lab("10.2", "version-adaptive program")
def check_adaptive(program: str) -> str:
    lab_id = "10.2"
    here = btf_facts(kernel_btf())
    _judge_adaptive(lab_id, _run_adaptive(lab_id, program, None), here, "on this kernel")
    from ...kernel.btf import Btf
    with tempfile.TemporaryDirectory(prefix="ebt-lab102-") as tmp:
        fake = pretend_pre514_btf(Path(tmp, "pre514.btf"))
        old = btf_facts(Btf(fake.read_bytes()))
        try:
            got = _run_adaptive(lab_id, program, fake)
        except BpfError as e:
            raise LabFailed(lab_id, "against a BTF where task_struct has `state` (as before 5.14), "
                            "your object does not load:\n" + e.format(),
                            "test bpf_core_field_exists() before each read of a field that may "
                            "be missing, and read `state` through struct task_struct___pre514") \
                from None
        _judge_adaptive(lab_id, got, old, "against a pre-5.14 BTF")
    return (f"flags {here} here and {old} against a pre-5.14 BTF; the stopped parent's state read "
            "through __state, then through state")


# ---------------------------------------------------------------- lab 10.3 --
FORBIDDEN = {"kernel_btf", "Btf", "ebpf_tutor", "bpftool", "subprocess", "check_output", "popen",
             "system"}
_TYPE_LINE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
_ENTRY = re.compile(r"^\t'([^']*)' (.*)$")


def bpftool_types(path: Path) -> dict[int, dict]:
    """`bpftool btf dump file PATH` (raw format) parsed: id -> {kind, name,
    attrs, entries: [(name, attrs)]}. '(anon)' becomes ""."""
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(path)], capture_output=True,
                         text=True, check=True).stdout
    types: dict[int, dict] = {}
    cur = None
    for line in out.splitlines():
        m = _TYPE_LINE.match(line)
        if m:
            cur = {"kind": m.group(2), "name": "" if m.group(3) == "(anon)" else m.group(3),
                   "attrs": dict(kv.split("=", 1) for kv in m.group(4).split() if "=" in kv),
                   "entries": []}
            types[int(m.group(1))] = cur
            continue
        m = _ENTRY.match(line)
        if m and cur is not None:
            attrs = dict(kv.split("=", 1) for kv in m.group(2).split() if "=" in kv)
            cur["entries"].append(("" if m.group(1) == "(anon)" else m.group(1), attrs))
    return types


def _int(text: str) -> int:
    return int(text.removesuffix("ULL").removesuffix("LL"))


def expected_struct(t: dict) -> dict:
    return {"size": int(t["attrs"]["size"]),
            "members": [(n, int(a["type_id"]), int(a["bits_offset"]), int(a.get("bitfield_size", 0)))
                        for n, a in t["entries"]]}


def expected_enum(t: dict) -> dict:
    return {n: _int(a["val"]) for n, a in t["entries"]}


def expected_func(t: dict, types: dict[int, dict]) -> dict:
    proto = types[int(t["attrs"]["type_id"])]
    return {"ret_type_id": int(proto["attrs"]["ret_type_id"]),
            "params": [(n, int(a["type_id"])) for n, a in proto["entries"]]}


def _unique(types: dict[int, dict], kinds: set[str]) -> dict[str, dict]:
    """Named types of `kinds` whose name no other type of those kinds has."""
    seen: dict[str, list[dict]] = {}
    for t in types.values():
        if t["kind"] in kinds and t["name"]:
            seen.setdefault(t["name"], []).append(t)
    return {n: ts[0] for n, ts in seen.items() if len(ts) == 1}


def _names_used(cls) -> set[str]:
    """Every global and attribute name the methods of `cls` mention."""
    names: set[str] = set()

    def walk(code) -> None:
        names.update(code.co_names)
        for c in code.co_consts:
            if hasattr(c, "co_names"):
                walk(c)
    for member in vars(cls).values():
        fn = getattr(member, "__func__", member)
        if hasattr(fn, "__code__"):
            walk(fn.__code__)
    return names


def _borrowed(cls) -> set[str]:
    """Names the methods of `cls` use that are forbidden, or that are bound,
    under any alias, to something from ebpf_tutor or subprocess."""
    names = _names_used(cls)
    found = names & FORBIDDEN
    for member in vars(cls).values():
        scope = getattr(getattr(member, "__func__", member), "__globals__", {})
        for n in names:
            if n not in scope:
                continue
            obj = scope[n]
            origin = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
            if isinstance(origin, str) and origin.split(".")[0] in ("ebpf_tutor", "subprocess"):
                found.add(n)
    return found


def draw_questions(types: dict[int, dict], rng: random.Random) -> list[tuple[str, str]]:
    """(kind of question, name): task_struct, a struct with bitfields, three
    more structs; an enum with a negative value, a 64-bit enum, two enums;
    three functions. Every case that exposes a mistake is always drawn."""
    records = _unique(types, {"STRUCT", "UNION"})
    enums = _unique(types, {"ENUM", "ENUM64"})
    funcs = _unique(types, {"FUNC"})
    bitfields = sorted(n for n, t in records.items() if any("bitfield_size" in a for _, a in t["entries"]))
    negative = sorted(n for n, t in enums.items() if t["kind"] == "ENUM"
                      and any(a["val"].startswith("-") for _, a in t["entries"]))
    wide = sorted(n for n, t in enums.items() if t["kind"] == "ENUM64"
                  and any(_int(a["val"]) >= 1 << 32 for _, a in t["entries"]))
    plain = sorted(n for n, t in records.items() if t["entries"])
    qs = [("struct", "task_struct"), ("struct", rng.choice(bitfields)),
          *[("struct", n) for n in rng.sample(plain, 3)],
          ("enum", rng.choice(negative)), ("enum", rng.choice(wide)),
          *[("enum", n) for n in rng.sample(sorted(enums), 2)],
          *[("func", n) for n in rng.sample(sorted(funcs), 3)]]
    rng.shuffle(qs)
    return qs


@lab("10.3", "BTF structure inspector")
def check_inspector(inspector) -> str:
    lab_id = "10.3"
    cheats = _borrowed(inspector)
    expect(not cheats, lab_id, f"your inspector uses {sorted(cheats)}",
           "read the blob you are given with the struct module alone: no ebpf_tutor BTF reader, "
           "no bpftool")
    with tempfile.TemporaryDirectory(prefix="ebt-lab103-") as tmp:
        blob_path = pretend_pre514_btf(Path(tmp, "given.btf"))
        types = bpftool_types(blob_path)
        ins = inspector(blob_path.read_bytes())
    rng = random.Random(secrets.randbits(32))
    questions = draw_questions(types, rng)
    by_name = {(t["kind"], t["name"]): t for t in types.values() if t["name"]}
    for kind, name in questions:
        if kind == "struct":
            t = by_name.get(("STRUCT", name)) or by_name[("UNION", name)]
            want, got = expected_struct(t), ins.struct(name)
            hint = ("a member is (name, type_id, bits_offset, bitfield_size); with kflag 1, "
                    "offset = bitfield_size << 24 | bits_offset")
        elif kind == "enum":
            t = by_name.get(("ENUM", name)) or by_name[("ENUM64", name)]
            want, got = expected_enum(t), ins.enum(name)
            hint = ("kflag 1 means signed; ENUM64 values are lo32 | hi32 << 32")
        else:
            want, got = expected_func(by_name[("FUNC", name)], types), ins.func(name)
            hint = "follow the FUNC's type id to its FUNC_PROTO, whose entries are the parameters"
        if got != want:
            diff = ""
            if kind == "struct" and isinstance(got, dict):
                bad = [(w, g) for w, g in zip(want["members"], got.get("members", [])) if w != g][:1]
                diff = f"; first difference: bpftool {bad[0][0]}, yours {bad[0][1]}" if bad else ""
            elif kind == "enum" and isinstance(got, dict):
                bad = [(k, v, got.get(k)) for k, v in want.items() if got.get(k) != v][:1]
                diff = f"; first difference: {bad[0][0]} is {bad[0][1]}, yours {bad[0][2]}" if bad else ""
            raise LabFailed(lab_id, f"{kind} {name}: bpftool says {str(want)[:300]}, "
                            f"yours {str(got)[:300]}{diff}", hint)
    return (f"{len(questions)} answers equal bpftool's ({sum(k == 'struct' for k, _ in questions)} "
            f"structs, {sum(k == 'enum' for k, _ in questions)} enums, "
            f"{sum(k == 'func' for k, _ in questions)} functions, drawn at random)")
