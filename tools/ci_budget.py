"""Where CI's test time goes, from the JUnit XML of a run, and what 25 chapters would take.

    python tools/ci_budget.py build/junit-host.xml [build/junit-vm-bookworm.xml ...]

For each file: the time of the unit tests, of each chapter's notebook and of
each chapter's labs (solutions, untouched starters, wrong solutions), then a
projection that scales the per-chapter means to the 25 chapters of the course
map. A projection, not a promise: later chapters differ (chapter 12 measures
for a while, the applications have larger checks); the README's CI table says
what it assumes.
"""
from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

CHAPTERS = 25


def groups(junit: Path) -> dict[str, float]:
    """Seconds by group: "unit", "notebook chNN", "labs chNN"."""
    out: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).iter("testcase"):
        seconds = float(case.get("time") or 0)
        cls, name = case.get("classname", ""), case.get("name", "")
        nb = re.search(r"(ch\d\d)_\w+\.ipynb", cls + " " + (case.get("file") or ""))
        lab = re.search(r"\[(\d+)\.\d+", name) if cls.endswith("test_labs") else None
        if nb:
            out[f"notebook {nb.group(1)}"] += seconds
        elif lab:
            out[f"labs ch{int(lab.group(1)):02d}"] += seconds
        else:
            out["unit"] += seconds
    return dict(out)


def report(junit: Path) -> str:
    g = groups(junit)
    notebooks = {k: v for k, v in g.items() if k.startswith("notebook")}
    labs = {k: v for k, v in g.items() if k.startswith("labs")}
    total = sum(g.values())
    lines = [f"{junit}: {total:.0f} s of tests",
             f"  unit tests            {g.get('unit', 0):7.0f} s"]
    lines += [f"  {k:<21} {v:7.0f} s" for k, v in sorted({**notebooks, **labs}.items())]
    per_nb = sum(notebooks.values()) / len(notebooks) if notebooks else 0.0
    per_labs = sum(labs.values()) / len(labs) if labs else 0.0
    chapters = max(len(notebooks), len(labs), 1)
    lines.append(f"  per chapter: notebook {per_nb:.0f} s, labs {per_labs:.0f} s")
    if chapters >= 5:   # a stage that runs every chapter (the VMs run only what needs them)
        unit = g.get("unit", 0.0) * CHAPTERS / chapters
        projected = unit + CHAPTERS * (per_nb + per_labs)
        lines.append(f"  {CHAPTERS} chapters, unit tests grown in proportion: {projected / 60:.0f} min")
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["build/junit-host.xml"]:
        print(report(Path(arg)))
