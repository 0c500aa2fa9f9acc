"""A lab's verdict and the registry of checks: what every check module imports.

A check registers with `@lab("N.M", "title")`, judges with `expect(...)`, and
fails with `LabFailed`, whose message is what the learner reads.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable


class LabFailed(AssertionError):
    """A check's verdict: the learner's program did not do what the lab asks."""

    def __init__(self, lab_id: str, message: str, hint: str = ""):
        self.lab_id, self.message, self.hint = lab_id, message, hint
        super().__init__(self.format())

    def format(self) -> str:
        text = f"FAIL lab {self.lab_id}: {self.message}"
        if self.hint:
            text += f"\n  next step: {self.hint}"
        return text

    def _render_traceback_(self) -> list[str]:
        return self.format().splitlines()


@dataclass
class Lab:
    id: str
    title: str
    check: Callable[..., str]
    mode: str = "real"      # "real": programs really attached; "mock": in-memory maps only

    @property
    def params(self) -> list[str]:
        return list(inspect.signature(self.check).parameters)


REGISTRY: dict[str, Lab] = {}


def lab(lab_id: str, title: str, mode: str = "real"):
    """Register a check function. It takes the learner's answers as keyword
    arguments, returns a short success detail, or raises LabFailed."""
    def deco(fn):
        REGISTRY[lab_id] = Lab(lab_id, title, fn, mode)
        return fn
    return deco


def expect(cond: bool, lab_id: str, message: str, hint: str = "") -> None:
    """Fail the check with `message` (and a next step) unless `cond`."""
    if not cond:
        raise LabFailed(lab_id, message, hint)
