"""Tiny C programs that lab checks compile and run as known workloads.

A check that traces "some process" needs a process whose every move it
knows: which children it forks, which files it reads, how many bytes it
mallocs. These programs do exactly what their arguments say, avoid hidden
work (no stdio after start-up, so no buffers malloc'd behind our back), and
wait for the check at the points where the check must act (attach its
program, look at a thread, read the maps).

    with TargetDir() as t:
        exe = t.build("tree_node")           # gcc, about 0.1 s
        node = t.copy(exe, "ebt3f9a1c")      # the same program under a fresh name

Each source is a constant here, so a reader can see the whole workload.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

# ----------------------------------------------------------------- sources --
TREE_NODE_C = r"""
/* One node of a process tree. Usage: NODE EXIT_CODE [CHILD_SPEC...]
 * CHILD_SPEC is "path:code[,path:code...]": the child itself, then the
 * leaves it must start in turn. The node prints "pid ppid argv0" (getpid()
 * and getppid(): the truth the check compares with), forks each child from a
 * second thread (so that the forking task is not the process's main
 * thread), execs it, waits for all of them, then exits with EXIT_CODE. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char **specs;
static int nspecs;

static void exec_spec(char *spec) {
    char *argv[34];
    int argc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(spec, ",", &save); tok && argc < 33; tok = strtok_r(NULL, ",", &save)) {
        if (argc == 0) {                      /* "path:code" of the child itself */
            char *colon = strchr(tok, ':');
            *colon = '\0';
            argv[argc++] = tok;
            argv[argc++] = colon + 1;
        } else {
            argv[argc++] = tok;               /* a leaf's spec, passed on as is */
        }
    }
    argv[argc] = NULL;
    execv(argv[0], argv);
    _exit(127);
}

static void *forker(void *unused) {
    pid_t kids[32];
    int n = 0;
    for (int i = 0; i < nspecs && n < 32; i++) {
        pid_t p = fork();
        if (p == 0)
            exec_spec(specs[i]);
        if (p > 0)
            kids[n++] = p;
    }
    for (int i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    return NULL;
}

int main(int argc, char **argv) {
    char line[512];
    int len = snprintf(line, sizeof line, "%d %d %s\n", getpid(), getppid(), argv[0]);
    if (write(1, line, len) != len)
        return 126;
    specs = argv + 2;
    nspecs = argc - 2;
    if (nspecs > 0) {
        pthread_t t;
        pthread_create(&t, NULL, forker, NULL);
        pthread_join(t, NULL);
    }
    return atoi(argv[1]);
}
"""

FILE_READER_C = r"""
/* Usage: READER DIR NFILES READS_PER_FILE CHUNK
 * 1. blocks SIGUSR1, says "ready", waits for SIGUSR1 (the check attached);
 * 2. starts a second thread that blocks in read(0) until the check writes
 *    a line, and waits for SIGUSR1 again (the check saw it blocked);
 * 3. opens DIR/f0 .. f<NFILES-1>, reads each READS_PER_FILE times CHUNK
 *    bytes, closes it, says "done", and waits for the second thread.
 * So the check knows exactly: NFILES openat, NFILES*READS_PER_FILE + 1 read. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *blocked_reader(void *unused) {
    char buf[64];
    if (read(0, buf, sizeof buf) < 0)
        _exit(125);
    return NULL;
}

static void say(const char *s, int n) {
    if (write(1, s, n) != n)
        _exit(126);
}

int main(int argc, char **argv) {
    const char *dir = argv[1];
    int nfiles = atoi(argv[2]), reads = atoi(argv[3]), chunk = atoi(argv[4]);
    static char buf[1 << 16];
    sigset_t set;
    int sig;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    say("ready\n", 6);
    sigwait(&set, &sig);
    pthread_t t;
    pthread_create(&t, NULL, blocked_reader, NULL);
    sigwait(&set, &sig);
    for (int i = 0; i < nfiles; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/f%d", dir, i);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            _exit(124);
        for (int r = 0; r < reads; r++)
            if (read(fd, buf, chunk) != chunk)
                _exit(123);
        close(fd);
    }
    say("done\n", 5);
    pthread_join(t, NULL);
    return 0;
}
"""

ALLOCATOR_C = r"""
/* Usage: ALLOC OPS   OPS is a comma-separated list run in order:
 *   m<bytes>  malloc a block of that size (blocks are numbered 0, 1, ...)
 *   f<n>      free block n
 * Says "ready", waits for a line on stdin (the check attached), runs the
 * operations (touching every new block), says "done", and waits for
 * another line before exiting. No stdio after start-up: nothing else in
 * this process calls malloc while the check watches. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXN 128

static void say(const char *s, int n) {
    if (write(1, s, n) != n)
        _exit(126);
}

static void wait_line(void) {
    char c;
    while (read(0, &c, 1) == 1 && c != '\n')
        ;
}

/* malloc(size), entered with `mark` in the second argument register, so
 * that a probe reading the size from the wrong register is not right by
 * accident (whatever the compiler left there could be the size). */
__attribute__((noinline)) static void *grab(unsigned long size, unsigned long mark) {
    char *p = malloc(size);
    if (p)
        p[0] = (char)mark;
    return p;
}

int main(int argc, char **argv) {
    static void *blocks[MAXN];
    int nblocks = 0;
    say("ready\n", 6);
    wait_line();
    for (char *op = argv[1]; *op;) {
        char kind = *op++;
        unsigned long arg = strtoul(op, &op, 10);
        if (kind == 'm' && nblocks < MAXN) {
            void *p = grab(arg, 0xeb7f00d + nblocks);
            if (p)
                memset(p, 0x5a, arg);
            blocks[nblocks++] = p;
        } else if (kind == 'f' && arg < (unsigned long)nblocks) {
            free(blocks[arg]);
        }
        if (*op == ',')
            op++;
    }
    say("done\n", 5);
    wait_line();
    return 0;
}
"""

SOURCES = {"tree_node": TREE_NODE_C, "file_reader": FILE_READER_C, "allocator": ALLOCATOR_C}


# ------------------------------------------------------------------ helpers --
class TargetDir:
    """A private temporary folder to build and copy target programs in.
    Removed on close (use it as a context manager)."""

    def __init__(self, prefix: str = "ebt-target-"):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def build(self, name: str) -> Path:
        """Compile SOURCES[name] with gcc into this folder; returns the binary."""
        src = self.path / f"{name}.c"
        src.write_text(SOURCES[name])
        exe = self.path / name
        r = subprocess.run(["gcc", "-O1", "-pthread", "-o", str(exe), str(src)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"gcc could not build the check's target {name}: "
                               f"{r.stderr.strip()[-400:]}")
        return exe

    def copy(self, exe: Path, new_name: str) -> Path:
        """The same binary under another file name (hence another comm)."""
        dst = self.path / new_name
        shutil.copy(exe, dst)
        return dst

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "TargetDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_line(proc: subprocess.Popen, timeout: float = 5.0) -> str:
    """The next line the target prints on its stdout pipe ('' on EOF or timeout)."""
    import select
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    while not out.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        ch = os.read(fd, 1)
        if not ch:
            break
        out += ch
    return out.decode(errors="replace").strip()


def thread_states(pid: int) -> dict[int, str]:
    """{tid: state letter} for every thread of a process, from /proc."""
    states = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        states[int(task.name)] = stat.rsplit(")", 1)[1].split()[0]
    return states


def blocked_in_read(pid: int, tid: int) -> bool:
    """Whether thread `tid` of `pid` sleeps inside a read (its wait channel,
    the kernel function it sleeps in, is e.g. `anon_pipe_read`). Where wchan
    is hidden, a sleeping state is taken as the best available sign."""
    task = Path(f"/proc/{pid}/task/{tid}")
    try:
        state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        wchan = (task / "wchan").read_text().strip()
    except OSError:
        return False
    if wchan in ("", "0"):
        return state == "S"
    return state == "S" and "read" in wchan


def wait_for(cond, timeout: float = 3.0, step: float = 0.002) -> bool:
    """Poll cond() until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def stop(proc: subprocess.Popen) -> None:
    """Make sure a target is gone (used in `finally` blocks)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f:
            f.close()


def in_initial_pid_namespace() -> bool:
    """BPF reports pids as the initial pid namespace sees them; os.getpid()
    gives them as our own namespace does. They agree only in the initial one
    (its inode is the kernel's constant PROC_PID_INIT_INO, 0xEFFFFFFC)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino == 0xEFFFFFFC
    except OSError:
        return True
