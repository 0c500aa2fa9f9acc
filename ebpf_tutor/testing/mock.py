"""BPF maps simulated in memory: map logic tested without root or a kernel.

Everything here is a MOCK (each object has `mocked = True`). Nothing is
loaded into a kernel and nothing is attached; a lab check that ran on mocks
must say so.

    m = MockMap("hash", key_size=4, value_size=8, max_entries=2)
    m.update(1, 10)                         # raw API: kernel semantics, OSError(errno)
    m.update(1, 11, flags=BPF_NOEXIST)      # -> OSError EEXIST
    m[m.Key(2)] = m.Leaf(20)                # BCC-table API: Key/Leaf ctypes
    m.increment(3)                          # -> False: full, as in the kernel
    with inject_failure("update", errno.EAGAIN, times=2):
        ...                                 # the next 2 updates raise EAGAIN

Map types: hash, array, percpu_array, percpu_hash, lru_hash, lpm_trie,
queue, stack; and MockRingBuf, a BPF ring buffer with the kernel's memory
layout for testing ring-buffer consumers. Where the kernel's behaviour is
approximate (LRU eviction), the mock is exact, and says so.
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import errno as E
import ipaddress
import os
import threading
from collections import OrderedDict, deque
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
ENOTSUPP = 524   # the kernel's own "operation not supported" (not in Python's errno)

# The kernel's enum bpf_map_type numbers (what BCC's table.ttype holds).
MAP_TYPES = {"hash": 1, "array": 2, "percpu_hash": 5, "percpu_array": 6, "lru_hash": 9,
             "lpm_trie": 11, "queue": 22, "stack": 23, "ringbuf": 27}
OPS = ("lookup", "update", "delete", "get_next_key", "lookup_and_delete", "push", "pop", "peek")


# ------------------------------------------------------------ failures ----
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


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code) + (f" ({what})" if what else ""))


# ------------------------------------------------------------ encoding ----
def _ctype_for(size: int):
    """The ctypes type BCC would give a key or value of this many bytes."""
    return {1: ct.c_uint8, 2: ct.c_uint16, 4: ct.c_uint32, 8: ct.c_uint64}.get(size, ct.c_ubyte * size)


def to_bytes(obj: Any, size: int, what: str = "key") -> bytes:
    """bytes of exactly `size` from bytes, an int (little-endian) or a ctypes object."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
    elif isinstance(obj, bool):
        raw = int(obj).to_bytes(size, "little")
    elif isinstance(obj, int):
        raw = obj.to_bytes(size, "little", signed=obj < 0)
    elif isinstance(obj, (ct._SimpleCData, ct.Structure, ct.Union, ct.Array)):
        raw = bytes(obj)
    else:
        raise TypeError(f"cannot use {type(obj).__name__} as a {what}: give bytes, an int or a ctypes value")
    if len(raw) != size:
        raise ValueError(f"{what} is {len(raw)} bytes, the map wants {size}")
    return raw


def lpm_key(prefix: Any, prefixlen: int | None = None, size: int | None = None) -> bytes:
    """An LPM trie key: u32 prefixlen (host order) + address bytes (network order).

    `lpm_key("10.1.0.0/16")`, `lpm_key("10.1.2.3")` (full length),
    `lpm_key(b"\\x0a\\x01", 16)` or `lpm_key((16, "10.1.0.0"))`."""
    if isinstance(prefix, tuple):
        prefixlen, prefix = prefix
    if isinstance(prefix, str):
        net = ipaddress.ip_network(prefix, strict=False) if "/" in prefix else None
        addr = net.network_address if net else ipaddress.ip_address(prefix)
        data = addr.packed
        if prefixlen is None:
            prefixlen = net.prefixlen if net else len(data) * 8
    else:
        data = bytes(prefix)
        if prefixlen is None:
            prefixlen = len(data) * 8
    if size is not None:
        data = data.ljust(size - 4, b"\0")
    return int(prefixlen).to_bytes(4, "little") + data


# ---------------------------------------------------------------- maps ----
class MockMap(MutableMapping):
    """A BPF map in memory. `MockMap("hash", ...)` returns the class of that type.

    Raw API (bytes/ints in, bytes out, OSError with the kernel's errno):
    lookup, update, delete, get_next_key, lookup_and_delete.
    BCC-table API: m[key], m[key] = value, del m[key], items(), keys(),
    values(), clear(), zero(), increment(); `Key`/`Leaf` are ctypes types and
    lookups return `Leaf` objects, as BCC's tables do."""

    mocked = True
    map_type = ""

    def __new__(cls, map_type: str | None = None, *args, **kwargs):
        if cls is MockMap:
            if map_type not in _CLASSES:
                raise ValueError(f"unknown map type {map_type!r}; one of {', '.join(_CLASSES)}")
            cls = _CLASSES[map_type]
        return super().__new__(cls)

    def __init__(self, map_type: str | None = None, key_size: int = 4, value_size: int = 8,
                 max_entries: int = 1024, *, key_type=None, value_type=None, name: str = "",
                 ncpus: int | None = None):
        if key_type is not None:
            key_size = ct.sizeof(key_type)
        if value_type is not None:
            value_size = ct.sizeof(value_type)
        if max_entries <= 0 or value_size <= 0:
            raise _err(E.EINVAL, "max_entries and value_size must be > 0")
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        self.Key = key_type or self._default_key_type()
        self.Leaf = value_type or _ctype_for(value_size)
        self.name = name or self.map_type
        self.ttype = MAP_TYPES[self.map_type]
        self.map_fd = -1                    # no kernel object behind it
        self.calls = {op: 0 for op in OPS}  # how often each raw operation ran
        self._injections: list[Injection] = []

    # -------------------------------------------------------- failures --
    def inject_failure(self, op: str, errno: int, times: int | None = 1, after: int = 0):
        """Like module-level `inject_failure`, for this map only."""
        return inject_failure(op, errno, times, after, _target=self._injections)

    def _enter(self, op: str) -> None:
        self.calls[op] += 1
        with _lock:
            for inj in self._injections + _global_injections:
                if inj.fire(op):
                    raise InjectedFailure(inj.errno, f"{os.strerror(inj.errno)} (injected "
                                          f"failure on {op} of mock map {self.name!r})")

    # -------------------------------------------------------- encoding --
    def _default_key_type(self):
        return _ctype_for(self.key_size)

    def _key(self, key: Any) -> bytes:
        return to_bytes(key, self.key_size, "key")

    def _value(self, value: Any) -> bytes:
        return to_bytes(value, self.value_size, "value")

    @staticmethod
    def _flags(flags: int) -> None:
        if flags not in (BPF_ANY, BPF_NOEXIST, BPF_EXIST):
            raise _err(E.EINVAL, f"flags {flags}")

    # ---------------------------------------------------------- raw API --
    def lookup(self, key: Any) -> bytes:
        self._enter("lookup")
        return self._lookup(self._key(key))

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        self._enter("update")
        self._update(self._key(key), self._value(value), flags)

    def delete(self, key: Any) -> None:
        self._enter("delete")
        self._delete(self._key(key))

    def get_next_key(self, key: Any = None) -> bytes:
        """The key after `key` (the first key when `key` is None or absent)."""
        self._enter("get_next_key")
        return self._next(None if key is None else self._key(key))

    def lookup_and_delete(self, key: Any) -> bytes:
        self._enter("lookup_and_delete")
        return self._lookup_and_delete(self._key(key))

    def _lookup_and_delete(self, key: bytes) -> bytes:
        raise OSError(ENOTSUPP, f"Operation not supported ({self.map_type} has no lookup_and_delete)")

    # --------------------------------------------------------- BCC API --
    def _from_bytes(self, raw: bytes, ctype):
        return ctype.from_buffer_copy(raw)

    def __getitem__(self, key):
        try:
            raw = self.lookup(key)
        except OSError as e:
            if e.errno == E.ENOENT and not isinstance(e, InjectedFailure):
                raise KeyError(key) from None
            raise
        return self._from_bytes(raw, self.Leaf)

    def __setitem__(self, key, value) -> None:
        self.update(key, value, BPF_ANY)

    def __delitem__(self, key) -> None:
        try:
            self.delete(key)
        except OSError as e:
            if e.errno == E.ENOENT and not isinstance(e, InjectedFailure):
                raise KeyError(key) from None
            raise

    def __iter__(self) -> Iterator:
        for raw in self._raw_keys():
            yield self._from_bytes(raw, self.Key)

    def __len__(self) -> int:
        return len(self._raw_keys())

    def __contains__(self, key) -> bool:
        try:
            self._lookup(self._key(key))
            return True
        except OSError:
            return False

    def items(self) -> list:  # BCC returns lists, not views
        return [(k, self[k]) for k in list(self)]

    def keys(self) -> list:
        return list(self)

    def values(self) -> list:
        return [v for _, v in self.items()]

    def items_lookup_batch(self):
        """BCC's batch lookup (data.table_df uses it)."""
        yield from self.items()

    def clear(self) -> None:
        for k in list(self):
            del self[k]

    def zero(self) -> None:
        """Set every existing entry's value to zeros (BCC's zero())."""
        for k in list(self):
            self[k] = self.Leaf()

    def increment(self, key: Any, by: int = 1) -> bool:
        """The BPF-side `map.increment(key)`: add `by` to an integer value,
        inserting 0 first when missing. False when it could not (map full),
        silently, as in the kernel."""
        k = self._key(key)
        try:
            cur = int.from_bytes(self._lookup(k), "little")
        except OSError:
            cur = 0
            try:
                self._update(k, bytes(self.value_size), BPF_NOEXIST)
            except OSError:
                return False
        new = (cur + by) % (1 << (8 * self.value_size))
        self._update(k, new.to_bytes(self.value_size, "little"), BPF_ANY)
        return True

    def get_fd(self) -> int:
        raise _err(E.EBADF, f"mock map {self.name!r} has no kernel file descriptor")

    @classmethod
    def like(cls, table, **kwargs) -> "MockMap":
        """A mock with the type, sizes and Key/Leaf types of a real BCC table."""
        by_id = {v: k for k, v in MAP_TYPES.items()}
        kind = by_id.get(int(table.ttype))
        if kind is None:
            raise ValueError(f"no mock for map type {table.ttype}")
        leaf = getattr(table, "sLeaf", table.Leaf)
        key = getattr(table, "Key", None)
        return MockMap(kind, max_entries=table.max_entries, key_type=key,
                       value_type=leaf, name=getattr(table, "_name", "") or "", **kwargs)

    def __repr__(self) -> str:
        return (f"<MockMap {self.map_type} {self.name!r}: {len(self._raw_keys())}/{self.max_entries}"
                f" entries, key {self.key_size} B, value {self.value_size} B (mocked)>")

    # implemented per type
    def _lookup(self, key: bytes) -> bytes: raise NotImplementedError
    def _update(self, key: bytes, value: bytes, flags: int) -> None: raise NotImplementedError
    def _delete(self, key: bytes) -> None: raise NotImplementedError
    def _next(self, key: bytes | None) -> bytes: raise NotImplementedError
    def _raw_keys(self) -> list[bytes]: raise NotImplementedError


class MockHash(MockMap):
    """BPF_MAP_TYPE_HASH: E2BIG when full, EEXIST/ENOENT for NOEXIST/EXIST.
    Iteration follows insertion order (the kernel's follows its buckets)."""

    map_type = "hash"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._d: dict[bytes, bytes] = {}

    def _lookup(self, key):
        if key not in self._d:
            raise _err(E.ENOENT)
        self._touch(key)
        return self._d[key]

    def _touch(self, key: bytes) -> None:
        pass

    def _update(self, key, value, flags):
        self._flags(flags)
        exists = key in self._d
        if exists and flags == BPF_NOEXIST:
            raise _err(E.EEXIST)
        if not exists and flags == BPF_EXIST:
            raise _err(E.ENOENT)
        if not exists and len(self._d) >= self.max_entries:
            self._full(key)
        self._d[key] = value
        self._touch(key)

    def _full(self, key: bytes) -> None:
        raise _err(E.E2BIG, f"hash map {self.name!r} is full ({self.max_entries} entries)")

    def _delete(self, key):
        if key not in self._d:
            raise _err(E.ENOENT)
        del self._d[key]

    def _lookup_and_delete(self, key):
        value = self._lookup(key)
        del self._d[key]
        return value

    def _next(self, key):
        keys = list(self._d)
        if not keys:
            raise _err(E.ENOENT)
        if key is None or key not in self._d:
            return keys[0]
        i = keys.index(key)
        if i + 1 >= len(keys):
            raise _err(E.ENOENT)
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
            raise _err(E.EINVAL, "array maps have 4-byte keys")
        self._slots = [self._zero()] * self.max_entries

    def _zero(self) -> bytes:
        return bytes(self.value_size)

    def _index(self, key: bytes) -> int:
        return int.from_bytes(key, "little")

    def _lookup(self, key):
        i = self._index(key)
        if i >= self.max_entries:
            raise _err(E.ENOENT)
        return self._slots[i]

    def _update(self, key, value, flags):
        self._flags(flags)
        i = self._index(key)
        if i >= self.max_entries:
            raise _err(E.E2BIG, f"index {i} >= max_entries {self.max_entries}")
        if flags == BPF_NOEXIST:
            raise _err(E.EEXIST, "array slots always exist")
        self._slots[i] = value

    def _delete(self, key):
        raise _err(E.EINVAL, "array elements cannot be deleted")

    def _next(self, key):
        i = -1 if key is None else self._index(key)
        if i >= self.max_entries:
            i = -1
        if i + 1 >= self.max_entries:
            raise _err(E.ENOENT)
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


def possible_cpus() -> int:
    """Number of possible CPUs: per-CPU maps hold one value for each."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
        n = 0
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
        return n
    except (OSError, ValueError):
        return os.cpu_count() or 1


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
            raise _err(E.EINVAL, "array maps have 4-byte keys")
        self._slots = [self._zero()] * self.max_entries


class MockPerCpuHash(_PerCpu, MockHash):
    """BPF_MAP_TYPE_PERCPU_HASH."""

    map_type = "percpu_hash"

    def __init__(self, *args, ncpus: int | None = None, **kwargs):
        MockHash.__init__(self, *args, **kwargs)
        self._setup_cpus(ncpus)


class LpmKey(ct.Structure):
    """Base of LPM trie keys: prefixlen then the address bytes."""
    _fields_ = [("prefixlen", ct.c_uint32)]


class MockLpmTrie(MockMap):
    """BPF_MAP_TYPE_LPM_TRIE: keys are (prefixlen, address); lookup returns
    the value of the longest stored prefix that matches. Update on a full
    trie -> ENOSPC; prefixlen beyond the key -> EINVAL. Keys may be given
    as bytes, ctypes structs, "10.0.0.0/8" strings or (prefixlen, addr)."""

    map_type = "lpm_trie"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("key_size", 8)
        super().__init__(*args, **kwargs)
        self.max_prefixlen = 8 * (self.key_size - 4)
        self._d: dict[tuple[int, int], bytes] = {}   # (prefixlen, masked int) -> stored key
        self._v: dict[tuple[int, int], bytes] = {}

    def _default_key_type(self):
        return type("LpmKey%d" % (self.key_size - 4), (LpmKey,),
                    {"_fields_": [("data", ct.c_ubyte * (self.key_size - 4))]})

    def _key(self, key):
        if isinstance(key, (str, tuple)):
            key = lpm_key(key, size=self.key_size)
        return to_bytes(key, self.key_size, "key")

    def _split(self, key: bytes) -> tuple[int, int]:
        return int.from_bytes(key[:4], "little"), int.from_bytes(key[4:], "big")

    def _ident(self, plen: int, addr: int) -> tuple[int, int]:
        drop = self.max_prefixlen - plen
        return plen, (addr >> drop) << drop

    def _lookup(self, key):
        plen, addr = self._split(key)
        if plen > self.max_prefixlen:
            raise _err(E.ENOENT)
        for p in range(plen, -1, -1):
            ident = self._ident(p, addr)
            if ident in self._v:
                return self._v[ident]
        raise _err(E.ENOENT)

    def lookup_prefix(self, key: Any) -> bytes | None:
        """The stored key that `lookup` would match (None when nothing does)."""
        plen, addr = self._split(self._key(key))
        for p in range(min(plen, self.max_prefixlen), -1, -1):
            ident = self._ident(p, addr)
            if ident in self._d:
                return self._d[ident]
        return None

    def _update(self, key, value, flags):
        self._flags(flags)
        plen, addr = self._split(key)
        if plen > self.max_prefixlen:
            raise _err(E.EINVAL, f"prefixlen {plen} > {self.max_prefixlen}")
        ident = self._ident(plen, addr)
        if ident in self._d:
            if flags == BPF_NOEXIST:
                raise _err(E.EEXIST)
        else:
            if flags == BPF_EXIST:
                raise _err(E.ENOENT)
            if len(self._d) >= self.max_entries:
                raise _err(E.ENOSPC, f"LPM trie {self.name!r} is full")
        self._d[ident], self._v[ident] = key, value

    def _delete(self, key):
        plen, addr = self._split(key)
        if plen > self.max_prefixlen:
            raise _err(E.EINVAL)
        ident = self._ident(plen, addr)
        if ident not in self._d:
            raise _err(E.ENOENT)
        del self._d[ident], self._v[ident]

    def _order(self) -> list[tuple[int, int]]:
        """The kernel's iteration order: a post-order walk of the trie, so
        longer (more specific) prefixes come before the shorter ones that
        contain them, and a 0 bit before a 1 bit."""
        def sort_key(ident):
            plen, addr = ident
            bits = [(addr >> (self.max_prefixlen - 1 - i)) & 1 for i in range(plen)]
            return bits + [2]
        return sorted(self._d, key=sort_key)

    def _next(self, key):
        order = self._order()
        if not order:
            raise _err(E.ENOENT)
        if key is None:
            return self._d[order[0]]
        plen, addr = self._split(key)
        ident = self._ident(plen, addr) if plen <= self.max_prefixlen else None
        if ident not in self._d:
            return self._d[order[0]]
        i = order.index(ident)
        if i + 1 >= len(order):
            raise _err(E.ENOENT)
        return self._d[order[i + 1]]

    def _raw_keys(self):
        return [self._d[i] for i in self._order()]


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
            raise _err(E.EINVAL, f"flags {flags}")
        raw = self._value(value)
        if len(self._q) >= self.max_entries:
            if flags != BPF_EXIST:
                raise _err(E.E2BIG, f"{self.map_type} {self.name!r} is full")
            self._q.popleft()               # the oldest goes, for queue and stack alike
        self._q.append(raw)

    def _take(self, remove: bool) -> bytes:
        if not self._q:
            raise _err(E.ENOENT)
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
        raise _err(E.EINVAL, "queue/stack elements cannot be deleted by key")

    def get_next_key(self, key: Any = None) -> bytes:
        self._enter("get_next_key")
        raise _err(E.EINVAL, "queues and stacks have no keys")

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


_CLASSES = {"hash": MockHash, "array": MockArray, "percpu_array": MockPerCpuArray,
            "percpu_hash": MockPerCpuHash, "lru_hash": MockLruHash, "lpm_trie": MockLpmTrie,
            "queue": MockQueue, "stack": MockStack}


class MockBPF:
    """Stands where a BCC `BPF` object would, holding mock tables:
    `b["counts"]`, `b.get_table("counts")`, `with MockBPF(...) as b:`.
    It loads and attaches nothing (`mocked = True`)."""

    mocked = True

    def __init__(self, **tables: MockMap):
        self.tables: dict[str, MockMap] = {}
        for name, t in tables.items():
            t.name = name
            self.tables[name] = t

    def __getitem__(self, name: str):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(f"no mock table {name!r}; have {', '.join(self.tables) or 'none'}") from None

    def get_table(self, name: str, *_args, **_kw):
        return self[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tables

    def close(self) -> None:
        self.tables.clear()

    def cleanup(self) -> None:
        self.close()

    def __enter__(self) -> "MockBPF":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------- ring buffer --
BUSY_BIT, DISCARD_BIT, HDR_SIZE = 1 << 31, 1 << 30, 8
PAGE = 4096


class MockRingBuf:
    """A BPF ring buffer in memory, laid out as the kernel lays it out for
    mmap: a consumer page (consumer_pos), a producer page (producer_pos),
    then the data area, mapped twice in a row so that a record that wraps
    around the end can be read in one piece. Here the second copy is kept
    up to date by writing every byte to both halves.

    A Python producer stands in for the BPF program: `output(data)` is
    bpf_ringbuf_output(); `reserve(n)` / `submit(r)` / `discard(r)` are
    bpf_ringbuf_reserve/submit/discard. A full buffer makes output() return
    False and counts `lost`, as the kernel helper fails with -EAGAIN."""

    mocked = True

    def __init__(self, size: int = 64 * PAGE):
        if size < PAGE or size & (size - 1) or size % PAGE:
            raise _err(E.EINVAL, "ring size must be a power of 2 and a multiple of the page size")
        self.size, self.mask = size, size - 1
        self._mem = np.zeros(2 * PAGE + 2 * size, dtype=np.uint8)
        self.consumer_pos = self._mem[:8].view(np.uint64)
        self.producer_pos = self._mem[PAGE:PAGE + 8].view(np.uint64)
        self.data = self._mem[2 * PAGE:]
        self.lost = 0
        self.produced = 0
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._pending: dict[int, int] = {}    # position -> sample size of reserved records
        self.max_entries = size
        self.map_fd = -1

    # ----------------------------------------------------------- producer --
    def _write(self, pos: int, raw: bytes) -> None:
        off, n = pos & self.mask, len(raw)
        buf = np.frombuffer(raw, dtype=np.uint8)
        first = min(n, self.size - off)
        for base in (0, self.size):         # both copies of the data area
            self.data[base + off: base + off + first] = buf[:first]
            if first < n:
                self.data[base: base + n - first] = buf[first:]

    def reserve(self, size: int) -> int | None:
        """Reserve room for a sample of `size` bytes; returns its position
        (pass it to submit/discard) or None when there is no room."""
        total = (size + HDR_SIZE + 7) // 8 * 8
        with self._lock:
            cons, prod = int(self.consumer_pos[0]), int(self.producer_pos[0])
            if total > self.size or prod + total - cons > self.mask:
                self.lost += 1
                return None
            self._write(prod, (size | BUSY_BIT).to_bytes(4, "little") + bytes(4))
            self.producer_pos[0] = prod + total
            self._pending[prod] = size
            return prod

    def write(self, pos: int, sample: bytes) -> None:
        """Fill a reserved record's sample."""
        self._write(pos + HDR_SIZE, bytes(sample))

    def submit(self, pos: int, discard: bool = False) -> None:
        """Commit a reserved record: clears its BUSY bit (sets DISCARD if asked)."""
        with self._lock:
            size = self._pending.pop(pos)
            self._write(pos, (size | (DISCARD_BIT if discard else 0)).to_bytes(4, "little"))
            self.produced += 0 if discard else 1
        self._wakeup.set()

    def discard(self, pos: int) -> None:
        self.submit(pos, discard=True)

    def output(self, sample: bytes) -> bool:
        """bpf_ringbuf_output(): copy `sample` in; False (and lost += 1) when full."""
        pos = self.reserve(len(sample))
        if pos is None:
            return False
        self.write(pos, sample)
        self.submit(pos)
        return True

    def output_many(self, samples: np.ndarray) -> int:
        """Write a batch of fixed-size records (a numpy structured array) as
        one output() each, faster; returns how many fitted."""
        raw = samples.tobytes()
        size = samples.dtype.itemsize
        n = 0
        for i in range(len(samples)):
            if not self.output(raw[i * size:(i + 1) * size]):
                break
            n += 1
        return n

    # ----------------------------------------------------------- consumer --
    def wait(self, timeout: float) -> None:
        """Block until a producer submitted something, or `timeout` seconds."""
        if int(self.producer_pos[0]) == int(self.consumer_pos[0]):
            self._wakeup.wait(timeout)
        self._wakeup.clear()

    def available(self) -> int:
        """Bytes produced and not yet consumed."""
        return int(self.producer_pos[0]) - int(self.consumer_pos[0])

    def __repr__(self) -> str:
        return f"<MockRingBuf {self.size} B, {self.available()} B unread, lost {self.lost} (mocked)>"


__all__ = ["MockMap", "MockHash", "MockArray", "MockPerCpuArray", "MockPerCpuHash", "MockLruHash",
           "MockLpmTrie", "MockQueue", "MockStack", "MockBPF", "MockRingBuf", "inject_failure",
           "clear_injections", "InjectedFailure", "lpm_key", "to_bytes", "possible_cpus",
           "BPF_ANY", "BPF_NOEXIST", "BPF_EXIST", "MAP_TYPES"]
