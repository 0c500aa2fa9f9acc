"""tshark on the same interface: a capture that is known to be running
before the traffic starts, and its conversation tables.

    with Capture(ns_name, "veth-b", path, marker=(lab.ip_a, 9)) as cap:
        ...                                   # traffic
    conv = conversations(path, "tcp") + conversations(path, "udp")

`tshark -i` prints "Capturing on" before its capture process (dumpcap)
receives anything, so the capture sends marker datagrams across the
interface until tshark prints one (`-P -l`): from then on, it records.
The markers (UDP to port `marker[1]`) are left out of the conversations.

tshark's conversation tables (`-z conv,tcp`) count frames and frame bytes
(Ethernet header included) in each direction; a byte total of 10,000 or
more is printed rounded ("15 kB"), so `conversations` refuses those.
"""
from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...sandbox.net import socket_in
from .records import Flow

MARKER_PORT = 9
CONV = re.compile(r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\S+)")


class Capture:
    """`ip netns exec NS tshark -i IF -w PATH`, started and proven to be
    capturing on enter, stopped (SIGINT, file complete) on exit."""

    def __init__(self, ns_name: str, ifname: str, path: str | Path, marker: tuple[str, int],
                 timeout: float = 10.0):
        self.ns_name, self.ifname, self.path = ns_name, ifname, Path(path)
        self.marker, self.timeout = marker, timeout
        self.proc: subprocess.Popen | None = None
        self.markers = 0                 # marker frames tshark has printed so far
        self.sent = 0                    # marker frames sent so far
        self._seen = threading.Condition()
        self.captured = 0

    def __enter__(self) -> "Capture":
        self.path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_name, "tshark", "-n", "-l", "-P", "-i", self.ifname,
             "-w", str(self.path), "-f", "not ip6"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self._send_markers_until_seen()
        except BaseException:
            self._stop()
            raise
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        marker = f"→ {self.marker[1]} "    # "UDP 67 39097 → 9 Len=25" (-n: port numbers)
        for line in self.proc.stdout:       # one line per captured frame (-P -l)
            if marker in line:
                with self._seen:
                    self.markers += 1
                    self._seen.notify_all()
        with self._seen:                    # tshark ended
            self._seen.notify_all()

    def _send_markers_until_seen(self) -> None:
        """Send markers until tshark prints one sent by this call (it has
        printed more markers than were sent before): every frame that
        crossed the interface before it is then in the capture too."""
        before = self.sent
        s = socket_in(self.ns_name)
        try:
            end = time.monotonic() + self.timeout
            while True:
                with self._seen:
                    if self.markers > before or self._seen.wait(0.05) and self.markers > before:
                        break
                if self.proc.poll() is not None or time.monotonic() > end:
                    err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                    raise RuntimeError(f"tshark captured no marker on {self.ifname}: {err}")
                s.sendto(b"ebpf-tutor capture marker", self.marker)
                self.sent += 1
        finally:
            s.close()

    def _stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            m = re.search(r"(\d+) packets? captured", err)
            self.captured = int(m.group(1)) if m else 0
            for stream in (self.proc.stdout, self.proc.stderr):
                with contextlib.suppress(Exception):
                    stream.close()

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self._send_markers_until_seen()
        finally:
            self._stop()


@dataclass(frozen=True)
class Conversation:
    """One line of `tshark -q -z conv,<proto>`: A <-> B with frames and
    bytes each way (`a_to_b` is tshark's "->" column)."""
    proto: str
    a: str
    a_port: int
    b: str
    b_port: int
    a_to_b_frames: int
    a_to_b_bytes: int
    b_to_a_frames: int
    b_to_a_bytes: int

    def flows(self) -> list[Flow]:
        """The same as two directed flows (a direction with no frames is left out)."""
        out = []
        if self.a_to_b_frames:
            out.append(Flow(self.a, self.b, self.a_port, self.b_port, self.proto,
                            self.a_to_b_frames, self.a_to_b_bytes))
        if self.b_to_a_frames:
            out.append(Flow(self.b, self.a, self.b_port, self.a_port, self.proto,
                            self.b_to_a_frames, self.b_to_a_bytes))
        return out


def _bytes(number: str, unit: str) -> int:
    if unit != "bytes":
        raise ValueError(f"tshark rounded a byte count to {number} {unit}: keep each direction "
                         "of a flow under 10,000 bytes to compare exactly")
    return int(number.replace(",", ""))


def conversations(path: str | Path, proto: str) -> list[Conversation]:
    """`tshark -r PATH -q -z conv,PROTO` (tcp or udp), marker datagrams left out."""
    filt = f"conv,{proto}" + (f",not udp.port=={MARKER_PORT}" if proto == "udp" else "")
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-q", "-z", filt],
                         capture_output=True, text=True, check=True).stdout
    convs = []
    for line in out.splitlines():
        m = CONV.match(line.strip())
        if m:
            a, ap, b, bp, ba_f, ba_n, ba_u, ab_f, ab_n, ab_u = m.groups()
            convs.append(Conversation(proto, a, int(ap), b, int(bp), int(ab_f), _bytes(ab_n, ab_u),
                                      int(ba_f), _bytes(ba_n, ba_u)))
    return convs


def conv_text(path: str | Path, proto: str) -> str:
    """tshark's own table, as it prints it (marker datagrams left out)."""
    filt = f"conv,{proto}" + (f",not udp.port=={MARKER_PORT}" if proto == "udp" else "")
    return subprocess.run(["tshark", "-n", "-r", str(path), "-q", "-z", filt],
                          capture_output=True, text=True, check=True).stdout


def directed(convs: list[Conversation]) -> dict[tuple, tuple[int, int]]:
    """{(src, dst, sport, dport, proto): (frames, bytes)} of every direction."""
    return {f.key: (f.packets, f.bytes) for c in convs for f in c.flows()}


def compare(ours: list[Flow], convs: list[Conversation]) -> list[dict]:
    """One row per directed flow either side saw, ours against tshark's."""
    theirs = directed(convs)
    mine = {f.key: (f.packets, f.bytes) for f in ours
            if f.proto in ("tcp", "udp") and MARKER_PORT not in (f.sport, f.dport)}
    rows = []
    for key in sorted(set(mine) | set(theirs)):
        p, b = mine.get(key, (0, 0))
        tp, tb = theirs.get(key, (0, 0))
        rows.append({"proto": key[4], "src": f"{key[0]}:{key[2]}", "dst": f"{key[1]}:{key[3]}",
                     "packets": p, "tshark_frames": tp, "bytes": b, "tshark_bytes": tb,
                     "equal": p == tp and b == tb})
    return rows
