"""`ebpf-tutor workshop start|status|progress|stop`: the instructor's commands."""
from __future__ import annotations

import argparse
import os
import sys

from . import hub

DESCRIPTION = """\
Serve the course to a room with JupyterHub. Everything the workshop keeps
(settings, secrets, database, logs) is in one folder, --dir.

modes:
  trusted-room  one machine, one Linux user per student, each with the
                "eBPF (root)" kernel. Students are NOT isolated: they share one
                kernel and the root kernel is root on this machine.
  vm            one course VM per student (each its own kernel); the hub must
                be reachable from the VMs (--hub-connect-url).
"""
EXAMPLES = """\
examples:
  sudo ebpf-tutor workshop start --students 12                  # ebt-student1..12
  sudo ebpf-tutor workshop start --names ana,bo,chen --ip 0.0.0.0 --port 8000
  sudo ebpf-tutor workshop status                               # servers, last activity
  sudo ebpf-tutor workshop progress                             # labs passed per student
  sudo ebpf-tutor workshop stop                                 # servers, hub, users, sudoers rule
"""


def add_parser(sub) -> None:
    w = sub.add_parser("workshop", help="serve the course to a room (JupyterHub)",
                       description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = w.add_subparsers(dest="action", required=True)
    s = actions.add_parser("start", help="create the students and start the hub in the background",
                           description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--students", type=int, metavar="N", help="N students named ebt-student1..N")
    s.add_argument("--names", help="comma-separated student (Linux user) names instead")
    s.add_argument("--mode", choices=hub.MODES, default="trusted-room", help="default: %(default)s")
    s.add_argument("--ip", default="127.0.0.1",
                   help="address the hub listens on (default %(default)s: this machine only; "
                        "0.0.0.0 lets the room reach it)")
    s.add_argument("--port", type=int, default=8000, help="the hub's public port (default %(default)s)")
    s.add_argument("--hub-port", type=int, default=0, help="the hub's internal API port (default: a free one)")
    s.add_argument("--hub-bind-url", default="", help="where the hub's API listens (default http://127.0.0.1:HUB_PORT)")
    s.add_argument("--hub-connect-url", default="",
                   help="how servers and the proxy reach the hub's API (default: the bind URL; "
                        "vm mode: each VM gets its own route)")
    s.add_argument("--password", default="", help="the students' shared password (default: generated, printed)")
    s.add_argument("--vm-suite", default="bookworm", choices=("bookworm", "trixie"),
                   help="vm mode: the course VM image, Debian 12 (6.1) or 13 (6.12) (default %(default)s)")
    s.add_argument("--vm-memory", default="2G", help="vm mode: memory per student VM (default %(default)s)")
    s.add_argument("--vm-cpus", type=int, default=2, help="vm mode: vCPUs per student VM (default %(default)s)")
    for name, text in (("status", "users, their servers and last activity (REST API)"),
                       ("progress", "every student's labs passed, attempts and last result"),
                       ("stop", "stop servers, hub and proxy; remove the users and sudoers rule it created")):
        actions.add_parser(name, help=text, description=text)
    for p in actions.choices.values():
        p.add_argument("--dir", default=str(hub.DEFAULT_DIR), help="the workshop's folder (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        return ACTIONS[args.action](args)
    except (OSError, RuntimeError, ValueError) as e:
        print(f"[workshop] {e}", file=sys.stderr)
        return 1


def _start(args) -> int:
    if os.geteuid() != 0:
        raise RuntimeError("run as root (sudo): the hub creates users and starts their servers")
    try:
        ws = hub.Workshop.load(args.dir)
        print(f"[workshop] restarting the workshop kept in {args.dir}")
    except FileNotFoundError:
        names = [n for n in (args.names or "").split(",") if n] or hub.student_names(args.students or 0)
        if not names:
            raise ValueError("say who comes: --students N or --names a,b,c")
        ws = hub.new(args.dir, names, args.mode, ip=args.ip, port=args.port, hub_port=args.hub_port,
                     hub_bind_url=args.hub_bind_url, hub_connect_url=args.hub_connect_url,
                     password=args.password, vm_suite=args.vm_suite, vm_memory=args.vm_memory,
                     vm_cpus=args.vm_cpus)
    pid = hub.start(ws)
    print(f"[workshop] hub running (pid {pid}, mode {ws.mode}): {ws.url}/hub/login")
    print(f"[workshop] students: {', '.join(ws.students)}")
    print(f"[workshop] shared password: {ws.password}")
    print(f"[workshop] state, admin token and logs: {ws.dir} (hub.log)")
    if ws.mode == "vm":
        print(f"[workshop] the VMs reach the hub at {ws.hub_connect_url or ws.hub_bind_url}")
    return 0


def _status(args) -> int:
    ws = hub.Workshop.load(args.dir)
    if not hub.hub_pid(ws):
        print(f"[workshop] no hub runs for {args.dir}")
        return 1
    print(f"hub: {ws.url} (pid {hub.hub_pid(ws)}, mode {ws.mode})")
    rows = hub.status(ws)
    print(f"{'user':20} {'server':8} {'last activity':28} url")
    for r in rows:
        print(f"{r['user']:20} {r['server']:8} {r['last_activity']:28} {r['url']}")
    return 0


def _progress(args) -> int:
    from . import progress
    ws = hub.Workshop.load(args.dir)
    print(progress.table(progress.collect(ws)))
    return 0


def _stop(args) -> int:
    if os.geteuid() != 0:
        raise RuntimeError("run as root (sudo): stopping removes users and a sudoers rule")
    hub.teardown(hub.Workshop.load(args.dir), log=lambda m: print(f"[workshop] {m}"))
    return 0


ACTIONS = {"start": _start, "status": _status, "progress": _progress, "stop": _stop}
