"""A lab's "Try it" cell, before the answer is written, fails in two readable lines.

A starter's "Try it" cell runs the learner's unfinished answer, so it fails:
a bare `KeyError` from BCC, a `NotImplementedError` from a TODO, a column
missing from an empty DataFrame. In JupyterLab the cell carries the tag
`raises-exception` (tools/labgen.py adds it), so "Run All" goes on to the
check cell, whose verdict says what to fix. This module makes the failure
itself readable: in an IPython kernel, an exception raised by a cell tagged
`try` prints what failed and where, instead of a traceback into BCC.

JupyterLab sends each cell's metadata, tags included, with its execute
request; other cells' errors are shown as usual.
"""
from __future__ import annotations

import re
import sys
import traceback

TAG = "try"
_CELL_FILE = re.compile(r"(^|/)ipykernel_\d+/\d+\.py$|^<ipython-input-")


def _cell_tags(shell) -> list[str]:
    kernel = getattr(shell, "kernel", None)
    try:
        parent = kernel.get_parent("shell") if kernel else {}
    except (AttributeError, TypeError):
        return []
    return list((parent or {}).get("metadata", {}).get("tags", []))


def summary(etype: type, value: BaseException, tb) -> list[str]:
    """The two or three lines a learner reads for a failed "Try it" cell."""
    message = str(value) or "(no message)"
    lines = [f"Try it: this cell stopped with {etype.__name__}: {message}",
             "  Expected while your answer is unfinished: the check cell below "
             "says what it needs."]
    frames = [f for f in traceback.extract_tb(tb) if _CELL_FILE.search(f.filename)]
    if frames:
        lines.append(f"  It stopped at line {frames[-1].lineno} of this cell: "
                     f"{(frames[-1].line or '').strip()}  (%tb in a new cell shows the rest)")
    return lines


def _handler(shell, etype, value, tb, tb_offset=None):
    if TAG not in _cell_tags(shell):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb   # for %tb
    shell._showtraceback(etype, value, summary(etype, value, tb))   # the cell's error output
    return None


def install() -> bool:
    """Register the handler in the running IPython kernel, if any (idempotent)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    shell.set_custom_exc((Exception,), _handler)
    return True
