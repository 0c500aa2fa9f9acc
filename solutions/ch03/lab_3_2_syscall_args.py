# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 3.2: Capturing system call arguments
#
# **Objective.** Write a tracepoint program, in raw instructions, that
# watches `lseek(fd, offset, whence)` calls made by one process and records
# each call's arguments in a hash map: the key is the `offset` argument, the
# value the `fd` argument (both 64-bit).
#
# **Expected observation.** The check starts two helper processes. One of
# them, the target, gets a file on a descriptor number of the check's
# choosing and calls `lseek` on it with five random offsets, some of them
# above 4 GiB. The other one, and the check itself, call `lseek` with other
# offsets at the same time. Your program is attached for the target's pid
# only. Afterwards your map must hold exactly the target's five offsets,
# each with the target's descriptor number.
#
# **You will use:** `call("get_current_pid_tgid")`, `ldx`/`stx` on the
# stack, `ld_map_fd`, `call("map_update_elem")`, and
# `ebpf_tutor.bpfsys.tracepoint_format`.

# %% [markdown]
# ## Background
#
# A tracepoint program gets in R1 a pointer to the tracepoint's record. Its
# layout is documented by the kernel itself, in tracefs:
# `/sys/kernel/tracing/events/syscalls/sys_enter_lseek/format`.
# `tracepoint_format()` reads that file for you.
#
# The helper `bpf_get_current_pid_tgid()` returns the calling thread's ids in
# one 64-bit number: the process id ("tgid") in the upper 32 bits, the thread
# id in the lower 32.
#
# `bpf_map_update_elem(map, &key, &value, flags)` takes its four arguments in
# R1 to R4. Key and value must be in memory the program owns: the stack,
# addressed from R10 with negative offsets (`R10 - 8` is the last 8 bytes
# of the 512-byte stack). Remember the calling convention: every helper call
# wipes R1 to R5, so keep the context pointer in R6 from the start (done
# for you).

# %%
import os

from ebpf_tutor.bpfsys.asm import *
from ebpf_tutor.bpfsys import (MapType, ProgType, RawMap, attach_tracepoint, kernel_tgid, load,
                               tracepoint_format)
from ebpf_tutor.labs import check

TRACEPOINT = "syscalls:sys_enter_lseek"
FIELDS = tracepoint_format(TRACEPOINT)
for f in FIELDS.values():
    print(f"{f.name:22} offset {f.offset:3}  size {f.size}")

# %% [markdown]
# ## Your program
#
# `map_fd` is a hash map made by the caller (8-byte keys, 8-byte values);
# `tgid` is the process to watch, numbered as the kernel numbers it. Use `FIELDS["offset"].offset` and
# `FIELDS["fd"].offset` rather than numbers typed by hand.

# %% tags=["answer"]
def capture_program(map_fd: int, tgid: int) -> list:
    """On each lseek() by process `tgid`: map[offset] = fd."""
    prog = [
        mov(R6, R1),             # keep the context: calls clobber R1..R5, not R6..R9
    ]
    # TODO 1: call get_current_pid_tgid; if its upper 32 bits are not tgid, jump to "out"
    # TODO 2: store the offset argument (u64) at R10-8 and the fd argument (u64) at R10-16
    # TODO 3: map_update_elem(R1 = the map, R2 = &key, R3 = &value, R4 = 0)
    # BEGIN SOLUTION
    prog += [
        call("get_current_pid_tgid"),
        rsh(R0, 32),                             # the process id
        jne(R0, tgid, "out"),
        ldx(U64, R1, R6, FIELDS["offset"].offset),
        stx(U64, R10, R1, -8),                   # key
        ldx(U64, R1, R6, FIELDS["fd"].offset),
        stx(U64, R10, R1, -16),                  # value
        ld_map_fd(R1, map_fd),
        mov(R2, R10), add(R2, -8),
        mov(R3, R10), add(R3, -16),
        mov(R4, 0),
        call("map_update_elem"),
    ]
    # END SOLUTION
    prog += [
        label("out"),
        mov(R0, 0), exit_(),
    ]
    return prog


# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# ```python
# call("get_current_pid_tgid"),   # result in R0
# rsh(R0, 32),
# jne(R0, tgid, "out"),
# ```
# A pid fits in a 32-bit immediate, so `jne` can compare with it directly.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Copy through a register: `ldx(U64, R1, R6, FIELDS["offset"].offset)` then
# `stx(U64, R10, R1, -8)`. For the helper, R2 must *point at* the key:
# `mov(R2, R10), add(R2, -8)`. The map itself is `ld_map_fd(R1, map_fd)`.
# An offset above 4 GiB needs all 64 bits: read it with `U64`.
# </details>

# %% [markdown]
# ## Try it
#
# Watch this notebook's own process for a moment. `kernel_tgid()` is our
# process id as BPF sees it: the same as `os.getpid()`, except inside a
# container with a PID namespace of its own.

# %% tags=["try"]
with RawMap(MapType.HASH, 8, 8, 64, name="lab32_try") as seen:
    with load(capture_program(seen.fd, kernel_tgid()), ProgType.TRACEPOINT, name="lab32_try") as prog:
        with attach_tracepoint(prog, TRACEPOINT):
            fd = os.open("/etc/hostname", os.O_RDONLY)
            for offset in (1, 100, 5 << 32):
                os.lseek(fd, offset, os.SEEK_SET)
            os.close(fd)
    print({offset: fd for offset, fd in seen.ints().items()})

# %% [markdown]
# ## Check

# %% tags=["check"]
check("3.2", capture_program=capture_program)
