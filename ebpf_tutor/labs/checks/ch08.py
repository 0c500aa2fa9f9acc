"""Chapter 8 checks: TC bandwidth limiter, egress firewall, latency and
loss injection.

Every check builds its own veth pair between two fresh namespaces, attaches
the learner's program to the egress hook of side a, drives traffic whose
true numbers it knows from a to b, and judges by what arrived on b (the
interface's counters, sockets that read, echoes that come back)."""
from __future__ import annotations

import contextlib
import ctypes as ct
import random
import time

from ...sandbox import flows, net, packets, tc, traffic
from ..verdict import expect, lab
from ...program import Program, close_all
from . import byte_order_blind, load_packet_program, require_table

KEEP = "keep the declaration "      # the start of a missing map's hint


def _load(lab_id: str, program: str, fn_name: str, cflags: list[str] | None = None) -> Program:
    """Compile the learner's program and load its TC function (verifier included)."""
    return load_packet_program(lab_id, program, fn_name, tc.load, "struct __sk_buff *skb",
                               cflags)


def _mb(rate: float) -> str:
    return f"{rate / 1e6:.2f} MB/s"


# -------------------------------------------------------------------- 8.1 --
BURST = 20_000               # bytes
PAYLOAD = 1000               # bytes of UDP payload per datagram (1042 on the wire)


@lab("8.1", "bandwidth limiter")
def check_limiter(program: str) -> str:
    """Unlimited UDP flow first (no program), then the same flow through the
    learner's token bucket on veth-a egress, then a gentle flow below the
    limit. Rates are what veth-b received, per second of sending."""
    port = random.randrange(20000, 30000)
    try:
        with net.VethPair() as lab:
            free = flows.udp_flow(lab, port, 0.5, size=PAYLOAD)
            rate = int(min(1_500_000, free.rate / 8) * random.uniform(0.7, 1.0))
            expect(rate >= 100_000, "8.1",
                   f"without any program only {_mb(free.rate)} got through: the machine is too "
                   "busy for this check to tell a limit from slowness",
                   "rerun the check when the machine is quieter")
            cflags = [f"-DRATE_BYTES={rate}", f"-DBURST_BYTES={BURST}"]
            with _load("8.1", program, "tc_limit", cflags) as prog, \
                    tc.attach(prog, "tc_limit", lab.ns["a"], lab.ifname["a"], tc.EGRESS):
                time.sleep(0.2)
                limited = flows.udp_flow(lab, port, 1.2, size=PAYLOAD)
                gentle = flows.udp_flow(lab, port, 0.8, size=PAYLOAD, rate=0.3 * rate)
                stats = _stats(prog)
    finally:
        close_all()

    expect(limited.offered_rate >= 2 * rate, "8.1",
           f"the sender only managed {_mb(limited.offered_rate)} against a limit of {_mb(rate)}: "
           "the machine was too busy to test the limit", "rerun the check")
    ratio = limited.rate / rate
    expect(ratio <= 1.3, "8.1",
           f"with a limit of {_mb(rate)} (burst {BURST} bytes), {_mb(limited.rate)} got through "
           f"({ratio:.1f}x the limit; the sender offered {_mb(limited.offered_rate)})",
           _too_fast_hint(ratio))
    expect(ratio >= 0.5, "8.1",
           f"with a limit of {_mb(rate)}, only {_mb(limited.rate)} got through ({ratio:.2f}x): "
           "the limiter drops packets that are within the rate", _too_slow_hint(ratio))
    kept = gentle.delivered_fraction
    expect(kept >= 0.9, "8.1",
           f"a gentle flow at 30% of the limit lost {100 * (1 - kept):.0f}% of its packets "
           f"({gentle.delivered_packets} of {gentle.sent_packets} arrived)",
           "a packet that finds enough tokens must pass (TC_ACT_OK); only packets that find "
           "too few are dropped (TC_ACT_SHOT)")
    return (f"limit {_mb(rate)}: {_mb(limited.rate)} delivered ({ratio:.2f}x) while "
            f"{_mb(limited.offered_rate)} was offered; unlimited {_mb(free.rate)}; a flow at 30% "
            f"of the limit kept {100 * kept:.0f}% of its packets"
            + (f"; your stats: {stats[0]} passed, {stats[1]} dropped" if stats else ""))


def _stats(prog: Program) -> tuple[int, int] | None:
    try:
        t = prog["stats"]
        return t[ct.c_int(0)].value, t[ct.c_int(1)].value
    except Exception:  # noqa: BLE001 - optional: only for the PASS line
        return None


def _too_fast_hint(ratio: float) -> str:
    return ("refill with the time elapsed since the last packet (store now in last_ns on every "
            "packet), cap the bucket at BURST_NS, and charge each packet that passes "
            "len * NSEC_PER_SEC / RATE_BYTES nanoseconds")


def _too_slow_hint(ratio: float) -> str:
    if 0.08 <= ratio <= 0.2:
        return ("about 8x too slow: RATE_BYTES is in bytes per second and skb->len in bytes; "
                "there are no bits anywhere")
    return ("a packet costs len * NSEC_PER_SEC / RATE_BYTES nanoseconds, taken only from "
            "packets you let through; a packet that finds enough tokens returns TC_ACT_OK")


# -------------------------------------------------------------------- 8.2 --
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
N_UDP, N_TCP, N_ICMP, N_OPT = 10, 3, 3, 5
# Ports whose two bytes differ: one that reads the same in both byte orders
# would let a lookup without ntohs() match by luck.
FW_PORTS = [p for p in range(20000, 30000, 7) if not byte_order_blind(p)]


def _rule(table, proto: int, port: int):
    key = table.Key()
    key.proto, key.port = proto, port
    return key


@lab("8.2", "protocol filter / egress firewall")
def check_firewall(program: str) -> str:
    """UDP, TCP and ICMP flows from a to b under two rule sets written into
    the learner's `rules` map (the second one at run time); what arrived is
    counted by sockets on b and by echo replies."""
    ports = random.sample(FW_PORTS, 4)
    u_block, u_open, both, t_open = ports       # `both`: blocked for TCP, open for UDP
    try:
        with net.VethPair() as lab, _load("8.2", program, "tc_firewall") as prog:
            rules = require_table(prog, "rules", "8.2",
                                  KEEP + "BPF_HASH(rules, struct rule, u64, 64);")
            a, b, ip_b = lab.ns["a"], lab.ns["b"], lab.ip_b
            for proto, port in ((IPPROTO_UDP, u_block), (IPPROTO_TCP, both), (IPPROTO_ICMP, 0)):
                rules[_rule(rules, proto, port)] = rules.Leaf(0)
            with tc.attach(prog, "tc_firewall", a, lab.ifname["a"], tc.EGRESS), \
                    flows.UdpSinks(b, [u_block, u_open, both]) as udp, \
                    flows.TcpListeners(b, [both, t_open]) as tcp:
                for port in (u_block, u_open, both):
                    flows.udp_send(a, ip_b, port, N_UDP)
                tcp_both = flows.tcp_connects(a, ip_b, both, N_TCP)
                tcp_open = flows.tcp_connects(a, ip_b, t_open, N_TCP)
                icmp1 = flows.icmp_echo(a, ip_b, N_ICMP)
                time.sleep(0.1)
                udp1, acc1 = udp.counts(), tcp.accepted()
                hits1 = {k: rules[_rule(rules, *k)].value
                         for k in ((IPPROTO_UDP, u_block), (IPPROTO_TCP, both), (IPPROTO_ICMP, 0))}
                # the same with IP options: a 24-byte IP header moves the ports
                for port in (u_block, u_open):
                    flows.udp_send(a, ip_b, port, N_OPT, ip_options=traffic.IP_NOP_OPTIONS)
                deadline = time.monotonic() + 2.0       # until the open port's datagrams are in
                while True:
                    now = udp.counts()
                    opts = {p: now[p] - udp1[p] for p in (u_block, u_open)}
                    if opts[u_open] >= N_OPT or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                before2 = now
                # phase 2, rules changed while the program runs: ICMP allowed, all UDP blocked
                del rules[_rule(rules, IPPROTO_ICMP, 0)]
                rules[_rule(rules, IPPROTO_UDP, 0)] = rules.Leaf(0)
                flows.udp_send(a, ip_b, u_open, N_UDP)
                icmp2 = flows.icmp_echo(a, ip_b, N_ICMP)
                tcp_open2 = flows.tcp_connects(a, ip_b, t_open, 2)
                time.sleep(0.1)
                udp2 = udp.counts()
                all_udp_hits = rules[_rule(rules, IPPROTO_UDP, 0)].value
    finally:
        close_all()

    sent = f"{N_UDP} sent"
    expect(tcp_open == N_TCP and udp1[u_open] == N_UDP, "8.2",
           f"traffic no rule blocks was dropped: {tcp_open} of {N_TCP} TCP connections to "
           f"port {t_open} and {udp1[u_open]} of {N_UDP} UDP datagrams to port {u_open} got through",
           "return TC_ACT_OK for every packet that matches no rule, and for everything that is "
           "not IPv4 (ARP must pass, or nothing works)")
    counted = hits1[(IPPROTO_UDP, u_block)]
    expect(udp1[u_block] == 0, "8.2",
           f"rule (UDP, {u_block}) is in `rules`, yet {udp1[u_block]} of {N_UDP} datagrams to "
           f"UDP port {u_block} arrived",
           f"the rule counted {counted} matches: return TC_ACT_SHOT when a rule matches"
           if counted else
           "read the *destination* port (2 bytes at offset 2 of the UDP header, which starts "
           "ip->ihl * 4 bytes after the IP header's start) and convert it with ntohs() before "
           "the lookup")
    expect(opts[u_block] == 0, "8.2",
           f"datagrams to blocked UDP port {u_block} without IP options were dropped, but "
           f"{opts[u_block]} of {N_OPT} carrying 4 bytes of IP options arrived",
           "the IP header is ip->ihl * 4 bytes long, 20 only without options: read the port at "
           "sizeof(*eth) + ip->ihl * 4 + 2, not at a fixed offset")
    expect(opts[u_open] == N_OPT, "8.2",
           f"{N_OPT - opts[u_open]} of {N_OPT} datagrams to open UDP port {u_open} carrying IP "
           "options were dropped", "find the UDP header at ip->ihl * 4 bytes after the IP "
           "header's start, whatever the options")
    expect(udp1[both] == N_UDP, "8.2",
           f"only TCP port {both} is blocked, but {N_UDP - udp1[both]} of {N_UDP} UDP datagrams "
           f"to port {both} were dropped", "the protocol is part of the key: fill key.proto "
           "from ip->protocol")
    expect(tcp_both == 0, "8.2",
           f"rule (TCP, {both}) is in `rules`, yet {tcp_both} of {N_TCP} TCP connections to port "
           f"{both} were established", "the TCP destination port sits at the same offset as "
           "UDP's: right after the IP header (ip->ihl * 4 bytes), 2 bytes in")
    expect(icmp1 == 0, "8.2",
           f"rule (ICMP, port 0) means all ICMP, yet {icmp1} of {N_ICMP} pings were answered",
           "ICMP has no port: its key is (IPPROTO_ICMP, 0); look it up like any other rule and "
           "drop on a match")
    expect(hits1[(IPPROTO_UDP, u_block)] == N_UDP and hits1[(IPPROTO_ICMP, 0)] == N_ICMP
           and hits1[(IPPROTO_TCP, both)] >= N_TCP, "8.2",
           f"the rules' counters say {hits1[(IPPROTO_UDP, u_block)]} UDP/{u_block} "
           f"({N_UDP} were dropped), {hits1[(IPPROTO_TCP, both)]} TCP/{both} (at least {N_TCP}) "
           f"and {hits1[(IPPROTO_ICMP, 0)]} ICMP ({N_ICMP})",
           "add one to the value of the rule that matched, each time you drop a packet "
           "(__sync_fetch_and_add(hits, 1) or lock_xadd)")
    expect(udp2[u_open] == before2[u_open], "8.2",
           f"after the check added rule (UDP, 0) at run time, {udp2[u_open] - before2[u_open]} of "
           f"{N_UDP} datagrams to port {u_open} still arrived",
           "a rule with port 0 covers every port of its protocol: when (proto, port) is not in "
           "the map, look up (proto, 0). And ask the map on every packet: it is the policy")
    expect(icmp2 == N_ICMP and tcp_open2 == 2, "8.2",
           f"after the check removed the ICMP rule, {icmp2} of {N_ICMP} pings were answered and "
           f"{tcp_open2} of 2 TCP connections to port {t_open} worked",
           "a packet that matches no rule in the map right now must pass")
    expect(all_udp_hits == N_UDP, "8.2",
           f"rule (UDP, 0) counted {all_udp_hits} drops; {N_UDP} datagrams hit it",
           "count the drop in the rule that matched (here the protocol-wide one)")
    return (f"blocked UDP/{u_block}, TCP/{both} and ICMP, passed UDP/{u_open}, UDP/{both} and "
            f"TCP/{t_open}; then, rules changed live, blocked all UDP and passed ICMP; rule "
            f"counters exact ({sent} per UDP flow)")


# -------------------------------------------------------------------- 8.3 --
DELAY_MS, LOSS_PCT, PROBES = 25, 30, 120
# How long after the last probe an echo may still come back (udp_probes stops
# waiting as soon as every echo is back): on a busy machine an echo can take a
# few hundred ms, and one that came later would count as a probe lost.
ECHO_WAIT = 2.0


def _set_config(prog: Program, delay_ns: int, loss_pct: int, port: int) -> None:
    cfg = require_table(prog, "config", "8.3", KEEP + "BPF_ARRAY(config, struct chaos, 1);")
    leaf = cfg.Leaf()
    leaf.delay_ns, leaf.loss_pct, leaf.port = delay_ns, loss_pct, port
    cfg[ct.c_int(0)] = leaf


def _counters(prog: Program) -> list[int]:
    t = require_table(prog, "stats", "8.3", KEEP + "BPF_ARRAY(stats, u64, 3);")
    return [t[ct.c_int(i)].value for i in range(3)]


def _unit_tests(prog: Program, port: int) -> None:
    """The EDT stamp and the dice, on crafted packets (BPF_PROG_TEST_RUN)."""
    delay = DELAY_MS * 1_000_000
    target = packets.udp_packet(port, sport=40000, payload=b"probe")
    _set_config(prog, delay, 0, port)

    def stamp(tstamp: int = 0) -> tuple[int, tc.TcRun, int]:
        t0 = time.monotonic_ns()
        r = tc.test_run(prog, "tc_chaos", target, tstamp=tstamp)
        t1 = time.monotonic_ns()
        expect(r.retval == tc.TC_ACT_OK, "8.3",
               f"with loss_pct = 0, a matching packet got {r.action}",
               "never drop when loss_pct is 0: drop when bpf_get_prandom_u32() % 100 < loss_pct "
               "(strictly less)")
        return t0, r, t1

    t0, r, t1 = stamp()
    expect(r.tstamp != 0, "8.3",
           "a matching packet left your program with skb->tstamp = 0: no departure time was set",
           "set skb->tstamp = max(skb->tstamp, bpf_ktime_get_ns()) + delay_ns")
    expect(t0 + delay <= r.tstamp <= t1 + delay + 1_000_000, "8.3",
           f"with delay_ns = {delay} ({DELAY_MS} ms), a packet that arrived with no timestamp "
           f"was stamped {(r.tstamp - t0) / 1e6:.3f} ms from now; expected {DELAY_MS} ms",
           "skb->tstamp is an absolute time on the bpf_ktime_get_ns() clock, in nanoseconds: "
           "now + delay_ns")

    later = time.monotonic_ns() + 1_000_000_000
    _, r, _ = stamp(later)
    expect(r.tstamp == later + delay, "8.3",
           f"a packet already stamped to leave 1 s from now was restamped "
           f"{(r.tstamp - later) / 1e6:+.3f} ms from its stamp; it must leave {DELAY_MS} ms after "
           "it, never earlier", "start from skb->tstamp when it is later than now: "
           "t = skb->tstamp; if (t < now) t = now; skb->tstamp = t + delay_ns")

    t0, r, t1 = stamp(time.monotonic_ns() - 5_000_000_000)
    expect(t0 + delay <= r.tstamp <= t1 + delay + 1_000_000, "8.3",
           f"a packet stamped 5 s in the past was stamped {(r.tstamp - t0) / 1e6:.3f} ms from now; "
           f"expected {DELAY_MS} ms", "a stamp in the past counts as now: max(skb->tstamp, now)")

    for other, what in ((packets.udp_packet(port + 1, sport=40000), f"UDP to port {port + 1}"),
                        (packets.tcp_packet(port, sport=40000), f"TCP to port {port}")):
        r = tc.test_run(prog, "tc_chaos", other)
        expect(r.retval == tc.TC_ACT_OK and r.tstamp == 0, "8.3",
               f"a packet that is not the target ({what}) got {r.action} and tstamp {r.tstamp}",
               "leave every other packet alone: TC_ACT_OK, no timestamp")

    runs = 3000
    before = _counters(prog)
    tc.test_run(prog, "tc_chaos", target, repeat=runs)
    after = _counters(prog)
    expect(after[1] == before[1], "8.3",
           f"with loss_pct = 0, {after[1] - before[1]} of {runs} packets were dropped",
           "drop when bpf_get_prandom_u32() % 100 < loss_pct (strictly less)")
    expect(after[0] - before[0] == runs, "8.3",
           f"stats[0] grew by {after[0] - before[0]} over {runs} matching packets",
           "keep the given stats.increment(0) for every matching packet")

    _set_config(prog, delay, LOSS_PCT, port)
    before = _counters(prog)
    tc.test_run(prog, "tc_chaos", target, repeat=runs)
    after = _counters(prog)
    dropped, delayed = after[1] - before[1], after[2] - before[2]
    pct = 100 * dropped / runs
    expect(LOSS_PCT - 6 <= pct <= LOSS_PCT + 6, "8.3",
           f"with loss_pct = {LOSS_PCT}, {pct:.1f}% of {runs} matching packets were dropped "
           "(stats[1])", "drop a packet when bpf_get_prandom_u32() % 100 < loss_pct, and count "
           "it in stats[1] before returning TC_ACT_SHOT")
    expect(dropped + delayed == runs, "8.3",
           f"of {runs} matching packets, stats says {dropped} dropped and {delayed} delayed",
           "every matching packet is either dropped (stats[1]) or stamped (stats[2])")
    _set_config(prog, delay, 100, port)
    r = tc.test_run(prog, "tc_chaos", target)
    expect(r.retval == tc.TC_ACT_SHOT, "8.3",
           f"with loss_pct = 100 a matching packet got {r.action}",
           "return TC_ACT_SHOT for a packet you drop")


@lab("8.3", "latency and loss injection")
def check_chaos(program: str) -> str:
    """Unit tests of the EDT stamp and the loss dice on crafted packets,
    then UDP echo probes a -> b with and without the program: loss measured
    live; the delay measured live only where the fq qdisc exists."""
    port = random.randrange(20000, 30000)
    control = port + 1
    fq = tc.has_qdisc("fq")
    try:
        with _load("8.3", program, "tc_chaos") as prog:
            _unit_tests(prog, port)
            _set_config(prog, 0, 0, port)
            with net.VethPair() as lab, flows.UdpEcho(lab.ns["b"], [port, control]):
                a = lab.ns["a"]
                base = flows.udp_probes(a, lab.ip_b, [port, control], PROBES, wait=ECHO_WAIT)
                with (tc.root_qdisc(a, lab.ifname["a"], "fq") if fq else contextlib.nullcontext()), \
                        tc.attach(prog, "tc_chaos", a, lab.ifname["a"], tc.EGRESS):
                    _set_config(prog, DELAY_MS * 1_000_000, LOSS_PCT, port)
                    before = _counters(prog)
                    live = flows.udp_probes(a, lab.ip_b, [port, control], PROBES,
                                            wait=ECHO_WAIT)
                    after = _counters(prog)
    finally:
        close_all()
    if not fq:
        print("fq qdisc not in this kernel: EDT timestamps are ignored here, so the delay was "
              "checked on crafted packets (BPF_PROG_TEST_RUN) and the loss live")

    lost, lost_ctl = flows.loss(live[port]), flows.loss(live[control])
    expect(flows.loss(base[port]) <= 0.05 and flows.loss(base[control]) <= 0.05, "8.3",
           "without any program, probes were lost: the machine is too busy", "rerun the check")
    expect(lost_ctl <= 0.05, "8.3",
           f"{100 * lost_ctl:.0f}% of the probes to the control port {control} were lost",
           "disturb only UDP to config.port")
    expect(0.12 <= lost <= 0.5, "8.3",
           f"with loss_pct = {LOSS_PCT}, {100 * lost:.0f}% of {PROBES} live probes to port {port} "
           "were lost", "drop with probability loss_pct / 100 on the live path too")
    matched, dropped = after[0] - before[0], after[1] - before[1]
    n_lost = sum(r is None for r in live[port])
    expect(matched == PROBES, "8.3",
           f"{PROBES} probes to port {port} left side a; stats[0] counted {matched}",
           "count each matching packet once in stats[0]")
    expect(abs(dropped - n_lost) <= 2, "8.3",
           f"{n_lost} probes were lost, your stats[1] counted {dropped} drops",
           "count a drop in stats[1] exactly when you return TC_ACT_SHOT")
    base_ms, live_ms = flows.median_ms(base[port]), flows.median_ms(live[port])
    ctl_delta = flows.median_ms(live[control]) - flows.median_ms(base[control])
    extra = live_ms - base_ms
    if fq:
        expect(0.6 * DELAY_MS <= extra <= DELAY_MS + 40, "8.3",
               f"with fq on veth-a and delay_ns = {DELAY_MS} ms, the median round trip to port "
               f"{port} changed by {extra:+.1f} ms (baseline {base_ms:.2f} ms)",
               "stamp skb->tstamp = max(skb->tstamp, now) + delay_ns on every matching packet "
               "you let through")
        expect(ctl_delta <= 0.5 * DELAY_MS, "8.3",
               f"the control port's median round trip grew by {ctl_delta:.1f} ms",
               "leave skb->tstamp alone on other packets")
        delay_note = f"delay measured live with fq: {extra:+.1f} ms for {DELAY_MS} ms asked"
    else:
        delay_note = (f"EDT stamps right on crafted packets; live round trip {extra:+.1f} ms "
                      "(no fq here, so no delay)")
    return (f"{100 * lost:.0f}% of live probes to port {port} lost for {LOSS_PCT}% asked, "
            f"control port untouched; {delay_note}")
