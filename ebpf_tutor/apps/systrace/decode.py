"""Arguments and return values in strace's spelling.

A system call's six raw arguments are integers; what they mean depends on
the call. `SIGNATURES` names the kind of each argument of the common calls
(a path, an fd, open flags...); `format_call` turns a call into text such as

    openat(AT_FDCWD, "/etc/hostname", O_RDONLY|O_CLOEXEC) = 3

and `format_return` a return value into `3`, `0x7f12...` or
`-1 ENOENT (No such file or directory)`. Flag values come from Python's
`os` module, which has this platform's numbers (O_DIRECTORY differs on arm64).
"""
from __future__ import annotations

import errno
import os

MAX_ERRNO = 4095          # the kernel's MAX_ERRNO: -4095..-1 are errors
AT_FDCWD = -100

# strace's order (checked against strace 6.1 on x86_64). Combined flags come
# before their parts: O_SYNC is __O_SYNC|O_DSYNC, O_TMPFILE is
# __O_TMPFILE|O_DIRECTORY, so their bits are named once.
_OPEN_FLAGS = [(name, getattr(os, attr)) for name, attr in (
    ("O_CREAT", "O_CREAT"), ("O_EXCL", "O_EXCL"), ("O_NOCTTY", "O_NOCTTY"),
    ("O_TRUNC", "O_TRUNC"), ("O_APPEND", "O_APPEND"), ("O_NONBLOCK", "O_NONBLOCK"),
    ("O_SYNC", "O_SYNC"), ("O_DSYNC", "O_DSYNC"), ("O_DIRECT", "O_DIRECT"),
    ("O_LARGEFILE", "O_LARGEFILE"), ("O_NOFOLLOW", "O_NOFOLLOW"), ("O_NOATIME", "O_NOATIME"),
    ("O_CLOEXEC", "O_CLOEXEC"), ("O_PATH", "O_PATH"), ("O_TMPFILE", "O_TMPFILE"),
    ("O_DIRECTORY", "O_DIRECTORY"), ("FASYNC", "O_ASYNC")) if getattr(os, attr, 0)]
_ACCMODE = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}

_AT_FLAGS = [("AT_SYMLINK_NOFOLLOW", 0x100), ("AT_REMOVEDIR", 0x200),
             ("AT_SYMLINK_FOLLOW", 0x400), ("AT_NO_AUTOMOUNT", 0x800),
             ("AT_EMPTY_PATH", 0x1000)]
_PROT = [("PROT_READ", 1), ("PROT_WRITE", 2), ("PROT_EXEC", 4)]
_MAP = [("MAP_SHARED", 0x01), ("MAP_PRIVATE", 0x02), ("MAP_FIXED", 0x10),
        ("MAP_ANONYMOUS", 0x20), ("MAP_DENYWRITE", 0x800), ("MAP_NORESERVE", 0x4000),
        ("MAP_POPULATE", 0x8000), ("MAP_STACK", 0x20000), ("MAP_FIXED_NOREPLACE", 0x100000)]
_ACCESS = [("R_OK", 4), ("W_OK", 2), ("X_OK", 1)]
_WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}

# argument kinds of the common calls (others print three raw arguments)
SIGNATURES: dict[str, tuple[str, ...]] = {
    "read": ("fd", "ptr", "int"), "write": ("fd", "ptr", "int"),
    "pread64": ("fd", "ptr", "int", "int"), "pwrite64": ("fd", "ptr", "int", "int"),
    "readv": ("fd", "ptr", "int"), "writev": ("fd", "ptr", "int"),
    "open": ("path", "oflags", "mode"), "openat": ("dirfd", "path", "oflags", "mode"),
    "creat": ("path", "mode"), "close": ("fd",), "close_range": ("fd", "fd", "hex"),
    "execve": ("path", "ptr", "ptr"), "execveat": ("dirfd", "path", "ptr", "ptr", "atflags"),
    "stat": ("path", "ptr"), "lstat": ("path", "ptr"), "fstat": ("fd", "ptr"),
    "newfstatat": ("dirfd", "path", "ptr", "atflags"),
    "statx": ("dirfd", "path", "atflags", "hex", "ptr"),
    "access": ("path", "amode"), "faccessat": ("dirfd", "path", "amode"),
    "faccessat2": ("dirfd", "path", "amode", "atflags"),
    "unlink": ("path",), "unlinkat": ("dirfd", "path", "atflags"),
    "mkdir": ("path", "mode"), "mkdirat": ("dirfd", "path", "mode"), "rmdir": ("path",),
    "chdir": ("path",), "fchdir": ("fd",), "readlink": ("path", "ptr", "int"),
    "readlinkat": ("dirfd", "path", "ptr", "int"), "truncate": ("path", "int"),
    "ftruncate": ("fd", "int"), "chmod": ("path", "mode"), "fchmod": ("fd", "mode"),
    "fchmodat": ("dirfd", "path", "mode"), "statfs": ("path", "ptr"), "fstatfs": ("fd", "ptr"),
    "lseek": ("fd", "int", "whence"), "dup": ("fd",), "dup2": ("fd", "fd"),
    "dup3": ("fd", "fd", "oflags"), "pipe2": ("ptr", "oflags"), "fsync": ("fd",),
    "fdatasync": ("fd",), "getdents64": ("fd", "ptr", "int"), "ioctl": ("fd", "hex", "hex"),
    "fcntl": ("fd", "i32", "hex"), "flock": ("fd", "i32"),
    "mmap": ("ptr", "int", "prot", "mapflags", "fd", "hex"), "munmap": ("ptr", "int"),
    "mprotect": ("ptr", "int", "prot"), "brk": ("ptr",),
    "socket": ("i32", "i32", "i32"), "connect": ("fd", "ptr", "int"),
    "accept": ("fd", "ptr", "ptr"), "accept4": ("fd", "ptr", "ptr", "hex"),
    "bind": ("fd", "ptr", "int"), "listen": ("fd", "i32"),
    "sendto": ("fd", "ptr", "int", "hex", "ptr", "int"),
    "recvfrom": ("fd", "ptr", "int", "hex", "ptr", "ptr"),
    "getpid": (), "getppid": (), "gettid": (), "getuid": (), "geteuid": (), "getgid": (),
    "getegid": (), "sched_yield": (), "fork": (), "vfork": (), "umask": ("mode",),
    "kill": ("i32", "i32"), "exit_group": ("i32",), "exit": ("i32",),
    "wait4": ("i32", "ptr", "hex", "ptr"), "nanosleep": ("ptr", "ptr"),
    "clock_nanosleep": ("i32", "hex", "ptr", "ptr"), "epoll_wait": ("fd", "ptr", "i32", "i32"),
    "poll": ("ptr", "int", "i32"), "getrandom": ("ptr", "int", "hex"),
}
PATH_SYSCALLS = {name: kinds.index("path") for name, kinds in SIGNATURES.items()
                 if "path" in kinds}
EXEC_SYSCALLS = ("execve", "execveat")   # their path must be read at entry
RETURNS_POINTER = ("mmap", "brk", "mremap", "shmat")


def errno_name(err: int) -> str:
    """ENOENT for 2; E<n> when Python has no name for it."""
    return errno.errorcode.get(err, f"E{err}")


def is_error(ret: int) -> bool:
    return -MAX_ERRNO <= ret < 0


def _flags(value: int, table: list[tuple[str, int]]) -> list[str]:
    names = []
    for name, bit in table:
        if bit and value & bit == bit:
            names.append(name)
            value &= ~bit
    if value:
        names.append(hex(value))
    return names


def open_flags(value: int) -> str:
    """O_RDONLY|O_CLOEXEC for os.O_RDONLY | os.O_CLOEXEC."""
    value &= 0xFFFFFFFF
    acc = value & 3
    head = [_ACCMODE.get(acc, hex(acc))]
    return "|".join(head + _flags(value & ~3, _OPEN_FLAGS))


def _signed(v: int, bits: int = 64) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def format_arg(kind: str, value: int, path: str | None = None) -> str:
    """One argument of kind `kind` as strace writes it."""
    if kind == "path":
        return '"' + path.replace('"', '\\"') + '"' if path is not None else hex(value)
    if kind == "dirfd":
        fd = _signed(value, 32)
        return "AT_FDCWD" if fd == AT_FDCWD else str(fd)
    if kind == "fd":
        return str(_signed(value, 32))
    if kind == "oflags":
        return open_flags(value)
    if kind == "mode":
        return "0%02o" % (value & 0o7777)
    if kind == "atflags":
        return "|".join(_flags(value & 0xFFFFFFFF, _AT_FLAGS)) or "0"
    if kind == "amode":
        return "|".join(_flags(value & 7, _ACCESS)) or "F_OK"
    if kind == "prot":
        return "|".join(_flags(value, _PROT)) or "PROT_NONE"
    if kind == "mapflags":
        return "|".join(_flags(value, _MAP)) or "0"
    if kind == "whence":
        return _WHENCE.get(value, str(value))
    if kind == "ptr":
        return "NULL" if value == 0 else hex(value)
    if kind == "int":
        return str(_signed(value))
    if kind == "i32":
        return str(_signed(value, 32))
    return hex(value)


def format_args(syscall: str, args: list[int], path: str | None = None) -> list[str]:
    """The decoded arguments of one call."""
    kinds = SIGNATURES.get(syscall)
    if kinds is None:
        return [hex(a) for a in args[:3]]
    out = []
    for i, kind in enumerate(kinds):
        if kind == "mode" and syscall in ("openat", "open") and i == len(kinds) - 1:
            flags = args[i - 1]
            tmpfile = getattr(os, "O_TMPFILE", 0)
            if not (flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)):
                continue          # strace omits the mode unless one is used
        out.append(format_arg(kind, args[i], path if kind == "path" else None))
    return out


def format_return(syscall: str, ret: int) -> str:
    """`3`, `0x7f...` or `-1 ENOENT (No such file or directory)`."""
    if is_error(ret):
        err = -ret
        return f"-1 {errno_name(err)} ({os.strerror(err)})"
    if syscall in RETURNS_POINTER:
        return hex(ret & (1 << 64) - 1)
    return str(ret)


def format_call(syscall: str, args: list[int], ret: int, path: str | None = None) -> str:
    """openat(AT_FDCWD, "/etc/hostname", O_RDONLY|O_CLOEXEC) = 3"""
    return f"{syscall}({', '.join(format_args(syscall, args, path))}) = {format_return(syscall, ret)}"
