"""Chapter 12 checks: a high-performance packet counter, zero-copy events,
adaptive sampling.

Every check makes work whose true size it knows and that only it could
have made: packets between two namespaces it created, close() calls on a
descriptor number nobody has open (`contention.new_marker`), sent by
processes pinned to each CPU at the same moment so the learner's program
really runs on two CPUs at once. Sizes are random. Timing never decides a
verdict: counts, and what the program recorded, do.
"""
from __future__ import annotations

import math
import random
import subprocess
import threading
import time

from ...contention import hammer, new_marker, udp_blast, usable_cpus
from ...program import Program, close_all
from ...sandbox import xdp
from ...sandbox.net import VethPair
from ..verdict import LabFailed, expect, lab
from . import load_packet_program, require_table

# -------------------------------------------------------------------- 12.1 --
FRAME_BYTES = 14 + 20 + 8 + 1      # Ethernet + IPv4 + UDP + a one-byte payload
ROUNDS = 2


def udp_no_ports(ns_name: str) -> int:
    """Datagrams that reached UDP in `ns_name` for a port nobody listens on."""
    out = subprocess.run(["ip", "netns", "exec", ns_name, "cat", "/proc/net/snmp"],
                         capture_output=True, text=True, check=True).stdout
    head, values = [ln.split()[1:] for ln in out.splitlines() if ln.startswith("Udp:")][:2]
    return int(dict(zip(head, values))["NoPorts"])


def _slots(prog, name: str, lab_id: str, hint: str) -> list:
    table = require_table(prog, name, lab_id, hint)
    value = table[table.Key(0)]
    slots = [value] if hasattr(value, "_fields_") else list(value)   # per-CPU: one per CPU
    for f in ("packets", "bytes"):
        expect(hasattr(slots[0], f), lab_id, f"struct counters has no field {f}",
               "keep the given struct counters { u64 packets; u64 bytes; }")
    return slots


@lab("12.1", "high-performance packet counter")
def check_packet_counter(program: str, read_counters) -> str:
    """Two senders pinned to two CPUs blast the veth at once, twice; both
    counters must be exact, per CPU and in all, and every packet must pass."""
    lab_id = "12.1"
    rng = random.Random()
    cpus = usable_cpus()[:2]
    per_sender = [rng.randint(150_000, 250_000) for _ in range(ROUNDS)]
    keep = "keep the given declaration: "
    try:
        with VethPair(quiet=True) as net_:
            prog = load_packet_program(lab_id, program, "count_packets", xdp.load,
                                       "struct xdp_md *ctx")
            with xdp.attach(prog, "count_packets", *net_.where("b"), mode="generic"):
                before = udp_no_ports(net_.ns["b"])
                for n in per_sender:
                    udp_blast(net_.ns["a"], net_.ip_b, 9, n, cpus)
                time.sleep(0.3)                 # the last packets leave the backlog
                passed = udp_no_ports(net_.ns["b"]) - before
                per_cpu = _slots(prog, "per_cpu", lab_id,
                                 keep + "BPF_PERCPU_ARRAY(per_cpu, struct counters, 1);")
                shared = _slots(prog, "shared", lab_id,
                                keep + "BPF_ARRAY(shared, struct counters, 1);")
                read = read_counters(prog)
    finally:
        close_all()

    sent = sum(per_sender) * len(cpus)
    expect(passed == sent, lab_id,
           f"{sent - passed} of {sent} packets never reached the receiver's stack",
           "a counter must not change the packet's fate: return XDP_PASS")
    expect(len(per_cpu) >= len(cpus), lab_id,
           f"`per_cpu` has one value, not one per CPU: it is not a per-CPU map",
           "declare it with BPF_PERCPU_ARRAY(per_cpu, struct counters, 1)")
    pc_packets = sum(s.packets for s in per_cpu)
    pc_bytes = sum(s.bytes for s in per_cpu)
    expect(pc_packets == sent, lab_id,
           f"per_cpu counted {pc_packets} packets of {sent} sent ({sent - pc_packets} lost)",
           "look up this CPU's slot in per_cpu and add 1 to packets for every packet")
    want_cpu = sum(per_sender)
    for cpu in cpus:
        expect(per_cpu[cpu].packets == want_cpu, lab_id,
               f"CPU {cpu}'s slot of per_cpu holds {per_cpu[cpu].packets} packets; its sender "
               f"sent {want_cpu}",
               "each CPU adds to its own slot only: per_cpu.lookup(&zero) gives it")
    expect(pc_bytes == sent * FRAME_BYTES, lab_id,
           f"per_cpu counted {pc_bytes} bytes; {sent} frames of {FRAME_BYTES} bytes make "
           f"{sent * FRAME_BYTES}",
           "add the whole frame's length: ctx->data_end - ctx->data (the given `len`)")
    sh_packets, sh_bytes = shared[0].packets, shared[0].bytes
    if sh_packets < sent:
        raise LabFailed(lab_id, f"the shared counter lost {sent - sh_packets} of {sent} packets "
                        f"while two CPUs counted at once",
                        "x += 1 is a load, an add and a store: another CPU can store in "
                        "between. Use __sync_fetch_and_add(&all->packets, 1)")
    expect(sh_packets == sent, lab_id, f"the shared counter counted {sh_packets} packets of "
           f"{sent} sent", "add 1 per packet to shared's packets, atomically")
    if sh_bytes != sent * FRAME_BYTES:
        raise LabFailed(lab_id, f"the shared counter has {sh_bytes} bytes; {sent} frames of "
                        f"{FRAME_BYTES} bytes make {sent * FRAME_BYTES}",
                        "add len atomically too: __sync_fetch_and_add(&all->bytes, len)")
    got = read_counters(prog) if read is None else read
    expect(isinstance(got, dict) and got.get("packets") == sent and got.get("bytes") == pc_bytes,
           lab_id, f"read_counters gave {got}; the per-CPU slots add up to "
           f"{{'packets': {sent}, 'bytes': {pc_bytes}}}",
           "sum the field over every CPU's slot: sum(s.packets for s in prog['per_cpu'][0])")
    return (f"{sent:,} packets from {len(cpus)} CPUs at once, counted exactly by both "
            f"counters ({want_cpu:,} per CPU)")
