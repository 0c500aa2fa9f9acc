"""Relay stdin/stdout to a TCP address: QEMU's `guestfwd=...-cmd:` helper.

With `-nic user,restrict=on`, a course VM can reach nothing on the host but
its forwarded ports. VMSpawner gives it the hub's API only: QEMU runs this,
once per connection the guest opens to the hub's address, with the
connection as stdin and stdout.

    python -m ebpf_tutor.workshop.relay 127.0.0.1 8081
"""
from __future__ import annotations

import os
import selectors
import socket
import sys


def relay(host: str, port: int, fd_in: int = 0, fd_out: int = 1) -> None:
    """Copy fd_in to a new connection to (host, port) and the answers to fd_out,
    until the connection closes."""
    sock = socket.create_connection((host, port))
    sel = selectors.DefaultSelector()
    sel.register(fd_in, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    with sock:
        while True:
            for key, _ in sel.select():
                if key.fileobj == fd_in:
                    data = os.read(fd_in, 65536)
                    if not data:                  # the guest closed its side
                        sel.unregister(fd_in)
                        sock.shutdown(socket.SHUT_WR)
                        continue
                    sock.sendall(data)
                else:
                    data = sock.recv(65536)
                    if not data:
                        return
                    while data:
                        data = data[os.write(fd_out, data):]


if __name__ == "__main__":
    try:
        relay(sys.argv[1], int(sys.argv[2]))
    except (OSError, KeyboardInterrupt):
        sys.exit(1)
