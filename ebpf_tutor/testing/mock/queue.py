"""Queue and stack maps: values without keys, pushed and popped."""
from __future__ import annotations

import errno as E
from collections import deque
from typing import Any

from .failures import InjectedFailure, bpf_error
from .maps import BPF_ANY, BPF_EXIST, MockMap


class MockQueue(MockMap):
    """BPF_MAP_TYPE_QUEUE (FIFO); MockStack is the LIFO twin. push on a full
    map -> E2BIG, unless flags=BPF_EXIST, which drops the oldest element.
    pop/peek on an empty map -> ENOENT. The BCC API (push, pop, peek,
    values) raises KeyError on empty, as BCC's QueueStack does."""

    map_type = "queue"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_size, self.Key = 0, None    # queues and stacks have no keys
        self._q: deque[bytes] = deque()

    def push(self, value: Any, flags: int = BPF_ANY) -> None:
        self._enter("push")
        if flags not in (BPF_ANY, BPF_EXIST):
            raise bpf_error(E.EINVAL, f"flags {flags}")
        raw = self._value(value)
        if len(self._q) >= self.max_entries:
            if flags != BPF_EXIST:
                raise bpf_error(E.E2BIG, f"{self.map_type} {self.name!r} is full")
            self._q.popleft()               # the oldest goes, for queue and stack alike
        self._q.append(raw)

    def _take(self, remove: bool) -> bytes:
        if not self._q:
            raise bpf_error(E.ENOENT)
        if self.map_type == "stack":
            return self._q.pop() if remove else self._q[-1]
        return self._q.popleft() if remove else self._q[0]

    def pop_raw(self) -> bytes:
        self._enter("pop")
        return self._take(True)

    def peek_raw(self) -> bytes:
        self._enter("peek")
        return self._take(False)

    def pop(self, *default):
        """BCC's pop(): the next value as a Leaf; KeyError when empty."""
        try:
            return self._from_bytes(self.pop_raw(), self.Leaf)
        except OSError as e:
            if e.errno == E.ENOENT and not isinstance(e, InjectedFailure):
                raise KeyError("Could not pop from table") from None
            raise

    def peek(self):
        try:
            return self._from_bytes(self.peek_raw(), self.Leaf)
        except OSError as e:
            if e.errno == E.ENOENT and not isinstance(e, InjectedFailure):
                raise KeyError("Could not peek table") from None
            raise

    # the bpf() syscall routes these for queues and stacks:
    def lookup(self, key: Any = None) -> bytes:
        self._enter("lookup")
        return self._take(False)

    def lookup_and_delete(self, key: Any = None) -> bytes:
        self._enter("lookup_and_delete")
        return self._take(True)

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        self.push(value, flags)

    def delete(self, key: Any = None) -> None:
        self._enter("delete")
        raise bpf_error(E.EINVAL, "queue/stack elements cannot be deleted by key")

    def get_next_key(self, key: Any = None) -> bytes:
        self._enter("get_next_key")
        raise bpf_error(E.EINVAL, "queues and stacks have no keys")

    def itervalues(self):
        for _ in range(self.max_entries):
            try:
                yield self.pop()
            except KeyError:
                return

    def values(self) -> list:
        """Pops everything, as BCC's QueueStack.values() does."""
        return list(self.itervalues())

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self):
        raise TypeError("queues and stacks have no keys: use pop() or values()")

    def __getitem__(self, key):
        raise TypeError("queues and stacks have no keys: use peek() or pop()")

    def __setitem__(self, key, value):
        raise TypeError("queues and stacks have no keys: use push()")

    def __delitem__(self, key):
        raise TypeError("queues and stacks have no keys: use pop()")

    def clear(self) -> None:
        self._q.clear()

    def _raw_keys(self):
        return []

    def __repr__(self) -> str:
        return (f"<MockMap {self.map_type} {self.name!r}: {len(self._q)}/{self.max_entries} "
                f"values of {self.value_size} B (mocked)>")


class MockStack(MockQueue):
    """BPF_MAP_TYPE_STACK (LIFO)."""

    map_type = "stack"
