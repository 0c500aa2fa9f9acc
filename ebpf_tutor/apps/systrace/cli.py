"""`ebpf-tutor systrace`: an strace-like tracer from two tracepoints.

    ebpf-tutor systrace -- ls /                  # live lines, children followed
    ebpf-tutor systrace -c -- make               # summary table, counted in the kernel
    ebpf-tutor systrace -p 1234 --json           # JSON lines for a running process
    ebpf-tutor systrace --comm nginx -d 10 -c    # every process named nginx, 10 s
    ebpf-tutor systrace --cgroup /sys/fs/cgroup/unified/system.slice -c -d 5
    ebpf-tutor systrace --csv -o trace.csv -- make     # CSV; -o keeps it apart from make's output

The trace goes to stdout (or -o FILE), the command's own output too.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Trace system calls (strace-like) from raw_syscalls tracepoints: "
                          "arguments, return values, errors and latency, or a -c summary "
                          "counted in the kernel.")
    parser.add_argument("-c", "--summary", action="store_true",
                        help="count calls, errors and time per syscall in the kernel; print a table at the end")
    parser.add_argument("--no-latency", action="store_true",
                        help="with -c: count calls and errors only, at exit (cheapest; like syscount without -L)")
    parser.add_argument("-p", "--pid", type=int, action="append", default=[],
                        help="trace this process (repeatable)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="with -p: also trace its new children (always on for a command)")
    parser.add_argument("--comm", help="trace processes with this name (15 characters at most)")
    parser.add_argument("--cgroup", help="trace one cgroup v2: its id or its path")
    parser.add_argument("-e", "--syscall", action="append", default=[],
                        help="only this system call (repeatable, or comma-separated)")
    parser.add_argument("-d", "--duration", type=float,
                        help="stop after this many seconds (default: when the command or pid ends, or Ctrl-C)")
    parser.add_argument("-o", "--output", help="write the trace here instead of stdout")
    parser.add_argument("--json", action="store_true", help="JSON lines (stream) or one JSON object (-c)")
    parser.add_argument("--csv", action="store_true", help="CSV with a header row (stream or -c)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- command and arguments to start and trace")


def _cgroup_id(value: str) -> int:
    if value.isdigit():
        return int(value)
    from ...sandbox.cgroup import cgroup2_root, cgroup_id
    from pathlib import Path
    path = Path(value)
    if not path.is_absolute():
        path = cgroup2_root() / value.lstrip("/")
    return cgroup_id(path)


def run(args: argparse.Namespace) -> int:
    from . import probes, report, session

    command = [c for c in args.command if c != "--"] if args.command else []
    if args.command and args.command[0] == "--":
        command = args.command[1:]
    if not (command or args.pid or args.comm or args.cgroup):
        print("systrace: give a command (-- cmd args), -p PID, --comm NAME or --cgroup CGROUP "
              "(tracing every process is too much to print)", file=sys.stderr)
        return 2
    names = [n for item in args.syscall for n in item.split(",") if n]
    opts = probes.TraceOptions(summary=args.summary, latency=not args.no_latency, pids=list(args.pid), follow=args.follow,
                               comm=args.comm, syscalls=names,
                               cgroup_id=_cgroup_id(args.cgroup) if args.cgroup else None)
    if args.json and args.csv:
        print("systrace: --json or --csv, not both", file=sys.stderr)
        return 2
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        fmt = report.event_json if args.json else report.event_csv if args.csv else report.event_line
        if args.csv and not args.summary:
            out.write(report.csv_header(False) + "\n")

        def on_event(rec: dict) -> None:
            out.write(fmt(rec) + "\n")

        until = args.pid[0] if len(args.pid) == 1 and not command else None

        def ready(note: str = "") -> None:
            if note:
                print(f"systrace: {note}", file=sys.stderr, flush=True)
            if not command:              # like strace -p: say when tracing begins
                print("systrace: tracing, Ctrl-C to stop", file=sys.stderr, flush=True)

        try:
            res = session.trace(opts, argv=command or None, on_event=on_event,
                                duration=args.duration, until_pid_exits=until, on_ready=ready)
        except (FileNotFoundError, RuntimeError, KeyError) as e:
            print(f"systrace: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:        # before the program was attached: nothing to report
            return 130
        if args.summary:
            extra = {"exit_status": res.exit_status, "lost": res.lost}
            out.write((report.summary_json(res.stats, extra) if args.json
                       else report.summary_csv(res.stats) if args.csv
                       else report.summary_table(res.stats)) + "\n")
        elif res.lost or res.dropped:
            print(f"systrace: {res.lost} events lost in the kernel, {res.dropped} dropped",
                  file=sys.stderr)
        out.flush()
        if res.interrupted:
            return 130
        return res.exit_status if res.exit_status is not None else 0
    finally:
        if out is not sys.stdout:
            out.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ebpf-tutor systrace")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
