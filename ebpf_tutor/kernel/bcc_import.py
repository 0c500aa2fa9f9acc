"""Import BCC wherever it was installed.

BCC's Python module comes from the distribution (Debian: python3-bpfcc) and
lives in the system's dist-packages, which a venv or conda environment does
not see. The provisioning script links it into the course venv; this module
also finds it by itself, so `ebpf_tutor` works from any Python 3.
"""
from __future__ import annotations

import glob
import sys

SYSTEM_DIRS = ["/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages",
               "/usr/local/lib/python3*/dist-packages"]


def _import_bcc():
    try:
        import bcc  # noqa: F401
        return bcc
    except ImportError:
        pass
    for pattern in SYSTEM_DIRS:
        for d in glob.glob(pattern):
            if glob.glob(d + "/bcc/__init__.py"):
                sys.path.append(d)
                import bcc  # noqa: F401
                return bcc
    raise ImportError("BCC's Python module is not installed: on Debian/Ubuntu run "
                      "`apt-get install python3-bpfcc` (scripts/provision.sh does it)")


bcc = _import_bcc()
BPF = bcc.BPF


def bcc_version() -> tuple[int, ...]:
    """BCC's version as a tuple, e.g. (0, 26, 0)."""
    parts = []
    for p in getattr(bcc, "__version__", "0").split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def bcc_location() -> str:
    return bcc.__file__.rsplit("/", 1)[0]
