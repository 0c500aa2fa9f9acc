"""Hash and array maps, the LRU hash, and the per-CPU variants of both."""
from __future__ import annotations

import ctypes as ct
import errno as E
from collections import OrderedDict
from typing import Any

from ...kernel.arch import possible_cpus
from .failures import bpf_error
from .maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, MockMap, to_bytes


class MockHash(MockMap):
    """BPF_MAP_TYPE_HASH: E2BIG when full, EEXIST/ENOENT for NOEXIST/EXIST.
    Iteration follows insertion order (the kernel's follows its buckets)."""

    map_type = "hash"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._d: dict[bytes, bytes] = {}

    def _lookup(self, key):
        if key not in self._d:
            raise bpf_error(E.ENOENT)
        self._touch(key)
        return self._d[key]

    def _touch(self, key: bytes) -> None:
        pass

    def _update(self, key, value, flags):
        self._flags(flags)
        exists = key in self._d
        if exists and flags == BPF_NOEXIST:
            raise bpf_error(E.EEXIST)
        if not exists and flags == BPF_EXIST:
            raise bpf_error(E.ENOENT)
        if not exists and len(self._d) >= self.max_entries:
            self._full(key)
        self._d[key] = value
        self._touch(key)

    def _full(self, key: bytes) -> None:
        raise bpf_error(E.E2BIG, f"hash map {self.name!r} is full ({self.max_entries} entries)")

    def _delete(self, key):
        if key not in self._d:
            raise bpf_error(E.ENOENT)
        del self._d[key]

    def _lookup_and_delete(self, key):
        value = self._lookup(key)
        del self._d[key]
        return value

    def _next(self, key):
        keys = list(self._d)
        if not keys:
            raise bpf_error(E.ENOENT)
        if key is None or key not in self._d:
            return keys[0]
        i = keys.index(key)
        if i + 1 >= len(keys):
            raise bpf_error(E.ENOENT)
        return keys[i + 1]

    def _raw_keys(self):
        return list(self._d)


class MockLruHash(MockHash):
    """BPF_MAP_TYPE_LRU_HASH: never full; inserting into a full map evicts the
    least recently used entry. Lookups and updates count as use. The mock is
    exact; the kernel's LRU is approximate (per-CPU lists, batch eviction)
    and may evict a little earlier or in another order."""

    map_type = "lru_hash"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._d = OrderedDict()
        self.evicted: list[bytes] = []    # keys evicted, oldest first

    def _touch(self, key):
        self._d.move_to_end(key)

    def _full(self, key):
        victim, _ = self._d.popitem(last=False)
        self.evicted.append(victim)


class MockArray(MockMap):
    """BPF_MAP_TYPE_ARRAY: every index 0..max_entries-1 exists, zero at start.
    Out-of-range update -> E2BIG, lookup -> ENOENT; delete -> EINVAL;
    BPF_NOEXIST -> EEXIST. `del m[i]` zeroes the slot, as BCC does."""

    map_type = "array"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("key_size", 4)
        super().__init__(*args, **kwargs)
        if self.key_size != 4:
            raise bpf_error(E.EINVAL, "array maps have 4-byte keys")
        self._slots = [self._zero()] * self.max_entries

    def _zero(self) -> bytes:
        return bytes(self.value_size)

    def _index(self, key: bytes) -> int:
        return int.from_bytes(key, "little")

    def _lookup(self, key):
        i = self._index(key)
        if i >= self.max_entries:
            raise bpf_error(E.ENOENT)
        return self._slots[i]

    def _update(self, key, value, flags):
        self._flags(flags)
        i = self._index(key)
        if i >= self.max_entries:
            raise bpf_error(E.E2BIG, f"index {i} >= max_entries {self.max_entries}")
        if flags == BPF_NOEXIST:
            raise bpf_error(E.EEXIST, "array slots always exist")
        self._slots[i] = value

    def _delete(self, key):
        raise bpf_error(E.EINVAL, "array elements cannot be deleted")

    def _next(self, key):
        i = -1 if key is None else self._index(key)
        if i >= self.max_entries:
            i = -1
        if i + 1 >= self.max_entries:
            raise bpf_error(E.ENOENT)
        return (i + 1).to_bytes(4, "little")

    def _raw_keys(self):
        return [i.to_bytes(4, "little") for i in range(self.max_entries)]

    def __getitem__(self, key):
        if isinstance(key, int) and key < 0:
            key += self.max_entries
        if self._index(self._key(key)) >= self.max_entries:
            raise IndexError("Array index out of range")
        return super().__getitem__(key)

    def __delitem__(self, key) -> None:
        self[key] = self._zero()

    def clear(self) -> None:
        self.zero()

    def zero(self) -> None:
        self._slots = [self._zero()] * self.max_entries


class _PerCpu:
    """Per-CPU values: the raw API reads and writes all CPUs' values at once,
    each rounded up to 8 bytes, as the bpf() syscall does; `m[k]` gives a
    ctypes array of one Leaf per CPU (BCC's PerCpuArray/PerCpuHash)."""

    def _setup_cpus(self, ncpus: int | None) -> None:
        self.ncpus = ncpus or possible_cpus()
        self.slot = (self.value_size + 7) // 8 * 8
        self.sLeaf = self.Leaf
        self.Leaf = self.sLeaf * self.ncpus
        self.total_cpu = self.ncpus

    def _value(self, value):
        per_cpu = isinstance(value, (list, tuple)) or (isinstance(value, ct.Array)
                                                       and value._type_ is self.sLeaf)
        if per_cpu:                       # one value for each CPU, e.g. m.Leaf(...)
            if len(value) != self.ncpus:
                raise ValueError(f"per-CPU value needs {self.ncpus} items, got {len(value)}")
            parts = [to_bytes(v, self.value_size, "value").ljust(self.slot, b"\0") for v in value]
            return b"".join(parts)
        if isinstance(value, (bytes, bytearray)) and len(value) == self.slot * self.ncpus:
            return bytes(value)
        one = to_bytes(value, self.value_size, "value").ljust(self.slot, b"\0")
        return one * self.ncpus   # a single value: the same on every CPU

    def _zero(self):
        return bytes(self.slot * self.ncpus)

    def _from_bytes(self, raw, ctype):
        if ctype is self.Leaf:
            out = self.Leaf()
            for c in range(self.ncpus):
                out[c] = self.sLeaf.from_buffer_copy(raw[c * self.slot: c * self.slot + self.value_size])
            return out
        return ctype.from_buffer_copy(raw)

    def cpu_value(self, key: Any, cpu: int) -> bytes:
        """One CPU's value (bytes)."""
        raw = self._lookup(self._key(key))
        return raw[cpu * self.slot: cpu * self.slot + self.value_size]

    def increment(self, key: Any, by: int = 1, cpu: int = 0) -> bool:
        """`increment` as a program running on `cpu` would do it."""
        k = self._key(key)
        try:
            raw = bytearray(self._lookup(k))
        except OSError:
            raw = bytearray(self._zero())
            try:
                self._update(k, bytes(raw), BPF_NOEXIST)
            except OSError:
                return False
        lo = cpu * self.slot
        cur = int.from_bytes(raw[lo: lo + self.value_size], "little")
        raw[lo: lo + self.value_size] = ((cur + by) % (1 << (8 * self.value_size))).to_bytes(
            self.value_size, "little")
        self._update(k, bytes(raw), BPF_ANY)
        return True

    def sum(self, key):
        return self.sLeaf(sum(v.value if hasattr(v, "value") else v for v in self[key]))

    def max(self, key):
        return self.sLeaf(max(v.value if hasattr(v, "value") else v for v in self[key]))

    def average(self, key):
        return self.sum(key).value / self.ncpus


class MockPerCpuArray(_PerCpu, MockArray):
    """BPF_MAP_TYPE_PERCPU_ARRAY."""

    map_type = "percpu_array"

    def __init__(self, *args, ncpus: int | None = None, **kwargs):
        MockMap.__init__(self, *args, **{**kwargs, "key_size": kwargs.get("key_size", 4)})
        self._setup_cpus(ncpus)
        if self.key_size != 4:
            raise bpf_error(E.EINVAL, "array maps have 4-byte keys")
        self._slots = [self._zero()] * self.max_entries


class MockPerCpuHash(_PerCpu, MockHash):
    """BPF_MAP_TYPE_PERCPU_HASH."""

    map_type = "percpu_hash"

    def __init__(self, *args, ncpus: int | None = None, **kwargs):
        MockHash.__init__(self, *args, **kwargs)
        self._setup_cpus(ncpus)
