"""Readable BPF errors: what failed, where in your source, and what to do.

BCC reports problems as a bare `Exception` and prints the compiler's or the
verifier's output on file descriptor 2. `program.Program` captures that text
and turns it into one of the classes below. Each has a `format()` that fits on
one screen, and Jupyter shows that instead of a stack trace.
"""
from __future__ import annotations

import errno as _errno
import functools
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")


class BpfError(Exception):
    """Base class: a BPF operation failed. `kind` names the class of failure."""

    kind = "bpf error"

    def __init__(self, summary: str, *, where: str = "", excerpt: str = "",
                 log_tail: str = "", hint: str = "", errno: int | None = None):
        super().__init__(summary)
        self.summary, self.where, self.excerpt = summary, where, excerpt
        self.log_tail, self.hint, self.errno = log_tail, hint, errno

    def format(self) -> str:
        """A multi-line diagnostic: summary, source excerpt, log tail, hint."""
        lines = [f"{self.kind}: {self.summary}"]
        if self.where:
            lines.append(f"  at {self.where}")
        if self.excerpt:
            lines += ["", self.excerpt]
        if self.log_tail:
            lines += ["", "last lines of the log:"]
            lines += ["  " + ln for ln in self.log_tail.splitlines()]
        if self.hint:
            lines += ["", f"hint: {self.hint}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def _render_traceback_(self) -> list[str]:
        """IPython calls this: show the diagnostic, not a stack trace."""
        return self.format().splitlines()


class CompileError(BpfError):
    kind = "compile error"


class VerifierError(BpfError):
    kind = "verifier rejected the program"


class BpfPermissionError(BpfError, PermissionError):
    kind = "permission denied"


class TransientError(BpfError):
    """A failure worth retrying (EAGAIN, EBUSY, EINTR)."""
    kind = "transient error"


class AttachError(BpfError):
    kind = "attach failed"


class FeatureUnavailable(BpfError):
    """This kernel lacks a feature (kprobes, fentry, LSM...)."""
    kind = "not available on this kernel"


TRANSIENT_ERRNOS = {_errno.EAGAIN, _errno.EBUSY, _errno.EINTR}

ROOT_HINT = ("BPF needs root (CAP_BPF and CAP_PERFMON or CAP_SYS_ADMIN). In JupyterLab pick "
             "the kernel 'eBPF (root)'; on the command line run with sudo.")


def is_verifier_error(e: BaseException) -> bool:
    return isinstance(e, VerifierError)


def is_permission_error(e: BaseException) -> bool:
    return isinstance(e, BpfPermissionError) or getattr(e, "errno", None) in (_errno.EPERM, _errno.EACCES) \
        and not isinstance(e, VerifierError)


def is_transient(e: BaseException) -> bool:
    return isinstance(e, TransientError) or getattr(e, "errno", None) in TRANSIENT_ERRNOS


def retry(fn: Callable[[], T], *, attempts: int = 3, delay: float = 0.05,
          backoff: float = 2.0) -> T:
    """Call `fn`, retrying transient failures with exponential backoff.

    Anything that is not transient (a verifier rejection, a permission error)
    is raised at once: retrying cannot fix it."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if i == attempts - 1 or not is_transient(e):
                raise
            time.sleep(delay * backoff ** i)
    raise AssertionError("unreachable")


def retrying(attempts: int = 3, delay: float = 0.05):
    """Decorator form of `retry`."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            return retry(lambda: fn(*a, **kw), attempts=attempts, delay=delay)
        return wrapper
    return deco


# ------------------------------------------------------------ source excerpt --
def excerpt(source: str, line: int, col: int = 0, context: int = 2) -> str:
    """The source lines around `line` (1-based), with a marker and a caret."""
    lines = source.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    out = []
    for n in range(max(1, line - context), min(len(lines), line + context) + 1):
        mark = ">" if n == line else " "
        out.append(f"{mark}{n:4d} | {lines[n - 1]}")
        if n == line and col > 0:
            out.append("       | " + " " * (col - 1) + "^")
    return "\n".join(out)


# --------------------------------------------------------------- compile ----
_DIAG = re.compile(r"^(?:/virtual/)?main\.c:(\d+):(\d+): (error|fatal error): (.*)$", re.M)
_ANY_ERROR = re.compile(r"^(\S+?):(\d+):(\d+): (?:fatal )?error: (.*)$", re.M)


def compile_error(stderr: str, source: str) -> CompileError:
    """Turn clang's output into a CompileError pointing at the first error.

    BCC compiles your text as /virtual/main.c with lines of its own put in
    front, so clang's line numbers are shifted: we find your line by the
    source text clang echoes under its message."""
    m = _DIAG.search(stderr)
    n_errors = len(re.findall(r": (?:fatal )?error: ", stderr))
    more = f" (and {n_errors - 1} more error{'s' if n_errors > 2 else ''})" if n_errors > 1 else ""
    if m:
        col, msg = int(m.group(2)), m.group(4)
        echoed = stderr[m.end():].lstrip("\n").split("\n", 1)[0]
        line = _find_line(source, echoed)
        if line:
            return CompileError(msg + more, where=f"line {line}, column {col} of your program",
                                excerpt=excerpt(source, line, col), hint=_compile_hint(msg))
        return CompileError(msg + more, where=f"`{echoed.strip()}` (line {m.group(1)} of BCC's "
                            "main.c)", hint=_compile_hint(msg))
    m = _ANY_ERROR.search(stderr)
    if m:  # the error is inside a header
        msg = m.group(4)
        return CompileError(msg + more, where=f"{m.group(1)}:{m.group(2)} (a header)",
                            hint=_compile_hint(msg) or "an error inside kernel headers usually means the "
                            "headers do not match this BCC or kernel: run `ebpf-tutor doctor`")
    tail = "\n".join(stderr.strip().splitlines()[-6:])
    if "Unable to find kernel headers" in stderr:
        return CompileError("BCC found no kernel headers", log_tail=tail,
                            hint="run `ebpf-tutor headers` (or scripts/provision.sh) to prepare them")
    return CompileError("the program did not compile", log_tail=tail)


_COMPILE_HINTS = [
    (r"'(\w+)' is unavailable: ebpf-tutor: layout differs from this kernel's BTF: (?:uses )?((?:struct|union) \w+)",
     "'{0}' belongs to {1}, whose layout in the prepared headers could not be made equal to this "
     "kernel's BTF, so reading it would give wrong bytes; `ebpf-tutor doctor` lists such structs. "
     "Read the field another way (a tracepoint argument, a helper), or use CO-RE (chapter 10)"),
    (r"undeclared identifier '(\w+)'", "'{0}' is not defined: a typo, a missing #include, or a map "
     "declared after its first use"),
    (r"implicit declaration of function '(\w+)'", "'{0}' is not a known function or helper: check the "
     "name, or the #include that declares it"),
    (r"expected ';'", "a statement is missing its ';'"),
    (r"no member named '(\w+)'", "this struct has no field '{0}' on this kernel: check the name, or "
     "the kernel version it appeared in"),
    (r"incomplete type", "the struct is only forward-declared here: #include the header that defines it"),
    (r"file not found", "that header does not exist in this kernel's tree"),
]


_FATAL_HINTS = [
    (r"stack limit|stack size|[Ss]tack .*exceeded",
     "a function's local variables take more than the 512 bytes of BPF stack: put big "
     "structs in a per-CPU array map (one slot used as scratch space) or reserve them "
     "directly in the ring buffer"),
    (r"too many args|trace_printk",
     "bpf_trace_printk takes a format and at most 3 values: split the print in two, or "
     "send the values through a ring buffer"),
]


def fatal_compile_error(output: str, source: str, status: int,
                        bcc_line_offset: int | None = None) -> CompileError:
    """The compiler aborted (LLVM's fatal errors end the process they run in:
    a child did the compile, so only the child died)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    reason = next((ln for ln in lines if "LLVM ERROR" in ln or "error:" in ln), "")
    reason = re.sub(r"^(LLVM ERROR|error): ?", "", reason)
    reason = re.sub(r"^\S*main\.c:\d+:\d+: in function \w+ [^:]*?\): ", "", reason) or \
        f"the compiler died (exit status {status}) without a message"
    hint = next((text for pattern, text in _FATAL_HINTS if re.search(pattern, output)), "")
    func = re.search(r"main\.c:(\d+):\d+: in function (\w+)", output)
    n = 0
    if func and bcc_line_offset is not None:
        n = int(func.group(1)) - bcc_line_offset
        n = n if 1 <= n <= len(source.splitlines()) else 0
    if func and not n:
        n = _line_of_function(source, func.group(2))
    if "too many args" in reason:           # LLVM names the call by an address: say it in words
        reason = "a call with more than 5 arguments (BPF passes at most 5 in registers)"
    where = f"line {n} of your program (function {func.group(2)})" if n else ""
    return CompileError(f"the compiler aborted: {reason}", where=where,
                        excerpt=excerpt(source, n) if n else "",
                        log_tail="\n".join(ln for ln in lines[-4:] if " 0x" not in ln), hint=hint)


def _line_of_function(source: str, func: str) -> int:
    """The line where function `func` is defined in `source`, or 0."""
    for i, ln in enumerate(source.splitlines(), 1):
        if re.search(rf"\b{re.escape(func)}\s*\(", ln) and not ln.rstrip().endswith(";"):
            return i
    return 0


def _compile_hint(msg: str) -> str:
    for pattern, text in _COMPILE_HINTS:
        m = re.search(pattern, msg)
        if m:
            return text.format(*m.groups())
    return ""


# -------------------------------------------------------------- verifier ----
@dataclass
class VerifierHint:
    pattern: str
    text: str


VERIFIER_HINTS = [
    VerifierHint(r"call bpf_(xdp_adjust_(head|tail|meta)|skb_(pull_data|change_\w+|adjust_room|"
                 r"vlan_\w+|store_bytes))#[\s\S]*invalid mem access 'scalar'",
                 "this helper moved the packet, so every packet pointer taken before it is void: "
                 "read ctx->data and ctx->data_end again after the call, and check bounds again"),
    VerifierHint(r"pointer arithmetic on \w*or_null",
                 "arithmetic on a pointer that may be NULL: test the pointer first "
                 "(`if (!p) return 0;`), then compute the address from it"),
    VerifierHint(r"invalid mem access '(map_value_or_null|ptr_or_null_|.*or_null)",
                 "a pointer that may be NULL (such as a map lookup's result) was dereferenced: "
                 "test it first, e.g. `if (!val) return 0;`"),
    VerifierHint(r"invalid mem access 'scalar'|invalid mem access 'inv'",
                 "a plain number was used as a pointer. Kernel memory must be read with "
                 "bpf_probe_read_kernel(), user memory with bpf_probe_read_user()"),
    VerifierHint(r"invalid access to map value, value_size=(\d+) off=(-?\d+) size=(\d+)",
                 "read or write outside a map value: the verifier must see the index is in "
                 "bounds, so check it (`if (i >= N) return 0;`) just before the access"),
    VerifierHint(r"min value is negative|unbounded min value|makes \w+ pointer be out of bounds",
                 "an index could be negative: a signed int passes `i < N` when it is below 0. "
                 "Bound it in a form the verifier follows: mask it (`i &= 15` for 16 slots) and "
                 "check it is still the value you meant, or use an unsigned copy"),
    VerifierHint(r"R\d+ unbounded memory access|(max|min) value is outside of the allowed memory range",
                 "a size or index has no upper bound the verifier can see: clamp it "
                 "(`if (len > sizeof(buf)) len = sizeof(buf);`) right before the call or access"),
    VerifierHint(r"invalid access to packet",
                 "a packet byte was read before proving it lies before data_end: check "
                 "`if ((void *)(hdr + 1) > data_end) return XDP_PASS;` first"),
    VerifierHint(r"back-edge from insn|infinite loop detected|loop is not bounded|"
                 r"BPF program is too large|too many states|jumps is too complex|"
                 r"too many instructions",
                 "the verifier walks every path and every loop iteration, up to 1 million "
                 "instructions, and gave up: bound the loop by a small constant "
                 "(`for (u32 i = 0; i < 64 && i < n; i++)`), or run its body with bpf_loop(), "
                 "which is verified once"),
    VerifierHint(r"invalid (indirect )?read from stack|uninitialized stack",
                 "stack memory was read before it was written: initialise structs with `= {}` "
                 "or __builtin_memset() before passing them to a helper or map"),
    VerifierHint(r"R0 !read_ok|R0 is not a known value",
                 "the function must return a value on every path (`return 0;`)"),
    VerifierHint(r"Unreleased reference|would lead to reference leak",
                 "a reserved ring-buffer record (or a socket reference) is not released on "
                 "every path: call submit() or discard() on each"),
    VerifierHint(r"unknown func|program of this type cannot use helper|helper call is not allowed",
                 "that helper is not allowed in this program type: see the helper list for "
                 "the type in `bpftool feature probe`"),
    VerifierHint(r"cannot call GPL-restricted function|GPL-incompatible",
                 "this helper is GPL-only: the program must declare a GPL-compatible license"),
    VerifierHint(r"invalid bpf_context access|dereference of modified ctx ptr|"
                 r"variable ctx access",
                 "the context (ctx/args) was read at an offset this program type does not allow: "
                 "use the fields of the context struct as they are declared"),
    VerifierHint(r"expected=|type=.* expected",
                 "a helper got an argument of the wrong kind (for example a value where it "
                 "needs a pointer to the stack or a map)"),
    VerifierHint(r"unreachable insn", "some code can never run; the compiler or an early return "
                 "left dead instructions"),
]

_NOISE = re.compile(r"^(\d+: \(|\d+: R\d|\d+: frame|from \d+ to \d+|processed \d+ insns|"
                    r"last_idx|regs=|parent didn't|mark_precise|verification time|stack depth|"
                    r"func#|; |Validating |\s*$|bpf: Failed to load program|libbpf:|R\d+=|HINT: |"
                    r"(cur|old) state:)")


def is_log_noise(line: str) -> bool:
    """A verifier log line that is not the reason (an instruction, a state,
    statistics, a source quote)."""
    return bool(_NOISE.match(line))


def has_verifier_log(text: str) -> bool:
    """Does `text` hold a verifier log (instructions or its statistics)?"""
    return bool(re.search(r"^\d+: \(", text, re.M)) or "processed " in text


_LINE_INFO = re.compile(r"^; (.*?)(?: @ \S*?main\.c:(\d+))?$")
_OTHER_FILE = re.compile(r" @ \S+\.[ch]:\d+$")     # a line of a header BCC inlined (helpers.h)
_GAVE_UP = re.compile(r"too complex|too large|too many states|infinite loop|loop is not bounded")
_LOOP = re.compile(r"\b(for|while)\s*\(")


def verifier_error(log: str, source: str, func: str, errno: int | None = None) -> VerifierError:
    """Turn a verifier log into a VerifierError: the reason, the source line
    the verifier stopped at, and a plain-English hint."""
    lines = [ln.rstrip() for ln in log.splitlines()]
    reason = next((ln for ln in reversed(lines) if not _NOISE.match(ln)), "")
    stop = len(lines)
    if reason:
        stop = max(i for i, ln in enumerate(lines) if ln == reason)
    n = _source_line_at(lines[:stop], source)
    if _GAVE_UP.search(reason):                       # the verifier gave up inside a loop: show it
        n = _loop_line(lines, source) or n
    alloc = re.search(r"alloc_insn=(\d+)", log)      # a leaked reference: show where it was taken
    if alloc:
        at = next((i for i, ln in enumerate(lines) if ln.startswith(f"{alloc.group(1)}: (")), -1)
        n = (_source_line_at(lines[:at + 1], source) if at >= 0 else 0) or n
    where = f"line {n} of your program (function {func})" if n else f"function {func}"
    useful = [ln for ln in lines[:stop + 1] if ln.strip() and not ln.startswith("bpf: Failed")]
    hint = next((h.text for h in VERIFIER_HINTS if re.search(h.pattern, log)), "")
    return VerifierError(reason or "the verifier rejected the program (no reason in the log)",
                         where=where, excerpt=excerpt(source, n) if n else "",
                         log_tail="\n".join(useful[-6:]), hint=hint, errno=errno)


def _source_line_at(lines: list[str], source: str) -> int:
    """The line of *your* source where the log stopped. The log quotes source
    lines ("; text @ main.c:N") from BCC's rewritten main.c: lines quoted
    verbatim give the offset between its numbering and yours."""
    quoted = [(m.group(1), int(m.group(2)) if m.group(2) else 0)
              for m in (_LINE_INFO.match(ln) for ln in lines)
              if m and m.group(1).strip() and not _OTHER_FILE.search(m.group(1))]
    if not quoted:
        return 0
    offsets = [num - n for text, num in quoted if num for n in [_find_line(source, text, exact=True)] if n]
    text, num = quoted[-1]
    n = _find_line(source, text, exact=True) or _assigned_line(source, text)
    if n:
        return n
    if offsets and num:
        guess = num - max(set(offsets), key=offsets.count)
        if 1 <= guess <= len(source.splitlines()):
            return guess
    return _find_line(source, text)


def _loop_line(lines: list[str], source: str) -> int:
    """The last loop head (`for (`, `while (`) the log quotes, as a line of
    your source, or 0: where a verifier that ran out of budget spent it."""
    for ln in reversed(lines):
        m = _LINE_INFO.match(ln)
        if m and _LOOP.search(m.group(1)) and not _OTHER_FILE.search(m.group(1)):
            n = _find_line(source, m.group(1), exact=True)
            if n:
                return n
    return 0


def _assigned_line(source: str, text: str) -> int:
    """The one source line that assigns what `text` assigns (`struct event *e =`):
    BCC rewrites the right side of a map call (`events.ringbuf_reserve(...)`
    becomes `bpf_ringbuf_reserve(...)`), never the left. 0 if not exactly one."""
    m = re.match(r"\s*([\w\s\*]+?\w)\s*=[^=]", text)
    if not m:
        return 0
    left = re.sub(r"\s+", " ", m.group(1))
    hits = [i for i, ln in enumerate(source.splitlines(), 1)
            if re.match(rf"\s*{re.escape(left)}\s*=[^=]", re.sub(r"\s+", " ", ln))]
    return hits[0] if len(hits) == 1 else 0


def _find_line(source: str, text: str, exact: bool = False) -> int:
    """1-based number of the source line whose text is `text` (the verifier
    quotes lines from debug info), or 0."""
    want = re.sub(r"\s+", " ", text).strip()
    for i, ln in enumerate(source.splitlines(), 1):
        if re.sub(r"\s+", " ", ln).strip() == want:
            return i
    if exact:
        return 0
    for i, ln in enumerate(source.splitlines(), 1):
        if want and want in re.sub(r"\s+", " ", ln):
            return i
    return 0


# ------------------------------------------------------------ load errors --
def errno_from_message(msg: str) -> int | None:
    """BCC writes strerror() text into its messages: map it back to an errno."""
    for code in (_errno.EPERM, _errno.EACCES, _errno.EINVAL, _errno.E2BIG, _errno.ENOENT,
                 _errno.EAGAIN, _errno.EBUSY, _errno.EINTR, _errno.ENOMEM, _errno.ENOSPC,
                 _errno.EOPNOTSUPP, _errno.ENOTSUPP if hasattr(_errno, "ENOTSUPP") else 524):
        if os.strerror(code) in msg:
            return code
    if "super-user" in msg:
        return _errno.EPERM
    return None


def load_error(message: str, stderr: str, source: str, func: str) -> BpfError:
    """Classify a failed program load from BCC's message and captured stderr."""
    code = errno_from_message(message)
    if has_verifier_log(stderr):
        return verifier_error(stderr, source, func, code)
    if code in (_errno.EPERM, _errno.EACCES):
        if os.geteuid() != 0:
            return BpfPermissionError(f"loading {func} needs privileges", hint=ROOT_HINT, errno=code)
        return BpfPermissionError(f"loading {func} was refused although we are root", errno=code,
                                  hint="this kernel blocks this program type (lockdown, or a "
                                  "disabled feature): run `ebpf-tutor doctor` to see which",
                                  log_tail="\n".join(stderr.strip().splitlines()[-4:]))
    if code in TRANSIENT_ERRNOS:
        return TransientError(f"loading {func}: {os.strerror(code)}", errno=code)
    return BpfError(f"loading {func} failed: {message}", errno=code,
                    log_tail="\n".join(stderr.strip().splitlines()[-6:]))
