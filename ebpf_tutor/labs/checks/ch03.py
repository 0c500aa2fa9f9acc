"""Chapter 3 checks: programs written in raw instructions, loaded with the
bpf() system call, run on crafted packets (3.1, 3.3) or attached to a
tracepoint and driven by processes the check controls (3.2)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile

from ... import bpfsys
from . import byte_order_blind
from ...bpfsys.asm import AsmError
from ...errors import VerifierError
from ..verdict import LabFailed, expect, lab
from ...sandbox.packets import (ETH_P_IP, IPPROTO_TCP, arp_packet, cut, ethernet, icmp_packet, ipv4,
                       tcp, tcp_packet, truncate, udp_packet)

VERDICT = {bpfsys.XDP_PASS: "PASS", bpfsys.XDP_DROP: "DROP"}


def _name(value: int) -> str:
    return VERDICT.get(value, f"{value} (neither XDP_PASS nor XDP_DROP)")


def _load(lab_id: str, make, args: tuple, prog_type: bpfsys.ProgType, name: str,
          bounds_hint: str) -> bpfsys.RawProgram:
    """Build the learner's program and load it; a failure is a verdict."""
    try:
        program = make(*args)
    except NotImplementedError:
        raise LabFailed(lab_id, f"{make.__name__}() is not finished: a TODO still raises "
                        "NotImplementedError", "replace each `raise NotImplementedError` by "
                        "your instructions, rerun that cell, then this one") from None
    expect(isinstance(program, (list, tuple)), lab_id,
           f"{make.__name__}() returned {type(program).__name__}, not a list of instructions",
           "return the list of instructions (prog) at the end of the function")
    try:
        return bpfsys.load(program, prog_type, name=name)
    except AsmError as e:
        raise LabFailed(lab_id, f"your program does not assemble: {e}",
                        "check each instruction's operands: registers are R0..R10, "
                        "jumps go to labels defined once") from None
    except VerifierError as e:
        raise LabFailed(lab_id, "the verifier rejected your program:\n" + e.format(),
                        bounds_hint) from None


def _random_port(rng: random.Random) -> int:
    """A port whose two bytes differ, so a byte-order mistake cannot hide."""
    while True:
        port = rng.randrange(1024, 65000)
        if not byte_order_blind(port) and port + 1 < 65536:
            return port


def _swap16(x: int) -> int:
    return (x & 0xFF) << 8 | x >> 8


# -------------------------------------------------------------------- 3.1 --
def port_filter_cases(port: int, rng: random.Random) -> list[tuple[str, bytes, int, str]]:
    """(what, frame, expected verdict, next step if wrong) for one port."""
    other = rng.choice([p for p in (port + 1, port - 1, 53, 443) if p != port])
    nops = b"\x01" * 12
    # An IPv6 frame laid out so that a filter reading fixed IPv4 offsets
    # sees "protocol 17, IHL 5, destination port <port>" in it.
    tricky_src = f"fd11::{port:x}"
    tricky = udp_packet(port, ip=6, src=tricky_src, traffic_class=0x50)
    pass_hint = ("follow the headers: EtherType 0x0800, protocol 17, UDP header at "
                 "14 + IHL*4, destination port (big-endian: to_be(reg, 16)) == port")
    return [
        ("IPv4 UDP to the port", udp_packet(port), bpfsys.XDP_PASS, pass_hint),
        ("IPv4 UDP to the port, 300-byte payload", udp_packet(port, payload=b"x" * 300),
         bpfsys.XDP_PASS, pass_hint),
        ("IPv4 UDP to the port, 12 bytes of IP options", udp_packet(port, ip_options=nops),
         bpfsys.XDP_PASS, "the UDP header starts at 14 + IHL*4, not always at 34: read IHL "
         "(low 4 bits of byte 14) and multiply by 4"),
        (f"IPv4 UDP to port {other}", udp_packet(other), bpfsys.XDP_DROP,
         "compare the destination port with `port`"),
        (f"IPv4 UDP to port {_swap16(port)} (the port's bytes swapped)",
         udp_packet(_swap16(port)), bpfsys.XDP_DROP,
         "header fields are big-endian: convert with to_be(reg, 16) before comparing"),
        (f"IPv4 UDP *from* the port to port {other}", udp_packet(other, sport=port),
         bpfsys.XDP_DROP, "the destination port is at offset 2 of the UDP header; offset 0 "
         "is the source port"),
        ("IPv4 TCP to the port", tcp_packet(port), bpfsys.XDP_DROP,
         "check the IPv4 protocol byte (offset 14 + 9) is 17"),
        ("IPv4 ICMP echo", icmp_packet(), bpfsys.XDP_DROP, "only UDP passes"),
        ("IPv6 UDP to the port", tricky, bpfsys.XDP_DROP,
         "check the EtherType (offset 12) is 0x0800 before reading IPv4 fields"),
        ("ARP request", arp_packet(), bpfsys.XDP_DROP, "only IPv4 passes"),
        ("IPv4 UDP to the port, cut 3 bytes into the UDP header",
         cut(udp_packet(port), "l4", 3), bpfsys.XDP_DROP,
         "prove the 8 UDP header bytes are in the frame before reading the port"),
        ("IPv4 header cut after 10 bytes", cut(udp_packet(port), "l3", 10), bpfsys.XDP_DROP,
         "prove 14 + 20 bytes are there before reading the IPv4 header"),
        ("Ethernet header only", truncate(udp_packet(port), 14), bpfsys.XDP_DROP,
         "a frame too short for IPv4 must be dropped"),
    ]


BOUNDS_HINT_31 = ("before every read at R + k, prove R + k + size <= data_end: "
                  "mov(R5, R), add(R5, k + size), jgt(R5, R3, \"drop\")")


@lab("3.1", "packet filter in raw instructions")
def check_port_filter(port_filter) -> str:
    """port_filter(port) is loaded as XDP for two random ports and run on 13
    crafted frames each; every verdict must be the expected one."""
    rng = random.Random()
    ports = [_random_port(rng) for _ in range(2)]
    runs = 0
    try:
        for port in ports:
            prog = _load("3.1", port_filter, (port,), bpfsys.ProgType.XDP, "lab31_filter",
                         BOUNDS_HINT_31)
            wrong = []
            for what, frame, want, hint in port_filter_cases(port, rng):
                got = prog.test_run(frame).retval
                runs += 1
                if got != want:
                    wrong.append((what, want, got, hint))
            prog.close()
            if wrong:
                lines = [f"  {what}: expected {_name(want)}, got {_name(got)}"
                         for what, want, got, _ in wrong]
                raise LabFailed("3.1", f"with port {port}, {len(wrong)} of 13 frames got the "
                                "wrong verdict:\n" + "\n".join(lines), wrong[0][3])
    finally:
        bpfsys.close_all()
    return f"{runs} frames for ports {ports[0]} and {ports[1]}: every verdict right"


# -------------------------------------------------------------------- 3.2 --
CHILD = r"""
import os, sys
fd_num, path, offsets = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
os.dup2(os.open(path, os.O_RDONLY), fd_num)
try:
    os.lseek(-1, int(sys.argv[4]), os.SEEK_SET)   # the marker: tells the check our pid
except OSError:
    pass
print("ready", flush=True)
sys.stdin.readline()                  # the check attaches the program meanwhile
for off in offsets:
    os.lseek(fd_num, int(off), os.SEEK_SET)
print("done", flush=True)
sys.stdin.readline()                  # exit only once the program is detached
"""


class _Child:
    """A helper process that calls lseek(fd_num, offset) for each offset
    when told to: a known workload from a known pid."""

    def __init__(self, fd_num: int, path: str, offsets: list[int], marker: int):
        self.fd_num, self.offsets, self.marker = fd_num, offsets, marker
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", CHILD, str(fd_num), path,
             ",".join(map(str, offsets)), str(marker)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid          # as this process sees it
        self.kernel_pid: int | None = None  # as BPF sees it (bpf_get_current_pid_tgid)

    def step(self, expect_line: str) -> None:
        line = self.proc.stdout.readline().strip()
        if line != expect_line:
            raise RuntimeError(f"lab 3.2 helper process said {line!r}, not {expect_line!r}")

    def go(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        try:
            self.proc.stdin.close()           # EOF: every readline() returns at once
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def _offsets(rng: random.Random, n: int) -> list[int]:
    """n distinct offsets, at least two of them above 4 GiB."""
    low = [rng.randrange(1, 1 << 32) for _ in range(n - 2)]
    high = [rng.randrange(1 << 32, 1 << 40) for _ in range(2)]
    out = low + high
    rng.shuffle(out)
    return out


@lab("3.2", "syscall argument capture")
def check_syscall_args(capture_program) -> str:
    """Two helper processes and the check itself call lseek(); the program is
    attached for one helper's pid only and must record exactly its calls."""
    rng = random.Random()
    target_fd, decoy_fd = rng.sample(range(40, 200), 2)
    want = {off: target_fd for off in _offsets(rng, 5)}
    decoy_offsets, own_offsets = _offsets(rng, 5), _offsets(rng, 3)
    with tempfile.NamedTemporaryFile(prefix="ebt-lab32-") as f:
        children: list[_Child] = []
        try:
            probe = bpfsys.TgidProbe()    # pids as BPF sees them (PID namespaces differ)
            target = _Child(target_fd, f.name, list(want), probe.new_marker())
            children.append(target)
            decoy = _Child(decoy_fd, f.name, decoy_offsets, probe.new_marker())
            children.append(decoy)
            for c in children:
                c.step("ready")
                c.kernel_pid = probe.tgid(c.marker)
                if c.kernel_pid is None:
                    raise RuntimeError("lab 3.2: the pid probe did not see the helper process")
            probe.close()
            seen = bpfsys.RawMap(bpfsys.MapType.HASH, 8, 8, 64, name="lab32_seen")
            prog = _load("3.2", capture_program, (seen.fd, target.kernel_pid),
                         bpfsys.ProgType.TRACEPOINT, "lab32_capture",
                         "read the context (R1, or R6 after you saved it) only at field "
                         "offsets from the format file, and pass stack pointers (R10 - n) "
                         "to the helper")
            with bpfsys.attach_tracepoint(prog, "syscalls:sys_enter_lseek"):
                for c in (target, decoy):
                    c.go()
                own = os.open(f.name, os.O_RDONLY)
                for off in own_offsets:
                    os.lseek(own, off, os.SEEK_SET)
                os.close(own)
                for c in (target, decoy):
                    c.step("done")
            got = seen.ints()
        finally:
            for c in children:
                c.close()
            bpfsys.close_all()
    _judge_32(got, want, target, set(decoy_offsets) | set(own_offsets))
    return (f"recorded the {len(want)} lseek() calls of pid {target.kernel_pid} exactly, "
            "and none of the other processes'")


def _judge_32(got: dict[int, int], want: dict[int, int], target: _Child, others: set[int]) -> None:
    n = len(want)
    expect(bool(got), "3.2", f"your map stayed empty while pid {target.kernel_pid} called lseek() "
           f"{n} times",
           "is the pid test right? bpf_get_current_pid_tgid() >> 32 is the process id; then "
           "map_update_elem needs R1 = ld_map_fd(...), R2 = R10-8, R3 = R10-16, R4 = 0")
    strays = sorted(set(got) & others)
    expect(not strays, "3.2", f"your map holds {len(strays)} offsets that other processes "
           f"passed to lseek() (e.g. {strays[0] if strays else ''})",
           "record only calls whose process id (upper 32 bits of bpf_get_current_pid_tgid()) "
           "equals tgid")
    if set(got) == {target.fd_num}:
        raise LabFailed("3.2", f"your keys are {sorted(got)}: that is the fd, not the offset",
                        "key = the offset argument, value = the fd argument")
    truncated = {off & 0xFFFFFFFF for off in want}
    if set(got) == truncated and set(got) != set(want):
        raise LabFailed("3.2", "the offsets above 4 GiB lost their upper 32 bits "
                        f"(expected {max(want)}, found {max(got)})",
                        "read the offset with ldx(U64, ...) and store it with stx(U64, ...)")
    expect(set(got) == set(want), "3.2",
           f"expected the keys {sorted(want)}, found {sorted(got)}",
           "the key is the `offset` argument: read it at FIELDS['offset'].offset in the context")
    bad = {k: v for k, v in got.items() if v != want[k]}
    expect(not bad, "3.2", f"the values should be the fd, {target.fd_num}; found "
           f"{sorted(set(bad.values()))}",
           "the value is the `fd` argument: read it at FIELDS['fd'].offset in the context")


# -------------------------------------------------------------------- 3.3 --
MALFORMED, TCP, UDP, OTHER_IP, NOT_IP = range(5)
CATEGORY = ["MALFORMED", "TCP", "UDP", "OTHER_IP", "NOT_IP"]


def parser_cases() -> list[tuple[str, bytes, int, str]]:
    """(what, frame, expected category, next step if wrong)."""
    opts = b"\x01" * 12
    tcp_opts_cut = cut(tcp_packet(ip_options=opts), "l4", 12)       # 58 bytes
    ihl4 = ethernet(ETH_P_IP, ipv4(IPPROTO_TCP, tcp(40000, 80) + b"x" * 20, ihl=4))
    ihl15 = truncate(icmp_packet(ip_options=b"\x01" * 40), 14 + 24)
    ihl_hint = ("IHL (low 4 bits of the IPv4 header's first byte) counts 32-bit words: the L4 "
                "header is at R4 + IHL*4")
    return [
        ("IPv4 TCP SYN", tcp_packet(), TCP, "TCP needs its 20 header bytes, then R6 = TCP"),
        ("IPv4 TCP with 12 bytes of IP options and a payload",
         tcp_packet(ip_options=opts, payload=b"GET /"), TCP, ihl_hint),
        ("IPv4 UDP, header only (42 bytes)", udp_packet(), UDP,
         "a UDP header is 8 bytes, not 20"),
        ("IPv4 UDP with a payload", udp_packet(payload=b"hello"), UDP, "UDP: 8 bytes, R6 = UDP"),
        ("IPv6 TCP", tcp_packet(ip=6, flags="SA"), TCP, "the IPv6 path jumps to \"l4\""),
        ("IPv6 UDP", udp_packet(ip=6), UDP, "the IPv6 path jumps to \"l4\""),
        ("IPv4 ICMP echo", icmp_packet(), OTHER_IP, "protocols other than 6 and 17 are OTHER_IP"),
        ("IPv6 ICMPv6 echo", icmp_packet(ip=6), OTHER_IP,
         "protocols other than 6 and 17 are OTHER_IP"),
        ("ARP request", arp_packet(), NOT_IP, "start() counts it; do not change start()"),
        ("Ethernet header only, EtherType IPv4", truncate(tcp_packet(), 14), MALFORMED,
         "prove the 20 IPv4 bytes are there; if not, jump to \"count\" with R6 = MALFORMED"),
        ("IPv4 header cut after 12 bytes", cut(tcp_packet(), "l3", 12), MALFORMED,
         "prove the 20 IPv4 bytes are there"),
        ("IPv4 header length field 4 (16 bytes: invalid)", ihl4, MALFORMED,
         "an IHL below 5 is malformed: jlt(R5, 5, \"count\")"),
        ("IPv4 with 12 bytes of options, TCP header cut after 12 bytes", tcp_opts_cut, MALFORMED,
         ihl_hint + "; then check the 20 TCP bytes from there"),
        ("IPv4 ICMP claiming 60 header bytes, cut after 24", ihl15, MALFORMED,
         "after R4 += IHL*4, check R4 <= data_end: the options must all be in the frame"),
        ("IPv4 UDP header cut after 4 bytes", cut(udp_packet(), "l4", 4), MALFORMED,
         "prove the 8 UDP bytes are there"),
        ("IPv6 header cut after 30 bytes", cut(udp_packet(ip=6), "l3", 30), MALFORMED,
         "start() and ipv6() are given: do not change them"),
        ("IPv6 TCP header cut after 10 bytes", cut(tcp_packet(ip=6), "l4", 10), MALFORMED,
         "prove the 20 TCP bytes are there"),
    ]


BOUNDS_HINT_33 = ("each read at R4 + k needs a check just before it: mov(R5, R4), "
                  "add(R5, k + size), jgt(R5, R3, \"count\")")


@lab("3.3", "protocol parser with bounds checks")
def check_parser(parser) -> str:
    """parser(counts_fd) runs on 17 crafted frames, each repeated 1-3 times;
    verdicts and the per-category counters must match."""
    rng = random.Random()
    cases = parser_cases()
    want = [0] * 5
    wrong: list[str] = []
    first_hint = ""
    try:
        counts = bpfsys.RawMap(bpfsys.MapType.ARRAY, 4, 8, 5, name="lab33_counts")
        prog = _load("3.3", parser, (counts.fd,), bpfsys.ProgType.XDP, "lab33_parser",
                     BOUNDS_HINT_33)
        for what, frame, category, hint in cases:
            repeat = rng.randint(1, 3)
            before = counts.ints()
            got = prog.test_run(frame, repeat=repeat).retval
            after = counts.ints()
            want[category] += repeat
            verdict = bpfsys.XDP_DROP if category == MALFORMED else bpfsys.XDP_PASS
            moved = [i for i in range(5) if after.get(i, 0) != before.get(i, 0)]
            if got != verdict or moved != [category]:
                seen = ", ".join(CATEGORY[i] for i in moved) or "nothing"
                wrong.append(f"  {what}: expected {_name(verdict)} and {CATEGORY[category]}, "
                             f"got {_name(got)} and counted {seen}")
                first_hint = first_hint or hint
        final = counts.ints()
    finally:
        bpfsys.close_all()
    expect(not wrong, "3.3", f"{len(wrong)} of {len(cases)} frames were handled wrongly:\n"
           + "\n".join(wrong), first_hint)
    got = [final.get(i, 0) for i in range(5)]
    expect(got == want, "3.3", f"the final counters are {got}, expected {want}",
           "count each frame exactly once, in counts[R6]")
    return (f"{len(cases)} frames ({sum(want)} runs): every verdict right, counters "
            + ", ".join(f"{CATEGORY[i]}={n}" for i, n in enumerate(want)))

