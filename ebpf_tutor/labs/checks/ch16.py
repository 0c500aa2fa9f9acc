"""Chapter 16 checks: the 5-tuple flow table, scan and flood detection,
pcap export of sampled packets.

Every check builds its own veth pair between two fresh namespaces, attaches
the learner's XDP program to `veth-b`, and puts frames on the wire of
`veth-a` that it crafted byte by byte (ebpf_tutor.sandbox.packets): it knows
every flow, every length and every source, and judges by what the learner's
program recorded. Lab 16.3 reads the learner's pcap file with tshark.
"""
from __future__ import annotations

import ctypes as ct
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from ...program import Program, close_all
from ...sandbox import net, packets, traffic, xdp
from ..verdict import LabFailed, expect, lab
from . import byte_order_blind, load_packet_program, require_table

FlowKey = tuple[str, str, int, int, int]        # src, dst, sport, dport, proto


def _load(lab_id: str, program: str, fn_name: str, cflags: list[str] | None = None) -> Program:
    return load_packet_program(lab_id, program, fn_name, xdp.load, "struct xdp_md *ctx", cflags)


def _port(rng: random.Random) -> int:
    while True:
        p = rng.randrange(1024, 60000)
        if not byte_order_blind(p) and not byte_order_blind(socket.htons(p)):
            return p


def _ip(addr_be: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", addr_be))


# -------------------------------------------------------------------- 16.1 --
class FlowPlan:
    """Frames of known flows: `frames` (shuffled) and `truth` {key: (packets, bytes)},
    with notes on the flows that catch a mistake."""

    def __init__(self, lab: net.VethPair, rng: random.Random):
        self.lab, self.rng = lab, rng
        self.frames: list[bytes] = []
        self.truth: dict[FlowKey, list[int]] = {}
        self.notes: dict[FlowKey, str] = {}
        self.sources = [lab.ip_a] + [f"10.200.0.{n}" for n in rng.sample(range(20, 250), 2)]

    def add(self, key: FlowKey, frame: bytes, note: str = "") -> None:
        self.frames.append(frame)
        t = self.truth.setdefault(key, [0, 0])
        t[0] += 1
        t[1] += len(frame)
        if note:
            self.notes[key] = note

    def build(self) -> "FlowPlan":
        rng, b = self.rng, self.lab.ip_b
        for i in range(5):                                       # plain UDP flows
            src, sp, dp = self.sources[i % 3], _port(rng), _port(rng)
            for _ in range(rng.randint(1, 9)):
                self.add((src, b, sp, dp, 17), packets.udp_packet(
                    dport=dp, sport=sp, src=src, dst=b, payload=bytes(rng.randrange(0, 400))))
        for i in range(3):                                       # TCP segments with data
            src, sp, dp = self.sources[i], _port(rng), _port(rng)
            for _ in range(rng.randint(1, 6)):
                self.add((src, b, sp, dp, 6), packets.tcp_packet(
                    dport=dp, sport=sp, src=src, dst=b, flags="PA",
                    payload=bytes(rng.randrange(1, 900))))
        a, sp, dp = self.lab.ip_a, _port(rng), _port(rng)        # both directions of one
        n_fwd = rng.randint(2, 5)
        for j, (s, d, p, q) in enumerate([(a, b, sp, dp), (b, a, dp, sp)]):
            for _ in range(n_fwd + 3 * j):
                self.add((s, d, p, q, 17), packets.udp_packet(dport=q, sport=p, src=s, dst=d,
                                                              payload=bytes(40 + 60 * j)),
                         "one direction of a conversation (the other is a flow of its own)")
        sp, dp = _port(rng), _port(rng)                          # IP options: 24-byte header
        for _ in range(rng.randint(2, 5)):
            self.add((a, b, sp, dp, 17), packets.udp_packet(
                dport=dp, sport=sp, src=a, dst=b, payload=bytes(rng.randrange(0, 100)),
                ip_options=traffic.IP_NOP_OPTIONS), "a UDP flow with IP options (ihl = 6)")
        for _ in range(rng.randint(2, 4)):                       # ICMP: no ports
            self.add((self.sources[1], b, 0, 0, 1), packets.icmp_packet(
                src=self.sources[1], dst=b, payload=bytes(rng.randrange(8, 200))),
                "ICMP echo requests (no ports)")
        self._fragments()
        rng.shuffle(self.frames)
        return self

    def _fragments(self) -> None:
        """A UDP datagram in two IP fragments: the first has the UDP header,
        the second (offset 48) only payload, whose first bytes are not zero."""
        rng, a, b = self.rng, self.lab.ip_a, self.lab.ip_b
        sp, dp = _port(rng), _port(rng)
        segment = packets.udp(sp, dp, bytes(rng.randrange(1, 256) for _ in range(120)),
                              src=a, dst=b)
        ident = rng.randrange(1, 65535)
        first = packets.ethernet(packets.ETH_P_IP, packets.ipv4(
            packets.IPPROTO_UDP, segment[:48], src=a, dst=b, ident=ident, dont_fragment=False,
            more_fragments=True))
        later = packets.ethernet(packets.ETH_P_IP, packets.ipv4(
            packets.IPPROTO_UDP, segment[48:], src=a, dst=b, ident=ident, dont_fragment=False,
            frag_offset=48))
        self.add((a, b, sp, dp, 17), first, "the first fragment of a UDP datagram")
        self.add((a, b, 0, 0, 17), later,
                 "a later IP fragment (it has no UDP header: ports 0)")


def read_flow_table(table) -> dict[FlowKey, tuple[int, int]]:
    out = {}
    for k, v in table.items():
        out[(_ip(k.saddr), _ip(k.daddr), k.sport, k.dport, k.proto)] = (v.packets, v.bytes)
    return out


def _show(key: FlowKey) -> str:
    s, d, sp, dp, proto = key
    name = {1: "icmp", 6: "tcp", 17: "udp"}.get(proto, str(proto))
    return f"{name} {s}:{sp} -> {d}:{dp}"


@lab("16.1", "5-tuple flow table")
def check_flow_table(program: str) -> str:
    """A dozen known flows (random counts, sizes, sources), shuffled, through
    the learner's XDP program; every flow's packets and bytes exactly."""
    rng = random.Random()
    try:
        with net.VethPair(quiet=True) as lab, _load("16.1", program, "flow_xdp") as prog:
            table = require_table(prog, "flows", "16.1",
                                  "keep BPF_HASH(flows, struct flow_key, struct flow_val, 4096);")
            plan = FlowPlan(lab, rng).build()
            with xdp.attach(prog, "flow_xdp", *lab.where("b")):
                traffic.send_frames(lab.ns["a"], lab.ifname["a"], plan.frames)
                time.sleep(0.05)
            try:
                got = read_flow_table(table)
            except AttributeError as e:
                raise LabFailed("16.1", f"the map's key or value lacks a field the lab names: {e}",
                                "keep struct flow_key and struct flow_val as given") from None
    finally:
        close_all()
    return _judge_flows(got, plan)


def _judge_flows(got: dict[FlowKey, tuple[int, int]], plan: FlowPlan) -> str:
    truth = {k: tuple(v) for k, v in plan.truth.items()}
    expect(got, "16.1", f"{len(plan.frames)} frames of {len(truth)} flows crossed the interface "
           "and `flows` is empty", "fill a struct flow_key from the headers and count the packet "
           "in `flows` (lookup_or_try_init, then __sync_fetch_and_add)")
    for key, (packets_, bytes_) in sorted(truth.items(), key=lambda kv: (kv[0] in plan.notes, kv[0])):
        note = f" ({plan.notes[key]})" if key in plan.notes else ""
        if key not in got:
            raise LabFailed("16.1", f"no entry for the flow {_show(key)}{note}; {packets_} "
                            f"packet(s) went by. Your table has: "
                            f"{', '.join(_show(k) for k in sorted(got)[:4])}...",
                            _missing_hint(key, got, plan))
        p, nbytes = got[key]
        expect(p == packets_, "16.1", f"{_show(key)}{note}: {packets_} packets went by, your "
               f"table says {p}", "add 1 for every packet: __sync_fetch_and_add(&v->packets, 1), "
               "never an assignment")
        if nbytes != bytes_:
            hint = "add the frame's length for every packet: ctx->data_end - ctx->data"
            if nbytes == bytes_ - 14 * packets_:
                hint = ("you count the IP packet; count the frame, Ethernet header (14 bytes) "
                        "included: ctx->data_end - ctx->data")
            raise LabFailed("16.1", f"{_show(key)}{note}: {bytes_} frame bytes went by in "
                            f"{packets_} packet(s), your table says {nbytes}", hint)
    extra = sorted(set(got) - set(truth))
    expect(not extra, "16.1", f"your table has flows that were never sent: "
           f"{', '.join(_show(k) for k in extra[:3])}",
           "a key is the frame's own addresses, ports (host order) and protocol; zero the key "
           "first (struct flow_key key = {};)")
    return (f"{len(truth)} flows, {len(plan.frames)} frames: every packet and frame byte right, "
            "IP options and fragments included")


def _missing_hint(key: FlowKey, got: dict, plan: FlowPlan) -> str:
    s, d, sp, dp, proto = key
    swapped = (s, d, socket.htons(sp), socket.htons(dp), proto)
    if swapped in got:
        return "ports are stored in host order: ntohs(p->source), ntohs(p->dest)"
    if (d, s, dp, sp, proto) in got:
        return "source and destination are swapped: saddr is ip->saddr, sport the first port"
    if key in plan.notes and "options" in plan.notes[key]:
        return "the ports start ip->ihl * 4 bytes after the IP header's start, not 20"
    if sp == 0 and proto == 17:
        return ("a later fragment (ip->frag_off & htons(0x1FFF) non-zero) carries no UDP header: "
                "leave its ports 0")
    if proto == 1:
        return "ICMP has no ports: its key has ports 0 and proto 1"
    return "key every IPv4 frame by its addresses, protocol and (TCP/UDP) ports"
