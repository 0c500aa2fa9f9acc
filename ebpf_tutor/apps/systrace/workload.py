"""A C program that makes a known number of system calls, for the chapter,
the tests and the benchmark.

    known_workload PATH OK FAIL CHILDREN

opens PATH OK times (openat O_RDONLY|O_CLOEXEC, one read of 1 byte, close),
fails FAIL opens of PATH + ".missing" (ENOENT), then forks CHILDREN
children one after the other; each child calls getppid() 3 times and
_exit(0)s, the parent wait4()s it. The C library's own start-up calls
(loader, brk...) come on top: compare those with strace, not with a formula.
"""
from __future__ import annotations

from pathlib import Path

SOURCE = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    const char *path = argv[1];
    int ok = atoi(argv[2]), fail = atoi(argv[3]), children = atoi(argv[4]);
    char missing[4096], c;
    snprintf(missing, sizeof missing, "%s.missing", path);
    for (int i = 0; i < ok; i++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 3;
        if (read(fd, &c, 1) < 0) return 4;
        close(fd);
    }
    for (int i = 0; i < fail; i++)
        if (open(missing, O_RDONLY) >= 0) return 5;
    for (int i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int j = 0; j < 3; j++) getppid();
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
    }
    return 0;
}
"""
GETPPID_PER_CHILD = 3


def binary() -> Path:
    """The workload, compiled once per source and machine."""
    from ...overhead import compiled_c
    return compiled_c("systrace-known-workload", SOURCE)


def argv(path: str | Path, ok: int, fail: int, children: int) -> list[str]:
    return [str(binary()), str(path), str(ok), str(fail), str(children)]


def expected(ok: int, fail: int, children: int) -> dict[str, int]:
    """The calls the workload's own code makes (a lower bound for read/close,
    exact for getppid, wait4, and the openat calls on its paths)."""
    return {"openat_ok": ok, "openat_enoent": fail, "getppid": GETPPID_PER_CHILD * children,
            "wait4": children, "clone": children}
