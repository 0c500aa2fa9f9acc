"""Scripted incidents and benign work to run inside a `Container`.

Each incident is what an attacker would do, reduced to a few commands that
stay inside the container: its /etc is a tmpfs copy, its network is its own
loopback, its CPU burn is bounded. `INCIDENTS[name](container)` runs one;
`benign(container)` runs the work that must raise no alert.
"""
from __future__ import annotations

import sys
from typing import Callable

PY = sys.executable

# a listener on the container's loopback and a client that puts the socket
# on its stdin and stdout, then runs a shell: the classic reverse shell
REVERSE_SHELL = r"""
import os, socket, sys, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def attacker():
    conn, _ = srv.accept()
    conn.sendall(b"echo owned; exit\n")
    print(conn.makefile().readline().strip())
t = threading.Thread(target=attacker); t.start()
if os.fork() == 0:
    s = socket.create_connection(("127.0.0.1", port))
    os.dup2(s.fileno(), 0); os.dup2(s.fileno(), 1)
    os.execv("/bin/sh", ["sh", "-i"])
os.wait(); t.join()
"""

# a normal TCP client and server on loopback: connect, send, receive, close
TCP_CLIENT = r"""
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def serve():
    c, _ = srv.accept(); c.sendall(c.recv(64).upper()); c.close()
t = threading.Thread(target=serve); t.start()
with socket.create_connection(("127.0.0.1", port)) as s:
    s.sendall(b"ping"); print(s.recv(64).decode())
t.join()
"""

BURN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"


def shell(c):
    return c.run(["/bin/sh", "-c", "echo $((6*7))"])


def write_etc(c):
    return c.run(["cp", "/etc/hostname", "/etc/cron.hourly-backdoor"])


def unshare_escape(c):
    return c.run(["unshare", "--user", "--map-root-user", "true"])


def setns_escape(c):
    return c.run(["nsenter", "--target", "1", "--uts", "true"])


def mount_escape(c):
    return c.run(["mount", "-t", "tmpfs", "escape", "/mnt"])


def reverse_shell(c):
    return c.run([PY, "-I", "-c", REVERSE_SHELL], timeout=20)


def miner(c, seconds: float = 3.0):
    return c.run([PY, "-I", "-c", BURN.format(seconds=seconds)], timeout=seconds + 20)


INCIDENTS: dict[str, Callable] = {
    "shell": shell, "write-etc": write_etc, "unshare": unshare_escape, "setns": setns_escape,
    "mount": mount_escape, "reverse-shell": reverse_shell, "miner": miner,
}
# the rule each incident must raise
EXPECTED = {
    "shell": "terminal shell in container", "write-etc": "write below etc",
    "unshare": "namespace change (escape attempt)", "setns": "namespace change (escape attempt)",
    "mount": "mount in container (escape attempt)",
    "reverse-shell": "reverse shell (socket on stdin/stdout)", "miner": "cryptominer-like CPU burn",
}


def benign(c) -> list:
    """ls, cat, reading /etc, a TCP client, a short CPU task: no alert."""
    return [c.run(["ls", "/"]), c.run(["cat", "/etc/hostname"]),
            c.run(["head", "-c", "64", "/etc/passwd"]),
            c.run([PY, "-I", "-c", TCP_CLIENT], timeout=20),
            c.run([PY, "-I", "-c", BURN.format(seconds=0.3)])]
