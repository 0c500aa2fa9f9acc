"""The LPM trie: longest-prefix match on (prefixlen, address) keys."""
from __future__ import annotations

import ctypes as ct
import errno as E
import ipaddress
from typing import Any

from .failures import bpf_error
from .maps import BPF_EXIST, BPF_NOEXIST, MockMap, to_bytes


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
            raise bpf_error(E.ENOENT)
        for p in range(plen, -1, -1):
            ident = self._ident(p, addr)
            if ident in self._v:
                return self._v[ident]
        raise bpf_error(E.ENOENT)

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
            raise bpf_error(E.EINVAL, f"prefixlen {plen} > {self.max_prefixlen}")
        ident = self._ident(plen, addr)
        if ident in self._d:
            if flags == BPF_NOEXIST:
                raise bpf_error(E.EEXIST)
        else:
            if flags == BPF_EXIST:
                raise bpf_error(E.ENOENT)
            if len(self._d) >= self.max_entries:
                raise bpf_error(E.ENOSPC, f"LPM trie {self.name!r} is full")
        self._d[ident], self._v[ident] = key, value

    def _delete(self, key):
        plen, addr = self._split(key)
        if plen > self.max_prefixlen:
            raise bpf_error(E.EINVAL)
        ident = self._ident(plen, addr)
        if ident not in self._d:
            raise bpf_error(E.ENOENT)
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
            raise bpf_error(E.ENOENT)
        if key is None:
            return self._d[order[0]]
        plen, addr = self._split(key)
        ident = self._ident(plen, addr) if plen <= self.max_prefixlen else None
        if ident not in self._d:
            return self._d[order[0]]
        i = order.index(ident)
        if i + 1 >= len(order):
            raise bpf_error(E.ENOENT)
        return self._d[order[i + 1]]

    def _raw_keys(self):
        return [self._d[i] for i in self._order()]
