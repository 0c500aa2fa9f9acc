# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 5.1: A kernel function tracer
#
# **Objective.** Trace the kernel function that serves every `open()` on the
# machine, `do_sys_openat2`, with a **kprobe** on its entry and a
# **kretprobe** on its return: count, per process, how many times it was
# called and how many calls failed. Then write the same tracer on the stable
# `syscalls:sys_enter_openat` / `sys_exit_openat` tracepoints, the fallback for
# kernels without kprobes.
#
# **Expected observation.** The check starts a fresh process with two threads.
# Each thread opens an existing file a random number of times and a missing
# file a random number of times. Your map `opens` must then hold, under that
# process's id, exactly the number of calls and the number of failures, with
# each variant that can run on this kernel:
#
# * with kprobes (the course VM): your kprobe variant is attached and judged,
#   and so is your tracepoint variant;
# * without kprobes (the CI machine): your kprobe variant is compiled and
#   checked by the verifier but not attached, and the PASS line says so; the
#   tracepoint variant is judged.
#
# **You will use:** `attach_kprobe`, `attach_kretprobe`, `PT_REGS_RC`,
# `BPF.ksymname`, `TRACEPOINT_PROBE`, `lookup_or_try_init`.

# %% [markdown]
# ## Background
#
# `open()`, `openat()`, `openat2()` and `creat()` are four system calls, but in
# the kernel they all end up in one function: `do_sys_openat2()` (called
# `do_sys_open()` before Linux 5.6). A kprobe on it sees every open, whatever
# the system call. Its return value is the new file descriptor, or a
# **negative errno** (`-2` for `ENOENT`) when the call fails: the `-1` you know
# from C is what the C library makes of it in user space.
#
# * A kprobe program receives `struct pt_regs *ctx`; a **kretprobe** runs when
#   the function returns, and `PT_REGS_RC(ctx)` is its return value.
# * Function names are not a stable interface: check that a name exists
#   (`BPF.ksymname(name)` returns `-1` when it does not) and fall back to the
#   older one.
# * The tracepoints `syscalls:sys_enter_openat` and `sys_exit_openat` are a
#   stable interface for the same calls; `args->ret` holds the return value
#   at exit. C libraries call `openat` for `open()` on every architecture.
#
# Both variants share one map and two small helper functions, so you write
# the counting logic once.

# %%
import os

from ebpf_tutor import Program, features, table_df
from ebpf_tutor.labs import check

# %% [markdown]
# ## The shared part: one map, two helpers
#
# Keep the names: the check reads a map called `opens` whose key is the
# process id (the *tgid*, the high 32 bits of `bpf_get_current_pid_tgid()`).

# %% tags=["answer"]
COMMON = r"""
struct stats_t {
    u64 calls;     // how many times the function was entered
    u64 failed;    // how many of those calls returned an error
};
BPF_HASH(opens, u32, struct stats_t);     // key: process id (tgid)

static __always_inline void count_call(void) {
    // TODO 1: find or create the entry of the current process, add 1 to calls
    // BEGIN SOLUTION
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct stats_t zero = {};
    struct stats_t *s = opens.lookup_or_try_init(&tgid, &zero);
    if (s)
        __sync_fetch_and_add(&s->calls, 1);
    // END SOLUTION
}

static __always_inline void count_return(long ret) {
    // TODO 2: when ret is an error, add 1 to failed
    // BEGIN SOLUTION
    if (ret >= 0)
        return;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct stats_t *s = opens.lookup(&tgid);
    if (s)
        __sync_fetch_and_add(&s->failed, 1);
    // END SOLUTION
}
"""

# %% [markdown]
# ## Variant 1: kprobe and kretprobe on `do_sys_openat2`
#
# Two functions: one for the entry, one for the return. `attach_kprobes`
# picks the kernel function that exists on this kernel, attaches both, and
# returns the name it used.

# %% tags=["answer"]
KPROBE_PROGRAM = "#include <uapi/linux/ptrace.h>\n" + COMMON + r"""
int trace_open_entry(struct pt_regs *ctx) {
    // TODO 3: count the call
    // BEGIN SOLUTION
    count_call();
    // END SOLUTION
    return 0;
}

int trace_open_return(struct pt_regs *ctx) {
    // TODO 4: hand the function's return value to count_return()
    // BEGIN SOLUTION
    count_return(PT_REGS_RC(ctx));
    // END SOLUTION
    return 0;
}
"""

CANDIDATES = ["do_sys_openat2", "do_sys_open"]    # Linux 5.6+, then older kernels


def attach_kprobes(prog: Program) -> str:
    """Attach trace_open_entry / trace_open_return to the first of CANDIDATES
    this kernel has; return its name."""
    # TODO 5: find the function (Program.ksymname(name) is -1 when it does not
    #         exist), attach_kprobe + attach_kretprobe, return the name
    # BEGIN SOLUTION
    target = next(name for name in CANDIDATES if Program.ksymname(name) != -1)
    prog.attach_kprobe(event=target, fn_name="trace_open_entry")
    prog.attach_kretprobe(event=target, fn_name="trace_open_return")
    return target
    # END SOLUTION


# %% [markdown]
# ## Variant 2: the tracepoint fallback
#
# The same counting on `syscalls:sys_enter_openat` / `sys_exit_openat`.
# `openat2` has its own pair of tracepoints; `open` and `creat` exist only on
# some architectures (x86_64 has them, arm64 does not), so a portable tool
# sticks to the two that exist everywhere.

# %% tags=["answer"]
TRACEPOINT_PROGRAM = COMMON + r"""
// TODO 6: TRACEPOINT_PROBE(syscalls, sys_enter_openat) and sys_exit_openat
//         (and the same pair for openat2), calling count_call / count_return
// BEGIN SOLUTION
TRACEPOINT_PROBE(syscalls, sys_enter_openat) { count_call(); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_openat) { count_return(args->ret); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_openat2) { count_call(); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_openat2) { count_return(args->ret); return 0; }
// END SOLUTION
"""

# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# Count a call where it starts (the entry), a failure where it ends (the
# return value is only known there), both under the process that made it.
# Several threads of a process can be in the function at once, on
# different CPUs, so the counters must be updated atomically.
# </details>
# <details><summary>Hint 2</summary>
#
# `opens.lookup_or_try_init(&tgid, &zero)` returns a pointer to the entry,
# creating it from `zero` when missing (it can still return NULL: check it).
# Add with `__sync_fetch_and_add(&s->calls, 1)`: two threads of one process
# may open files at the same moment on two CPUs.
# </details>
#
# <details><summary>Hint 3</summary>
#
# In the kretprobe, `PT_REGS_RC(ctx)` is the return value; at the
# `sys_exit_openat` tracepoint it is `args->ret`. Both are negative on
# failure (`-ENOENT` is `-2`), so test `ret < 0`, not `ret == -1`.
# </details>
#
# <details><summary>Hint 4</summary>
#
# `next(n for n in CANDIDATES if Program.ksymname(n) != -1)`, then
# `prog.attach_kprobe(event=target, fn_name="trace_open_entry")` and
# `prog.attach_kretprobe(event=target, fn_name="trace_open_return")`.
# </details>

# %% [markdown]
# ## Try it
#
# Count opens machine-wide for a moment, with the kprobe variant where the
# kernel has kprobes, else with the tracepoint variant.

# %% tags=["try", "needs-kprobes"]
import subprocess

if features.available("kprobes"):
    prog = Program(KPROBE_PROGRAM)
    print("attached to", attach_kprobes(prog))
else:
    features.notice("kprobes", "the tracepoint variant")
    prog = Program(TRACEPOINT_PROGRAM)
with prog:
    subprocess.run(["ls", "/nonexistent", "/etc"], capture_output=True)
    df = table_df(prog["opens"])
df.head()

# %% [markdown]
# ## Check

# %% tags=["check", "needs-kprobes"]
check("5.1", kprobe_program=KPROBE_PROGRAM, attach_kprobes=attach_kprobes,
      tracepoint_program=TRACEPOINT_PROGRAM)
