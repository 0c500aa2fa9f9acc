"""Scratch cgroups (v2): a fresh child cgroup to run a workload in and to
attach cgroup programs to, removed at the end.

    with ScratchCgroup("web") as cg, Program(C_TEXT) as prog:
        cg.attach(prog, "deny_port", "connect4")   # load + attach, detached at close
        r = cg.run(["curl", "..."])                # runs inside the cgroup
        ok = subprocess.run(["curl", "..."])       # the same action, outside

Enforcement in this course only ever attaches to cgroups made here, under
`<cgroup2 mount>/ebpf-tutor/`, named `<pid>-<n>` so that `sweep` removes
what a killed run left. `attach_func` refuses any other cgroup unless you
pass `allow_foreign=True`.

On close (the end of the `with`, an error or Ctrl-C) a scratch cgroup
detaches every program attached to it (through it, or by plain BCC calls),
kills what still runs inside, reaps the processes it started and removes
its directory; its children first.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes as ct
import errno
import itertools
import os
import subprocess
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..bpfsys.libbpf import libbpf
from ..bpfsys.syscall import ProgInfoStruct, obj_info
from ..errors import AttachError, BpfError

_counter = itertools.count()

# ---------------------------------------------------------- kernel numbers --
# Program types and attach types from <linux/bpf.h>. BCC names most of them
# (BPF.CGROUP_SKB, BPFAttachType.CGROUP_INET_EGRESS...); BCC 0.26 has no name
# for the sysctl program type, so every number is spelled out here once.
PROG_CGROUP_SKB = 8
PROG_CGROUP_SOCK = 9
PROG_CGROUP_DEVICE = 15
PROG_CGROUP_SOCK_ADDR = 18
PROG_CGROUP_SYSCTL = 23

ATTACH_INGRESS = 0          # BPFAttachType.CGROUP_INET_INGRESS
ATTACH_EGRESS = 1           # BPFAttachType.CGROUP_INET_EGRESS
ATTACH_SOCK_CREATE = 2      # BPFAttachType.CGROUP_INET_SOCK_CREATE
ATTACH_DEVICE = 6           # BPFAttachType.CGROUP_DEVICE
ATTACH_INET4_BIND = 8       # BPFAttachType.CGROUP_INET4_BIND
ATTACH_INET4_CONNECT = 10   # BPFAttachType.CGROUP_INET4_CONNECT
ATTACH_INET6_CONNECT = 11   # BPFAttachType.CGROUP_INET6_CONNECT
ATTACH_UDP4_SENDMSG = 14    # BPFAttachType.CGROUP_UDP4_SENDMSG
ATTACH_UDP6_SENDMSG = 15    # BPFAttachType.CGROUP_UDP6_SENDMSG
ATTACH_SYSCTL = 18          # BPFAttachType.CGROUP_SYSCTL
ATTACH_INET4_GETPEERNAME = 29

BPF_F_ALLOW_OVERRIDE = 1
BPF_F_ALLOW_MULTI = 2
BPF_F_QUERY_EFFECTIVE = 1

# hook name -> (program type, attach type, C context type): what `attach` takes
HOOKS: dict[str, tuple[int, int, str]] = {
    "ingress": (PROG_CGROUP_SKB, ATTACH_INGRESS, "struct __sk_buff"),
    "egress": (PROG_CGROUP_SKB, ATTACH_EGRESS, "struct __sk_buff"),
    "sock_create": (PROG_CGROUP_SOCK, ATTACH_SOCK_CREATE, "struct bpf_sock"),
    "bind4": (PROG_CGROUP_SOCK_ADDR, ATTACH_INET4_BIND, "struct bpf_sock_addr"),
    "connect4": (PROG_CGROUP_SOCK_ADDR, ATTACH_INET4_CONNECT, "struct bpf_sock_addr"),
    "sendmsg4": (PROG_CGROUP_SOCK_ADDR, ATTACH_UDP4_SENDMSG, "struct bpf_sock_addr"),
    "connect6": (PROG_CGROUP_SOCK_ADDR, ATTACH_INET6_CONNECT, "struct bpf_sock_addr"),
    "sendmsg6": (PROG_CGROUP_SOCK_ADDR, ATTACH_UDP6_SENDMSG, "struct bpf_sock_addr"),
    "getpeername4": (PROG_CGROUP_SOCK_ADDR, ATTACH_INET4_GETPEERNAME, "struct bpf_sock_addr"),
    "device": (PROG_CGROUP_DEVICE, ATTACH_DEVICE, "struct bpf_cgroup_dev_ctx"),
    "sysctl": (PROG_CGROUP_SYSCTL, ATTACH_SYSCTL, "struct bpf_sysctl"),
}
ATTACH_NAMES = {attach: name for name, (_, attach, _) in HOOKS.items()}


class NotOurCgroup(PermissionError):
    """Refused: cgroup programs may only attach to scratch cgroups."""


# ------------------------------------------------------------ the hierarchy --
def cgroup2_root() -> Path:
    """Where cgroup v2 is mounted (unified hierarchy, or the hybrid's 'unified')."""
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, fstype, *_ = line.split()
        if fstype == "cgroup2":
            return Path(mnt)
    raise FileNotFoundError("cgroup v2 is not mounted: run "
                            "`mount -t cgroup2 none /sys/fs/cgroup/unified` (scripts/provision.sh does)")


def base_dir() -> Path:
    """The folder that holds every scratch cgroup: <cgroup2>/ebpf-tutor."""
    return cgroup2_root() / "ebpf-tutor"


def cgroup_id(path: Union[str, Path]) -> int:
    """A cgroup's id, as bpf_get_current_cgroup_id() reports it: the
    directory's inode number in the cgroup2 filesystem."""
    return os.stat(path).st_ino


def cgroup_of(pid: Union[int, str] = "self") -> Path:
    """The cgroup v2 directory a process is in (the `0::` line of /proc/PID/cgroup)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return cgroup2_root() / line[3:].lstrip("/")
    raise FileNotFoundError(f"process {pid} has no cgroup v2 membership line")


# ------------------------------------------------------------- attachments --
@dataclass
class Attachment:
    """One program attached to one cgroup hook. It keeps its own duplicate of
    the program's descriptor, so it can be detached even after the Program
    that loaded it was closed."""

    cgroup: Path
    attach_type: int
    prog_fd: int
    cgroup_fd: int
    owns_cgroup_fd: bool
    name: str = ""
    attached: bool = True

    @property
    def hook(self) -> str:
        return ATTACH_NAMES.get(self.attach_type, f"attach type {self.attach_type}")

    def detach(self) -> None:
        """Detach (once) and release the descriptors this attachment holds."""
        if not self.attached:
            return
        self.attached = False
        try:
            rc = libbpf().bpf_prog_detach2(self.prog_fd, self.cgroup_fd, self.attach_type)
            # ENOENT: already gone (the cgroup was removed); anything else is worth knowing
            if rc < 0 and -rc not in (errno.ENOENT, errno.EBADF):
                raise OSError(-rc, f"detaching {self.name or 'program'} from {self.hook} "
                                   f"of {self.cgroup}: {os.strerror(-rc)}")
        finally:
            os.close(self.prog_fd)
            if self.owns_cgroup_fd:
                os.close(self.cgroup_fd)

    close = detach

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"<Attachment {self.name or 'program'} -> {self.cgroup.name}:{self.hook} ({state})>"


_live: "weakref.WeakSet[ScratchCgroup]" = weakref.WeakSet()


def _scratch_at(path: Path) -> "ScratchCgroup | None":
    """The open scratch cgroup of this process at `path`, if there is one."""
    return next((cg for cg in list(_live) if cg.path.resolve() == path), None)


def attach_func(fn, target: Union["ScratchCgroup", str, Path], attach_type: int, *,
                flags: int = BPF_F_ALLOW_MULTI, allow_foreign: bool = False) -> Attachment:
    """Attach a loaded BCC function (`prog.load_func(...)`) to a cgroup hook.

    `target` is a ScratchCgroup (or the path of one this process made).
    Any other cgroup is refused with NotOurCgroup, unless `allow_foreign`.
    BPF_F_ALLOW_MULTI (the default) lets several programs share one hook and
    lets child cgroups add their own; all of them run."""
    if isinstance(target, ScratchCgroup):
        return target.attach_func(fn, attach_type, flags=flags)
    path = Path(target).resolve()
    scratch = _scratch_at(path)
    if scratch is not None:
        return scratch.attach_func(fn, attach_type, flags=flags)
    if not allow_foreign:
        raise NotOurCgroup(
            f"refusing to attach to {path}: it is not a scratch cgroup of this process. "
            "Enforcement in this course only runs in ScratchCgroup() (or pass "
            "allow_foreign=True if you really mean it).")
    cg_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _attach(fn, path, cg_fd, True, attach_type, flags)
    except BaseException:
        os.close(cg_fd)
        raise


def _attach(fn, path: Path, cg_fd: int, owns: bool, attach_type: int, flags: int) -> Attachment:
    prog_fd = os.dup(fn.fd)
    rc = libbpf().bpf_prog_attach(prog_fd, cg_fd, attach_type, flags)
    if rc < 0:
        os.close(prog_fd)
        code = -rc
        hint = {
            errno.EINVAL: "either the program type does not fit this hook (load it with the "
                          "matching type, and attach_type= for sock_addr programs: "
                          "cg.attach(prog, name, 'connect4') does both), or this very program "
                          "is already attached to this hook of this cgroup",
            errno.EPERM: "this hook already has a program attached without BPF_F_ALLOW_MULTI; "
                         "attach everything with the same flags",
        }.get(code, "")
        name = fn.name.decode() if isinstance(fn.name, bytes) else str(fn.name)
        raise AttachError(f"attaching {name} to {ATTACH_NAMES.get(attach_type, attach_type)} "
                          f"of {path.name}: {os.strerror(code)}", errno=code, hint=hint)
    name = fn.name.decode() if isinstance(fn.name, bytes) else str(fn.name)
    return Attachment(path, attach_type, prog_fd, cg_fd, owns, name)


def query(cgroup_fd: int, attach_type: int, effective: bool = False) -> list[int]:
    """Ids of the programs on one hook of a cgroup (BPF_PROG_QUERY). With
    `effective`, also those inherited from ancestors: what really runs."""
    ids = (ct.c_uint32 * 64)()
    count, flags = ct.c_uint32(64), ct.c_uint32(0)
    rc = libbpf().bpf_prog_query(cgroup_fd, attach_type, BPF_F_QUERY_EFFECTIVE if effective else 0,
                                 ct.byref(flags), ids, ct.byref(count))
    if rc < 0:
        raise OSError(-rc, f"BPF_PROG_QUERY: {os.strerror(-rc)}")
    return list(ids[:count.value])


def prog_name(prog_id: int) -> str:
    """The name the kernel keeps for a program (15 characters at most)."""
    fd = libbpf().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return ""
    try:
        return obj_info(fd, ProgInfoStruct(), "program").name.decode(errors="replace")
    except BpfError:
        return ""
    finally:
        os.close(fd)


# ------------------------------------------------------- the scratch cgroup --
class ScratchCgroup:
    """A fresh cgroup v2 directory under <cgroup2>/ebpf-tutor/ (or inside
    another scratch cgroup, see `child`). Use it as a context manager."""

    def __init__(self, tag: str = "", *, parent: "ScratchCgroup | None" = None):
        if parent is None:
            name = f"{os.getpid()}-{next(_counter)}{('-' + tag) if tag else ''}"
            self.path = base_dir() / name
        else:
            self.path = parent.path / (tag or f"c{next(_counter)}")
        self.parent = parent
        self._fd: int | None = None
        self._procs: list[subprocess.Popen] = []
        self._attachments: list[Attachment] = []
        self._children: list[ScratchCgroup] = []

    # -- lifecycle
    def __enter__(self) -> "ScratchCgroup":
        self.path.mkdir(parents=True)
        _live.add(self)
        return self

    def child(self, tag: str = "") -> "ScratchCgroup":
        """A scratch cgroup inside this one, created now and removed with it
        (or earlier, by its own close()). Programs attached here also run
        for everything inside its children."""
        c = ScratchCgroup(tag, parent=self).__enter__()
        self._children.append(c)
        return c

    def fd(self) -> int:
        """An O_RDONLY descriptor of the cgroup directory (what attach calls take)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        return self._fd

    @property
    def id(self) -> int:
        """The cgroup id, as bpf_get_current_cgroup_id() reports it (the inode number)."""
        return cgroup_id(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # -- processes
    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start a process that is inside this cgroup from its first instruction:
        the forked child moves itself in (writes 0 to cgroup.procs) before exec."""
        procs = os.fsencode(self.path / "cgroup.procs")

        def move_in() -> None:          # runs in the child between fork and exec: os calls only
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

        p = subprocess.Popen(argv, preexec_fn=move_in, **kw)
        self._procs.append(p)
        return p

    def run(self, argv: list[str], timeout: float = 30, input: str | bytes | None = None,
            **kw) -> subprocess.CompletedProcess:
        """Run a command inside the cgroup to its end (text output captured)."""
        capture = kw.pop("capture_output", True)
        kw.setdefault("text", True)
        if input is not None:
            kw["stdin"] = subprocess.PIPE
        out_pipe = subprocess.PIPE if capture else None
        p = self.spawn(argv, stdout=kw.pop("stdout", out_pipe), stderr=kw.pop("stderr", out_pipe),
                       **kw)
        try:
            out, err = p.communicate(input=input, timeout=timeout)
        except BaseException:
            p.kill()
            p.wait()
            raise
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    def pids(self) -> list[int]:
        """The processes inside right now."""
        return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]

    def cpu_usage_us(self) -> int:
        """CPU time (user + system, microseconds) spent inside, from cpu.stat."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value)
        raise FileNotFoundError("cpu.stat has no usage_usec")

    # -- programs
    def attach_func(self, fn, attach_type: int, *, flags: int = BPF_F_ALLOW_MULTI) -> Attachment:
        """Attach a loaded function (BCC `prog.load_func(...)`) to hook
        `attach_type` (a BPFAttachType number) of this cgroup. Detached at close."""
        if self not in _live:
            raise NotOurCgroup(f"{self.path} is not open: use `with ScratchCgroup() as cg:`")
        a = _attach(fn, self.path, self.fd(), False, attach_type, flags)
        self._attachments.append(a)
        return a

    def attach(self, prog, fn_name: str, hook: str, *,
               flags: int = BPF_F_ALLOW_MULTI) -> Attachment:
        """Load C function `fn_name` of `prog` as the program type `hook` needs
        and attach it. Hooks: ingress, egress, sock_create, bind4, connect4,
        sendmsg4, connect6, sendmsg6, getpeername4, device, sysctl."""
        if hook not in HOOKS:
            raise ValueError(f"unknown cgroup hook {hook!r}; known: {', '.join(HOOKS)}")
        prog_type, attach_type, _ = HOOKS[hook]
        fn = prog.load_func(fn_name, prog_type, attach_type=attach_type)
        return self.attach_func(fn, attach_type, flags=flags)

    def attachments(self) -> list[Attachment]:
        """What was attached through this object and is still attached."""
        return [a for a in self._attachments if a.attached]

    def programs(self, effective: bool = False) -> list[tuple[str, int, str]]:
        """What the kernel says is attached here, however it was attached:
        (hook, program id, program name) for every hook in HOOKS. With
        `effective`, also what this cgroup inherits from its parents."""
        found = []
        for hook, (_, attach_type, _) in HOOKS.items():
            found += [(hook, i, prog_name(i)) for i in query(self.fd(), attach_type, effective)]
        return found

    def _detach_untracked(self) -> None:
        """Detach whatever the kernel still lists on our hooks (a program
        attached with BCC's BPF.attach_func directly, say)."""
        for hook, (_, attach_type, _) in HOOKS.items():
            with contextlib.suppress(OSError):
                for prog_id in query(self.fd(), attach_type):
                    fd = libbpf().bpf_prog_get_fd_by_id(prog_id)
                    if fd >= 0:
                        libbpf().bpf_prog_detach2(fd, self.fd(), attach_type)
                        os.close(fd)

    def detach_all(self) -> None:
        """Detach every program attached through this cgroup (its own hooks only)."""
        errors = []
        for a in reversed(self._attachments):
            try:
                a.detach()
            except OSError as e:
                errors.append(e)
        self._attachments.clear()
        if errors:
            raise errors[0]

    # -- the end
    def close(self) -> None:
        """Detach, kill what runs inside, reap our processes, remove the directory.
        Safe to call twice; children are closed first."""
        try:
            for c in reversed(self._children):
                c.close()
            self._children.clear()
            self.detach_all()
            if self.path.is_dir():
                self._detach_untracked()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            try:
                remove(self.path)
            finally:
                for p in self._procs:       # killed by remove(): collect them, no zombies
                    with contextlib.suppress(Exception):
                        p.wait(timeout=2)
                self._procs.clear()
                _live.discard(self)

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = str(self.path.relative_to(base_dir())) if self.path.is_relative_to(base_dir()) \
            else str(self.path)
        return f"<ScratchCgroup {where}: {len(self.attachments())} program(s) attached>"


def remove(path: Path, timeout: float = 2.0) -> None:
    """Kill what still runs in a cgroup and remove it (with any children).
    Programs still attached to it are released by the kernel with it."""
    if not path.exists():
        return
    for child in [p for p in path.iterdir() if p.is_dir()]:
        remove(child, timeout)
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@atexit.register
def _close_live() -> None:
    """A scratch cgroup left open when the interpreter exits is closed."""
    for cg in sorted(list(_live), key=lambda c: len(c.path.parts), reverse=True):
        with contextlib.suppress(Exception):
            cg.close()
