"""Lab checks, one module per chapter (registered with labs.lab), and the
few helpers they share."""
from __future__ import annotations

from typing import Callable

from ...errors import BpfError
from ..verdict import LabFailed
from ...program import Program


def byte_order_blind(port: int) -> bool:
    """True for a port that reads the same in both byte orders (0x9393): with
    it, a program that forgets ntohs() or htons() would pass by luck."""
    return port >> 8 == port & 0xFF


def count_of(value) -> int:
    """A counter map's value as one number: a per-CPU map gives one value per
    CPU, summed (the per-CPU alternative to an atomic add is accepted)."""
    return value.value if hasattr(value, "value") else sum(value)


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


def load_packet_program(lab_id: str, program: str, fn_name: str, load: Callable,
                        ctx: str, cflags: list[str] | None = None) -> Program:
    """Compile the learner's program and load its function `fn_name` with
    `load` (xdp.load, tc.load: the verifier runs here). A missing function is
    a failing verdict that names the signature `int fn_name(ctx)`."""
    prog = Program(program, cflags=cflags or [], name=f"lab {lab_id}")
    try:
        load(prog, fn_name)
    except BpfError as e:
        if "Unknown program" in e.summary:
            prog.close()
            raise LabFailed(lab_id, f"your program has no function {fn_name}",
                            f"keep the name the lab gives: int {fn_name}({ctx})")
        raise
    return prog
