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
import os
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
    """-w silences pages of clang warnings from kernel headers; the compat
    include lets BCC older than 0.31 use a 6.x kernel's networking headers."""
    flags = ["-w"]
    if bcc_version() < (0, 31):
        flags += ["-include", str(COMPAT_H)]
    return flags


class Program(BPF):
    """A BCC program that explains its failures and cleans up after itself."""

    def __init__(self, text: str, *, cflags: list[str] | tuple[str, ...] = (), name: str = "",
                 **kwargs):
        use_verified_headers()
        self.source = text
        self.name = name or "program"
        self._closed = False
        failure = None
        with capture_stderr() as cap:
            try:
                super().__init__(text=text, cflags=default_cflags() + list(cflags), **kwargs)
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
        raise _translate(failure, cap.text, self.source, fn) from None

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
