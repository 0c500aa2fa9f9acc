"""Stack ids to function names, with BCC's symbolizers.

`BPF.sym(addr, pid)` reads the process's memory map (/proc/PID/maps) the
first time it is asked about that pid and the ELF symbol tables of what is
mapped; `BPF.ksym(addr)` reads /proc/kallsyms. A process must still be alive
when its stacks are first symbolized, so a session symbolizes as it goes.
"""
from __future__ import annotations

KERNEL_SUFFIX = "_[k]"      # marks a kernel frame in folded stacks


class Symbolizer:
    """Names the frames of stack ids from one BCC program's stack map, and
    remembers every stack it named."""

    def __init__(self, prog, table: str = "stacks"):
        self.prog = prog
        self.table = prog[table]
        self._stacks: dict[tuple[str, int, int, int], tuple[str, ...]] = {}

    def user(self, pid: int, stack_id: int) -> list[str]:
        """User frames, root first."""
        if stack_id < 0:
            return []
        try:
            addrs = list(self.table.walk(stack_id))
        except KeyError:
            return ["[lost]"]
        return [self.prog.sym(a, pid).decode(errors="replace") for a in reversed(addrs)]

    def kernel(self, stack_id: int) -> list[str]:
        """Kernel frames, root first, each marked with KERNEL_SUFFIX."""
        if stack_id < 0:
            return []
        try:
            addrs = list(self.table.walk(stack_id))
        except KeyError:
            return ["[lost]" + KERNEL_SUFFIX]
        return [self.prog.ksym(a).decode(errors="replace") + KERNEL_SUFFIX
                for a in reversed(addrs)]

    def frames(self, comm: str, pid: int, user_id: int, kernel_id: int) -> tuple[str, ...]:
        """comm, then user frames, then kernel frames: the order of a folded line."""
        key = (comm, pid, user_id, kernel_id)
        if key not in self._stacks:
            self._stacks[key] = (comm, *self.user(pid, user_id), *self.kernel(kernel_id))
        return self._stacks[key]
