"""Chapter 14 checks: unit tests with BPF_PROG_TEST_RUN (14.1), the
verifier gym (14.2), a regression detector (14.3).

14.1 runs the learner's test functions against the programs as written and
against known buggy versions of them: a good suite passes the first and
fails every one of the others.

Every gym program is loaded, then run with BPF_PROG_TEST_RUN (raw
tracepoint programs on context arguments, XDP programs on crafted frames)
on inputs drawn at random, and what it recorded is compared with the right
answer: a fix that only silences the verifier fails.

GYM is also the explainer's test suite (tests/test_errors.py): for each
program it names the kind of error its unfixed version gets and the line
the explainer must point at.
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import ipaddress
import os
import random
import struct
from dataclasses import dataclass
from typing import Callable, Iterator

from ...bpfsys.programs import RawProgram, ProgType
from ...errors import BpfError
from ...program import Program, close_all
from ...sandbox import packets
from ..verdict import LabFailed, expect, lab
from . import count_of

LAB = "14.2"
RAW, XDP = ProgType.RAW_TRACEPOINT, ProgType.XDP


@dataclass
class Exercise:
    func: str                     # the function to load
    prog_type: ProgType
    kind: str                     # what the unfixed program gets: "compile" or "verifier"
    culprit: str                  # the line (stripped) the explainer must point at
    behaviour: Callable[[Program, RawProgram], None]
    least_privilege: bool = False   # loaded with CAP_BPF + CAP_NET_ADMIN only


# ------------------------------------------------------- least privilege --
class _CapHeader(ct.Structure):
    _fields_ = [("version", ct.c_uint32), ("pid", ct.c_int)]


class _CapData(ct.Structure):
    _fields_ = [("effective", ct.c_uint32), ("permitted", ct.c_uint32),
                ("inheritable", ct.c_uint32)]


_CAP_V3 = 0x20080522                       # _LINUX_CAPABILITY_VERSION_3
CAP_SYS_ADMIN, CAP_PERFMON = 21, 38


def _capget() -> "ct.Array[_CapData]":
    data = (_CapData * 2)()
    if ct.CDLL(None, use_errno=True).capget(ct.byref(_CapHeader(_CAP_V3, 0)), data):
        raise OSError(ct.get_errno(), "capget")
    return data


def _capset(data) -> None:
    if ct.CDLL(None, use_errno=True).capset(ct.byref(_CapHeader(_CAP_V3, 0)), data):
        raise OSError(ct.get_errno(), "capset")


@contextlib.contextmanager
def least_privilege(drop: tuple[int, ...] = (CAP_SYS_ADMIN, CAP_PERFMON)) -> Iterator[None]:
    """Run the block with `drop` removed from this thread's effective
    capabilities (capset acts on the calling thread only), and put them back
    after. Without CAP_PERFMON and CAP_SYS_ADMIN the verifier may not let a
    program read uninitialised stack (bpf_allow_uninit_stack() is
    bpf_token_capable(token, CAP_PERFMON))."""
    saved, reduced = _capget(), _capget()
    for cap in drop:
        reduced[cap // 32].effective &= ~(1 << (cap % 32))
    _capset(reduced)
    try:
        yield
    finally:
        _capset(saved)


def raw_args(*args: int) -> bytes:
    """A raw tracepoint's context: its arguments as u64s."""
    return struct.pack(f"<{len(args)}Q", *[a & (2**64 - 1) for a in args])


def _fail(what: str, expected, seen) -> None:
    raise LabFailed(LAB, f"{what}: expected {expected}, your program gave {seen}",
                    "re-read what the program must do (the comment above its cell)")


def _drain(prog: Program, table: str) -> list[bytes]:
    got: list[bytes] = []

    def on_event(_ctx, data, size):
        got.append(ct.string_at(data, size))
    prog[table].open_ring_buffer(on_event)
    prog.ring_buffer_consume()
    return got


# ---------------------------------------------------------------- behaviours --
def null_map_value(prog, run):
    watched = prog["watched"]
    a, b = random.sample(range(1, 1 << 40), 2)
    watched[watched.Key(a)] = watched.Leaf(0)
    na, nb = random.randint(2, 6), random.randint(1, 4)
    for _ in range(na):
        run.test_run(repeat=0, ctx=raw_args(a))
    for _ in range(nb):
        run.test_run(repeat=0, ctx=raw_args(b))
    counts = {k.value: v.value for k, v in watched.items()}
    if counts != {a: na}:
        _fail(f"calls with a watched key {na} times and an unwatched one {nb} times",
              {a: na}, counts)


def unbounded_loop(prog, run):
    table = prog["table"]
    values = [random.randint(0, 1000) for _ in range(64)]
    for i, v in enumerate(values):
        table[ct.c_int(i)] = ct.c_ulonglong(v)
    for n in (0, random.randint(1, 63), 64, random.randint(65, 10_000)):
        run.test_run(repeat=0, ctx=raw_args(n))
        got = prog["total"][ct.c_int(0)].value
        if got != sum(values[:n]):
            _fail(f"sum of the first {n} entries", sum(values[:n]), got)


def packet_bounds(prog, run):
    blocked = prog["blocked"]
    port, other = random.sample(range(1024, 60000), 2)
    blocked[blocked.Key(port)] = blocked.Leaf(1)
    cases = [(packets.udp_packet(port), 1, "UDP to the blocked port"),
             (packets.udp_packet(other), 2, "UDP to another port"),
             (packets.tcp_packet(port), 2, "TCP to the blocked port number"),
             (packets.udp_packet(port)[:14 + 10], 2, "a frame cut inside the IP header"),
             (packets.udp_packet(port)[:14 + 20 + 4], 2, "a frame cut inside the UDP header")]
    for frame, want, what in cases:
        got = run.test_run(frame).retval
        if got != want:
            _fail(what, ["XDP_DROP", "XDP_PASS"][want - 1], f"return value {got}")


XDP_MD = struct.Struct("<6I")


def bad_ctx(prog, run):
    frame = packets.udp_packet(random.randint(1, 60000))
    run.test_run(frame, ctx=XDP_MD.pack(0, len(frame), 0, 1, 0, 0), ctx_out_size=XDP_MD.size)
    got = prog["last_ifindex"][ct.c_int(0)].value
    if got != 1:
        _fail("the ifindex of a frame received on lo (ifindex 1)", 1, got)


def gpl_only(prog, run):
    license_ = prog.module and __import__("bcc").libbcc.lib.bpf_module_license(prog.module)
    if license_ and b"GPL" in license_:
        raise LabFailed(LAB, f"gpl_only: the program's license is now {license_.decode()!r}",
                        "the program must stay proprietary: use a helper that is not GPL-only")
    run.test_run(repeat=0, ctx=raw_args(0))
    got = prog["caller"][ct.c_int(0)].value
    if got != os.getpid():
        _fail("the caller's tgid", os.getpid(), got)


def ringbuf_leak(prog, run):
    values = [random.randint(1, 1 << 50) for _ in range(3)]
    for v in (values[0], 0, values[1], 0, values[2]):
        run.test_run(repeat=0, ctx=raw_args(v))
    got = [struct.unpack("<Q", e[:8])[0] for e in _drain(prog, "events")]
    if got != values:
        _fail("events for the calls 'x, 0, y, 0, z'", values, got)


def stack_512(prog, run):
    words = [random.randint(0, 1 << 63) for _ in range(70)]
    buf = (ct.c_uint64 * 70)(*words)
    ident = random.randint(1, 1 << 40)
    run.test_run(repeat=0, ctx=raw_args(ident, ct.addressof(buf)))
    got = _drain(prog, "samples")
    if len(got) != 1 or struct.unpack("<71Q", got[0][:568]) != (ident, *words):
        _fail("one event with the id and the 70 words", "1 matching event",
              f"{len(got)} event(s)" + (" with other contents" if got else ""))


def helper_type(prog, run):
    frames = [packets.udp_packet(), packets.tcp_packet(ip=6), packets.icmp_packet(),
              packets.udp_packet(ip=6)]
    random.shuffle(frames)
    for f in frames:
        if run.test_run(f).retval != 2:
            _fail("the verdict for every frame", "XDP_PASS", "something else")
    got = count_of(prog["seen"][ct.c_int(0)])
    if got != 2:
        _fail("IPv4 frames counted among 2 IPv4 and 2 IPv6", 2, got)


def _histogram(prog, run, values: list[int]) -> list[int]:
    for v in values:
        run.test_run(repeat=0, ctx=raw_args(v))
    return list(prog["hist"][ct.c_int(0)].slots)


def signed_index(prog, run):
    good = [random.randint(0, 15) for _ in range(6)]
    values = good + [-1, -random.randint(2, 1000), 16, random.randint(17, 1000)]
    random.shuffle(values)
    want = [good.count(i) for i in range(16)]
    got = _histogram(prog, run, values)
    if got != want:
        _fail(f"a histogram of {values}", want, got)


def off_by_one(prog, run):
    good = [random.randint(0, 15) for _ in range(6)] + [15]
    values = good + [16, 16, random.randint(17, 1000)]
    random.shuffle(values)
    want = [good.count(i) for i in range(16)]
    got = _histogram(prog, run, values)
    if got != want:
        _fail(f"a histogram of {values}", want, got)


def stale_packet(prog, run):
    inner = random.choice([0x0800, 0x86DD, 0x0806, 0x88CC])
    frame = packets.ethernet(0x88B5, packets.ethernet(inner, b"\0" * 40))
    r = run.test_run(frame)
    got = prog["inner_proto"][ct.c_int(0)].value
    if r.retval != 2 or got != inner:
        _fail("the inner EtherType, and XDP_PASS", f"{inner:#06x}", f"{got:#06x} (verdict {r.retval})")
    if r.data[:14] != frame[14:28]:
        _fail("the frame after the program ran", "the inner header first", "the outer one")


def var_size(prog, run):
    for n in (random.randint(1, 63), 64, random.randint(65, 500)):
        text = bytes(random.randint(1, 255) for _ in range(max(n, 64)))
        buf = ct.create_string_buffer(text, len(text))
        run.test_run(repeat=0, ctx=raw_args(ct.addressof(buf), n))
        m = prog["copied"][ct.c_int(0)]
        want = min(n, 64)
        if m.len != want or bytes(m.text)[:want] != text[:want]:
            _fail(f"a copy of a {n}-byte message", f"{want} bytes copied",
                  f"len {m.len}" + ("" if bytes(m.text)[:want] == text[:want] else ", other bytes"))


def str_overflow(prog, run):
    for n in (random.randint(1, 14), random.randint(20, 40)):
        name = "".join(random.choice("abcdefghij") for _ in range(n)).encode()
        buf = ct.create_string_buffer(name)
        run.test_run(repeat=0, ctx=raw_args(ct.addressof(buf)))
        got = bytes(prog["last_name"][ct.c_int(0)].text)
        want = name[:15]
        if got.split(b"\0")[0] != want:
            _fail(f"the name {name.decode()!r} kept in 16 bytes", want, got.split(b"\0")[0])


def printk_args(prog, run):
    n = random.randint(2, 5)
    for _ in range(n):
        run.test_run(repeat=0, ctx=raw_args(1, 2, 3, 4))
    got = count_of(prog["calls"][ct.c_int(0)])
    if got != n:
        _fail(f"calls counted after {n} runs", n, got)


def undeclared_helper(prog, run):
    run.test_run(repeat=0, ctx=raw_args(0))
    got = prog["caller_tid"][ct.c_int(0)].value
    if got != __import__("threading").get_native_id():
        _fail("the caller's thread id", __import__("threading").get_native_id(), got)


def uninit_stack(prog, run):
    flows = prog["flows"]
    ports = random.sample(range(1024, 60000), 2)
    addrs = [f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
             for _ in ports]
    counts = [random.randint(1, 4), random.randint(1, 4)]
    for port, addr, n in zip(ports, addrs, counts):
        for _ in range(n):
            run.test_run(packets.udp_packet(port, dst=addr))
    run.test_run(packets.tcp_packet(ports[0], dst=addrs[0]))       # not UDP: not counted
    for port, addr, n in zip(ports, addrs, counts):
        daddr = int.from_bytes(ipaddress.IPv4Address(addr).packed, "little")
        key = flows.Key(daddr, port, 17)
        got = flows[key].value if key in flows else 0
        if got != n:
            _fail(f"the count of {n} UDP frames to {addr}:{port} under the key "
                  f"(daddr, dport, proto=17) with zero padding", n, got)
    if len(flows) != 2:
        _fail("flows after UDP to 2 destinations (and one TCP frame)", 2, f"{len(flows)} keys")


def nullable_arith(prog, run):
    hist = prog["hist"]
    group, other = random.sample(range(1, 1 << 31), 2)
    hist[hist.Key(group)] = hist.Leaf()
    values = [random.randint(0, 1 << 20) for _ in range(8)]
    for v in values:
        run.test_run(repeat=0, ctx=raw_args(v, group))
        run.test_run(repeat=0, ctx=raw_args(v, other))
    want = [sum(1 for v in values if v & 15 == i) for i in range(16)]
    got = list(hist[hist.Key(group)].slots)
    if got != want:
        _fail(f"slots of group {group} after values {values}", want, got)
    if len(hist) != 1:
        _fail("groups after calls for a group Python did not create", 1, len(hist))


GYM: dict[str, Exercise] = {
    "null_map_value": Exercise("count_watched", RAW, "verifier", "__sync_fetch_and_add(n, 1);",
                               null_map_value),
    "packet_bounds": Exercise("drop_blocked", XDP, "verifier", "if (ip->protocol != IPPROTO_UDP)",
                              packet_bounds),
    "bad_ctx": Exercise("note_ifindex", XDP, "verifier", "u32 ifindex = ctx->egress_ifindex;",
                        bad_ctx),
    "gpl_only": Exercise("who_called", RAW, "verifier",
                         "struct task_struct *task = (struct task_struct *)bpf_get_current_task();",
                         gpl_only),
    "ringbuf_leak": Exercise("report", RAW, "verifier",
                             "struct event *e = events.ringbuf_reserve(sizeof(*e));", ringbuf_leak),
    "stack_512": Exercise("snapshot", RAW, "compile", "struct sample s = {};", stack_512),
    "helper_type": Exercise("count_ipv4", XDP, "verifier",
                            "bpf_skb_load_bytes(ctx, 12, &proto, sizeof(proto));", helper_type),
    "signed_index": Exercise("bucket", RAW, "verifier", "__sync_fetch_and_add(&h->slots[slot], 1);",
                             signed_index),
    "off_by_one": Exercise("bucket", RAW, "verifier", "__sync_fetch_and_add(&h->slots[slot], 1);",
                           off_by_one),
    "stale_packet": Exercise("strip_outer", XDP, "verifier", "u16 proto = ntohs(eth->h_proto);",
                             stale_packet),
    "var_size": Exercise("copy_msg", RAW, "verifier",
                         "bpf_probe_read_user(m->text, len, (void *)ctx->args[0]);", var_size),
    "str_overflow": Exercise("note_name", RAW, "verifier",
                             "bpf_probe_read_user_str(n->text, 32, (void *)ctx->args[0]);",
                             str_overflow),
    "printk_args": Exercise("trace_args", RAW, "compile",
                            'bpf_trace_printk("%llx %llx %llx %llx\\n", ctx->args[0], ctx->args[1], '
                            'ctx->args[2], ctx->args[3]);', printk_args),
    "undeclared_helper": Exercise("who_calls", RAW, "compile", "u32 tid = bpf_get_current_tid();",
                                  undeclared_helper),
    "uninit_stack": Exercise("count_flows", XDP, "verifier", "u64 *n = flows.lookup(&f);",
                             uninit_stack, least_privilege=True),
    "unbounded_loop": Exercise("sum_first", RAW, "verifier", "for (u32 i = 0; i < n; i++) {",
                               unbounded_loop),
    "nullable_arith": Exercise("bucket", RAW, "verifier", "u64 *p = &h->slots[slot];",
                               nullable_arith),
}


def load_for_test(source: str, func: str, prog_type: ProgType, *, name: str = "",
                  precheck: bool | None = None) -> tuple[Program, RawProgram]:
    """Compile `source` and load `func`; the RawProgram (a second descriptor
    on the same program) runs it with BPF_PROG_TEST_RUN. Close both."""
    prog = Program(source, name=name or func, precheck=precheck)
    try:
        fn = prog.load_func(func, int(prog_type))
    except BaseException:
        prog.close()
        raise
    return prog, RawProgram(os.dup(fn.fd), func, prog_type, "", "", 0)


def load_exercise(name: str, source: str) -> tuple[Program, RawProgram]:
    """Compile and load one gym program (some abort LLVM: compiled in a child
    first), with fewer capabilities where the exercise says so."""
    ex = GYM[name]
    with least_privilege() if ex.least_privilege else contextlib.nullcontext():
        return load_for_test(source, ex.func, ex.prog_type, name=name, precheck=True)


def try_program(name: str, source: str | None = None) -> None:
    """Load one gym program (the one in the notebook's NAME variable if no
    source is given) and say what happened."""
    import __main__
    source = source if source is not None else getattr(__main__, name.upper())
    try:
        prog, run = load_exercise(name, source)
    except BpfError as e:
        print(e.format())
        return
    with prog, run:
        print(f"{name}: loaded ({GYM[name].prog_type.name}); the check will now test what it does")


@lab(LAB, "The verifier gym")
def check_gym(programs: dict) -> str:
    missing = sorted(set(GYM) - set(programs))
    expect(not missing, LAB, f"programs missing: {', '.join(missing)}",
           "pass all the programs, as the check cell does")
    rejected, wrong = [], []
    try:
        for name in GYM:
            try:
                prog, run = load_exercise(name, programs[name])
            except BpfError as e:
                rejected.append(f"{name}: {e.kind}: {e.summary.splitlines()[0][:100]}")
                continue
            with prog, run:
                try:
                    GYM[name].behaviour(prog, run)
                except LabFailed as e:
                    wrong.append(f"{name}: {e.message}")
    finally:
        close_all()
    lines = rejected + wrong
    expect(not rejected, LAB, f"{len(rejected)} of {len(GYM)} programs still do not load:\n  "
           + "\n  ".join(lines), "run try_program(\"<name>\") on the first one and read its hint")
    expect(not wrong, LAB, f"{len(wrong)} of {len(GYM)} programs load but do the wrong thing:\n  "
           + "\n  ".join(wrong), "a fix must keep what the program does: re-read its task")
    return f"all {len(GYM)} programs load and did what they must on random inputs"


# ============================================================ 14.1 ==========
LAB_UNIT = "14.1"

PORT_GUARD = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
BPF_HASH(blocked, u16, u8);      /* ports to drop, host byte order */
BPF_ARRAY(drops, u64, 1);        /* how many datagrams were dropped */

/* Drop UDP/IPv4 datagrams to a blocked port (IPv4 headers without options);
   pass everything else, including frames too short to parse. */
int port_guard(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(eth + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    if ((void *)(udp + 1) > data_end)
        return XDP_PASS;
    if (ip->protocol != 17)      /* IPPROTO_UDP */
        return XDP_PASS;
    u16 port = ntohs(udp->dest);
    if (!blocked.lookup(&port))
        return XDP_PASS;
    drops.atomic_increment(0);
    return XDP_DROP;
}
"""

OPEN_COUNTER = r"""
BPF_ARRAY(target, u32, 1);       /* the tgid to count */
BPF_ARRAY(opens, u64, 1);        /* its openat and openat2 calls */

/* raw_tracepoint/sys_enter: args[0] is struct pt_regs *, args[1] the syscall number */
int open_counter(struct bpf_raw_tracepoint_args *ctx) {
    long id = ctx->args[1];
    if (id != 257 && id != 437)  /* openat, openat2 (x86_64) */
        return 0;
    int zero = 0;
    u32 *tgid = target.lookup(&zero);
    if (!tgid || *tgid != bpf_get_current_pid_tgid() >> 32)
        return 0;
    opens.atomic_increment(0);
    return 0;
}
"""

# (what the bug is, text in the program, the buggy text): each one a mistake people make
GUARD_BUGS = [
    ("the port compared in network byte order (ntohs forgotten)",
     "u16 port = ntohs(udp->dest);", "u16 port = udp->dest;"),
    ("the protocol not checked: TCP to a blocked port is dropped too",
     "    if (ip->protocol != 17)      /* IPPROTO_UDP */\n        return XDP_PASS;\n", ""),
    ("a frame too short to parse is dropped instead of passed",
     "    if ((void *)(udp + 1) > data_end)\n        return XDP_PASS;",
     "    if ((void *)(udp + 1) > data_end)\n        return XDP_DROP;"),
    ("a drop not counted", "    drops.atomic_increment(0);\n", ""),
]
COUNTER_BUGS = [
    ("openat2 forgotten", "if (id != 257 && id != 437)", "if (id != 257)"),
    ("the process filter ignored: every process counted",
     "    if (!tgid || *tgid != bpf_get_current_pid_tgid() >> 32)\n        return 0;\n",
     "    if (!tgid)\n        return 0;\n"),
    ("the syscall number read from args[0] (that is the pt_regs pointer)",
     "long id = ctx->args[1];", "long id = ctx->args[0];"),
]


class Guard:
    """The port guard under test: block(port), run(frame) -> verdict, drops()."""

    def __init__(self, source: str = PORT_GUARD):
        self.prog, self._run = load_for_test(source, "port_guard", XDP)

    def block(self, port: int) -> None:
        table = self.prog["blocked"]
        table[table.Key(port)] = table.Leaf(1)

    def run(self, frame: bytes) -> int:
        return self._run.test_run(frame).retval

    def drops(self) -> int:
        return count_of(self.prog["drops"][ct.c_int(0)])

    def close(self) -> None:
        self._run.close()
        self.prog.close()

    def __enter__(self) -> "Guard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Tracer(Guard):
    """The open counter under test: watch(tgid), call(nr), opens()."""

    def __init__(self, source: str = OPEN_COUNTER):      # noqa: super() loads another program
        self.prog, self._run = load_for_test(source, "open_counter", RAW)

    def watch(self, tgid: int) -> None:
        self.prog["target"][ct.c_int(0)] = ct.c_uint32(tgid)

    def call(self, nr: int) -> int:
        """Run the program as if this thread entered syscall `nr`."""
        return self._run.test_run(repeat=0, ctx=raw_args(0, nr)).retval

    def opens(self) -> int:
        return count_of(self.prog["opens"][ct.c_int(0)])


def port_guard(source: str = PORT_GUARD) -> Guard:
    """Load the port guard (or a version of it) for a test."""
    return Guard(source)


def open_counter(source: str = OPEN_COUNTER) -> Tracer:
    """Load the open counter (or a version of it) for a test."""
    return Tracer(source)


def _outcome(test: Callable, handle: Guard) -> str:
    """'' if the test passed, else what failed: the assert's line and message."""
    import traceback
    try:
        with handle:
            test(handle)
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - a failed assert, or any error, is a failed test
        frames = traceback.extract_tb(e.__traceback__)
        last = frames[-1]
        return f"line {last.lineno}: {last.line or type(e).__name__} {e}".strip()
    return ""


@lab(LAB_UNIT, "Unit tests with BPF_PROG_TEST_RUN")
def check_unit_tests(test_port_guard: Callable, test_open_counter: Callable) -> str:
    suites = [("test_port_guard", test_port_guard, Guard, PORT_GUARD, GUARD_BUGS),
              ("test_open_counter", test_open_counter, Tracer, OPEN_COUNTER, COUNTER_BUGS)]
    missed, caught = [], 0
    try:
        for name, test, make, source, bugs in suites:
            try:
                failed = _outcome(test, make(source))
            except NotImplementedError:
                raise LabFailed(LAB_UNIT, f"{name} is not written yet (it raised NotImplementedError)",
                                "write its asserts in the answer cell") from None
            expect(not failed, LAB_UNIT, f"{name} fails the program as written: {failed}",
                   "a test must pass the right program: re-read what the program does, "
                   "and what the handle's methods return")
            for what, old, new in bugs:
                assert old in source, what
                if _outcome(test, make(source.replace(old, new))):
                    caught += 1
                else:
                    missed.append(f"{name} passes a version with a bug: {what}")
    finally:
        close_all()
    expect(not missed, LAB_UNIT, f"your tests miss {len(missed)} of {caught + len(missed)} "
           "buggy versions:\n  " + "\n  ".join(missed),
           "add the input that makes this bug give a different answer, and assert on it")
    return f"your tests pass both programs and fail all {caught} buggy versions"


# ============================================================ 14.3 ==========
LAB_REGRESS = "14.3"

SCANNER = r"""
struct buf { u8 bytes[512]; };
BPF_PERCPU_ARRAY(scratch, struct buf, 1);
BPF_ARRAY(result, u64, 1);

/* Copy 512 bytes of a user buffer (args[0]) and count the bytes before STOP. */
int scan_line(struct bpf_raw_tracepoint_args *ctx) {
    int zero = 0;
    struct buf *b = scratch.lookup(&zero);
    if (!b)
        return 0;
    bpf_probe_read_user(b->bytes, sizeof(b->bytes), (void *)ctx->args[0]);
    u64 n = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < SCAN; i++) {
        if (b->bytes[i] == STOP)
            break;
        n++;
    }
    result.update(&zero, &n);
    return 0;
}
"""
_HASH_LOOP = ("    result.update(&zero, &n);\n",
              "#pragma clang loop unroll(disable)\n"
              "    for (u32 j = 0; j < 1000; j++)\n"
              "        n = n * 31 + b->bytes[j & 511];\n"
              "    result.update(&zero, &n);\n")
_RARE_PATH = ("    result.update(&zero, &n);\n",
              "    if (ctx->args[1] == 0xdeadbeef) {        /* a debugging path, never taken */\n"
              "        bpf_trace_printk(\"scan %llu of %llx\\n\", n, ctx->args[0]);\n"
              "        u64 one = 1;\n"
              "        int one_key = 1;\n"
              "        result.update(&one_key, &one);\n"
              "    }\n"
              "    result.update(&zero, &n);\n")


def scanner(scan: str = "400", stop: str = "'\\n'", *edits: tuple[str, str]) -> str:
    """A version of the scanner: its loop bound, its stop byte, and text edits."""
    text = SCANNER.replace("SCAN", scan).replace("STOP", stop)
    for old, new in edits:
        text = text.replace(old, new)
    return text


# version -> (what changed, its source, the flags a detector must raise against the baseline)
VERSIONS: dict[str, tuple[str, str, set[str]]] = {
    "rebuilt": ("the same source, compiled again", scanner(), set()),
    "slower": ("stops at a NUL instead of a newline: scans all 400 bytes",
               scanner(stop="0"), {"runtime"}),
    "wider": ("loop bound 500 instead of 400 (the line still ends early)",
              scanner(scan="500"), {"verified"}),
    "extra_loop": ("a 1000-round hash of the buffer after the scan", scanner("400", "'\\n'", _HASH_LOOP),
                   {"insns", "verified", "runtime"}),
    "debug_path": ("a debugging branch that never runs", scanner("400", "'\\n'", _RARE_PATH),
                   {"insns", "verified"}),
}
RUNS_BEFORE, RUNS_AFTER = 1000, 2500     # different on purpose: compare per run, not totals
ROUNDS = 3                               # alternating measurements; the median of each goes on


def median_of(measurements: list[dict]) -> dict:
    """Each key's median over a few measurements (one noisy run time is not a regression)."""
    import statistics
    return {k: statistics.median(m[k] for m in measurements) for k in measurements[0]}


def line_buffer() -> ct.Array:
    """512 bytes: a 16-byte line ending in '\\n', then text without a NUL."""
    line = bytes(random.choice(b"abcdefghij") for _ in range(16)) + b"\n"
    return ct.create_string_buffer(line + b"x" * (512 - len(line)), 512)


def workload(run: RawProgram, runs: int) -> Callable[[], int]:
    """Run the program `runs` times on one line (BPF_PROG_TEST_RUN with
    ctx_in); returns the number of runs."""
    buf = line_buffer()
    ctx = raw_args(ct.addressof(buf), 0)

    def go() -> int:
        assert buf                    # the program reads it: it must outlive the runs
        for _ in range(runs):
            run.test_run(repeat=0, ctx=ctx)
        return runs
    return go


@lab(LAB_REGRESS, "A regression detector")
def check_regressions(measure: Callable, regressions: Callable) -> str:
    wrong, table = [], []
    loaded: list[tuple[Program, RawProgram]] = []
    try:
        base = load_for_test(scanner(), "scan_line", RAW, name="baseline")
        loaded.append(base)
        names = list(VERSIONS)
        random.shuffle(names)
        for name in names:
            what, source, want = VERSIONS[name]
            after = load_for_test(source, "scan_line", RAW, name=name)
            loaded.append(after)
            rounds = [(measure(base[1].fd, workload(base[1], RUNS_BEFORE)),
                       measure(after[1].fd, workload(after[1], RUNS_AFTER))) for _ in range(ROUNDS)]
            m_before, m_after = median_of([b for b, _ in rounds]), median_of([a for _, a in rounds])
            got = set(regressions(m_before, m_after) or ())
            table.append(f"{name:11} {', '.join(sorted(got)) or '-':26} ({what})")
            if got != want:
                extra, lost = sorted(got - want), sorted(want - got)
                wrong.append(f"{name} ({what}): " + "; ".join(
                    ([f"false flag {', '.join(extra)}"] if extra else [])
                    + ([f"missed {', '.join(lost)}"] if lost else []))
                    + f"  [before {m_before}, after {m_after}]")
    finally:
        for prog, run in loaded:
            run.close()
            prog.close()
        close_all()
    expect(not wrong, LAB_REGRESS, f"{len(wrong)} of {len(VERSIONS)} versions flagged wrongly:\n  "
           + "\n  ".join(wrong), "print measure() for the baseline and that version, and compare "
           "per run, not totals (the check runs them 1,000 and 2,500 times)")
    return f"right flags, and no false ones, for all {len(VERSIONS)} versions:\n  " + "\n  ".join(table)
