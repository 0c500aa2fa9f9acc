"""Traffic whose true numbers we know, for the TC labs of chapter 8.

Every socket here lives in a namespace of a sandbox (`net.VethPair`), so
nothing leaves the lab network. What was *sent* is counted by the sender;
what *arrived* is counted on the other side: by the receiving interface's
counters, by sockets that read it, or by echoes that come back.

    with VethPair() as lab:
        d = udp_flow(lab, 9000, seconds=0.5)              # as fast as Python can
        d.rate, d.delivered_bytes                        # bytes/s at veth-b
        with UdpEcho(lab.ns["b"], [7000]):
            rtts = udp_probes(lab.ns["a"], lab.ip_b, [7000], count=50)[7000]
"""
from __future__ import annotations

import os
import random
import select
import socket
import statistics
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable


from . import net
from .net import socket_in      # flows.socket_in: chapter 8 and its tests call it so
from .packets import checksum


def link_counters(ns_name: str, ifname: str) -> dict[str, int]:
    """An interface's packet, byte and drop counters (rx_bytes, tx_packets, ...)."""
    st = net.link_stats(ns_name, ifname)
    return {k: st.get(k, 0) for k in ("rx_bytes", "rx_packets", "tx_bytes", "tx_packets",
                                      "rx_dropped", "tx_dropped")}


# ------------------------------------------------------- bulk UDP flows ----
WIRE_OVERHEAD = 14 + 20 + 8      # Ethernet + IPv4 + UDP headers around each payload


@dataclass
class Delivery:
    """One UDP flow: what the sender sent, what reached the other interface."""
    seconds: float
    sent_packets: int
    sent_bytes: int            # on the wire: payload + headers
    delivered_packets: int
    delivered_bytes: int       # growth of the receiving interface's rx_bytes

    @property
    def rate(self) -> float:
        """Delivered bytes per second."""
        return self.delivered_bytes / self.seconds if self.seconds else 0.0

    @property
    def offered_rate(self) -> float:
        return self.sent_bytes / self.seconds if self.seconds else 0.0

    @property
    def delivered_fraction(self) -> float:
        return self.delivered_packets / self.sent_packets if self.sent_packets else 0.0


def udp_flow(lab, port: int, seconds: float, *, size: int = 1000, rate: float | None = None,
             src: str = "a", dst: str = "b", settle: float = 0.15) -> Delivery:
    """Send UDP datagrams of `size` payload bytes from side `src` to side
    `dst` of a VethPair for `seconds`: as fast as possible, or paced at `rate`
    wire bytes per second. Delivered = what the `dst` interface received
    (its counters, read before and `settle` seconds after)."""
    sock = socket_in(lab.ns[src])
    payload = os.urandom(size)
    wire = size + WIRE_OVERHEAD
    where = (lab.ns[dst], lab.ifname[dst])
    try:
        before = link_counters(*where)
        sent, start = 0, time.perf_counter()
        end, next_t = start + seconds, start
        target = (lab.ip[dst], port)
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if rate:
                if now < next_t:
                    time.sleep(min(next_t - now, end - now))
                    continue
                next_t = max(next_t, now - 0.02) + wire / rate   # never catch up more than 20 ms
            try:
                sock.sendto(payload, target)
                sent += 1
            except (BlockingIOError, OSError):
                pass
        took = time.perf_counter() - start
        time.sleep(settle)
        after = link_counters(*where)
    finally:
        sock.close()
    return Delivery(took, sent, sent * wire, after["rx_packets"] - before["rx_packets"],
                    after["rx_bytes"] - before["rx_bytes"])


class _PortSockets:
    """One non-blocking socket per port in a namespace (`socks`, by port),
    each made ready by the subclass's `_open`; `_drain` counts arrivals."""

    def __init__(self, ns_name: str, ports: Iterable[int]):
        self.socks: dict[int, socket.socket] = {}
        try:
            for port in ports:
                self.socks[port] = self._open(ns_name, port)
        except BaseException:
            self.close()
            raise

    def _open(self, ns_name: str, port: int) -> socket.socket:
        raise NotImplementedError

    def _take(self, s: socket.socket) -> None:
        """Take one arrival off `s`; BlockingIOError when there is none."""
        raise NotImplementedError

    def _drain(self, counts: Counter[int]) -> None:
        """Take whatever is waiting, adding one to counts[port] per arrival."""
        for port, s in self.socks.items():
            while True:
                try:
                    self._take(s)
                except (BlockingIOError, InterruptedError):
                    break
                counts[port] += 1

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        self.socks = {}

    def __enter__(self) -> "_PortSockets":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class UdpSinks(_PortSockets):
    """UDP sockets bound to `ports` in a namespace; `counts()` reads what
    arrived and returns datagrams per port (cumulative)."""

    def __init__(self, ns_name: str, ports: Iterable[int]):
        self.received: Counter[int] = Counter()
        super().__init__(ns_name, ports)

    def _open(self, ns_name: str, port: int) -> socket.socket:
        s = socket_in(ns_name)
        s.bind(("0.0.0.0", port))
        s.setblocking(False)
        return s

    def _take(self, s: socket.socket) -> None:
        s.recv(65536)

    def counts(self) -> Counter[int]:
        self._drain(self.received)
        return Counter({port: self.received[port] for port in self.socks})


def udp_send(ns_name: str, dst: str, port: int, count: int, size: int = 64,
             ip_options: bytes = b"") -> int:
    """Send `count` datagrams to dst:port from a fresh socket; returns count.
    `ip_options` (IP_OPTIONS) go into every datagram's IPv4 header."""
    s = socket_in(ns_name)
    if ip_options:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options)
    try:
        for _ in range(count):
            s.sendto(b"\0" * size, (dst, port))
    finally:
        s.close()
    return count


# ------------------------------------------------------ UDP echo probes ----
class UdpEcho:
    """A UDP echo service on `ports` in a namespace, on a thread: every
    datagram goes straight back to its sender."""

    def __init__(self, ns_name: str, ports: Iterable[int]):
        self.socks = []
        for port in ports:
            s = socket_in(ns_name)
            s.bind(("0.0.0.0", port))
            s.setblocking(False)
            self.socks.append(s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ebt-udp-echo")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select(self.socks, [], [], 0.05)
            for s in ready:
                while True:
                    try:
                        data, peer = s.recvfrom(2048)
                        s.sendto(data, peer)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for s in self.socks:
            s.close()

    def __enter__(self) -> "UdpEcho":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def udp_probes(ns_name: str, dst: str, ports: list[int], count: int, interval: float = 0.002,
               wait: float = 0.4) -> dict[int, list[float | None]]:
    """Send `count` numbered probes to each port (interleaved, `interval`
    apart) and time the echoes. Returns, per port, one round-trip time in
    seconds per probe, or None for a probe whose echo never came back
    within `wait` seconds of the last send."""
    s = socket_in(ns_name)
    s.setblocking(False)
    tag = random.getrandbits(32)
    sent_at: dict[tuple[int, int], float] = {}
    rtt: dict[tuple[int, int], float] = {}

    def collect() -> None:
        while True:
            try:
                data = s.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            if len(data) >= 10:
                t, port, seq = struct.unpack("!IHI", data[:10])
                key = (port, seq)
                if t == tag and key in sent_at and key not in rtt:
                    rtt[key] = time.perf_counter() - sent_at[key]
    try:
        next_t = time.perf_counter()
        for seq in range(count):
            for port in ports:
                while (now := time.perf_counter()) < next_t:    # wait, but read echoes meanwhile
                    select.select([s], [], [], next_t - now)
                    collect()
                next_t = max(next_t, time.perf_counter() - 0.02) + interval
                sent_at[(port, seq)] = time.perf_counter()
                s.sendto(struct.pack("!IHI", tag, port, seq).ljust(32, b"\0"), (dst, port))
                collect()
        end = time.perf_counter() + wait
        while time.perf_counter() < end and len(rtt) < len(sent_at):
            select.select([s], [], [], 0.02)
            collect()
    finally:
        s.close()
    return {port: [rtt.get((port, seq)) for seq in range(count)] for port in ports}


def loss(rtts: list[float | None]) -> float:
    """Fraction of probes that got no answer."""
    return sum(r is None for r in rtts) / len(rtts) if rtts else 0.0


def median_ms(rtts: list[float | None]) -> float:
    """Median round-trip time of the answered probes, in milliseconds."""
    got = [r for r in rtts if r is not None]
    return statistics.median(got) * 1e3 if got else float("nan")


# -------------------------------------------------------------- TCP, ICMP --
class TcpListeners(_PortSockets):
    """Listening TCP sockets on `ports` in a namespace; `accepted()` accepts
    what is waiting and returns connections per port (cumulative)."""

    def __init__(self, ns_name: str, ports: Iterable[int]):
        self.count: Counter[int] = Counter()
        super().__init__(ns_name, ports)

    def _open(self, ns_name: str, port: int) -> socket.socket:
        s = socket_in(ns_name, socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        s.setblocking(False)
        return s

    def _take(self, s: socket.socket) -> None:
        conn, _ = s.accept()
        conn.close()

    def accepted(self) -> Counter[int]:
        self._drain(self.count)
        return Counter(self.count)


def tcp_connects(ns_name: str, dst: str, port: int, count: int, timeout: float = 0.4) -> int:
    """Open `count` TCP connections to dst:port at once (non-blocking) and
    return how many were established within `timeout` seconds. A dropped
    SYN is retransmitted only after 1 s, so each attempt sends one SYN."""
    socks = [socket_in(ns_name, socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in socks:
            s.setblocking(False)
            s.connect_ex((dst, port))
        pending, ok = list(socks), 0
        end = time.perf_counter() + timeout
        while pending and time.perf_counter() < end:
            _, ready, _ = select.select([], pending, [], max(0.0, end - time.perf_counter()))
            for s in ready:
                pending.remove(s)
                ok += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        return ok
    finally:
        for s in socks:
            s.close()


def icmp_echo(ns_name: str, dst: str, count: int, timeout: float = 0.4) -> int:
    """Send `count` ICMP echo requests to `dst` and return how many echo
    replies (with our identifier and a valid checksum) came back within
    `timeout` seconds."""
    s = socket_in(ns_name, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = random.getrandbits(16)
    got: set[int] = set()
    try:
        s.setblocking(False)
        for seq in range(count):
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"ebpf-tutor-echo!"
            hdr = hdr[:2] + struct.pack("!H", checksum(hdr)) + hdr[4:]
            s.sendto(hdr, (dst, 0))
        end = time.perf_counter() + timeout
        while len(got) < count and time.perf_counter() < end:
            select.select([s], [], [], 0.02)
            while True:
                try:
                    pkt = s.recv(2048)
                except (BlockingIOError, InterruptedError):
                    break
                ihl = (pkt[0] & 0x0F) * 4
                msg = pkt[ihl:]
                typ, _, _, rid, seq = struct.unpack("!BBHHH", msg[:8])
                if typ == 0 and rid == ident and checksum(msg) == 0:
                    got.add(seq)        # a reply with a bad checksum is no reply
    finally:
        s.close()
    return len(got)
