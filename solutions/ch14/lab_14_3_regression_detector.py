# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 14.3: A regression detector
#
# **Objective.** Write the two halves of a regression detector for BPF
# programs, the kind a CI job runs on every change:
#
# * `measure(fd, workload)`: for the loaded program behind `fd`, its size in
#   instructions after the verifier rewrote it, the instructions the
#   verifier processed to accept it, and its mean run time in nanoseconds
#   while `workload()` runs it;
# * `regressions(before, after)`: the set of flags among `"insns"`,
#   `"verified"` and `"runtime"` for what changed between two measurements.
#
# **Expected observation.** The check loads a baseline program (a line
# scanner, below) and five new versions of it, each with a known
# difference: one rebuilt from the same source (no flag), one that is
# slower with the same code size, one whose loop bound grew (the verifier
# works harder, nothing else changes), one with an extra loop (all three),
# and one with a debugging branch that never runs (bigger, more to verify,
# no slower). It runs the baseline 1,000 times and the new version 2,500
# times, calls your `measure` on each, three times in turn, and your
# `regressions` on the medians of those measurements, and requires exactly
# the right flags: a missed change fails, and so does a false flag.
#
# **You will use:** `bpfsys.programs.prog_info` (`xlated`, the
# instructions after rewriting, 8 bytes each; `verified_insns`, what the
# verifier log calls "processed N insns"), `bpfsys.stats.run_time_stats`
# (`BPF_ENABLE_STATS`) and `ProgStats` (`run_cnt`, `run_time_ns`).

# %%
from ebpf_tutor.bpfsys.programs import prog_info
from ebpf_tutor.bpfsys.stats import ProgStats, run_time_stats
from ebpf_tutor.labs import check
from ebpf_tutor.labs.checks.ch14 import SCANNER, RAW, load_for_test, scanner, workload

print(SCANNER)

# %% [markdown]
# ## Background
#
# * **Instructions** (`insns`). `prog_info(fd).xlated` is the program as the
#   kernel runs it, after the verifier rewrote it (map addresses patched
#   in, some helpers inlined). Its length divided by 8 is a count of
#   instruction slots. It depends on the source and the compiler, not on
#   the moment: any change is a real change.
# * **Verified instructions** (`verified`). `prog_info(fd).verified_insns`
#   (kernel 5.16 and later) is the number the verifier log ends with,
#   "processed N insns": how much work accepting the program took. It
#   grows with every path and every loop iteration the verifier walked,
#   and a program that reaches 1,000,000 is rejected. It is also exact.
# * **Run time** (`runtime`). The kernel times each run only while
#   statistics are on (`with run_time_stats():`), adding to `run_time_ns`
#   and `run_cnt`. Read `ProgStats.of(fd)` before and after the workload and
#   divide the differences. Run times are noisy (other processes,
#   interrupts, caches): flag a change only beyond a margin, for example a
#   factor of 1.5 either way.

# %% tags=["try"]
prog, run = load_for_test(scanner(), "scan_line", RAW)
with prog, run:
    info = prog_info(run.fd)
    print("xlated insns:", len(info.xlated) // 8, " verified:", info.verified_insns)
    with run_time_stats():
        s0 = ProgStats.of(run.fd)
        workload(run, 1000)()
        d = ProgStats.of(run.fd) - s0
    print("runs:", d.run_cnt)

# %% [markdown]
# ## Your detector

# %% tags=["answer"]
RUNTIME_MARGIN = 1.5      # a factor: run times within it are noise


def measure(fd, workload):
    """{"insns": ..., "verified": ..., "ns_per_run": ...} of the program behind fd."""
    # BEGIN SOLUTION
    info = prog_info(fd)
    with run_time_stats():
        start = ProgStats.of(fd)
        workload()
        ran = ProgStats.of(fd) - start
    return {"insns": len(info.xlated) // 8, "verified": info.verified_insns,
            "ns_per_run": ran.ns_per_run}
    # END SOLUTION


def regressions(before, after):
    """The flags ("insns", "verified", "runtime") for what changed."""
    # BEGIN SOLUTION
    flags = set()
    if after["insns"] != before["insns"]:
        flags.add("insns")
    if after["verified"] != before["verified"]:
        flags.add("verified")
    ratio = after["ns_per_run"] / max(before["ns_per_run"], 1e-9)
    if ratio > RUNTIME_MARGIN or ratio < 1 / RUNTIME_MARGIN:
        flags.add("runtime")
    return flags
    # END SOLUTION

# %% [markdown]
# <details><summary>Hint 1: measure</summary>
#
# `info = prog_info(fd)`; `len(info.xlated) // 8` and
# `info.verified_insns`. For the run time: inside `with run_time_stats():`,
# `start = ProgStats.of(fd)`, then `workload()`, then
# `ProgStats.of(fd) - start` has `.ns_per_run`.
# </details>
#
# <details><summary>Hint 2: regressions</summary>
#
# The two counts are exact: any difference is a flag. The run time is
# not: compare the mean per run (the two programs ran a different number of
# times) as a ratio, and flag it only beyond `RUNTIME_MARGIN` either way.
# A bigger program is not always slower, and a slower one is not always
# bigger: judge each measure on its own.
# </details>

# %% [markdown]
# ## Check

# %% tags=["check"]
check("14.3", measure=measure, regressions=regressions)
