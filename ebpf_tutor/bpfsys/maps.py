"""BPF maps through the raw syscall: BPF_MAP_CREATE, then lookups, updates,
deletes and key walks on the map's descriptor (`RawMap`), and what the
kernel says about any map fd (`map_info`).

    with RawMap(MapType.HASH, 8, 8, 16, name="counts") as m:
        m.update(1, 10)
        m.ints()                      # {1: 10}
"""
from __future__ import annotations

import ctypes as ct
import errno as _errno
import sys
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator, Union

from ..kernel.arch import possible_cpus
from .syscall import (Cmd, FdObject, MapCreateAttr, MapElemAttr, MapInfoStruct, addr_of, syscall_error,
                      object_name, bpf, obj_info)


class MapType(IntEnum):
    """enum bpf_map_type (the common ones)."""
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    QUEUE = 22
    STACK = 23
    RINGBUF = 27


PERCPU_MAPS = {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH}

# map update flags
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

Bytes = Union[bytes, bytearray, int]


class RawMap(FdObject):
    """A BPF map created with BPF_MAP_CREATE. Keys and values are bytes;
    an int is accepted too, and packed in host byte order to the right size."""

    def __init__(self, map_type: MapType, key_size: int, value_size: int, max_entries: int,
                 *, name: str = "", flags: int = 0):
        self.map_type, self.key_size, self.value_size = MapType(map_type), key_size, value_size
        self.max_entries, self.name = max_entries, name
        attr = MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                             max_entries=max_entries, map_flags=flags,
                             map_name=object_name(name))
        try:
            self._opened(bpf(Cmd.MAP_CREATE, attr))
        except OSError as e:
            raise syscall_error(f"creating {self.map_type.name} map {name!r}", e.errno, hint=(
                "check key_size/value_size/max_entries: this map type may require "
                "particular values (an ARRAY needs key_size 4)") if e.errno == _errno.EINVAL
                else "") from None

    @property
    def value_buffer_size(self) -> int:
        """Per-CPU maps hold one value per possible CPU, each padded to 8 bytes."""
        if self.map_type in PERCPU_MAPS:
            return (self.value_size + 7) // 8 * 8 * possible_cpus()
        return self.value_size

    def _key(self, key: Bytes) -> ct.Array:
        return ct.create_string_buffer(_pack(key, self.key_size, "key"), self.key_size)

    def _elem(self, cmd: Cmd, key: ct.Array | None, value: ct.Array | None, flags: int = 0) -> None:
        attr = MapElemAttr(map_fd=self.fd, key=addr_of(key), value=addr_of(value), flags=flags)
        bpf(cmd, attr)

    def lookup(self, key: Bytes) -> bytes | None:
        """The value stored under key, or None if there is none."""
        value = ct.create_string_buffer(self.value_buffer_size)
        try:
            self._elem(Cmd.MAP_LOOKUP_ELEM, self._key(key), value)
        except OSError as e:
            if e.errno == _errno.ENOENT:
                return None
            raise syscall_error(f"lookup in map {self.name!r}", e.errno) from None
        return value.raw

    def per_cpu(self, key: Bytes) -> list[bytes] | None:
        """A per-CPU map's values for key, one per CPU."""
        raw = self.lookup(key)
        if raw is None:
            return None
        step = (self.value_size + 7) // 8 * 8
        return [raw[i:i + self.value_size] for i in range(0, len(raw), step)]

    def update(self, key: Bytes, value: Bytes, flags: int = BPF_ANY) -> None:
        """Store value under key (BPF_ANY: create or replace)."""
        buf = ct.create_string_buffer(_pack(value, self.value_buffer_size, "value"),
                                      self.value_buffer_size)
        try:
            self._elem(Cmd.MAP_UPDATE_ELEM, self._key(key), buf, flags)
        except OSError as e:
            raise syscall_error(f"update of map {self.name!r}", e.errno) from None

    def delete(self, key: Bytes) -> bool:
        """Remove key; False if it was not there."""
        try:
            self._elem(Cmd.MAP_DELETE_ELEM, self._key(key), None)
        except OSError as e:
            if e.errno == _errno.ENOENT:
                return False
            raise syscall_error(f"delete from map {self.name!r}", e.errno) from None
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key, walked with BPF_MAP_GET_NEXT_KEY (start: no key at all)."""
        key = None
        nxt = ct.create_string_buffer(self.key_size)
        while True:
            try:
                self._elem(Cmd.MAP_GET_NEXT_KEY, key, nxt)
            except OSError as e:
                if e.errno == _errno.ENOENT:
                    return
                raise syscall_error(f"walking map {self.name!r}", e.errno) from None
            yield nxt.raw
            key = ct.create_string_buffer(nxt.raw, self.key_size)

    def items(self) -> list[tuple[bytes, bytes]]:
        out = []
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                out.append((k, v))
        return out

    def ints(self) -> dict[int, int]:
        """The map as {key: value}, both read as unsigned host-order integers."""
        return {int.from_bytes(k, sys.byteorder): int.from_bytes(v[:self.value_size], sys.byteorder)
                for k, v in self.items()}

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd {self.fd}"
        return f"<RawMap {self.name or '?'} {self.map_type.name} {state}>"


def _pack(x: Bytes, size: int, what: str) -> bytes:
    if isinstance(x, int):
        return x.to_bytes(size, sys.byteorder, signed=x < 0)
    x = bytes(x)
    if len(x) != size:
        raise ValueError(f"the {what} must be {size} bytes, not {len(x)}")
    return x


# ------------------------------------------------------------- map info --
@dataclass(frozen=True)
class MapInfo:
    """What BPF_OBJ_GET_INFO_BY_FD says about a map."""
    id: int
    type: str            # "hash", "percpu_array"... (bpftool's names)
    name: str
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    type_id: int         # the kernel's number, enum bpf_map_type

    @property
    def per_cpu(self) -> bool:
        """Whether the map holds one value per possible CPU."""
        return self.type_id in PERCPU_MAPS


def map_info(fd: int) -> MapInfo:
    """What the kernel says about a map (any map fd, ours or BCC's): id,
    type, name, sizes and flags."""
    info = obj_info(fd, MapInfoStruct(), "map")
    try:
        kind = MapType(info.type).name.lower()
    except ValueError:
        kind = f"type {info.type}"
    return MapInfo(info.id, kind, info.name.decode(errors="replace"), info.key_size,
                   info.value_size, info.max_entries, info.map_flags, info.type)
