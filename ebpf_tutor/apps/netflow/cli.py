"""`ebpf-tutor netflow`: the flow table of one interface inside a network
namespace, with protocol shares, top talkers, scan and flood alerts, and a
pcap file of sampled packets.

    ebpf-tutor netflow --demo                       # its own namespaces and traffic
    ebpf-tutor netflow --netns NS --dev veth0 --duration 10 --json
    ebpf-tutor netflow --netns NS --dev veth0 --hook tc --pcap out.pcap --sample-rate 10

It attaches only inside a network namespace: one it is given (never the
host's) or, with --demo, one it makes. Ctrl-C stops it cleanly: the
programs are detached and what was measured so far is printed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from .flowtable import HOOKS, Options

EPILOG = """examples:
  ebpf-tutor netflow --demo
  ebpf-tutor netflow --netns NS --dev veth0 --duration 10 --json
  ebpf-tutor netflow --netns NS --dev veth0 --hook tc --pcap out.pcap --sample-rate 10"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    where = p.add_argument_group("where")
    where.add_argument("--netns", help="network namespace of the interface (never the host's)")
    where.add_argument("--dev", help="interface inside --netns")
    where.add_argument("--demo", action="store_true",
                       help="make a veth pair in two new namespaces and send scripted traffic")
    p.add_argument("--hook", choices=HOOKS, default="xdp",
                   help="xdp: ingress only, before the stack (default); tc: ingress and egress")
    p.add_argument("--duration", type=float, default=0.0,
                   help="seconds to run (default: until Ctrl-C; --demo: the demo's traffic)")
    p.add_argument("--interval", type=float, default=0.0,
                   help="print the table every N seconds (text output only)")
    p.add_argument("--top", type=int, default=20, help="flows and talkers shown")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--pcap", type=Path, help="write sampled packets to this pcap file")
    p.add_argument("--sample-rate", type=int, default=10,
                   help="with --pcap: keep 1 packet in N (default 10)")
    p.add_argument("--snap-len", type=int, default=128, help="bytes kept per sampled packet")
    p.add_argument("--window", type=float, default=1.0, help="detection window, seconds")
    p.add_argument("--scan-ports", type=int, default=20,
                   help="distinct ports one source tries in a window to be a scan (default 20)")
    p.add_argument("--flood-packets", type=int, default=5000,
                   help="packets from one source in a window to be a flood (default 5000)")
    p.add_argument("--max-flows", type=int, default=16384, help="size of the LRU flow table")


def _netns_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of a namespace file: equal for the same namespace."""
    try:
        st = os.stat(path)
    except OSError:                  # /proc/1 may be out of reach (a container)
        return None
    return st.st_dev, st.st_ino


def check_namespace(netns: str | None, dev: str | None) -> str | None:
    """None if (netns, dev) is allowed, else why not. The host's namespace
    (the one pid 1 lives in, or this process's own) is refused."""
    if not netns or not dev:
        return "give --netns NAME --dev IF (an interface inside a network namespace), or --demo"
    path = f"/run/netns/{netns}"
    if "/" in netns or not os.path.exists(path):
        return f"no network namespace {netns!r} (ip netns list shows the names)"
    host = {_netns_id("/proc/1/ns/net"), _netns_id("/proc/self/ns/net")} - {None}
    if _netns_id(path) in host:
        return f"{netns} is the host's network namespace: refused (attach inside a namespace)"
    from ...sandbox.net import inside, netlink

    def exists() -> bool:
        with inside(netns):
            return _has_link(dev)
    if not netlink(exists):
        return f"no interface {dev!r} in namespace {netns}"
    return None


def _has_link(dev: str) -> bool:
    import socket
    try:
        socket.if_nametoindex(dev)
        return True
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    if args.pcap is None:
        args.sample_rate = 0
    if not args.demo:
        refused = check_namespace(args.netns, args.dev)
        if refused:
            print(f"netflow: {refused}", file=sys.stderr)
            return 2
    options = Options(hook=args.hook, max_flows=args.max_flows, sample_rate=args.sample_rate,
                      snap_len=args.snap_len, window=args.window, scan_ports=args.scan_ports,
                      flood_packets=args.flood_packets)
    from ...errors import BpfError
    from ...sandbox.net import NotOurInterface
    try:
        return _run(args, options)
    except KeyboardInterrupt:       # raised before the analyzer was up: nothing to report
        return 130
    except (BpfError, NotOurInterface) as e:
        print(f"netflow: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, options: Options) -> int:
    from ...sandbox import net
    from . import records, report
    from .flowtable import Analyzer
    from .pcap import PcapWriter

    with contextlib.ExitStack() as stack:
        writer = None
        if args.pcap:
            writer = stack.enter_context(PcapWriter(args.pcap, snap_len=options.snap_len))

        def write_sample(s: records.Sample) -> None:
            writer.write(s.data, s.pkt_len, int(records.monotonic_to_wall(s.ts_ns) * 1e9))

        def print_alert(a: records.Alert) -> None:
            if not args.json:
                print(report.alert_line(a), flush=True)

        if args.demo:
            lab = stack.enter_context(net.VethPair(quiet=True, xdp_ready=True))
            ns_name, ifname, foreign = lab.ns["b"], lab.ifname["b"], False
        else:
            lab, ns_name, ifname, foreign = None, args.netns, args.dev, True
        nf = stack.enter_context(Analyzer(options, on_sample=write_sample if writer else None,
                                          on_alert=print_alert))
        nf.attach(ns_name, ifname, allow_foreign=foreign)
        start, interrupted = time.monotonic(), False
        try:
            if lab is not None:
                _demo_traffic(lab, nf)
            end = start + args.duration if args.duration else None
            next_print = start + args.interval if args.interval else None
            while lab is None and (end is None or time.monotonic() < end):
                nf.poll(100)
                if next_print and time.monotonic() >= next_print and not args.json:
                    print(report.flow_table(nf.flows(), args.top), "\n", flush=True)
                    next_print += args.interval
        except KeyboardInterrupt:
            interrupted = True
        nf.detach()
        nf.poll()
        flows, protocols = nf.flows(), nf.protocols()
        talkers = records.top_talkers(flows, args.top)
        doc = report.summary(flows, protocols, talkers, nf.alerts,
                             interface=f"{ns_name}/{ifname}", hook=options.hook,
                             seconds=round(time.monotonic() - start, 3), interrupted=interrupted,
                             samples_lost=nf.counter("samples_lost"))
        if writer:
            writer.flush()
            doc["pcap"] = {"path": str(args.pcap), "packets": writer.count,
                           "sample_rate": options.sample_rate}
        if args.json:
            print(json.dumps(doc, indent=1))
        else:
            print(report.text(doc, flows, protocols, talkers, nf.alerts, args.top))
        return 130 if interrupted else 0


def _demo_traffic(lab, nf) -> None:
    """Two TCP exchanges, UDP, a SYN scan of 40 ports and a UDP flood, a to b."""
    from . import workload
    with workload.SizedServer(lab.ns["b"], 8080):
        for size in (300, 2000):
            workload.tcp_exchange(lab.ns["a"], lab.ip_b, 8080, size)
    workload.udp_datagrams(lab.ns["a"], lab.ip_b, 5353, [100, 200, 300])
    workload.syn_scan(lab, list(range(1000, 1040)))
    workload.udp_flood(lab, nf.options.flood_packets + 500)
    time.sleep(0.1)
    nf.poll(100)
