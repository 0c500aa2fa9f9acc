"""KernelMap: a real kernel map with the raw API of mock.MockMap, so one
test can run against both; run_op compares them operation by operation."""
from __future__ import annotations

import ctypes as ct
import os
from typing import Any

from ..bpfsys.libbpf import MapCreateOpts, libbpf
from ..kernel.arch import possible_cpus
from .mock import BPF_ANY, MAP_TYPES, lpm_key, to_bytes


class KernelMap:
    """A real BPF map, made with libbpf's bpf_map_create(), with the raw API
    of mock.MockMap: lookup/update/delete/get_next_key/lookup_and_delete
    (and push/pop_raw/peek_raw for queues and stacks), raising OSError with
    the kernel's errno. Close it (or use `with`)."""

    mocked = False
    BPF_F_NO_PREALLOC = 1

    def __init__(self, map_type: str, key_size: int = 4, value_size: int = 8, max_entries: int = 16,
                 flags: int | None = None, name: str = "ebt_test"):
        self.map_type = map_type
        if map_type in ("queue", "stack"):
            key_size = 0
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        percpu = map_type.startswith("percpu")
        self.ncpus = possible_cpus() if percpu else 1
        slot = (value_size + 7) // 8 * 8 if percpu else value_size
        self._vbuf = slot * self.ncpus       # the syscall's value buffer: one slot per CPU
        if flags is None:
            flags = self.BPF_F_NO_PREALLOC if map_type == "lpm_trie" else 0
        opts = MapCreateOpts(sz=ct.sizeof(MapCreateOpts), map_flags=flags)
        fd = libbpf().bpf_map_create(MAP_TYPES[map_type], name.encode()[:15], key_size, value_size,
                                     max_entries, ct.byref(opts))
        if fd < 0:
            raise self._error(f"bpf_map_create({map_type})")
        self.fd = fd

    @staticmethod
    def _error(what: str) -> OSError:
        code = ct.get_errno()
        return OSError(code, f"{os.strerror(code)} ({what})")

    def _kbuf(self, key: Any):
        if self.key_size == 0 or key is None:
            return None
        if isinstance(key, (str, tuple)) and self.map_type == "lpm_trie":
            key = lpm_key(key, size=self.key_size)
        return ct.create_string_buffer(to_bytes(key, self.key_size), self.key_size)

    def _vbuffer(self, value: Any = None):
        if value is None:
            return ct.create_string_buffer(self._vbuf)
        if self._vbuf != self.value_size and not (isinstance(value, (bytes, bytearray))
                                                  and len(value) == self._vbuf):
            raw = to_bytes(value, self.value_size, "value").ljust(self._vbuf // self.ncpus, b"\0")
            raw *= self.ncpus
        else:
            raw = to_bytes(value, self._vbuf, "value")
        return ct.create_string_buffer(raw, self._vbuf)

    def _check(self, ret: int, what: str) -> None:
        if ret < 0:
            raise self._error(what)

    def lookup(self, key: Any = None) -> bytes:
        v = self._vbuffer()
        self._check(libbpf().bpf_map_lookup_elem(self.fd, self._kbuf(key), v), "lookup")
        return v.raw

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        self._check(libbpf().bpf_map_update_elem(self.fd, self._kbuf(key), self._vbuffer(value),
                                                 flags), "update")

    def delete(self, key: Any = None) -> None:
        self._check(libbpf().bpf_map_delete_elem(self.fd, self._kbuf(key)), "delete")

    def get_next_key(self, key: Any = None) -> bytes:
        nxt = ct.create_string_buffer(max(self.key_size, 1))
        self._check(libbpf().bpf_map_get_next_key(self.fd, self._kbuf(key), nxt), "get_next_key")
        return nxt.raw[: self.key_size]

    def lookup_and_delete(self, key: Any = None) -> bytes:
        v = self._vbuffer()
        self._check(libbpf().bpf_map_lookup_and_delete_elem(self.fd, self._kbuf(key), v),
                    "lookup_and_delete")
        return v.raw

    # queues and stacks, named as on MockQueue
    def push(self, value: Any, flags: int = BPF_ANY) -> None:
        self.update(None, value, flags)

    def pop_raw(self) -> bytes:
        return self.lookup_and_delete(None)

    def peek_raw(self) -> bytes:
        return self.lookup(None)

    def keys(self) -> list[bytes]:
        """All keys, by get_next_key from the start (kernel order)."""
        out, key = [], None
        for _ in range(self.max_entries + 1):
            try:
                key = self.get_next_key(key)
            except OSError:
                break
            out.append(key)
        return out

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "KernelMap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


def run_op(m, op: str, *args) -> tuple[str, Any]:
    """Run one raw map operation; ("ok", result) or ("err", errno). Handy to
    compare a mock with a kernel map operation by operation."""
    try:
        return "ok", getattr(m, op)(*args)
    except OSError as e:
        return "err", e.errno
