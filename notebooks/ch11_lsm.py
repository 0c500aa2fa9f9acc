# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Chapter 11: BPF LSM, security policy as programs
#
# **After this chapter you will be able to**
#
# * say what a Linux Security Module hook is, where the kernel calls it, and
#   what a BPF program attached to one can decide;
# * write a BPF LSM program with BCC's `LSM_PROBE` that refuses an action
#   with an errno, and keep its effect to one cgroup so that nothing else on
#   the machine is touched;
# * build three policies: file access control (`file_open`), an execution
#   guardian (`bprm_check_security`) and a connection firewall
#   (`socket_connect`);
# * fall back, where BPF LSM programs cannot load, to cgroup programs (which
#   enforce) and to tracepoints with `bpf_send_signal` (which detect and
#   kill), and say exactly what each fallback misses;
# * tell what BPF LSM can do that Landlock and seccomp cannot, and the
#   other way round.
#
# **A word on this machine.** The course's CI machine has BPF in its list
# of active LSMs, but it refuses the function hooks that BPF LSM programs
# attach through: they fail to load with `EPERM`, even for root. Every cell
# that needs BPF LSM carries the tag `needs-lsm`, checks first, prints one
# line when it is missing, and runs the documented fallback. In the course
# VM (a stock Debian kernel booted with `lsm=...,bpf`) the same cells run
# the LSM programs.
#
# **The outputs stored with this notebook come from the course VM**
# (Debian 12, kernel 6.1, `vm/course_vm.py`), so they show BPF LSM really
# refusing. Each result line ends with the mechanism that produced it,
# `(hook: ...)`; run here, each such cell first prints the one line about
# the fallback. When the notebook is tested against its stored outputs
# those two things are masked (`tests/nbval_sanitize.cfg`), and the
# verdicts, *blocked* or *allowed*, must agree whichever mechanism ran.

# %% [markdown]
# ## 11.1 Hooks that decide
#
# Every time a process asks the kernel for something that security cares
# about (open a file, run a program, connect a socket, send a signal, load
# a module), the kernel code that does it calls a **security hook** first:
# `security_file_open(file)`, `security_bprm_check(bprm)`,
# `security_socket_connect(sock, address, addrlen)`... There are a couple
# of hundred. Each hook asks every active **Linux Security Module** in turn
# (SELinux, AppArmor, Landlock, Yama...) and stops at the first that
# returns an error: that error is what the system call returns.
#
# **BPF LSM** (Linux 5.7) is one more module, named `bpf`, whose answer is
# whatever BPF programs say. For every hook the kernel has an empty
# function `bpf_lsm_<hook>()`, described in BTF; a BPF LSM program attaches
# to one of them through a BPF trampoline, the machinery fentry programs
# use (Chapter 5), and returns 0 to allow or a negative errno to refuse.
# Nothing else: Linux 6.12's verifier rejects a program that may return a
# value outside [-4095, 0]; 6.1 loads it, and the kernel code that called
# the hook, written for 0 or an errno, misreads a positive value. Because
# it is a trampoline, the program sees the hook's arguments typed:
# `file->f_inode->i_ino` reads straight through.
#
# Two conditions must hold: the kernel is built with `CONFIG_BPF_LSM=y`,
# and `bpf` is in the list of active LSMs: `CONFIG_LSM` at build time, or
# `lsm=` on the kernel command line, which replaces it. Debian's 6.1 and
# 6.12 kernels are built with `CONFIG_BPF_LSM=y`, and the course VM puts
# `bpf` in the list on its command line (`lsm=...,bpf`). A third is easy to
# miss: the kernel must let BPF trampolines hook its functions, which the
# CI machine's kernel refuses.

# %%
import ctypes
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from ebpf_tutor import Program, features
from ebpf_tutor.sandbox.attempts import allowed, attempts
from ebpf_tutor.sandbox.cgroup import ScratchCgroup

# %% [markdown]
# The active modules are listed in `/sys/kernel/security/lsm` (where
# securityfs is mounted). The list depends on the kernel and its command
# line, so this output is not compared.

# %% tags=["nbval-ignore-output"]
lsm_list = Path("/sys/kernel/security/lsm")
print(lsm_list.read_text() if lsm_list.exists() else "securityfs is not mounted here")

# %% [markdown]
# The stub functions of the three hooks this chapter uses are there on
# every kernel built with `CONFIG_BPF_LSM`, whether or not programs can
# attach to them:

# %%
HOOKS = ["file_open", "bprm_check_security", "socket_connect"]
for hook in HOOKS:
    present = Program.ksymname(f"bpf_lsm_{hook}") != -1
    print(f"bpf_lsm_{hook:22} {'present' if present else 'absent'}")

# %% [markdown]
# And whether an LSM program really loads and attaches here (the doctor's
# probe: a `file_open` program that counts opens). The answer depends on
# the kernel, so it is not compared either.

# %% tags=["nbval-ignore-output"]
for name in ["lsm", "tracepoints", "cgroup programs"]:
    print(f"{name:16} {'available' if features.available(name) else 'missing: ' + features.reason(name)}")

# %% [markdown]
# ## 11.2 One cgroup, never the machine
#
# An LSM program runs for **every** process on the machine: a wrong one
# can stop your shell from opening files. Everything in this chapter is
# therefore scoped twice:
#
# 1. it acts only for processes whose cgroup is a fresh
#    `ScratchCgroup` (`bpf_get_current_cgroup_id()` is the id of the
#    caller's cgroup v2, the inode number of its directory; the caller's
#    cgroup itself, not its ancestors);
# 2. it names only objects made for the purpose: a fresh file, a fresh copy
#    of a program, a port the kernel chose.
#
# Each policy is then tried from a process **inside** the cgroup (it must
# be stopped) and from one **outside** (it must go through).
# `ebpf_tutor.sandbox.attempts` runs a list of actions from a fresh
# process, each action in its own child, and returns one word per action:
# `read: ...`, `ran: ...`, `connected`, an errno name such as `EPERM`, or
# `killed by SIGKILL`.

# %%
def show(who: str, action: str, result: str, how: str) -> None:
    """One verdict line; the mechanism and its raw result go in (hook: ...)."""
    verdict = "allowed" if allowed(result) else "blocked"
    print(f"{who:8} {action:30} {verdict:8} (hook: {how}, {result})")

# %% [markdown]
# ## 11.3 File access control: `file_open`
#
# `security_file_open(file)` runs inside every `open()`, after the path was
# resolved and the permissions checked, before the file is handed out. The
# program compares the file's **inode** with the one it protects: the inode
# is the file itself, whatever name leads to it. The cgroup id and the inode
# number are written into the text, the way BCC's tools take `-p PID`
# (Lab 11.1 makes them data, in maps).
#
# `ret`, the last argument, is the answer of the BPF LSM programs that ran
# before this one on the same hook; the kernel's documentation asks you to
# pass a refusal on. In practice it is always 0: the trampoline stops at the
# first program that refuses, so a later one runs only when all said 0.
# The test costs nothing and keeps the program correct if that changes.

# %%
FILE_LSM = r"""
#include <linux/fs.h>
#include <linux/errno.h>

LSM_PROBE(file_open, struct file *file, int ret) {
    if (ret)
        return ret;
    if (bpf_get_current_cgroup_id() != GUARDED_CGROUP)
        return 0;
    if (file->f_inode->i_ino == PROTECTED_INODE)
        return -EPERM;
    return 0;
}
"""

# %% [markdown]
# **The fallback** has no hook inside `open()`. The nearest stable point is
# the `sys_enter_openat` tracepoint, where the kernel has done nothing yet:
# the only thing to compare is the **path string** the process passed
# (copied from its memory), and the only way to stop it is
# `bpf_send_signal(SIGKILL)`. That is detection followed by a kill, not a
# refusal: the call still runs to the end (a call that blocks may be cut
# short), and the signal is delivered as the thread returns to user space.
# That thread never sees what it opened, but until then the file is open,
# in a descriptor table its other threads share. Calls that never pass
# this tracepoint are not seen at all: the older `open()`, `io_uring`'s
# open requests. The path sits in a one-entry map, since C in BPF has no
# string comparison.

# %%
FILE_FALLBACK = r"""
struct path_t { char name[128]; };
BPF_HASH(protected_path, struct path_t, u8);

static __always_inline int watch(const char __user *filename) {
    if (bpf_get_current_cgroup_id() != GUARDED_CGROUP)
        return 0;
    struct path_t key = {};
    bpf_probe_read_user_str(&key.name, sizeof(key.name), filename);
    if (protected_path.lookup(&key))
        bpf_send_signal(9);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_enter_openat) { return watch(args->filename); }
TRACEPOINT_PROBE(syscalls, sys_enter_openat2) { return watch(args->filename); }
"""


def file_fallback(cg: ScratchCgroup, path: Path) -> Program:
    prog = Program(FILE_FALLBACK.replace("GUARDED_CGROUP", str(cg.id)))
    key = prog["protected_path"].Key()
    key.name = str(path).encode()
    prog["protected_path"][key] = prog["protected_path"].Leaf(1)
    return prog

# %% [markdown]
# A fresh folder with a secret, another file, and a hard link to the
# secret (a second name for the same inode):

# %%
work = Path(tempfile.mkdtemp(prefix="ch11-"))
secret, notes, alias = work / "secret.txt", work / "notes.txt", work / "alias.txt"
secret.write_text("the launch codes\n")
notes.write_text("shopping list\n")
os.link(secret, alias)
print(f"secret.txt and alias.txt share an inode: {secret.stat().st_ino == alias.stat().st_ino}")

# %% tags=["needs-lsm"]
with ScratchCgroup("files") as cg:
    if features.available("lsm"):
        prog = Program(FILE_LSM.replace("GUARDED_CGROUP", str(cg.id))
                       .replace("PROTECTED_INODE", str(secret.stat().st_ino)))
        how = "lsm/file_open"
    else:
        features.notice("lsm", "tracepoint detection with bpf_send_signal")
        prog = file_fallback(cg, secret)
        how = "sys_enter_openat + SIGKILL"
    with prog:
        inside = attempts([("read", str(secret)), ("read", str(notes))], cg)
        outside = attempts([("read", str(secret))])
show("inside", "read secret.txt", inside[0], how)
show("inside", "read notes.txt", inside[1], how)
show("outside", "read secret.txt", outside[0], how)

# %% [markdown]
# In the VM, the process inside got `EPERM` from `open()` and carried on;
# with the fallback it was killed. Both stopped it; only the LSM program
# refused the call itself.
#
# ## 11.4 What the fallback cannot see
#
# The tracepoint fallback judges a **name**, before the kernel resolves it.
# A second name for the same file walks past it: a hard link, a symbolic
# link, a relative path (`../x/secret.txt`), `/proc/self/cwd/...`. And
# because the kill arrives after the call, the call's side effects happen:
# `tee diary.txt` opens its file with `O_TRUNC` before it reads a byte, so
# a guarded file is emptied by the process that is killed for opening it.
# Both runs below use the fallback, on any kernel, so their raw results
# are printed as they are:

# %%
diary = work / "diary.txt"
diary.write_text("dear diary\n")
with ScratchCgroup("fallback") as cg:
    with file_fallback(cg, secret):
        by_name, by_link = attempts([("read", str(secret)), ("read", str(alias))], cg)
    with file_fallback(cg, diary):
        teed = attempts([("run", shutil.which("tee"), str(diary))], cg)[0]
print(f"inside   read secret.txt              -> {by_name}")
print(f"inside   read alias.txt (hard link)   -> {by_link}")
print(f"inside   tee diary.txt                -> {teed}")
print(f"diary.txt afterwards: {diary.stat().st_size} bytes")

# %% [markdown]
# The LSM program decides on the inode, after the path was resolved, so
# every name of the file is refused. In the course VM the next cell shows
# it; with the fallback it shows the link getting through, as above (its
# output is the VM's and is not compared).

# %% tags=["needs-lsm", "nbval-ignore-output"]
with ScratchCgroup("alias") as cg:
    if features.available("lsm"):
        prog = Program(FILE_LSM.replace("GUARDED_CGROUP", str(cg.id))
                       .replace("PROTECTED_INODE", str(secret.stat().st_ino)))
        how = "lsm/file_open"
    else:
        features.notice("lsm", "tracepoint detection with bpf_send_signal")
        prog = file_fallback(cg, secret)
        how = "sys_enter_openat + SIGKILL"
    with prog:
        by_link = attempts([("read", str(alias))], cg)[0]
show("inside", "read alias.txt (hard link)", by_link, how)

# %% [markdown]
# ## 11.5 An execution guardian: `bprm_check_security`
#
# `execve()` opens the new program, fills a `struct linux_binprm` (`bprm->file`
# is the opened program), and calls `security_bprm_check(bprm)` before the
# point of no return. Refuse there and `execve()` returns the error; the
# caller keeps running its old program.

# %%
EXEC_LSM = r"""
#include <linux/fs.h>
#include <linux/binfmts.h>
#include <linux/errno.h>

LSM_PROBE(bprm_check_security, struct linux_binprm *bprm, int ret) {
    if (ret)
        return ret;
    if (bpf_get_current_cgroup_id() == GUARDED_CGROUP &&
        bprm->file->f_inode->i_ino == BLOCKED_INODE)
        return -EPERM;
    return 0;
}
"""

# %% [markdown]
# **The fallback** is the `sched_process_exec` tracepoint, which fires just
# after the point of no return: the old program is gone, the new one is
# mapped, and not one of its instructions has run. As a raw tracepoint it
# receives the kernel's own arguments, the third of which is the same
# `struct linux_binprm *`: the decision is the same, by inode. A
# `SIGKILL` sent there ends the process before the program starts. What it
# cannot do is let the caller carry on: the caller's old image is already
# gone.

# %%
EXEC_FALLBACK = r"""
#include <linux/fs.h>
#include <linux/binfmts.h>

RAW_TRACEPOINT_PROBE(sched_process_exec) {
    struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
    if (bpf_get_current_cgroup_id() == GUARDED_CGROUP &&
        bprm->file->f_inode->i_ino == BLOCKED_INODE)
        bpf_send_signal(9);
    return 0;
}
"""

# %% [markdown]
# The program to block is a fresh copy of `echo`; a second copy stays
# allowed.

# %%
blocked_tool, other_tool = work / "miner", work / "greeter"
for tool in (blocked_tool, other_tool):
    shutil.copy("/bin/echo", tool)

# %% tags=["needs-lsm"]
with ScratchCgroup("exec") as cg:
    text = (EXEC_LSM if features.available("lsm") else EXEC_FALLBACK)
    text = text.replace("GUARDED_CGROUP", str(cg.id)).replace(
        "BLOCKED_INODE", str(blocked_tool.stat().st_ino))
    if features.available("lsm"):
        how = "lsm/bprm_check_security"
    else:
        features.notice("lsm", "the sched_process_exec raw tracepoint with bpf_send_signal")
        how = "raw_tp/sched_process_exec + SIGKILL"
    with Program(text):
        inside = attempts([("run", str(blocked_tool), "mining"),
                           ("run", str(other_tool), "hello")], cg)
        outside = attempts([("run", str(blocked_tool), "mining")])
show("inside", "run miner", inside[0], how)
show("inside", "run greeter", inside[1], how)
show("outside", "run miner", outside[0], how)

# %% [markdown]
# ## 11.6 A connection firewall: `socket_connect`
#
# `security_socket_connect(sock, address, addrlen)` runs for every
# `connect()`, of every address family. The program reads the family, then
# the port of an IPv4 address (network byte order), and answers like a
# closed port: `-ECONNREFUSED`.

# %%
CONNECT_LSM = r"""
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <net/sock.h>

LSM_PROBE(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret) {
    if (ret)
        return ret;
    if (bpf_get_current_cgroup_id() != GUARDED_CGROUP || address->sa_family != AF_INET)
        return 0;
    struct sockaddr_in *sin = (struct sockaddr_in *)address;
    if (bpf_ntohs(sin->sin_port) == BLOCKED_PORT)
        return -ECONNREFUSED;
    return 0;
}
"""

# %% [markdown]
# **The fallback** here is not a detector but an enforcer: a
# `cgroup/connect4` program (Chapter 9), attached to the scratch cgroup
# itself, runs for the IPv4 `connect()` calls of its processes. Returning 0
# refuses with `EPERM`; `bpf_set_retval(-ECONNREFUSED)` (Linux 5.18) picks
# the errno. The kernel does the cgroup test, for the cgroup and all below
# it.

# %%
CONNECT_FALLBACK = r"""
#include <linux/errno.h>

int refuse(struct bpf_sock_addr *ctx) {
    if (bpf_ntohs(ctx->user_port) != BLOCKED_PORT)
        return 1;
    bpf_set_retval(-ECONNREFUSED);
    return 0;
}
"""

# %% tags=["needs-lsm"]
with socket.create_server(("127.0.0.1", 0)) as blocked_srv, \
        socket.create_server(("127.0.0.1", 0)) as other_srv, ScratchCgroup("net") as cg:
    port, other_port = blocked_srv.getsockname()[1], other_srv.getsockname()[1]
    if features.available("lsm"):
        prog = Program(CONNECT_LSM.replace("GUARDED_CGROUP", str(cg.id))
                       .replace("BLOCKED_PORT", str(port)))
        how = "lsm/socket_connect"
    else:
        features.notice("lsm", "a cgroup/connect4 program")
        prog = Program(CONNECT_FALLBACK.replace("BLOCKED_PORT", str(port)))
        cg.attach(prog, "refuse", "connect4")
        how = "cgroup/connect4"
    with prog:
        inside = attempts([("connect", port), ("connect", other_port)], cg)
        outside = attempts([("connect", port)])
show("inside", "connect to the blocked port", inside[0], how)
show("inside", "connect to another port", inside[1], how)
show("outside", "connect to the blocked port", outside[0], how)

# %% [markdown]
# ## 11.7 Three mechanisms side by side
#
# | | BPF LSM | cgroup program | tracepoint + `bpf_send_signal` |
# |---|---|---|---|
# | where | over 200 security hooks | a few points: sockets, devices, sysctls | any tracepoint |
# | sees | the kernel's objects (inode, binprm, socket), typed | a context struct per hook | what the tracepoint passes: often user pointers and names |
# | scope | the whole machine: filter by cgroup yourself (or `lsm_cgroup`, below) | the cgroup it is attached to and its descendants | the whole machine: filter yourself |
# | verdict | an errno; the caller carries on | allow, or an errno | none: the process is killed after the call |
# | side effects of a stopped call | none | none | happen (`O_TRUNC` emptied the file) |
# | needs | `CONFIG_BPF_LSM`, `bpf` in `lsm=`, BPF trampolines | cgroup v2 | tracepoints |
#
# The fallbacks are real, and a production agent uses them where BPF LSM is
# missing, but they are weaker: the cgroup hooks cover only their few
# operations, and detect-and-kill cannot undo what the call did, nor see
# through a second name. Where a policy matters, check for BPF LSM and say
# so when it is missing, as these cells do.
#
# The course's wrappers have plain equivalents: `bpftool prog show` lists
# LSM programs with type `lsm` (BCC names each one after its hook, cut to
# the kernel's 15 characters: `socket_connect`, `bprm_check_secu`), and
# `bpftool cgroup tree` shows the cgroup programs with the cgroup they sit
# on.
#
# Linux 6.0 added a second flavour of BPF LSM program, `lsm_cgroup`
# (libbpf: `SEC("lsm_cgroup/socket_connect")`): it is attached to a cgroup
# like the programs of Chapter 9, the kernel runs it only for that cgroup
# and its descendants (for hooks on a socket, the socket's cgroup), and,
# like them, it returns 1 to allow and 0 to
# refuse (`bpf_set_retval` picks the errno). BCC 0.26's `LSM_PROBE` loads
# only the machine-wide flavour, which is why this chapter filters by id.

# %% [markdown]
# Here, with the firewall of 11.6 loaded once more: in the VM, `bpftool`
# lists the LSM program; with the fallback, it shows the `connect4`
# program on the scratch cgroup. (Ids and times change: not compared.)

# %% tags=["needs-lsm", "nbval-ignore-output"]
with ScratchCgroup("bpftool") as cg:
    if features.available("lsm"):
        prog = Program(CONNECT_LSM.replace("GUARDED_CGROUP", str(cg.id))
                       .replace("BLOCKED_PORT", "1"))
        listing = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                            text=True).stdout)
        ids = [p["id"] for p in listing if p.get("type") == "lsm"]
        commands = [["bpftool", "prog", "show", "id", str(i)] for i in ids]
    else:
        features.notice("lsm", "a cgroup/connect4 program")
        prog = Program(CONNECT_FALLBACK.replace("BLOCKED_PORT", "1"))
        cg.attach(prog, "refuse", "connect4")
        commands = [["bpftool", "cgroup", "show", str(cg.path)]]
    with prog:
        for command in commands:
            print("$", " ".join(command))
            print(subprocess.run(command, capture_output=True, text=True).stdout)

# %% [markdown]
# Outside the course, the same LSM program is written for libbpf as
# `SEC("lsm/socket_connect") int BPF_PROG(name, struct socket *sock,
# struct sockaddr *address, int addrlen, int ret)` and attached with
# `bpf_program__attach_lsm()` (Chapter 10 loads libbpf objects from Python).

# %% [markdown]
# ## 11.8 Landlock and seccomp
#
# Two other kernel mechanisms confine processes, and both work
# **without privileges**, which BPF LSM does not: loading a BPF LSM
# program takes capabilities an ordinary process lacks (root, in this
# course), and the program then applies to the whole machine.
#
# * **seccomp** filters system calls by number and by the **values** of
#   their arguments, with a classic BPF program that the process installs on
#   itself (and its future children) and can never remove. It may not follow
#   a pointer: a path is just an address to it, so "do not open
#   `/etc/shadow`" cannot be written, only "no `openat` at all", or "no
#   `openat` with these flags". That is by design: the memory a pointer
#   leads to can change between the check and the use.
# * **Landlock** (Linux 5.13) is an LSM of its own. An unprivileged process
#   describes what it may still do (read files beneath `/usr`, write beneath
#   `/tmp/job`; from Landlock ABI 4, Linux 6.7, bind and connect only to some
#   TCP ports), then restricts **itself** and its future children, for good.
#   Its rules are file hierarchies and port numbers.
#
# What BPF LSM adds is a policy imposed **from outside**, on processes that
# are already running and did not ask for it (a container, a cgroup), over
# any of its hooks, decided on any kernel object the hook passes (the
# inode, the program being executed, the socket's address, the cgroup), with
# state in maps that can change while it runs, and events it can report. A
# container runtime can ask a workload to seccomp itself; it needs BPF LSM
# to watch and refuse what the workload does not volunteer to give up.
#
# Landlock itself, in a few lines of `ctypes` (its system calls have no
# wrapper in Python's standard library). A child process, as the user
# `nobody`, keeps read access beneath `/usr`, `/lib`, `/etc` and `/proc`
# only, then tries to read the secret:

# %%
libc = ctypes.CDLL(None, use_errno=True)
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446     # x86_64 and arm64
ACCESS_FS_EXECUTE, ACCESS_FS_READ_FILE, ACCESS_FS_READ_DIR = 1, 4, 8
PR_SET_NO_NEW_PRIVS, RULE_PATH_BENEATH = 38, 1


class PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_read_only_beneath(dirs: list[str]) -> None:
    """Restrict this process (for good) to reading files beneath `dirs`."""
    handled = ACCESS_FS_EXECUTE | ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
    attr = ctypes.c_uint64(handled)          # struct landlock_ruleset_attr, ABI 1
    ruleset = libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    for d in dirs:
        rule = PathBeneath(handled, os.open(d, os.O_PATH))
        if libc.syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0):
            raise OSError(ctypes.get_errno(), "landlock_add_rule")
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)   # what lets an unprivileged process do it
    if libc.syscall(SYS_RESTRICT_SELF, ruleset, 0):
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")

# %%
def try_under_landlock(path: Path) -> str:
    """Fork; the child drops to nobody, lands itself in Landlock, reads `path`."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            landlock_read_only_beneath(["/usr", "/lib", "/etc", "/proc"])
            with open(path) as f:
                answer = "read: " + f.readline().strip()
        except OSError as e:
            answer = os.strerror(e.errno) if e.errno else str(e)
        os.write(w, answer.encode())
        os._exit(0)
    os.close(w)
    answer = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return answer


work.chmod(0o755)
secret.chmod(0o644)          # readable by nobody: only Landlock stands in the way
for path in [secret, Path("/etc/passwd")]:
    result = try_under_landlock(path)
    print(f"as nobody, under Landlock, read {path.name}: "
          f"{'allowed' if result.startswith('read: ') else result}")

# %% [markdown]
# The process refused itself the file (`EACCES`, "Permission denied"),
# with no privilege at all; nobody else did. Note what it could not have
# written: a rule for processes that never asked for one ("every process
# of that container"); "everything but this one file" (Landlock only
# grants: what no rule grants is refused); a decision on anything but a
# file hierarchy or a TCP port (the socket's address, a UDP destination,
# the cgroup). Those are BPF LSM's.

# %%
shutil.rmtree(work)

# %% [markdown]
# ## Recap
#
# * An LSM hook is a point where the kernel asks "may this happen?" before
#   it does something; BPF LSM lets a program answer: 0, or a negative
#   errno that the system call returns. `LSM_PROBE(hook, args..., int ret)`
#   in BCC; `ret` is the previous BPF program's answer.
# * The program sees the hook's kernel objects, typed: decide by inode, not
#   by name; by the program being executed; by the socket address.
# * It runs for the whole machine: scope it yourself, by cgroup id, and test
#   both sides, inside (stopped) and outside (untouched).
# * Where BPF LSM cannot load, cgroup programs enforce at their few hooks,
#   and tracepoints with `bpf_send_signal(SIGKILL)` detect and kill: after
#   the call, by name, with its side effects done, and blind to calls that
#   take another way in.
# * seccomp and Landlock are unprivileged and self-imposed; BPF LSM is
#   privileged and imposed from outside, on any hook and any object.
#
# ## Questions
#
# 1. A BPF LSM program on `file_open` returns `-EPERM` for a file. Which
#    system call fails, with what errno, and is the process still running?
#    What changes with the tracepoint fallback?
# 2. Why does the fallback of 11.3 miss `cat /proc/self/cwd/secret.txt`
#    (run from the secret's folder), and why does `file_open` not?
# 3. The connection firewall's LSM variant tests `address->sa_family ==
#    AF_INET`. What would an IPv6 socket connecting to `::ffff:127.0.0.1`
#    do, and what must the program add to catch it?
# 4. A process inside the guarded cgroup creates a child cgroup and moves
#    itself there. Which of this chapter's programs still stop it, and how
#    would you make the others do so?
# 5. Why can seccomp not express "no process may open `/etc/shadow`", and
#    why was that a deliberate choice?
#
# <details><summary>Answers (click to open)</summary>
#
# 1. The `open()` (or `openat()`) call fails with `EPERM`, and the process
#    goes on: it can handle the error. With the fallback the call itself
#    succeeds (the file is opened, emptied if `O_TRUNC` asked for it), and
#    the process is killed by `SIGKILL` on its way back to user space.
# 2. The fallback compares the path string the process passed
#    (`/proc/self/cwd/secret.txt`), which is not the string in its map. The
#    LSM hook runs after the kernel resolved the path to a file, and
#    compares the inode, which is the same whatever the name.
# 3. It is an `AF_INET6` socket, so the program returns 0 and the
#    connection goes through. Read the address as a `struct sockaddr_in6`
#    when the family is `AF_INET6`, and test its port (and whether the
#    address is v4-mapped). The cgroup fallback has the same gap unless a
#    `connect6` program is attached too (Chapter 9, "The side doors").
# 4. The cgroup program of 11.6 still runs: programs attached to a cgroup
#    run for its descendants. The LSM programs and the tracepoints compare
#    `bpf_get_current_cgroup_id()` with one id and no longer match. Compare
#    the ancestors as well: `bpf_get_current_ancestor_cgroup_id(level)`, for
#    the level of the guarded cgroup, where the kernel offers that helper to
#    the program type, or record the guarded cgroup's descendants as they
#    appear. An `lsm_cgroup` program (Linux 6.0, libbpf) gets this from
#    the kernel, as cgroup programs do.
# 5. A seccomp filter sees the system call's arguments as numbers; a path
#    is a pointer into the process's memory, which the filter may not
#    follow. If it could, another thread of the process could change the
#    string between the filter's check and the kernel's use of it
#    (time-of-check to time-of-use). Landlock and LSMs decide on the file
#    the kernel resolved, which has no such gap.
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 11.1 | file access control: `file_open` by inode for the cgroups in a map, and the `sys_enter_openat` detect-and-kill fallback | `labs/ch11/lab_11_1_file_guard.ipynb` |
# | 11.2 | an execution guardian: `bprm_check_security` by inode, and the `sched_process_exec` kill-before-the-first-instruction fallback | `labs/ch11/lab_11_2_exec_guard.ipynb` |
# | 11.3 | a connection firewall: `socket_connect` answering `ECONNREFUSED`, and the `cgroup/connect4` fallback with `bpf_set_retval` | `labs/ch11/lab_11_3_connect_firewall.ipynb` |
#
# Each lab has you write the LSM variant and the fallback. The check runs
# the LSM variant where BPF LSM works (the course VM) and says in its PASS
# line which variant it judged.
