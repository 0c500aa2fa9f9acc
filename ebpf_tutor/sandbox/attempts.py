"""Try actions (read a file, run a program, connect to a port) from a fresh
process, inside a scratch cgroup or outside it, and say what happened to
each: what a policy test needs.

    with ScratchCgroup("guarded") as cg:
        attempts([("read", "/tmp/x/secret")], cg)      # ['EPERM'] under a policy
        attempts([("read", "/tmp/x/secret")])          # ['read: s3cret'] outside

One Python process (started inside `cgroup` when one is given) forks one
child per action, so an action that gets its process killed stops only that
action. The result of each action is one string:

- `read: <first line>`, `ran: <its output>`, `connected`: it was allowed;
- an errno name (`EPERM`, `ECONNREFUSED`...): the kernel refused it;
- `killed by SIGKILL` (or another signal): the process died during it.

The process ignores SIGTERM before it forks (children and the programs they
run inherit that): a policy that means to stop a process must use SIGKILL.
"""
from __future__ import annotations

import json
import subprocess
import sys

from .cgroup import ScratchCgroup

Action = tuple  # ("read", path) | ("run", path, argument) | ("connect", port)

PROBE = r"""
import errno, json, os, signal, socket, sys

signal.signal(signal.SIGTERM, signal.SIG_IGN)   # only SIGKILL can stop an action

def read(path):
    with open(path) as f:
        return "read: " + f.readline().strip()

def run(path, argument):
    os.execv(path, [path, argument])            # its output goes to the pipe

def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return "connected"

def attempt(name, *args):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        try:
            os.write(1, globals()[name](*args).encode())
            code = 0
        except OSError as e:
            os.write(1, errno.errorcode.get(e.errno, str(e.errno)).encode())
            code = 1
        os._exit(code)
    os.close(w)
    out = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed by " + signal.Signals(os.WTERMSIG(status)).name
    text = out.decode(errors="replace").strip()
    return text if name != "run" or os.WEXITSTATUS(status) else "ran: " + text

print(json.dumps([attempt(*action) for action in json.loads(sys.argv[1])]))
"""


def attempts(actions: list[Action], cgroup: ScratchCgroup | None = None,
             timeout: float = 60) -> list[str]:
    """Try each action in its own child of one fresh process (inside `cgroup`
    if given, else in this process's cgroup); one result string per action."""
    argv = [sys.executable, "-S", "-c", PROBE, json.dumps([list(a) for a in actions])]
    if cgroup is not None:
        r = cgroup.run(argv, timeout=timeout)
    else:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"the probe process failed (exit {r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-300:]}")
    return json.loads(r.stdout)


def allowed(result: str) -> bool:
    """True for a result that says the action went through."""
    return result == "connected" or result.startswith(("read: ", "ran: "))
