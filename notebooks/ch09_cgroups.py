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
# # Chapter 9: Cgroups and resource control
#
# **After this chapter you will be able to**
#
# * say what a cgroup is, find the cgroup of any process, and tell its id;
# * run a workload in a throw-away cgroup and attach programs to that cgroup
#   only, with everything released at the end;
# * pick the right cgroup program type and hook: `cgroup_skb` for packets,
#   `sock_addr` for `connect()`, `device` for device nodes, `sysctl` for
#   `/proc/sys`;
# * allow, deny or rewrite what the processes of one cgroup do, and prove
#   it both ways: denied inside, allowed outside;
# * account packets, bytes and system calls per cgroup, and know which
#   cgroup id to trust in which program.
#
# Every code cell talks to the real kernel. Run them in order with the
# **eBPF (root)** kernel.

# %% [markdown]
# ## 9.1 Cgroups in one page
#
# A **control group** is a set of processes, arranged in a tree that the
# kernel shows as directories of a special file system. Every process
# belongs to exactly one cgroup of the version-2 tree, and its children
# start in the same one. Systemd gives each service its own cgroup, and a
# container runtime gives one to each container: a cgroup is, in practice,
# "this application" or "this tenant".
#
# The classic use is resource *limits*: controllers such as `cpu`, `memory`,
# `io` and `pids` read files like `memory.max` in each directory. eBPF adds
# something more flexible: **programs attached to a cgroup**. They run for
# every process in that cgroup and in all cgroups below it, at fixed
# points: a packet is sent or received, a socket connects, a device node is
# opened, a sysctl is read. Their return value is a verdict (allow or deny),
# and some may rewrite what the process asked for.
#
# ```mermaid
# flowchart TB
#     R["/ (root)"] --> S["system.slice"]
#     R --> E["ebpf-tutor/"]
#     S --> N["nginx.service"]
#     E --> P["&lt;pid&gt;-0-parent  ← program attached here"]
#     P --> A["a  (runs it too)"]
#     P --> B["b  (runs it too)"]
# ```
#
# BPF programs attach only to the **version 2** hierarchy. This machine
# runs in *hybrid* mode: the v1 controllers are mounted as before, and the
# v2 tree is mounted beside them at `/sys/fs/cgroup/unified`. On a machine
# in unified mode (the default since Debian 11, whose release notes
# announce it under "Control groups v2") it is `/sys/fs/cgroup` itself;
# the helper finds it in `/proc/mounts`.

# %%
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ebpf_tutor import Program
from ebpf_tutor.bpfsys.libbpf import libbpf
from ebpf_tutor.bpfsys.pin import pin_path
from ebpf_tutor.commands import shell_in
from ebpf_tutor.kernel.bcc_import import BPF, bcc
from ebpf_tutor.sandbox.cgroup import ScratchCgroup, cgroup2_root, cgroup_of

# %% tags=["nbval-ignore-output"]
print("cgroup v2 is mounted at", cgroup2_root())
print("this notebook's kernel runs in", cgroup_of())

# %% [markdown]
# `cgroup_of()` reads the `0::` line of `/proc/self/cgroup`: the v2 path.
# The other lines of that file (in hybrid mode) are the v1 hierarchies,
# which BPF ignores.

# %% [markdown]
# ## 9.2 A scratch cgroup
#
# Enforcement experiments must never touch the machine's own cgroups. The
# course's `ScratchCgroup` makes a fresh directory under
# `<cgroup2>/ebpf-tutor/`, named after this process, and removes it when the
# `with` block ends, on success, on error and on Ctrl-C. If the process is
# killed instead, `ebpf-tutor sweep` (and every test run) removes what it
# left, because the owner's pid is in the name.
#
# `cg.run(argv)` starts a program *inside* the cgroup from its very first
# instruction: the forked child writes itself into `cgroup.procs` before it
# calls `exec`.

# %%
with ScratchCgroup("demo") as cg:
    r = cg.run(["cat", "/proc/self/cgroup"])
    v2_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("0::"))
    print("cat says it runs in:", v2_line.replace(cg.name, "<scratch>"))
    print("the cgroup id is the directory's inode number:", cg.id == os.stat(cg.path).st_ino)
    sleeper = cg.spawn(["sleep", "600"])
    print("processes inside now:", len(cg.pids()))
print("after the with block: directory exists?", cg.path.exists(),
      "| the sleeper was killed:", sleeper.poll() == -9)

# %% [markdown]
# A cgroup can hold cgroups: `cg.child("a")` makes one inside (removed with
# its parent). That is how we will give one program two "tenants" to tell
# apart.

# %% [markdown]
# ## 9.3 Which cgroup is this? `bpf_get_current_cgroup_id()`
#
# Any BPF program can ask for the cgroup of the task the CPU is running:
# `bpf_get_current_cgroup_id()` returns the id of its v2 cgroup (the
# inode number we just saw). A tracepoint that fires for the whole machine
# can therefore **account per cgroup**. Here we count successful `exec`s
# per cgroup, and run `/bin/true` three times in cgroup A and once in B.

# %%
EXECS_BY_CGROUP = r"""
BPF_HASH(execs, u64, u64);      /* cgroup id -> successful execs */

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u64 cgroup = bpf_get_current_cgroup_id();
    execs.increment(cgroup);
    return 0;
}
"""

with ScratchCgroup("execs") as parent, Program(EXECS_BY_CGROUP) as prog:
    a, b = parent.child("a"), parent.child("b")
    for cg, times in [(a, 3), (b, 1)]:
        for _ in range(times):
            cg.run(["/bin/true"])
    counts = {k.value: v.value for k, v in prog["execs"].items()}
    print("execs in A:", counts.get(a.id, 0), "| in B:", counts.get(b.id, 0))

# %% [markdown]
# The tracepoint saw every exec on the machine; the key says whose it was.
# Chapter 15's system call tracer uses the same trick to follow "one
# container".

# %% [markdown]
# ## 9.4 The cgroup program types
#
# | hook in `cg.attach` | program type | context in C | runs when a process of the cgroup... | return |
# |---|---|---|---|---|
# | `"ingress"`, `"egress"` | `BPF_PROG_TYPE_CGROUP_SKB` | `struct __sk_buff` | receives / sends a packet on one of its sockets | 1 pass, 0 drop |
# | `"sock_create"` | `BPF_PROG_TYPE_CGROUP_SOCK` | `struct bpf_sock` | creates a socket | 1 allow, 0 `EPERM` |
# | `"bind4"`, `"connect4"`, `"sendmsg4"`, `"getpeername4"`; `"connect6"`, `"sendmsg6"` | `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` | `struct bpf_sock_addr` | calls `bind`, `connect`, `sendto`... on IPv4; the `6` hooks on IPv6 (may **rewrite** the address) | 1 go on, 0 `EPERM` |
# | `"device"` | `BPF_PROG_TYPE_CGROUP_DEVICE` | `struct bpf_cgroup_dev_ctx` | opens or `mknod`s a device node | 1 allow, 0 `EPERM` |
# | `"sysctl"` | `BPF_PROG_TYPE_CGROUP_SYSCTL` | `struct bpf_sysctl` | reads or writes a file under `/proc/sys` | 1 allow, 0 `EPERM` |
#
# There are more (socket options, `sock_ops` for TCP events, Unix sockets,
# the other IPv6 twins of the `4` hooks); these are the ones this chapter
# uses.
#
# Attaching takes two steps in BCC: **load** the C function as the right
# program type (`prog.load_func(name, BPF.CGROUP_SKB)`), then **attach**
# its descriptor to the cgroup's directory descriptor with an attach type
# (`BPF.attach_func(fn, cg.fd(), BPFAttachType.CGROUP_INET_EGRESS)`). BCC
# never detaches those for you. `cg.attach(prog, name, hook)` does both
# steps, refuses any cgroup that is not a scratch one, and detaches at the
# end of the `with` block.
#
# To watch each policy work, we run the same small Python snippet twice:
# once in the cgroup, once outside, and print what each saw, side by side.

# %%
ATTEMPT = r"""
import os, socket, stat, sys

def attempt(label, action):
    try:
        result = action()
        print(f"{label}\t{'ok' if result is None else result}")
    except OSError as e:
        print(f"{label}\t{e.strerror}")
"""


def both_ways(cg: ScratchCgroup, code: str, *args, private_uts: bool = False) -> None:
    """Run ATTEMPT + code inside cg and outside it; print the two verdicts per action."""
    argv = [sys.executable, "-c", ATTEMPT + code, *map(str, args)]
    if private_uts:
        argv = ["unshare", "--uts", *argv]
    inside = cg.run(argv).stdout.splitlines()
    outside = subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()
    print(f"{'':34}{'inside the cgroup':26}outside")
    for line_in, line_out in zip(inside, outside):
        label, verdict_in = line_in.split("\t")
        print(f"{label:34}{verdict_in:26}{line_out.split(chr(9))[1]}")


# %% [markdown]
# ## 9.5 Packets: a `cgroup_skb` egress filter
#
# A `cgroup_skb` program sees each packet a socket of the cgroup sends
# (egress) or receives (ingress), starting at its **IP header**. This one
# counts everything the cgroup sends, and drops whatever goes to one
# address: `127.0.0.2`. (The whole `127.0.0.0/8` is the loopback interface,
# so that is a second local address we can receive on.) The IPv4
# destination address sits at byte 16 of the header; like everything on
# the wire it is in network byte order.

# %%
EGRESS = r"""
struct stats_t { u64 packets; u64 bytes; u64 dropped; };
BPF_ARRAY(stats, struct stats_t, 1);

int egress_filter(struct __sk_buff *skb) {
    int zero = 0;
    struct stats_t *s = stats.lookup(&zero);
    u32 daddr = 0;
    if (!s)
        return 1;
    __sync_fetch_and_add(&s->packets, 1);
    __sync_fetch_and_add(&s->bytes, skb->len);          /* from the IP header on */
    if (bpf_skb_load_bytes(skb, 16, &daddr, 4) == 0 && daddr == htonl(0x7f000002)) {
        __sync_fetch_and_add(&s->dropped, 1);
        return 0;                                       /* drop: 127.0.0.2 */
    }
    return 1;                                           /* pass */
}
"""

SEND_UDP = """
for addr, port in [("127.0.0.1", int(sys.argv[1])), ("127.0.0.2", int(sys.argv[2]))]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3):
        attempt(f"datagram {i + 1} to {addr}", lambda: s.sendto(b"x" * 100, (addr, port)) and None)
"""


def udp_sink(addr: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 0))
    s.setblocking(False)
    return s


def drain(s: socket.socket) -> int:
    time.sleep(0.1)
    n = 0
    try:
        while s.recv(65535):
            n += 1
    except BlockingIOError:
        return n


# %% [markdown]
# First the plain BCC way, so you see every step, and the detach at the end.

# %%
sink1, sink2 = udp_sink("127.0.0.1"), udp_sink("127.0.0.2")
with ScratchCgroup("egress") as cg, Program(EGRESS) as prog:
    fn = prog.load_func("egress_filter", BPF.CGROUP_SKB)
    BPF.attach_func(fn, cg.fd(), bcc.BPFAttachType.CGROUP_INET_EGRESS)
    both_ways(cg, SEND_UDP, sink1.getsockname()[1], sink2.getsockname()[1])
    BPF.detach_func(fn, cg.fd(), bcc.BPFAttachType.CGROUP_INET_EGRESS)
    st = prog["stats"][0]
print(f"\nthe program saw {st.packets} packets, {st.bytes} bytes, dropped {st.dropped}")
print(f"received on 127.0.0.1: {drain(sink1)}, on 127.0.0.2: {drain(sink2)}")

# %% [markdown]
# Read it both ways. Inside the cgroup, the three datagrams to `127.0.0.2`
# were refused (`sendto()` itself fails with `EPERM`: the drop happens on
# the sending path, so the kernel can tell the sender). Outside, the same
# three went through. The sinks agree: 3 + 3 arrived at `127.0.0.1`, and
# only the 3 sent from outside at `127.0.0.2`. The program saw only the
# cgroup's 6 packets, each 128 bytes: 100 of payload, 8 of UDP header,
# 20 of IP header.
#
# From now on, `cg.attach(prog, "egress_filter", "egress")` does the load,
# the attach and (at the end of the `with`) the detach in one line.

# %% [markdown]
# ## 9.6 Whose packet is it? Accounting per cgroup
#
# Attach once, to a parent, and the program runs for every cgroup below.
# To split the bill it needs each packet's cgroup. There are two candidate
# ids:
#
# * `bpf_skb_cgroup_id(skb)`: the cgroup of the **socket** the packet
#   belongs to (the sender's socket on egress, the receiver's on ingress);
# * `bpf_get_current_cgroup_id()`: the cgroup of whatever task the CPU
#   happens to run.
#
# Below, tenant A sends 6 datagrams of 100 bytes to a process in tenant B,
# which then sends 3 of 300 bytes to a socket of this notebook. We count
# with both ids and compare.

# %%
ACCOUNT = r"""
struct usage_t { u64 rx_packets; u64 rx_bytes; u64 tx_packets; u64 tx_bytes; };
BPF_HASH(by_socket, u64, struct usage_t);     /* key: bpf_skb_cgroup_id(skb) */
BPF_HASH(by_current, u64, struct usage_t);    /* key: bpf_get_current_cgroup_id() */

static __always_inline void add(struct usage_t *u, struct __sk_buff *skb, int egress) {
    if (!u)
        return;
    if (egress) {
        __sync_fetch_and_add(&u->tx_packets, 1);
        __sync_fetch_and_add(&u->tx_bytes, skb->len);
    } else {
        __sync_fetch_and_add(&u->rx_packets, 1);
        __sync_fetch_and_add(&u->rx_bytes, skb->len);
    }
}

static __always_inline int account(struct __sk_buff *skb, int egress) {
    struct usage_t zero = {};
    u64 owner = bpf_skb_cgroup_id(skb), running = bpf_get_current_cgroup_id();
    add(by_socket.lookup_or_try_init(&owner, &zero), skb, egress);
    add(by_current.lookup_or_try_init(&running, &zero), skb, egress);
    return 1;                   /* a monitor lets everything pass */
}

int count_ingress(struct __sk_buff *skb) { return account(skb, 0); }
int count_egress(struct __sk_buff *skb)  { return account(skb, 1); }
"""

RECEIVE_THEN_SEND = """
import socket, sys
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind(("127.0.0.1", 0))
print(r.getsockname()[1], flush=True)
for _ in range(6):
    r.recv(65535)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(b"b" * 300, ("127.0.0.1", int(sys.argv[1])))
"""
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"a" * int(sys.argv[3]), ("127.0.0.1", int(sys.argv[1])))
"""


def usage_table(table, names: dict[int, str]) -> pd.DataFrame:
    rows = {names[k.value]: {f: getattr(v, f) for f, _ in v._fields_}
            for k, v in table.items() if k.value in names}
    return pd.DataFrame(rows).T.reindex(list(names.values())).fillna(0).astype(int)


sink = udp_sink("127.0.0.1")
with ScratchCgroup("tenants") as parent, Program(ACCOUNT) as prog:
    a, b = parent.child("a"), parent.child("b")
    parent.attach(prog, "count_ingress", "ingress")
    parent.attach(prog, "count_egress", "egress")
    receiver = b.spawn([sys.executable, "-c", RECEIVE_THEN_SEND, str(sink.getsockname()[1])],
                       stdout=subprocess.PIPE, text=True)
    port = receiver.stdout.readline().strip()
    a.run([sys.executable, "-c", SEND, port, "6", "100"])
    receiver.wait(timeout=10)
    names = {a.id: "A", b.id: "B"}
    by_socket = usage_table(prog["by_socket"], names)
    by_current = usage_table(prog["by_current"], names)
print("keyed by bpf_skb_cgroup_id(skb):")
print(by_socket.to_string())
print(f"\nreceived by the notebook's socket: {drain(sink)}")

# %% [markdown]
# Exact: A sent 6 packets of 128 bytes, B received those 6 and sent 3 of
# 328. Now the same traffic keyed by the running task:

# %%
print("packets B received, charged to B:",
      f"by socket {by_socket.loc['B', 'rx_packets']} of 6,",
      f"by current task {by_current.loc['B', 'rx_packets']} of 6")

# %% tags=["nbval-ignore-output"]
by_current

# %% [markdown]
# On loopback, the receive path runs right after the send, on the same
# CPU, still in the **sender's** context (or in a kernel thread, when the
# machine is busy). `bpf_get_current_cgroup_id()` in an ingress program
# therefore charges B's traffic to A, or to the root. The socket knows
# whose packet it is; the CPU does not. In a tracepoint on a system call
# the opposite holds: there the current task *is* the one to charge
# (Lab 9.2 uses both).
#
# A picture of the bill:

# %% tags=["nbval-ignore-output"]
ax = by_socket[["rx_bytes", "tx_bytes"]].plot.bar(figsize=(5, 3), rot=0)
ax.set_ylabel("bytes (IP packets)")
ax.set_title("network use per cgroup, keyed by bpf_skb_cgroup_id")
plt.tight_layout()

# %% [markdown]
# ## 9.7 Connections: refuse or rewrite `connect()`
#
# A `sock_addr` program attached to `connect4` runs inside the `connect()`
# system call, before any packet exists. `ctx->user_ip4` and
# `ctx->user_port` hold the destination the process asked for, in network
# byte order. Return `0` and `connect()` fails with `EPERM`; return `1` and
# the connection goes on **to whatever address is now in `ctx`**. Writing
# it is how Kubernetes' eBPF data planes turn a service address into a
# backend without NAT on every packet: the application never knows.
#
# This program refuses connections to `127.0.0.2` and sends connections
# meant for `127.0.0.3` to `127.0.0.1` instead (same port).

# %%
CONNECT = r"""
int connect_policy(struct bpf_sock_addr *ctx) {
    if (ctx->user_ip4 == htonl(0x7f000002))         /* 127.0.0.2: refused */
        return 0;
    if (ctx->user_ip4 == htonl(0x7f000003))         /* 127.0.0.3: rewritten */
        ctx->user_ip4 = htonl(0x7f000001);
    return 1;
}
"""

CONNECT_TO = """
port = int(sys.argv[1])
for addr in ["127.0.0.1", "127.0.0.2", "127.0.0.3"]:
    def go():
        with socket.create_connection((addr, port), timeout=1) as s:
            return "connected to " + s.getpeername()[0]
    attempt(f"connect to {addr}", go)
"""

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 0))          # listens on every 127.x address
server.listen(16)
with ScratchCgroup("connect") as cg, Program(CONNECT) as prog:
    cg.attach(prog, "connect_policy", "connect4")
    both_ways(cg, CONNECT_TO, server.getsockname()[1])
server.close()

# %% [markdown]
# Inside the cgroup, `127.0.0.2` is refused at once, and the connection
# to `127.0.0.3` really lands on `127.0.0.1` (even `getpeername()` says
# so; a `getpeername4` program could hide that too). Outside, each
# connection goes where it was told. `sock_addr` programs must be loaded
# knowing their hook (the *expected attach type*); `cg.attach` passes it.

# %% [markdown]
# ### The side doors: `sendto()`, IPv6 and v4-mapped addresses
#
# A `connect4` program judges one system call of one address family. A
# process in the cgroup has three ways around it:
#
# * **`sendto()`** on an unconnected UDP socket never calls `connect()`;
#   the hook that sees the address is `sendmsg4`;
# * **IPv6**: `connect()` on an `AF_INET6` socket runs `connect6`, never
#   `connect4`;
# * **v4-mapped addresses**: an `AF_INET6` socket may connect to
#   `::ffff:127.0.0.2`, and the kernel then talks IPv4 to `127.0.0.2`. For
#   `connect()`, only `connect6` runs, and it sees the address in its
#   IPv6 form (`ctx->user_ip6`). A UDP `sendto()` to such an address goes
#   through the IPv4 send path, where `sendmsg4` sees `127.0.0.2`.
#
# The cell tries all three against the `connect4`-only policy of above:

# %%
SIDE_DOORS = """
port = int(sys.argv[1])
def tcp(family, addr):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        s.connect((addr, port))
def udp(family, addr):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", (addr, port))
attempt("TCP connect 127.0.0.2", lambda: tcp(socket.AF_INET, "127.0.0.2"))
attempt("TCP connect ::ffff:127.0.0.2", lambda: tcp(socket.AF_INET6, "::ffff:127.0.0.2"))
attempt("UDP sendto 127.0.0.2", lambda: udp(socket.AF_INET, "127.0.0.2"))
attempt("UDP sendto ::ffff:127.0.0.2", lambda: udp(socket.AF_INET6, "::ffff:127.0.0.2"))
"""

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 0))
server.listen(16)
with ScratchCgroup("doors") as cg, Program(CONNECT) as prog:
    cg.attach(prog, "connect_policy", "connect4")
    both_ways(cg, SIDE_DOORS, server.getsockname()[1])

# %% [markdown]
# Only the first attempt was refused. To close the doors, attach the same
# rule to every hook that sees a destination, and read a v4-mapped IPv6
# address (`::ffff:a.b.c.d`: 80 zero bits, 16 one bits, then the IPv4
# address) as the IPv4 address it is. BCC loads a function once, for one
# hook, so each hook gets its own small function around a shared rule:

# %%
CLOSED = r"""
static __always_inline int allowed_ip4(u32 ip4) {     /* network byte order */
    return ip4 != htonl(0x7f000002);
}
static __always_inline int allowed_ip6(struct bpf_sock_addr *ctx) {
    if (ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
        ctx->user_ip6[2] == htonl(0x0000ffff))         /* ::ffff:a.b.c.d */
        return allowed_ip4(ctx->user_ip6[3]);
    return 1;                                          /* a real IPv6 address */
}
int connect4_rule(struct bpf_sock_addr *ctx) { return allowed_ip4(ctx->user_ip4); }
int sendmsg4_rule(struct bpf_sock_addr *ctx) { return allowed_ip4(ctx->user_ip4); }
int connect6_rule(struct bpf_sock_addr *ctx) { return allowed_ip6(ctx); }
int sendmsg6_rule(struct bpf_sock_addr *ctx) { return allowed_ip6(ctx); }
"""

with ScratchCgroup("doors") as cg, Program(CLOSED) as prog:
    for hook in ["connect4", "sendmsg4", "connect6", "sendmsg6"]:
        cg.attach(prog, f"{hook}_rule", hook)
    both_ways(cg, SIDE_DOORS, server.getsockname()[1])
server.close()

# %% [markdown]
# Now all four are refused inside the cgroup, and still work outside. A
# policy on *ports* has the same doors (Labs 9.1 and 9.3 close them): the
# port is in `ctx->user_port` in all four hooks. A policy on addresses
# must also decide what to do with real IPv6 destinations; here
# `127.0.0.2` has no IPv6 twin, so they pass. Packet-level hooks
# (`cgroup_skb`) see the packet as it leaves, IPv4 or IPv6, whichever
# system call produced it: there the door to watch is the IPv6 header.

# %% [markdown]
# ## 9.8 Devices: the cgroup v2 device controller *is* a BPF program
#
# Version 1 cgroups had `devices.allow` and `devices.deny` files. Version 2
# has none: access to device nodes is decided by a `BPF_PROG_TYPE_CGROUP_DEVICE`
# program, which is exactly what systemd (`DeviceAllow=`) and container
# runtimes install. It runs when a process opens a device node or creates
# one with `mknod`. `ctx->access_type` packs the device type in its low 16
# bits (`BPF_DEVCG_DEV_CHAR`, `BPF_DEVCG_DEV_BLOCK`) and the access in its
# high 16 bits (`BPF_DEVCG_ACC_READ`, `_WRITE`, `_MKNOD`).
#
# This one refuses the character device 1:5, `/dev/zero`, whatever the
# access, and records what it was asked.

# %%
DEVICE = r"""
struct access_t { u32 major; u32 minor; u32 access; };
BPF_HASH(asked, struct access_t, u64);

int device_policy(struct bpf_cgroup_dev_ctx *ctx) {
    struct access_t a = {ctx->major, ctx->minor, ctx->access_type >> 16};
    asked.increment(a);
    if ((ctx->access_type & 0xFFFF) == BPF_DEVCG_DEV_CHAR && ctx->major == 1 && ctx->minor == 5)
        return 0;                                   /* /dev/zero: refused */
    return 1;
}
"""

DEVICES = """
attempt("read /dev/zero", lambda: os.close(os.open("/dev/zero", os.O_RDONLY)))
attempt("write /dev/null", lambda: os.close(os.open("/dev/null", os.O_WRONLY)))
node = sys.argv[1]
attempt("mknod c 1 5 (a new /dev/zero)",
        lambda: (os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 5)), os.unlink(node)) and None)
"""

with ScratchCgroup("device") as cg, Program(DEVICE) as prog:
    cg.attach(prog, "device_policy", "device")
    both_ways(cg, DEVICES, f"/tmp/ebt-zero-{os.getpid()}")
    asked = {(k.major, k.minor, k.access): v.value for k, v in prog["asked"].items()}

ACCESS = {1: "mknod", 2: "read", 4: "write"}
print("\nthe program was asked (inside only):")
for (major, minor, access), n in sorted(asked.items()):
    if (major, minor) in [(1, 3), (1, 5)]:
        how = "+".join(name for bit, name in ACCESS.items() if access & bit)
        print(f"  char {major}:{minor} {how}: {n}")

# %% [markdown]
# `mknod` is refused too. A node made elsewhere would not open the door by
# itself: the program judges every open by the device *numbers*, wherever
# the node lives. But a node the sandbox made stays behind, and a process
# outside the cgroup, where this program does not run, can open it.
# (On a hybrid machine like this one, the v1 `devices` controller still
# applies as well; both must allow.)

# %% [markdown]
# ## 9.9 Sysctls: guard the kernel's settings
#
# A `BPF_PROG_TYPE_CGROUP_SYSCTL` program runs on each read and write of a
# file under `/proc/sys`. `bpf_sysctl_get_name()` gives the name
# (`kernel/hostname`; with the flag `BPF_F_SYSCTL_BASE_NAME` just
# `hostname`), `ctx->write` says which way, and for writes
# `bpf_sysctl_get_new_value()` / `bpf_sysctl_set_new_value()` read or
# replace what is being written.
#
# Strings are awkward in BPF, maps are not: the names to refuse live in a
# hash map whose key is the zero-padded name. This program refuses
# **writes** to `kernel/hostname` and logs every access it judged. The
# writes happen in a private UTS namespace (`unshare --uts`), so the
# machine's own host name stays as it is even outside the cgroup.

# %%
SYSCTL = r"""
struct name_t { char name[64]; };
struct seen_t { char name[64]; u32 write; };
BPF_HASH(no_write, struct name_t, u8);          /* filled from Python */
BPF_HASH(seen, struct seen_t, u64);

int sysctl_policy(struct bpf_sysctl *ctx) {
    struct name_t key = {};
    struct seen_t s = {};
    if (bpf_sysctl_get_name(ctx, key.name, sizeof(key.name), 0) < 0)
        return 1;
    __builtin_memcpy(s.name, key.name, sizeof(s.name));
    s.write = ctx->write;
    seen.increment(s);
    if (ctx->write && no_write.lookup(&key))
        return 0;
    return 1;
}
"""

SYSCTLS = """
def read(name):
    with open("/proc/sys/" + name) as f:
        f.read()

def write(name, value):
    fd = os.open("/proc/sys/" + name, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)

attempt("read kernel/hostname", lambda: read("kernel/hostname"))
attempt("write kernel/hostname", lambda: write("kernel/hostname", "sandboxed"))
attempt("write kernel/domainname", lambda: write("kernel/domainname", "sandboxed"))
"""

with ScratchCgroup("sysctl") as cg, Program(SYSCTL) as prog:
    key = prog["no_write"].Key()
    key.name = b"kernel/hostname"
    prog["no_write"][key] = prog["no_write"].Leaf(1)
    cg.attach(prog, "sysctl_policy", "sysctl")
    both_ways(cg, SYSCTLS, private_uts=True)
    seen = {(k.name.decode(), k.write): v.value for k, v in prog["seen"].items()}
print("\nthe program judged (inside only):")
for (name, write), n in sorted(seen.items()):
    print(f"  {'write' if write else 'read '} {name}: {n}")

# %% [markdown]
# Only the write to `kernel/hostname` was refused; reading it, and writing
# its neighbour `kernel/domainname`, went on. The program sees each
# `read()` system call, and Python's `f.read()` makes two: one for the
# text, one more that finds the end of the file.

# %% [markdown]
# ## 9.10 Inheritance, several programs, and what the kernel lists
#
# A program attached to a cgroup runs for all its descendants. How that
# combines with programs attached further down is set by a flag at attach
# time:
#
# | flag | meaning |
# |---|---|
# | none | one program on this hook; descendants cannot attach their own |
# | `BPF_F_ALLOW_OVERRIDE` | a descendant's program *replaces* this one below it |
# | `BPF_F_ALLOW_MULTI` | several programs per hook; a descendant's run **as well**, and all must allow |
#
# `cg.attach` uses `BPF_F_ALLOW_MULTI`, so policies stack like layers: the
# platform's at the top, the application's below. The kernel answers
# "what runs here?" with `BPF_PROG_QUERY`; `cg.programs()` asks it, and
# `effective=True` includes what is inherited.

# %%
LAYERS = r"""
int platform_rule(struct bpf_sock_addr *ctx) { return ctx->user_ip4 != htonl(0x7f000002); }
int app_rule(struct bpf_sock_addr *ctx)      { return ctx->user_ip4 != htonl(0x7f000003); }
"""

server = socket.socket()
server.bind(("0.0.0.0", 0))
server.listen(16)
with ScratchCgroup("layers") as parent, Program(LAYERS) as prog:
    app = parent.child("app")
    parent.attach(prog, "platform_rule", "connect4")
    app.attach(prog, "app_rule", "connect4")
    both_ways(app, CONNECT_TO, server.getsockname()[1])
    print()
    print("attached to the parent:     ", [(h, n) for h, _, n in parent.programs()])
    print("attached to the child:      ", [(h, n) for h, _, n in app.programs()])
    print("what runs in the child:     ", [(h, n) for h, _, n in app.programs(effective=True)])
    cli = json.loads(subprocess.run(["bpftool", "-j", "cgroup", "show", str(app.path)],
                                    capture_output=True, text=True).stdout)
    print("bpftool cgroup show (child):", [(p["attach_type"], p["name"], p["attach_flags"]) for p in cli])
    prog_ids = [i for _, i, _ in app.programs(effective=True)]
server.close()
still_loaded = [i for i in prog_ids
                if subprocess.run(["bpftool", "prog", "show", "id", str(i)],
                                  capture_output=True).returncode == 0]
print("after the with block, programs still loaded:", len(still_loaded))

# %% [markdown]
# In the child, both layers hold: the platform's rule refuses `127.0.0.2`,
# the application's own rule refuses `127.0.0.3`, and `127.0.0.1` passes
# both. Outside, nothing is refused.
#
# Closing detached both programs (children first), and closing the
# `Program` unloaded them. Had the process died instead, removing the
# cgroup directory would have released the attachments: a cgroup holds a
# reference on each program attached to it, and drops them when it goes.

# %% [markdown]
# ### The same with bpftool
#
# `cg.attach` is one `BPF_PROG_ATTACH` system call. The standard tools do
# it in two steps: `bpftool prog load` loads a clang-compiled object and
# pins the program in the BPF file system (a program needs a holder once
# the loading command exits), and `bpftool cgroup attach` attaches the
# pinned program to a cgroup directory. Here the cgroup is a scratch one,
# and the pin goes under the course's directory so that `ebpf-tutor sweep`
# would find it after a crash.

# %%
CONNECT_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("cgroup/connect4")
int refuse_127_0_0_2(struct bpf_sock_addr *ctx)
{
    return ctx->user_ip4 != bpf_htonl(0x7f000002);
}

char LICENSE[] SEC("license") = "GPL";
"""
workdir = Path(tempfile.mkdtemp(prefix="ebt-ch09-"))
(workdir / "connect.bpf.c").write_text(CONNECT_C)


shell = shell_in(workdir)   # prints each command, returns its output


shell("clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu "
      "-c connect.bpf.c -o connect.bpf.o")
print("connect.bpf.o written:", (workdir / "connect.bpf.o").exists())

# %%
server = socket.socket()
server.bind(("0.0.0.0", 0))
server.listen(16)
pinned = pin_path("connect4")
with ScratchCgroup("bpftool") as cg:
    names = {"pin": pinned, "cgroup": cg.path}
    try:
        shell(f"bpftool prog load connect.bpf.o {pinned}", **names)
        shell(f"bpftool cgroup attach {cg.path} connect4 pinned {pinned} multi", **names)
        listed = json.loads(shell(f"bpftool -j cgroup show {cg.path}", **names))
        print("  ", [(p["attach_type"], p["name"], p["attach_flags"]) for p in listed])
        both_ways(cg, CONNECT_TO, server.getsockname()[1])
        shell(f"bpftool cgroup detach {cg.path} connect4 pinned {pinned}", **names)
        left = shell(f"bpftool -j cgroup show {cg.path}", **names).strip()
        print("   attached now:", json.loads(left or "[]"))
    finally:
        pinned.unlink(missing_ok=True)               # the last reference: the program goes
server.close()

# %% [markdown]
# The same verdicts as with `cg.attach`. The attachment outlived the
# `bpftool` process that made it: a cgroup attachment is held by the
# cgroup, not by a file descriptor. `bpftool cgroup tree` shows every
# attachment of the whole hierarchy at once.

# %% [markdown]
# ## 9.11 What does a policy check cost?
#
# Two measurements. The kernel can time every run of a program
# (`BPF_ENABLE_STATS`, here through libbpf's `bpf_enable_stats()`: the
# counting stops when its descriptor is closed). And from user space, we
# time `connect()` calls on a UDP socket (no packets: just the system call
# and the policy) with and without a `connect4` program.
#
# A single timing of each is worth little on a shared machine: two runs of
# the *same* loop can differ by a factor of two, depending on which CPU it
# got, what else ran, the CPU's clock. So the cell alternates: 11 rounds,
# each timing the loop without the program, then with it (attached just
# for that run), each run the median of 5 batches of 2000 calls. Then we
# compare the medians of the rounds, next to their spread.

# %%
ALLOW = r"""
int allow_all(struct bpf_sock_addr *ctx) {
    return ctx->user_ip4 != htonl(0x7f000002);
}
"""
LOOP = """
import socket, statistics, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
batches = []
for _ in range(5):
    start = time.perf_counter()
    for _ in range(2000):
        s.connect(("127.0.0.1", 9))
    batches.append((time.perf_counter() - start) / 2000 * 1e9)
print(statistics.median(batches))
"""
ROUNDS = 11

timings = {"without": [], "with": []}
with ScratchCgroup("cost") as cg, Program(ALLOW) as prog:
    stats_fd = libbpf().bpf_enable_stats(0)          # BPF_STATS_RUN_TIME
    try:
        for _ in range(ROUNDS):
            timings["without"].append(float(cg.run([sys.executable, "-c", LOOP]).stdout))
            with cg.attach(prog, "allow_all", "connect4") as attachment:
                timings["with"].append(float(cg.run([sys.executable, "-c", LOOP]).stdout))
                prog_id = cg.programs()[0][1]
        info = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                                         capture_output=True, text=True).stdout)
    finally:
        os.close(stats_fd)
per_check = info["run_time_ns"] / max(info["run_cnt"], 1)
print(f"program runs: {info['run_cnt']} (= {ROUNDS} rounds x 5 x 2000 calls: "
      f"{info['run_cnt'] == ROUNDS * 5 * 2000})")

# %% tags=["nbval-ignore-output"]
cost = pd.DataFrame({k: pd.Series(v) for k, v in timings.items()})
print(f"in the kernel: {per_check:.0f} ns per policy check "
      f"-> {1e9 / per_check / 1e6:.1f} million checks per second per core")
print("connect() from Python, ns per call over the rounds:")
print(cost.describe().loc[["min", "50%", "max"]].rename(index={"50%": "median"}).round(0).to_string())
print(f"difference of the medians: {cost['with'].median() - cost['without'].median():.0f} ns; "
      f"ranges overlap: {cost['with'].min() <= cost['without'].max()}")

# %% [markdown]
# Read it in this order. The kernel's own counter times the program alone:
# tens of nanoseconds per run, many millions of checks per second per
# core, well past the "1 million policy checks per second" the course
# outline promises.
#
# The difference of the medians is what a caller pays for the hook as a
# whole, and you should expect it to be larger than the program's time:
# with a `connect4` program attached, a UDP `connect()` also takes the
# socket lock around the hook, finds the cgroup's array of programs and
# sets up the run, and (while `BPF_ENABLE_STATS` is on) reads the clock
# twice per run.
#
# Then look at the min and max of each column. On a shared machine one and
# the same loop can vary by more than that difference from one run to the
# next, which is why a single pair of runs (one without, one with) can show
# the program "costing" several microseconds, or nothing. The lesson: time
# the kernel part with the kernel's own counters, and time the rest only
# with repetitions, interleaved, and medians.

# ## Recap
#
# * A cgroup is "this application"; a program attached to it runs for every
#   process in it and below it, and its return value is a verdict.
# * `cgroup_skb` sees packets (from the IP header), `sock_addr` sees
#   `connect()`/`bind()`/`sendto()` and may rewrite the address, `device`
#   sees device nodes (the v2 device controller), `sysctl` sees `/proc/sys`.
# * Always check a policy both ways: denied inside, allowed outside, and
#   allowed things still allowed inside. And check its side doors: a
#   `connect4` rule alone misses `sendto()` (`sendmsg4`), IPv6 and
#   v4-mapped addresses (`connect6`, `sendmsg6`).
# * To account per cgroup, key by cgroup id: `bpf_skb_cgroup_id(skb)` for
#   packets, `bpf_get_current_cgroup_id()` in system calls.
# * `ScratchCgroup` keeps experiments off the machine's own cgroups, and
#   detaches, kills and removes everything at the end.
#
# **Questions to test yourself**
#
# 1. A datagram sent with `sendto()` on an unconnected UDP socket: which of
#    `connect4`, `sendmsg4` and `egress` see it?
# 2. Why would `bpf_get_current_cgroup_id()` in an *egress* program be right
#    most of the time, and in an *ingress* program wrong most of the time?
# 3. Your container must not use `/dev/kmsg` (char 1:11). Which hook, which
#    test on `ctx`, and why must `mknod` be refused too?
# 4. A cgroup has a `connect4` program attached without flags. What happens
#    when a child cgroup tries to attach its own? And with `BPF_F_ALLOW_MULTI`?
#
# <details><summary>Answers (try first, then click to open)</summary>
#
# 1. `sendmsg4` (it runs in `sendto()`/`sendmsg()` when the call names a
#    destination on a socket that is not connected) and `egress` (every
#    packet the cgroup's sockets send). `connect4` does not: there is no
#    `connect()`. (Sent from an `AF_INET6` socket to `::ffff:a.b.c.d`, the
#    datagram still takes the IPv4 path: `sendmsg4` and `egress` again.)
# 2. Egress hooks usually run in the system call of the process that sends,
#    so the current task is the sender, whose socket the packet carries.
#    Not always: TCP retransmissions, ACKs and data released later by a
#    timer go out from softirq or a kernel thread. Ingress runs where the
#    packet is received, in softirq: on loopback still in the sender's
#    context (section 9.6), otherwise in whatever task the interrupt
#    found, or `ksoftirqd`; almost never the receiving process.
# 3. Hook `"device"` (`BPF_PROG_TYPE_CGROUP_DEVICE`); return 0 when
#    `(ctx->access_type & 0xFFFF) == BPF_DEVCG_DEV_CHAR && ctx->major == 1 &&
#    ctx->minor == 11`, whatever the access bits. The open of any node
#    1:11 is refused, wherever the node lives; `mknod` must be refused too
#    so that the container cannot leave a node behind that a process
#    outside the cgroup (where the program does not run) would open
#    (section 9.8).
# 4. Without flags, the parent's program is the only one allowed on that
#    hook below it: the child's attach fails with `EPERM`. If the parent
#    attached with `BPF_F_ALLOW_OVERRIDE`, the child's program replaces the
#    parent's for the child's subtree. With `BPF_F_ALLOW_MULTI`, the
#    child's attach succeeds and both run for the child's processes, and
#    every one must allow (section 9.10).
#
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 9.1 | a network policy enforcer: `connect4` refuses and redirects ports, egress drops UDP to blocked ports | `labs/ch09/lab_9_1_policy_enforcer.ipynb` |
# | 9.2 | a per-cgroup resource monitor: packets, bytes and `sendto()` calls per cgroup id | `labs/ch09/lab_9_2_resource_monitor.ipynb` |
# | 9.3 | an application sandbox: device + connect + sysctl policies from maps | `labs/ch09/lab_9_3_app_sandbox.ipynb` |
#
# Each lab ends with a check cell that runs its own workload inside a fresh
# scratch cgroup *and* outside it. `ebpf-tutor progress` shows what you have
# passed; the solutions are in `solutions/ch09/`.
