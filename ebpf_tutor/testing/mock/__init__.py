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

The modules, one concern each (the names below `__all__` lists are
importable from here):

- failures   inject_failure, clear_injections, InjectedFailure
- maps       the MockMap base, MAP_TYPES, BPF_ANY/NOEXIST/EXIST, to_bytes
- hash       hash, array, percpu_array, percpu_hash and lru_hash maps
- trie       the LPM trie and lpm_key
- queue      queue and stack maps
- bpf        MockBPF, where a BCC `BPF` object would stand
- ringbuf    MockRingBuf
"""
from __future__ import annotations

from .bpf import MockBPF
from .failures import InjectedFailure, clear_injections, inject_failure
from .hash import MockArray, MockHash, MockLruHash, MockPerCpuArray, MockPerCpuHash
from .maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, ENOTSUPP, MAP_TYPES, MockMap, to_bytes
from .queue import MockQueue, MockStack
from .ringbuf import MockRingBuf
from .trie import MockLpmTrie, lpm_key

__all__ = ["MockMap", "MockHash", "MockArray", "MockPerCpuArray", "MockPerCpuHash", "MockLruHash",
           "MockLpmTrie", "MockQueue", "MockStack", "MockBPF", "MockRingBuf", "inject_failure",
           "clear_injections", "InjectedFailure", "lpm_key", "to_bytes",
           "BPF_ANY", "BPF_NOEXIST", "BPF_EXIST", "ENOTSUPP", "MAP_TYPES"]
