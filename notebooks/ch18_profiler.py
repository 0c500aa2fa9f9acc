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
# # Chapter 18: A performance profiler
#
# **After this chapter you will be able to**
#
# * sample what the CPUs run at 99 Hz with a perf event, and record kernel
#   and user stacks in a `BPF_STACK_TRACE` map;
# * fold stacks into the `a;b;c count` lines that flame graph tools read,
#   and draw the flame graph yourself, as an SVG, in the notebook;
# * measure where a process waits instead of where it runs (off-CPU time
#   from `sched:sched_switch`), which bytes it keeps (uprobes on `malloc`
#   and `free`), and how long the disk takes (block tracepoints);
# * check a profiler against Linux `perf` on a workload whose profile is
#   known in advance.
#
# The tool is `ebpf_tutor/apps/profiler/`; from a shell it is
# `ebpf-tutor profile [oncpu|offcpu|alloc|io] (-p PID | -- COMMAND)`.

# %%
import mmap
import os
import subprocess
import sys
import time

from ebpf_tutor import Program
from ebpf_tutor.apps.profiler import flamegraph, fold, perf, probes, workloads
from ebpf_tutor.apps.profiler.flamegraph import FlameGraph

# %% [markdown]
# ## 18.1 Sampling: a perf event and a stack map
#
# A profiler does not follow every function call: it looks at the CPUs
# every so often and notes what they are running. The kernel's perf events
# give a software `CPU_CLOCK` timer per CPU; `attach_perf_event(...,
# sample_freq=99)` runs our program 99 times a second on each CPU, in the
# interrupted task's context. 99 and not 100: a rate that is not a round
# number does not fall in step with work that runs on a 10 ms beat.
#
# In the program, `stacks.get_stackid(ctx, BPF_F_USER_STACK)` walks the
# interrupted user stack and stores its return addresses in a
# `BPF_STACK_TRACE` map, returning a small id (equal stacks share one);
# flag `0` walks the kernel stack. The id is a bucket chosen by a hash of
# the addresses: when two different stacks fall in one bucket, the second
# gets a negative id (`-EEXIST`) unless the flag `BPF_F_REUSE_STACKID` lets
# it overwrite the first, so a stack map is sized well above the number of
# distinct stacks expected. The sample is counted under
# `(pid, user stack id, kernel stack id, comm)`. The profiler's whole
# on-CPU program:

# %%
print(probes.source("oncpu"))

# %% [markdown]
# `WANTED(p)` is a macro given on the compiler's command line: `1` for the
# whole machine, `((p) == 1234)` for one process, so the filter costs one
# comparison and the map holds nothing else.
#
# ## 18.2 A workload whose profile we know
#
# To check a profiler we need a program whose answer is known. `main` calls
# `hot()` then `cold()` in a loop; both call the same `spin(n)`, `hot` with
# three times the `n`. So about three quarters of the CPU time is under
# `hot` and one quarter under `cold`:

# %%
print(workloads.HOTCOLD_C)
print(f"known split: hot {workloads.HOT_SHARE:.0%}, cold {1 - workloads.HOT_SHARE:.0%}")
print("built with: gcc", " ".join(workloads.CFLAGS))

# %% [markdown]
# The kernel walks a user stack by following frame pointers: each frame
# saves the caller's `%rbp` next to its return address. gcc omits them from
# `-O1` on (`-fomit-frame-pointer`), and code built that way gives stacks of
# one or two frames. Two more traps show in this small program. From `-O2`
# on (`-foptimize-sibling-calls`), gcc turns a call that is the last thing a
# function does into a jump: `hot` would vanish from every stack, so `hot`
# and `cold` store to `sink` after the call. And a *leaf* function may still
# get no frame of its own with `-fno-omit-frame-pointer`: a sample in it
# then reads its caller's frame first, and skips the caller. The compiler
# of this machine, at `-O1` and at `-O0`:

# %% tags=["nbval-ignore-output"]
def leaf_has_frame(flags: list[str]) -> bool:
    """Does spin() start by pushing %rbp, built with these flags?"""
    binary = workloads.build("ebt-leafcheck", workloads.HOTCOLD_C, flags)
    dump = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(binary)],
                          capture_output=True, text=True).stdout
    body = dump.split("<spin>:\n", 1)[1]
    return "push" in body.splitlines()[0] and "%rbp" in body.splitlines()[0]

print(subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0])
for flags in (["-O1", "-fno-omit-frame-pointer"], ["-O0", "-fno-omit-frame-pointer"]):
    print(" ".join(flags), "-> spin() sets up a frame:", leaf_has_frame(flags))

# %% [markdown]
# Where the first line says `False`, every stack of the `-O1` build reads
# `main;spin`, with no `hot` or `cold` (we saw exactly that with Debian
# bookworm's gcc 12 while writing this chapter). At `-O0` every function
# sets up its frame, so the workload is built at `-O0`.
#
# ## 18.3 Profile it, and let `perf` profile it at the same time
#
# The workload runs; our session (pid filter, 99 Hz) and `perf record -F 99
# -g -p PID` sample the same process over the same seconds (our counts are
# cleared once perf has started; perf stops on SIGINT, its Ctrl-C). `perf script`
# prints each sample's frames, which `perf.parse_script` folds the way we
# fold ours (comm first, kernel frames marked `_[k]`).

# %% tags=["nbval-ignore-output"]
SECONDS = 5
work = subprocess.Popen([str(workloads.hotcold()), str(SECONDS + 3), "wait"],
                        stdin=subprocess.PIPE)
with probes.Session("oncpu", pid=work.pid, freq=99) as session, \
        perf.Recorder(work.pid, freq=99) as peer:
    session.prog["counts"].clear()    # both count from here
    time.sleep(SECONDS)
    ours = session.collect()          # symbolized while the process is alive
    theirs = peer.stop()
work.stdin.close()
work.wait()
for name, f in (("ours", ours), ("perf", theirs)):
    s = fold.shares(f, ["hot", "cold"])
    print(f"{name}: {fold.total(f)} samples, hot {s['hot']:.1%}, cold {s['cold']:.1%}")
se = [(0.75 * 0.25 / max(fold.total(f), 1)) ** 0.5 for f in (ours, theirs)]
print(f"standard error of one share: {100 * se[0]:.1f} points (ours), {100 * se[1]:.1f} (perf); "
      f"of their difference: {100 * (se[0] ** 2 + se[1] ** 2) ** 0.5:.1f}")

# %% [markdown]
# The two sample different instants of the same process, so their shares
# differ by chance. A share p measured from n samples has a standard error
# of sqrt(p(1-p)/n): for p = 0.75 and the 400 to 500 samples of 5 seconds,
# about 2 points, and the difference of two such shares about 3 (the cell
# above prints both for this run). We call the tools in agreement when each
# share is within 10 points of the other tool's and of the known split,
# more than 3 standard errors of the difference. The verdict is what is
# stored:

# %%
TOLERANCE = 0.10
mine, peers = fold.shares(ours, ["hot", "cold"]), fold.shares(theirs, ["hot", "cold"])
known = {"hot": workloads.HOT_SHARE, "cold": 1 - workloads.HOT_SHARE}
print(f"tolerance: {TOLERANCE:.0%} points")
print("shares agree with perf record -F 99 -g:",
      "yes" if all(abs(mine[f] - peers[f]) <= TOLERANCE for f in known) else "no")
print("shares agree with the known split:",
      "yes" if all(abs(mine[f] - known[f]) <= TOLERANCE for f in known) else "no")
print("every hot stack runs main -> hot -> spin:",
      "yes" if all(s.split(";")[-3:] == ["main", "hot", "spin"] or "_[k]" in s
                   for s in fold.only(ours, "hot")) else "no")

# %% [markdown]
# ## 18.4 Folded stacks and the flame graph
#
# Folding turns each distinct stack into one line, root first, with its
# count. That is the input format of Brendan Gregg's `flamegraph.pl`, and of
# ours:

# %% tags=["nbval-ignore-output"]
print(fold.to_text(ours))

# %% [markdown]
# A flame graph merges stacks that share a prefix: each box is a frame, its
# width the samples with that frame at that place in the stack, its
# children the functions it called, stacked on top. The x axis is not time:
# siblings are sorted by name. `flamegraph.layout` computes the boxes
# (shares of the total), `flamegraph.render` writes one `<rect>` per box
# with a `<title>` that the browser shows as a tooltip. Hover a box:

# %% tags=["nbval-ignore-output"]
FlameGraph(ours, title="on-CPU: the hot/cold workload at 99 Hz")

# %% [markdown]
# The layout is plain arithmetic, so its stable part can be checked on
# every run: `hot` and `cold` sit on `main`, and each box is exactly as wide
# as the function's inclusive share of the samples computed in 18.3.

# %%
boxes = {(b.name, b.depth): b for b in flamegraph.layout(ours)}
hot_box = next(b for (n, _), b in boxes.items() if n == "hot")
cold_box = next(b for (n, _), b in boxes.items() if n == "cold")
main_box = next(b for (n, _), b in boxes.items() if n == "main")
print("hot and cold sit on main:", hot_box.depth == cold_box.depth == main_box.depth + 1)
print("box widths equal the shares of 18.3:",
      abs(hot_box.width - mine["hot"]) < 1e-9 and abs(cold_box.width - mine["cold"]) < 1e-9)
print("hot's box is the wider:", hot_box.width > cold_box.width)

# %% [markdown]
# ## 18.5 Off-CPU time: where a process waits
#
# Samples only see running tasks; a process that is slow because it waits
# (a lock, the disk, a sleep) shows nothing. At `sched:sched_switch` the
# task leaving the CPU is still the current one, so the program records the
# time and its stacks under its thread id; when the same thread is switched
# back in, the time it was away is added to those stacks. Every switch
# counts, so a thread that was preempted adds the time it waited for a CPU
# too; BCC's `offcputime --state MASK` keeps only the switches out of the
# task states in a bitmask (2 is `TASK_UNINTERRUPTIBLE`, the disk's usual
# wait):

# %%
print(probes.source("offcpu"))

# %% [markdown]
# The workload sleeps in two functions, `wait_long` and `wait_short`, a
# known time per round:

# %% tags=["nbval-ignore-output"]
ROUNDS, LONG_MS, SHORT_MS = 5, 60, 20
with workloads.Gated(workloads.sleeper(), ROUNDS, LONG_MS, SHORT_MS) as sleeper, \
        probes.Session("offcpu", pid=sleeper.pid) as session:
    sleeper.go()
    sleeper.wait_done()
    blocked = session.collect()
waits = {f: sum(fold.only(blocked, f).values()) / 1e6 for f in ("wait_long", "wait_short")}
print(f"off-CPU: wait_long {waits['wait_long']:.1f} ms, wait_short {waits['wait_short']:.1f} ms")
FlameGraph(blocked, title="off-CPU time (ns)", unit="ns")

# %% [markdown]
# A sleep lasts at least what was asked, plus the timer's slack and the
# time to get a CPU back (long on a busy machine), so we accept up to 50%
# more:

# %%
for f, ms in (("wait_long", LONG_MS), ("wait_short", SHORT_MS)):
    want = ROUNDS * ms
    print(f"{f}: asked {want} ms in all; blocked between that and 50% more:",
          "yes" if want * 0.98 <= waits[f] <= want * 1.5 else "no")

# %% [markdown]
# ## 18.6 Allocations: bytes kept, per stack
#
# Three uprobes on libc: at `malloc`'s entry the size is stashed under the
# thread id; at its return (a uretprobe) the address is known, the user
# stack is walked from the caller, and `live[(pid, address)] = {size, stack}`
# (the pid too: two processes can have a live block at the same virtual
# address); at `free`, the block is looked up and its bytes subtracted from
# its stack.
# What remains in `outstanding` is what the program allocated and did not
# free, per allocation site. The maps, then the return and `free` probes
# (the entry probe only does `asked[tid] = size`):

# %%
alloc_src = probes.source("alloc")
print("\n".join(line for line in alloc_src.splitlines() if line.startswith("BPF_")))
print()
print(alloc_src[alloc_src.index("int on_malloc_return"):])

# %% [markdown]
# The workload calls `leaky(1000)` and keeps the block, and `tidy(300)` and
# frees it, 10 times. It waits on its standard input so that the probes are
# attached before it starts, and again at the end so that it can be
# symbolized:

# %%
ROUNDS, LEAK, TIDY = 10, 1000, 300
with workloads.Gated(workloads.leaker(), ROUNDS, LEAK, TIDY) as leaker, \
        probes.Session("alloc", pid=leaker.pid) as session:
    leaker.go()
    leaker.wait_done()
    kept = session.collect()
for f in ("leaky", "tidy"):
    print(f"{f}: {sum(fold.only(kept, f).values())} bytes allocated and not freed")
print(f"expected: leaky {ROUNDS * LEAK}, tidy 0")

# %% [markdown]
# Why walk the stack at the return? The same workload, with the walk done
# at `malloc`'s entry instead (a uprobe that only records stack ids):

# %%
ENTRY_WALK = r"""
#include <uapi/linux/ptrace.h>
BPF_HASH(seen, int, u64, 1024);
BPF_STACK_TRACE(stacks, 1024);
int on_malloc(struct pt_regs *ctx) {
    int id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    seen.increment(id);
    return 0;
}
"""
with workloads.Gated(workloads.leaker(), ROUNDS, LEAK, TIDY) as leaker, \
        Program(ENTRY_WALK) as entry:
    entry.attach_uprobe(name="c", sym="malloc", fn_name="on_malloc", pid=leaker.pid)
    leaker.go()
    leaker.wait_done()
    walked = [[entry.sym(a, leaker.pid).decode() for a in entry["stacks"].walk(k.value)]
              for k in entry["seen"].keys() if k.value >= 0]
print("a walk at the entry names leaky():", any("leaky" in w for w in walked))
print("it goes from malloc straight to main:",
      any(len(w) > 1 and w[1] == "main" for w in walked))

# %% [markdown]
# At the entry, `malloc` has not yet pushed `%rbp`: the register still
# points to the caller's frame, whose saved return address leads into
# `main`. The one frame that matters, `leaky`, is skipped. At the return,
# the walk starts in `leaky` itself.

# %% [markdown]
# The rest of the process's outstanding bytes come from libc itself (the
# buffer of `stdin`, for one):

# %% tags=["nbval-ignore-output"]
print(fold.to_text(kept))

# %% [markdown]
# ## 18.7 Block I/O latency
#
# The block layer's tracepoints `block:block_rq_issue` and
# `block:block_rq_complete` carry the device and the first sector of a
# request, which together name it at both ends (Chapter 6, Lab 6.3). The
# profiler's `io` mode keeps a log2 histogram of the time between them, per
# device. It checks first that both tracepoints exist on this kernel:

# %%
print({t: probes.tracepoint_exists(t) for t in probes.BLOCK_TRACEPOINTS})

# %% tags=["nbval-ignore-output"]
with probes.Session("io") as session:
    path = f"/var/tmp/ebt-ch18-{os.getpid()}"
    try:                                  # O_DIRECT: each write is a request to the disk
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
        direct = True
    except OSError:                       # a file system without O_DIRECT: fsync each write
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        direct = False
    buf = mmap.mmap(-1, 1 << 16)          # page-aligned, as O_DIRECT wants
    for _ in range(32):
        os.write(fd, buf)
        if not direct:
            os.fsync(fd)
    os.close(fd)
    os.unlink(path)
    hist = session.histogram()
for b in hist:
    print(f"dev {b.dev:>7}  {b.low_us:>6} -> {b.high_us:<6} us : {'#' * min(b.count, 60)} {b.count}")

# %%
print("block requests seen while 32 writes went to the disk:",
      "yes" if sum(b.count for b in hist) >= 1 else "no")

# %% [markdown]
# ## 18.8 The command line
#
# The same sessions run from a shell; `--folded` prints what `flamegraph.pl`
# reads, `--svg FILE` writes our flame graph, `--json` one object, and
# Ctrl-C stops sampling and prints what was gathered so far (exit 130):

# %%
print(subprocess.run([sys.executable, "-m", "ebpf_tutor", "profile", "--help"],
                     capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}).stdout)

# %% [markdown]
# ## The peer check, in figures
#
# What 18.3 measured in this run (the figures change from run to run; the
# verdicts printed there are what is stored and compared):

# %% tags=["nbval-ignore-output"]
print(f"on-CPU at 99 Hz over {SECONDS} s of the hot/cold workload, same process, same run:")
print(f"  ours: {fold.total(ours)} samples, hot {mine['hot']:.1%}, cold {mine['cold']:.1%}")
print(f"  perf record -F 99 -g: {fold.total(theirs)} samples, hot {peers['hot']:.1%}, "
      f"cold {peers['cold']:.1%}")
print(f"  known split: hot {known['hot']:.0%}, cold {known['cold']:.0%}; tolerance "
      f"{TOLERANCE:.0%} points")

# %% [markdown]
# ## Recap
#
# * A perf event at 99 Hz and `get_stackid` give sampled stacks at little
#   cost; folded, they are the input of a flame graph, which is a few dozen
#   lines of layout and SVG.
# * Stacks are only as good as the frame pointers: build the code you
#   profile with them, and beware of tail calls and leaf functions.
# * On-CPU samples show where a process runs; `sched_switch` shows where it
#   waits; uprobes on `malloc`/`free` show what it keeps; the block
#   tracepoints show what the disk costs.
# * Against `perf record -F 99 -g` on the same process in the same run, the
#   shares agreed within the stated tolerance (18.3); `benchmarks/ch18.md`
#   compares what each costs the profiled process.
#
# ## Questions
#
# 1. Why must the profiled process still be alive when its stacks are
#    symbolized, and how does the profiler make sure it is?
# 2. A process spends half its time blocked on a pipe. What does the on-CPU
#    flame graph show of that, and which mode shows it?
# 3. Why does the allocation profiler walk the stack at `malloc`'s return
#    rather than at its entry?
#
# <details><summary>Answers (click to open)</summary>
#
# 1. A stack is a list of addresses; turning one into a name needs the
#    process's memory map (`/proc/PID/maps`: which file is mapped where),
#    which disappears with the process. The session symbolizes as it goes
#    (every quarter second from the command line), and the chapter's
#    workloads wait on their standard input until they have been read.
# 2. Nothing: a blocked task is not on a CPU, so no sample lands in it; its
#    on-CPU graph is only the half where it runs. `offcpu` adds up the
#    blocked time per stack, and shows it under the `read` of the pipe.
# 3. At the entry, `malloc` has not yet saved the frame pointer: the walk
#    starts from the caller's frame and reads the caller's *caller* as the
#    first return address, so the function that called `malloc` is missing.
#    At the return, execution is back in the caller, whose frame is intact.
#
# </details>
#
# ## Labs
#
# | lab | you build | open |
# |---|---|---|
# | 18.1 | fold on-CPU samples (user and kernel stacks) into flame graph input, checked on the hot/cold workload | `labs/ch18/lab_18_1_flame_graph.ipynb` |
# | 18.2 | off-CPU time per stack, checked on a workload that sleeps known times in known functions | `labs/ch18/lab_18_2_offcpu.ipynb` |
# | 18.3 | allocation tracking with uprobes, checked on a workload that leaks known bytes from a known function | `labs/ch18/lab_18_3_allocations.ipynb` |
