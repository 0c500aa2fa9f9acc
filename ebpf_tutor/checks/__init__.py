"""Lab checks, one module per chapter (registered with labs.lab), and the
few helpers they share."""
from __future__ import annotations

from ..labs import LabFailed
from ..program import Program


def has_table(prog: Program, name: str) -> bool:
    """True if the learner's program declares a map called `name`."""
    try:
        prog[name]
        return True
    except KeyError:
        return False


def require_table(prog: Program, name: str, lab_id: str, hint: str):
    """The learner's map `name`; a failing verdict (next step: `hint`) if
    the program declares no such map."""
    try:
        return prog[name]
    except KeyError:
        raise LabFailed(lab_id, f"your program has no map named `{name}`", hint) from None

