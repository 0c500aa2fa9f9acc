# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 18.3: Allocation tracking per stack
#
# **Objective.** With uprobes on libc's `malloc` and `free`, keep in
# `outstanding[{pid, stack_id}]` the bytes that each allocation site (the
# user stack that called `malloc`) has allocated and not yet freed. A block
# freed anywhere is subtracted from the site that allocated it.
#
# **Expected observation.** The check compiles a program with fresh
# function names. `R` times (random), it calls `leaky_X(L)`, which mallocs
# `L` bytes that are never freed, `tidy_X(S)`, whose block `main` frees at
# once, and `pass_X(P)`, whose blocks `release_X()` frees at the end (`L`,
# `S`, `P` random). The check names your stack ids itself: the stacks
# through `leaky_X` must hold exactly `R x L` bytes, those through `tidy_X`
# and `pass_X` zero, and no stack may hold a negative count.
#
# **You will use:** `attach_uprobe` / `attach_uretprobe` (done for you),
# `PT_REGS_PARM1`, `PT_REGS_RC`, `get_stackid` in a uretprobe, a map from
# address to block.

# %% [markdown]
# ## Background
#
# Lab 4.3 counted a process's outstanding bytes. Here each byte is charged
# to *where* it was allocated, so the map tells which code path leaks.
#
# * At `malloc`'s entry (uprobe) we know the size; at its return
#   (uretprobe) the address. The size is stashed under the thread id in
#   between (given).
# * The stack is walked at the **return**: execution is back in the
#   caller, whose frame is intact. At the entry, `malloc` has not yet
#   pushed its frame pointer, and the walk misses the function that
#   called it.
# * A `free` only has the address: remember, per live address, the size
#   and the site (`live`), so that `free` can subtract the size from the
#   site that allocated the block, wherever it is freed.

# %%
import subprocess

from ebpf_tutor import Program
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# Keep the names: the check reads `outstanding` and `stacks`.

# %% tags=["answer"]
PROGRAM = r"""
#include <uapi/linux/ptrace.h>

struct site_t {
    u32 pid;
    int stack_id;
};
struct block_t {
    u64 size;
    struct site_t site;
};
BPF_HASH(sizes, u32, u64, 4096);                   // thread id -> size asked of malloc
BPF_HASH(live, u64, struct block_t, 65536);        // address -> block
BPF_HASH(outstanding, struct site_t, s64, 4096);   // site -> bytes not freed
BPF_STACK_TRACE(stacks, 4096);

int on_malloc(struct pt_regs *ctx) {
    u32 tid = bpf_get_current_pid_tgid();
    u64 size = PT_REGS_PARM1(ctx);
    sizes.update(&tid, &size);
    return 0;
}

int on_malloc_return(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    u64 *size = sizes.lookup(&tid);
    if (!size)
        return 0;
    u64 addr = PT_REGS_RC(ctx);
    // TODO 1: unless addr is 0, build the block: its size (*size) and its
    //         site (the process id and the user stack id); remember it in
    //         `live` under addr and add its size to outstanding[site].
    //         Forget the stashed size in any case.
    // BEGIN SOLUTION
    if (addr != 0) {
        struct block_t b = {.size = *size};
        b.site.pid = id >> 32;
        b.site.stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
        live.update(&addr, &b);
        s64 zero = 0;
        s64 *bytes = outstanding.lookup_or_try_init(&b.site, &zero);
        if (bytes)
            __sync_fetch_and_add(bytes, b.size);
    }
    // END SOLUTION
    sizes.delete(&tid);
    return 0;
}

int on_free(struct pt_regs *ctx) {
    u64 addr = PT_REGS_PARM1(ctx);
    // TODO 2: find the block (not ours: return), subtract its size from the
    //         site that allocated it, forget it
    // BEGIN SOLUTION
    struct block_t *b = live.lookup(&addr);
    if (!b)
        return 0;
    s64 *bytes = outstanding.lookup(&b->site);
    if (bytes)
        __sync_fetch_and_add(bytes, -(s64)b->size);
    live.delete(&addr);
    // END SOLUTION
    return 0;
}
"""


def attach(prog: Program, pid: int) -> None:
    """The three probes, in process `pid` only."""
    prog.attach_uprobe(name="c", sym="malloc", fn_name="on_malloc", pid=pid)
    prog.attach_uretprobe(name="c", sym="malloc", fn_name="on_malloc_return", pid=pid)
    prog.attach_uprobe(name="c", sym="free", fn_name="on_free", pid=pid)


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Two maps do the bookkeeping. `live` answers "how big is the block at this
# address, and who allocated it?" when `free` comes; `outstanding` is the
# running total per site: `+size` at each allocation, `-size` at each free
# of a block that site allocated. The site is taken once, at the
# allocation, and travels with the block.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# `PT_REGS_RC(ctx)` is `malloc`'s return value (the address; 0 when it
# failed); the size asked for is the stashed `*size` (at the return,
# `PT_REGS_PARM1` holds whatever the register holds by then, not the
# argument). `stacks.get_stackid(ctx, BPF_F_USER_STACK)`;
# `outstanding.lookup_or_try_init(&site, &zero)` then
# `__sync_fetch_and_add`; at `free`, `live.lookup(&addr)` then
# `outstanding.lookup(&b->site)`.
# </details>
#
# <details><summary>Hint 3: where the block is freed</summary>
#
# At `free`, do not walk the stack: it is the stack of the code that frees,
# often a different function (a destructor, a cleanup pass). Subtract from
# `b->site`, the site stored with the block.
# </details>

# %% [markdown]
# ## Try it
#
# What does `python3 -c` keep allocated after importing `json`? The biggest
# sites, innermost frames first. The interpreter is built without frame
# pointers, so past the function that called `malloc` the walk is not to
# be trusted (`[unknown]` frames):

# %% tags=["try"]
py = subprocess.Popen(["python3", "-c", "import sys; sys.stdin.readline(); import json; "
                       "print('ok', flush=True); sys.stdin.readline()"],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
with Program(PROGRAM) as prog:
    attach(prog, py.pid)
    py.stdin.write("\n")
    py.stdin.flush()
    py.stdout.readline()
    top = sorted(prog["outstanding"].items(), key=lambda kv: -kv[1].value)[:5]
    for site, kept in top:
        frames = [prog.sym(a, py.pid).decode() for a in prog["stacks"].walk(site.stack_id)]
        print(f"{kept.value:8d} bytes  {' <- '.join(frames[:3])}")
    py.communicate("\n")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("18.3", program=PROGRAM, attach=attach)
