"""Folded stacks: one line per distinct stack, root first, frames joined by
';', then a space and a count (samples, nanoseconds or bytes):

    hotcold;main;hot;spin 297
    hotcold;main;cold;spin 99

This is the input format of flame graph renderers (Brendan Gregg's
flamegraph.pl reads it; so does ours, `flamegraph.py`)."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

Folded = dict[str, int]


def fold(samples: Iterable[tuple[Iterable[str], int]]) -> Folded:
    """(frames root first, count) pairs -> {"a;b;c": total}; equal stacks add up.
    A ';' inside a frame name (C++ templates) would split it: it becomes ':'."""
    out: Counter[str] = Counter()
    for frames, n in samples:
        out[";".join(f.replace(";", ":") for f in frames)] += int(n)
    return dict(out)


def to_text(folded: Mapping[str, int]) -> str:
    """The folded lines, sorted by stack (as flamegraph.pl expects them)."""
    return "".join(f"{stack} {n}\n" for stack, n in sorted(folded.items()) if n > 0)


def parse(text: str) -> Folded:
    """Folded lines back into a dict (blank lines skipped)."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if line.strip():
            stack, _, n = line.rstrip().rpartition(" ")
            out[stack] += int(n)
    return dict(out)


def total(folded: Mapping[str, int]) -> int:
    return sum(folded.values())


def share(folded: Mapping[str, int], function: str) -> float:
    """Inclusive share of `function`: the fraction of the total whose stack has
    it as a frame (counted once per stack, however deep the recursion)."""
    all_ = total(folded)
    if not all_:
        return 0.0
    return sum(n for stack, n in folded.items() if function in stack.split(";")) / all_


def shares(folded: Mapping[str, int], functions: Iterable[str]) -> dict[str, float]:
    return {f: share(folded, f) for f in functions}


def only(folded: Mapping[str, int], function: str) -> Folded:
    """The stacks that contain `function`."""
    return {s: n for s, n in folded.items() if function in s.split(";")}


def top(folded: Mapping[str, int], n: int = 10) -> list[tuple[str, int]]:
    return sorted(folded.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
