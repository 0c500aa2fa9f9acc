"""The `ebpf-tutor` command: doctor, headers, progress, work, reset, sweep, kernelspec."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

EXAMPLES = """examples:
  ebpf-tutor doctor            what this machine can do, and how to fix what it cannot
  ebpf-tutor headers           find or prepare kernel headers, verified against BTF
  ebpf-tutor progress          the course checklist with the labs you passed
  ebpf-tutor work              create or update your work folder (what `./course lab` opens)
  ebpf-tutor reset 1.1         the course's version of lab 1.1 again (yours goes to .backup/)
  ebpf-tutor sweep             remove namespaces/cgroups/pins a killed run left behind
  ebpf-tutor workshop --help   serve the course to a room of students (JupyterHub)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ebpf-tutor", description="helpers of the eBPF course",
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("doctor", help="check the machine")
    d.add_argument("--no-features", action="store_true", help="skip the attach probes")
    h = sub.add_parser("headers", help="find/prepare/verify kernel headers")
    h.add_argument("--check", action="store_true", help="only report, never prepare")
    sub.add_parser("progress", help="course checklist")
    w = sub.add_parser("work", help="create or update your work folder from the course")
    w.add_argument("--dir", type=Path, help="the work folder (default: $EBPF_TUTOR_WORK or ./work)")
    w.add_argument("--print-path", action="store_true",
                   help="report on stderr, and print only the folder's path on stdout")
    r = sub.add_parser("reset", help="put back the course's version of a lab or chapter")
    r.add_argument("target", help="a lab (1.1) or a chapter (ch07)")
    r.add_argument("--dir", type=Path, help="the work folder (default: $EBPF_TUTOR_WORK or ./work)")
    s = sub.add_parser("sweep", help="remove leftovers of killed runs")
    s.add_argument("--all", action="store_true", help="also those of live processes")
    k = sub.add_parser("kernelspec", help="install the 'eBPF (root)' Jupyter kernel")
    k.add_argument("--install", action="store_true")
    from .workshop.command import add_parser as add_workshop_parser
    add_workshop_parser(sub)
    from .apps import APPS
    for name, (module, help_) in APPS.items():       # the applications of chapters 15-22
        app = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(app)
    args = ap.parse_args(argv)

    if args.cmd == "doctor":
        from .doctor import MISSING, doctor
        report = doctor(features=not args.no_features)
        print(report.text())
        essential = {"BTF", "capabilities", "BCC", "kernel headers", "tracepoints"}
        return 1 if any(i.status == MISSING and i.name in essential for i in report.items) else 0
    if args.cmd == "headers":
        from .kernel import headers
        try:
            st = headers.ensure(log=lambda m: print(f"[headers] {m}", flush=True),
                                prepare=not args.check)
        except headers.HeadersError as e:
            print(f"[headers] {e}", file=sys.stderr)
            return 1
        print(f"[headers] {st.summary()}")
        if st.repaired:
            print(f"[headers] repaired from BTF: {', '.join(s.split()[-1] for s in st.repaired)}")
        return 0
    if args.cmd == "progress":
        from .labs import progress
        print(progress())
        return 0
    if args.cmd == "work":
        from . import workspace
        report = workspace.sync(args.dir)
        print(report.text(), file=sys.stderr if args.print_path else sys.stdout)
        if args.print_path:
            print(report.work.resolve())
        return 0
    if args.cmd == "reset":
        from . import workspace
        try:
            done = workspace.reset(args.target, args.dir)
        except ValueError as e:
            print(f"ebpf-tutor reset: {e}", file=sys.stderr)
            return 2
        print("\n".join(f"reset {rel} (your version is in .backup/)" for rel in done))
        return 0
    if args.cmd == "sweep":
        from .sandbox.sweep import sweep
        print("\n".join(sweep(everything=args.all)) or "nothing to sweep")
        return 0
    if args.cmd == "kernelspec":
        from .kernelspec import install, spec
        if args.install:
            print(f"[kernelspec] installed {install()}")
            from .workspace import install_lab_settings
            print(f"[kernelspec] JupyterLab settings: {install_lab_settings(sys.prefix)}")
        else:
            import json
            print(json.dumps(spec(), indent=1))
        return 0
    if args.cmd in APPS:
        return importlib.import_module(APPS[args.cmd][0]).run(args)
    if args.cmd == "workshop":
        from .workshop.command import run
        return run(args)
    return 2
