"""The analyzer's BPF program, compiled with the options asked for, attached
at XDP (ingress) and/or TC (ingress and egress) of one interface.

    with VethPair(quiet=True) as lab, Analyzer(Options(hook="tc")) as nf:
        nf.attach(*lab.where("b"))
        ...                                  # traffic
        nf.poll(); nf.flows()                # samples and alerts, then the table
"""
from __future__ import annotations

import contextlib
import ctypes as ct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...program import Program
from ...sandbox import tc, xdp
from . import records

SOURCE_FILE = Path(__file__).with_name("netflow.bpf.c")
HOOKS = ("xdp", "tc")


def source() -> str:
    """The BPF C of the analyzer (netflow.bpf.c, next to this file)."""
    return SOURCE_FILE.read_text()


@dataclass
class Options:
    """What the program is compiled with (each is a -D flag of the C source)."""
    hook: str = "xdp"             # "xdp": ingress only, before the stack; "tc": both directions
    max_flows: int = 16384        # LRU flow table: the least recently used flow makes room
    sample_rate: int = 0          # 1 packet in N goes to the pcap ring; 0: none
    snap_len: int = 128           # bytes kept of a sampled packet
    window: float = 1.0           # seconds of a detection window, per source
    scan_ports: int = 20          # distinct (destination, port) tried in a window: a scan
    flood_packets: int = 5000     # packets from one source in a window: a flood
    xdp_mode: str = "native"

    def cflags(self) -> list[str]:
        if self.hook not in HOOKS:
            raise ValueError(f"hook is one of {HOOKS}, not {self.hook!r}")
        return [f"-DMAX_FLOWS={self.max_flows}", f"-DSAMPLE_RATE={self.sample_rate}",
                f"-DSNAP_LEN={self.snap_len}", f"-DWINDOW_NS={int(self.window * 1e9)}ULL",
                f"-DSCAN_PORTS={self.scan_ports}", f"-DFLOOD_PACKETS={self.flood_packets}"]

    @property
    def flood_pps(self) -> float:
        return self.flood_packets / self.window


@dataclass
class Analyzer:
    """The compiled program, its attachments, and what came up its rings."""
    options: Options = field(default_factory=Options)
    on_sample: Callable[[records.Sample], None] | None = None
    on_alert: Callable[[records.Alert], None] | None = None

    def __post_init__(self) -> None:
        self.prog = Program(source(), cflags=self.options.cflags(), name="netflow")
        self.attachments: list = []
        self.alerts: list[records.Alert] = []
        self.samples_seen = 0
        self.prog["alerts"].open_ring_buffer(self._alert)
        if self.options.sample_rate:
            self.prog["samples"].open_ring_buffer(self._sample)

    # --- attaching
    def attach(self, ns_name: str, ifname: str, allow_foreign: bool = False) -> None:
        """Attach to `ifname` in namespace `ns_name`: XDP on its ingress, or
        TC on both its directions. Only sandbox interfaces, unless
        `allow_foreign` (the command line passes it for a namespace that is
        not the host's, see cli.py)."""
        if self.options.hook == "xdp":
            self.attachments.append(xdp.attach(self.prog, "netflow_xdp", ns_name, ifname,
                                               mode=self.options.xdp_mode,
                                               allow_foreign=allow_foreign))
        else:
            for fn, direction in (("netflow_tc_in", tc.INGRESS), ("netflow_tc_out", tc.EGRESS)):
                self.attachments.append(tc.attach(self.prog, fn, ns_name, ifname, direction,
                                                  allow_foreign=allow_foreign))

    def detach(self) -> None:
        while self.attachments:
            with contextlib.suppress(Exception):
                self.attachments.pop().detach()

    def close(self) -> None:
        """Detach, then free the program (safe twice; runs on Ctrl-C too)."""
        self.detach()
        self.prog.close()

    def __enter__(self) -> "Analyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- rings
    def _alert(self, _ctx, data, size) -> None:
        a = records.Alert.from_bytes(ct.string_at(data, size))
        self.alerts.append(a)
        if self.on_alert:
            self.on_alert(a)

    def _sample(self, _ctx, data, size) -> None:
        s = records.Sample.from_bytes(ct.string_at(data, size), self.options.snap_len)
        self.samples_seen += 1
        if self.on_sample:
            self.on_sample(s)

    def poll(self, timeout_ms: int = 0) -> None:
        """Drain the alert and sample rings (waiting up to timeout_ms for the first)."""
        if timeout_ms:
            self.prog.ring_buffer_poll(timeout_ms)
        self.prog.ring_buffer_consume()

    # --- tables
    def flows(self) -> list[records.Flow]:
        return records.read_flows(self.prog["flows"])

    def protocols(self) -> list[records.ProtocolShare]:
        return records.read_protocols(self.prog["protocols"])

    def counter(self, name: str) -> int:
        index = {"seen": 0, "samples_lost": 1, "alerts_lost": 2}[name]
        return self.prog["counters"][index].value

    def clear(self) -> None:
        """Empty the flow and protocol tables (between intervals)."""
        for name in ("flows", "protocols"):
            self.prog[name].clear()
