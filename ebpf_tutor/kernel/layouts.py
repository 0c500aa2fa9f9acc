"""Every struct layout in a header tree, compared with the kernel's BTF.

A header tree can compile and still describe a struct differently from the
running kernel (a backported member, a config option the tree was prepared
without). A program then reads the wrong bytes and nothing warns. So we ask
the C compiler for the size and the offset of every named, byte-aligned
member of every struct and union that the course's header set defines, and
compare each with BTF. Nothing is sampled: a struct outside any list is
checked like `task_struct`.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .btf import Btf

# The headers the course's programs and BCC's own helpers include (BCC adds
# the first group itself; the second is what the chapters and labs include).
# One list: the audit, the repair and the doctor all use it.
HEADER_SET = [
    "linux/types.h", "linux/version.h", "linux/log2.h", "asm/page.h", "linux/time.h",
    "linux/slab.h", "uapi/linux/ptrace.h", "uapi/linux/if_packet.h", "uapi/linux/if_ether.h",
    "linux/sched.h", "linux/mm_types.h", "linux/fs.h", "linux/dcache.h", "linux/cgroup.h",
    "linux/ptrace.h", "linux/skbuff.h", "linux/netdevice.h", "linux/tcp.h", "linux/udp.h",
    "linux/bpf.h", "linux/blkdev.h", "linux/blk-mq.h", "net/sock.h", "net/inet_sock.h",
    "net/tcp.h", "net/tcp_states.h",
]

_ERROR = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):\d+: error: (?P<msg>.*)$", re.M)


class LayoutCompileError(RuntimeError):
    """The header set itself does not compile in this tree."""


@dataclass
class Mismatch:
    record: str                 # "struct task_struct"
    member: str                 # "" for the record's size
    headers: int | None         # None: the headers lack this member
    btf: int

    def __str__(self) -> str:
        what = f"{self.record}.{self.member}" if self.member else f"sizeof({self.record})"
        got = "missing" if self.headers is None else str(self.headers)
        return f"{what} headers={got} btf={self.btf}"


@dataclass
class Audit:
    """What the compiler saw against what BTF says, for every defined record."""
    records: int = 0
    members: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped_headers: list[str] = field(default_factory=list)   # do not compile in this tree
    offsets: dict[tuple[str, str], int | None] = field(default_factory=dict)  # what clang said

    @property
    def wrong_records(self) -> list[str]:
        return sorted({m.record for m in self.mismatches})

    def summary(self) -> str:
        wrong = self.wrong_records
        line = (f"{self.members:,} members of {self.records:,} structs"
                + (" match BTF" if not wrong else
                   f": {len(self.mismatches):,} wrong in {len(wrong)} ({', '.join(wrong[:4])}"
                   + (", ..." if len(wrong) > 4 else "") + ")"))
        return line


def clang_include() -> str:
    """clang's own builtin headers (stddef.h, stdarg.h), as the kernel build uses."""
    r = subprocess.run(["clang", "-print-resource-dir"], capture_output=True, text=True)
    return str(Path(r.stdout.strip(), "include"))


def compile_probe(flags: list[str], body: list[str], emit: bool,
                  headers: list[str] | None = None) -> tuple[str, str]:
    """Compile the header set (or `headers`) followed by `body` for the host
    target (as BCC's front end parses kernel headers). Returns (LLVM IR or "",
    diagnostics). The body starts on line len(headers) + 1."""
    lines = [f"#include <{h}>" for h in (HEADER_SET if headers is None else headers)] + body
    with tempfile.TemporaryDirectory(prefix="ebt-layout-") as tmp:
        src = Path(tmp, "layout.c")
        src.write_text("\n".join(lines) + "\n")
        mode = ["-S", "-emit-llvm", "-o", "-"] if emit else ["-fsyntax-only"]
        cmd = ["clang", "-O1", "-nostdinc", "-isystem", clang_include(), "-w",
               "-ferror-limit=0", "-fno-caret-diagnostics", *mode, *flags, str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True)
    return (r.stdout if r.returncode == 0 else ""), r.stderr


def _errors_by_line(stderr: str, first_line: int) -> dict[int, str]:
    """The probe's own error lines (1-based in the body), header errors apart."""
    out: dict[int, str] = {}
    for m in _ERROR.finditer(stderr):
        if m["file"].endswith("layout.c") and int(m["line"]) > first_line:
            out.setdefault(int(m["line"]) - first_line, m["msg"])
    return out


def _header_errors(err: str) -> list[re.Match]:
    return [m for m in _ERROR.finditer(err) if not m["file"].endswith("layout.c")]


def usable_headers(flags: list[str]) -> tuple[list[str], list[str]]:
    """The headers of the set that compile in this tree, and those that do
    not (a kernel older or newer than the set was chosen for): the audit
    covers the first; a program including one of the others gets the
    compiler's own error."""
    _, err = compile_probe(flags, [], emit=False)
    if not _header_errors(err):
        return list(HEADER_SET), []
    good, bad = [], []
    for h in HEADER_SET:
        _, err = compile_probe(flags, [], emit=False, headers=good + [h])
        (bad if _header_errors(err) else good).append(h)
    return good, bad


def defined_records(flags: list[str], names: list[str], headers: list[str]) -> set[str]:
    """Which of `names` the `headers` define completely."""
    body = [f"unsigned long ebt_{i} = sizeof({n});" for i, n in enumerate(names)]
    _, err = compile_probe(flags, body, emit=False, headers=headers)
    if _header_errors(err):
        first = _header_errors(err)[0]
        raise LayoutCompileError(f"{first['file']}:{first['line']}: {first['msg']}")
    bad = _errors_by_line(err, len(headers))
    return {n for i, n in enumerate(names) if (i + 1) not in bad}


def _probe_lines(probes: list[tuple[str, str]]) -> list[str]:
    """One constant per (record, member): the record's size where member is ""."""
    return [(f"const unsigned long ebt_{i} = sizeof({rec});" if not m else
             f"const unsigned long ebt_{i} = __builtin_offsetof({rec}, {m});")
            for i, (rec, m) in enumerate(probes)]


def audit(flags: list[str], btf: Btf, only: set[str] | None = None) -> Audit:
    """Compare every member offset and size of the records the header set
    defines (or just those in `only`) with BTF."""
    btf_records = btf.named_records()
    names = sorted(btf_records if only is None else set(btf_records) & only)
    headers, skipped = usable_headers(flags)
    if not headers:
        raise LayoutCompileError("none of the header set compiles in this tree")
    defined = sorted(defined_records(flags, names, headers))
    # one probe line per (record, member): its size first, then its members
    probes: list[tuple[str, str]] = []
    for rec in defined:
        probes.append((rec, ""))
        members: dict[str, None] = {}
        for t in btf_records[rec]:
            members.update(dict.fromkeys(btf.flat_members(t)))
        probes += [(rec, m) for m in members]
    # members the headers lack fail to compile: find them, then measure the rest
    _, err = compile_probe(flags, _probe_lines(probes), emit=False, headers=headers)
    missing = _errors_by_line(err, len(headers))
    keep = [p for i, p in enumerate(probes) if (i + 1) not in missing]
    ir, err = compile_probe(flags, _probe_lines(keep), emit=True, headers=headers)
    if not ir:
        raise LayoutCompileError(err.strip().splitlines()[-1] if err.strip() else "clang failed")
    values = {int(i): int(v) for i, v in re.findall(r"^@ebt_(\d+) = .*? i64 (\d+)", ir, re.M)}
    got = {p: values.get(i) for i, p in enumerate(keep)}
    result = Audit(records=len(defined), skipped_headers=skipped, offsets=got)
    for rec in defined:
        layouts = btf_records[rec]
        candidates = [{"": t.size_or_type, **btf.flat_members(t)} for t in layouts]
        want = candidates[0]
        # a name BTF gives several layouts to: the headers may match any one
        for c in candidates:
            if all(got.get((rec, m), -1) == off for m, off in c.items()):
                want = c
                break
        for m, off in want.items():
            seen = got.get((rec, m))
            if m:
                result.members += 1
            if seen != off:
                result.mismatches.append(Mismatch(rec, m, seen, off))
    return result
