"""`ebpf-tutor profile [oncpu|offcpu|alloc|io] (-p PID | -- COMMAND ...)`.

Imports nothing heavy: BCC loads in run()."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODES = ("oncpu", "offcpu", "alloc", "io")
TICK = 0.25          # s between two symbolizing passes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", nargs="?", default="oncpu", choices=MODES,
                        help="oncpu: CPU samples (default); offcpu: time blocked per stack; "
                             "alloc: bytes malloc'ed and not freed per stack; io: block I/O "
                             "latency histogram")
    parser.add_argument("-p", "--pid", type=int, help="profile this process only (oncpu, offcpu, alloc; io watches every disk)")
    parser.add_argument("-F", "--frequency", type=int, default=99,
                        help="oncpu samples per second per CPU (default 99)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds (default: until the command ends, or 5 s)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--folded", action="store_true", help="print folded stacks (a;b;c count)")
    out.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--svg", metavar="FILE", help="also write a flame graph to FILE")
    parser.add_argument("--top", type=int, default=15, help="stacks shown in the text summary")
    parser.set_defaults(command=[])
    parser.epilog = "COMMAND: after --, a command to start and profile: profile oncpu -- ./app arg"
    parser.usage = ("%(prog)s [oncpu|offcpu|alloc|io] [-p PID] [-F HZ] [--duration S] "
                    "[--folded | --json] [--svg FILE] [-- COMMAND ...]")
    parse = parser.parse_known_args

    def split_command(args=None, namespace=None):
        """Everything after `--` is the command, whatever options precede it."""
        args = list(sys.argv[1:] if args is None else args)
        command = args[args.index("--") + 1:] if "--" in args else []
        ns, extras = parse(args[:args.index("--")] if "--" in args else args, namespace)
        ns.command = command
        return ns, extras

    parser.parse_known_args = split_command


class Gate:
    """A command started but held before exec, so that its pid is known and
    the program loaded before it runs its first instruction."""

    def __init__(self, command: list[str]):
        self._r, self._w = os.pipe()
        fd = self._r              # pass_fds keeps its number (bash, unlike dash, takes fds > 9)
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'read -r _ <&{fd}; exec {fd}<&-; exec "$@"', "bash", *command],
            pass_fds=(fd,), stdout=sys.stderr)   # stdout is ours (JSON, folded)
        os.close(self._r)

    def open(self) -> None:
        os.write(self._w, b"\n")
        os.close(self._w)
        self._w = -1

    def close(self) -> None:
        if self._w >= 0:
            os.close(self._w)
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _text(mode: str, unit: str, folded: dict[str, int], top: int) -> str:
    from .fold import top as top_stacks, total
    scale, shown = {"ns": (1e6, "ms"), "bytes": (1, "bytes")}.get(unit, (1, unit))
    lines = [f"{mode}: {total(folded) / scale:.0f} {shown} in {len(folded)} stacks"]
    for stack, n in top_stacks(folded, top):
        lines.append(f"{n / scale:12.0f} {shown}  {stack}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .probes import Session, Unavailable
    if args.pid and args.command:
        print("profile: give -p PID or a command after --, not both", file=sys.stderr)
        return 2
    if args.pid and not _alive(args.pid):
        print(f"profile: no process {args.pid}", file=sys.stderr)
        return 2
    duration = args.duration if args.duration is not None else (None if args.command else 5.0)
    gate = Gate(args.command) if args.command else None
    pid = gate.proc.pid if gate else args.pid
    session = None
    status = 0
    folded: dict[str, int] = {}
    started = time.monotonic()
    try:
        try:
            session = Session(args.mode, pid=pid if args.mode != "io" else None,
                              freq=args.frequency)
        except Unavailable as e:
            print(f"profile: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:                     # Ctrl-C while BCC compiles
            return 130
        what = f"pid {pid}" if pid and args.mode != "io" else "the whole machine"
        print(f"profile {args.mode}: attached, watching {what}; Ctrl-C to stop",
              file=sys.stderr, flush=True)
        if gate:
            gate.open()
        started = time.monotonic()
        try:
            while duration is None or time.monotonic() - started < duration:
                time.sleep(TICK)
                if args.mode != "io":
                    folded = session.collect()        # symbolize while the process lives
                if gate and gate.proc.poll() is not None:
                    break
                if args.pid and not _alive(args.pid):
                    break
        except KeyboardInterrupt:
            status = 130
        if args.mode != "io":
            folded = session.collect()
        hist = session.histogram() if args.mode == "io" else []
        unit = session.unit
    finally:
        if session is not None:
            session.close()
        if gate:
            gate.close()
    elapsed = time.monotonic() - started
    exit_status = gate.proc.returncode if gate else None
    if exit_status in (126, 127):               # bash could not run it: said on stderr
        print(f"profile: the command did not start ({args.command[0]})", file=sys.stderr)
        status = status or 1
    if args.svg and args.mode != "io":
        from .flamegraph import FlameGraph
        FlameGraph(folded, title=f"{args.mode} ({unit})", unit=unit).save(args.svg)
    if args.json:
        doc = {"mode": args.mode, "unit": unit, "pid": pid, "command": args.command or None,
               "exit_status": exit_status, "seconds": round(elapsed, 3),
               "interrupted": status == 130}
        if args.mode == "io":
            doc["histogram"] = [vars(b) for b in hist]
        else:
            doc["total"] = sum(folded.values())
            doc["stacks"] = [{"stack": s, "value": n} for s, n in
                             sorted(folded.items(), key=lambda kv: -kv[1])]
        print(json.dumps(doc))
    elif args.folded and args.mode != "io":
        from .fold import to_text
        sys.stdout.write(to_text(folded))
    elif args.mode == "io":
        print(f"io: {sum(b.count for b in hist)} block requests")
        for b in hist:
            print(f"  dev {b.dev:>7} {b.low_us:>8} -> {b.high_us:<8} us : {b.count}")
    else:
        print(_text(args.mode, unit, folded, args.top))
    return status
