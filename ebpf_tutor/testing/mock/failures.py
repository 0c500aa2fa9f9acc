"""Errors of mock maps: the kernel's errnos, and failures injected on purpose.

    with inject_failure("update", errno.EAGAIN, times=2):
        ...                                 # the next 2 updates of any mock map fail

`MockMap.inject_failure` arms one for a single map.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Iterator

# The raw map operations: what each mock map counts, and what may be made to fail.
OPS = ("lookup", "update", "delete", "get_next_key", "lookup_and_delete", "push", "pop", "peek")


def bpf_error(code: int, what: str = "") -> OSError:
    """An OSError as the bpf() syscall would raise it: errno `code`, its text,
    and `what` failed."""
    return OSError(code, os.strerror(code) + (f" ({what})" if what else ""))


class InjectedFailure(OSError):
    """An OSError raised on purpose by `inject_failure` (errno as requested)."""


@dataclass
class Injection:
    """One armed failure: `op` ("update", ..., or "*") fails with `errno`
    `times` times (None: every call) after letting `after` calls pass."""

    op: str
    errno: int
    times: int | None = 1
    after: int = 0
    seen: int = 0
    triggered: int = 0

    def fire(self, op: str) -> bool:
        if self.op not in ("*", op):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.triggered >= self.times):
            return False
        self.triggered += 1
        return True


_global_injections: list[Injection] = []
_lock = threading.Lock()


def _check_op(op: str) -> None:
    if op != "*" and op not in OPS:
        raise ValueError(f"unknown map operation {op!r}; one of {', '.join(OPS)} or '*'")


@contextlib.contextmanager
def inject_failure(op: str, errno: int, times: int | None = 1, after: int = 0,
                   _target: list[Injection] | None = None) -> Iterator[Injection]:
    """Make map operation `op` fail with OSError(`errno`) inside the block.

    Applies to every MockMap (use `MockMap.inject_failure` for one map).
    `times=None` fails every call; `after=n` lets n calls succeed first."""
    _check_op(op)
    inj = Injection(op, errno, times, after)
    target = _global_injections if _target is None else _target
    with _lock:
        target.append(inj)
    try:
        yield inj
    finally:
        with _lock:
            if inj in target:
                target.remove(inj)


def clear_injections() -> None:
    """Disarm every global injection (a test fixture calls this)."""
    with _lock:
        _global_injections.clear()


def fired(op: str, own: list[Injection]) -> Injection | None:
    """The first injection, of the map's `own` then the global ones, that
    makes this call of `op` fail; None when the call may go on."""
    with _lock:
        for inj in own + _global_injections:
            if inj.fire(op):
                return inj
    return None
