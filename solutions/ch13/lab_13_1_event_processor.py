# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 13.1: A real-time event processor with two ring buffers
#
# **Objective.** Watch every program start and every process exit on the
# machine, and keep, per command name, a live table: how many times it was
# started, how many of its processes exited, and how many of those exited
# with a non-zero status (failures). Starts and exits travel in **two ring
# buffers**, one per kind of event, each drained by the course's
# `RingBufferConsumer`, and the kernel **counts what it could not write**.
#
# **Expected observation.** The check first starts a few hundred short
# processes *before* your consumers run, so that both small rings
# overflow: your `lost` counters must then account for at least everything
# that did not fit. Then it starts your consumers and runs three commands
# with fresh names a random number of times, each with its own exit
# statuses. Within a few seconds, while the consumers still run, your
# table must show exactly those starts, exits and failures.
#
# **You will use:** `BPF_RINGBUF_OUTPUT`, `ringbuf_reserve`/`ringbuf_submit`,
# the tracepoints `sched:sched_process_exec` and
# `syscalls:sys_enter_exit_group`, `RingBufferConsumer(..., handler=, lost=)`,
# `ConsumerGroup`, `DataFrame.value_counts`.

# %% [markdown]
# ## Background
#
# * `sched:sched_process_exec` fires when `execve()` has replaced the
#   program: `bpf_get_current_comm()` already gives the new command name.
# * `syscalls:sys_enter_exit_group` fires when a process ends itself; its
#   argument `args->error_code` is the exit status (`exit 3` in a shell,
#   `sys.exit(3)` in Python). A process killed by a signal never makes
#   that call, so it is not counted here; `sched:sched_process_exit` sees
#   every exit, but its fields do not include the status.
# * `ringbuf_reserve(size)` returns NULL when the ring is full: nothing is
#   written, and nobody will know unless **you** count it. Count it in a
#   map, atomically: several CPUs may fail at once.
# * A `RingBufferConsumer` calls its `handler` with **one DataFrame per
#   batch** of events, not once per event: a batch may hold one event or
#   ten thousand. `lost=` takes a function that reads your kernel-side
#   counter; the consumer reports it as `kernel_lost`.
# * `ConsumerGroup(name=consumer, ...)` starts and closes several consumers
#   together; `with group:` runs them.

# %%
import subprocess
import time

import pandas as pd

from ebpf_tutor import Program, check
from ebpf_tutor.events import ConsumerGroup, RingBufferConsumer

# %% [markdown]
# ## Your program
#
# The two event types and the two rings are given: one page each (4096
# bytes: about a hundred records), small on purpose. Index 0 of `lost`
# counts the starts that did not fit, index 1 the exits.

# %% tags=["answer"]
PROGRAM = r"""
struct exec_event { u64 ts; u32 pid; u32 ppid; char comm[16]; };
struct exit_event { u32 pid; s32 code; char comm[16]; };

BPF_RINGBUF_OUTPUT(execs, 1);          /* one page each */
BPF_RINGBUF_OUTPUT(exits, 1);
BPF_ARRAY(lost, u64, 2);               /* 0: starts lost, 1: exits lost */

static __always_inline void count_lost(int index) {
    u64 *n = lost.lookup(&index);
    if (n)
        __sync_fetch_and_add(n, 1);
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    // TODO 1: reserve a struct exec_event in `execs` (count_lost(0) if that
    //         fails), fill ts, pid (the tgid) and comm, submit it
    // BEGIN SOLUTION
    struct exec_event *e = execs.ringbuf_reserve(sizeof(struct exec_event));
    if (!e) {
        count_lost(0);
        return 0;
    }
    e->ts = bpf_ktime_get_ns();
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->ppid = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    execs.ringbuf_submit(e, 0);
    // END SOLUTION
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group) {
    // TODO 2: the same for a struct exit_event in `exits` (count_lost(1)),
    //         with code = args->error_code
    // BEGIN SOLUTION
    struct exit_event *e = exits.ringbuf_reserve(sizeof(struct exit_event));
    if (!e) {
        count_lost(1);
        return 0;
    }
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->code = args->error_code;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    exits.ringbuf_submit(e, 0);
    // END SOLUTION
    return 0;
}
"""


# %% tags=["answer"]
class ProcessTable:
    """Per command name: starts, exits, failures, updated batch by batch."""

    def __init__(self):
        self.counts: dict[str, dict[str, int]] = {}

    def _row(self, comm: str) -> dict[str, int]:
        return self.counts.setdefault(comm, {"starts": 0, "exits": 0, "failures": 0})

    def on_execs(self, batch: pd.DataFrame) -> None:
        """Called with a DataFrame of exec events (columns ts, pid, ppid, comm)."""
        # TODO 3: add each command's number of rows in this batch to its "starts"
        # BEGIN SOLUTION
        for comm, n in batch["comm"].value_counts().items():
            self._row(comm)["starts"] += int(n)
        # END SOLUTION

    def on_exits(self, batch: pd.DataFrame) -> None:
        """Called with a DataFrame of exit events (columns pid, code, comm)."""
        # TODO 4: add to "exits" and to "failures" (code != 0), per command
        # BEGIN SOLUTION
        for comm, n in batch["comm"].value_counts().items():
            self._row(comm)["exits"] += int(n)
        for comm, n in batch.loc[batch["code"] != 0, "comm"].value_counts().items():
            self._row(comm)["failures"] += int(n)
        # END SOLUTION

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame.from_dict(self.counts, orient="index")


def open_processor(prog: Program, table: ProcessTable) -> ConsumerGroup:
    """Two consumers, one per ring, feeding `table`, each with its loss counter.
    Return the group unstarted: the caller runs it with `with`."""
    # TODO 5: ConsumerGroup(execs=RingBufferConsumer(prog, "execs", handler=...,
    #         lost=lambda: ...), exits=...)
    # BEGIN SOLUTION
    lost = prog["lost"]
    return ConsumerGroup(
        execs=RingBufferConsumer(prog, "execs", handler=table.on_execs,
                                 lost=lambda: lost[0].value),
        exits=RingBufferConsumer(prog, "exits", handler=table.on_exits,
                                 lost=lambda: lost[1].value))
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Each tracepoint writes to its own ring, so a flood of one kind of event
# cannot crowd out the other. When a reservation fails the record is gone:
# the only trace left is the counter you bump. In user space, think in
# batches: a handler that adds 1 per call counts batches, not events.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `struct exec_event *e = execs.ringbuf_reserve(sizeof(struct exec_event));`
#   then `if (!e) { count_lost(0); return 0; }`, fill the fields,
#   `execs.ringbuf_submit(e, 0);`
# * `bpf_get_current_pid_tgid() >> 32` is the process id;
#   `bpf_get_current_comm(&e->comm, sizeof(e->comm))` the command name.
# * In Python, `batch["comm"].value_counts()` gives rows per command;
#   `batch.loc[batch["code"] != 0, "comm"]` the commands of the failed exits.
# * `lost=lambda: prog["lost"][0].value` reads slot 0 of the counter.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```python
# for comm, n in batch["comm"].value_counts().items():
#     self._row(comm)["starts"] += int(n)
# ```
# and for the group:
# ```python
# ConsumerGroup(execs=RingBufferConsumer(prog, "execs", handler=table.on_execs,
#                                        lost=lambda: lost[0].value),
#               exits=RingBufferConsumer(prog, "exits", handler=table.on_exits,
#                                        lost=lambda: lost[1].value))
# ```
# If exits stay at 0 while starts are right, look at which ring your exit
# tracepoint reserves from.
# </details>

# %% [markdown]
# ## Try it
#
# Ten `sh` runs that fail and five that succeed, watched live.

# %% tags=["try"]
table = ProcessTable()
with Program(PROGRAM) as prog, open_processor(prog, table) as group:
    for code in [7] * 10 + [0] * 5:
        subprocess.run(["sh", "-c", f"exit {code}"])
    time.sleep(0.5)
    print(table.frame().loc[["sh"]])
    print(group.stats_frame())

# %% [markdown]
# ## Check

# %% tags=["check"]
check("13.1", program=PROGRAM, table_class=ProcessTable, open_processor=open_processor)
