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
# # Chapter 2: BPF maps
#
# **After this chapter you will be able to**
#
# * pick the right map type for a job: hash, array, per-CPU, LRU, LPM trie,
#   ring buffer, stack trace;
# * read any map from Python as a pandas DataFrame, and write to it;
# * count from many CPUs at once without losing updates (atomic adds or
#   per-CPU maps), and avoid the per-CPU hash trap of BCC's `increment()`;
# * draw a log2 histogram that was filled inside the kernel;
# * collect and symbolize stack traces, and draw them as a flame graph;
# * explain when the kernel frees a map, and keep one alive with a pin, from
#   Python and with `bpftool`.
#
# Run the cells in order, top to bottom, with the **eBPF (root)** kernel.

# %% [markdown]
# ## 2.1 What a map is
#
# A BPF program runs for a few hundred nanoseconds and then forgets
# everything on its stack. Whatever must persist (a count, a histogram, the
# last time a process was seen) lives in a **map**: a key/value store that
# the kernel owns.
#
# BCC 0.26 gives you no global variables: it does not relocate a C global's
# address (the load stays `r1 = 0x0`), so the verifier rejects a program
# that uses one, and everything goes through maps declared with its macros.
# That is a limit of BCC, not of BPF. With libbpf (Linux 5.2+), a
# global variable *is* a map: the compiler puts globals in the `.bss`,
# `.data` and `.rodata` sections, and libbpf turns each section into a
# one-entry array map that the program and user space both read and write.
#
# * A map has a **type** (how it is stored and looked up), a **key size**, a
#   **value size** and a **maximum number of entries**, all fixed when it is
#   created.
# * Programs reach it through helpers: `bpf_map_lookup_elem`,
#   `bpf_map_update_elem`, `bpf_map_delete_elem`. BCC wraps them as methods:
#   `counts.lookup(&key)`, `counts.update(&key, &value)`, `counts.increment(key)`.
# * User space reaches the same map through the `bpf()` system call on a file
#   descriptor. In Python, `prog["counts"]` is that map, and behaves like a
#   dict.
#
# ```mermaid
# flowchart LR
#     P1["program A<br/>(tracepoint)"] -->|"update"| M[("map<br/>key → value")]
#     P2["program B<br/>(socket filter)"] -->|"lookup"| M
#     M <-->|"bpf() syscall<br/>lookup / update / delete / iterate"| U["Python"]
#     F["/sys/fs/bpf/... pin"] -.->|"keeps alive"| M
# ```
#
# | type | BCC macro | key → value | good for |
# |---|---|---|---|
# | hash | `BPF_HASH` | any → any | counts per pid, per name, per flow |
# | array | `BPF_ARRAY`, `BPF_HISTOGRAM` | index `0..N-1` → value | fixed slots, histograms, configuration |
# | per-CPU array / hash | `BPF_PERCPU_ARRAY`, `BPF_PERCPU_HASH` | one value *per CPU* | hot counters without atomic operations |
# | LRU hash | `BPF_TABLE("lru_hash", ...)` | any → any, oldest evicted | tables that must never fill up |
# | LPM trie | `BPF_LPM_TRIE` | prefix → value, longest match | IP address ranges, routing-like rules |
# | ring buffer | `BPF_RINGBUF_OUTPUT` | a stream of events | sending records to user space |
# | stack trace | `BPF_STACK_TRACE` | stack id → addresses | profilers |

# %%
import ctypes as ct
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from bcc import PerfSWConfig, PerfType

from ebpf_tutor import EventCollector, Program, log2_hist_df, plot_log2_hist, table_df
from ebpf_tutor import pin

# %% [markdown]
# Other processes run on this machine too. To get results that are exact,
# every program in this chapter only records what *this notebook's thread*
# does: its thread id is handed to the C code as a macro, `ME`, with the
# compiler flag `-DME=...`.

# %%
ME = threading.get_native_id()
ONLY_ME = [f"-DME={ME}"]
DEV_NULL = os.open("/dev/null", os.O_WRONLY)    # a file we can write to for free

# %% [markdown]
# ## 2.2 Hash maps
#
# A hash map takes any fixed-size key. Here the key is a file name, and the
# value counts how often this thread opened that file. `increment(key)`
# looks the key up and adds one to the value; on a plain `BPF_HASH` it
# creates a missing key (with the value 1). The addition is a plain
# `*value += 1`, which is safe here because only one thread of ours is
# counted; §2.4 shows what it does when two CPUs update the same value.

# %%
COUNT_OPENS = r"""
struct fname_t { char name[64]; };
BPF_HASH(opens, struct fname_t, u64);

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    if ((u32)bpf_get_current_pid_tgid() != ME) return 0;    // our thread only
    struct fname_t key = {};
    bpf_probe_read_user_str(&key.name, sizeof(key.name), args->filename);
    opens.increment(key);
    return 0;
}
"""

# %% [markdown]
# The workload: three files in a fresh folder, opened 3, 1 and 5 times.

# %%
folder = Path(tempfile.mkdtemp(prefix="ebt-ch02-"))
plan = {"alpha.txt": 3, "beta.txt": 1, "gamma.txt": 5}
for name in plan:
    (folder / name).touch()

with Program(COUNT_OPENS, cflags=ONLY_ME) as prog:
    for name, times in plan.items():
        for _ in range(times):
            os.close(os.open(folder / name, os.O_RDONLY))
    opens = table_df(prog["opens"])

opens["name"] = opens["name"].map(lambda p: Path(p).name)
opens

# %% [markdown]
# Python can also write to a map, delete from it, and look keys up. The key
# type is a ctypes struct that BCC built from the C declaration:
# `table.Key`, and the value type is `table.Leaf`.

# %%
with Program(COUNT_OPENS, cflags=ONLY_ME) as prog:
    opens = prog["opens"]
    key = opens.Key(str(folder / "alpha.txt").encode())
    opens[key] = opens.Leaf(100)                  # written from Python
    os.close(os.open(folder / "alpha.txt", os.O_RDONLY))   # +1 from the kernel
    print("alpha.txt:", opens[key].value)
    del opens[key]
    print("after delete:", len(opens), "entries")

# %% [markdown]
# ## 2.3 Arrays, and a histogram
#
# An array map has keys `0 .. max_entries-1`, all present from the start and
# set to zero; entries cannot be deleted. Lookups are a bounds check and an
# offset: the fastest map there is.
#
# `BPF_HISTOGRAM(name)` is an array of 64 counters. With `bpf_log2l(v)` as the
# index, slot *s* counts the values with 2<sup>s-1</sup> ≤ v < 2<sup>s</sup>:
# a log2 histogram, built inside the kernel, that costs one array increment
# per event. One edge: BCC's `helpers.h` defines `bpf_log2l(v)` as
# `bpf_log2(v) + 1`, and `bpf_log2(0)` is 0 like `bpf_log2(1)`, so **v = 0
# lands in slot 1** together with v = 1, and slot 0 stays empty. Count zeros
# separately if they matter. Here: the sizes of this thread's writes to
# `/dev/null` (none of them 0).

# %%
WRITE_SIZES = r"""
BPF_HISTOGRAM(sizes);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    if ((u32)bpf_get_current_pid_tgid() != ME || args->fd != DEV_NULL) return 0;
    sizes.increment(bpf_log2l(args->count));
    return 0;
}
"""
flags = ONLY_ME + [f"-DDEV_NULL={DEV_NULL}"]

# %% [markdown]
# The workload writes 2,000 buffers whose sizes follow a log-normal
# distribution (seeded, so the histogram is the same on every run).

# %%
rng = np.random.default_rng(2)
write_sizes = rng.lognormal(mean=7, sigma=1.5, size=2000).astype(int) + 1

with Program(WRITE_SIZES, cflags=flags) as prog:
    for n in write_sizes:
        os.write(DEV_NULL, bytes(int(n)))
    hist = log2_hist_df(prog["sizes"])

hist[hist["count"] > 0]

# %% [markdown]
# A table of ranges is hard to read; a bar chart is not.

# %% tags=["nbval-ignore-output"]
plot_log2_hist(hist, unit="bytes", title="write() sizes, counted in the kernel");

# %% [markdown]
# The kernel's numbers agree with what Python knows it wrote:

# %%
expected = Counter(int(n).bit_length() for n in write_sizes)    # bit_length == log2 slot
print("kernel histogram == Python's own count:",
      dict(zip(hist["slot"], hist["count"])) == {s: expected.get(s, 0) for s in hist["slot"]})

# %% [markdown]
# ## 2.4 Two CPUs, one counter
#
# BCC's `increment()` compiles to a lookup and then `*value += 1`: a load, an
# add and a store. When two CPUs run the program at the same moment on the
# same key, both can load the same old value, and one of the two additions
# is lost. There are two cures:
#
# * `atomic_increment()` does the add with one atomic instruction
#   (`__sync_fetch_and_add`, an atomic add that the x86 JIT emits with a
#   `lock` prefix). Always right, but the CPUs now fight over one cache line, which
#   costs on a busy machine.
# * A **per-CPU** map gives each CPU its own copy of every value: each CPU
#   adds to its own, with no contention and no atomic instruction, and user
#   space sums the copies when it reads.
#
# To see the race, a small C program runs two threads, pinned to two
# different CPUs, each making 200,000 empty `write()` calls. One program
# counts them three ways: slot 0 of an array with `increment`, slot 1 with
# `atomic_increment`, and a per-CPU array.

# %%
RACER_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
enum { PER_THREAD = 200000 };
static int fd;
static void *writer(void *cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((long)cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
    for (int i = 0; i < PER_THREAD; i++)
        write(fd, "", 0);
    return NULL;
}
int main(void) {
    char go;
    fd = open("/dev/null", O_WRONLY);
    if (read(0, &go, 1) != 1) return 1;          /* wait until the counter is attached */
    pthread_t t;
    pthread_create(&t, NULL, writer, (void *)1L);
    writer((void *)0L);
    pthread_join(t, NULL);
    return 0;
}
"""
racer = folder / "racer"
(folder / "racer.c").write_text(RACER_C)
subprocess.run(["gcc", "-O2", "-pthread", "-o", racer, folder / "racer.c"], check=True)

RACE = r"""
BPF_ARRAY(shared, u64, 2);
BPF_PERCPU_ARRAY(percpu, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET) return 0;
    shared.increment(0);                   // load, add, store
    shared.atomic_increment(1);            // one atomic add
    percpu.increment(0);                   // this CPU's own copy
    return 0;
}
"""

# %%
proc = subprocess.Popen([racer], stdin=subprocess.PIPE)
with Program(RACE, cflags=[f"-DTARGET={proc.pid}"]) as prog:
    proc.communicate(b"g")
    plain, atomic = prog["shared"][0].value, prog["shared"][1].value
    per_cpu_total = sum(v for v in prog["percpu"][0])
want = 2 * 200_000
print(f"atomic_increment counted {want:,} writes exactly:", atomic == want)
print(f"the per-CPU copies add up to {want:,} exactly:    ", per_cpu_total == want)

# %% [markdown]
# And the plain `increment()`: how many it lost depends on how often the two
# threads ran at the very same moment, so it changes from run to run (and is
# 0 on a machine so busy that the two threads never ran together):

# %% tags=["nbval-ignore-output"]
print(f"increment() lost {want - plain} of {want:,} updates")

# %% [markdown]
# ### Per-CPU maps
#
# The per-CPU map above had one copy of its value per CPU.
# To see the copies, this thread writes 300 times while pinned to the first
# CPU, then 200 times on the second. The map holds a copy for every CPU the
# machine could have (how many depends on the machine); the table shows the
# two we wrote on, and the total over all of them.

# %%
PER_CPU = r"""
BPF_PERCPU_ARRAY(writes, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    if ((u32)bpf_get_current_pid_tgid() != ME || args->fd != DEV_NULL) return 0;
    writes.increment(0);
    return 0;
}
"""


def per_cpu_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Columns key, cpu0, cpu1, ..., total for a per-CPU map's table_df."""
    if "cpu0" in df:                           # already spread: `value` is the sum
        return df.rename(columns={"value": "total"})
    cpus = pd.DataFrame(df["value"].tolist(), index=df.index).add_prefix("cpu")
    return pd.concat([df.drop(columns="value"), cpus, cpus.sum(axis=1).rename("total")], axis=1)


cpus = sorted(os.sched_getaffinity(0))
with Program(PER_CPU, cflags=flags) as prog:
    for cpu, times in zip(cpus[:2], (300, 200)):
        os.sched_setaffinity(0, {cpu})
        for _ in range(times):
            os.write(DEV_NULL, b"x")
    os.sched_setaffinity(0, cpus)
    per_cpu = per_cpu_columns(table_df(prog["writes"]))
per_cpu[["key", *[f"cpu{c}" for c in cpus[:2]], "total"]]

# %% [markdown]
# ### The per-CPU hash trap
#
# A per-CPU *hash* needs one more care. BCC's `increment(key)` is written as
# "look the key up; if it is missing, insert 0 and add one", but BCC 0.26
# generates the insert only for a plain `BPF_HASH`: on a per-CPU hash (and
# on an LRU hash) a missing key stays missing, silently. The way out is `lookup_or_try_init(&key, &zero)`,
# which inserts when needed and returns a pointer to *this CPU's* copy.
# Both versions side by side, on the same events:

# %%
PER_CPU_HASH = r"""
BPF_PERCPU_HASH(with_increment, u32, u64);
BPF_PERCPU_HASH(with_init, u32, u64);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    if ((u32)bpf_get_current_pid_tgid() != ME || args->fd != DEV_NULL) return 0;
    u32 key = args->count;
    with_increment.increment(key);                 // the trap: never inserts

    u64 zero = 0;
    u64 *mine = with_init.lookup_or_try_init(&key, &zero);
    if (mine)
        *mine += 1;                                // this CPU's copy: no atomic needed
    return 0;
}
"""
with Program(PER_CPU_HASH, cflags=flags) as prog:
    for size in (1, 1, 2, 3, 3, 3):
        os.write(DEV_NULL, bytes(size))
    print("with increment():         ", len(prog["with_increment"]), "entries")
    print("with lookup_or_try_init():", len(prog["with_init"]), "entries")
    by_size = per_cpu_columns(table_df(prog["with_init"]))
by_size[["key", "total"]].sort_values("key")

# %% [markdown]
# ## 2.5 LRU hashes: maps that never fill up
#
# A hash map has a fixed maximum size. When it is full, `update` of a new key
# fails with `E2BIG`, and the program must cope. An **LRU hash** instead
# evicts the entry that was used least recently. Both with room for only 4
# keys, fed the write sizes 1, 2, 3, 4, 1, 5, 6 (size 1 is used again before 5
# and 6 arrive):

# %%
LRU = r"""
BPF_HASH(plain, u64, u64, 4);
BPF_TABLE("lru_hash", u64, u64, lru, 4);
BPF_ARRAY(refused, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    if ((u32)bpf_get_current_pid_tgid() != ME || args->fd != DEV_NULL) return 0;
    u64 size = args->count, one = 1;

    u64 *p = plain.lookup(&size);
    if (p) (*p)++;
    else if (plain.update(&size, &one) < 0) refused.increment(0);   // full: E2BIG

    u64 *l = lru.lookup(&size);                    // a lookup marks the key as used
    if (l) (*l)++;
    else lru.update(&size, &one);                  // full: the least recent one goes
    return 0;
}
"""
os.sched_setaffinity(0, cpus[:1])      # one CPU: the kernel keeps free lists per CPU
with Program(LRU, cflags=flags) as prog:
    for size in (1, 2, 3, 4, 1, 5, 6):
        os.write(DEV_NULL, bytes(size))
    plain = table_df(prog["plain"]).sort_values("key")
    lru = table_df(prog["lru"]).sort_values("key")
    refused = prog["refused"][0].value
os.sched_setaffinity(0, cpus)
print("plain hash keeps", plain["key"].tolist(), f"and refused {refused} inserts")
print("LRU hash keeps  ", lru["key"].tolist())

# %% [markdown]
# The plain hash kept the first four keys and refused 5 and 6. The LRU hash
# made room for 5 and 6 by evicting 2 and 3, the least recently used, and
# kept 1 because it had been used again. The kernel's LRU is an
# approximation, tuned for speed: it evicts in batches and keeps lists of
# free entries per CPU, so on a large, busy map "least recently used" means
# "one of the least recently used".

# %% [markdown]
# ## 2.6 LPM tries: longest prefix match
#
# A **longest-prefix-match trie** answers "which of my rules is the most
# specific one that covers this address?", which is what a router asks. Its
# key is a prefix length followed by the address bytes; a lookup with a full
# /32 key finds the longest stored prefix that contains the address.
#
# The rules are written from Python. The kernel side classifies each address
# this thread `connect()`s a UDP socket to (a UDP connect only sets the
# socket's default destination: no packet leaves the machine).

# %%
LPM = r"""
#include <linux/in.h>

struct prefix_t { u32 prefixlen; u32 addr; };       // addr in network byte order
BPF_LPM_TRIE(rules, struct prefix_t, u32, 64);
BPF_HASH(verdicts, u32, u32);                        // address -> rule number (0: none)

TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    if ((u32)bpf_get_current_pid_tgid() != ME) return 0;
    struct sockaddr_in sa = {};
    bpf_probe_read_user(&sa, sizeof(sa), args->uservaddr);
    if (sa.sin_family != AF_INET) return 0;
    struct prefix_t key = {.prefixlen = 32, .addr = sa.sin_addr.s_addr};
    u32 *rule = rules.lookup(&key);
    u32 verdict = rule ? *rule : 0;
    verdicts.update(&key.addr, &verdict);
    return 0;
}
"""

RULES = {1: "10.0.0.0/8", 2: "10.1.0.0/16", 3: "10.1.2.0/24", 4: "192.168.0.0/16"}
ADDRESSES = ["10.1.2.3", "10.1.9.9", "10.200.0.1", "192.168.7.7", "198.51.100.1"]


def as_u32(address: str) -> int:
    """The address's bytes in network order, read as this machine reads a u32."""
    return int.from_bytes(socket.inet_aton(address), sys.byteorder)


def prefix_key(table, cidr: str):
    net, bits = cidr.split("/")
    return table.Key(int(bits), as_u32(net))


with Program(LPM, cflags=ONLY_ME) as prog:
    rules = prog["rules"]
    for number, cidr in RULES.items():
        rules[prefix_key(rules, cidr)] = ct.c_uint32(number)
    for addr in ADDRESSES:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((addr, 9))
            except OSError:
                pass                       # no route: the tracepoint fired anyway
    verdicts = table_df(prog["verdicts"], sort=False)

verdicts["address"] = verdicts["key"].map(lambda a: socket.inet_ntoa(int(a).to_bytes(4, sys.byteorder)))
verdicts["matched rule"] = verdicts["value"].map(lambda r: RULES.get(r, "(none)"))
verdicts.set_index("address").loc[ADDRESSES, ["matched rule"]]

# %% [markdown]
# `10.1.2.3` is inside all three `10.` rules and got the most specific one,
# the /24; `198.51.100.1` matched nothing. The byte order matters: the
# address in the key is in network order, the order it has on the wire, and
# the trie compares it bit by bit from the first byte.

# %% [markdown]
# ## 2.7 Ring buffers: a stream of events
#
# Counting in the kernel is cheapest, but sometimes you want each event: who
# opened what, in order. A **ring buffer** is a map that is a queue of
# records shared by all CPUs. The program *reserves* room for one record,
# fills it in place, and *submits* it; user space is woken up and reads the
# records in the order they were submitted.
#
# `EventCollector` copies each record as raw bytes and decodes a whole batch
# into a DataFrame in one numpy call.

# %%
OPEN_EVENTS = r"""
struct event_t { u32 flags; char fname[64]; };
BPF_RINGBUF_OUTPUT(events, 8);                       // 8 pages of 4 KiB

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    if ((u32)bpf_get_current_pid_tgid() != ME) return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) return 0;                                // full: the event is lost
    e->flags = args->flags;
    bpf_probe_read_user_str(&e->fname, sizeof(e->fname), args->filename);
    events.ringbuf_submit(e, 0);
    return 0;
}
"""
with Program(OPEN_EVENTS, cflags=ONLY_ME) as prog:
    collector = EventCollector(prog, "events")
    for name, mode in [("alpha.txt", os.O_RDONLY), ("beta.txt", os.O_WRONLY),
                       ("gamma.txt", os.O_RDWR), ("missing.txt", os.O_RDONLY)]:
        try:
            os.close(os.open(folder / name, mode))
        except FileNotFoundError:
            pass
    events = collector.drain()

ours = events[events["fname"].str.startswith(str(folder))].copy()   # Python opens files too
ours["file"] = ours["fname"].map(lambda p: Path(p).name)
ours["access"] = (ours["flags"] & 3).map({0: "read", 1: "write", 2: "read+write"})
ours[["file", "access"]].reset_index(drop=True)

# %% [markdown]
# Four opens, four events, in order, including the one that failed: the
# program ran at `sys_enter`, before the kernel looked for the file.
# (Chapter 13 compares ring buffers with the older perf buffers and
# measures both.)

# %% [markdown]
# ## 2.8 Stack trace maps
#
# A profiler asks "where is this process spending its time?". The answer
# comes from sampling: a perf event fires 99 times a second on each CPU, and
# the program records *where* the CPU was: the chain of return addresses on
# the stack. `BPF_STACK_TRACE` is a map from a small integer, the **stack
# id**, to up to 127 addresses; `get_stackid()` walks the current stack,
# stores it (identical stacks share one id) and returns the id. A hash then
# counts samples per (process, user stack id, kernel stack id).

# %%
PROFILE = r"""
struct sample_t { u32 pid; int user_stack; int kernel_stack; char comm[16]; };
BPF_HASH(samples, struct sample_t, u64, 4096);
BPF_STACK_TRACE(stacks, 4096);

int on_sample(void *ctx) {
    struct sample_t key = {.pid = bpf_get_current_pid_tgid() >> 32};
    if (key.pid != TARGET) return 0;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    key.user_stack = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    key.kernel_stack = stacks.get_stackid(ctx, 0);
    samples.increment(key);
    return 0;
}
"""

# %% [markdown]
# The target: `dd` copying zeros to `/dev/null` for one second. It spends most
# of its time in the kernel, producing zeros. `attach_perf_event` opens one
# CPU-clock event per CPU at 99 Hz (an odd rate, so that sampling does not
# march in step with periodic work) and attaches the program to each.

# %%
def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) that process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


dd = subprocess.Popen(["dd", "if=/dev/zero", "of=/dev/null", "bs=64k", "status=none"])
with Program(PROFILE, cflags=[f"-DTARGET={dd.pid}"]) as prog:
    prog.attach_perf_event(ev_type=PerfType.SOFTWARE, ev_config=PerfSWConfig.CPU_CLOCK,
                           fn_name="on_sample", sample_freq=99)
    dd_cpu = cpu_seconds(dd.pid)
    time.sleep(1)
    dd_cpu = cpu_seconds(dd.pid) - dd_cpu
    folded = Counter()
    for key, count in prog["samples"].items():
        user = ([prog.sym(a, key.pid).decode() for a in prog["stacks"].walk(key.user_stack)]
                if key.user_stack >= 0 else [])
        kernel = ([prog.ksym(a).decode() for a in prog["stacks"].walk(key.kernel_stack)]
                  if key.kernel_stack >= 0 else [])
        # root first, as flame graphs want it: user frames, then kernel frames
        folded[";".join(user[::-1] + kernel[::-1])] += count.value
dd.kill()
dd.wait()
print("stacks collected:", len(folded) > 0)

# %% [markdown]
# How many samples should there be? Not 99: the timer fires 99 times a
# second on *each CPU*, and a sample counts for `dd` only when `dd` is the
# task on that CPU at that moment. So the expected number is 99 × the CPU
# time `dd` got in that second, which on a shared machine can be much less
# than one second (here other work competes for the CPUs):

# %% tags=["nbval-ignore-output"]
print(f"{sum(folded.values())} samples; dd ran {dd_cpu:.2f} s of CPU in 1 s; "
      f"99 Hz x {dd_cpu:.2f} s = {99 * dd_cpu:.0f} expected")

# %% tags=["nbval-ignore-output"]
top = pd.DataFrame(folded.most_common(6), columns=["stack (root first)", "samples"])
top.style.set_properties(**{"text-align": "left"})

# %% [markdown]
# Each line is one *folded* stack, the input format of flame graphs. `prog.ksym`
# turns kernel addresses into function names (from `/proc/kallsyms`);
# `prog.sym(addr, pid)` does the same for a process's addresses, with the
# symbol tables of the binary and libraries mapped at that address.
#
# The user part is short: `dd` and Debian's libc are compiled without frame
# pointers, and `get_stackid` walks the user stack by following frame
# pointers, so it stops after the first frame. Lab 2.3 compiles its own
# target with `-fno-omit-frame-pointer` and gets whole stacks.

# %% [markdown]
# ### A flame graph
#
# A flame graph draws folded stacks as boxes: the root at the bottom, each
# frame on top of its caller, each box as wide as the samples that passed
# through it. Boxes of the same frame under the same parent are merged, so
# the wide towers are where the time went. Merging and drawing take a few
# lines of matplotlib (Brendan Gregg's `flamegraph.pl` draws the same from
# the same folded text, as SVG).

# %%
def flame_graph(folded: Counter, title: str = "", ax=None):
    """Draw folded stacks ("root;child;leaf" -> samples) as a flame graph."""
    tree: dict = {}
    for stack, n in folded.items():
        node = tree
        for frame in stack.split(";"):
            node = node.setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += n
            node = node["kids"]
    total = sum(folded.values())
    ax = ax or plt.subplots(figsize=(10, 4))[1]

    def draw(nodes: dict, x: float, depth: int) -> None:
        for frame, node in sorted(nodes.items()):
            width = node["n"] / total
            ax.barh(depth, width, left=x, height=0.9, color=plt.cm.autumn(zlib.crc32(frame.encode()) % 100 / 100),
                    edgecolor="white")
            if width > 0.04:
                ax.text(x + 0.003, depth, frame[: int(width * 120)], va="center", fontsize=7)
            draw(node["kids"], x, depth + 1)
            x += width

    draw(tree, 0.0, 0)
    ax.set_xlim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel(f"share of {total} samples")
    ax.set_title(title)
    return ax


# %% tags=["nbval-ignore-output"]
flame_graph(folded, "dd copying /dev/zero to /dev/null");

# %% [markdown]
# ## 2.9 The life of a map, and pins
#
# A map is a kernel object with a reference count. References are held by
#
# * open file descriptors (BCC holds one for each map it created);
# * programs that use the map (taken at load time, dropped when the program
#   is freed);
# * **pins**: files in the BPF filesystem, `/sys/fs/bpf`.
#
# When the count drops to zero, the kernel frees the map and its data. So
# closing a program normally throws its maps away (a moment later: a closed
# program is freed after an RCU grace period, and only then lets go of its
# maps; `pin.wait_map_gone` waits for that):

# %%
COUNT_GETPPID = r"""
BPF_HASH(calls, u32, u64);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((u32)bpf_get_current_pid_tgid() != ME) return 0;
    u32 key = 0;
    calls.increment(key);
    return 0;
}
"""


def map_alive(map_id: int) -> bool:
    """Ask bpftool, from the outside, whether the kernel still has this map."""
    return subprocess.run(["bpftool", "map", "show", "id", str(map_id)],
                          capture_output=True).returncode == 0


prog = Program(COUNT_GETPPID, cflags=ONLY_ME)
map_id = pin.map_info(prog["calls"].map_fd).id
print("while loaded, the map exists:", map_alive(map_id))
prog.close()
pin.wait_map_gone(map_id)
print("after close, the map exists:", map_alive(map_id))

# %% [markdown]
# A **pin** is a name for the map in `/sys/fs/bpf`. BCC 0.26 has no Python
# call for it, but libbpf, the library under BCC, does (`bpf_obj_pin`);
# `ebpf_tutor.bpfsys.pin` wraps it. Pins made by the course live in
# `/sys/fs/bpf/ebpf-tutor/`, named `<pid>-<n>-<name>`, so that a run that was
# killed before it cleaned up is swept away later.
#
# Count 5 calls, pin the map, close the program: the map survives, and can be
# read back, with libbpf or with `bpftool`.

# %%
prog = Program(COUNT_GETPPID, cflags=ONLY_ME)
for _ in range(5):
    os.getppid()
calls_pin = pin.Pin(prog["calls"], "calls")
map_id = calls_pin.info().id
prog.close()
print("program closed; map still exists:", map_alive(map_id))
print("pinned at", calls_pin.path)
calls_pin.df()

# %%
pin.bpftool_dump(calls_pin.path)[0]["formatted"]

# %% [markdown]
# `pin.Pin` is one system call, `bpf(BPF_OBJ_PIN)`. `bpftool` makes the same
# call from a shell, for any map the kernel has, found by its id: here a
# second pin of the same map, with a plain name of our choosing, and
# `bpftool map show pinned` looking the map up through that file.

# %%
bpftool_pin = Path("/sys/fs/bpf/ebt_ch02_calls")
bpftool_pin.unlink(missing_ok=True)
subprocess.run(["bpftool", "map", "pin", "id", str(map_id), str(bpftool_pin)], check=True)
shown = subprocess.run(["bpftool", "-j", "map", "show", "pinned", str(bpftool_pin)],
                       capture_output=True, text=True, check=True).stdout
print("bpftool sees the same map through its pin:", json.loads(shown)["id"] == map_id)
print(subprocess.run(["bpftool", "map", "dump", "pinned", str(bpftool_pin)],
                     capture_output=True, text=True).stdout.strip())
bpftool_pin.unlink()                          # rm removes a pin: bpffs files are names

# %% [markdown]
# In a shell that is:
#
# ```sh
# bpftool map show                          # find the map's id
# bpftool map pin id <id> /sys/fs/bpf/calls
# bpftool map show pinned /sys/fs/bpf/calls
# bpftool map dump pinned /sys/fs/bpf/calls
# rm /sys/fs/bpf/calls                      # unpin
# ```

# %% [markdown]
# A new program can take over a pinned map, with its data.
# `BPF_TABLE_PINNED(type, key, value, name, max_entries, path)` makes BCC
# open the map at `path` instead of creating a new one (and create and pin
# it there if there is none yet). Three more calls add to the five:

# %%
CONTINUE_COUNTING = COUNT_GETPPID.replace(
    "BPF_HASH(calls, u32, u64);",
    f'BPF_TABLE_PINNED("hash", u32, u64, calls, 10240, "{calls_pin.path}");')

with Program(CONTINUE_COUNTING, cflags=ONLY_ME) as prog:
    for _ in range(3):
        os.getppid()
    print("same map:", pin.map_info(prog["calls"].map_fd).id == map_id,
          "| calls:", prog["calls"][ct.c_uint32(0)].value)

# %% [markdown]
# Removing the pin drops the last reference, and the map is freed:

# %%
calls_pin.close()
pin.wait_map_gone(map_id)
print("after unpin, the map exists:", map_alive(map_id))

# %% [markdown]
# Pins are how long-running tools hand state across restarts, and how
# separate programs (an XDP program and a TC program, say) share one map.
# Chapter 23 builds a program lifecycle manager on them.

# %% [markdown]
# Before leaving, tidy up: the scratch files, and a last look for pins this
# notebook might have left behind.

# %%
os.close(DEV_NULL)
for p in folder.iterdir():
    p.unlink()
folder.rmdir()
print("pins left by this notebook:", pin.our_pins())

# %% [markdown]
# ## Recap
#
# * A map is a typed key/value store in the kernel, shared by programs and
#   user space; its type decides how it behaves when full, how it is looked
#   up and what it costs.
# * Hash for open-ended keys, array for fixed slots and histograms, per-CPU
#   for hot counters (with `lookup_or_try_init` on a per-CPU hash, not
#   `increment`), LRU when the key space is unbounded, LPM trie for prefixes,
#   ring buffer for individual events, stack trace map for profiles.
# * A value that several CPUs update needs `atomic_increment()` (or
#   `__sync_fetch_and_add`); BCC's `increment()` is a plain `+=` that loses
#   updates when two CPUs race. A per-CPU map needs neither.
# * A map lives while a file descriptor, a program or a pin refers to it.
#
# **Questions to test yourself**
#
# 1. Why is a per-CPU counter faster than a shared one, and what does user
#    space have to do to read it?
# 2. A hash map of 10,240 entries keyed by source IP is full. What happens to
#    the next new address, and what would change with an LRU hash?
# 3. In an LPM trie holding 10.0.0.0/8 and 10.1.0.0/16, which rule matches
#    10.1.200.7, and which 10.2.0.1?
# 4. Why are user stacks of most distribution binaries one frame deep?
# 5. A program that used a pinned map has been closed, and the pin removed.
#    What else could still keep the map alive?
#
# <details><summary>Answers (click to open)</summary>
#
# 1. Each CPU adds to its own copy, in its own cache line: no atomic
#    instruction, no cache line bouncing between CPUs, and no lost update
#    (a program is not migrated to another CPU while it runs). To read it,
#    user space gets one value per possible CPU and must combine them
#    (sum them for a counter); BCC returns the list, and `table_df` sums it.
# 2. `bpf_map_update_elem` of a new key fails with `E2BIG`: the address is
#    not recorded (existing keys can still be updated), and the program must
#    cope with the error. With an LRU hash the insert succeeds: the kernel
#    evicts an entry that has not been used recently to make room, so old,
#    quiet addresses are forgotten instead of new ones.
# 3. 10.1.200.7 is inside both prefixes and matches the longer one,
#    10.1.0.0/16. 10.2.0.1 is only inside 10.0.0.0/8, so that is its match.
# 4. `get_stackid` walks the user stack by following frame pointers, and
#    distributions build their binaries and libraries with
#    `-fomit-frame-pointer` (the compiler's default at `-O2` on x86-64): the
#    register holds no frame chain, so the walk stops after the first frame,
#    the address where the sample hit. (Some distributions, such as Fedora
#    38+ and Ubuntu 24.04, now build with frame pointers again.)
# 5. Another reference: another program that uses the map (a program takes
#    a reference to every map it uses, at load time), a file descriptor to it
#    in some process (`bpftool map show` lists the pids), another pin of it
#    under another path, or a map-in-map that holds it as an inner map.
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 2.1 | count `write()` calls per process in a hash map | `labs/ch02/lab_2_1_process_counter.ipynb` |
# | 2.2 | a log2 histogram of packet sizes from a socket filter, plotted | `labs/ch02/lab_2_2_packet_sizes.ipynb` |
# | 2.3 | a 99 Hz stack sampler with symbolized, folded stacks | `labs/ch02/lab_2_3_stack_traces.ipynb` |
#
# Each lab ends with a check cell. `ebpf-tutor progress` shows what you have
# passed; the solutions are in `solutions/ch02/`.
