"""Every student's lab progress, as one table.

A student's progress file is the course's own (`ebpf_tutor.labs.record`):
{lab_id: {"passed": bool, "attempts": int, "last": {"passed", "detail", "at"}}}.
In the trusted room it sits in each student's work folder; in VM mode in the
student's copy of the course that their VM mounts as /w, kept on the host.
Records gathered any other way can be handed to `summarise`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .hub import Workshop, vm_state_dir, work_dir

COLUMNS = ["student", "passed", "labs_passed", "attempts", "last_lab", "last_result", "last_at"]


def read(path: str | Path) -> dict:
    """One progress file, or {} when there is none yet (or it is unreadable)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def progress_path(ws: Workshop, student: str) -> Path | None:
    """Where a student's progress file is: in their work folder (trusted room), or
    in the copy of the course their VM uses as /w, kept on the host (vm)."""
    if ws.mode == "vm":
        course = vm_state_dir(ws) / student / "course"
        found = [p for p in (course / "work/.progress.json", course / ".progress.json") if p.exists()]
        return found[0] if found else None
    try:
        return work_dir(student) / ".progress.json"
    except KeyError:              # no such user (any more)
        return None


def collect(ws: Workshop) -> dict[str, dict]:
    """Every student's records, read from the files on this machine."""
    return {s: read(p) if (p := progress_path(ws, s)) else {} for s in ws.students}


def _lab_key(lab_id: str) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else 0 for x in lab_id.split("."))


def summarise(records: dict[str, dict]) -> pd.DataFrame:
    """student × (labs passed, attempts, last result): one row per student."""
    rows = []
    for student, labs in sorted(records.items()):
        passed = sorted((k for k, v in labs.items() if v.get("passed")), key=_lab_key)
        last_id, last = max(((k, v.get("last") or {}) for k, v in labs.items()),
                            key=lambda kv: kv[1].get("at", ""), default=("", {}))
        rows.append({
            "student": student,
            "passed": len(passed),
            "labs_passed": " ".join(passed),
            "attempts": sum(int(v.get("attempts", 0)) for v in labs.values()),
            "last_lab": last_id,
            "last_result": ("PASS" if last.get("passed") else "FAIL") if last else "",
            "last_at": last.get("at", ""),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def table(records: dict[str, dict]) -> str:
    df = summarise(records)
    return "no students" if df.empty else df.to_string(index=False)
