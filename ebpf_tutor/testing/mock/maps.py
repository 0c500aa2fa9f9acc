"""The MockMap base: what every mock map shares, and how keys and values
become bytes.

`MockMap("hash", ...)` makes the class of that map type (hash.py, trie.py,
queue.py define them). Each type implements `_lookup`, `_update`, `_delete`,
`_next` and `_raw_keys` on bytes; the base adds the raw API with the
kernel's errnos, call counts and injected failures, and BCC's table API.
"""
from __future__ import annotations

import ctypes as ct
import errno as E
import os
from collections.abc import MutableMapping
from typing import Any, Iterator

from ...bpfsys.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST
from .failures import OPS, InjectedFailure, Injection, bpf_error, fired, inject_failure

ENOTSUPP = 524   # the kernel's own "operation not supported" (not in Python's errno)

# The kernel's enum bpf_map_type numbers (what BCC's table.ttype holds).
MAP_TYPES = {"hash": 1, "array": 2, "percpu_hash": 5, "percpu_array": 6, "lru_hash": 9,
             "lpm_trie": 11, "queue": 22, "stack": 23, "ringbuf": 27}

# map type -> its class, registered as each class is defined (MockMap.__init_subclass__)
_CLASSES: dict[str, type[MockMap]] = {}


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register a subclass that names its `map_type`: MockMap(map_type)
        makes it (the first class to name a type keeps it)."""
        super().__init_subclass__(**kwargs)
        if "map_type" in cls.__dict__:
            _CLASSES.setdefault(cls.map_type, cls)

    def __new__(cls, map_type: str | None = None, *args, **kwargs):
        if cls is MockMap:
            if map_type not in _CLASSES:
                known = ", ".join(t for t in MAP_TYPES if t in _CLASSES)
                raise ValueError(f"unknown map type {map_type!r}; one of {known}")
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
            raise bpf_error(E.EINVAL, "max_entries and value_size must be > 0")
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
        inj = fired(op, self._injections)
        if inj is not None:
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
            raise bpf_error(E.EINVAL, f"flags {flags}")

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
        raise bpf_error(E.EBADF, f"mock map {self.name!r} has no kernel file descriptor")

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
