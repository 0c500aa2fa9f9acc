"""Make a header tree's struct layouts agree with the kernel's BTF.

When the distribution's source lags the running kernel (a stable backport
added a member, a vendor patch added three), `layouts.audit` finds structs
whose offsets differ from BTF. For each one:

1. **repair**: its definition in the tree is rewritten with the one that
   `bpftool btf dump ... format c` prints from BTF, with any by-value types
   the tree lacks (each under a guard, so it is defined once);
2. **poison**, when a repaired definition does not fit the tree (a header's
   inline function uses a member BTF does not have): the original stays, but
   every member is marked `unavailable`, so a program that reads one fails
   to compile with a message that names the struct. Header functions that use
   it are marked the same way, so the header set still compiles.

Nothing is left silently wrong: a struct is exact, or it cannot be used.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection

from .btf import VMLINUX
from .layouts import HEADER_SET, compile_probe, usable_headers

POISON_MARK = "ebpf-tutor: layout differs from this kernel's BTF"
_DIAG = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<kind>error|note): (?P<msg>.*)$",
                   re.M)


@dataclass
class Edit:
    """A record's definition in one header: where it is and what replaces it."""
    record: str
    start: int                  # offset of the `struct`/`union` keyword
    end: int                    # offset just past the closing `;`
    text: str = ""              # the BTF definition (repair)
    needs: list[str] = field(default_factory=list)   # by-value types added before it


@dataclass
class RepairResult:
    repaired: list[str] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)    # found neither in the tree nor in BTF
    rounds: int = 0


# ----------------------------------------------------------- BTF as C --
def btf_definitions(path: Path = VMLINUX) -> tuple[dict[str, str], dict[str, int]]:
    """Every named definition that bpftool prints for BTF, as C text, keyed
    "struct X", "union X", "enum X" or a typedef's name; and their order
    (bpftool prints a type after the types it holds by value)."""
    r = subprocess.run(["bpftool", "btf", "dump", "file", str(path), "format", "c"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bpftool could not dump BTF: {r.stderr.strip()[-200:]}")
    defs: dict[str, str] = {}
    order: dict[str, int] = {}
    block: list[str] = []
    for line in r.stdout.splitlines():
        if block:
            block.append(line)
            if line.startswith("}") and line.rstrip().endswith(";"):
                _add_block(block, defs, order)
                block = []
            continue
        if re.match(r"(struct|union|enum|typedef) ", line):
            if line.rstrip().endswith("{"):
                block = [line]
            elif line.rstrip().endswith(";"):
                _add_block([line], defs, order)
    return defs, order


def _add_block(block: list[str], defs: dict[str, str], order: dict[str, int]) -> None:
    head, text = block[0], "\n".join(block)
    if head.startswith("typedef"):
        m = re.search(r"(\w+)\s*(?:\[[^\]]*\])*\s*;\s*$", block[-1]) or re.search(r"\(\s*\*\s*(\w+)\)", text)
        key = m.group(1) if m else ""
    else:
        m = re.match(r"(struct|union|enum) (\w+) \{", head)
        key = f"{m.group(1)} {m.group(2)}" if m else ""
    if key and key not in defs:
        defs[key] = text
        order[key] = len(order)


# ------------------------------------------------------------ locating --
def locate(flags: list[str], records: list[str],
           headers: list[str] | None = None) -> dict[str, tuple[Path, int, int]]:
    """Where the tree defines each record: (file, line, column of its name),
    as clang reports it when the record is defined a second time."""
    headers = HEADER_SET if headers is None else headers
    body = [f"{rec} {{ int ebt_redefined; }};" for rec in records]
    _, err = compile_probe(flags, body, emit=False, headers=headers)
    found: dict[str, tuple[Path, int, int]] = {}
    first = len(headers)
    diags = list(_DIAG.finditer(err))
    for i, d in enumerate(diags):
        if d["kind"] == "error" and d["file"].endswith("layout.c") and "redefinition" in d["msg"]:
            n = int(d["line"]) - first - 1
            if 0 <= n < len(records) and i + 1 < len(diags) and diags[i + 1]["kind"] == "note":
                note = diags[i + 1]
                found.setdefault(records[n], (Path(note["file"]), int(note["line"]), int(note["col"])))
    return found


def _offset(text: str, line: int, col: int) -> int:
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    return starts[line - 1] + col - 1


def _skip(text: str, i: int) -> int:
    """If a comment, string or char literal starts at i, the offset after it."""
    if text.startswith("/*", i):
        return text.index("*/", i + 2) + 2
    if text.startswith("//", i):
        return text.find("\n", i)
    if text[i] in "\"'":
        q, j = text[i], i + 1
        while text[j] != q:
            j += 2 if text[j] == "\\" else 1
        return j + 1
    return i


def definition_span(text: str, name_at: int) -> tuple[int, int, int, int] | None:
    """(start of `struct`, offset of `{`, offset of the matching `}`, offset
    past the `;`) of the definition whose tag name starts at name_at."""
    kw = max(text.rfind("struct", 0, name_at), text.rfind("union", 0, name_at))
    brace = text.find("{", name_at)
    if kw < 0 or brace < 0 or not re.fullmatch(r"(struct|union)\s+", text[kw:name_at]) \
            or not re.fullmatch(r"\w+\s*", text[name_at:brace]):
        return None
    depth, i = 0, brace
    while i < len(text):
        j = _skip(text, i)
        if j != i:
            i = j
            continue
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                semi = text.find(";", i)
                return (kw, brace, i, semi + 1) if semi > 0 else None
        i += 1
    return None


# ------------------------------------------------------------- editing --
class TreeEditor:
    """Edits to header files, always made from their original text, so a
    round of repairs can be rebuilt from scratch."""

    def __init__(self) -> None:
        self.original: dict[Path, str] = {}
        self.edits: dict[Path, list[Edit]] = {}
        self.functions: dict[Path, dict[int, str]] = {}   # offset -> poison message

    def add(self, path: Path, edit: Edit) -> None:
        self.original.setdefault(path, path.read_text())
        self.edits.setdefault(path, []).append(edit)

    def drop(self, record: str) -> None:
        for edits in self.edits.values():
            edits[:] = [e for e in edits if e.record != record]

    def poison_function(self, path: Path, line: int, message: str) -> bool:
        """Mark the header function around `line` unavailable."""
        self.original.setdefault(path, path.read_text())
        lines = self.original[path].split("\n")
        i = line - 1
        while i >= 0 and lines[i] != "{":
            if lines[i].rstrip().endswith("\\") or lines[i].startswith("}"):
                return False      # inside a macro, or not in a function body
            i -= 1
        j = i - 1
        while j > 0 and lines[j - 1].strip() and not lines[j - 1].rstrip().endswith((";", "}", "*/")) \
                and not lines[j - 1].startswith("#"):
            j -= 1
        if i < 0 or j < 0:
            return False
        off = sum(len(x) + 1 for x in lines[:j])
        marked = self.functions.setdefault(path, {})
        if off in marked:
            return False          # already marked: the error is not this function's
        marked[off] = message
        return True

    def record_at(self, path: Path, line: int) -> str | None:
        """The edited record whose new text holds `line` of the written file."""
        for e, first, last in self._regions.get(path, []):
            if first <= line <= last:
                return e.record
        return None

    def record_before(self, path: Path, line: int) -> str | None:
        """The last repaired record written above `line` in the same file:
        the likeliest cause of an error that names no struct."""
        before = [e for e, first, _ in self._regions.get(path, []) if first < line and e.text]
        return before[-1].record if before else None

    def write(self, defs: dict[str, str], order: dict[str, int]) -> None:
        self._regions: dict[Path, list[tuple[Edit, int, int]]] = {}
        for path, text in self.original.items():
            pieces: list[tuple[int, int, str, Edit | None]] = []
            for e in self.edits.get(path, []):
                pieces.append((e.start, e.end, _replacement(e, text, defs, order), e))
            for off, msg in self.functions.get(path, {}).items():
                pieces.append((off, off, f'__attribute__((unavailable("{msg}"))) ', None))
            out, pos, regions = [], 0, []
            for start, end, new, e in sorted(pieces, key=lambda p: p[0]):
                out.append(text[pos:start])
                first = "".join(out).count("\n") + 1
                out.append(new)
                if e is not None:
                    regions.append((e, first, first + new.count("\n")))
                pos = end
            out.append(text[pos:])
            path.write_text("".join(out))
            self._regions[path] = regions

    def restore(self) -> None:
        for path, text in self.original.items():
            path.write_text(text)


_PAD = re.compile(r"^(\s*)(long|int|short|char): (64|32|16|8);$", re.M)
_WIDTH = {"long": 64, "int": 32, "short": 16, "char": 8}


def named_padding(definition: str) -> str:
    """bpftool pads with unnamed bitfields (`long: 64;`). BCC 0.26's compile
    for the BPF target lays those out wider than clang's own layout says
    (measured: 7 of them after an int took 80 bytes, not 64, shifting every
    later member of mm_struct by 16), so full-width ones become named
    members, whose layout is the same under every target."""
    count = iter(range(1_000_000))

    def named(m: re.Match) -> str:
        if _WIDTH[m.group(2)] != int(m.group(3)):
            return m.group(0)
        return f"{m.group(1)}{m.group(2)} __ebt_pad{next(count)};"
    return _PAD.sub(named, definition)


def _guarded(key: str, defs: dict[str, str]) -> str:
    guard = "__EBT_HAVE_" + re.sub(r"\W", "_", key)
    return f"#ifndef {guard}\n#define {guard}\n{named_padding(defs[key])}\n#endif\n"


def _replacement(e: Edit, text: str, defs: dict[str, str], order: dict[str, int]) -> str:
    if not e.text:        # poisoned: the original, every member unavailable
        return _poisoned(text[e.start:e.end], e.record)
    original = text[e.start:e.end]
    trailing = original[original.rindex("}") + 1:-1]
    new = named_padding(e.text).rstrip()
    new = new[:new.rindex("}") + 1] + new[new.rindex("}") + 1:-1] + trailing + ";"
    added = "".join(_guarded(k, defs) for k in sorted(e.needs, key=lambda k: order.get(k, 0)))
    return (f"{added}/* {e.record}: rewritten by ebpf-tutor from the kernel's BTF */\n{new}\n"
            + "".join(_defines(original)))


def _defines(definition: str) -> list[str]:
    """The #define lines of a definition's body (constants and member
    aliases such as inet_sock's `inet_num`), kept after its rewrite."""
    out, keep = [], False
    for line in definition.split("\n"):
        keep = keep or bool(re.match(r"\s*#\s*define\b", line))
        if keep:
            out.append(line.strip() + "\n")
            keep = line.rstrip().endswith("\\")
    return out


def _poisoned(definition: str, record: str) -> str:
    """The definition with every member declaration marked unavailable."""
    msg = f"{POISON_MARK}: {record} cannot be used here (see ebpf-tutor doctor)"
    brace, end = definition.index("{"), definition.rindex("}")
    out, i, line_start = [definition[:brace + 1]], brace + 1, True
    while i < end:
        j = _skip(definition, i)
        if j != i:
            out.append(definition[i:j])
            i = j
            continue
        c = definition[i]
        if line_start and c == "#":            # a preprocessor line: keep as is
            j = definition.find("\n", i)
            out.append(definition[i:j])
            i = j
            continue
        if c == ";" and not "".join(out).rstrip().endswith("}"):   # not after an anonymous struct
            out.append(f' __attribute__((unavailable("{msg}")))')
        out.append(c)
        line_start = c == "\n" or (line_start and c in " \t")
        i += 1
    out.append(definition[end:])
    return "".join(out)


# ------------------------------------------------------------ the loop --
_NEEDS = [
    re.compile(r"field has incomplete type '((?:struct|union|enum) \w+)'"),
    re.compile(r"array has incomplete element type '((?:struct|union|enum) \w+)'"),
    re.compile(r"variable has incomplete type '((?:struct|union|enum) \w+)'"),
    re.compile(r"unknown type name '(\w+)'"),
]
_NAMES_RECORD = re.compile(r"'((?:struct|union) \w+)'")


def repair(tree_flags: list[str], wrong: list[str], log: Callable[[str], None] = print,
           max_rounds: int = 30, poison: Collection[str] = ()) -> RepairResult:
    """Rewrite the wrong records from BTF; poison those that do not fit
    (and those in `poison`, which tests use to poison a struct on purpose)."""
    defs, order = btf_definitions()
    headers, _ = usable_headers(tree_flags)
    where = locate(tree_flags, wrong, headers)
    editor = TreeEditor()
    result = RepairResult()
    for rec in wrong:
        loc = where.get(rec)
        span = None
        if loc is not None:
            path, line, col = loc
            text = editor.original.get(path) or path.read_text()
            span = definition_span(text, _offset(text, line, col))
        if span is None:
            log(f"{rec}: its definition could not be found in the tree; left as it is")
            result.failed.append(rec)
            continue
        # a record BTF cannot print is poisoned in place (text "")
        editor.add(path, Edit(rec, span[0], span[3], "" if rec in poison else defs.get(rec, "")))
    for result.rounds in range(1, max_rounds + 1):
        editor.write(defs, order)
        _, err = compile_probe(tree_flags, [], emit=False, headers=headers)
        errors = [d for d in _DIAG.finditer(err) if d["kind"] == "error"]
        if not errors:
            break
        progress = False
        for d in errors:
            path = Path(d["file"])
            rec = editor.record_at(path, int(d["line"]))
            need = next((m.group(1) for rx in _NEEDS if (m := rx.search(d["msg"]))), None)
            if rec and need and need in defs and need != rec:
                e = next(e for e in editor.edits[path] if e.record == rec)
                if need not in e.needs:
                    e.needs.append(need)
                    progress = True
                continue
            if "is unavailable: " + POISON_MARK in d["msg"]:
                who = re.search(r"(?:: |uses )((?:struct|union) \w+)", d["msg"])
                msg = f"{POISON_MARK}: uses {who.group(1) if who else 'a poisoned struct'}"
                progress |= editor.poison_function(path, int(d["line"]), msg)
                continue
            # an error outside our types' needs: give up the record it names
            named = rec or next((r for r in _NAMES_RECORD.findall(d["msg"])
                                 if any(e.record == r and e.text for es in editor.edits.values()
                                        for e in es)), None) or editor.record_before(path, int(d["line"]))
            if named:
                for es in editor.edits.values():
                    for e in es:
                        if e.record == named and e.text:
                            log(f"{named}: BTF's definition does not fit this tree ({d['msg']}); poisoned")
                            e.text, e.needs = "", []
                            progress = True
        if not progress:
            first = errors[0]
            editor.restore()
            raise RuntimeError(f"repair left the headers broken: {first['file']}:{first['line']}: "
                               f"{first['msg']}")
    else:
        editor.restore()
        raise RuntimeError(f"repair did not converge in {max_rounds} rounds")
    for es in editor.edits.values():
        for e in es:
            (result.repaired if e.text else result.poisoned).append(e.record)
    result.repaired.sort()
    result.poisoned = sorted(set(result.poisoned))
    return result
