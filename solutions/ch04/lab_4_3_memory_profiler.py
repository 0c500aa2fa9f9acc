# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 4.3: Memory profiler
#
# **Objective.** Follow one process's `malloc` and `free` calls with
# uprobes, and keep in a map `outstanding` how many bytes each process has
# allocated and not yet freed.
#
# **Expected observation.** The check compiles a small C program and starts
# two copies: the *target*, whose pid it gives to your `attach_probes(prog,
# pid)`, and a *decoy*. Each mallocs blocks of sizes the check chose at
# random (some small, some large enough for glibc to `mmap` them), frees
# some of them, and waits. The check then reads `outstanding[target pid]`:
# it must equal the bytes allocated minus the bytes freed, exactly. No other
# process may appear in the map.
#
# **You will use:** `attach_uprobe` / `attach_uretprobe` with `pid=`,
# `PT_REGS_PARM1` and `PT_REGS_RC`, three hash maps, and the map helpers.

# %% [markdown]
# ## Background
#
# A **uprobe** runs your program when a process executes a given address in
# a user-space binary, here the start of `malloc` in the C library; a
# **uretprobe** runs it when that function returns. BCC finds the address
# from the symbol name: `attach_uprobe(name="c", sym="malloc", fn_name=...)`
# (`"c"` means libc). With `pid=P` the probe fires only in process `P`;
# without it, in every process on the machine that calls `malloc`.
#
# Neither probe sees the whole story:
#
# | when | you know | you need |
# |---|---|---|
# | `malloc` starts (uprobe) | the size, `PT_REGS_PARM1(ctx)` | the address it will return |
# | `malloc` returns (uretprobe) | the address, `PT_REGS_RC(ctx)` | the size asked for |
# | `free` starts (uprobe) | the address, `PT_REGS_PARM1(ctx)` | the size of that block |
#
# So you stash the size under the thread id at entry, pick it up at return
# and remember `address -> size`, and at `free` look the address up to know
# how many bytes to subtract.

# %%
import subprocess
import time

from ebpf_tutor import Program, table_df
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program

# %% tags=["answer"]
PROGRAM = r"""
#include <uapi/linux/ptrace.h>

BPF_HASH(pending, u32, u64);      // thread id -> size asked of malloc
BPF_HASH(blocks, u64, u64);       // address -> size of a live block
BPF_HASH(outstanding, u32, s64);  // process id -> bytes allocated minus freed

int on_malloc_enter(struct pt_regs *ctx) {
    // TODO 1: stash the requested size under the thread id
    // BEGIN SOLUTION
    u32 tid = bpf_get_current_pid_tgid();
    u64 size = PT_REGS_PARM1(ctx);
    pending.update(&tid, &size);
    // END SOLUTION
    return 0;
}

int on_malloc_return(struct pt_regs *ctx) {
    // TODO 2: take the stashed size back; if malloc returned an address,
    //         remember address -> size and add size to outstanding[pid]
    // BEGIN SOLUTION
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id, pid = id >> 32;
    u64 *size = pending.lookup(&tid);
    if (!size)
        return 0;
    u64 bytes = *size;
    u64 addr = PT_REGS_RC(ctx);
    pending.delete(&tid);
    if (!addr)
        return 0;
    blocks.update(&addr, &bytes);
    s64 zero = 0;
    s64 *total = outstanding.lookup_or_try_init(&pid, &zero);
    if (total)
        __sync_fetch_and_add(total, bytes);
    // END SOLUTION
    return 0;
}

int on_free(struct pt_regs *ctx) {
    // TODO 3: look the freed address up; subtract its size from
    //         outstanding[pid] and forget the block
    // BEGIN SOLUTION
    u64 addr = PT_REGS_PARM1(ctx);
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    u64 *size = blocks.lookup(&addr);
    if (!size)
        return 0;
    s64 *total = outstanding.lookup(&pid);
    if (total)
        __sync_fetch_and_add(total, -(s64)*size);
    blocks.delete(&addr);
    // END SOLUTION
    return 0;
}
"""


# %% tags=["answer"]
def attach_probes(prog: Program, pid: int) -> None:
    """Attach the three functions to libc's malloc and free, in process `pid` only."""
    # TODO 4: one uprobe and one uretprobe on malloc, one uprobe on free
    # BEGIN SOLUTION
    prog.attach_uprobe(name="c", sym="malloc", fn_name="on_malloc_enter", pid=pid)
    prog.attach_uretprobe(name="c", sym="malloc", fn_name="on_malloc_return", pid=pid)
    prog.attach_uprobe(name="c", sym="free", fn_name="on_free", pid=pid)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# Three moments: `malloc` is called (you know the size, not yet the
# address), `malloc` returns (now you know the address; the size must have
# been kept somewhere, per thread, since several threads may be inside
# `malloc` at once), and `free` is called (you know only the address: the
# size must have been kept per address). The running total per process goes
# up at the second moment and down at the third. Only the target process
# may be probed.
# </details>
#
# <details><summary>Hint 2</summary>
#
# The API: `PT_REGS_PARM1(ctx)` is the first argument at a uprobe (the size
# for `malloc`, the address for `free`), `PT_REGS_RC(ctx)` the return value
# at a uretprobe. `outstanding.lookup_or_try_init(&pid, &zero)` creates a
# total at 0; `__sync_fetch_and_add(total, bytes)` adds atomically (and
# `-(s64)*size` subtracts). In Python, `prog.attach_uprobe(name="c",
# sym=..., fn_name=..., pid=pid)` and `prog.attach_uretprobe(...)` with the
# same arguments.
# </details>
#
# <details><summary>Hint 3</summary>
#
# `on_malloc_enter`: `u32 tid = bpf_get_current_pid_tgid(); u64 size =
# PT_REGS_PARM1(ctx); pending.update(&tid, &size);`. `on_malloc_return`: look
# the size up by tid and delete it; if `PT_REGS_RC(ctx)` is not 0,
# `blocks.update(&addr, &bytes)` and add `bytes` to `outstanding[pid]`.
# `on_free`: `blocks.lookup(&addr)`, subtract, `blocks.delete(&addr)`.
# Attach `on_malloc_return` with `attach_uretprobe` (the address only exists
# once malloc has returned), and pass `pid=pid` to all three: without it the
# probes fire in every process that calls malloc, the check's decoy
# included.
# </details>

# %% [markdown]
# ## Try it
#
# Profile a short Python child that keeps a 10 MB `bytearray` alive (Python
# allocates big objects with malloc). `outstanding` shows at least those
# 10 MB while it sleeps.

# %% tags=["try"]
child = subprocess.Popen(["python3", "-c",
                          "import sys, time; sys.stdin.readline(); b = bytearray(10_000_000); time.sleep(0.3)"],
                         stdin=subprocess.PIPE, text=True)
with Program(PROGRAM) as prog:
    attach_probes(prog, child.pid)
    child.stdin.write("go\n")
    child.stdin.flush()
    time.sleep(0.2)
    live = table_df(prog["outstanding"])
child.wait()
live

# %% [markdown]
# ## Check

# %% tags=["check"]
check("4.3", program=PROGRAM, attach=attach_probes)
