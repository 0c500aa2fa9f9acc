"""Assertions on bytes and errnos, with messages that show what differs."""
from __future__ import annotations

import contextlib
import errno as E
import os
from typing import Callable, Iterator, Sequence


def hexdump(data: bytes, width: int = 16) -> str:
    """Offset, hex bytes and ASCII, `width` bytes a row."""
    rows = []
    for off in range(0, len(data), width):
        chunk = data[off: off + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        rows.append(f"{off:04x}  {chunk.hex(' '):<{width * 3}} {text}")
    return "\n".join(rows)


def bytes_diff(expected: bytes, actual: bytes, width: int = 16, context: int = 1,
               layout: Sequence[tuple[str, int, int]] = (), max_rows: int = 8) -> str:
    """A readable diff of two byte strings: the rows that differ, expected
    above actual, with ^^ under each differing byte. `layout` names fields
    as (name, offset, size) so the message can say which field differs.
    At most `max_rows` differing rows are shown."""
    n = max(len(expected), len(actual))
    diffs = [i for i in range(n) if i >= len(expected) or i >= len(actual) or expected[i] != actual[i]]
    if not diffs:
        return ""
    head = [f"{len(diffs)} byte(s) differ, first at offset {diffs[0]} (0x{diffs[0]:x})"]
    if len(expected) != len(actual):
        head.append(f"lengths differ: expected {len(expected)} bytes, got {len(actual)}")
    names = sorted({name for name, off, size in layout for d in diffs if off <= d < off + size},
                   key=lambda nm: next(o for x, o, _ in layout if x == nm))
    if names:
        head.append("fields that differ: " + ", ".join(names))
    differ = set(diffs)
    rows_with_diff = sorted({d // width for d in diffs})
    hidden = rows_with_diff[max_rows:]
    show = sorted({r + c for r in rows_with_diff[:max_rows] for c in range(-context, context + 1)
                   if 0 <= r + c <= (n - 1) // width})
    lines, last = [], None
    for r in show:
        if last is not None and r != last + 1:
            lines.append("      ...")
        last = r
        lo = r * width
        e, a = expected[lo: lo + width], actual[lo: lo + width]
        lines.append(f"{lo:04x}  exp {e.hex(' ')}")
        lines.append(f"      got {a.hex(' ')}")
        marks = "".join("^^ " if lo + i in differ else "   " for i in range(max(len(e), len(a))))
        if marks.strip():
            lines.append("          " + marks.rstrip())
    if hidden:
        lines.append(f"      ... and {len(hidden)} more row(s) that differ")
    return "\n".join(head + lines)


def assert_bytes_equal(expected: bytes, actual: bytes, msg: str = "",
                       layout: Sequence[tuple[str, int, int]] = ()) -> None:
    """assert expected == actual, failing with a hex diff (see bytes_diff)."""
    expected, actual = bytes(expected), bytes(actual)
    if expected == actual:
        return
    text = bytes_diff(expected, actual, layout=layout)
    raise AssertionError((msg + "\n" if msg else "") + text)


def errno_of(exc: BaseException) -> int | None:
    """The errno an exception carries: OSError.errno, BpfError.errno, or the
    strerror() text that BCC puts in its plain Exception messages."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return code
    text = str(exc)
    found = [c for c in E.errorcode if os.strerror(c) in text]
    if found:   # the longest matching text: "Operation not permitted" over shorter ones
        return max(found, key=lambda c: len(os.strerror(c)))
    from ..errors import errno_from_message
    return errno_from_message(text)


class _ErrnoCatcher:
    exception: BaseException | None = None


@contextlib.contextmanager
def _raises_errno(code: int) -> Iterator[_ErrnoCatcher]:
    caught = _ErrnoCatcher()
    try:
        yield caught
    except Exception as e:  # noqa: BLE001 - checked below
        got = errno_of(e)
        if got != code:
            name = E.errorcode.get(got, str(got)) if got is not None else "no errno"
            raise AssertionError(f"expected errno {E.errorcode.get(code, code)} "
                                 f"({os.strerror(code)}), got {name}: {type(e).__name__}: {e}") from e
        caught.exception = e
        return
    raise AssertionError(f"expected errno {E.errorcode.get(code, code)} ({os.strerror(code)}), "
                         "but nothing was raised")


def assert_raises_errno(code: int, fn: Callable | None = None, *args, **kwargs):
    """Assert that fn(*args, **kwargs) raises an error with errno `code`.
    Without fn, a context manager: `with assert_raises_errno(errno.EPERM): ...`.
    Returns the exception (function form) or a holder with `.exception`."""
    if fn is None:
        return _raises_errno(code)
    with _raises_errno(code) as caught:
        fn(*args, **kwargs)
    return caught.exception
