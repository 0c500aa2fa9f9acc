"""Pinning: give a BPF map a name in the BPF filesystem so that it outlives
the program (and the process) that created it.

A map lives as long as something refers to it: a program that uses it, an
open file descriptor, or a *pin* (a file under /sys/fs/bpf). Pins made here
go under /sys/fs/bpf/ebpf-tutor/ and are named <pid>-<n>-<name>, so that
`sweep` can remove those of runs that were killed before they unpinned.

    with Pin(prog["counts"], "counts") as pin:    # pinned now
        prog.close()                              # the program is gone...
        pin.df(key_type=ct.c_uint32, value_type=ct.c_uint64)   # ...the map is not
    # unpinned here: the kernel frees the map

BCC 0.26 has no Python call to pin a map, but the library it is built on,
libbpf, does: this module calls libbpf's `bpf_obj_pin`, `bpf_obj_get` and
map lookups through ctypes (`bpfsys.libbpf`).
"""
from __future__ import annotations

import ctypes as ct
import errno as _errno
import itertools
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from ..kernel.arch import possible_cpus
from .libbpf import libbpf
from .maps import MapInfo, map_info

BPFFS = Path("/sys/fs/bpf")
PIN_DIR = BPFFS / "ebpf-tutor"     # every pin the course makes; `sweep` empties it
_counter = itertools.count()


class PinError(OSError):
    """A pin, unpin or open of a pinned object failed."""


def _check(ret: int, what: str) -> int:
    """libbpf returns -errno on failure (and sets errno)."""
    if ret < 0:
        code = -ret if ret < -1 else ct.get_errno()
        raise PinError(code, f"{what}: {os.strerror(code)}")
    return ret


# ------------------------------------------------------------------ paths --
def ensure_bpffs() -> None:
    """Make sure the BPF filesystem is mounted at /sys/fs/bpf and our folder exists."""
    mounted = any(f.split()[1:3] == [str(BPFFS), "bpf"] for f in Path("/proc/mounts").read_text()
                  .splitlines() if len(f.split()) > 2)
    if not mounted:
        r = subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], capture_output=True, text=True)
        if r.returncode != 0:
            raise PinError(_errno.ENODEV, f"the BPF filesystem is not mounted at {BPFFS} and "
                           f"mounting it failed: {r.stderr.strip()}")
    PIN_DIR.mkdir(mode=0o700, exist_ok=True)


def pin_path(name: str) -> Path:
    """A fresh path for a pin: /sys/fs/bpf/ebpf-tutor/<pid>-<n>-<name>.
    Usable with BCC's BPF_TABLE_PINNED too (BCC creates and pins the map there)."""
    if "/" in name or not name:
        raise ValueError(f"a pin name is one path component, not {name!r}")
    ensure_bpffs()
    return PIN_DIR / f"{os.getpid()}-{next(_counter)}-{name}"


# ------------------------------------------------------------ pin / unpin --
def map_fd(table_or_fd: Any) -> int:
    """The file descriptor of a BCC table (prog["name"]) or an int fd."""
    if isinstance(table_or_fd, int):
        return table_or_fd
    fd = getattr(table_or_fd, "map_fd", None)
    if fd is None:
        raise TypeError(f"expected a BCC table or a file descriptor, got {type(table_or_fd).__name__}")
    return int(fd)


def pin_map(table_or_fd: Any, name: str) -> Path:
    """Pin a map (a BCC table or a map fd) under a fresh path; returns the path."""
    path = pin_path(name)
    _check(libbpf().bpf_obj_pin(map_fd(table_or_fd), str(path).encode()), f"pin {path}")
    return path


def open_pinned(path: str | os.PathLike) -> int:
    """A new file descriptor on the object pinned at `path` (close it with os.close)."""
    return _check(libbpf().bpf_obj_get(str(path).encode()), f"open pinned {path}")


def unpin(path: str | os.PathLike) -> bool:
    """Remove a pin. The map is freed once nothing else refers to it. Returns
    False if there was no such pin."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def our_pins() -> list[Path]:
    """The pins this process made (and has not removed yet)."""
    if not PIN_DIR.is_dir():
        return []
    return sorted(p for p in PIN_DIR.iterdir() if p.name.startswith(f"{os.getpid()}-"))


def unpin_all() -> list[Path]:
    """Remove every pin of this process; returns what was removed."""
    removed = [p for p in our_pins() if unpin(p)]
    return removed


# ------------------------------------------------------------------ read --
def map_exists(map_id: int) -> bool:
    """Whether the kernel still has a map with this id."""
    fd = libbpf().bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        return False
    os.close(fd)
    return True


def wait_map_gone(map_id: int, timeout: float = 2.0) -> bool:
    """Wait until map `map_id` is freed; True if it was within `timeout` s.
    A map whose last program was just closed lingers for a moment: programs
    are freed after an RCU grace period, and drop their maps only then."""
    deadline = time.monotonic() + timeout
    while map_exists(map_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def map_items(fd: int, key_type=None, value_type=None) -> list[tuple[Any, Any]]:
    """Every (key, value) of a map, by libbpf lookups on its fd.

    Without types, keys and values are raw bytes. With ctypes types (BCC
    gives them as prog["name"].Key and .Leaf) they are decoded. A per-CPU map
    gives one value per possible CPU (a list)."""
    info = map_info(fd)
    lib = libbpf()
    ncpu = possible_cpus() if info.per_cpu else 1
    slot = (info.value_size + 7) // 8 * 8 if ncpu > 1 else info.value_size
    key, next_key = ct.create_string_buffer(info.key_size), ct.create_string_buffer(info.key_size)
    value = ct.create_string_buffer(slot * ncpu)
    out, prev = [], None
    while lib.bpf_map_get_next_key(fd, prev, next_key) == 0:
        ct.memmove(key, next_key, info.key_size)
        prev = key
        if lib.bpf_map_lookup_elem(fd, key, value) != 0:
            continue                                   # deleted meanwhile
        k = _decode(key.raw, key_type)
        if ncpu > 1:
            v = [_decode(value.raw[i * slot:i * slot + info.value_size], value_type)
                 for i in range(ncpu)]
        else:
            v = _decode(value.raw, value_type)
        out.append((k, v))
    return out


def _decode(raw: bytes, ctype) -> Any:
    if ctype is None:
        return raw
    obj = ctype.from_buffer_copy(raw[:ct.sizeof(ctype)])
    return obj.value if isinstance(obj, ct._SimpleCData) else obj


def pinned_df(path: str | os.PathLike, key_type=None, value_type=None):
    """A pinned map as a DataFrame, columns as `data.table_df` names them."""
    import pandas as pd

    from ..data import flatten
    fd = open_pinned(path)
    try:
        rows = []
        for k, v in map_items(fd, key_type, value_type):
            row = flatten(k, "key") if not isinstance(k, (int, bytes)) else {"key": k}
            if isinstance(v, list):
                row.update({f"cpu{i}": x for i, x in enumerate(v)})
                row["value"] = sum(v) if all(isinstance(x, int) for x in v) else None
            else:
                row.update(flatten(v, "value") if not isinstance(v, (int, bytes)) else {"value": v})
            rows.append(row)
    finally:
        os.close(fd)
    return pd.DataFrame(rows)


def bpftool_dump(path: str | os.PathLike) -> list[dict]:
    """`bpftool -j map dump pinned PATH`: what bpftool sees in a pinned map
    (values "formatted" by BTF when the map has it, hex bytes otherwise)."""
    r = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise PinError(_errno.ENOENT, f"bpftool could not dump {path}: {r.stderr.strip()}")
    return json.loads(r.stdout or "[]")


# ----------------------------------------------------------------- handle --
class Pin:
    """A pinned map that is unpinned on exit from a `with` block.

        with Pin(prog["counts"], "counts") as pin:
            print(pin.path, pin.info().id)
    """

    def __init__(self, table_or_fd: Any, name: str):
        self.path = pin_map(table_or_fd, name)
        self.key_type = getattr(table_or_fd, "Key", None)
        # BCC's per-CPU tables keep the one-CPU value type as sLeaf
        self.value_type = getattr(table_or_fd, "sLeaf", None) or getattr(table_or_fd, "Leaf", None)

    def info(self) -> MapInfo:
        fd = open_pinned(self.path)
        try:
            return map_info(fd)
        finally:
            os.close(fd)

    def items(self) -> list[tuple[Any, Any]]:
        fd = open_pinned(self.path)
        try:
            return map_items(fd, self.key_type, self.value_type)
        finally:
            os.close(fd)

    def df(self, key_type=None, value_type=None):
        return pinned_df(self.path, key_type or self.key_type, value_type or self.value_type)

    def close(self) -> None:
        unpin(self.path)

    def __enter__(self) -> "Pin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Pin {self.path}{'' if self.path.exists() else ' (unpinned)'}>"
