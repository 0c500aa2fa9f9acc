"""The program handle: BCC's `BPF` with headers, quiet compiles, readable
errors and guaranteed cleanup.

    with Program(C_TEXT) as prog:          # compile + load (+ auto-attach)
        prog.attach_tracepoint("syscalls:sys_enter_execve", "on_exec")
        ...                                # read prog["my_map"]
    # detached and unloaded here, even on error or Ctrl-C

`Program` is a subclass of `bcc.BPF`, so everything in BCC's reference guide
works on it unchanged.
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import hashlib
import os
import re
import select
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Iterator

from . import errors
from .kernel import headers
from .kernel.bcc_import import BPF, bcc_version

COMPAT_H = Path(__file__).with_name("compat.h")
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_live: "weakref.WeakSet[Program]" = weakref.WeakSet()
_headers_checked = False
_prechecked: set[str] = set()        # text+flags digests of compiles that survived
PRECHECK_TIMEOUT = 120.0             # seconds; a compile of the biggest headers takes 2
RELOG_SIZE = 1 << 22                 # bytes of verifier log asked for when BCC gave none


class Captured:
    text = ""


@contextlib.contextmanager
def capture_stderr() -> Iterator[Captured]:
    """Collect what C code writes to file descriptor 2 (clang, libbpf and the
    verifier log all go there, past Python's sys.stderr)."""
    cap = Captured()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield cap
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            cap.text = tmp.read().decode(errors="replace")


def use_verified_headers() -> headers.HeadersStatus | None:
    """Point BCC at the BTF-verified header tree (once per process)."""
    global _headers_checked
    if _headers_checked:
        return None
    _headers_checked = True
    try:
        st = headers.ensure(log=lambda *_: None, prepare=False)
    except headers.HeadersError:
        return None  # BCC will say it found no headers; compile_error() adds the fix
    headers.activate(st)
    return st


def default_cflags() -> list[str]:
    """-Wno-everything silences pages of clang warnings from kernel headers,
    but a call to an undeclared function (a misspelt helper) stays an error at
    its line, not a load failure later; the compat include lets BCC older than
    0.31 use a 6.x kernel's networking headers."""
    flags = ["-Wno-everything", "-Werror=implicit-function-declaration"]
    if bcc_version() < (0, 31):
        flags += ["-include", str(COMPAT_H)]
    return flags


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel, where an aborted process loses the
    learner's state (a script or a lab run in its own process loses nothing)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def precheck_compile(text: str, cflags: list[str]) -> None:
    """Compile `text` once in a forked child, so that a compiler that aborts
    the whole process (LLVM's fatal errors: a stack over 512 bytes, too many
    arguments to bpf_trace_printk) takes the child down, not the notebook.

    Raises CompileError if the child died. A source that already survived
    once (same flags) is not compiled again."""
    key = hashlib.sha256(repr((text, cflags)).encode()).hexdigest()
    if key in _prechecked:
        return
    lib = bcc_lib()
    flags = list(cflags)
    argv = (ct.c_char_p * len(flags))(*[f.encode() for f in flags])
    rd, wr = os.pipe()
    with tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                                     # the child: compile, say so, vanish
            try:
                os.close(rd)
                os.dup2(err.fileno(), 2)
                os.dup2(err.fileno(), 1)
                module = lib.bpf_module_create_c_from_string(text.encode(), 0, argv, len(flags),
                                                             True, None)
                os.write(wr, b"ok" if module else b"failed")
            finally:
                os._exit(0)
        os.close(wr)
        try:
            ready, _, _ = select.select([rd], [], [], PRECHECK_TIMEOUT)
            said = os.read(rd, 16) if ready else b""
        finally:
            os.close(rd)
            if not said:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
        err.seek(0)
        output = err.read().decode(errors="replace")
    if not said:
        raise errors.fatal_compile_error(output, text, os.waitstatus_to_exitcode(status),
                                         bcc_line_offset(cflags))
    if said == b"ok":
        _prechecked.add(key)


DEBUG_SOURCE = 0x8                   # BCC's debug flag: a listing with the source interleaved
_LISTING_FN = re.compile(r"^Disassembly of function (\w+)")
_LISTING_SRC = re.compile(r"^; (.*?) // Line\s+(\d+)$")
_LISTING_INSN = re.compile(r"^\s*(\d+):\s")


def source_listing(listing: str, fn: str) -> dict[int, tuple[str, int]]:
    """Parse BCC's DEBUG_SOURCE listing: the first instruction of each source
    line of function `fn` -> (that line's text, its number in main.c)."""
    out: dict[int, tuple[str, int]] = {}
    current, pending = "", None
    for line in listing.splitlines():
        m = _LISTING_FN.match(line)
        if m:
            current, pending = m.group(1), None
            continue
        if current != fn:
            continue
        m = _LISTING_SRC.match(line)
        if m:
            pending = (m.group(1), int(m.group(2)))
            continue
        m = _LISTING_INSN.match(line)
        if m and pending:
            out[int(m.group(1))] = pending
            pending = None
    return out


def annotate_log(log: str, lines: dict[int, tuple[str, int]]) -> str:
    """Put the source line before each instruction that starts it, the way
    the verifier quotes source when it has BTF line information."""
    if not lines:
        return log
    out = []
    for ln in log.splitlines():
        m = re.match(r"^(\d+): \(", ln)
        if m and int(m.group(1)) in lines:
            text, num = lines[int(m.group(1))]
            out.append(f"; {text} @ main.c:{num}")
        out.append(ln)
    return "\n".join(out)


_offsets: dict[str, int] = {}


def bcc_line_offset(cflags: list[str]) -> int | None:
    """How many lines BCC's rewriter puts in front of your text in the main.c
    it compiles (read from the DEBUG_SOURCE listing of a two-line program)."""
    key = repr(cflags)
    if key not in _offsets:
        lib = bcc_lib()
        argv = (ct.c_char_p * len(cflags))(*[f.encode() for f in cflags])
        probe = b"int ebpf_tutor_line_probe(void *ctx) {\n    return 0x1e;\n}\n"
        with capture_stderr() as cap:
            module = lib.bpf_module_create_c_from_string(probe, DEBUG_SOURCE, argv, len(cflags),
                                                         True, None)
            if module:
                lib.bpf_module_destroy(module)
        m = re.search(r"^; return 0x1e; // Line\s+(\d+)$", cap.text, re.M)
        if not m:
            return None
        _offsets[key] = int(m.group(1)) - 2
    return _offsets[key]


def bcc_lib():
    """libbcc through BCC's own ctypes bindings."""
    from bcc import libbcc
    return libbcc.lib


class MapNotFound(KeyError):
    """`prog[name]` for a map the program does not declare."""

    def __init__(self, name: str | bytes):
        self.name = name.decode() if isinstance(name, bytes) else name
        super().__init__(self.name)

    def __str__(self) -> str:
        return (f"this program has no map named {self.name!r}: declare it in the C source "
                f"(e.g. BPF_HASH({self.name}, ...)) and load the program again")


class Program(BPF):
    """A BCC program that explains its failures and cleans up after itself."""

    def __init__(self, text: str, *, cflags: list[str] | tuple[str, ...] = (), name: str = "",
                 precheck: bool | None = None, **kwargs):
        use_verified_headers()
        self.source = text
        self.name = name or "program"
        self._closed = False
        failure = None
        flags = default_cflags() + list(cflags)
        if precheck is None:          # where a crash would lose a learner's state
            precheck = in_notebook_kernel()
        if precheck:
            precheck_compile(text, flags)
        with capture_stderr() as cap:
            try:
                super().__init__(text=text, cflags=flags, **kwargs)
            except errors.BpfError:
                raise
            except Exception as e:  # noqa: BLE001 - translated below, with the captured text
                failure = e
        if failure is not None:
            raise _translate(failure, cap.text, text, "") from None
        _live.add(self)

    def load_func(self, func_name, prog_type, device=None, attach_type=-1):
        fn = func_name.decode() if isinstance(func_name, bytes) else func_name
        with capture_stderr() as cap:
            try:
                return super().load_func(func_name, prog_type, device, attach_type)
            except Exception as e:  # noqa: BLE001
                failure = e
        stderr = cap.text
        if not errors.has_verifier_log(stderr) and "Failed to load" in str(failure):
            stderr = self._verifier_log(fn, prog_type, device, attach_type) or stderr
        if errors.has_verifier_log(stderr) and not re.search(r"^; .* @ \S*main\.c:\d+$", stderr, re.M):
            stderr = annotate_log(stderr, self.source_lines(fn))
        raise _translate(failure, stderr, self.source, fn) from None

    def source_lines(self, fn: str) -> dict[int, tuple[str, int]]:
        """Instruction index -> (source text, line of BCC's main.c) for the
        instructions of `fn` that start a source line. BCC drops the line
        information when it retries a rejected load without BTF (so the
        verifier log quotes no source); its DEBUG_SOURCE listing has it."""
        lib = bcc_lib()
        flags = default_cflags()
        argv = (ct.c_char_p * len(flags))(*[f.encode() for f in flags])
        with capture_stderr() as cap:
            module = lib.bpf_module_create_c_from_string(self.source.encode(), DEBUG_SOURCE, argv,
                                                         len(flags), True, None)
            if module:
                lib.bpf_module_destroy(module)
        return source_listing(cap.text, fn)

    def _verifier_log(self, fn: str, prog_type: int, device, attach_type: int) -> str:
        """Load `fn` again with a log buffer of our own. BCC shows no verifier
        log when the kernel answers E2BIG (a program the verifier gave up on:
        too many instructions or jumps) and prints a wrong size instead.
        Level 4 gives the reason and the statistics on every kernel; level 1
        adds the path with its source lines, whose end we keep when it still
        holds the reason (kernels from 6.4 keep the end of a log that did
        not fit; older ones keep the start, which says nothing)."""
        logs = {}
        for level in (4, 1):
            loaded, logs[level] = self._load_with_log(fn, prog_type, level, device, attach_type)
            if loaded:                                   # it loaded this time: nothing to explain
                return ""
        stats = [ln for ln in logs[4].splitlines() if ln.strip()]
        reason = next((ln for ln in stats if not errors.is_log_noise(ln)), "")
        if reason and reason in logs[1]:
            return logs[1]
        return logs[4]

    def verifier_log(self, fn: str, prog_type: int, level: int = 2) -> str:
        """The verifier's log for function `fn`, loaded once more on the
        side (and unloaded) with log level `level`: 1 is the path with its
        source lines, 2 adds every register's state after every instruction,
        4 only the statistics. Whether or not the program is accepted."""
        return self._load_with_log(fn, prog_type, level)[1]

    def _load_with_log(self, fn: str, prog_type: int, level: int, device=None,
                       attach_type: int = -1) -> tuple[bool, str]:
        lib = bcc_lib()
        name = fn.encode()
        buf = ct.create_string_buffer(RELOG_SIZE)
        with capture_stderr():                           # BCC prints the whole log again
            fd = lib.bcc_func_load(self.module, prog_type, name,
                                   lib.bpf_function_start(self.module, name),
                                   lib.bpf_function_size(self.module, name),
                                   lib.bpf_module_license(self.module),
                                   lib.bpf_module_kern_version(self.module), level, buf,
                                   RELOG_SIZE, device, attach_type)
        if fd >= 0:
            os.close(fd)
        return fd >= 0, buf.value.decode(errors="replace")

    def attach_tracepoint(self, tp=b"", tp_re=b"", fn_name=b""):
        return self._attach(super().attach_tracepoint, tp=tp, tp_re=tp_re, fn_name=fn_name)

    def attach_raw_tracepoint(self, tp=b"", fn_name=b""):
        return self._attach(super().attach_raw_tracepoint, tp=tp, fn_name=fn_name)

    def attach_kprobe(self, *args, **kwargs):
        return self._attach(super().attach_kprobe, *args, **kwargs)

    def attach_kretprobe(self, *args, **kwargs):
        return self._attach(super().attach_kretprobe, *args, **kwargs)

    def attach_uprobe(self, *args, **kwargs):
        return self._attach(super().attach_uprobe, *args, **kwargs)

    def attach_uretprobe(self, *args, **kwargs):
        return self._attach(super().attach_uretprobe, *args, **kwargs)

    def _attach(self, method, *args, **kwargs):
        with capture_stderr() as cap:
            try:
                return method(*args, **kwargs)
            except errors.BpfError:
                raise
            except Exception as e:  # noqa: BLE001
                failure = e
        raise _attach_error(failure, cap.text) from None

    def cleanup(self) -> None:
        """Detach everything and unload (BCC's cleanup, run once, quietly)."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        for fn in self.funcs.values():       # BCC's attach_raw_socket never closes its socket,
            if getattr(fn, "sock", None) is not None:   # which keeps the program alive
                try:
                    os.close(fn.sock)
                except OSError:
                    pass
                fn.sock = None
        with capture_stderr():
            super().cleanup()

    def close(self) -> None:
        """Detach everything and unload. Safe to call twice."""
        if self._closed:
            super().close()      # BCC's cleanup() calls close() to release the fds
        else:
            self.cleanup()

    def __getitem__(self, name):
        """A map by name; a missing one says which, instead of BCC's bare KeyError."""
        try:
            return super().__getitem__(name)
        except KeyError:
            raise MapNotFound(name) from None

    def __enter__(self) -> "Program":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.funcs)} function(s) loaded"
        return f"<Program {self.name}: {state}>"


def close_all() -> int:
    """Close every Program (and raw bpf() object) this process still holds.
    Returns how many Programs were closed."""
    progs = list(_live)
    for p in progs:
        p.close()
    if "ebpf_tutor.bpfsys" in sys.modules:      # only if raw objects were ever made
        sys.modules["ebpf_tutor.bpfsys"].close_all()
    return len(progs)


def _translate(e: Exception, stderr: str, source: str, func: str) -> errors.BpfError:
    msg = str(e)
    if "Failed to compile" in msg:
        return errors.compile_error(stderr, source)
    if "Failed to load BPF program" in msg or "super-user" in msg:
        return errors.load_error(msg, stderr, source, func or "the program")
    if "Failed to attach" in msg or "Failed to open" in msg:
        return _attach_error(e, stderr)
    return errors.BpfError(msg, log_tail="\n".join(stderr.strip().splitlines()[-6:]))


def _attach_error(e: Exception, stderr: str) -> errors.BpfError:
    msg = str(e)
    detail = "\n".join(ln for ln in stderr.strip().splitlines()[-4:])
    code = errors.errno_from_message(msg + " " + stderr)
    if "kprobe" in msg.lower() and not Path("/sys/kernel/tracing/kprobe_events").exists() \
            and not Path("/sys/kernel/debug/tracing/kprobe_events").exists():
        return errors.FeatureUnavailable(
            "kprobes are not available: tracefs has no kprobe_events", hint="this kernel is built without kprobes (CONFIG_KPROBES): use a tracepoint "
            "instead, or run this chapter in the course VM", log_tail=detail)
    if "tracepoint" in msg and not any(Path(d, "events").is_dir() for d in TRACEFS_DIRS):
        return errors.AttachError(msg, log_tail=detail, hint="tracefs is not mounted: run "
                                  "`mount -t tracefs tracefs /sys/kernel/tracing` (or "
                                  "scripts/provision.sh)")
    if code in errors.TRANSIENT_ERRNOS:
        return errors.TransientError(msg, errno=code, log_tail=detail)
    if "No such file" in stderr or code == 2:
        return errors.AttachError(msg, errno=code, log_tail=detail,
                                  hint="the attach point does not exist on this kernel: list "
                                  "tracepoints with `ls /sys/kernel/tracing/events/<category>`")
    return errors.AttachError(msg, errno=code, log_tail=detail)
