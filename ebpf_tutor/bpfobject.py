"""BPFObject: a CO-RE object file (`clang -target bpf` output) loaded with libbpf.

BCC compiles C at run time against kernel headers. libbpf loads an object
that was compiled once, against `vmlinux.h`, and fixes its field offsets for
the running kernel from BTF (CO-RE). This is the libbpf half of the course:

    with BPFObject.compile(C_TEXT, name="procinfo") as obj:   # clang, open, load
        obj.attach("on_exec")                   # SEC("tp/...") knows where it goes
        with obj.ring_buffer("events", print):  # one call per record
            obj.poll(1000)
    # links destroyed, object closed, pins removed: even on error or Ctrl-C

Before loading, `.rodata` globals (`const volatile` in C) can be set:

    obj = BPFObject(path, load=False); obj.set_global("target_pid", 1234); obj.load()

Everything libbpf prints (CO-RE relocation lines included) is in `obj.log`;
a rejected program raises the course's VerifierError with the verifier log.
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import errno as _errno
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from . import errors
from .bpfsys.libbpf import (BTF_KIND_DATASEC, RINGBUF_SAMPLE_FN, LIBBPF_INFO, Log,
                            ObjectOpenOpts, TestRunOpts, UprobeOpts, UsdtOpts, VarSecinfo, capture_log,
                            libbpf)
from .bpfsys.maps import MapType, RawMap
from .bpfsys.programs import RunResult
from .bpfsys.syscall import FdObject
from .kernel.vmlinux import compile_bpf

SECTIONS = (".rodata", ".data", ".bss")          # where clang puts C globals
CORE_HINT = ("a CO-RE relocation failed: the field or type does not exist in this kernel's BTF. "
             "Guard the access with bpf_core_field_exists() / bpf_core_type_exists(), "
             "so that the branch that needs it is never taken here")


class Program:
    """One program of the object (a C function with a SEC(...))."""

    def __init__(self, obj: "BPFObject", ptr: int) -> None:
        self._obj, self.ptr = obj, ptr
        lib = libbpf()
        self.name = lib.bpf_program__name(ptr).decode()
        self.section = lib.bpf_program__section_name(ptr).decode()

    @property
    def fd(self) -> int:
        return libbpf().bpf_program__fd(self.ptr)

    def __repr__(self) -> str:
        return f"<program {self.name} SEC({self.section!r})>"


class Map(RawMap):
    """One map of the object: RawMap's lookup/update/delete/keys/items on
    libbpf's descriptor, which the object owns (so `close` here does nothing)."""

    def __init__(self, ptr: int):            # noqa: D107 - RawMap's __init__ would create a map
        lib = libbpf()
        self.ptr = ptr
        self.name = lib.bpf_map__name(ptr).decode()
        kind = lib.bpf_map__type(ptr)
        self.map_type = MapType(kind) if kind in MapType._value2member_map_ else kind
        self.key_size, self.value_size = lib.bpf_map__key_size(ptr), lib.bpf_map__value_size(ptr)
        self.max_entries = lib.bpf_map__max_entries(ptr)

    @property
    def fd(self) -> int:                                       # type: ignore[override]
        return libbpf().bpf_map__fd(self.ptr)

    def close(self) -> None:
        """The descriptor belongs to the object: closed with it."""

    def __repr__(self) -> str:
        return f"<map {self.name} type {int(self.map_type)}, key {self.key_size} B, value {self.value_size} B>"


class Link:
    """An attachment (struct bpf_link): destroyed with the object, or by `destroy()`."""

    def __init__(self, ptr: int, what: str):
        self.ptr, self.what = ptr, what

    @property
    def fd(self) -> int:
        return libbpf().bpf_link__fd(self.ptr) if self.ptr else -1

    def destroy(self) -> None:
        """Detach. Safe to call twice."""
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            libbpf().bpf_link__destroy(ptr)

    def __repr__(self) -> str:
        return f"<link {self.what}{'' if self.ptr else ' (destroyed)'}>"


class RingBuffer:
    """libbpf's ring_buffer on one BPF_MAP_TYPE_RINGBUF map. `callback(data)`
    gets each record as bytes; an exception in it stops the poll and is
    raised from `poll()`."""

    def __init__(self, map_fd: int, callback: Callable[[bytes], object]):
        self._callback, self._error = callback, None
        self._c_callback = RINGBUF_SAMPLE_FN(self._sample)     # kept alive with the ring
        self.ptr = libbpf().ring_buffer__new(map_fd, self._c_callback, None, None)
        if not self.ptr:
            raise errors.BpfError(f"ring_buffer__new: {os.strerror(ct.get_errno())}",
                                  errno=ct.get_errno())

    def _sample(self, _ctx: int, data: int, size: int) -> int:
        try:
            self._callback(ct.string_at(data, size))
            return 0
        except BaseException as e:  # noqa: BLE001 - carried out of the C call, raised in poll()
            self._error = e
            return -1

    def poll(self, timeout_ms: int = 100) -> int:
        """Wait up to `timeout_ms` for records; run the callback on each.
        Returns how many were consumed."""
        n = libbpf().ring_buffer__poll(self.ptr, timeout_ms)
        self._raise_pending()
        if n < 0 and n != -_errno.EINTR:
            raise errors.BpfError(f"ring_buffer__poll: {os.strerror(-n)}", errno=-n)
        return max(n, 0)

    def consume(self) -> int:
        """Run the callback on every record already there, without waiting."""
        n = libbpf().ring_buffer__consume(self.ptr)
        self._raise_pending()
        return max(n, 0)

    def _raise_pending(self) -> None:
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            libbpf().ring_buffer__free(ptr)

    def __enter__(self) -> "RingBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BPFObject(FdObject):
    """A `.bpf.o` opened (and by default loaded) with libbpf, closed by `with`
    or `close()`, and by `program.close_all()` like every Program."""

    def __init__(self, obj: str | Path | bytes, *, load: bool = True, name: str = "",
                 source: str = "", btf_custom_path: str | Path | None = None,
                 rodata: dict[str, object] | None = None):
        self.name = name or (Path(obj).stem.split(".")[0] if not isinstance(obj, bytes) else "obj")
        self.source, self.log = source, Log()
        self.links: list[Link] = []
        self._rings: list[RingBuffer] = []
        self._pins: list[Path] = []
        self._ptr, self._loaded, self._image = 0, False, None
        lib = libbpf()
        opts = ObjectOpenOpts(sz=ct.sizeof(ObjectOpenOpts), object_name=self.name.encode())
        if btf_custom_path:
            opts.btf_custom_path = str(btf_custom_path).encode()
        with self._logged():
            if isinstance(obj, bytes):
                self._image = ct.create_string_buffer(obj, len(obj))   # libbpf may keep pointers
                ptr = lib.bpf_object__open_mem(self._image, len(obj), ct.byref(opts))
            else:
                ptr = lib.bpf_object__open_file(str(obj).encode(), ct.byref(opts))
        if not ptr:
            err = ct.get_errno()
            raise errors.BpfError(f"libbpf could not open {self.name}: {os.strerror(err)}",
                                  errno=err, log_tail=self._tail(),
                                  hint="is it an object built by `clang -target bpf`?")
        self._ptr = ptr
        FdObject._opened(self, -1)      # listed with bpfsys's open objects: close_all() closes it
        try:
            self.programs = {p.name: p for p in self._walk("program", Program)}
            self.maps = {m.name: m for m in self._walk("map", Map)}
            for var, value in (rodata or {}).items():
                self.set_global(var, value)
            if load:
                self.load()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ building --
    @classmethod
    def compile(cls, source: str, *, name: str = "prog", cflags: list[str] | tuple = (),
                **kwargs) -> "BPFObject":
        """Compile CO-RE C text with clang against vmlinux.h, then open it (and load it)."""
        with tempfile.TemporaryDirectory(prefix="ebpf-tutor-core-") as tmp:
            image = compile_bpf(source, Path(tmp, f"{name}.bpf.o"), name=name, cflags=cflags).read_bytes()
        return cls(image, name=name, source=source, **kwargs)

    def _walk(self, kind: str, make: type) -> Iterator:
        nxt = getattr(libbpf(), f"bpf_object__next_{kind}")
        ptr = nxt(self._ptr, None)
        while ptr:
            yield make(self, ptr) if make is Program else make(ptr)
            ptr = nxt(self._ptr, ptr)

    def _logged(self) -> "contextlib.AbstractContextManager[Log]":
        return capture_log(self.log)

    def _tail(self, n: int = 8) -> str:
        return "\n".join(self.log.text(LIBBPF_INFO).strip().splitlines()[-n:])

    def load(self) -> "BPFObject":
        """CO-RE relocations, then the verifier, for every program."""
        if self._loaded:
            return self
        with self._logged():
            rc = libbpf().bpf_object__load(self._ptr)
        if rc < 0:
            raise self._load_error(-rc)
        self._loaded = True
        return self

    def _load_error(self, err: int) -> errors.BpfError:
        text = self.log.text()
        failed = re.findall(r"prog '(\w+)': -- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --",
                            text, re.S)
        func, vlog = failed[-1] if failed else ("", "")
        if vlog:          # the kernel quotes `; line @ file.bpf.c:N`: the explainer knows main.c
            vlog = re.sub(r" @ \S+?\.c:(\d+)$", r" @ main.c:\1", vlog, flags=re.M)
            e = errors.verifier_error(vlog, self.source, func, err)
        else:
            e = errors.load_error(os.strerror(err), text, self.source, self.name)
            e.log_tail = e.log_tail or self._tail()
        if "failed to resolve CO-RE relocation" in text or "<invalid CO-RE relocation>" in text:
            e.hint = CORE_HINT
            n = _core_failure_line(text, self.source)
            if n:
                e.where = f"line {n} of your program" + (f" (function {func})" if func else "")
                e.excerpt = errors.excerpt(self.source, n)
        return e

    @property
    def loaded(self) -> bool:
        return self._loaded

    def relocations(self) -> list[str]:
        """libbpf's CO-RE lines from the load: which type it matched, and each
        instruction's offset before and after (`patched insn #N ... off A -> B`)."""
        return [ln.strip() for _lvl, ln in self.log.lines
                if re.search(r"CO-RE relocating|prog '\w+': relo #\d+:", ln)]

    # ------------------------------------------------------------- globals --
    def global_vars(self) -> dict[str, tuple[str, int, int]]:
        """Every C global: name -> (section, offset, size), read from the object's BTF."""
        lib = libbpf()
        btf = lib.bpf_object__btf(self._ptr)
        found: dict[str, tuple[str, int, int]] = {}
        for sec in SECTIONS:
            tid = lib.btf__find_by_name_kind(btf, sec.encode(), BTF_KIND_DATASEC) if btf else -1
            if tid <= 0:
                continue
            t = lib.btf__type_by_id(btf, tid)
            infos = ct.cast(ct.addressof(t.contents) + ct.sizeof(t.contents),
                            ct.POINTER(VarSecinfo))
            for i in range(t.contents.info & 0xFFFF):
                si = infos[i]
                var = lib.btf__type_by_id(btf, si.type).contents
                found[lib.btf__name_by_offset(btf, var.name_off).decode()] = (sec, si.offset, si.size)
        return found

    def _global(self, name: str) -> tuple[str, int, int, Map]:
        try:
            sec, off, size = self.global_vars()[name]
        except KeyError:
            raise KeyError(f"{self.name} has no global variable {name!r}; it has "
                           f"{sorted(self.global_vars())}") from None
        return sec, off, size, next(m for m in self.maps.values() if m.name.endswith(sec))

    def _section_image(self, m: Map) -> int:
        """The address of a section's initial image (what load() copies into the map)."""
        psize = ct.c_size_t()
        base = libbpf().bpf_map__initial_value(m.ptr, ct.byref(psize))
        if not base:
            raise errors.BpfError(f"the section {m.name} has no initial image")
        return base

    def get_global(self, name: str, ctype: type | None = None) -> object:
        """A global's bytes, or its value as `ctype` (e.g. ct.c_uint64). After
        load it is read from the kernel's map (element 0 of the section's
        one-element array), so .bss and .data are live."""
        _sec, off, size, m = self._global(name)
        if self._loaded:
            raw = (m.lookup(0) or b"")[off:off + size]
        else:
            raw = ct.string_at(self._section_image(m) + off, size)
        if ctype is None:
            return raw
        v = ctype.from_buffer_copy(raw)
        return v.value if hasattr(v, "value") else v

    def set_global(self, name: str, value: int | bytes) -> None:
        """Write a global: before load for `.rodata` (`const volatile`: the
        verifier then sees a constant), any time for .data/.bss. After load
        this rewrites the whole section (lookup, patch, update): a value the
        program writes to a neighbour at that moment can be lost."""
        sec, off, size, m = self._global(name)
        if sec == ".rodata" and self._loaded:
            raise errors.BpfError(f"{name} is in .rodata, frozen once loaded",
                                  hint="set it before load(): BPFObject(..., load=False)")
        data = value.to_bytes(size, sys.byteorder, signed=value < 0) if isinstance(value, int) \
            else bytes(value)
        if len(data) > size:
            raise ValueError(f"{name} holds {size} bytes, not {len(data)}")
        data = data.ljust(size, b"\0")
        if self._loaded:
            image = bytearray(m.lookup(0))
            image[off:off + size] = data
            m.update(0, bytes(image))
        else:
            ct.memmove(self._section_image(m) + off, data, size)

    # -------------------------------------------------------------- attach --
    def program(self, name: str) -> Program:
        try:
            return self.programs[name]
        except KeyError:
            raise KeyError(f"{self.name} has no program {name!r}; it has {sorted(self.programs)}") \
                from None

    def _link(self, what: str, call: Callable[[], int]) -> Link:
        if not self._loaded:
            raise errors.BpfError("load() the object before attaching its programs")
        with self._logged():
            ptr = call()
        if not ptr:
            err = ct.get_errno()
            hint = {_errno.ENOENT: "the attach point does not exist on this kernel",
                    _errno.EOPNOTSUPP: "this section type cannot be attached automatically: use "
                    "attach_cgroup(), attach_uprobe() or attach_usdt() with its target"}.get(err, "")
            cls = errors.TransientError if err in errors.TRANSIENT_ERRNOS else errors.AttachError
            raise cls(f"attaching {what}: {os.strerror(err)}", errno=err, hint=hint,
                      log_tail=self._tail(4))
        link = Link(ptr, what)
        self.links.append(link)
        return link

    def attach(self, prog: str) -> Link:
        """Attach as its SEC() says (tp/, tp_btf/, raw_tp/, uprobe/bin:func, usdt/...)."""
        p = self.program(prog)
        return self._link(f"{prog} ({p.section})", lambda: libbpf().bpf_program__attach(p.ptr))

    def attach_all(self) -> list[Link]:
        """Attach every program as its SEC() says."""
        return [self.attach(name) for name in self.programs]

    def attach_tracepoint(self, prog: str, tracepoint: str) -> Link:
        """Attach to a tracepoint "category:name" (e.g. "syscalls:sys_enter_getppid")."""
        cat, _, tp = tracepoint.partition(":")
        p = self.program(prog)
        return self._link(f"{prog} to tracepoint {tracepoint}", lambda: libbpf()
                          .bpf_program__attach_tracepoint(p.ptr, cat.encode(), tp.encode()))

    def attach_raw_tracepoint(self, prog: str, name: str) -> Link:
        p = self.program(prog)
        return self._link(f"{prog} to raw tracepoint {name}",
                          lambda: libbpf().bpf_program__attach_raw_tracepoint(p.ptr, name.encode()))

    def attach_tp_btf(self, prog: str) -> Link:
        """A SEC("tp_btf/<event>") program: a raw tracepoint with typed (BTF) arguments."""
        p = self.program(prog)
        return self._link(f"{prog} (tp_btf)", lambda: libbpf().bpf_program__attach_trace(p.ptr))

    def attach_uprobe(self, prog: str, binary: str, func: str, *, pid: int = -1,
                      retprobe: bool = False, offset: int = 0) -> Link:
        """Attach to `func` in `binary` (a path or a library name such as "libc.so.6")."""
        p = self.program(prog)
        opts = UprobeOpts(sz=ct.sizeof(UprobeOpts), retprobe=retprobe, func_name=func.encode())
        return self._link(f"{prog} to {'uretprobe' if retprobe else 'uprobe'} {binary}:{func}",
                          lambda: libbpf().bpf_program__attach_uprobe_opts(
                              p.ptr, pid, binary.encode(), offset, ct.byref(opts)))

    def attach_usdt(self, prog: str, binary: str, provider: str, name: str, *,
                    pid: int = -1, cookie: int = 0) -> Link:
        """Attach to the USDT probe provider:name of `binary` (every process: pid=-1)."""
        p = self.program(prog)
        opts = UsdtOpts(sz=ct.sizeof(UsdtOpts), usdt_cookie=cookie)
        return self._link(f"{prog} to USDT {provider}:{name}", lambda: libbpf()
                          .bpf_program__attach_usdt(p.ptr, pid, binary.encode(), provider.encode(),
                                                    name.encode(), ct.byref(opts)))

    def attach_cgroup(self, prog: str, cgroup: str | Path | int) -> Link:
        """Attach a cgroup program (SEC("cgroup/connect4"), "cgroup_skb/egress"...)
        to a cgroup directory (or an open descriptor of one)."""
        p = self.program(prog)
        fd = cgroup if isinstance(cgroup, int) else os.open(str(cgroup), os.O_RDONLY | os.O_DIRECTORY)
        try:
            return self._link(f"{prog} to cgroup {cgroup}",
                              lambda: libbpf().bpf_program__attach_cgroup(p.ptr, fd))
        finally:
            if not isinstance(cgroup, int):
                os.close(fd)            # the link holds its own reference to the cgroup

    # -------------------------------------------------- maps, runs, pins --
    def map(self, name: str) -> Map:
        try:
            return self.maps[name]
        except KeyError:
            raise KeyError(f"{self.name} has no map {name!r}; it has {sorted(self.maps)}") from None

    def ring_buffer(self, map_name: str, callback: Callable[[bytes], object]) -> RingBuffer:
        """A consumer of the ring buffer map `map_name`; freed with the object."""
        ring = RingBuffer(self.map(map_name).fd, callback)
        self._rings.append(ring)
        return ring

    def poll(self, timeout_ms: int = 100) -> int:
        """Poll every ring buffer of this object once."""
        return sum(r.poll(timeout_ms) for r in self._rings if r.ptr)

    def test_run(self, prog: str, data: bytes = b"", *, ctx: bytes | None = None,
                 repeat: int = 1, data_out_size: int | None = None) -> RunResult:
        """Run a program on `data` / `ctx` with BPF_PROG_TEST_RUN (XDP, TC,
        socket filter, raw_tp...), no attach needed."""
        p = self.program(prog)
        out_size = data_out_size if data_out_size is not None else (len(data) + 256 if data else 0)
        din = ct.create_string_buffer(bytes(data), len(data)) if data else None
        dout = ct.create_string_buffer(out_size) if out_size else None
        cin = ct.create_string_buffer(bytes(ctx), len(ctx)) if ctx else None
        opts = TestRunOpts(sz=ct.sizeof(TestRunOpts), repeat=repeat,
                           data_in=ct.cast(din, ct.c_void_p) if din else None,
                           data_size_in=len(data), data_out=ct.cast(dout, ct.c_void_p) if dout else None,
                           data_size_out=out_size, ctx_in=ct.cast(cin, ct.c_void_p) if cin else None,
                           ctx_size_in=len(ctx) if ctx else 0)
        rc = libbpf().bpf_prog_test_run_opts(p.fd, ct.byref(opts))
        if rc < 0:
            raise errors.BpfError(f"test run of {prog}: {os.strerror(-rc)}", errno=-rc,
                                  hint="this program type cannot be test-run with these arguments"
                                  if rc == -_errno.EINVAL else "")
        return RunResult(opts.retval, opts.duration, dout.raw[:opts.data_size_out] if dout else b"", b"")

    def pin_map(self, name: str, path: str | Path, *, keep: bool = False) -> Path:
        """Pin a map under /sys/fs/bpf; removed when the object closes unless keep=True."""
        return self._pin(path, keep, lambda p: libbpf().bpf_map__pin(self.map(name).ptr, p))

    def pin_program(self, name: str, path: str | Path, *, keep: bool = False) -> Path:
        """Pin a program under /sys/fs/bpf; removed when the object closes unless keep=True."""
        return self._pin(path, keep, lambda p: libbpf().bpf_program__pin(self.program(name).ptr, p))

    def _pin(self, path: str | Path, keep: bool, call: Callable[[bytes], int]) -> Path:
        path = Path(path)
        with self._logged():
            rc = call(str(path).encode())
        if rc < 0:
            raise errors.BpfError(f"pinning {path}: {os.strerror(-rc)}", errno=-rc,
                                  hint="the path must be on a bpf file system (/sys/fs/bpf) and free")
        if not keep:
            self._pins.append(path)
        return path

    # ------------------------------------------------------------- cleanup --
    @property
    def closed(self) -> bool:                                  # type: ignore[override]
        return not self._ptr

    def close(self) -> None:
        """Destroy the links, free the rings, remove the pins, close the object. Safe twice."""
        if not getattr(self, "_ptr", 0):
            return
        ptr, self._ptr = self._ptr, 0
        try:
            for ring in self._rings:
                ring.close()
            for link in reversed(self.links):
                link.destroy()
            for pin in self._pins:
                try:
                    pin.unlink()
                except OSError:
                    pass
        finally:
            libbpf().bpf_object__close(ptr)

    def __enter__(self) -> "BPFObject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("loaded" if self._loaded else "opened")
        return (f"<BPFObject {self.name}: {state}, programs {sorted(getattr(self, 'programs', {}))}, "
                f"{len(self.links)} link(s)>")


def _core_failure_line(log: str, source: str) -> int:
    """The source line that reads the field a failed CO-RE relocation names
    (the kernel's line info stops one line early: libbpf rewrote the
    poisoned instruction's lines), preferring a read over an existence test."""
    m = re.search(r"failed to resolve CO-RE relocation .*?\] \w+ \w+\.([\w.:]+)", log)
    if not m or not source:
        return 0
    field = m.group(1).split(".")[-1].split(":")[0]
    hits = [i for i, ln in enumerate(source.splitlines(), 1) if re.search(rf"\b{re.escape(field)}\b", ln)
            and not ln.lstrip().startswith(("//", "/*", "*", "struct", "#"))]
    reads = [i for i in hits if "exists" not in source.splitlines()[i - 1]]
    return (reads or hits or [0])[0]
