"""The standard tools (clang, ip, tc, bpftool) run from a notebook as a learner
would type them, so each chapter can be reproduced outside the course."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable


def shell(cmd: str, cwd: Path | str | None = None, **shown_as: object) -> str:
    """Run one shell command; print it, with the sandbox's random names and
    long paths shown as <placeholders> (`shown_as`: placeholder=real text),
    print its output if it fails, and return its standard output."""
    shown = cmd
    for placeholder, real in shown_as.items():
        shown = shown.replace(str(real), f"<{placeholder}>")
    print("$", shown)
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=cwd)
    if r.returncode:
        print(r.stdout + r.stderr)
    return r.stdout


def shell_in(workdir: Path | str) -> Callable[..., str]:
    """`shell` with its working directory fixed to `workdir`."""
    def run(cmd: str, **shown_as: object) -> str:
        return shell(cmd, cwd=workdir, **shown_as)
    return run
