"""Does this kernel have feature X? Decided once per process, by trying it.

Notebooks and lab checks branch on it, and say so in one line:

    from ebpf_tutor import features

    if features.available("kprobes"):
        ...                                            # the real thing
    else:
        features.notice("kprobes", "the tracepoint fallback")
        ...                                            # the documented fallback

prints, on a kernel built without kprobes:

    kprobes: not available on this kernel (built without CONFIG_KPROBES); running the tracepoint fallback instead.

Each feature is decided by the doctor's probe for it (`ebpf_tutor.doctor`):
a tiny program is loaded and attached, and the answer is whether that worked.
`reason()` turns a failure into a short cause. Set `EBPF_TUTOR_DISABLE=kprobes,fentry`
to pretend a feature is missing (to try a fallback on a kernel that has it).

In tests, `@features.requires("kprobes")` skips a test where kprobes are missing.
"""
from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DISABLE_ENV = "EBPF_TUTOR_DISABLE"

# canonical name -> name of the doctor's probe function
PROBES: dict[str, str] = {
    "kprobes": "probe_kprobe",
    "fentry": "probe_fentry",
    "lsm": "probe_lsm",
    "tracepoints": "probe_tracepoint",
    "raw tracepoints": "probe_raw_tracepoint",
    "uprobes": "probe_uprobe",
    "ring buffer": "probe_ringbuf",
    "perf sampling": "probe_perf_sampling",
    "xdp": "probe_xdp",
    "tc": "probe_tc",
    "cgroup programs": "probe_cgroup",
}

ALIASES: dict[str, str] = {
    "kprobe": "kprobes", "kretprobe": "kprobes", "kretprobes": "kprobes",
    "fexit": "fentry", "fentry/fexit": "fentry", "kfunc": "fentry", "kfuncs": "fentry",
    "bpf lsm": "lsm", "lsm bpf": "lsm",
    "tracepoint": "tracepoints", "raw tracepoint": "raw tracepoints",
    "raw_tracepoint": "raw tracepoints", "raw_tracepoints": "raw tracepoints",
    "uprobe": "uprobes", "ringbuf": "ring buffer", "cgroup": "cgroup programs",
}


@dataclass(frozen=True)
class Finding:
    """What trying one feature showed."""
    name: str
    ok: bool
    detail: str      # the probe's own words (what attached, or what failed)
    reason: str      # why it is missing, in a few words ("" when ok)


def canonical(name: str) -> str:
    """'kretprobes' -> 'kprobes', 'LSM' -> 'lsm', ...; KeyError for unknown names."""
    key = name.strip().lower().replace("-", " ")
    key = ALIASES.get(key, key)
    if key not in PROBES:
        raise KeyError(f"unknown feature {name!r}; known: {', '.join(sorted(PROBES))}")
    return key


def _disabled() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {canonical(n) for n in raw.split(",") if n.strip()}


def _probe_function(name: str) -> Callable[[], str]:
    # the module, not the `doctor()` function that ebpf_tutor/__init__ exports
    doctor_module = importlib.import_module(f"{__package__}.doctor")
    return getattr(doctor_module, PROBES[name])


@functools.lru_cache(maxsize=None)
def _tried(name: str) -> tuple[bool, str]:
    """Run the doctor's probe for `name` once per process."""
    if os.geteuid() != 0:
        return False, "not tried: not root"
    from .doctor import _probe
    return _probe(_probe_function(name))


def finding(name: str) -> Finding:
    """Try `name` (once per process) and explain the result."""
    key = canonical(name)
    if key in _disabled():
        return Finding(key, False, f"disabled by {DISABLE_ENV}", f"disabled by {DISABLE_ENV}")
    ok, detail = _tried(key)
    return Finding(key, ok, detail, "" if ok else _why(key, detail))


def available(name: str) -> bool:
    """True when a program of this kind really loaded and attached here."""
    return finding(name).ok


def reason(name: str) -> str:
    """Why `name` is missing, in a few words ('available' when it is not)."""
    f = finding(name)
    return "available" if f.ok else f.reason


def notice(name: str, fallback: str) -> None:
    """Print ONE line saying that `name` is missing and `fallback` runs instead.
    Prints nothing when the feature is available."""
    f = finding(name)
    if not f.ok:
        print(f"{label(name)}: not available on this kernel ({f.reason}); running {fallback} instead.")


def label(name: str) -> str:
    """How a feature is named in messages."""
    return {"lsm": "BPF LSM", "fentry": "fentry/fexit", "xdp": "XDP", "tc": "TC"}.get(
        canonical(name), canonical(name))


def requires(name: str):
    """A pytest mark: skip the test when `name` is not available here."""
    import pytest
    f = finding(name)
    return pytest.mark.skipif(not f.ok, reason=f"{label(name)} not available: {f.reason}")


def reset() -> None:
    """Forget what was tried (the next question probes again)."""
    _tried.cache_clear()


# ------------------------------------------------------------------ reasons --
def _kernel_config() -> dict[str, str]:
    from .doctor import kernel_config
    return kernel_config()


def _ftrace_refused() -> bool:
    """fentry/fexit and LSM programs patch function entries through ftrace;
    a kernel that refuses ftrace hooks also refuses to list them."""
    try:
        Path("/sys/kernel/tracing/available_filter_functions").open().close()
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _why(name: str, detail: str) -> str:
    """A short cause for a failed probe, from what can be seen."""
    if detail.startswith("not tried"):
        return "not root: run as root to load BPF programs"
    cfg = _kernel_config()
    if name == "kprobes":
        if cfg and cfg.get("CONFIG_KPROBES") != "y":
            return "built without CONFIG_KPROBES"
        if cfg and cfg.get("CONFIG_KPROBE_EVENTS") != "y":
            return "built without CONFIG_KPROBE_EVENTS"
    if name in ("fentry", "lsm"):
        if cfg and cfg.get("CONFIG_DEBUG_INFO_BTF") != "y":
            return "built without CONFIG_DEBUG_INFO_BTF"
        if name == "lsm":
            lsm = Path("/sys/kernel/security/lsm")
            if cfg and cfg.get("CONFIG_BPF_LSM") != "y":
                return "built without CONFIG_BPF_LSM"
            if lsm.exists() and "bpf" not in lsm.read_text().split(","):
                return "'bpf' is not in the active LSM list (boot with lsm=...,bpf)"
        if _ftrace_refused():
            return "the kernel refuses ftrace function hooks: EPERM even for root"
        if cfg and cfg.get("CONFIG_FUNCTION_TRACER") != "y":
            return "built without CONFIG_FUNCTION_TRACER"
    return detail.rstrip(".") or "the probe program could not attach"
