"""Chapter 7 checks: XDP DDoS protection, L4 load balancer, packet sampling.

Every check builds its own network of namespaces (ebpf_tutor.sandbox.net), attaches
the learner's program in native mode to an interface of that network, drives
traffic whose true counts it knows (ebpf_tutor.sandbox.traffic), and judges by what
arrives where."""
from __future__ import annotations

import ctypes as ct
import math
import random
import secrets
import socket
import struct
import time

from ...sandbox import net, packets, traffic, xdp
from ..verdict import LabFailed, expect, lab
from ...program import Program, close_all
from . import byte_order_blind, has_table, load_packet_program


def _load(lab_id: str, program: str, fn_name: str, cflags: list[str]) -> Program:
    """Compile the learner's program and load its XDP function (verifier included)."""
    return load_packet_program(lab_id, program, fn_name, xdp.load, "struct xdp_md *ctx", cflags)


def _pct(part: int, whole: int) -> str:
    return f"{part} of {whole} ({100 * part / max(whole, 1):.0f}%)"


# -------------------------------------------------------------------- 7.1 --
DDOS_LIMIT, DDOS_WINDOW = 50, 0.5          # packets per source, per window of seconds
FLOOD, LEGIT = 3000, 20


@lab("7.1", "DDoS protection")
def check_ddos(program: str) -> str:
    """An attacker floods, a legit client sends a little, both through a
    router to the victim whose veth carries the learner's program. Counted
    by a UDP socket on the victim, per source."""
    cflags = [f"-DRATE_LIMIT={DDOS_LIMIT}", f"-DWINDOW_NS={int(DDOS_WINDOW * 1e9)}ULL"]
    port = random.randrange(20000, 30000)
    try:
        with net.Star(["attacker", "legit", "victim"], hub="router") as lan, \
                _load("7.1", program, "xdp_ddos", cflags) as prog, \
                xdp.attach(prog, "xdp_ddos", *lan.where("victim")), \
                traffic.UdpSink(lan.ns["victim"], port) as sink:
            victim = lan.ip["victim"]
            # the router must ask for the victim's MAC (ARP through the learner's program)
            lan.run_in("router", ["ip", "neigh", "del", victim, "dev", lan.hub_if["victim"]],
                       check=True)

            def flow(who: str, flow_id: int) -> traffic.UdpFlow:
                return traffic.UdpFlow(lan.ns[who], victim, port, flow_id=flow_id)

            # 1. low rate from both: everything arrives
            with flow("attacker", 10) as a0, flow("legit", 20) as l0:
                for _ in range(5):
                    a0.send()
                    l0.send()
                    time.sleep(0.01)
            # 2. the flood, with the legit client's packets spread through it
            with flow("attacker", 11) as a1, flow("legit", 21) as l1:
                every = FLOOD // LEGIT
                for i in range(FLOOD):
                    a1.send()
                    if i % every == every // 2:
                        l1.send()
            sink.settle()
            # 3. after a quiet window, the attacker at a low rate again
            time.sleep(DDOS_WINDOW * 1.6)
            with flow("attacker", 12) as a2:
                a2.send(10, interval=0.01)
            sink.settle()
            got = dict(sink.by_flow)
    finally:
        close_all()

    low = got.get(10, 0) + got.get(20, 0)
    expect(low == 10, "7.1",
           f"before any flood, only {low} of 10 low-rate packets arrived (attacker "
           f"{got.get(10, 0)}/5, legit {got.get(20, 0)}/5): your program drops normal traffic",
           "drop only what a source sends beyond RATE_LIMIT in its window; return XDP_PASS "
           "for everything else, and for anything that is not IPv4: the router must reach the "
           "victim with ARP first, and ARP goes through your program")
    flood = got.get(11, 0)
    expect(flood <= FLOOD // 5, "7.1",
           f"{_pct(flood, FLOOD)} flood packets reached the victim; with a limit of "
           f"{DDOS_LIMIT} per {DDOS_WINDOW} s, only about {DDOS_LIMIT} per window should",
           "count every packet of ip->saddr in its window and return XDP_DROP once the count "
           "passes RATE_LIMIT (is your drop branch ever taken? look at the `dropped` map)")
    expect(flood >= DDOS_LIMIT // 2, "7.1",
           f"only {flood} flood packets arrived, fewer than half the limit ({DDOS_LIMIT}): "
           "a rate limit lets each source send RATE_LIMIT packets per window",
           "drop when count > RATE_LIMIT, not before; start counting at 0 in a new window")
    legit = got.get(21, 0)
    expect(legit >= LEGIT - 2, "7.1",
           f"during the flood only {_pct(legit, LEGIT)} packets of the low-rate client arrived",
           "keep one record per source address (key = ip->saddr): a shared counter lets the "
           "attacker use up everybody's budget")
    after = got.get(12, 0)
    expect(after >= 8, "7.1",
           f"{DDOS_WINDOW * 1.6:.1f} s after the flood stopped, only {after} of 10 low-rate "
           "packets from the former attacker arrived: the source stayed blocked",
           "when now - window_start > WINDOW_NS, start a new window (window_start = now, "
           "count = 0) before counting the packet")
    return (f"flood cut to {_pct(flood, FLOOD)}, legit client got {legit}/{LEGIT} through, "
            f"attacker unblocked after the window ({after}/10)")


# -------------------------------------------------------------------- 7.2 --
LB_VIP, LB_BACKENDS, LB_CONNECTIONS, LB_MIN_EACH = "10.201.100.1", ("b1", "b2", "b3"), 45, 3
# Ports whose two bytes differ: htons(VPORT) != VPORT, so a byte-order mistake cannot hide.
LB_PORTS = [p for p in range(8000, 9000) if not byte_order_blind(p)]


def _mac_list(mac: str) -> list[int]:
    return list(bytes.fromhex(mac.replace(":", "")))


@lab("7.2", "L4 load balancer")
def check_load_balancer(program: str) -> str:
    """45 TCP request/response exchanges from a client to VIP:VPORT through
    the learner's XDP program on the LB, with three backends that own the
    VIP; the LB itself has no route to the VIP (blackhole). Every third
    connection's packets carry IP options (a 24-byte IP header)."""
    vport = random.choice(LB_PORTS)
    vip_be = struct.unpack("<I", socket.inet_aton(LB_VIP))[0]
    cflags = [f"-DVIP={vip_be:#x}", f"-DVPORT={vport}", f"-DN_BACKENDS={len(LB_BACKENDS)}"]
    tag = secrets.token_hex(3)
    servers: list[traffic.TcpServer] = []
    exchanges: list[traffic.Exchange] = []
    try:
        with net.Star(["client", *LB_BACKENDS], hub="lb") as lan, \
                _load("7.2", program, "xdp_lb", cflags) as prog:
            lan.add_route("lb", LB_VIP + "/32", kind="blackhole")
            expect(has_table(prog, "backends"), "7.2", "your program has no map named `backends`",
                   "keep the declaration BPF_ARRAY(backends, struct backend, 8);")
            table = prog["backends"]
            for i, name in enumerate(LB_BACKENDS):
                lan.add_address(name, LB_VIP)
                servers.append(traffic.TcpServer(lan.ns[name], vport, name))
                entry = table.Leaf()
                entry.ifindex = lan.ifindex("lb", lan.hub_if[name])
                entry.mac[:] = _mac_list(lan.mac(name))
                entry.lb_mac[:] = _mac_list(lan.mac("lb", lan.hub_if[name]))
                table[ct.c_uint32(i)] = entry
            with xdp.attach(prog, "xdp_lb", *lan.where("lb", "to-client")):
                pings = traffic.ping(lan, "client", lan.gw["client"], count=2, wait=1)
                failures = 0
                for i in range(LB_CONNECTIONS):
                    # every third connection carries IP options: a 24-byte IP header
                    opts = traffic.IP_NOP_OPTIONS if i % 3 == 1 else b""
                    ex = traffic.tcp_exchange(lan.ns["client"], LB_VIP, vport, f"{tag}-{i}",
                                              timeout=1.0, ip_options=opts)
                    exchanges.append(ex)
                    failures += not ex.ok
                    if failures >= 3:
                        break
    finally:
        for s in servers:
            s.close()
        close_all()

    expect(pings.received == pings.transmitted, "7.2",
           f"a ping from the client to the load balancer's own address got "
           f"{pings.received} of {pings.transmitted} answers",
           "return XDP_PASS for every packet that is not TCP to VIP:VPORT (ARP, ICMP, "
           "other addresses and ports)")
    bad = [ex for ex in exchanges if not ex.ok]
    with_opts = [ex for i, ex in enumerate(exchanges) if i % 3 == 1]
    plain = [ex for i, ex in enumerate(exchanges) if i % 3 != 1]
    if bad and all(not ex.ok for ex in with_opts) and all(ex.ok for ex in plain):
        raise LabFailed("7.2", f"every connection whose packets carry IP options failed "
                        f"({len(with_opts)} of them); the {len(plain)} others completed",
                        "the IP header is ip->ihl * 4 bytes long, 20 only without options: find "
                        "the ports at (void *)ip + ip->ihl * 4, not at (void *)(ip + 1)")
    if bad:
        done = sum(ex.ok for ex in exchanges)
        raise LabFailed("7.2", f"{len(bad)} of {len(exchanges)} TCP connections to the VIP failed "
                        f"(first error: {bad[0].error or bad[0].reply!r}); {done} completed",
                        _lb_hint(exchanges, servers))
    answered_by: dict[str, list[str]] = {}
    for s in servers:
        for req in s.requests:
            answered_by.setdefault(req, []).append(s.name)
    for ex in exchanges:
        who = answered_by.get(ex.request, [])
        expect(len(who) == 1, "7.2",
               f"request {ex.request} was answered by {len(who)} backends ({who})",
               "all packets of one connection must go to one backend: hash only fields that "
               "stay the same for the whole connection")
        expect(ex.reply.split()[0] == who[0], "7.2",
               f"request {ex.request} was handled by {who[0]} but the reply says {ex.reply!r}")
    per_backend = {s.name: len(s.requests) for s in servers}
    starved = [n for n, c in per_backend.items() if c < LB_MIN_EACH]
    expect(not starved, "7.2",
           f"the {LB_CONNECTIONS} connections were spread {per_backend}: "
           f"{', '.join(starved)} got fewer than {LB_MIN_EACH}",
           "hash the source port too (every connection of one client has the same address), "
           "and take it modulo N_BACKENDS, not a fixed number")
    spread = ", ".join(f"{n} {c}" for n, c in per_backend.items())
    return f"{LB_CONNECTIONS} TCP connections via the VIP all completed, one backend each ({spread})"


def _lb_hint(exchanges: list[traffic.Exchange], servers: list[traffic.TcpServer]) -> str:
    accepted = sum(len(s.requests) for s in servers)
    if accepted == 0 and all("timed out" in ex.error for ex in exchanges if not ex.ok):
        return ("no backend ever saw a request: is the program matching the VIP (network order, "
                "as ip->daddr) and htons(VPORT)? Does it rewrite h_dest to the backend's MAC "
                "and return bpf_redirect(b->ifindex, 0)?")
    return ("some packets of a connection went to another backend, which reset it: choose the "
            "backend from the flow (addresses and ports), never per packet")


# -------------------------------------------------------------------- 7.3 --
SAMPLE_FRAMES, SNAP_LEN, SIGMAS = 3000, 64, 4.5


def _sample_frames(lab: net.VethPair, dport: int) -> list[tuple[bytes, dict]]:
    """3000 distinct frames (IP id = index) with the fields decode() must find;
    one in ten carries IP options."""
    smac, dmac = lab.mac("a"), lab.mac("b")
    frames = []
    for i in range(SAMPLE_FRAMES):
        kind, sport = i % 10, 20000 + i
        truth = {"src": lab.ip_a, "dst": lab.ip_b, "proto": 17, "sport": sport, "dport": dport}
        if kind == 6:               # UDP with 4 bytes of IP options: a 24-byte IP header
            udp = packets.udp(sport, dport, bytes(i % 30), src=lab.ip_a, dst=lab.ip_b)
            frame = packets.ethernet(packets.ETH_P_IP,
                                     packets.ipv4(packets.IPPROTO_UDP, udp, src=lab.ip_a,
                                                  dst=lab.ip_b, ident=i,
                                                  options=traffic.IP_NOP_OPTIONS),
                                     src=smac, dst=dmac)
        elif kind < 7:
            payload = bytes((i * 37 + j) & 0xFF for j in range((i * 37) % 120))
            frame = traffic.udp_frame(smac, dmac, lab.ip_a, lab.ip_b, sport, dport, payload,
                                      ident=i)
        elif kind < 9:
            frame = traffic.tcp_syn_frame(smac, dmac, lab.ip_a, lab.ip_b, sport, dport, seq=i,
                                          ident=i)
            truth["proto"] = 6
        else:
            frame = traffic.icmp_echo_frame(smac, dmac, lab.ip_a, lab.ip_b, echo_id=i, seq=i,
                                            payload=bytes(i % 50), ident=i)
            truth.update(proto=1, sport=None, dport=None)
        frames.append((frame, truth))
    return frames


@lab("7.3", "packet sampling")
def check_sampling(program: str, decode) -> str:
    """3000 crafted frames through the learner's sampler on a veth; every
    sample is matched to the frame it came from, byte for byte."""
    rate = random.choice([7, 8, 9, 11, 12, 13])
    raw: list[bytes] = []
    try:
        with net.VethPair(quiet=True) as lab, \
                _load("7.3", program, "xdp_sample", [f"-DSAMPLE_RATE={rate}"]) as prog:
            expect(has_table(prog, "samples"), "7.3", "your program has no ring buffer `samples`",
                   "keep BPF_RINGBUF_OUTPUT(samples, 64);")
            frames = _sample_frames(lab, dport=random.randrange(9000, 10000))
            prog["samples"].open_ring_buffer(lambda _c, data, size: raw.append(ct.string_at(data, size)))
            with xdp.attach(prog, "xdp_sample", *lab.where("b")):
                sock = net.socket_in(lab.ns["a"], socket.AF_PACKET, socket.SOCK_RAW, 0)
                try:
                    sock.bind((lab.ifname["a"], 0))
                    for start in range(0, SAMPLE_FRAMES, 100):
                        for frame, _ in frames[start:start + 100]:
                            sock.send(frame)
                        prog.ring_buffer_consume()
                finally:
                    sock.close()
                prog.ring_buffer_poll(200)
    finally:
        close_all()
    return _judge_samples(raw, frames, rate, decode)


def _judge_samples(raw: list[bytes], frames: list[tuple[bytes, dict]], rate: int, decode) -> str:
    by_prefix = {frame[:34]: i for i, (frame, _) in enumerate(frames)}
    assert len(by_prefix) == len(frames), "the check's frames must differ in their first 34 bytes"
    expect(raw, "7.3", f"3000 frames crossed the interface and no sample came up (rate {rate})",
           "reserve a struct sample in `samples`, fill it and ringbuf_submit() it for one packet "
           "in SAMPLE_RATE")
    picked: list[int] = []
    for rec in raw:
        expect(len(rec) >= 8 + SNAP_LEN, "7.3", f"a sample is {len(rec)} bytes, smaller than "
               f"struct sample ({8 + SNAP_LEN})", "reserve sizeof(struct sample) and keep its layout")
        pkt_len, cap_len = struct.unpack_from("II", rec)
        head = rec[8:8 + min(cap_len, SNAP_LEN)]
        i = by_prefix.get(head[:34])
        if i is None:
            raise LabFailed("7.3", f"a sample's first bytes match none of the frames sent: "
                            f"{head[:34].hex()} (cap_len {cap_len})",
                            "copy the frame from offset 0 with bpf_xdp_load_bytes(ctx, 0, s->head, cap)")
        frame, truth = frames[i]
        expect(pkt_len == len(frame), "7.3",
               f"frame #{i} is {len(frame)} bytes long; its sample says pkt_len = {pkt_len}",
               "pkt_len is the whole frame: ctx->data_end - ctx->data")
        expect(cap_len == min(len(frame), SNAP_LEN), "7.3",
               f"frame #{i} is {len(frame)} bytes long; its sample says cap_len = {cap_len}, "
               f"expected {min(len(frame), SNAP_LEN)}", "cap_len = min(pkt_len, SNAP_LEN)")
        expect(head == frame[:cap_len], "7.3", f"the bytes sampled from frame #{i} differ from "
               "the frame", "copy cap_len bytes from offset 0 of the packet")
        picked.append(i)
    expect(len(set(picked)) == len(picked), "7.3",
           f"{len(picked) - len(set(picked))} frames were sampled more than once",
           "submit one sample per chosen packet")
    short = [i for i in picked if len(frames[i][0]) < SNAP_LEN]
    _judge_rate(sorted(picked), rate, frames, short)
    for i in [0, 6, 7, 9, *picked]:     # UDP, UDP with IP options, TCP, ICMP; every sample
        frame, truth = frames[i]
        got = decode(frame[:min(len(frame), SNAP_LEN)])
        expect(isinstance(got, dict), "7.3", f"decode() returned {type(got).__name__}, not a dict")
        for key, want in truth.items():
            expect(key in got, "7.3", f"decode() gives no {key!r}",
                   "return a dict with src, dst, proto, sport, dport")
            expect(got[key] == want, "7.3",
                   f"decode() of frame #{i} (proto {truth['proto']}) gives {key} = "
                   f"{got[key]!r}, the frame has {want!r}", _decode_hint(key))
    return (f"{len(picked)} samples of {SAMPLE_FRAMES} frames at 1 in {rate} "
            f"({len(short)} of them shorter than {SNAP_LEN} bytes), bytes and decoded fields all right")


def _judge_rate(picked: list[int], rate: int, frames, short: list[int]) -> None:
    gaps = {b - a for a, b in zip(picked, picked[1:])}
    n, mean = len(picked), SAMPLE_FRAMES / rate
    if len(gaps) == 1:          # a counter: every g-th packet
        gap = gaps.pop()
        seen = "every frame was sampled" if gap == 1 else f"one frame in {gap} was sampled"
        expect(gap == rate, "7.3", f"{seen}; the rate is 1 in {rate}",
               "use SAMPLE_RATE (the check compiles with its own value), and count every packet")
        expect(abs(n - mean) <= 1, "7.3", f"{n} samples of {SAMPLE_FRAMES} frames at 1 in {rate}: "
               f"expected {mean:.0f}", "count every packet, whatever its size or protocol")
        return
    sd = math.sqrt(SAMPLE_FRAMES * (1 / rate) * (1 - 1 / rate))
    expect(abs(n - mean) <= SIGMAS * sd, "7.3",
           f"{n} samples of {SAMPLE_FRAMES} frames at 1 in {rate}: expected {mean:.0f} "
           f"(+/- {SIGMAS * sd:.0f} for a random choice)",
           "sample one packet in SAMPLE_RATE, of every size and protocol")
    n_short = sum(len(f) < SNAP_LEN for f, _ in frames)
    expect(short, "7.3", f"none of the {n_short} frames shorter than {SNAP_LEN} bytes was sampled",
           "copy min(pkt_len, SNAP_LEN) bytes: a short frame is a frame too")


def _decode_hint(key: str) -> str:
    return {
        "src": "the source address is bytes 12-15 of the IP header (offset 26 of the frame): "
               "socket.inet_ntoa()",
        "dst": "the destination is bytes 16-19 of the IP header (offset 30 of the frame)",
        "proto": "the protocol is byte 9 of the IP header (offset 23 of the frame)",
        "sport": "TCP and UDP ports start right after the IP header (14 + ihl), network byte "
                 "order ('!H'); None for other protocols",
        "dport": "the destination port is the 2 bytes after the source port; None for protocols "
                 "without ports",
    }[key]
