"""Chapter 9 checks: network policy enforcer, per-cgroup resource monitor,
application sandbox.

Every enforcement check runs the same actions twice, with a fresh scratch
cgroup: once from a process inside it (must be denied where the policy
says so, allowed elsewhere) and once from a process outside it (must be
allowed: a policy that leaks out of its cgroup is wrong too). Ports come
from the kernel (bind to port 0; never one that reads the same in both byte
orders), devices and sysctls are drawn at random, so no hard-coded answer
can pass.
"""
from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ...sandbox.cgroup import ScratchCgroup
from ..verdict import LabFailed, expect, lab
from ...program import Program, close_all
from . import byte_order_blind, require_table

KEEP = "keep the given declaration: "  # the start of a missing map's hint

# The probe: runs a list of actions and prints one verdict per action
# ("ok", or the errno name such as "EPERM"), as a JSON list.
PROBE = r"""
import errno, json, os, socket, stat, sys

def tcp(port, family=socket.AF_INET, addr="127.0.0.1"):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        s.connect((addr, port))

def tcp6(port):
    tcp(port, socket.AF_INET6, "::1")

def tcp_mapped(port):       # an IPv6 socket, an IPv4 destination: ::ffff:127.0.0.1
    tcp(port, socket.AF_INET6, "::ffff:127.0.0.1")

def udp(port, size=16, count=1, family=socket.AF_INET, addr="127.0.0.1", options=b""):
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if options:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, options)
        for _ in range(count):
            s.sendto(b"e" * size, (addr, port))
    finally:
        s.close()

def udp6(port):
    udp(port, family=socket.AF_INET6, addr="::1")

def udp_mapped(port):
    udp(port, family=socket.AF_INET6, addr="::ffff:127.0.0.1")

def udp_options(port):      # 4 bytes of IPv4 options: a 24-byte IP header
    udp(port, options=b"\x01\x01\x01\x00")

def open_dev(path):
    os.close(os.open(path, os.O_RDONLY))

def mknod(path, major, minor):
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
    os.unlink(path)

def read_sysctl(name):
    with open("/proc/sys/" + name) as f:
        f.read()

def write_sysctl(name, value):
    fd = os.open("/proc/sys/" + name, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)

out = []
for name, *args in json.loads(sys.argv[1]):
    try:
        globals()[name](*args)
        out.append("ok")
    except TimeoutError:
        out.append("TIMEOUT")
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(out))
"""


def probe(cg: ScratchCgroup | None, actions: list[list], lab_id: str,
          private_uts: bool = False) -> list[str]:
    """Run the actions in a fresh process, inside `cg` (or outside when None)."""
    argv = [sys.executable, "-c", PROBE, json.dumps(actions)]
    if private_uts:          # writes to kernel/hostname and kernel/domainname stay private
        argv = ["unshare", "--uts", *argv]
    where = "inside the cgroup" if cg else "outside the cgroup"
    try:
        r = cg.run(argv, timeout=20) if cg else \
            subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise LabFailed(lab_id, f"the test process {where} hung for 20 s",
                        "a policy should answer at once: return 0 (deny) or 1 (allow)") from None
    try:
        verdicts = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = " | ".join(r.stderr.strip().splitlines()[-3:])
        raise LabFailed(lab_id, f"the test process {where} could not run (exit {r.returncode}): "
                        f"{tail or 'no output'}",
                        "a policy that denies too much can stop a program from starting: "
                        "allow everything that is not on the deny list") from None
    return verdicts


class _LoopbackSockets:
    """Sockets of one kind on 127.0.0.1, ports chosen by the kernel, that
    count what arrives on each (a subclass says how one arrival is taken).

    No port reads the same in both byte orders (like 0x9393): with one of
    those, a program that forgets ntohs() or htons() would pass by luck
    (1 kernel-chosen port in 256)."""

    kind = socket.SOCK_STREAM

    def __init__(self, n: int, ipv6: bool = False):
        """`ipv6`: each port also gets a twin socket on ::1 (IPv6 only), and
        arrivals on both count for the port."""
        self.socks = []
        self.twins: list[socket.socket] = []
        skipped = []             # stay bound until the end: the kernel cannot hand them out again
        try:
            while len(self.socks) < n:
                s = socket.socket(socket.AF_INET, self.kind)
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
                if byte_order_blind(port):
                    skipped.append(s)
                    continue
                if ipv6:
                    t = socket.socket(socket.AF_INET6, self.kind)
                    t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    try:
                        t.bind(("::1", port))
                    except OSError:      # taken on IPv6: draw another port
                        t.close()
                        skipped.append(s)
                        continue
                    self._open(t)
                    t.setblocking(False)
                    self.twins.append(t)
                self._open(s)
                s.setblocking(False)
                self.socks.append(s)
        finally:
            for s in skipped:
                s.close()
        self.ports = [s.getsockname()[1] for s in self.socks]

    def _open(self, s: socket.socket) -> None:
        """Make a freshly bound socket ready to receive."""

    def _take(self, s: socket.socket) -> None:
        """Take one arrival off `s`; BlockingIOError when there is none."""
        raise NotImplementedError

    def _counts(self) -> list[int]:
        """How many arrivals each port had since the last call (its IPv6 twin
        included)."""
        counts = []
        for i, s in enumerate(self.socks):
            n = 0
            for sock in [s, *self.twins[i:i + 1]]:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        self._take(sock)
                        n += 1
            counts.append(n)
        return counts

    def close(self) -> None:
        for s in self.socks + self.twins:
            s.close()

    def __enter__(self) -> "_LoopbackSockets":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Listeners(_LoopbackSockets):
    """TCP listening sockets on 127.0.0.1, ports chosen by the kernel."""

    def _open(self, s: socket.socket) -> None:
        s.listen(16)

    def _take(self, s: socket.socket) -> None:
        conn, _ = s.accept()
        conn.close()

    def accepted(self) -> list[int]:
        """How many connections each listener received since the last call."""
        return self._counts()


class UdpSinks(_LoopbackSockets):
    """UDP sockets on 127.0.0.1 that count datagrams and bytes."""

    kind = socket.SOCK_DGRAM

    def _take(self, s: socket.socket) -> None:
        s.recv(65535)

    def received(self, settle: float = 0.1) -> list[int]:
        """Datagrams each socket received since the last call."""
        time.sleep(settle)       # loopback delivery may finish in a softirq just after sendto
        return self._counts()


def put(tbl, key, value) -> None:
    """tbl[key] = value, whatever integer types the map was declared with."""
    tbl[tbl.Key(key) if isinstance(key, int) else key] = tbl.Leaf(value)


def attached(cg: ScratchCgroup, lab_id: str, fn: str) -> list[tuple[str, int, str]]:
    progs = cg.programs()
    expect(bool(progs), lab_id, f"{fn}(prog, cg) attached no program to the cgroup",
           "attach each function with cg.attach(prog, \"function_name\", \"hook\")")
    return progs


# -------------------------------------------------------------------- 9.1 --
@lab("9.1", "network policy enforcer")
def check_policy(program: str, attach_policy) -> str:
    """Blocked TCP and UDP ports, an allowed TCP and UDP port and a redirect,
    exercised from inside the scratch cgroup and from outside it, over IPv4,
    IPv6 (::1), v4-mapped addresses (::ffff:127.0.0.1) and, for UDP, with
    IP options (a 24-byte IPv4 header)."""
    lab_id = "9.1"
    try:
        with ScratchCgroup("lab91") as cg, Listeners(4, ipv6=True) as tcp, \
                UdpSinks(2, ipv6=True) as udp:
            t_block, t_ok, t_from, t_to = tcp.ports
            u_block, u_ok = udp.ports
            prog = Program(program, name="lab 9.1")
            blocked = require_table(prog, "blocked_ports", lab_id,
                                    KEEP + "BPF_HASH(blocked_ports, u16, u8);")
            redirects = require_table(prog, "redirects", lab_id,
                                      KEEP + "BPF_HASH(redirects, u16, u16);")
            put(blocked, t_block, 1)
            put(blocked, u_block, 1)
            put(redirects, t_from, t_to)
            attach_policy(prog, cg)
            attached(cg, lab_id, "attach_policy")
            actions = [["tcp", t_block], ["tcp", t_ok], ["tcp", t_from],               # 0-2
                       ["udp", u_block], ["udp", u_ok],                                # 3-4
                       ["tcp6", t_block], ["tcp_mapped", t_block], ["tcp6", t_ok],     # 5-7
                       ["tcp_mapped", t_from],                                         # 8
                       ["udp6", u_block], ["udp6", u_ok],                              # 9-10
                       ["udp_options", u_block], ["udp_options", u_ok]]                # 11-12
            inside = probe(cg, actions, lab_id)
            in_tcp, in_udp = tcp.accepted(), udp.received()
            outside = probe(None, actions, lab_id)
            out_tcp, out_udp = tcp.accepted(), udp.received()
    finally:
        close_all()

    n = len(actions)
    # outside the cgroup: nothing is filtered, nothing redirected
    expect(outside == ["ok"] * n and out_tcp == [3, 2, 2, 0] and out_udp == [3, 3], lab_id,
           f"outside the cgroup the same actions must all work; they gave {outside} "
           f"(TCP servers got {out_tcp} of [3, 2, 2, 0], UDP got {out_udp} of [3, 3])",
           "attach only to the scratch cgroup you are given (cg), never to a parent")
    # inside: allowed traffic still flows
    expect(inside[1] == "ok", lab_id,
           f"inside the cgroup, a connect to port {t_ok} (not blocked) failed: {inside[1]}",
           "your policy denies too much: return 1 (allow) unless the port is in blocked_ports, "
           "in every program")
    expect(inside[7] == "ok", lab_id,
           f"inside the cgroup, a connect to [::1]:{t_ok} (not blocked) failed: {inside[7]}",
           "the connect6 program must allow what is not blocked, like connect4")
    expect(inside[4] == "ok" and inside[10] == "ok" and inside[12] == "ok" and in_udp[1] == 3,
           lab_id,
           f"inside the cgroup, datagrams to UDP port {u_ok} (not blocked) were dropped: to "
           f"127.0.0.1 {inside[4]}, to ::1 {inside[10]}, with IP options {inside[12]} "
           f"({in_udp[1]} of 3 arrived)",
           "the egress program must return 1 for every packet that is not UDP to a blocked port, "
           "IPv4 (whatever its header length) or IPv6")
    # inside: TCP connect to a blocked port is refused by connect4
    expect(inside[0] != "ok", lab_id,
           f"a process inside the cgroup connected to blocked port {t_block}",
           "in the connect4 program take ntohs(ctx->user_port) (the port is stored in network "
           "byte order), look it up in blocked_ports, and return 0 when found; attach it with "
           "hook \"connect4\"")
    expect(inside[0] == "EPERM", lab_id,
           f"connect to blocked port {t_block} failed with {inside[0]}, not EPERM",
           "refuse it in the connect4 program (return 0): connect() then fails at once with EPERM")
    expect(inside[5] == "EPERM", lab_id,
           f"inside the cgroup, a connect to [::1]:{t_block} (blocked) gave {inside[5]}: an "
           "IPv6 socket walks around a connect4 program",
           "attach the same rule to hook \"connect6\" (policy_connect6): the port is in "
           "ctx->user_port there too")
    expect(inside[6] == "EPERM", lab_id,
           f"inside the cgroup, an IPv6 socket connected to [::ffff:127.0.0.1]:{t_block} "
           f"(blocked) and got {inside[6]}",
           "a v4-mapped address reaches IPv4 through an IPv6 socket: only connect6 runs, never "
           "connect4. Judge every address in connect6, v4-mapped ones included")
    # inside: the redirect
    expect(in_tcp[2] == 0, lab_id,
           f"inside the cgroup, a connect to port {t_from} was not redirected "
           f"(it reached the server on {t_from})",
           "look the host-order port up in `redirects`; when found, write htons(new_port) "
           "into ctx->user_port and return 1, in connect4 and connect6")
    expect(inside[2] == "ok" and inside[8] == "ok" and in_tcp[3] == 2, lab_id,
           f"the redirected connects (port {t_from} -> {t_to}, over IPv4 and from an IPv6 "
           f"socket to ::ffff:127.0.0.1) gave {inside[2]} and {inside[8]}; {in_tcp[3]} of 2 "
           f"reached port {t_to}",
           "ctx->user_port is in network byte order: store htons(*new_port), not the number "
           "itself; and redirect in connect6 too")
    # inside: UDP sent with sendto() never calls connect(); egress must catch it
    expect(inside[3] == "EPERM", lab_id,
           f"a datagram from inside the cgroup to 127.0.0.1, blocked UDP port {u_block}, was "
           f"not dropped ({inside[3]})",
           "sendto() without connect() never runs the connect4 program: the egress program "
           "must read the UDP destination port (IP header length + 2) and return 0 when it is "
           "blocked; attach it with hook \"egress\"")
    expect(inside[11] == "EPERM", lab_id,
           f"a datagram to blocked UDP port {u_block} whose IPv4 header carries 4 bytes of "
           f"options was not dropped ({inside[11]})",
           "the IPv4 header is (first byte & 0xF) * 4 bytes long, 20 only without options: the "
           "UDP header starts there")
    expect(inside[9] == "EPERM", lab_id,
           f"a datagram to [::1]:{u_block} (blocked UDP port) was not dropped ({inside[9]})",
           "egress sees IPv6 packets too (version 6 in the high 4 bits of byte 0): the protocol "
           "is byte 6, and the UDP header starts at byte 40")
    expect(in_udp[0] == 0, lab_id,
           f"{in_udp[0]} datagrams from inside the cgroup reached blocked UDP port {u_block}",
           "return 0 from the egress program for every UDP packet to a blocked port")
    return (f"inside: blocked TCP {t_block} refused (EPERM) over IPv4, IPv6 and v4-mapped, "
            f"{t_from} redirected to {t_to}, UDP {u_block} dropped (IPv4, IPv6, IP options), "
            f"allowed ports worked; outside: all {n} went through")


# -------------------------------------------------------------------- 9.2 --
SENDER = r"""
import socket, sys
port, count, size = map(int, sys.argv[1:4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(b"a" * size, ("127.0.0.1", port))
"""

RECEIVER = r"""
import socket, sys
expect, sink, count, size = map(int, sys.argv[1:5])
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind(("127.0.0.1", 0))
r.settimeout(1.5)
print(r.getsockname()[1], flush=True)
got = 0
try:
    while got < expect:
        r.recv(65535)
        got += 1
except TimeoutError:
    pass
print(got, flush=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(b"b" * size, ("127.0.0.1", sink))
"""

FIELDS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "sendto_calls")
IP_UDP_HEADERS = 28


def usage_of(prog, lab_id: str) -> dict[int, dict[str, int]]:
    tbl = require_table(prog, "usage", lab_id, KEEP + "BPF_HASH(usage, u64, struct usage_t);")
    out = {}
    for k, v in tbl.items():
        missing = [f for f in FIELDS if not hasattr(v, f)]
        expect(not missing, lab_id, f"struct usage_t has no field {(missing or [''])[0]}",
               f"keep the given struct: fields {', '.join(FIELDS)}")
        out[k.value] = {f: int(getattr(v, f)) for f in FIELDS}
    return out


@lab("9.2", "per-cgroup resource monitor")
def check_monitor(program: str, attach_monitor) -> str:
    """Two child cgroups A and B under one monitored parent: A sends n_a
    datagrams to a receiver in B, B sends n_b to a socket outside. Each
    cgroup's packets, bytes and sendto() calls must be exactly its own."""
    lab_id = "9.2"
    rng = random.Random()
    n_a, s_a = rng.randint(4, 9), rng.randint(40, 900)
    n_b, s_b = rng.randint(2, 6), rng.randint(40, 900)
    try:
        with ScratchCgroup("lab92") as parent, UdpSinks(1) as sink:
            a, b = parent.child("a"), parent.child("b")
            prog = Program(program, name="lab 9.2")
            require_table(prog, "usage", lab_id, KEEP + "BPF_HASH(usage, u64, struct usage_t);")
            attach_monitor(prog, parent)
            attached(parent, lab_id, "attach_monitor")
            rx = b.spawn([sys.executable, "-c", RECEIVER, str(n_a), str(sink.ports[0]), str(n_b),
                          str(s_b)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
            line = rx.stdout.readline().strip()
            expect(line.isdigit(), lab_id, "the receiver in cgroup B could not start",
                   "your monitor must not refuse anything: return 1 from the skb programs")
            a.run([sys.executable, "-c", SENDER, line, str(n_a), str(s_a)], timeout=20)
            b_got = int((rx.communicate(timeout=20)[0].strip() or "0").splitlines()[-1])
            sink_got = sink.received()[0]
            ids = {"A": a.id, "B": b.id}
            usage = usage_of(prog, lab_id)
    finally:
        close_all()

    expect(b_got == n_a and sink_got == n_b, lab_id,
           f"your monitor dropped traffic: B received {b_got} of {n_a} datagrams from A, the "
           f"socket outside got {sink_got} of {n_b} from B",
           "a cgroup_skb program's return value is a verdict: return 1 to let every packet pass")
    pkt_a, pkt_b = s_a + IP_UDP_HEADERS, s_b + IP_UDP_HEADERS
    want = {"A": {"rx_packets": 0, "rx_bytes": 0, "tx_packets": n_a, "tx_bytes": n_a * pkt_a,
                  "sendto_calls": n_a},
            "B": {"rx_packets": n_a, "rx_bytes": n_a * pkt_a, "tx_packets": n_b,
                  "tx_bytes": n_b * pkt_b, "sendto_calls": n_b}}
    zero = dict.fromkeys(FIELDS, 0)
    got = {c: usage.get(ids[c], zero) for c in "AB"}
    expect(ids["A"] in usage or ids["B"] in usage, lab_id,
           f"`usage` has no entry for cgroup A (id {ids['A']}) nor B (id {ids['B']}); "
           f"it has {len(usage)} entries",
           "key the skb programs by bpf_skb_cgroup_id(skb) and the tracepoint by "
           "bpf_get_current_cgroup_id(), and attach both skb programs to the cgroup given")
    if got["A"]["rx_packets"] == n_a and got["B"]["rx_packets"] == 0:
        raise LabFailed(lab_id, f"the {n_a} datagrams B received were charged to A, the sender",
                        "in the ingress program bpf_get_current_cgroup_id() is whoever the CPU "
                        "runs (on loopback: the sender); use bpf_skb_cgroup_id(skb), the cgroup "
                        "of the socket the packet is for")
    if got["A"]["rx_packets"] == n_a and got["A"]["tx_packets"] == 0:
        raise LabFailed(lab_id, "what A sent was counted as received, and the other way round",
                        "attach count_ingress to hook \"ingress\" and count_egress to \"egress\"")
    for c in "AB":
        for f in FIELDS:
            g, w = got[c][f], want[c][f]
            if g == w:
                continue
            hint = {
                "rx_packets": "in count_ingress add 1 to rx_packets of bpf_skb_cgroup_id(skb)",
                "tx_packets": "in count_egress add 1 to tx_packets of bpf_skb_cgroup_id(skb)",
                "sendto_calls": "in the sys_enter_sendto tracepoint add 1 to sendto_calls of "
                                "bpf_get_current_cgroup_id() (the process making the call)",
            }.get(f, "add skb->len: the whole IP packet, 20 bytes of IP header + 8 of UDP "
                     "+ the payload")
            if f.endswith("bytes") and g == w - IP_UDP_HEADERS * want[c][f[:2] + "_packets"]:
                hint = "count skb->len, which includes the 28 bytes of IP and UDP headers"
            raise LabFailed(lab_id, f"cgroup {c}: {f} is {g}, expected {w} (A sent {n_a} x {s_a} "
                            f"bytes of payload to B; B sent {n_b} x {s_b} to a socket outside)",
                            hint)
    return (f"A: {n_a} packets / {n_a * pkt_a} bytes out, {n_a} sendto; "
            f"B: {n_a} / {n_a * pkt_a} in, {n_b} / {n_b * pkt_b} out, {n_b} sendto: exact")


# -------------------------------------------------------------------- 9.3 --
DEVICES = [("/dev/zero", 1, 5), ("/dev/full", 1, 7)]
SYSCTLS = ["kernel/hostname", "kernel/domainname"]     # per UTS namespace: safe to write


@lab("9.3", "application sandbox")
def check_sandbox(program: str, attach_sandbox) -> str:
    """A forbidden device, port and sysctl (drawn at random) are denied to a
    process in the sandbox and allowed outside it; their allowed siblings
    work on both sides. The port is tried over TCP (IPv4, IPv6, v4-mapped)
    and UDP sendto() (IPv4, IPv6)."""
    lab_id = "9.3"
    rng = random.Random()
    dev_deny, dev_ok = rng.sample(DEVICES, 2)
    sys_deny, sys_ok = rng.sample(SYSCTLS, 2)
    try:
        with ScratchCgroup("lab93") as cg, Listeners(2, ipv6=True) as tcp, \
                tempfile.TemporaryDirectory(prefix="ebt-lab93-") as tmp:
            p_deny, p_ok = tcp.ports
            prog = Program(program, name="lab 9.3")
            devs = require_table(prog, "deny_dev", lab_id,
                                 KEEP + "BPF_HASH(deny_dev, struct dev_key, u8);")
            ports = require_table(prog, "deny_port", lab_id, KEEP + "BPF_HASH(deny_port, u16, u8);")
            sysctls = require_table(prog, "deny_sysctl", lab_id,
                                    KEEP + "BPF_HASH(deny_sysctl, struct sysctl_key, u8);")
            put(devs, devs.Key(dev_deny[1], dev_deny[2]), 1)
            put(ports, p_deny, 1)
            key = sysctls.Key()
            key.name = sys_deny.encode()
            put(sysctls, key, 1)
            attach_sandbox(prog, cg)
            attached(cg, lab_id, "attach_sandbox")
            node = str(Path(tmp) / "node")
            actions = [["open_dev", dev_deny[0]], ["mknod", node, dev_deny[1], dev_deny[2]],
                       ["open_dev", dev_ok[0]], ["open_dev", "/dev/null"],
                       ["mknod", node, dev_ok[1], dev_ok[2]],
                       ["tcp", p_deny], ["tcp", p_ok],
                       ["read_sysctl", sys_deny], ["write_sysctl", sys_deny, "ebt-sandbox"],
                       ["read_sysctl", sys_ok], ["write_sysctl", sys_ok, "ebt-sandbox"],
                       ["tcp6", p_deny], ["tcp_mapped", p_deny], ["udp", p_deny],   # 11-13
                       ["udp6", p_deny], ["tcp6", p_ok], ["udp", p_ok]]              # 14-16
            inside = probe(cg, actions, lab_id, private_uts=True)
            outside = probe(None, actions, lab_id, private_uts=True)
            tcp.accepted()
    finally:
        close_all()

    names = ["open " + dev_deny[0], f"mknod char {dev_deny[1]}:{dev_deny[2]}", "open " + dev_ok[0],
             "open /dev/null", f"mknod char {dev_ok[1]}:{dev_ok[2]}", f"connect to port {p_deny}",
             f"connect to port {p_ok}", "read " + sys_deny, "write " + sys_deny, "read " + sys_ok,
             "write " + sys_ok, f"connect to [::1]:{p_deny}", f"connect to [::ffff:127.0.0.1]:{p_deny}",
             f"UDP sendto 127.0.0.1:{p_deny}", f"UDP sendto [::1]:{p_deny}",
             f"connect to [::1]:{p_ok}", f"UDP sendto 127.0.0.1:{p_ok}"]
    bad_out = [f"{n}: {v}" for n, v in zip(names, outside) if v != "ok"]
    expect(not bad_out, lab_id, "outside the sandbox, these failed: " + "; ".join(bad_out),
           "attach only to the cgroup you are given, so that the rest of the machine is untouched")
    denied_wanted = {0, 1, 5, 7, 8, 11, 12, 13, 14}
    too_much = [f"{n}: {v}" for i, (n, v) in enumerate(zip(names, inside))
                if i not in denied_wanted and v != "ok"]
    expect(not too_much, lab_id, "inside the sandbox, allowed actions failed: " + "; ".join(too_much),
           "deny only what is in the deny maps: every program must return 1 for anything else "
           "(the device program: other devices too, and other access types)")
    dev = f"char {dev_deny[1]}:{dev_deny[2]} ({dev_deny[0]})"
    expect(inside[0] == "EPERM", lab_id, f"the forbidden device {dev} opened inside the sandbox "
           f"({inside[0]})",
           "in the device program build the key {ctx->major, ctx->minor}, look it up in deny_dev "
           "and return 0 when found (for BPF_DEVCG_DEV_CHAR); attach it with hook \"device\"")
    expect(inside[1] == "EPERM", lab_id, f"mknod of the forbidden device {dev} worked inside the "
           f"sandbox ({inside[1]})",
           "deny every access to a listed device: read, write and mknod alike")
    expect(inside[5] == "EPERM", lab_id, f"a process in the sandbox connected to forbidden port "
           f"{p_deny} ({inside[5]})",
           "in the connect4 program look up ntohs(ctx->user_port) in deny_port and return 0 "
           "when found; attach it with hook \"connect4\"")
    expect(inside[11] == "EPERM", lab_id, f"a process in the sandbox connected to forbidden port "
           f"{p_deny} at ::1 ({inside[11]}): an IPv6 socket walks around connect4",
           "attach the port rule to hook \"connect6\" as well (ctx->user_port holds the port there "
           "too)")
    expect(inside[12] == "EPERM", lab_id, f"an IPv6 socket in the sandbox connected to forbidden "
           f"port {p_deny} at ::ffff:127.0.0.1 ({inside[12]})",
           "a v4-mapped address reaches IPv4 through an IPv6 socket, and only connect6 runs: judge "
           "every destination in connect6, v4-mapped ones included")
    expect(inside[13] == "EPERM", lab_id, f"a UDP datagram from the sandbox to forbidden port "
           f"{p_deny} was sent ({inside[13]}): sendto() never calls connect()",
           "attach the port rule to hook \"sendmsg4\": it runs in sendto()/sendmsg() when the "
           "call names a destination")
    expect(inside[14] == "EPERM", lab_id, f"a UDP datagram from the sandbox to [::1]:{p_deny} "
           f"was sent ({inside[14]})", "attach the port rule to hook \"sendmsg6\" as well")
    expect(inside[7] == "EPERM" or inside[8] == "EPERM", lab_id,
           f"the forbidden sysctl {sys_deny} was read and written inside the sandbox",
           "get the full name with bpf_sysctl_get_name(ctx, key.name, sizeof(key.name), 0) "
           "(flags 0 gives \"kernel/hostname\"; BPF_F_SYSCTL_BASE_NAME would give only "
           "\"hostname\"), look it up in deny_sysctl, return 0; attach with hook \"sysctl\"")
    expect(inside[7] == "EPERM", lab_id, f"reading the forbidden sysctl {sys_deny} worked inside "
           "the sandbox (writing it was denied)",
           "deny reads too: do not test ctx->write")
    expect(inside[8] == "EPERM", lab_id, f"writing the forbidden sysctl {sys_deny} worked inside "
           "the sandbox (reading it was denied)",
           "deny writes too: ctx->write is 1 for a write; return 0 in both cases")
    return (f"inside: {dev}, port {p_deny} and {sys_deny} denied (open, mknod; TCP over IPv4, "
            f"IPv6 and v4-mapped, UDP over IPv4 and IPv6; read, write), their neighbours "
            f"allowed; outside: all {len(actions)} actions worked")
