"""The course's complete applications (chapters 15-22), one subpackage each.

An application builds on everything below it (Program, sandbox, bpfsys, events)
and nothing imports it back: each is a tool that runs from its chapter and from
`ebpf-tutor <app>`.

Each application's `cli.py` has two functions, and `APPS` below names it:

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

`run` returns the exit status, prints JSON with `--json`, and ends cleanly on
Ctrl-C (KeyboardInterrupt: detach, print the summary so far, exit 130).
The `cli` module must import quickly: load BCC and the BPF program in `run`.
"""
from __future__ import annotations

# command name -> (module with add_arguments/run, one-line help), chapter order
APPS: dict[str, tuple[str, str]] = {
    "systrace": ("ebpf_tutor.apps.systrace.cli", "chapter 15: strace-like system call tracer (filters, decoded arguments, -c summary)"),
    "netflow": ("ebpf_tutor.apps.netflow.cli", "chapter 16: network traffic analyzer (flow table, protocols, talkers, scan/flood alerts, pcap)"),
    "containermon": ("ebpf_tutor.apps.containermon.cli", "chapter 17: container security monitor (exec/file/network/namespace events per container, Falco-like alerts, kill/refuse enforcement)"),
    "profile": ("ebpf_tutor.apps.profiler.cli", "chapter 18: profiler (on-CPU flame graphs, off-CPU time, allocations, block I/O latency)"),
}
