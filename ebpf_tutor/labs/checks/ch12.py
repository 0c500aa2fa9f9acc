"""Chapter 12 checks: a high-performance packet counter, zero-copy events,
adaptive sampling.

Every check makes work whose true size it knows and that only it could
have made: packets between two namespaces it created, close() calls on a
descriptor number nobody has open (`contention.new_marker`), sent by
processes pinned to each CPU at the same moment so the learner's program
really runs on two CPUs at once. Sizes are random. Timing never decides a
verdict: counts, what the program recorded, and (12.2) which helpers the
loaded program calls do; 12.3's controller is judged on the rates it was
given, whatever a busy machine made of the ticks.
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
ROUNDS = 3


def udp_no_ports(ns_name: str) -> int:
    """Datagrams that reached UDP in `ns_name` for a port nobody listens on."""
    out = subprocess.run(["ip", "netns", "exec", ns_name, "cat", "/proc/net/snmp"],
                         capture_output=True, text=True, check=True).stdout
    head, values = [ln.split()[1:] for ln in out.splitlines() if ln.startswith("Udp:")][:2]
    return int(dict(zip(head, values))["NoPorts"])


def _settled(read, want: int, timeout: float = 3.0) -> int:
    """read() until it gives `want`, or the same value twice 150 ms apart (the
    backlog has drained), or `timeout` s have passed; its last value."""
    last, deadline = read(), time.monotonic() + timeout
    while last != want and time.monotonic() < deadline:
        time.sleep(0.15)
        now = read()
        if now == last:
            break
        last = now
    return last


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
    """Two senders pinned to two CPUs blast the veth at once, ROUNDS times; both
    counters must be exact, per CPU and in all, and every packet must pass."""
    lab_id = "12.1"
    rng = random.Random()
    cpus = usable_cpus()[:2]
    per_sender = [rng.randint(100_000, 160_000) for _ in range(ROUNDS)]
    keep = "keep the given declaration: "
    try:
        with VethPair(quiet=True) as net_:
            prog = load_packet_program(lab_id, program, "count_packets", xdp.load,
                                       "struct xdp_md *ctx")
            with xdp.attach(prog, "count_packets", *net_.where("b"), mode="generic"):
                before = udp_no_ports(net_.ns["b"])
                for n in per_sender:
                    udp_blast(net_.ns["a"], net_.ip_b, 9, n, cpus)
                passed = _settled(lambda: udp_no_ports(net_.ns["b"]) - before,
                                  sum(per_sender) * len(cpus))
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


# -------------------------------------------------------------------- 12.2 --
EVENT_FIELDS = ("pid", "cpu", "fd")
RECORD_BYTES = 8 + 16               # the ring's 8-byte header + struct event


def _counter_total(prog, name: str) -> int:
    """A one-slot counter map's value, summed over CPUs if it is per-CPU."""
    value = prog[name][prog[name].Key(0)]
    return value.value if hasattr(value, "value") else sum(value)


def _helpers_called(prog) -> set[str] | None:
    """The names of the kernel helpers the loaded program calls, from its
    instructions after the verifier (a helper call's imm is then the helper's
    address minus __bpf_call_base), or None if /proc/kallsyms hides addresses."""
    import struct
    from ...bpfsys.programs import prog_info
    wanted = ("__bpf_call_base", "bpf_ringbuf_reserve", "bpf_ringbuf_output",
              "bpf_ringbuf_submit")
    addr = {}
    with open("/proc/kallsyms") as f:
        for line in f:
            a, _kind, name = line.split()[:3]
            if name in wanted:
                addr[name] = int(a, 16)
    if len(addr) < len(wanted) or not addr["__bpf_call_base"]:
        return None
    by_imm = {v - addr["__bpf_call_base"]: k for k, v in addr.items()}
    called, calls = set(), 0
    for fn in prog.funcs.values():
        x = prog_info(fn.fd).xlated
        for i in range(0, len(x) - 7, 8):
            code, _regs, _off, imm = struct.unpack_from("<BBhi", x, i)
            if code == 0x85 and imm:                    # BPF_JMP | BPF_CALL
                calls += 1
                called.add(by_imm.get(imm, ""))
    return called if calls else None     # no raw imm: the kernel hid the addresses


class _Collector:
    """Every event the ring delivers, as (pid, cpu, fd)."""

    def __init__(self, prog):
        self.table, self.events = prog["events"], []

    def __call__(self, _ctx, data, _size) -> None:
        e = self.table.event(data)
        self.events.append(tuple(int(getattr(e, f, -1)) for f in EVENT_FIELDS))

    def take(self) -> list[tuple[int, int, int]]:
        out, self.events = self.events, []
        return out


def _round(lab_id: str, what: str, prog, collector: _Collector, lost_total, runs, lost_before,
           marker: int) -> tuple[int, int]:
    """Judge one round: received + lost == sent; each event's pid, cpu and fd."""
    prog.ring_buffer_consume()
    got = collector.take()
    lost = lost_total(prog) - lost_before
    sent = sum(r.calls for r in runs)
    cpu_of = {r.pid: r.cpu for r in runs}
    strangers = [e for e in got if e[0] not in cpu_of]
    expect(not strangers, lab_id,
           f"{what}: {len(strangers)} events carry a pid that made none of the calls "
           f"(first: pid {strangers[0][0] if strangers else 0}; the callers were "
           f"{sorted(cpu_of)})",
           "pid is the upper half of bpf_get_current_pid_tgid(): shift it right by 32")
    wrong_cpu = [e for e in got if cpu_of[e[0]] != e[1]]
    expect(not wrong_cpu, lab_id,
           f"{what}: {len(wrong_cpu)} events name the wrong CPU (a caller pinned to CPU "
           f"{cpu_of[wrong_cpu[0][0]] if wrong_cpu else 0} sent cpu="
           f"{wrong_cpu[0][1] if wrong_cpu else 0})",
           "fill cpu with bpf_get_smp_processor_id()")
    wrong_fd = [e[2] for e in got if e[2] != marker]
    expect(not wrong_fd, lab_id, f"{what}: {len(wrong_fd)} events carry fd "
           f"{wrong_fd[0] if wrong_fd else 0}, not the descriptor closed ({marker})",
           "fill fd with args->fd")
    expect(len(got) + lost == sent, lab_id,
           f"{what}: {sent:,} events were sent, {len(got):,} arrived and your counter says "
           f"{lost:,} were lost: {sent - len(got) - lost:+,} unaccounted for",
           "every event is either in the ring or counted in `lost`: add 1 to lost exactly "
           "when ringbuf_reserve returns NULL, and sum all CPUs in lost_total")
    return len(got), lost


@lab("12.2", "zero-copy events")
def check_zero_copy(program: str, lost_total) -> str:
    """Three rounds of marked close() calls from one pinned process per CPU:
    a few (all must arrive), a burst far past the ring's size with nobody
    reading (received + lost == sent, lost > 0), a paced stream read live."""
    lab_id = "12.2"
    rng = random.Random()
    cpus = usable_cpus()[:2]
    marker = new_marker(rng)
    from ...bpfsys.maps import map_info
    try:
        prog = Program(program, cflags=[f"-DMARKER={marker}"], name="lab 12.2")
        events = require_table(prog, "events", lab_id,
                               "keep the given declaration: BPF_RINGBUF_OUTPUT(events, 16);")
        require_table(prog, "lost", lab_id,
                      "keep the given declaration: BPF_PERCPU_ARRAY(lost, u64, 1);")
        called = _helpers_called(prog)
        if called is not None:
            expect("bpf_ringbuf_output" not in called, lab_id,
                   "your program sends events with ringbuf_output, which copies an event built "
                   "elsewhere into the ring: this lab asks for zero copy",
                   "reserve the slot first, e = events.ringbuf_reserve(sizeof(*e)), write the "
                   "fields through e, then events.ringbuf_submit(e, 0)")
            expect("bpf_ringbuf_reserve" in called and "bpf_ringbuf_submit" in called, lab_id,
                   "your program never reserves and submits a record in the ring",
                   "e = events.ringbuf_reserve(sizeof(*e)); ... events.ringbuf_submit(e, 0);")
        ring_bytes = map_info(events.map_fd).max_entries
        capacity = ring_bytes // RECORD_BYTES
        collector = _Collector(prog)
        events.open_ring_buffer(collector)
        results = []
        # 1: what fits in the ring, read after
        n = rng.randint(capacity // 8, capacity // (2 * len(cpus)))
        runs = hammer(marker, n, cpus)
        got, lost = _round(lab_id, "round 1 (fits in the ring)", prog, collector, lost_total,
                           runs, lost_total(prog), marker)
        expect(got == n * len(cpus) and lost == 0, lab_id,
               f"round 1: {n * len(cpus)} events fit easily in the ring, yet {got} arrived "
               f"and {lost} were counted lost",
               "submit every event you reserve: events.ringbuf_submit(e, 0)")
        results.append((got, lost))
        # 2: a burst many times the ring, nobody reading
        before = lost_total(prog)
        n = rng.randint(20 * capacity, 40 * capacity) // len(cpus)
        runs = hammer(marker, n, cpus)
        got, lost = _round(lab_id, "round 2 (a burst, nobody reading)", prog, collector,
                           lost_total, runs, before, marker)
        expect(lost > 0, lab_id, f"round 2: {n * len(cpus):,} events into a ring that holds "
               f"about {capacity:,}, and none lost?", "count failed reservations in `lost`")
        results.append((got, lost))
        # 3: a paced stream, read while it runs
        before = lost_total(prog)
        n, rate = rng.randint(4_000, 8_000), 20_000
        done: list = []
        worker = threading.Thread(target=lambda: done.extend(hammer(marker, n, cpus, rate=rate)))
        worker.start()
        while worker.is_alive():
            prog.ring_buffer_poll(20)
        got, lost = _round(lab_id, "round 3 (paced, read live)", prog, collector, lost_total,
                           done, before, marker)
        results.append((got, lost))
    finally:
        close_all()
    return ("received + lost = sent in all 3 rounds: " +
            ", ".join(f"{g:,} + {lo:,}" for g, lo in results))


# -------------------------------------------------------------------- 12.3 --
PERIOD = 4                  # the workload: MARKER once, then MARKER + 1 three times
BUDGET = 2_000              # samples per second in phase 2
TICK = 0.2                  # the controller's period, seconds


class _Sampled:
    """The learner's sampler under a workload: samples as (fd, every),
    the kernel's `seen` total, and the controller's ticks."""

    def __init__(self, prog, marker: int):
        self.prog, self.marker, self.samples = prog, marker, []
        self.table = prog["samples"]
        self.table.open_ring_buffer(self._on_sample)

    def _on_sample(self, _ctx, data, _size) -> None:
        s = self.table.event(data)
        self.samples.append((int(s.fd), int(s.every)))

    def seen(self) -> int:
        value = self.prog["seen"][self.prog["seen"].Key(0)]
        return value.value if hasattr(value, "value") else sum(value)

    def set_every(self, every: int) -> None:
        self.prog["config"][self.prog["config"].Key(0)] = self.prog["config"].Leaf(every)

    def run(self, calls: int, rate: int, cpu: int, controller=None) -> list[dict]:
        """Run the workload (rate 0: flat out); every TICK, note seen and
        samples, and if a controller is given, set `every` to
        controller(rate seen). Each tick records the `every` in force
        during it, the rate fed to the controller and what it chose."""
        worker = threading.Thread(target=hammer, args=(self.marker, calls, [cpu]),
                                  kwargs={"rate": rate, "period": PERIOD})
        ticks = []
        t_last = time.monotonic()
        seen_last, n_last = self.seen(), len(self.samples)
        worker.start()
        while worker.is_alive():
            end = time.monotonic() + TICK
            while time.monotonic() < end and worker.is_alive():
                self.prog.ring_buffer_poll(20)
            now, seen = time.monotonic(), self.seen()
            self.prog.ring_buffer_consume()
            fed = (seen - seen_last) / max(now - t_last, 1e-6)
            tick = {"dt": now - t_last, "seen": seen - seen_last,
                    "samples": len(self.samples) - n_last, "fed": fed,
                    "every": self.prog["config"][self.prog["config"].Key(0)].value}
            if controller is not None:
                tick["chose"] = int(controller(fed))
                self.set_every(tick["chose"])
            ticks.append(tick)
            t_last, seen_last, n_last = now, seen, len(self.samples)
        worker.join()
        self.prog.ring_buffer_consume()
        return ticks


def _as_every(value, lab_id: str) -> int:
    expect(isinstance(value, (int, float)) and value >= 1 and value == int(value), lab_id,
           f"next_every returned {value!r}: `every` is a whole number, at least 1",
           "return max(1, math.ceil(seen_per_s / budget_per_s))")
    return int(value)


def _judge_choice(lab_id: str, rate: float, every: int, where: str) -> None:
    """At `rate` events/s, keeping 1 in `every` must give a sample rate within
    the budget (up to 2x over, 4x under); under the budget, keep all."""
    if rate <= 0:
        return
    if rate <= BUDGET:
        expect(every == 1, lab_id,
               f"{where}: events came at {rate:,.0f}/s, under the budget of {BUDGET:,}/s, and "
               f"next_every chose every = {every}",
               "when the rate is under the budget, next_every must return 1: keep everything")
        return
    got = rate / every
    expect(got <= 2 * BUDGET, lab_id,
           f"{where}: at {rate:,.0f} events/s next_every chose every = {every}, which keeps "
           f"{got:,.0f} samples/s: over the budget of {BUDGET:,}/s",
           "next_every(seen_per_s, budget_per_s) must grow with the event rate: "
           "seen_per_s / budget_per_s, rounded up")
    expect(got >= BUDGET / 4, lab_id,
           f"{where}: at {rate:,.0f} events/s next_every chose every = {every}, which keeps "
           f"only {got:,.0f} samples/s; the budget was {BUDGET:,}/s",
           "do not sample less than the budget allows")


@lab("12.3", "adaptive sampling")
def check_adaptive(program: str, next_every, estimate) -> str:
    """Phase 1: every = 4, a periodic workload: kinds in the samples as in
    the workload. Phase 2: the learner's controller, asked at known rates,
    then steering a live stream at 100,000/s: its choices keep the sample
    rate within the budget, the kernel keeps 1 in `every`, the estimate is
    within 15%. Phase 3: with the choice for a rate under the budget,
    every event is kept. The controller is judged on the rates it was
    given, so a stalled tick on a busy machine changes what it is asked,
    never the verdict."""
    lab_id = "12.3"
    rng = random.Random()
    cpu = usable_cpus()[0]
    marker = new_marker(rng)
    choose = lambda r: _as_every(next_every(r, BUDGET), lab_id)      # noqa: E731
    try:
        prog = Program(program, cflags=[f"-DMARKER={marker}"], name="lab 12.3")
        for name, decl in (("samples", "BPF_RINGBUF_OUTPUT(samples, 64);"),
                           ("seen", "BPF_PERCPU_ARRAY(seen, u64, 1);"),
                           ("config", "BPF_ARRAY(config, u32, 1);")):
            require_table(prog, name, lab_id, "keep the given declaration: " + decl)
        s = _Sampled(prog, marker)

        # phase 1: fixed every = 4, a workload of period 4, flat out (its
        # samples, about 6,000, fit in the ring even if nobody read them)
        s.set_every(PERIOD)
        calls = PERIOD * rng.randint(5_000, 7_000)
        s.run(calls, 0, cpu)
        kept = s.samples
        s.samples = []
        expect(s.seen() == calls, lab_id, f"`seen` counted {s.seen()} events; there were {calls}",
               "count every marked event in seen, before deciding whether to sample it")
        share = len(kept) / calls
        expect(0.15 < share < 0.35, lab_id,
               f"phase 1: with every = 4, {len(kept)} of {calls} events were sampled "
               f"({share:.0%}); about 25% should be",
               "keep an event when bpf_get_prandom_u32() % every == 0, and submit it")
        kinds = sum(1 for fd, _ in kept if fd == marker) / max(len(kept), 1)
        expect(0.15 < kinds < 0.35, lab_id,
               f"phase 1: the workload closes MARKER once in every 4 calls, but "
               f"{kinds:.0%} of the samples are MARKER's: the sample is biased",
               "decide with a random number per event (bpf_get_prandom_u32()), not by "
               "counting events: a counter locks onto the workload's own rhythm")

        # phase 2: the controller, asked at known rates, then steering live
        for rate in (rng.randint(300, 1_900), rng.randint(5_000, 20_000),
                     rng.randint(80_000, 120_000), rng.randint(800_000, 1_200_000)):
            _judge_choice(lab_id, rate, choose(rate), "phase 2")
        rate = 100_000
        calls = int(rate * 1.2)
        s.set_every(choose(rate))        # start near the budget: a stalled reader loses nothing
        ticks = s.run(calls, rate, cpu, controller=choose)
        kept = s.samples
        s.samples = []
        for t in ticks:
            _judge_choice(lab_id, t["fed"], t["chose"], "phase 2, live")
        expected = sum(t["seen"] / max(t["every"], 1) for t in ticks)
        got = sum(t["samples"] for t in ticks)
        expect(0.5 * expected <= got <= 2 * expected, lab_id,
               f"phase 2: with the `every` values the controller set, about {expected:,.0f} "
               f"samples should have arrived; {got:,} did",
               "keep an event when bpf_get_prandom_u32() % every == 0: probability 1 / every")
        guess = estimate(list(kept)) if kept else {}
        truth = {0: calls // PERIOD, 1: calls - calls // PERIOD}
        for kind, true_n in truth.items():
            est = float((guess or {}).get(marker + kind, 0))
            n_kind = sum(1 for fd, _ in kept if fd == marker + kind)
            tolerance = max(0.15, 5 / math.sqrt(max(n_kind, 1)))    # 5 standard errors
            expect(abs(est - true_n) <= tolerance * true_n, lab_id,
                   f"phase 2: estimate gave {est:,.0f} calls on MARKER{' + 1' if kind else ''}; "
                   f"there were {true_n:,} (allowed: {tolerance:.0%} off)",
                   "each sample stands for its `every` events: record every in the sample, "
                   "and add up `every` per fd")

        # phase 3: a rate under the budget: next_every's choice keeps everything
        low = rng.randint(500, 1_500)
        low_every = choose(low)
        s.set_every(low_every)
        calls = rng.randint(1_000, 1_400)
        before = s.seen()
        s.run(calls, 0, cpu)
        missed = calls - len(s.samples)
        expect(s.seen() - before == calls and missed == 0, lab_id,
               f"phase 3: at {low:,} events/s next_every chose every = {low_every}, and "
               f"{missed} of {calls} events were not sampled",
               "with every = 1, keep every event: the draw % 1 is always 0")
    finally:
        close_all()
    return (f"unbiased at every = 4 ({kinds:.0%} MARKER, 25% expected); within the budget "
            f"at {len(ticks)} live ticks and 4 known rates; everything kept at low rate")
