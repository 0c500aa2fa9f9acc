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
# # Chapter 1: Introduction to eBPF
#
# **After this chapter you will be able to**
#
# * explain what eBPF is, and why it changed how Linux is observed, networked
#   and secured;
# * follow a BPF program through its life: compile, verify, load, attach, run,
#   unload;
# * check what the kernel in front of you can do;
# * write, load and read out your first program from Python, and tell from
#   the outside (`bpftool`) that it really ran and is really gone.
#
# Every code cell in this course talks to the real kernel. Run them in order,
# top to bottom, with the **eBPF (root)** kernel.

# %% [markdown]
# ## 1.1 What eBPF is
#
# eBPF lets you run small programs *inside* the Linux kernel, without writing
# a kernel module and without rebooting. A program is attached to a **hook**:
# a system call starting, a packet arriving on an interface, a process being
# scheduled, a function in some library being called. Each time the event
# happens, the kernel runs your program, which can look at the event, count
# it, filter it, and sometimes change what happens next (drop the packet,
# refuse the connection).
#
# Three properties make this safe enough to use on production machines:
#
# 1. **The verifier.** Before a program is accepted, the kernel checks every
#    path through it: it must end, it must not read memory it has no right to,
#    and every pointer must be checked before use. A program that could crash
#    the kernel is rejected at load time, never at run time.
# 2. **Helpers and kfuncs instead of kernel internals.** A program cannot
#    call arbitrary kernel functions. It calls *helper functions*, a
#    documented, stable set (get the current pid, read the clock, look up a
#    map...), and, since Linux 5.13, *kfuncs*: kernel functions that the
#    kernel explicitly exports to BPF, for given program types, with their
#    types checked against BTF. The helper list is frozen now; new kernel
#    functionality arrives as kfuncs, which carry no stability promise (a kfunc
#    can change or vanish between kernel versions). This course uses helpers:
#    BCC 0.26 declares none of the kfuncs.
# 3. **Maps.** Programs keep state, and talk to user space, through typed
#    key/value stores called maps. Your Python code reads and writes the same
#    maps.
#
# Once verified, the bytecode is compiled to native machine code (the JIT), so
# a program costs tens of nanoseconds per event. That is why eBPF tools can
# watch every system call or every packet on a busy machine.

# %% [markdown]
# ## 1.2 The life of a program
#
# ```mermaid
# flowchart LR
#     A["C source<br/>(a Python string)"] -->|"BCC: clang/LLVM"| B["BPF bytecode"]
#     B -->|"bpf(BPF_PROG_LOAD)"| C{"verifier"}
#     C -->|"rejected: error log"| A
#     C -->|"accepted"| D["JIT: native code"]
#     D -->|"attach"| E["hook: tracepoint, XDP,<br/>TC, cgroup, uprobe..."]
#     E -->|"event fires"| F["program runs"]
#     F <-->|"update / lookup"| M[("maps")]
#     M <-->|"read / write"| P["your Python code"]
#     P -->|"close(): detach + unload"| X["gone"]
# ```
#
# In this course BCC does the first two arrows for you: you give it C text,
# it compiles it with its embedded clang and loads it. Everything after that
# is the kernel's own machinery, the same whatever library you use.

# %% [markdown]
# ## 1.3 The helper package
#
# The course comes with a small package, `ebpf_tutor`. It is meant to be
# read: each module is a page or two. The pieces used in this chapter:
#
# | name | what it does |
# |---|---|
# | `Program(text)` | BCC's `BPF` class plus readable errors and guaranteed cleanup (use it in a `with` block) |
# | `table_df(map)` | a BPF map as a pandas DataFrame |
# | `doctor()` | what this machine can do, each feature decided by trying it |
# | `labs.check(id, ...)` | runs a lab's check against your answer |

# %%
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt

from ebpf_tutor import Program, doctor, table_df
from ebpf_tutor.sandbox.net import VethPair

# %% [markdown]
# ## 1.4 What can this machine do?
#
# Kernels differ: in version, in build options, in what the administrator
# allows. The doctor does not guess from version numbers; it loads and
# attaches a tiny program for each feature and reports what happened.

# %% tags=["nbval-ignore-output"]
report = doctor()
report

# %% [markdown]
# On the course's CI machine, kprobes, fentry and BPF LSM are missing: that
# kernel is built without kprobes and refuses ftrace hooks. The chapters that
# need them (5 and 11) say so in one line and run a fallback; in the course
# VM they run for real. What matters for this chapter:

# %%
for feature in ["tracepoints", "ring buffer", "XDP", "cgroup programs"]:
    print(f"{feature:16} {'available' if report.available(feature) else 'NOT available'}")

# %% [markdown]
# ## 1.5 Hello, eBPF
#
# Our first program prints a line from inside the kernel each time any
# process calls `execve`. `TRACEPOINT_PROBE(syscalls, sys_enter_execve)`
# both declares the function and tells BCC where to attach it, so loading the
# program attaches it too. `bpf_trace_printk` writes to the kernel's trace
# buffer (`/sys/kernel/tracing/trace_pipe`), which BCC reads for us.

# %%
HELLO = r"""
TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    bpf_trace_printk("Hello, eBPF! exec by pid %d\n", bpf_get_current_pid_tgid() >> 32);
    return 0;
}
"""

# %% [markdown]
# Now load it, run `/bin/true` three times from this notebook, and read the
# trace buffer. Other processes may exec at the same time, so we keep only
# the lines written on behalf of our own children.

# %%
with Program(HELLO) as prog:
    children = [subprocess.Popen(["/bin/true"]) for _ in range(3)]
    pids = {c.pid for c in children}
    for c in children:
        c.wait()
    hellos = []
    deadline = time.monotonic() + 5
    while len(hellos) < 3 and time.monotonic() < deadline:
        task, pid, cpu, flags, ts, msg = prog.trace_fields(nonblocking=True)
        if pid in pids:
            hellos.append(msg.decode())
print(f"{len(hellos)} hello lines from our 3 execs:")
print("\n".join(hellos))

# %% [markdown]
# `trace_printk` is the `printf` of BPF: handy while debugging, but slow and
# shared by every program on the machine. Real tools use maps.

# %% [markdown]
# ## 1.6 From printing to counting: a map
#
# This time we attach to `sched:sched_process_exec`, which fires when an
# exec has *succeeded*; at that point the process already carries its new
# name, so `bpf_get_current_comm()` gives the program that now runs. We count
# per name in a hash map, and run a known workload: a copy of `true` 5 times
# and a copy of `uname` 3 times. The copies have names no other process on
# the machine uses (`ebt_true`, `ebt_uname`), so the counts are ours alone.
#
# `execs.atomic_increment(key)` adds one to the key's value with an atomic
# instruction. BCC's plain `increment()` compiles to `*value += 1`, a read and
# a write that two CPUs running the program at the same moment can
# interleave, losing one of the two updates (Chapter 2 measures it). Both
# create a missing key, but only in a `BPF_HASH`.

# %%
COUNT_EXECS = r"""
struct comm_t { char comm[16]; };
BPF_HASH(execs, struct comm_t, u64);

TRACEPOINT_PROBE(sched, sched_process_exec) {
    struct comm_t key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    execs.atomic_increment(key);
    return 0;
}
"""

# %%
workdir = Path(tempfile.mkdtemp(prefix="ch01-"))
for tool in ["true", "uname"]:
    shutil.copy(shutil.which(tool), workdir / f"ebt_{tool}")


def workload():
    for name, times in [("ebt_true", 5), ("ebt_uname", 3)]:
        for _ in range(times):
            subprocess.run([workdir / name], stdout=subprocess.DEVNULL)


with Program(COUNT_EXECS) as prog:
    workload()
    counts = table_df(prog["execs"])

mine = counts.set_index("comm").loc[["ebt_true", "ebt_uname"], "value"]
print(mine.to_string())

# %% [markdown]
# Exactly 5 and 3. The table also holds everything else that ran meanwhile:

# %% tags=["nbval-ignore-output"]
counts.head(8)

# %% tags=["nbval-ignore-output"]
ax = counts.head(10).plot.barh(x="comm", y="value", legend=False, figsize=(6, 3))
ax.invert_yaxis()
ax.set_xlabel("successful execs while the program was attached")
ax.set_ylabel("")
plt.tight_layout()

# %% [markdown]
# ## 1.7 The same count in one line: bpftrace
#
# `bpftrace` is a tracing language in which the program above is one line:
# a probe, an optional filter, and an action. `@[comm] = count()` is a hash
# map keyed by the process name; bpftrace prints its maps when it exits.
# Try it in a terminal (as root), and stop it with Ctrl-C:
#
# ```sh
# bpftrace -e 'tracepoint:sched:sched_process_exec { @[comm] = count(); }'
# ```
#
# Here it runs under Python: we wait for its `BEGIN` probe (it fires once
# every probe is attached), run the same workload, then send the Ctrl-C
# (SIGINT) ourselves and keep our two lines of its output.

# %%
ONE_LINER = 'BEGIN { printf("ready\\n"); } tracepoint:sched:sched_process_exec { @[comm] = count(); }'
tracer = subprocess.Popen(["bpftrace", "-e", ONE_LINER], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
while "ready" not in tracer.stdout.readline():
    pass
workload()
tracer.send_signal(signal.SIGINT)
out, _ = tracer.communicate(timeout=30)
print("\n".join(sorted(line for line in out.splitlines() if line.startswith("@[ebt_"))))

# %% [markdown]
# bpftrace compiles the line with LLVM into a BPF program and loads it with
# the same `bpf()` system call BCC uses. It is the tool for a question you ask
# once; BCC (or libbpf) is for tools you build, with Python or C around the
# program. (On this machine bpftrace also writes an `ERROR` line about
# `RLIMIT_MEMLOCK` to stderr, hidden above: root may not raise that limit
# here, and it no longer matters, because since 5.11 the kernel charges BPF
# memory to the memory cgroup instead.)

# %% [markdown]
# ## 1.8 Seeing the lifecycle from the outside
#
# The kernel keeps a list of loaded programs. `bpftool`, the kernel's own
# inspection tool, shows it. While a program is loaded it has an **id**, a
# **type**, a **name** (the C function's name: the kernel keeps 15
# characters, bpftool finds the full one in the program's BTF) and a **tag**
# (a hash of its instructions).

# %%
def bpftool(*args: str):
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def loaded(name: str) -> list[dict]:
    return [p for p in bpftool("prog", "show") if p.get("name") == name]


prog = Program(COUNT_EXECS)                        # compiled, loaded and attached
info = loaded("tracepoint__sched__sched_process_exec")[0]
print("loaded:", info["type"], info["name"], "| maps:", len(info["map_ids"]),
      "| verified instructions:", info["bytes_xlated"] // 8)

# %% [markdown]
# The verifier rewrote and checked these instructions; this is what the
# kernel really runs (before the JIT turns it into x86 or arm64 code). Map
# references appear as `map[id:N]`: the program holds the map, not a pointer
# you gave it.

# %%
dump = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(info["id"])],
                      capture_output=True, text=True).stdout
print("\n".join(dump.splitlines()[:8]))

# %% [markdown]
# Closing the program detaches it from the tracepoint and drops the last
# reference to it; the kernel frees it at once.

# %%
prog.close()
gone = subprocess.run(["bpftool", "prog", "show", "id", str(info["id"])], capture_output=True)
print("still loaded" if gone.returncode == 0 else "gone: bpftool no longer knows that id")

# %% [markdown]
# `with Program(...) as prog:` does the same `close()` for you, on success,
# on error and on Ctrl-C.
#
# What keeps a program alive is not the process but **references**. The
# kernel frees a program when the last one is gone, and there are several
# kinds:
#
# | reference | made by | ends when |
# |---|---|---|
# | a file descriptor | `bpf(BPF_PROG_LOAD)` returns one | the fd is closed; the kernel closes every fd of a process that exits |
# | a pin | `bpf(BPF_OBJ_PIN)`: a file in the BPF filesystem `/sys/fs/bpf` (Chapter 2) | the file is removed (or the machine reboots) |
# | a perf-event attachment | tracepoints, kprobes, uprobes and perf sampling as BCC attaches them | the perf event's fd is closed: with the process, like any fd |
# | a BPF link (5.7+) | `bpf(BPF_LINK_CREATE)`, or `BPF_RAW_TRACEPOINT_OPEN` | the link's last fd is closed, unless the link is pinned: then it lives with the pin |
# | a netlink attachment | XDP set with `ip link` or netlink (as BCC's `attach_xdp` does), tc filters (`tc filter ... bpf`) | someone detaches it, or the interface goes away |
# | a cgroup attachment | `bpf(BPF_PROG_ATTACH)` to a cgroup (`bpftool cgroup attach`) | someone detaches it, or the cgroup is removed |
# | tcx (6.6+) | tc's newer hook, through a link or `BPF_PROG_ATTACH` | as a link, or as a cgroup-style attachment, by how it was attached |
#
# So a tracepoint program that BCC attached dies with the Python process
# that loaded it. An XDP program, a tc filter or a cgroup program attached the
# classic way does **not**: it keeps running after its loader exits, until
# someone detaches it.
#
# See it happen. A child process loads two programs, attaches one to a
# tracepoint and the other as XDP on a veth inside a private network
# namespace (a sandbox of the course, Chapter 7), then exits without cleaning
# up:

# %%
CHILD = '''
import sys
from ebpf_tutor import Program, xdp
prog = Program("""
int ch01_xdp(struct xdp_md *ctx) { return XDP_PASS; }
int ch01_tp(void *ctx) { return 0; }
""")
prog.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name="ch01_tp")
xdp.attach(prog, "ch01_xdp", sys.argv[1], sys.argv[2], allow_foreign=True)
'''

with VethPair() as sandbox:
    subprocess.run([sys.executable, "-c", CHILD, sandbox.ns["a"], sandbox.ifname["a"]],
                   check=True, capture_output=True)
    print("the child has exited; still loaded:",
          sorted(p["name"] for p in bpftool("prog", "show") if p.get("name") in ("ch01_xdp", "ch01_tp")))
    net = subprocess.run(["ip", "netns", "exec", sandbox.ns["a"], "bpftool", "-j", "net"],
                         capture_output=True, text=True, check=True)
    print("bpftool net in the sandbox:", [(x["devname"], x["mode"]) for x in json.loads(net.stdout)[0]["xdp"]])
deadline = time.monotonic() + 10          # the kernel frees it a moment later (RCU)
while loaded("ch01_xdp") and time.monotonic() < deadline:
    time.sleep(0.05)
print("after the sandbox's veth is gone, ch01_xdp is loaded:", bool(loaded("ch01_xdp")))

# %% [markdown]
# The tracepoint program died with the child's file descriptors; the XDP
# program stayed attached, and loaded, until its interface was deleted. That
# is why Chapters 7 to 9 detach everything in `with` blocks, and why links
# were invented: an attachment owned by a file descriptor cannot outlive its
# tool by accident.

# %% [markdown]
# ## 1.9 When the kernel says no
#
# Most of your time with eBPF will be spent reading error messages, so the
# helper package makes them short. Here is a typo: the compiler's message
# points at your line.

# %% tags=["raises-exception"]
Program(r"""
TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    u64 pid = bpf_get_current_pid_tgid() >> 32
    return 0;
}
""")

# %% [markdown]
# And a program that compiles but is unsafe: a map lookup may return NULL, and
# this one uses the result without checking. The verifier refuses to load
# it; the message shows the line it stopped at and what it wanted.

# %% tags=["raises-exception"]
Program(r"""
BPF_HASH(seen, u32, u64);
TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    u32 key = 0;
    u64 *value = seen.lookup(&key);
    return *value;
}
""")

# %% [markdown]
# ## Recap
#
# * A BPF program is verified, JIT-compiled code attached to a kernel hook;
#   maps carry its state and its results to user space.
# * Loading is not attaching, and a program lives as long as something
#   (a file descriptor, an attachment, a pin) refers to it.
# * `doctor()` tells you what this kernel can do; `bpftool` lets you check
#   any claim from the outside.
#
# **Questions to test yourself**
#
# 1. Why does `bpf_get_current_comm()` in `sys_enter_execve` give the name of
#    the *old* program?
# 2. What three things must be true of every program the verifier accepts?
# 3. After `prog.close()`, what could still keep a program loaded?
#
# <details><summary>Answers (click to open)</summary>
#
# 1. At `sys_enter_execve` the exec has not happened yet: the system call has
#    only been asked for, and the task still runs the old program, under the
#    old name (usually the shell or Python that called `execve`). The name
#    changes during the exec, so `sched:sched_process_exec` (fired after a
#    successful exec) sees the new one. That is why lab 1.1 keys by the file
#    name argument instead.
# 2. It ends (no unbounded loop: every path reaches an exit within the
#    verifier's limits); it touches only memory it is allowed to (its stack,
#    its context, map values, packet data within checked bounds, and other
#    memory only through helpers such as `bpf_probe_read_*`); and every
#    pointer that may be NULL (a map lookup's result) is checked before it is
#    used. (The verifier also checks types: the right arguments to each
#    helper, no uninitialised stack read, no kernel pointer leaked to user
#    space without privilege.)
# 3. Any other reference: a pin in `/sys/fs/bpf`; a BPF link held or pinned
#    by some process; an attachment that is not owned by a file descriptor,
#    such as XDP or a tc filter set through netlink, or a cgroup program
#    attached with `BPF_PROG_ATTACH`; or another process holding an fd to it
#    (`bpftool prog show` lists the pids that hold one). For a tracepoint
#    program that BCC attached, `close()` removes the last reference.
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 1.1 | count `execve` per file name in a hash map | `labs/ch01/lab_1_1_hello_execve.ipynb` |
# | 1.2 | read kernel version, BTF, JIT, capabilities and build options from Python | `labs/ch01/lab_1_2_system_info.ipynb` |
# | 1.3 | load, find with bpftool, run, unload and prove gone | `labs/ch01/lab_1_3_lifecycle.ipynb` |
#
# Each lab ends with a check cell. `ebpf-tutor progress` shows what you have
# passed; the solutions are in `solutions/ch01/`.
