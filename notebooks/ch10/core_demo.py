"""Load procinfo.bpf.o, an object compiled once against kernel 6.18's
vmlinux.h, on whatever kernel runs this, and show what CO-RE did:

1. `bpftool -d prog load`'s relocation lines (libbpf's debug log): for each
   field, the offset clang wrote (6.18's) and the one libbpf patched in;
2. the same load through ebpf_tutor's BPFObject, attached to a tracepoint,
   and the values it read about this process, compared with /proc.

    python notebooks/ch10/core_demo.py          # on the host, or in the course VM
"""
from __future__ import annotations

import ctypes as ct
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
OBJECT = HERE / "procinfo.bpf.o"

from ebpf_tutor.bpfobject import BPFObject  # noqa: E402


def bpftool_relocations(obj: Path = OBJECT) -> list[str]:
    """`bpftool -d prog load` the object, keep the lines where libbpf patched
    an offset, and unpin (which unloads it)."""
    pin = Path(f"/sys/fs/bpf/ebt-{os.getpid()}-core-demo")
    r = subprocess.run(["bpftool", "-d", "prog", "load", str(obj), str(pin)],
                       capture_output=True, text=True)
    pin.unlink(missing_ok=True)
    if r.returncode != 0:
        return [f"bpftool failed: {r.stderr.strip().splitlines()[-1:]}"]
    return [ln.replace("libbpf: prog 'on_getppid': ", "") for ln in r.stderr.splitlines()
            if "patched insn" in ln]


def read_with_core(obj: Path = OBJECT) -> dict[str, object]:
    """Load with BPFObject, make one getppid() call, return what BPF read
    and the offsets libbpf chose (field -> (offset in the .o, offset here))."""
    with BPFObject(obj, name="procinfo", load=False) as bpf:
        bpf.set_global("target_tgid", os.getpid())
        bpf.load()
        bpf.attach("on_getppid")
        os.getppid()
        got = {k: bpf.get_global(k, ct.c_uint32) for k in ("seen_pid", "seen_ppid", "calls")}
        got["seen_comm"] = bpf.get_global("seen_comm").split(b"\0")[0].decode()
        offsets = {}
        for ln in bpf.relocations():
            m = re.search(r"relo #(\d+): (matching candidate #\d+ )?<byte_off> \[\d+\] "
                          r"struct task_struct\.(\w+) \(\S+ @ offset (\d+)\)", ln)
            if m:
                before, after = offsets.get(m.group(3), (None, None))
                off = int(m.group(4))
                offsets[m.group(3)] = (off, after) if not m.group(2) else (before, off)
        got["offsets"] = offsets
    return got


def main() -> int:
    print(f"kernel {platform.release()}")
    print("bpftool -d prog load, lines with a patched offset:")
    for ln in bpftool_relocations():
        print("  " + ln)
    got = read_with_core()
    for field, (built, here) in sorted(got["offsets"].items()):
        print(f"  task_struct.{field:12s} offset in the .o {built:5d}  -> on this kernel {here:5d}")
    comm = Path("/proc/self/comm").read_text().strip()
    truth = {"seen_pid": os.getpid(), "seen_ppid": os.getppid(), "seen_comm": comm}
    ok = all(got[k] == v for k, v in truth.items())
    print(f"BPF read pid={got['seen_pid']} ppid={got['seen_ppid']} comm={got['seen_comm']!r}; "
          f"/proc says pid={truth['seen_pid']} ppid={truth['seen_ppid']} comm={comm!r}: "
          f"{'all equal' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
