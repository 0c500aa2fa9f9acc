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
# # Chapter 17: A container security monitor
#
# **After this chapter you will be able to**
#
# * say what a container is to the kernel (namespaces and a cgroup) and make
#   one with `unshare` and a scratch cgroup;
# * tell containers apart inside a BPF program by cgroup id, and events of
#   the host from events of a container;
# * watch exec, file, network and namespace calls per container from
#   tracepoints, and turn them into alerts: a shell, a write below `/etc`,
#   an escape attempt, a reverse shell, a cryptominer-like CPU burn;
# * enforce in the kernel: kill a shell at its exec with `bpf_send_signal`,
#   refuse a connection with a cgroup `connect4` program;
# * compare what you built with Falco's default rules and Tetragon's
#   tracing policies.
#
# The monitor is a tool of the course package, `ebpf_tutor/apps/containermon/`,
# and a command: `ebpf-tutor containermon`. Chapter 6 (tracepoints),
# chapter 10 (cgroup programs), chapter 11 (enforcement) and chapter 13
# (ring buffers) are the parts it is made of.

# %%
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ebpf_tutor import features
from ebpf_tutor.apps.containermon import incidents, rules
from ebpf_tutor.sandbox.container import Container
from ebpf_tutor.apps.containermon.monitor import Monitor, missing_tracepoints
from ebpf_tutor.apps.containermon.rules import Settings

# %% [markdown]
# ## 17.1 The tool, first
#
# `ebpf-tutor containermon --demo` makes two containers. In `web` it runs
# ordinary work (`ls`, `cat`, reading `/etc`, a TCP client and server on
# loopback, a short computation); in `pwned` it runs seven scripted
# incidents, one after the other. Each alert names the container, the rule,
# the process and what it did. `--run -- CMD` watches one command in a
# fresh container; `--cgroup PATH` watches an existing cgroup (a Docker or
# systemd container) without enforcing anything; `--json` prints one JSON
# object; Ctrl-C detaches and prints the alerts so far.

# %%
demo = subprocess.run([sys.executable, "-m", "ebpf_tutor", "containermon", "--demo"],
                      capture_output=True, text=True)
print(demo.stdout, demo.stderr)

# %% [markdown]
# Nothing from `web`. Every incident raised the rule it was written for,
# and the reverse shell raised three alerts: two for the socket copied onto
# its standard input and output, one for the shell it then started.
#
# ## 17.2 What a container is to the kernel
#
# The kernel has no object called a container. A container runtime puts a
# process in new **namespaces** (what it can see: its own pid numbers, its
# own mounts, its own hostname, its own network stack) and in a **cgroup**
# (what it may use, and, for us, a name for the whole group). Everything it
# starts inherits both.
#
# `Container` (in `ebpf_tutor/sandbox/container.py`) does exactly that:
# `unshare --pid --mount --uts --net --fork --mount-proc` starts its first
# process, which mounts a tmpfs copy of `/etc` over `/etc` (in its own mount
# namespace: the host's `/etc` never changes), brings its loopback up, and
# only then moves into a fresh `ScratchCgroup`. Commands then run as its
# children. The root filesystem is the host's: this is enough to watch and
# to enforce, not a sandbox for hostile code.

# %%
with Container("a") as a, Container("b") as b:
    print("cgroup ids differ:", a.cgroup_id != b.cgroup_id)
    print("pid namespaces differ from each other and from ours:",
          len({a.pidns, b.pidns, os.stat("/proc/self/ns/pid").st_ino}) == 3)
    init_argv = a.run(["cat", "/proc/1/cmdline"]).out.split("\0")
    print("pid 1 inside a:", Path(init_argv[2]).name, "| a shell there is pid",
          a.run(["sh", "-c", "echo $$"]).out.strip(), "| the host sees pid 1 as pid", a.init_pid)
    print("a's cgroup:", a.run(["cat", "/proc/self/cgroup"]).out.splitlines()[-1].split("/")[-1][-5:])
    print("a's network:", a.run(["ip", "-brief", "link"]).out.split()[0], "only")
    a.run(["sh", "-c", "echo hello > /etc/chapter17"])
    print("written in a's /etc:", a.run(["cat", "/etc/chapter17"]).out.strip(),
          "| seen by b:", b.run(["test", "-e", "/etc/chapter17"]).rc == 0,
          "| seen by the host:", os.path.exists("/etc/chapter17"))

# %% [markdown]
# Inside, the container counts its own pids from 1; the host sees other
# numbers for the same processes. That is why the monitor never uses pids to tell
# containers apart, and uses the **cgroup id** instead: the inode number of
# the cgroup's directory, what `bpf_get_current_cgroup_id()` returns for
# the task that runs the program. The pid namespace's inode number
# (`ls -i /proc/PID/ns/pid`) is the other usual key; `Monitor.watch`
# records it next to the cgroup id.
#
# ## 17.3 Events per container
#
# `containermon.bpf.c` attaches to tracepoints only (this course's kernels
# may lack kprobes, and tracepoints are a stable interface):
#
# | tracepoint | event | what is kept |
# |---|---|---|
# | `sched:sched_process_exec` | exec | the program's path, its name |
# | `syscalls:sys_enter_openat` | open for writing | the path, when the flags write, create or truncate |
# | `syscalls:sys_enter_connect` | connect | IPv4 address and port |
# | `syscalls:sys_exit_socket`, `sys_exit_accept4` | (socket bookkeeping), accept | which descriptors are sockets |
# | `syscalls:sys_enter_dup2`, `sys_enter_dup3` | socket on fd 0-2 | old and new descriptor |
# | `syscalls:sys_enter_unshare`, `sys_enter_setns`, `sys_enter_mount` | namespace and mount calls | flags, target directory |
# | `sched:sched_switch` | (none: CPU time per process) | ns on CPU, and who runs now on each CPU |
#
# Every handler starts the same way: look up the current cgroup id in the
# `containers` hash map; a process of any other cgroup costs one lookup and
# nothing else. `sys_enter_dup2` does not exist on arm64 (only `dup3`
# does), so it is compiled in only where its tracepoint exists:

# %%
print("tracepoints it needs that this kernel lacks:", missing_tracepoints() or "none")

# %% [markdown]
# The check that matters: two containers and the host run the same fresh
# program name, a known number of times each. Only the containers' runs
# are reported, each under its own container.

# %%
marker = f"/tmp/ch17-{os.getpid()}"
os.symlink("/usr/bin/true", marker)
try:
    with Monitor() as mon, Container("a") as a, Container("b") as b:
        mon.watch(a)
        mon.watch(b)
        for _ in range(3):
            subprocess.run([marker])               # the host: must not appear
        a.run([marker])
        for _ in range(2):
            b.run([marker])
        mon.settle()
        seen = [(e["container"], e["cgroup"]) for e in mon.events
                if e["kind"] == "exec" and e["path"] == marker]
        ids = {"a": a.cgroup_id, "b": b.cgroup_id}
finally:
    os.unlink(marker)
print("exec events of the marker, per container:",
      {name: sum(1 for n, _ in seen if n == name) for name in ("a", "b", "host")})
print("each under its container's cgroup id:",
      all(cg == ids[n] for n, cg in seen))

# %% [markdown]
# ## 17.4 Detections
#
# The rules (`containermon/rules.py`) are plain functions of one event.
# Each incident in `incidents.py` is a real attack technique reduced to a
# few commands that stay inside the container:
#
# * **shell**: `/bin/sh -c ...`. Falco's *Terminal shell in container*
#   also asks for a terminal (`proc.tty != 0`); ours flags any shell, which
#   is closer to the older *Run shell in container*.
# * **write below etc**: `cp` into the container's `/etc` (its tmpfs copy).
#   An open with `O_WRONLY`, `O_RDWR`, `O_CREAT` or `O_TRUNC` counts, as in
#   Falco's `open_write` macro.
# * **escape attempts**: `unshare --user`, `nsenter --target 1 --uts`,
#   `mount -t tmpfs`. A process in a container has no business making new
#   namespaces, entering others or mounting.
# * **reverse shell**: a listener on the container's loopback; a client
#   connects, copies the socket onto its descriptors 0 and 1 with `dup2`,
#   and starts `sh -i`. The program remembers which descriptors are
#   sockets (from `socket()` and `accept()` returns, forgetting them at
#   `close()`), and reports a `dup2`/`dup3` of one onto 0, 1 or 2. A copy
#   of a socket is a socket too, so `2>&1` after `>&` is seen as well.
# * **miner**: a loop that keeps one CPU busy for 3 s.
#
# Benign work in another container must raise nothing.

# %%
with Monitor(Settings(cpu_seconds=1.5)) as mon, Container("web") as web, Container("pwned") as bad:
    mon.watch(web)
    mon.watch(bad)
    benign_ok = all(r.rc == 0 for r in incidents.benign(web))
    rows = []
    for name, run_incident in incidents.INCIDENTS.items():
        before = len(mon.alerts_for("pwned"))
        run_incident(bad, 2.5) if name == "miner" else run_incident(bad)
        mon.settle(quiet=0.5)
        raised = [a.rule for a in mon.alerts_for("pwned")[before:]]
        rows.append({"incident": name, "expected rule": incidents.EXPECTED[name],
                     "raised": incidents.EXPECTED[name] in raised,
                     "other alerts": len([r for r in raised if r != incidents.EXPECTED[name]])})
    web_alerts = mon.alerts_for("web")
print("benign work ran:", benign_ok, "| alerts from web:", len(web_alerts))
pd.DataFrame(rows)

# %% [markdown]
# The one "other alert" is the reverse shell's `sh -i`, which is also a
# shell. The miner is found from CPU time, not from a system call: at each
# `sched_switch` the program adds the time the leaving task ran to
# `runtime[tgid]` (when it belongs to a container), and remembers, per CPU,
# who runs now and since when. A loop alone on an idle CPU may never be
# switched out, so user space adds that running time when it samples, four
# times a second. A process that kept at least `cpu_share` of one CPU (0.8
# by default) over the last `cpu_seconds` is flagged, once. The short computation in `web`
# (0.3 s) is under the window and is not.
#
# ## 17.5 Enforcement
#
# Detection tells you afterwards. Two ways to stop the action in the
# kernel, both from this chapter's program:
#
# * at `sched_process_exec`, when the container's policy says so and the
#   new program's name is a shell, `bpf_send_signal(SIGKILL)`: the helper
#   sends a signal to the process of the current task, which is the one
#   that just exec'd, before it runs one instruction of the shell;
# * a `cgroup/connect4` program on the container's scratch cgroup refuses
#   connections to listed ports: `connect()` fails with `EPERM`.
#
# The host's shells are not concerned: the policy is looked up by the
# current task's cgroup id.

# %%
connect = ("import socket, sys\ns = socket.socket(); s.settimeout(2)\n"
           "try: s.connect(('127.0.0.1', int(sys.argv[1]))); print(0)\n"
           "except OSError as e: print(e.errno)")
with Monitor(Settings(enforce_shell_kill=True, deny_ports=(4444,))) as mon, \
        Container("guarded") as c:
    mon.watch(c)
    shell = incidents.shell(c)
    ls = c.run(["ls", "/"])
    denied = c.run([incidents.PY, "-I", "-c", connect, "4444"]).out.strip()
    other = c.run([incidents.PY, "-I", "-c", connect, "4445"]).out.strip()
    host_shell = subprocess.run(["sh", "-c", "echo alive"], capture_output=True, text=True).stdout.strip()
    mon.settle()
    print("shell in the container: exit", shell.rc, "(killed by signal 9)" if shell.rc == -9 else "")
    print("ls in the container: exit", ls.rc)
    print("connect to 4444:", os.strerror(int(denied)), "| to 4445 (nobody listens):", os.strerror(int(other)))
    print("a shell on the host:", host_shell)
    print("alerts:", [a.rule for a in mon.alerts], "| connect4 refusals:", mon.refused())

# %% [markdown]
# `bpf_send_signal` stops the shell, but only at a point where a tracepoint
# fires: a signal cannot make a system call fail, and a write that already
# started may complete (Tetragon's documentation says the same of its
# `Sigkill` action). A refusal is cleaner: BPF LSM programs (chapter 11)
# return an error from a security hook, such as `bprm_check_security` for
# an exec, and the action never happens. `ebpf-tutor containermon
# --enforce-shell` does that where BPF LSM works (`containermon_lsm.bpf.c`:
# the shell's `execve()` fails with `EPERM`; run in the course VM by
# `scripts/ci-vm.sh`), and falls back to the kill above elsewhere, saying so
# in one line, as the next cell does here.

# %% tags=["nbval-ignore-output"]
features.notice("lsm", "the tracepoint kill and the cgroup connect4 refusal above")

# %% [markdown]
# ## 17.6 Falco and Tetragon
#
# Neither tool is installed here, so this comparison is with their
# documentation, not a run.
#
# | | containermon (this chapter) | Falco | Tetragon |
# |---|---|---|---|
# | kernel side | BCC program on tracepoints, cgroup `connect4` | a driver: the modern eBPF probe (CO-RE, the default in recent releases), the legacy eBPF probe, or a kernel module ([docs](https://falco.org/docs/concepts/event-sources/kernel)) | eBPF programs on kprobes, tracepoints, uprobes and LSM hooks, described by a `TracingPolicy` ([docs](https://tetragon.io/docs/reference/tracing-policy/)) |
# | where rules run | user space (Python), except enforcement | user space: conditions on syscall events ([rules](https://falco.org/docs/concepts/rules/basic-elements/)) | in the kernel: selectors filter before an event is sent ([docs](https://tetragon.io/docs/concepts/tracing-policy/)) |
# | which container | cgroup id (+ pid namespace) | `container.id` from the runtime | Kubernetes pod and namespace, container selectors |
# | shell in a container | any shell exec | *Terminal shell in container* (`spawned_process`, `container`, `shell_procs`, `proc.tty != 0`) | a policy on exec (`matchBinaries`) |
# | write below /etc | `openat` with write flags under a prefix | *Write below etc* (`open_write` and `fd.name startswith /etc`) | a policy on a kernel function such as `fd_install`, with `matchArgs` on the path (operator `Prefix`) |
# | reverse shell | `dup2`/`dup3` of a known socket onto 0-2 | *Redirect STDOUT/STDIN to Network Connection in Container* (`dup*` onto fd 0, 1 or 2 of an IPv4/IPv6 socket) | no ready-made policy: one hooks the calls and filters their arguments |
# | namespace escape | `unshare`, `setns`, `mount` from a container | *Change thread namespace* (`setns`), *Change namespace privileges via unshare* | `matchNamespaceChanges` selectors; a *Namespace access monitoring* use case in its docs |
# | CPU burn | CPU time from `sched_switch` | none on CPU time: *Detect crypto miners using the Stratum protocol* (a `stratum+tcp` command line) and *Detect outbound connections to common miner pool ports* | none on CPU time in its docs |
# | enforcement | `bpf_send_signal(SIGKILL)` at exec; `connect4` refusal | none: it alerts ("Falco Talon" or other responders act) | in the kernel: `Sigkill`, `Signal`, `Override` return values ([docs](https://tetragon.io/docs/concepts/enforcement/)) |
#
# The design difference that matters: Falco sends every watched system call
# to user space and decides there, which makes rules easy to write and
# costs a copy of each event; Tetragon filters and acts in the kernel, which
# is cheaper and can stop an action, but its policies name kernel functions
# that change between kernels. This monitor sits between them: it filters
# by cgroup in the kernel and decides in user space, and its two
# enforcement paths are in the kernel.
#
# **Questions to test yourself**
#
# 1. A process in a container calls `unshare(CLONE_NEWUSER)`, then `exec`s
#    a shell. The monitor runs with `--enforce-shell`. Which alerts do you
#    get, and is the shell killed?
# 2. Why does the program not key its `containers` map by pid namespace?
# 3. A miner runs four threads, each busy a quarter of the time. Is it flagged?
# 4. Why can `bpf_send_signal` not make `connect()` fail, where the
#    `connect4` program can?
#
# <details><summary>Answers (try first, then click to open)</summary>
#
# 1. Two: the escape attempt (`unshare(user)`) and, at the exec, *shell
#    killed (enforce)*. The shell is killed: the policy follows the cgroup,
#    and the new user namespace does not move the process out of it.
# 2. `bpf_get_current_cgroup_id()` is one helper call; the pid namespace
#    needs a walk through `task_struct` (kernel struct layouts), and
#    processes can make new pid namespaces while their cgroup stays.
# 3. Yes: `runtime` is keyed by thread group id, so the four threads add up
#    to one CPU.
# 4. `bpf_send_signal` queues a signal; the process acts on it on its way
#    back to user space. The call itself is not refused: a `connect()`
#    that does not block has completed by then. A cgroup `connect4`
#    program's verdict is the kernel's answer to the call itself.
#
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 17.1 | exec events per container, keyed by cgroup id, against an unwatched container and the host | `labs/ch17/lab_17_1_container_execs.ipynb` |
# | 17.2 | reverse-shell detection: sockets remembered, forgotten at close, copies onto 0-2 counted | `labs/ch17/lab_17_2_reverse_shell.ipynb` |
# | 17.3 | enforcement: a shell killed at its exec with `bpf_send_signal` in a guarded container only | `labs/ch17/lab_17_3_kill_shell.ipynb` |
#
# Each lab ends with a check cell that makes its own containers, runs
# freshly named programs in them and on the host, and compares what your
# program recorded or did with what it ran.
