#!/usr/bin/env python3
"""Chapter 16's analyzer: packets per second through a veth, with and without it.

A generator in the kernel (BPF_PROG_TEST_RUN in live-frames mode, the one
chapter 7 measures with: `xdp.flood`) sends N copies of one UDP frame out of
`veth-a`; they arrive at `veth-b`, climb `b`'s stack and end at a bound UDP
socket that nobody reads (its queue fills, then the socket drops them; the
same end in every case). We time the generator's call, count what `veth-b`
received (its rx_packets) and what reached the end of the line, and report
delivered packets per second for:

  none        nothing attached to veth-b
  xdp         the analyzer at XDP (native) on veth-b
  tc          the analyzer at TC on veth-b (clsact ingress and egress)
  tc+pcap     tc, sampling 1 in 100 frames into the pcap ring (read and written)
  iptables    no BPF; one iptables counter rule (raw PREROUTING -i veth-b, no
              target: it only counts) in b's namespace
  nft         the same rule in nft, if `nft` is installed

Cases alternate within each round, so a slow moment of the shared machine
hits them all. With --stats, BPF_ENABLE_STATS gives the analyzer's own ns
per packet (from run_time_ns / run_cnt).

USAGE: sudo .venv/bin/python benchmarks/ch16_pps.py [--packets N] [--rounds R] [--json FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ebpf_tutor.apps.netflow import records  # noqa: E402
from ebpf_tutor.apps.netflow.flowtable import Analyzer, Options  # noqa: E402
from ebpf_tutor.apps.netflow.pcap import PcapWriter  # noqa: E402
from ebpf_tutor.bpfsys.stats import ProgStats, run_time_stats  # noqa: E402
from ebpf_tutor.sandbox import net, traffic, xdp  # noqa: E402
from ebpf_tutor.sandbox.flows import link_counters  # noqa: E402

PORT = 9999
CASES = ["none", "xdp", "tc", "tc+pcap", "iptables", "nft"]


def frame_for(lab: net.VethPair) -> bytes:
    """A 60-byte UDP frame from a to b's bound socket, with the real MACs."""
    return traffic.udp_frame(lab.mac("a"), lab.mac("b"), lab.ip_a, lab.ip_b, 40000, PORT,
                             b"p" * 18)


@contextlib.contextmanager
def counter_rule(lab: net.VethPair, tool: str):
    """One counting rule in b's namespace, removed on exit."""
    ns = lab.ns["b"]
    if tool == "iptables":
        add = ["iptables", "-t", "raw", "-A", "PREROUTING", "-i", lab.ifname["b"]]
        remove = ["iptables", "-t", "raw", "-F", "PREROUTING"]
    else:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "table", "ip", "ebt"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "chain", "ip", "ebt", "pre",
                        "{ type filter hook prerouting priority -300; }"], check=True)
        add = ["nft", "add", "rule", "ip", "ebt", "pre", "iifname", lab.ifname["b"], "counter"]
        remove = ["nft", "delete", "table", "ip", "ebt"]
    subprocess.run(["ip", "netns", "exec", ns, *add], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "netns", "exec", ns, *remove], check=False)


def rule_count(lab: net.VethPair, tool: str) -> int:
    ns = lab.ns["b"]
    if tool == "iptables":
        out = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "raw", "-L",
                              "PREROUTING", "-v", "-x", "-n"], capture_output=True, text=True).stdout
        rows = [ln.split() for ln in out.splitlines()[2:] if ln.strip()]
        return int(rows[0][0]) if rows else 0
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "ip", "ebt"],
                         capture_output=True, text=True).stdout
    for item in json.loads(out)["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return expr["counter"]["packets"]
    return 0


def one_run(case: str, n: int, stats: bool, workdir: Path) -> dict:
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(net.VethPair(quiet=True, xdp_ready=True))
        sink = stack.enter_context(contextlib.closing(net.socket_in(lab.ns["b"])))
        sink.bind(("0.0.0.0", PORT))
        frame = frame_for(lab)
        nf, counted = None, None
        if case in ("xdp", "tc", "tc+pcap"):
            opts = Options(hook="xdp" if case == "xdp" else "tc",
                           sample_rate=100 if case == "tc+pcap" else 0, snap_len=128)
            writer = stack.enter_context(PcapWriter(workdir / "bench.pcap", 128)) \
                if case == "tc+pcap" else None
            nf = stack.enter_context(Analyzer(opts, on_sample=(lambda s: writer.write(
                s.data, s.pkt_len, int(records.monotonic_to_wall(s.ts_ns) * 1e9)))
                if writer else None))
            nf.attach(*lab.where("b"))
        elif case in ("iptables", "nft"):
            stack.enter_context(counter_rule(lab, case))
        switch = stack.enter_context(contextlib.closing(run_time_stats())) if stats and nf else None
        fds = []
        if switch:
            fn = "netflow_xdp" if case == "xdp" else "netflow_tc_in"
            fds = [nf.prog.funcs[fn.encode()].fd]
            before = [ProgStats.of(fd) for fd in fds]
        xdp.flood(lab.ns["a"], lab.ifname["a"], frame, 2000)      # warm up
        if nf:
            nf.poll()
        start_rx = link_counters(*lab.where("b"))["rx_packets"]
        took = xdp.flood(lab.ns["a"], lab.ifname["a"], frame, n)
        time.sleep(0.05)
        rx = link_counters(*lab.where("b"))["rx_packets"] - start_rx
        row = {"case": case, "sent": n, "seconds": took, "received": rx,
               "kpps": rx / took / 1e3}
        if nf:
            nf.poll()
            seen = sum(f.packets for f in nf.flows() if f.dport == PORT)
            row["analyzer_counted"] = seen
        if case in ("iptables", "nft"):
            row["rule_counted"] = rule_count(lab, case)
        if switch:
            d = ProgStats.of(fds[0]) - before[0]
            row["prog_ns_per_packet"] = d.ns_per_run
        return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--stats", action="store_true", help="also the analyzer's ns per packet")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cases = [c for c in CASES if c != "nft" or shutil.which("nft")]
    if not shutil.which("nft"):
        print("nft is not installed (Debian package `nftables`): that case is skipped")
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ebt-{os.getpid()}-ch16-bench"
    workdir.mkdir(exist_ok=True)
    rows = []
    for r in range(args.rounds):
        for case in cases:
            row = one_run(case, args.packets, args.stats, workdir)
            row["round"] = r
            rows.append(row)
            print(json.dumps(row), flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n== {args.packets:,} frames of 60 bytes per run, {args.rounds} rounds; "
          f"{platform.release()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    base = statistics.median(r["kpps"] for r in rows if r["case"] == "none")
    print(f"{'case':10} {'median kpps':>12} {'min':>8} {'max':>8} {'vs none':>8}  counted")
    for case in cases:
        k = [r["kpps"] for r in rows if r["case"] == case]
        counted = [r.get("analyzer_counted", r.get("rule_counted", "")) for r in rows
                   if r["case"] == case]
        med = statistics.median(k)
        extra = ""
        ns = [r["prog_ns_per_packet"] for r in rows if r["case"] == case and "prog_ns_per_packet" in r]
        if ns:
            extra = f"  program {statistics.median(ns):.0f} ns/packet"
        print(f"{case:10} {med:12.0f} {min(k):8.0f} {max(k):8.0f} {med / base:8.2f}  "
              f"{counted[0]}{extra}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
