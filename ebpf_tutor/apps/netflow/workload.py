"""Traffic of known shape for the analyzer, from one namespace of a
sandbox to another: TCP exchanges of known sizes, UDP datagrams, a port
scan (SYNs to many ports) and a flood (many datagrams, fast).

Every socket lives in a sandbox namespace (`socket_in`), so nothing
leaves the lab network.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

from ...sandbox.net import socket_in
from ...sandbox import traffic


class SizedServer:
    """A TCP service in a namespace: for each connection, read until the
    client shuts its side, then answer `reply_size(request_size)` bytes and
    close. Records (request bytes, reply bytes) per connection."""

    def __init__(self, ns_name: str, port: int, reply_size=lambda n: n // 2 + 1):
        self.reply_size, self.done = reply_size, []
        self.sock = socket_in(ns_name, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ebt-sized-server")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(2.0)
                got = 0
                try:
                    while chunk := conn.recv(65536):
                        got += len(chunk)
                    reply = self.reply_size(got)
                    conn.sendall(b"r" * reply)
                    self.done.append((got, reply))
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def __enter__(self) -> "SizedServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Exchange:
    sport: int
    sent: int
    received: int


def tcp_exchange(ns_name: str, dst: str, port: int, size: int, timeout: float = 2.0) -> Exchange:
    """Connect, send `size` bytes, shut down writing, read the reply to the end."""
    s = socket_in(ns_name, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        sport = s.getsockname()[1]
        s.sendall(b"q" * size)
        s.shutdown(socket.SHUT_WR)
        got = 0
        while chunk := s.recv(65536):
            got += len(chunk)
        return Exchange(sport, size, got)
    finally:
        s.close()


def udp_datagrams(ns_name: str, dst: str, port: int, sizes: list[int]) -> int:
    """One datagram per size (payload bytes) from one socket; returns its port."""
    s = socket_in(ns_name)
    try:
        s.bind(("0.0.0.0", 0))
        for size in sizes:
            s.sendto(b"u" * size, (dst, port))
        return s.getsockname()[1]
    finally:
        s.close()


def syn_scan(lab, ports: list[int], src: str = "a", dst: str = "b") -> int:
    """One TCP SYN to each port, crafted and put on the wire of `src`'s veth
    (no handshake, like `nmap -sS`). Returns how many were sent."""
    frames = [traffic.tcp_syn_frame(lab.mac(src), lab.mac(dst), lab.ip[src], lab.ip[dst],
                                    40000, port, seq=port) for port in ports]
    return traffic.send_frames(lab.ns[src], lab.ifname[src], frames)


def udp_flood(lab, count: int, port: int = 7777, src: str = "a", dst: str = "b",
              size: int = 18) -> int:
    """`count` crafted UDP datagrams to one port, back to back, from `src`."""
    frame = traffic.udp_frame(lab.mac(src), lab.mac(dst), lab.ip[src], lab.ip[dst], 40001, port,
                              b"f" * size)
    return traffic.send_frames(lab.ns[src], lab.ifname[src], (frame for _ in range(count)))
