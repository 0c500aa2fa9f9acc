"""Traffic whose true counts we know, for the XDP labs (chapter 7) and the
network tests: numbered UDP flows and a sink that counts them, raw frames
put on the wire as given, a tiny TCP service and its client, ping.

Every socket lives in a namespace of a sandbox (`net.VethPair`, `net.Star`),
so nothing leaves the lab network. (`flows` holds the rate-controlled bulk
flows of the TC labs, chapter 8.)

    with net.VethPair(quiet=True) as lab, UdpSink(lab.ns["b"], 9000) as sink, \
            UdpFlow(lab.ns["a"], lab.ip_b, 9000, flow_id=1) as flow:
        flow.send(30)
        sink.settle()
        sink.by_flow                       # Counter({1: 30})
"""
from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, TypeVar

from . import packets
from .net import Sandbox, guard, socket_in

MAGIC = b"EBT7"
# Four bytes of IPv4 options: three no-ops and an end-of-list. A packet that
# carries them has a 24-byte IP header (ihl = 6): a parser that assumes 20
# bytes reads the options as the next header.
IP_NOP_OPTIONS = b"\x01\x01\x01\x00"


@dataclass
class UdpFlow:
    """Numbered UDP datagrams from one namespace: each payload is MAGIC, the
    flow's id and a sequence number, padded to `size` bytes."""

    ns_name: str
    dst: str
    dport: int
    src: str = ""
    sport: int = 0
    size: int = 64
    flow_id: int = 0
    sent: int = 0

    def __post_init__(self) -> None:
        self.sock = socket_in(self.ns_name)
        self.sock.bind((self.src, self.sport))
        self.src, self.sport = self.sock.getsockname()   # not connected: ICMP errors
                                                         # never fail a later send

    def send(self, n: int = 1, interval: float = 0.0) -> int:
        """Send n datagrams (interval seconds apart); returns how many went out."""
        for _ in range(n):
            body = MAGIC + struct.pack("!II", self.flow_id, self.sent)
            self.sock.sendto(body.ljust(self.size, b"\0"), (self.dst, self.dport))
            self.sent += 1
            if interval:
                time.sleep(interval)
        return n

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "UdpFlow":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


S = TypeVar("S", bound="_Served")


class _Served:
    """A socket (`sock`) that a daemon thread serves with `_run` until close()."""

    sock: socket.socket

    def _serve(self, thread_name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=thread_name)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class UdpSink(_Served):
    """Receives UDP in a namespace on a thread and counts datagrams per source
    address (`by_src`) and per flow id (`by_flow`, for UdpFlow payloads)."""

    def __init__(self, ns_name: str, port: int, ip: str = "0.0.0.0", rcvbuf: int = 8 << 20):
        self.sock = socket_in(ns_name)
        with contextlib.suppress(OSError):   # SO_RCVBUFFORCE: root may exceed rmem_max
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.05)
        self.by_src: Counter[str] = Counter()
        self.by_flow: Counter[int] = Counter()
        self.last_rx = time.monotonic()
        self._serve("ebt-udp-sink")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, (src, _) = self.sock.recvfrom(2048)
            except (socket.timeout, OSError):
                continue
            self.by_src[src] += 1
            if data[:4] == MAGIC and len(data) >= 12:
                self.by_flow[struct.unpack("!I", data[4:8])[0]] += 1
            self.last_rx = time.monotonic()

    @property
    def total(self) -> int:
        return sum(self.by_src.values())

    def settle(self, idle: float = 0.2, timeout: float = 3.0) -> None:
        """Wait until nothing has arrived for `idle` seconds (or `timeout`)."""
        end = time.monotonic() + timeout
        time.sleep(idle / 2)
        while time.monotonic() < end and time.monotonic() - self.last_rx < idle:
            time.sleep(idle / 4)


def ipv4_frame(src_mac: str, dst_mac: str, src: str, dst: str, proto: int, l4: bytes,
               ttl: int = 64, ident: int = 0) -> bytes:
    """An Ethernet + IPv4 frame around an L4 header and payload (`l4`)."""
    return packets.ethernet(packets.ETH_P_IP,
                            packets.ipv4(proto, l4, src=src, dst=dst, ttl=ttl, ident=ident),
                            src=src_mac, dst=dst_mac)


def udp_frame(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int,
              payload: bytes = b"", **ip) -> bytes:
    """A complete UDP/IPv4/Ethernet frame with correct checksums."""
    udp = packets.udp(sport, dport, payload, src=src, dst=dst)
    return ipv4_frame(src_mac, dst_mac, src, dst, packets.IPPROTO_UDP, udp, **ip)


def tcp_syn_frame(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int,
                  seq: int = 1, **ip) -> bytes:
    """A TCP SYN in a complete IPv4/Ethernet frame with correct checksums."""
    tcp = packets.tcp(sport, dport, src=src, dst=dst, flags="S", seq=seq)
    return ipv4_frame(src_mac, dst_mac, src, dst, packets.IPPROTO_TCP, tcp, **ip)


def icmp_echo_frame(src_mac: str, dst_mac: str, src: str, dst: str, echo_id: int = 1,
                    seq: int = 1, payload: bytes = b"", reply: bool = False, **ip) -> bytes:
    """An ICMP echo request (or reply) in a complete IPv4/Ethernet frame."""
    icmp = packets.icmp_echo(payload, ident=echo_id, seq=seq, reply=reply)
    return ipv4_frame(src_mac, dst_mac, src, dst, packets.IPPROTO_ICMP, icmp, **ip)


def send_frames(ns_name: str, ifname: str, frames: Iterable[bytes]) -> int:
    """Put raw Ethernet frames on the wire of `ifname` (AF_PACKET), exactly as
    given: no ARP, no routing, no checksums added. Returns how many were sent."""
    guard(ns_name, ifname)
    s = socket_in(ns_name, socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind((ifname, 0))
        n = 0
        for frame in frames:
            s.send(frame)
            n += 1
        return n
    finally:
        s.close()


class TcpServer(_Served):
    """A tiny TCP service in a namespace: for each connection it reads one
    request line and answers `<name> <request>`; `requests` records every
    request it answered."""

    def __init__(self, ns_name: str, port: int, name: str, ip: str = "0.0.0.0"):
        self.name = name
        self.requests: list[str] = []
        self.sock = socket_in(ns_name, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(128)
        self.sock.settimeout(0.05)
        self._serve(f"ebt-tcp-{name}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    req = conn.recv(256).decode(errors="replace").strip()
                    conn.sendall(f"{self.name} {req}\n".encode())
                    self.requests.append(req)
                except OSError:
                    pass


@dataclass
class Exchange:
    """One TCP request/response: what was asked, what came back, or the error."""
    request: str
    reply: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.reply.endswith(self.request)


def tcp_exchange(ns_name: str, dst: str, port: int, request: str, timeout: float = 1.0,
                 ip_options: bytes = b"") -> Exchange:
    """Connect from namespace `ns_name`, send one line, read the answer.
    `ip_options` (IP_OPTIONS, e.g. IP_NOP_OPTIONS) go into the IPv4 header of
    every packet the client sends, making it longer than 20 bytes."""
    ex = Exchange(request)
    s = socket_in(ns_name, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if ip_options:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options)
    try:
        s.connect((dst, port))
        s.sendall(request.encode() + b"\n")
        chunks = b""
        while not chunks.endswith(b"\n"):
            part = s.recv(256)
            if not part:
                break
            chunks += part
        ex.reply = chunks.decode(errors="replace").strip()
        if not ex.reply:
            ex.error = "connection closed without an answer"
    except OSError as e:
        ex.error = f"{type(e).__name__}: {e}"
    finally:
        s.close()
    return ex


@dataclass
class PingResult:
    transmitted: int
    received: int
    output: str = field(repr=False, default="")


def ping(sandbox: Sandbox, key: str, dst: str, count: int = 3, interval: float = 0.05,
         wait: float = 1.0) -> PingResult:
    """ping from namespace `key`; returns packets transmitted and received."""
    r = sandbox.run_in(key, ["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                             "-W", str(wait), dst])
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", r.stdout)
    if not m:
        raise RuntimeError(f"could not read ping's summary: {r.stdout}{r.stderr}")
    return PingResult(int(m.group(1)), int(m.group(2)), r.stdout)
