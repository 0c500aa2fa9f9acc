"""The course map (COURSE.md) as data: chapters, their labs, what kernel they need."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chapter:
    number: int
    title: str
    labs: tuple[str, ...]
    kernel: str = "host"        # "host": attaches here; "vm": needs kprobes/fentry/LSM


def _ch(n: int, title: str, labs: str, kernel: str = "host") -> Chapter:
    return Chapter(n, title, tuple(s.strip() for s in labs.split(";")), kernel)


PARTS: list[tuple[str, list[Chapter]]] = [
    ("Part I: Fundamentals", [
        _ch(1, "Introduction to eBPF", "hello eBPF on sys_enter_execve; system info from Python; "
            "program lifecycle"),
        _ch(2, "BPF maps", "process counter; packet-size histogram; stack trace collector"),
        _ch(3, "The BPF instruction set", "packet filter in raw instructions; syscall argument "
            "capture; protocol parser with bounds checks"),
        _ch(4, "Helper functions", "process tree monitor; file latency tracker; memory profiler"),
    ]),
    ("Part II: Program types and attach points", [
        _ch(5, "Kprobes, kretprobes, fentry/fexit", "kernel function tracer; TCP connection "
            "tracker; lock contention analyzer", "vm"),
        _ch(6, "Tracepoints and raw tracepoints", "system call monitor; run-queue latency; "
            "block I/O latency"),
        _ch(7, "XDP", "DDoS protection; L4 load balancer; packet sampling"),
        _ch(8, "TC and socket-level networking", "bandwidth limiter; protocol filter / egress "
            "firewall; latency and loss injection"),
        _ch(9, "Cgroups and resource control", "network policy enforcer; per-cgroup resource "
            "monitor; application sandbox"),
    ]),
    ("Part III: Advanced topics", [
        _ch(10, "CO-RE and BTF", "portable process monitor; version-adaptive program; "
            "BTF structure inspector"),
        _ch(11, "LSM BPF hooks", "file access control; execution guardian; connection firewall", "vm"),
        _ch(12, "Performance", "per-CPU packet counter; zero-copy events; adaptive sampling"),
        _ch(13, "Event processing", "real-time event processor; in-kernel aggregation pipeline; "
            "Prometheus exporter"),
        _ch(14, "Testing and debugging", "unit-test an XDP/TC program; verifier gym; "
            "regression detector"),
    ]),
    ("Part IV: Applications", [
        _ch(15, "System call tracer", "kernel filter by name and cgroup; argument decoder; "
            "in-kernel -c summary"),
        _ch(16, "Network traffic analyzer", "flow table; anomaly detection; pcap export"),
        _ch(17, "Container security monitor", "exec events per container; reverse-shell "
            "detection; kill a shell at its exec"),
        _ch(18, "Performance profiler", "flame graph; off-CPU time; allocation tracking"),
        _ch(19, "Distributed tracing", "HTTP spans; dependency graph; OpenTelemetry export"),
        _ch(20, "Database query analyzer", "query capture; slow queries and N+1; index suggestions"),
        _ch(21, "Security audit system", "file integrity; privileged commands; tamper-evident log"),
        _ch(22, "Chaos engineering platform", "network faults; resource faults; SLO rollback"),
    ]),
    ("Part V: Production", [
        _ch(23, "Production deployment", "program lifecycle manager; blue-green swap; metrics"),
        _ch(24, "Troubleshooting", "broken map; lost events; slow program"),
        _ch(25, "Patterns and best practices", "state machine; tail-call pipeline; testing strategy"),
    ]),
]

CHAPTERS: dict[int, Chapter] = {c.number: c for _, chs in PARTS for c in chs}


def lab_ids(chapter: int) -> list[str]:
    return [f"{chapter}.{i}" for i in range(1, len(CHAPTERS[chapter].labs) + 1)]
