"""Run one lab the way a learner would, and report the check's verdict.

    python tools/labrun.py solutions/ch01/lab_1_1_hello_execve.py            # the solution
    python tools/labrun.py solutions/ch01/lab_1_1_hello_execve.py --starter  # the starter
    python tools/labrun.py SRC --replace OLD NEW                             # a variant

Code cells run in order in one namespace, the check cell last. Cells tagged
`try` (exploration that needs a finished answer) run only for the solution
itself, not for the starter or a variant.
`--stdin` runs code that `lab_program()` already made (the tests parse each
lab once in their own process: importing jupytext costs a second per run).
Exit status: 0 the check passed, 3 the check failed (LabFailed), 4 anything
else went wrong (a bug in the lab or the environment, never a verdict).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class NotInLab(ValueError):
    """A --replace text that does not occur in the lab's code."""


def lab_code(src: Path, starter: bool, skip_try: bool) -> list[str]:
    import jupytext            # about a second to import: only where a source is read
    from labgen import solution_view, strip_solutions
    nb = jupytext.read(src)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if skip_try and "try" in cell.metadata.get("tags", []):
            continue
        cells.append(strip_solutions(cell.source) if starter else solution_view(cell.source))
    return cells


def lab_program(src: Path, starter: bool = False,
                replace: list[tuple[str, str]] | tuple = ()) -> str:
    """The code a learner's run of this lab executes, as one script."""
    code = "\n\n".join(lab_code(src, starter, skip_try=starter or bool(replace)))
    for old, new in replace:
        if old not in code:
            raise NotInLab(f"the text to replace is not in the lab: {old!r}")
        code = code.replace(old, new)
    return code


def run(code: str, filename: str) -> int:
    """Execute a lab's code in one namespace: 0 passed, 3 failed, 4 broke."""
    import matplotlib
    matplotlib.use("Agg")
    from ebpf_tutor.labs import LabFailed

    ns = {"__name__": "__main__"}
    try:
        exec(compile(code, filename, "exec"), ns)
    except LabFailed as e:
        print(e.format())
        return 3
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 4
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=Path)
    ap.add_argument("--starter", action="store_true")
    ap.add_argument("--replace", nargs=2, action="append", default=[], metavar=("OLD", "NEW"))
    ap.add_argument("--stdin", action="store_true",
                    help="run the code given on stdin (made by lab_program), named after SOURCE")
    args = ap.parse_args(argv)
    if args.stdin:
        return run(sys.stdin.read(), str(args.source))
    try:
        code = lab_program(args.source, args.starter, args.replace)
    except NotInLab as e:
        print(f"labrun: {e}", file=sys.stderr)
        return 4
    return run(code, str(args.source))


if __name__ == "__main__":
    sys.exit(main())
