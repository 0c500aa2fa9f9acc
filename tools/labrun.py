"""Run one lab the way a learner would, and report the check's verdict.

    python tools/labrun.py solutions/ch01/lab_1_1_hello_execve.py            # the solution
    python tools/labrun.py solutions/ch01/lab_1_1_hello_execve.py --starter  # the starter
    python tools/labrun.py SRC --replace OLD NEW                             # a variant

Code cells run in order in one namespace, the check cell last. Cells tagged
`try` (exploration that needs a finished answer) run only for the solution
itself, not for the starter or a variant.
Exit status: 0 the check passed, 3 the check failed (LabFailed), 4 anything
else went wrong (a bug in the lab or the environment, never a verdict).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import jupytext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labgen import solution_view, strip_solutions  # noqa: E402


def lab_code(src: Path, starter: bool, skip_try: bool) -> list[str]:
    nb = jupytext.read(src)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if skip_try and "try" in cell.metadata.get("tags", []):
            continue
        cells.append(strip_solutions(cell.source) if starter else solution_view(cell.source))
    return cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=Path)
    ap.add_argument("--starter", action="store_true")
    ap.add_argument("--replace", nargs=2, action="append", default=[], metavar=("OLD", "NEW"))
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    from ebpf_tutor.labs import LabFailed

    cells = lab_code(args.source, args.starter, skip_try=args.starter or bool(args.replace))
    code = "\n\n".join(cells)
    for old, new in args.replace:
        if old not in code:
            print(f"labrun: the text to replace is not in the lab: {old!r}", file=sys.stderr)
            return 4
        code = code.replace(old, new)
    ns = {"__name__": "__main__"}
    try:
        exec(compile(code, str(args.source), "exec"), ns)
    except LabFailed as e:
        print(e.format())
        return 3
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
