"""Plausible wrong solutions, one module per chapter (chNN.py), each with a
dict MUTANTS: lab id -> list of (what the mistake is, text in the solution,
what a learner might have written instead, [more text, instead, ...]).

Every mutant must make its lab's check fail; every text must occur in the
solution verbatim (labrun.lab_program raises NotInLab otherwise, and the test fails).

A module may also have KPROBE_MUTANTS and LSM_MUTANTS, in the same form:
wrong solutions that only a kernel with kprobes, or with BPF LSM, can expose
(all_mutants("kprobe"), all_mutants("lsm"))."""
from __future__ import annotations

import importlib
import pkgutil


def all_mutants(kind: str = "") -> dict[str, list[tuple[str, ...]]]:
    """Lab id -> its mutants; kind="kprobe" gives the KPROBE_MUTANTS, "lsm" the LSM_MUTANTS."""
    attr = f"{kind.upper()}_MUTANTS" if kind else "MUTANTS"
    found: dict[str, list[tuple[str, ...]]] = {}
    for mod in pkgutil.iter_modules(__path__):
        found.update(getattr(importlib.import_module(f"{__name__}.{mod.name}"), attr, {}))
    return found
