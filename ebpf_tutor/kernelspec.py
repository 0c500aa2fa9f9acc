"""The "eBPF (root)" Jupyter kernel: BPF needs root, JupyterLab need not.

As root the kernel is the venv's Python itself; otherwise it is started with
`sudo -n`; the sudoers rule that provisioning writes keeps JPY_PARENT_PID (env_keep) so that a killed server does not leave an
orphan root kernel behind (ipykernel exits when its parent does).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

NAME = "ebpf-root"
DISPLAY_NAME = "eBPF (root)"
LAUNCH = ('if [ "$(id -u)" = 0 ]; then exec "$0" -m ipykernel_launcher "$@"; '
          'else exec sudo -n "$0" -m ipykernel_launcher "$@"; fi')


def spec(python: str = sys.executable) -> dict:
    return {
        "argv": ["/bin/sh", "-c", LAUNCH, python, "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "interrupt_mode": "message",   # a signal from the non-root server could not reach it
        "metadata": {"debugger": True},
    }


def install(prefix: str = sys.prefix) -> Path:
    """Write the kernelspec into <prefix>/share/jupyter/kernels/ebpf-root."""
    d = Path(prefix, "share/jupyter/kernels", NAME)
    d.mkdir(parents=True, exist_ok=True)
    (d / "kernel.json").write_text(json.dumps(spec(), indent=1) + "\n")
    return d
