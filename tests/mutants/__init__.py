"""Plausible wrong solutions, one module per chapter (chNN.py), each with a
dict MUTANTS: lab id -> list of (what the mistake is, text in the solution,
what a learner might have written instead, [more text, instead, ...]).

Every mutant must make its lab's check fail; every text must occur in the
solution verbatim (labrun exits 4 otherwise, and the test fails)."""
from __future__ import annotations

import importlib
import pkgutil


def all_mutants() -> dict[str, list[tuple[str, ...]]]:
    found: dict[str, list[tuple[str, ...]]] = {}
    for mod in pkgutil.iter_modules(__path__):
        found.update(importlib.import_module(f"{__name__}.{mod.name}").MUTANTS)
    return found
