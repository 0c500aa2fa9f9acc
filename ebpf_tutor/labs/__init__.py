"""Lab checks: run a known workload, then judge what the learner's program did.

In a lab notebook, the last cell is

    check("1.1", program=PROGRAM)

The check loads the learner's program, drives a workload whose true result
it knows, and compares. It prints one short PASS line, or raises LabFailed
with what was expected, what was seen, and the next thing to try. Results
go to a small progress file; `ebpf-tutor progress` prints the checklist.

Checks live in `ebpf_tutor/labs/checks/chNN.py` and register with `@lab(...)`.
"""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import time
from pathlib import Path

from . import course, trycell
from .verdict import REGISTRY, Lab, LabFailed, expect, lab

trycell.install()     # in a notebook kernel: a failing "Try it" cell reads as two lines

__all__ = ["check", "progress", "record", "progress_file", "load_checks",
           "LabFailed", "Lab", "REGISTRY", "expect", "lab"]


def load_checks(lab_id: str | None = None) -> dict[str, Lab]:
    """The registered checks: of every chapter, or only of `lab_id`'s chapter
    (checks/chNN.py; importing all of them costs a learner's check 0.2 s)."""
    from . import checks
    names = [m.name for m in pkgutil.iter_modules(checks.__path__)]
    if lab_id is not None:
        mine = f"ch{lab_id.partition('.')[0].zfill(2)}"
        names = [mine] if mine in names else names
    for name in names:
        importlib.import_module(f"{checks.__name__}.{name}")
    return REGISTRY


def check(lab_id: str, **answers) -> None:
    """Run lab `lab_id`'s check on the given answers; print and record the verdict.
    Returns nothing: a notebook would show a returned line a second time."""
    labs = load_checks(lab_id)
    if lab_id not in labs:
        labs = load_checks()
        raise KeyError(f"no lab {lab_id!r}; known labs: {', '.join(sorted(labs))}")
    the_lab = labs[lab_id]
    missing = [p for p in the_lab.params if p not in answers]
    if missing:
        raise TypeError(f"lab {lab_id} check needs: {', '.join(missing)}")
    try:
        detail = the_lab.check(**answers)
    except LabFailed as e:
        record(lab_id, False, e.message)
        raise
    except NotImplementedError:
        record(lab_id, False, "not finished")
        raise LabFailed(lab_id, "the answer is not written yet (NotImplementedError)",
                        "finish the TODOs in the answer cell, run it, then this check") from None
    except Exception as e:  # the learner's program broke: a failing verdict, with its message
        from ..errors import BpfError
        message = e.format() if isinstance(e, BpfError) else f"{type(e).__name__}: {e}"
        record(lab_id, False, message.splitlines()[0])
        raise LabFailed(lab_id, "your code raised an error:\n" + message,
                        "fix the error above, rerun your cells, then this check") from None
    record(lab_id, True, detail)
    line = f"PASS lab {lab_id} ({the_lab.mode}): {detail}"
    print(line)


# ----------------------------------------------------------------- progress --
def progress_file() -> Path:
    """$EBPF_TUTOR_PROGRESS, else .progress.json in the learner's work folder: the
    one that holds the current directory (a lab's kernel runs in it), else the
    default one (see `workspace`)."""
    env = os.environ.get("EBPF_TUTOR_PROGRESS")
    if env:
        return Path(env)
    from .. import workspace
    return (workspace.find_dir() or workspace.default_dir()) / ".progress.json"


def record(lab_id: str, passed: bool, detail: str) -> None:
    path = progress_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    entry = data.setdefault(lab_id, {"passed": False, "attempts": 0})
    entry["attempts"] += 1
    entry["passed"] = entry["passed"] or passed
    entry["last"] = {"passed": passed, "detail": detail[:200], "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        path.write_text(json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only checkout: the verdict was printed anyway


def progress() -> str:
    """The course checklist (COURSE.md's chapters and labs) with what is done."""
    try:
        done = {k for k, v in json.loads(progress_file().read_text()).items() if v.get("passed")}
    except (OSError, ValueError):
        done = set()
    lines, total = [], 0
    for part, chapters in course.PARTS:
        lines.append(part)
        for ch in chapters:
            labs = course.lab_ids(ch.number)
            total += len(labs)
            n = sum(1 for lab_id in labs if lab_id in done)
            box = "x" if labs and n == len(labs) else ("~" if n else " ")
            lines.append(f"  [{box}] {ch.number:2d}. {ch.title}  ({n}/{len(labs)} labs)")
            for lab_id, title in zip(labs, ch.labs):
                lines.append(f"        [{'x' if lab_id in done else ' '}] {lab_id} {title}")
    lines.append(f"\n{len(done)}/{total} labs passed. Progress file: {progress_file()}")
    return "\n".join(lines)
