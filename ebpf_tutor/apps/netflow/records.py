"""What the analyzer's maps and rings hold, as Python values: flows,
protocol shares, top talkers, alerts and samples."""
from __future__ import annotations

import socket
import struct
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
ETHERTYPE_NAMES = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp", 0: "short"}
ALERT_KINDS = {1: "scan", 2: "flood"}
TCP_FLAG_LETTERS = "FSRPAUEC"


def ip_text(addr_be: int) -> str:
    """An IPv4 address as the program stored it (network order in a u32,
    read on this little- or big-endian machine) as dotted text."""
    return socket.inet_ntoa(struct.pack("=I", addr_be))


def monotonic_to_wall(ns: int) -> float:
    """A bpf_ktime_get_ns() time (CLOCK_MONOTONIC) as seconds since the epoch."""
    offset = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return (ns + offset) / 1e9


def flags_text(bits: int) -> str:
    return "".join(letter for i, letter in enumerate(TCP_FLAG_LETTERS) if bits >> i & 1)


@dataclass(frozen=True)
class Flow:
    """One direction of a conversation and what crossed the hook."""
    src: str
    dst: str
    sport: int
    dport: int
    proto: str
    packets: int
    bytes: int                   # frame bytes, Ethernet header included
    first_ns: int = 0
    last_ns: int = 0
    tcp_flags: str = ""

    @property
    def key(self) -> tuple[str, str, int, int, str]:
        return (self.src, self.dst, self.sport, self.dport, self.proto)

    def as_dict(self) -> dict:
        return asdict(self)


def proto_name(number: int) -> str:
    return PROTO_NAMES.get(number, str(number))


def read_flows(table) -> list[Flow]:
    """Every entry of the `flows` map, busiest first."""
    out = []
    for k, v in table.items():
        out.append(Flow(ip_text(k.saddr), ip_text(k.daddr), k.sport, k.dport, proto_name(k.proto),
                        v.packets, v.bytes, v.first_ns, v.last_ns, flags_text(v.tcp_flags)))
    return sorted(out, key=lambda f: (-f.bytes, f.key))


@dataclass(frozen=True)
class ProtocolShare:
    protocol: str                # "tcp", "udp", "icmp" (IPv4), else the EtherType's name
    packets: int
    bytes: int
    packet_share: float          # of all packets the hook saw
    byte_share: float


def read_protocols(table) -> list[ProtocolShare]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for k, v in table.items():
        if k.ethertype == 0x0800:
            name = proto_name(k.proto)
        else:
            name = ETHERTYPE_NAMES.get(k.ethertype, f"ethertype 0x{k.ethertype:04x}")
        counts[name][0] += v.packets
        counts[name][1] += v.bytes
    return shares(counts)


def shares(counts: dict[str, list[int]]) -> list[ProtocolShare]:
    total_p = sum(p for p, _ in counts.values()) or 1
    total_b = sum(b for _, b in counts.values()) or 1
    return sorted((ProtocolShare(name, p, b, p / total_p, b / total_b)
                   for name, (p, b) in counts.items()), key=lambda s: (-s.bytes, s.protocol))


@dataclass(frozen=True)
class Talker:
    address: str
    sent_packets: int
    sent_bytes: int
    received_packets: int
    received_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.sent_bytes + self.received_bytes


def top_talkers(flows: list[Flow], n: int = 5) -> list[Talker]:
    """The addresses that sent and received the most bytes."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for f in flows:
        acc[f.src][0] += f.packets
        acc[f.src][1] += f.bytes
        acc[f.dst][2] += f.packets
        acc[f.dst][3] += f.bytes
    talkers = [Talker(a, *v) for a, v in acc.items()]
    return sorted(talkers, key=lambda t: (-t.total_bytes, t.address))[:n]


@dataclass(frozen=True)
class Alert:
    """A source that crossed a threshold in one window (one alert per kind
    per window)."""
    kind: str                    # "scan" or "flood"
    source: str
    value: int                   # ports tried, or packets, when the threshold was reached
    ts_ns: int
    window_start_ns: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Alert":
        ts, saddr, kind, value, start = struct.unpack_from("=QIIQQ", raw)
        return cls(ALERT_KINDS.get(kind, str(kind)), ip_text(saddr), value, ts, start)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "source": self.source, "value": self.value,
                "after_s": round((self.ts_ns - self.window_start_ns) / 1e9, 6)}


@dataclass(frozen=True)
class Sample:
    """A sampled frame: its first cap_len bytes and its true length."""
    ts_ns: int
    pkt_len: int
    ifindex: int
    direction: str               # "in" or "out"
    data: bytes

    @classmethod
    def from_bytes(cls, raw: bytes, snap_len: int) -> "Sample":
        ts, pkt_len, cap_len, ifindex, direction = struct.unpack_from("=QIIII", raw)
        data = raw[24:24 + min(cap_len, snap_len)]
        return cls(ts, pkt_len, ifindex, "out" if direction else "in", data)
