"""Execute the chapter notebooks and store their reference outputs.

The source of each chapter is `notebooks/chNN_*.py` (jupytext percent
format, what reviewers read). This writes the paired `.ipynb` with fresh
outputs, which nbval then compares against on every test run.

    sudo .venv/bin/python tools/build_notebooks.py             # all chapters
    sudo .venv/bin/python tools/build_notebooks.py ch01        # those matching
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "ebpf-root"


def build(src: Path, timeout: int = 600) -> Path:
    nb = jupytext.read(src)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout,
                            resources={"metadata": {"path": str(src.parent)}})
    client.execute()
    for cell in nb.cells:          # run timestamps would make every rebuild a diff
        cell.metadata.pop("execution", None)
    dst = src.with_suffix(".ipynb")
    jupytext.write(nb, dst)
    return dst


def main(argv: list[str]) -> int:
    pattern = argv[0] if argv else ""
    for src in sorted((ROOT / "notebooks").glob("ch*.py")):
        if pattern in src.name:
            t = time.monotonic()
            dst = build(src)
            print(f"built {dst.relative_to(ROOT)} in {time.monotonic() - t:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
