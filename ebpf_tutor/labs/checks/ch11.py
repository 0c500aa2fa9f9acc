"""Chapter 11 checks: file access control, execution guardian, connection
firewall.

Each lab has two variants written by the learner: a BPF LSM program (the
chapter's subject) and the fallback for kernels whose BPF LSM cannot load
(tracepoint detection that kills, or a cgroup program). Where BPF LSM works
(the course VM) both variants are loaded and judged on the same workload.
Where it does not, the LSM variant is compiled, not loaded, and the PASS line
says so; the fallback is judged for real.

Every policy names only objects the check has just made: a fresh file, a
fresh copy of a program, a port the kernel chose. Each action is tried from
a process inside a fresh scratch cgroup (the policy must stop it) and from
one outside (it must go through), so even a wrong program cannot stop
anything else on the machine.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable

from ... import features
from ...errors import BpfError
from ...program import Program, close_all
from ...sandbox.attempts import allowed, attempts
from ...sandbox.cgroup import ScratchCgroup
from ..verdict import LabFailed, expect, lab
from ..workload import unique_name
from . import byte_order_blind, require_table

Judge = Callable[[Program, str], str]

# BCC attaches every LSM_PROBE when the program loads. To compile an LSM
# variant without loading it (where BPF LSM programs cannot load), the macro
# is renamed so that BCC sees ordinary functions.
COMPILE_ONLY = ("#undef LSM_PROBE\n"
                "#define LSM_PROBE(event, args...) BPF_PROG(compiled__ ## event, ##args)\n")
DENIALS = ("EPERM", "EACCES")


def _compile_only(lab_id: str, source: str) -> None:
    with Program(COMPILE_ONLY + source, name=f"lab {lab_id} LSM variant (compiled only)"):
        pass


def _lsm_hooks(prog: Program) -> list[str]:
    """The LSM hooks BCC attached for this program."""
    return sorted(k.decode().removeprefix("lsm__") for k in prog.lsm_fds)


def _two_variants(lab_id: str, lsm_program: str, fallback_program: str, judge: Judge) -> str:
    """Judge the LSM variant where BPF LSM works (else only compile it), then
    the fallback; return the PASS detail, what really ran first."""
    parts = []
    lsm = features.available("lsm")
    try:
        if lsm:
            with Program(lsm_program, name=f"lab {lab_id} LSM variant") as prog:
                hooks = _lsm_hooks(prog)
                expect(bool(hooks), lab_id, "your LSM variant attached no LSM program",
                       "write it as LSM_PROBE(hook, its arguments..., int ret) { ... }: "
                       "BCC attaches it when the program loads")
                parts.append(f"BPF LSM on {', '.join(hooks)}: {judge(prog, 'lsm')}")
        else:
            _compile_only(lab_id, lsm_program)
            parts.append(f"LSM variant compiled but NOT loaded (BPF LSM: {features.reason('lsm')})")
        with Program(fallback_program, name=f"lab {lab_id} fallback") as prog:
            parts.append(f"fallback: {judge(prog, 'fallback')}")
    finally:
        close_all()
    if not lsm:
        parts.reverse()                      # what really ran comes first
    return "; ".join(parts)


def _put(prog: Program, table: str, key, lab_id: str, declaration: str) -> None:
    """Set table[key] = 1 in the learner's map (a number, or bytes for a
    struct key whose only member is `name`)."""
    t = require_table(prog, table, lab_id, f"keep the given declaration: {declaration}")
    if isinstance(key, bytes):
        k = t.Key()
        k.name = key
    else:
        k = t.Key(key)
    t[k] = t.Leaf(1)


def _guard(prog: Program, cg: ScratchCgroup, lab_id: str) -> None:
    _put(prog, "guarded", cg.id, lab_id, "BPF_HASH(guarded, u64, u8);")


def _run(lab_id: str, actions: list, cg: ScratchCgroup | None = None) -> list[str]:
    where = "inside the scratch cgroup" if cg else "outside it"
    try:
        return attempts(actions, cg)
    except (RuntimeError, OSError) as e:
        raise LabFailed(lab_id, f"the test process {where} could not run: {e}",
                        "your policy stops more than the actions it names: match the exact "
                        "object (inode, path or port) before you act") from None


GUARD_HINT = ("check the cgroup first: bpf_get_current_cgroup_id() must be a key of `guarded`, "
              "else return 0 (allow)")


def _expect_stopped(lab_id: str, how: str, what: str, result: str, fallback_hint: str,
                    lsm_hint: str, killed: str = "before it can use the result") -> None:
    """`result` must be a denial (LSM) or a SIGKILL (fallback)."""
    if how == "lsm":
        expect(result in DENIALS, lab_id,
               f"LSM variant: {what} from inside the scratch cgroup gave {result!r}; "
               "it should be denied with EPERM",
               lsm_hint if allowed(result) else
               "return -EPERM from the LSM program: the call fails, the process lives on")
    else:
        expect(result == "killed by SIGKILL", lab_id,
               f"fallback: {what} from inside the scratch cgroup gave {result!r}; the process "
               f"should be killed (SIGKILL) {killed}",
               fallback_hint if allowed(result) else
               "send SIGKILL: bpf_send_signal(9). The check's processes ignore SIGTERM, as "
               "any process may")


# ------------------------------------------------------------------- 11.1 --
def _judge_files(prog: Program, how: str) -> str:
    lab_id = "11.1"
    folder = Path(tempfile.mkdtemp(prefix="ebt-files-"))
    try:
        secret, notes = folder / unique_name("secret-"), folder / unique_name("notes-")
        secret.write_text(unique_name("s3cret-") + "\n")
        notes.write_text(unique_name("notes-") + "\n")
        link = folder / unique_name("link-")
        os.link(secret, link)                          # the same inode, another name
        with ScratchCgroup("files") as cg:
            _guard(prog, cg, lab_id)
            if how == "lsm":
                _put(prog, "blocked", secret.stat().st_ino, lab_id, "BPF_HASH(blocked, u64, u8);")
                inside = _run(lab_id, [("read", str(notes)), ("read", str(secret)),
                                       ("read", str(link))], cg)
            else:
                _put(prog, "blocked_paths", str(secret).encode(), lab_id,
                     "BPF_HASH(blocked_paths, struct path_t, u8);")
                inside = _run(lab_id, [("read", str(notes)), ("read", str(secret))], cg)
            outside = _run(lab_id, [("read", str(secret))])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    variant = "LSM variant" if how == "lsm" else "fallback"
    expect(allowed(inside[0]), lab_id,
           f"{variant}: reading a file that is not blocked, from inside the scratch cgroup, "
           f"gave {inside[0]!r}", "act only when the file is in the blocked set "
           "(`blocked` for the LSM variant, `blocked_paths` for the fallback)")
    _expect_stopped(lab_id, how, "reading the blocked file", inside[1],
                    "in sys_enter_openat, copy args->filename with bpf_probe_read_user_str into "
                    "a zeroed struct path_t and look it up in `blocked_paths`; " + GUARD_HINT,
                    "in file_open, look up file->f_inode->i_ino in `blocked`; " + GUARD_HINT)
    if how == "lsm":
        expect(inside[2] in DENIALS, lab_id,
               f"LSM variant: reading the blocked file through a hard link (another name, the "
               f"same inode) gave {inside[2]!r}", "decide by the inode "
               "(file->f_inode->i_ino), not by a name")
    expect(allowed(outside[0]), lab_id,
           f"{variant}: a process outside the scratch cgroup could not read the file: "
           f"{outside[0]!r}", "the policy must stop only processes in a guarded cgroup: "
           + GUARD_HINT)
    if how == "lsm":
        return ("a fresh file denied (EPERM) inside the scratch cgroup, by name and by hard "
                "link; readable outside, and another file readable inside")
    return ("a process reading a fresh file inside the scratch cgroup killed (SIGKILL); "
            "readable outside, and another file readable inside")


@lab("11.1", "file access control")
def check_file_guard(lsm_program: str, fallback_program: str) -> str:
    """A fresh file is blocked for one fresh scratch cgroup: reading it from
    inside must fail (LSM: EPERM, by name or hard link; fallback: the reader
    is killed); reading it from outside, or another file from inside, works."""
    return _two_variants("11.1", lsm_program, fallback_program, _judge_files)


# ------------------------------------------------------------------- 11.2 --
def _judge_exec(prog: Program, how: str) -> str:
    lab_id = "11.2"
    folder = Path(tempfile.mkdtemp(prefix="ebt-exec-"))
    try:
        tool, other = folder / unique_name("tool-"), folder / unique_name("other-")
        shutil.copy("/bin/echo", tool)
        shutil.copy("/bin/echo", other)
        link = folder / unique_name("link-")
        os.link(tool, link)
        token = unique_name("hello-")
        with ScratchCgroup("exec") as cg:
            _guard(prog, cg, lab_id)
            _put(prog, "blocked", tool.stat().st_ino, lab_id, "BPF_HASH(blocked, u64, u8);")
            inside = _run(lab_id, [("run", str(other), token), ("run", str(tool), token),
                                   ("run", str(link), token)], cg)
            outside = _run(lab_id, [("run", str(tool), token)])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    variant = "LSM variant" if how == "lsm" else "fallback"
    expect(inside[0] == f"ran: {token}", lab_id,
           f"{variant}: running a program that is not blocked, from inside the scratch cgroup, "
           f"gave {inside[0]!r}", "act only when the program's inode is in `blocked`")
    hint = ("read bprm->file->f_inode->i_ino and look it up in `blocked`; " + GUARD_HINT)
    _expect_stopped(lab_id, how, "running the blocked program", inside[1],
                    "at sched_process_exec the third argument, ctx->args[2], is the "
                    "struct linux_binprm *: " + hint, "in bprm_check_security, " + hint,
                    killed="before the program runs")
    expect(inside[2] == inside[1], lab_id,
           f"{variant}: running the blocked program through a hard link (another name, the same "
           f"inode) gave {inside[2]!r}, but {inside[1]!r} by its own name",
           "decide by the inode (bprm->file->f_inode->i_ino), not by a name")
    expect(outside[0] == f"ran: {token}", lab_id,
           f"{variant}: a process outside the scratch cgroup could not run the program: "
           f"{outside[0]!r}", "the policy must stop only processes in a guarded cgroup: "
           + GUARD_HINT)
    if how == "lsm":
        return ("exec of a fresh program denied (EPERM) inside the scratch cgroup, by name and "
                "by hard link; it runs outside, and another program runs inside")
    return ("a fresh program killed (SIGKILL) before its first instruction inside the scratch "
            "cgroup, by name and by hard link; it runs outside, and another program runs inside")


@lab("11.2", "execution guardian")
def check_exec_guard(lsm_program: str, fallback_program: str) -> str:
    """A fresh copy of a program is blocked for one fresh scratch cgroup:
    running it (by name or through a hard link) from inside must fail (LSM:
    EPERM; fallback: killed before it runs); from outside it runs, and an
    unblocked copy runs inside."""
    return _two_variants("11.2", lsm_program, fallback_program, _judge_exec)


# ------------------------------------------------------------------- 11.3 --
def _listener() -> socket.socket:
    """A TCP listener on 127.0.0.1 at a port the kernel chose, never one that
    reads the same in both byte orders."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        if not byte_order_blind(s.getsockname()[1]):
            s.listen(8)
            return s
        s.close()


def _judge_connect(prog: Program, how: str) -> str:
    lab_id = "11.3"
    with _listener() as closed_to_cg, _listener() as open_to_cg, \
            ScratchCgroup("net") as cg:
        blocked, other = closed_to_cg.getsockname()[1], open_to_cg.getsockname()[1]
        _put(prog, "blocked_ports", blocked, lab_id, "BPF_HASH(blocked_ports, u16, u8);")
        if how == "lsm":
            _guard(prog, cg, lab_id)
        else:
            try:
                cg.attach(prog, "refuse_connect", "connect4")
            except BpfError as e:
                if "Unknown program" in e.summary:
                    raise LabFailed(lab_id, "your fallback has no function refuse_connect",
                                    "keep the name the lab gives: "
                                    "int refuse_connect(struct bpf_sock_addr *ctx)") from None
                raise
        inside = _run(lab_id, [("connect", other), ("connect", blocked)], cg)
        outside = _run(lab_id, [("connect", blocked)])
    variant = "LSM variant" if how == "lsm" else "fallback"
    order = ("compare in host order: bpf_ntohs(sin->sin_port)" if how == "lsm" else
             "ctx->user_port is in network byte order: bpf_ntohs(ctx->user_port)")
    expect(inside[0] == "connected", lab_id,
           f"{variant}: a connection to another open port, from inside the scratch cgroup, "
           f"gave {inside[0]!r}", "refuse only the ports in `blocked_ports`"
           + ("" if how == "lsm" else "; return 1 to let every other connection through"))
    expect(inside[1] != "connected", lab_id,
           f"{variant}: a process inside the scratch cgroup connected to blocked port "
           f"{blocked}", order + ("; " + GUARD_HINT if how == "lsm" else ""))
    expect(inside[1] == "ECONNREFUSED", lab_id,
           f"{variant}: the connection to the blocked port failed with {inside[1]}, not "
           "ECONNREFUSED (what a closed port answers)",
           "return -ECONNREFUSED" if how == "lsm" else
           "call bpf_set_retval(-ECONNREFUSED) before return 0 (a plain return 0 means EPERM)")
    expect(outside[0] == "connected", lab_id,
           f"{variant}: a process outside the scratch cgroup could not connect to port "
           f"{blocked}: {outside[0]!r}", "the policy must stop only processes in a guarded "
           "cgroup: " + GUARD_HINT)
    return ("connect to a blocked port refused (ECONNREFUSED) inside the scratch cgroup; "
            "allowed outside, and another port reachable inside")


@lab("11.3", "connection firewall")
def check_connect_firewall(lsm_program: str, fallback_program: str) -> str:
    """A listening port (chosen by the kernel) is blocked for one fresh
    scratch cgroup: connecting to it from inside must fail with
    ECONNREFUSED; from outside it connects, and another port connects from
    inside."""
    return _two_variants("11.3", lsm_program, fallback_program, _judge_connect)
