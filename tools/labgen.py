"""Generate lab starters from their solutions, and check they are in sync.

Each lab has one source: `solutions/chNN/<lab>.py`, a notebook in jupytext's
percent format. Code between solution markers is the answer:

    // BEGIN SOLUTION              # BEGIN SOLUTION
    ...                            ...
    // END SOLUTION                # END SOLUTION

The starter `labs/chNN/<lab>.ipynb` is the same notebook with each marked
region removed (C) or replaced by `raise NotImplementedError` (Python), and
the markers themselves stripped from the solution's view. A starter's "Try
it" cell (tag `try`) also gets the tag `raises-exception`: it fails until the
answer is written, and "Run All" must still reach the check cell.

    python tools/labgen.py          # write every starter
    python tools/labgen.py --check  # exit 1 if a starter is stale
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^(\s*)(//|#) (BEGIN|END) SOLUTION\s*$")


def strip_solutions(source: str) -> str:
    """The starter version of one cell's source."""
    out, inside = [], False
    for line in source.splitlines():
        m = MARKER.match(line)
        if m:
            indent, comment, which = m.groups()
            if which == "BEGIN":
                inside = True
                if comment == "#":
                    out.append(f'{indent}raise NotImplementedError("your code here")')
            else:
                inside = False
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


def solution_view(source: str) -> str:
    """The solution with its marker lines removed (what `solutions` shows)."""
    return "\n".join(ln for ln in source.splitlines() if not MARKER.match(ln))


def starter_notebook(src: Path) -> nbformat.NotebookNode:
    nb = jupytext.read(src)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"          # stable ids: regenerating changes nothing
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
            tags = cell.metadata.get("tags", [])
            if "try" in tags and "raises-exception" not in tags:
                # the unfinished answer fails here: "Run All" goes on to the check
                cell.metadata["tags"] = [*tags, "raises-exception"]
    nb.metadata.pop("jupytext", None)
    return nb


def starter_path(src: Path) -> Path:
    return ROOT / "labs" / src.parent.name / (src.stem + ".ipynb")


def sources() -> list[Path]:
    return sorted((ROOT / "solutions").glob("ch*/lab_*.py"))


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for src in sources():
        dst = starter_path(src)
        text = render(starter_notebook(src))
        if "--check" in argv:
            if not dst.exists() or dst.read_text() != text:
                stale.append(dst.relative_to(ROOT))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(text)
            print(f"wrote {dst.relative_to(ROOT)}")
    if stale:
        print("stale starters (run python tools/labgen.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
