"""`ebpf-tutor containermon`: exec, file, network, namespace and CPU events
per container, alerts from Falco-like rules, and in-kernel enforcement.

    ebpf-tutor containermon --demo                 # two containers, scripted incidents
    ebpf-tutor containermon --demo --enforce-shell --deny-port 4444 --json
    ebpf-tutor containermon --run -- sh -c 'cat /etc/hostname'
    ebpf-tutor containermon --cgroup /sys/fs/cgroup/system.slice/docker-ID.scope --duration 30

Containers are made here (namespaces + a scratch cgroup); --cgroup watches an
existing cgroup without enforcing anything. Ctrl-C stops it cleanly: the
programs are detached, the containers removed, the alerts so far printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

EPILOG = """examples:
  ebpf-tutor containermon --demo
  ebpf-tutor containermon --demo --incident reverse-shell --incident miner --json
  ebpf-tutor containermon --demo --enforce-shell --deny-port 4444
  ebpf-tutor containermon --run -- sh -c 'echo hi > /etc/motd'
  ebpf-tutor containermon --cgroup /sys/fs/cgroup/some.scope --duration 30"""

INCIDENT_NAMES = ("shell", "write-etc", "unshare", "setns", "mount", "reverse-shell", "miner")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    what = p.add_argument_group("what to watch (one of)")
    what.add_argument("--demo", action="store_true",
                      help="two containers: 'web' runs benign work, 'pwned' the scripted incidents")
    what.add_argument("--run", action="store_true",
                      help="start a container and run the command after -- in it")
    what.add_argument("--cgroup", action="append", default=[],
                      help="watch an existing cgroup v2 directory (no enforcement); repeatable")
    p.add_argument("command", nargs=argparse.REMAINDER, help="with --run: -- CMD ARGS...")
    p.add_argument("--incident", action="append", choices=INCIDENT_NAMES,
                   help="--demo: only these incidents (default: all)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="--cgroup: seconds to watch (default: until Ctrl-C)")
    p.add_argument("--enforce-shell", action="store_true",
                   help="stop shells in containers made here: refused (EPERM) by BPF LSM where "
                        "it works, else SIGKILL at exec (bpf_send_signal)")
    p.add_argument("--deny-port", type=int, action="append", default=[],
                   help="refuse IPv4 connects to this port (cgroup/connect4); repeatable")
    p.add_argument("--etc-prefix", action="append",
                   help="path prefix of the 'write below etc' rule (default /etc/)")
    p.add_argument("--cpu-share", type=float, default=0.8,
                   help="miner rule: share of one CPU... (default 0.8)")
    p.add_argument("--cpu-seconds", type=float, default=2.0, help="...held this long (default 2)")
    p.add_argument("--miner-seconds", type=float, default=3.0,
                   help="--demo: how long the scripted miner burns")
    p.add_argument("--events", action="store_true", help="print every event, not only alerts")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")


def settings_from(args: argparse.Namespace):
    from .rules import Settings
    s = Settings(cpu_share=args.cpu_share, cpu_seconds=args.cpu_seconds,
                 enforce_shell_kill=args.enforce_shell, deny_ports=tuple(args.deny_port))
    if args.etc_prefix:
        s.etc_prefixes = tuple(args.etc_prefix)
    return s


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    modes = sum([args.demo, args.run, bool(args.cgroup)])
    if modes != 1:
        print("containermon: give one of --demo, --run -- CMD, --cgroup PATH", file=sys.stderr)
        return 2
    if args.run and not command:
        print("containermon: --run needs a command after --", file=sys.stderr)
        return 2
    if args.cgroup and (args.enforce_shell or args.deny_port):
        print("containermon: enforcement only applies to containers made here (--demo, --run)",
              file=sys.stderr)
        return 2
    for path in args.cgroup:
        if not os.path.isfile(os.path.join(path, "cgroup.procs")):
            print(f"containermon: {path} is not a cgroup v2 directory", file=sys.stderr)
            return 2
    from ...errors import BpfError
    state: dict = {"alerts": [], "events": [], "results": {}}
    try:
        return _run(args, command, state)
    except KeyboardInterrupt:
        _report(args, state, interrupted=True)
        return 130
    except (BpfError, RuntimeError, OSError) as e:
        print(f"containermon: {e}", file=sys.stderr)
        return 1


def _print_alert(a) -> None:
    print(f"ALERT [{a.container}] {a.rule}: pid {a.pid} ({a.comm}) {a.detail}", flush=True)


def _run(args, command: list[str], state: dict) -> int:
    from . import incidents
    from ...sandbox.container import Container
    from .monitor import Monitor

    def on_event(rec: dict) -> None:
        state["events"].append(rec)
        if args.events and not args.json:
            print("event", json.dumps(rec), flush=True)

    def on_alert(a) -> None:
        state["alerts"].append(a)
        if not args.json:
            _print_alert(a)

    status = 0
    with Monitor(settings_from(args), on_event=on_event, on_alert=on_alert) as mon:
        state["monitor"] = mon
        if mon.lsm_note and not args.json:
            print(f"containermon: {mon.lsm_note}", file=sys.stderr)
        if mon.left_out and not args.json:
            print(f"containermon: this kernel has no {', '.join(mon.left_out)}: left out",
                  file=sys.stderr)
        if args.cgroup:
            for path in args.cgroup:
                mon.watch_cgroup(path)
            print("watching, Ctrl-C to stop", file=sys.stderr, flush=True)   # also with --json
            end = time.monotonic() + args.duration if args.duration else None
            while end is None or time.monotonic() < end:
                time.sleep(0.1)
        elif args.run:
            with Container("run") as c:
                mon.watch(c)
                r = c.run(command, timeout=3600)
                sys.stdout.write(r.out) if not args.json else None
                sys.stderr.write(r.err) if not args.json else None
                state["results"]["command"] = {"rc": r.rc}
                status = 0 if r.rc == 0 else 1
                mon.settle()
        else:
            chosen = args.incident or list(INCIDENT_NAMES)
            with Container("web") as web, Container("pwned") as bad:
                mon.watch(web)
                mon.watch(bad)
                state["containers"] = {c.name: {"cgroup_id": c.cgroup_id, "pidns": c.pidns}
                                       for c in (web, bad)}
                benign = incidents.benign(web)
                state["results"]["benign"] = [r.rc for r in benign]
                for name in chosen:
                    fn = incidents.INCIDENTS[name]
                    r = fn(bad, args.miner_seconds) if name == "miner" else fn(bad)
                    state["results"][name] = {"rc": r.rc}
                mon.settle(quiet=max(0.15, mon.sample_every * 2))
        state["refused"] = mon.refused()
        state["lost"] = mon.lost()
        state["lsm_refused"] = mon.lsm_refusals()
        state["enforcement"] = ("lsm+signal" if mon.lsm is not None else "signal") \
            if args.enforce_shell else "none"
    _report(args, state)
    return status


def _report(args, state: dict, interrupted: bool = False) -> None:
    alerts = [a.record() for a in state["alerts"]]
    if args.json:
        out = {"alerts": alerts, "events": len(state["events"]), "lost": state.get("lost", 0),
               "refused": {str(k): v for k, v in state.get("refused", {}).items()},
               "results": state["results"], "interrupted": interrupted,
               "enforcement": state.get("enforcement", "none"),
               "lsm_refused": state.get("lsm_refused", {})}
        if "containers" in state:
            out["containers"] = state["containers"]
        if args.events:
            out["event_list"] = state["events"]
        print(json.dumps(out))
        return
    counts: dict[tuple[str, str], int] = {}
    for a in alerts:
        counts[(a["container"], a["rule"])] = counts.get((a["container"], a["rule"]), 0) + 1
    print(f"\n{len(state['events'])} events, {len(alerts)} alerts"
          + (" (interrupted)" if interrupted else ""))
    if state.get("lost"):
        print(f"  {state['lost']} events lost: the ring buffer was full")
    for (ctr, rule), n in sorted(counts.items()):
        print(f"  {ctr:10} {rule:45} {n}")
    for ctr, n in sorted(state.get("lsm_refused", {}).items()):
        print(f"  {ctr:10} shell exec refused by BPF LSM (EPERM)           {n}")
    for port, n in sorted(state.get("refused", {}).items()):
        print(f"  connect to port {port} refused {n} time(s) (cgroup/connect4)")
