"""pytest fixtures (programs, directories, maps, all cleaned up after the
test) and the capability checks they skip on."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .kernel_map import KernelMap
from .mock import MockMap, clear_injections

try:
    import pytest
except ImportError:  # the helpers work without pytest; only the fixtures need it
    pytest = None

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


# ---------------------------------------------------------- capabilities --
def effective_capabilities(pid: int | str = "self") -> int:
    """The effective capability bits of a process (CapEff in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has_bpf_capabilities(probe: bool = False) -> bool:
    """True when this process may load BPF programs: CAP_BPF with
    CAP_PERFMON, or CAP_SYS_ADMIN. With `probe`, also create and close a
    one-entry array map, which proves the bpf() syscall really works here."""
    caps = effective_capabilities()
    ok = bool(caps >> CAP_SYS_ADMIN & 1) or bool(caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1)
    if ok and probe:
        try:
            KernelMap("array", 4, 4, 1).close()
        except OSError:
            return False
    return ok


# --------------------------------------------------------------- fixtures --
def _pin_base() -> Path:
    from ..bpfsys.pin import PIN_DIR
    return PIN_DIR


if pytest is not None:
    @pytest.fixture
    def bpf_program():
        """A factory: bpf_program(C_TEXT, **kw) -> Program; all are closed
        after the test, whatever happened."""
        from ..program import Program
        made = []

        def make(text: str, **kwargs) -> Program:
            p = Program(text, **kwargs)
            made.append(p)
            return p
        yield make
        for p in made:
            p.close()

    @pytest.fixture
    def scratch_dir():
        """A fresh temporary directory, removed after the test."""
        d = Path(tempfile.mkdtemp(prefix=f"ebt-{os.getpid()}-"))
        yield d
        shutil.rmtree(d, ignore_errors=True)

    @pytest.fixture
    def bpffs_dir():
        """A fresh directory in the BPF filesystem for pins, removed after
        the test (named <pid>-..., so a sweep removes it if we are killed)."""
        base = _pin_base()
        if not Path("/sys/fs/bpf").is_dir() or os.geteuid() != 0:
            pytest.skip("needs root and a mounted bpffs (/sys/fs/bpf)")
        base.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
        yield d
        shutil.rmtree(d, ignore_errors=True)

    @pytest.fixture
    def mock_maps():
        """A factory: mock_maps("hash", key_size=4, ...) -> MockMap. Failure
        injections are disarmed after the test."""
        clear_injections()
        yield lambda *a, **kw: MockMap(*a, **kw)
        clear_injections()

    @pytest.fixture
    def kernel_maps():
        """A factory of real maps: kernel_maps("hash", 4, 8, 16) -> KernelMap
        (closed after the test). Skips the test without BPF privileges."""
        if not has_bpf_capabilities():
            pytest.skip("needs CAP_BPF or root")
        made = []

        def make(*a, **kw) -> KernelMap:
            m = KernelMap(*a, **kw)
            made.append(m)
            return m
        yield make
        for m in made:
            m.close()
