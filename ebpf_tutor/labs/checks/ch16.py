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


# -------------------------------------------------------------------- 16.2 --
WINDOW = 0.3                      # seconds; the check sleeps 1.5 windows between phases
KINDS = {1: "scan", 2: "flood"}


class DetectionPlan:
    """Seven sources, each with a role and the alerts it must raise."""

    def __init__(self, lab: net.VethPair, rng: random.Random, scan: int, flood: int):
        self.lab, self.rng, self.scan, self.flood = lab, rng, scan, flood
        hosts = rng.sample(range(20, 250), 7)
        self.ip = dict(zip(["scanner", "horizontal scanner", "flooder", "busy client", "server",
                            "slow scanner", "slow sender"], (f"10.200.0.{h}" for h in hosts)))
        self.expected = Counter({("scan", self.ip["scanner"]): 1,
                                 ("scan", self.ip["horizontal scanner"]): 1,
                                 ("flood", self.ip["flooder"]): 2})
        self.ports = rng.sample(range(1024, 60000), 4 * scan + 40)

    def _syn(self, src: str, dport: int, sport: int = 40000, dst: str | None = None,
             flags: str = "S") -> bytes:
        return packets.tcp_packet(dport=dport, sport=sport, src=src, dst=dst or self.lab.ip_b,
                                  flags=flags)

    def _udp(self, src: str, dport: int, n: int) -> list[bytes]:
        frame = packets.udp_packet(dport=dport, sport=5000, src=src, dst=self.lab.ip_b,
                                   payload=b"u" * 16)
        return [frame] * n

    def first_window(self) -> dict[str, list[bytes]]:
        ip, rng, scan, flood, ports = self.ip, self.rng, self.scan, self.flood, self.ports
        half = scan - 2
        busy_retries = 2 * scan
        return {
            "scanner": [self._syn(ip["scanner"], p) for p in ports[:scan + rng.randint(3, 10)]],
            "horizontal scanner": [self._syn(ip["horizontal scanner"], 22,
                                             dst=f"10.200.{rng.randrange(1, 250)}.{i + 1}")
                                   for i in range(scan + 3)],
            "flooder": self._udp(ip["flooder"], 7777, flood + rng.randint(50, 300)),
            "busy client": [self._syn(ip["busy client"], 443, sport=41000 + i)
                            for i in range(busy_retries)]
            + self._udp(ip["busy client"], 53, flood - busy_retries - 20)
            + self._udp(ip["busy client"], 123, 5),
            "server": [self._syn(ip["server"], p, sport=443, flags="SA")
                       for p in ports[:scan + 10]],
            "slow scanner": [self._syn(ip["slow scanner"], p) for p in ports[-half:]],
            "slow sender": self._udp(ip["slow sender"], 8000, flood * 2 // 3),
        }

    def second_window(self) -> dict[str, list[bytes]]:
        ip, half = self.ip, self.scan - 2
        return {
            "slow scanner": [self._syn(ip["slow scanner"], p)
                             for p in self.ports[-2 * half:-half]],
            "slow sender": self._udp(ip["slow sender"], 8000, self.flood * 2 // 3),
            "flooder": self._udp(ip["flooder"], 7777, self.flood + 10),
        }


@lab("16.2", "port-scan and flood detection")
def check_detection(program: str) -> str:
    rng = random.Random()
    scan, flood = rng.randint(12, 24), rng.randint(500, 900)
    cflags = [f"-DWINDOW_NS={int(WINDOW * 1e9)}ULL", f"-DSCAN_PORTS={scan}",
              f"-DFLOOD_PACKETS={flood}"]
    raw: list[bytes] = []
    try:
        with net.VethPair(quiet=True) as lab, _load("16.2", program, "detect_xdp", cflags) as prog:
            require_table(prog, "alerts", "16.2", "keep BPF_RINGBUF_OUTPUT(alerts, 8);")
            prog["alerts"].open_ring_buffer(lambda _c, data, size: raw.append(ct.string_at(data, size)))
            plan = DetectionPlan(lab, rng, scan, flood)
            with xdp.attach(prog, "detect_xdp", *lab.where("b")):
                for i, phase in enumerate((plan.first_window(), plan.second_window())):
                    if i:
                        time.sleep(WINDOW * 1.5)        # every source's first window ends
                    for frames in phase.values():      # each source's frames back to back
                        traffic.send_frames(lab.ns["a"], lab.ifname["a"], frames)
                prog.ring_buffer_poll(50)
                prog.ring_buffer_consume()
    finally:
        close_all()
    return _judge_alerts(raw, plan)


def _judge_alerts(raw: list[bytes], plan: DetectionPlan) -> str:
    role = {ip: name for name, ip in plan.ip.items()}
    got: Counter = Counter()
    values: dict[tuple[str, str], set[int]] = {}
    for rec in raw:
        expect(len(rec) >= 16, "16.2", f"an alert is {len(rec)} bytes, smaller than struct alert (16)",
               "keep struct alert and send_alert() as given")
        saddr, kind, value = struct.unpack_from("=IIQ", rec)
        key = (KINDS.get(kind, str(kind)), _ip(saddr))
        got[key] += 1
        values.setdefault(key, set()).add(value)
    thresholds = {"scan": plan.scan, "flood": plan.flood}
    hints = {
        "scanner": "count distinct (destination, port) tries per source; alert when the count "
                   "reaches SCAN_PORTS",
        "horizontal scanner": "a try is (destination, port): the same port on many addresses "
                              "is many tries (put daddr in the touch key)",
        "flooder": "count every packet per source in the window; alert when it reaches "
                   "FLOOD_PACKETS, once per window, and again in a later window (reset the flags "
                   "with the window)",
        "busy client": "a repeated try of the same (destination, port) in one window counts "
                       "once (the `touched` map)",
        "server": "only a SYN without ACK (or UDP) is an attempt: a SYN+ACK answers a client",
        "slow scanner": "a window ends: when now - window_start > WINDOW_NS, start a new one "
                        "with the counts at zero",
        "slow sender": "a window ends: when now - window_start > WINDOW_NS, start a new one "
                       "with the counts at zero",
    }
    order = ["busy client", "server", "slow scanner", "slow sender", "flooder", "scanner",
             "horizontal scanner"]
    wrong = [(kind, ip, n) for (kind, ip), n in got.items() if (kind, ip) not in plan.expected]
    wrong.sort(key=lambda w: order.index(role[w[1]]) if w[1] in role else -1)
    for kind, ip, n in wrong:
        who = role.get(ip, "an address the check never used")
        hint = hints.get(who, "alert only for the sources that crossed a threshold")
        if kind == "scan" and who in ("busy client", "slow sender", "flooder"):
            hint = ("it tried only a few (destination, port) pairs, many times: a repeated try "
                    "in the same window counts once (the `touched` map)")
        raise LabFailed("16.2", f"the {who} ({ip}) was flagged as a {kind} ({n} alert(s)); it "
                        "must not be", hint)
    for (kind, ip), n in sorted(plan.expected.items()):
        who = role[ip]
        seen = got.get((kind, ip), 0)
        expect(seen, "16.2", f"the {who} ({ip}) was not flagged as a {kind}", hints[who])
        expect(seen == n, "16.2", f"the {who} ({ip}) raised {seen} {kind} alert(s); expected {n}"
               f"{' (one per window, in two windows)' if n == 2 else ' (one per window)'}",
               "alert once per window: set scan_alerted / flood_alerted, and clear them when a "
               "new window starts")
        bad = sorted(values[(kind, ip)] - {thresholds[kind]})
        if bad:
            raise LabFailed("16.2", f"the {kind} alert of the {who} says value = {bad[0]}; the "
                            f"threshold is {thresholds[kind]}", "alert when the count *reaches* "
                            "the threshold (>=), with that count as value")
    return (f"thresholds {plan.scan} ports / {plan.flood} packets per {WINDOW} s window: scan, "
            "horizontal scan and two flood windows flagged; busy client, server, slow scanner "
            "and slow sender not")


# -------------------------------------------------------------------- 16.3 --
SAMPLER = r"""
struct sample { u64 ts_ns; u32 pkt_len; u32 cap_len; u8 data[SNAP_LEN]; };
BPF_RINGBUF_OUTPUT(samples, 128);
BPF_ARRAY(seen, u64, 1);
int xdp_sample(struct xdp_md *ctx) {
    u32 zero = 0;
    u64 *count = seen.lookup(&zero);
    if (!count || __sync_fetch_and_add(count, 1) % SAMPLE_RATE != 0)
        return XDP_PASS;
    struct sample *s = samples.ringbuf_reserve(sizeof(struct sample));
    if (!s)
        return XDP_PASS;
    u64 len = ctx->data_end - ctx->data;
    u64 cap = len < SNAP_LEN ? len : SNAP_LEN;
    s->ts_ns = bpf_ktime_get_ns();
    s->pkt_len = len;
    s->cap_len = cap;
    if (cap == 0 || bpf_xdp_load_bytes(ctx, 0, s->data, cap) != 0) {
        samples.ringbuf_discard(s, 0);
        return XDP_PASS;
    }
    samples.ringbuf_submit(s, 0);
    return XDP_PASS;
}
"""
PCAP_FRAMES = 240
FIELDS = ["ip.id", "frame.len", "frame.cap_len", "frame.time_epoch", "udp.dstport"]


@lab("16.3", "pcap export of sampled packets")
def check_pcap(pcap_header, pcap_record, wall_clock_ns) -> str:
    """The check's sampler on a veth, the learner's file format, tshark as the reader."""
    expect(shutil.which("tshark") is not None, "16.3", "tshark is not installed on this machine",
           "install Debian's tshark (./course provisions it on the host)")
    rng = random.Random()
    rate, snap = rng.choice([3, 4, 5]), rng.randrange(60, 97)
    dport = _port(rng)
    raw: list[bytes] = []
    try:
        with net.VethPair(quiet=True) as lab, \
                Program(SAMPLER, cflags=[f"-DSAMPLE_RATE={rate}", f"-DSNAP_LEN={snap}"],
                        name="lab 16.3 sampler") as prog:
            prog["samples"].open_ring_buffer(lambda _c, d, n: raw.append(ct.string_at(d, n)))
            frames = [packets.udp_packet(dport=dport, sport=5000, src=lab.ip_a, dst=lab.ip_b,
                                         ident=i, payload=bytes(rng.randrange(0, 300)))
                      for i in range(PCAP_FRAMES)]
            with xdp.attach(prog, "xdp_sample", *lab.where("b")):
                sent_from = time.time()
                traffic.send_frames(lab.ns["a"], lab.ifname["a"], frames)
                sent_to = time.time()
                prog.ring_buffer_poll(100)
                prog.ring_buffer_consume()
    finally:
        close_all()
    assert len(raw) == PCAP_FRAMES // rate, f"the check's sampler gave {len(raw)} samples"
    samples = []
    for rec in raw:
        ts, pkt_len, cap_len = struct.unpack_from("=QII", rec)
        samples.append((ts, pkt_len, rec[16:16 + cap_len]))
    folder = Path(tempfile.mkdtemp(prefix=f"ebt-{__import__('os').getpid()}-c16-"))
    path = folder / "samples.pcap"
    try:
        header = pcap_header(snap)
        expect(isinstance(header, (bytes, bytearray)) and len(header) == 24, "16.3",
               f"pcap_header() returned {type(header).__name__} of length "
               f"{len(header) if hasattr(header, '__len__') else '?'}; a pcap file header is 24 bytes",
               'struct.pack("=IHHiIII", magic, 2, 4, 0, 0, snap_len, linktype)')
        body = b"".join(pcap_record(wall_clock_ns(ts), data, pkt_len) for ts, pkt_len, data in samples)
        path.write_bytes(bytes(header) + bytes(body))
        return _judge_pcap(path, samples, frames, snap, rate, sent_from, sent_to)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_structure(path: Path) -> None:
    """What any pcap reader relies on (libpcap, tcpdump): a known magic, and
    in every record a fraction of a second below one second in the unit the
    magic names. (tshark guesses its way around some of these mistakes;
    tcpdump does not.)"""
    raw = path.read_bytes()
    magics = {0xA1B2C3D4: 10 ** 6, 0xA1B23C4D: 10 ** 9}
    for order in "<>":
        magic = struct.unpack_from(order + "I", raw)[0]
        if magic in magics:
            break
    else:
        raise LabFailed("16.3", f"your file starts with {raw[:4].hex()}: not a pcap magic number",
                        "the magic is 0xa1b23c4d (nanoseconds) or 0xa1b2c3d4 (microseconds), "
                        "written in the same byte order as every other field")
    unit, off, n = magics[magic], 24, 0
    snaplen = struct.unpack_from(order + "I", raw, 16)[0]
    while off + 16 <= len(raw):
        _sec, frac, incl, _orig = struct.unpack_from(order + "IIII", raw, off)
        n += 1
        if incl > snaplen or off + 16 + incl > len(raw):
            raise LabFailed("16.3", f"record {n} says {incl} bytes follow; your header's snap "
                            f"length is {snaplen} and {len(raw) - off - 16} bytes are left",
                            "incl_len is the number of bytes that follow the record header: "
                            "len(data)")
        if frac >= unit:
            name = "microseconds" if unit == 10 ** 6 else "nanoseconds"
            raise LabFailed("16.3", f"a record's fraction of a second is {frac}, but your magic "
                            f"0x{magic:08x} says it counts {name} (below {unit})",
                            "nanoseconds go with magic 0xa1b23c4d; or write microseconds "
                            "(ns // 1000) with 0xa1b2c3d4")
        off += 16 + incl


def _judge_pcap(path: Path, samples, frames, snap: int, rate: int, sent_from: float,
                sent_to: float) -> str:
    _check_structure(path)
    r = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields",
                        *[a for f in FIELDS for a in ("-e", f)]],
                       capture_output=True, text=True, timeout=60)
    complaint = "\n".join(ln for ln in r.stderr.splitlines() if "Running as user" not in ln).strip()
    rows = [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()]
    expect(r.returncode == 0 and not complaint, "16.3",
           f"tshark could not read your file: {complaint.splitlines()[0] if complaint else r.returncode}",
           "every record's incl_len must equal the bytes that follow it (len(data)); check the "
           "magic, the byte order and the sizes (24-byte file header, 16-byte record header)")
    expect(len(rows) == len(samples), "16.3", f"{len(samples)} samples were written; tshark read "
           f"{len(rows)} packets", "one record per sample: 16-byte header, then incl_len bytes")
    for i, (row, (ts, pkt_len, data)) in enumerate(zip(rows, samples)):
        ip_id, frame_len, cap_len, epoch, dport = (row + [""] * 5)[:5]
        want_id = struct.unpack_from("!H", data, 18)[0]
        expect(ip_id != "", "16.3", f"tshark finds no IP header in packet {i + 1} of your file",
               "the link type is 1 (Ethernet): the data starts with the Ethernet header")
        expect(int(ip_id, 16) == want_id, "16.3", f"packet {i + 1} of your file is frame "
               f"#{int(ip_id, 16)}; the sample was frame #{want_id}",
               "write the samples in order, each with its own bytes")
        expect(int(frame_len) == pkt_len, "16.3", f"frame #{want_id} was {pkt_len} bytes long; "
               f"your file says {frame_len}", "orig_len is the frame's length on the wire "
               "(the sample's pkt_len), not the bytes kept")
        expect(int(cap_len) == min(pkt_len, snap), "16.3", f"frame #{want_id}: {len(data)} bytes "
               f"were kept; your file says {cap_len}", "incl_len is len(data)")
        when = float(epoch)
        expect(sent_from - 1 <= when <= sent_to + 1, "16.3",
               f"frame #{want_id} was sampled at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(sent_from))} "
               f"UTC; your file dates it {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(max(when, 0)))} "
               f"(+{when % 1:.9f} s)", _time_hint(when, sent_from))
    times = [float(r[3]) for r in rows]
    expect(times == sorted(times) and len(set(times)) > 1, "16.3",
           "your timestamps do not grow from sample to sample",
           "ts_frac is the fraction of the second: nanoseconds with magic 0xa1b23c4d")
    return (f"{len(rows)} samples (1 in {rate}, snap length {snap}) read back by tshark: frames, "
            "lengths and times right")


def _time_hint(when: float, sent: float) -> str:
    if when < 10 ** 9:
        return ("bpf_ktime_get_ns() counts from boot: add CLOCK_REALTIME - CLOCK_MONOTONIC "
                "to get time since 1970")
    if abs(when - sent) < 2000:
        return ("the fraction of a second is read in the unit the magic says: 0xa1b23c4d for "
                "nanoseconds, 0xa1b2c3d4 for microseconds")
    return "ts_sec is whole seconds since 1970, ts_frac the rest (divmod by 10**9)"
