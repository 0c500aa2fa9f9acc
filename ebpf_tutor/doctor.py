"""What can this machine do? Every feature is decided by trying it.

    ebpf-tutor doctor          (command line)
    ebpf_tutor.doctor()        (notebook: shows a table)

Each row is ok, missing or warn, with the evidence, and for anything
missing, one specific fix or the reason it cannot be had here.
"""
from __future__ import annotations

import ctypes as ct
import gzip
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

OK, MISSING, WARN = "ok", "missing", "warn"


@dataclass
class Item:
    group: str
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class Report:
    items: list[Item]

    def get(self, name: str) -> Item:
        return next(i for i in self.items if i.name == name)

    def available(self, name: str) -> bool:
        return self.get(name).status == OK

    @property
    def df(self):
        import pandas as pd
        return pd.DataFrame([i.__dict__ for i in self.items])

    def text(self) -> str:
        lines, group = [], None
        mark = {OK: "✔", MISSING: "✘", WARN: "!"}
        for i in self.items:
            if i.group != group:
                group = i.group
                lines.append(f"\n{group}")
            lines.append(f"  {mark[i.status]} {i.name:<22} {i.detail}")
            if i.fix and i.status != OK:
                lines.append(f"    {'':<22} → {i.fix}")
        return "\n".join(lines).lstrip("\n")

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html
        color = {OK: "#2e7d32", MISSING: "#c62828", WARN: "#ef6c00"}
        rows = "".join(
            f"<tr><td>{html.escape(i.group)}</td><td><b>{html.escape(i.name)}</b></td>"
            f"<td style='color:{color[i.status]}'>{i.status}</td>"
            f"<td style='text-align:left'>{html.escape(i.detail)}"
            + (f"<br><i>fix: {html.escape(i.fix)}</i>" if i.fix and i.status != OK else "")
            + "</td></tr>" for i in self.items)
        return ("<table><thead><tr><th>group</th><th>item</th><th>status</th>"
                f"<th style='text-align:left'>detail</th></tr></thead><tbody>{rows}</tbody></table>")


# ------------------------------------------------------------------ system --
def kernel_config() -> dict[str, str]:
    """The running kernel's build options, from /proc/config.gz ({} if absent)."""
    try:
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return {}
    return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M))


CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24,
        "CAP_PERFMON": 38, "CAP_BPF": 39}


def capabilities(which: str = "CapEff", status: str = "/proc/self/status") -> set[str]:
    """Names of the capabilities in the given set of /proc/<pid>/status."""
    text = Path(status).read_text()
    mask = int(re.search(rf"^{which}:\s*([0-9a-f]+)", text, re.M).group(1), 16)
    return {name for name, bit in CAPS.items() if mask >> bit & 1}


def _system_items() -> list[Item]:
    items = []
    rel = platform.release()
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", rel).groups())
    items.append(Item("system", "kernel", OK if (major, minor) >= (5, 8) else WARN,
                      f"{rel} ({platform.machine()})",
                      "the course needs 5.8+ (ring buffers, CAP_BPF): use the course VM"))
    btf = Path("/sys/kernel/btf/vmlinux")
    items.append(Item("system", "BTF", OK if btf.exists() else MISSING,
                      f"{btf} ({btf.stat().st_size // 1024} KiB)" if btf.exists() else "no /sys/kernel/btf/vmlinux",
                      "a kernel built with CONFIG_DEBUG_INFO_BTF=y (any distro kernel since 2020)"))
    cfg = Path("/proc/config.gz")
    items.append(Item("system", "kernel config", OK if cfg.exists() else WARN,
                      str(cfg) if cfg.exists() else "no /proc/config.gz",
                      "needed only to prepare headers from source: install the headers package instead"))
    caps = capabilities()
    need = {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}
    have_all = need <= caps or "CAP_SYS_ADMIN" in caps
    items.append(Item("system", "capabilities", OK if have_all else MISSING,
                      f"effective: {', '.join(sorted(caps)) or 'none'} (uid {os.geteuid()})",
                      "run as root: the 'eBPF (root)' Jupyter kernel, or sudo"))
    if "CAP_SYS_RESOURCE" not in capabilities("CapBnd"):
        items.append(Item("system", "RLIMIT_MEMLOCK", OK,
                          "cannot be raised (no CAP_SYS_RESOURCE), harmless: BPF memory is "
                          "charged to the memory cgroup since 5.11"))
    mounts = Path("/proc/mounts").read_text()
    for fs, where, fix in [
        ("debugfs", "/sys/kernel/debug", "mount -t debugfs debugfs /sys/kernel/debug"),
        ("tracefs", "/sys/kernel/tracing", "mount -t tracefs tracefs /sys/kernel/tracing"),
        ("bpf", "/sys/fs/bpf", "mount -t bpf bpf /sys/fs/bpf"),
        ("cgroup2", "", "mount -t cgroup2 none /sys/fs/cgroup/unified"),
    ]:
        found = [ln.split()[1] for ln in mounts.splitlines() if ln.split()[2] == fs]
        items.append(Item("mounts", fs, OK if found else MISSING,
                          ", ".join(found) if found else f"not mounted{' on ' + where if where else ''}",
                          fix + " (scripts/provision.sh does it)"))
    return items


def _bcc_items() -> list[Item]:
    try:
        from .kernel.bcc_import import bcc_location, bcc_version
    except ImportError as e:
        return [Item("toolchain", "BCC", MISSING, str(e), "apt-get install python3-bpfcc")]
    items = [Item("toolchain", "BCC", OK, f"{'.'.join(map(str, bcc_version()))} at {bcc_location()}")]
    from .kernel import headers
    try:
        st = headers.ensure(log=lambda *_: None, prepare=False)
        items.append(Item("toolchain", "kernel headers", OK, st.summary()))
    except headers.HeadersError as e:
        items.append(Item("toolchain", "kernel headers", MISSING, str(e).splitlines()[0],
                          "run `ebpf-tutor headers` to prepare and verify them"))
    return items


# ---------------------------------------------------------------- features --
def _probe(fn: Callable[[], str]) -> tuple[bool, str]:
    from .errors import BpfError
    try:
        return True, fn()
    except BpfError as e:
        return False, e.summary.splitlines()[0]
    except Exception as e:  # noqa: BLE001 - every failure is a finding here
        return False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _count_after(prog, table: str, action: Callable[[], object]) -> int:
    action()
    return sum(v.value for v in prog[table].values())


def _count_calls(prog, call: Callable[[], object], what: str, times: int = 3) -> int:
    """Make `times` calls and return what map `n` counted meanwhile; fail
    unless it counted all of them (`what` names them in the error)."""
    hits = _count_after(prog, "n", lambda: [call() for _ in range(times)])
    if hits < times:
        raise RuntimeError(f"attached, but counted {hits}/{times} {what}")
    return hits


def probe_tracepoint() -> str:
    from .program import Program
    with Program("BPF_ARRAY(n, u64, 1);\nTRACEPOINT_PROBE(syscalls, sys_enter_getppid)"
                 " { n.increment(0); return 0; }") as p:
        hits = _count_calls(p, os.getppid, "getppid() calls")
    return f"syscalls:sys_enter_getppid attached, counted {hits} calls"


def probe_raw_tracepoint() -> str:
    from .program import Program
    with Program("BPF_ARRAY(n, u64, 1);\nRAW_TRACEPOINT_PROBE(sys_enter)"
                 " { n.increment(0); return 0; }") as p:
        hits = _count_calls(p, os.getppid, "syscalls")
    return f"raw_tracepoint sys_enter attached, counted {hits} syscalls"


def probe_kprobe() -> str:
    from .program import Program
    with Program("BPF_ARRAY(n, u64, 1);\nint on_call(void *ctx) { n.increment(0); return 0; }") as p:
        p.attach_kprobe(event=p.get_syscall_fnname("getppid"), fn_name="on_call")
        hits = _count_calls(p, os.getppid, "getppid() calls")
    return f"kprobe on {'getppid'} attached, counted {hits} calls"


def probe_fentry() -> str:
    from .program import Program
    with Program("BPF_ARRAY(n, u64, 1);\nKFUNC_PROBE(do_nanosleep) { n.increment(0); return 0; }") as p:
        hits = _count_after(p, "n", lambda: time.sleep(0.001))
    return f"fentry on do_nanosleep attached, counted {hits} calls"


def probe_lsm() -> str:
    lsm = Path("/sys/kernel/security/lsm")
    if lsm.exists() and "bpf" not in lsm.read_text():
        raise RuntimeError(f"'bpf' is not in the active LSMs ({lsm.read_text().strip()})")
    from .program import Program
    with Program("struct file;\nBPF_ARRAY(n, u64, 1);\n"
                 "LSM_PROBE(file_open, struct file *file) { n.increment(0); return 0; }") as p:
        hits = _count_after(p, "n", lambda: open("/proc/self/stat").close())
    return f"lsm/file_open attached, counted {hits} opens"


def probe_uprobe() -> str:
    from .kernel.bcc_import import BPF
    from .program import Program
    libc = BPF.find_library("c").decode()
    with Program("BPF_ARRAY(n, u64, 1);\nint on_call(void *ctx) { n.increment(0); return 0; }") as p:
        p.attach_uprobe(name=libc, sym="getpid", fn_name="on_call", pid=os.getpid())
        getpid = ct.CDLL(libc).getpid
        hits = _count_calls(p, getpid, "getpid() calls")
    return f"uprobe on libc getpid attached, counted {hits} calls"


def probe_ringbuf() -> str:
    from .program import Program
    src = ("BPF_RINGBUF_OUTPUT(events, 1);\nTRACEPOINT_PROBE(syscalls, sys_enter_getppid) {\n"
           "  u32 pid = bpf_get_current_pid_tgid() >> 32;\n"
           "  events.ringbuf_output(&pid, sizeof(pid), 0); return 0; }")
    got: list[int] = []
    with Program(src) as p:
        p["events"].open_ring_buffer(lambda _c, data, _s: got.append(ct.cast(data, ct.POINTER(ct.c_uint32))[0]))
        os.getppid()
        p.ring_buffer_poll(100)
    if os.getpid() not in got:
        raise RuntimeError("no event from our own pid came through the ring buffer")
    return f"ring buffer delivered {len(got)} event(s), ours among them"


def probe_perf_sampling() -> str:
    from .kernel.bcc_import import bcc
    from .program import Program
    with Program("BPF_ARRAY(n, u64, 1);\nint on_sample(void *ctx) { n.increment(0); return 0; }") as p:
        p.attach_perf_event(ev_type=bcc.PerfType.SOFTWARE, ev_config=bcc.PerfSWConfig.CPU_CLOCK,
                            fn_name="on_sample", sample_freq=99)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass
        hits = sum(v.value for v in p["n"].values())
    if hits == 0:
        raise RuntimeError("attached, but no samples arrived in 0.3 s of busy loop")
    return f"99 Hz cpu-clock sampling: {hits} samples in 0.3 s"


XDP_TC_SRC = """
int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }
int tc_pass(struct __sk_buff *skb) { return 0; }
"""


def probe_xdp() -> str:
    from .sandbox.net import VethPair, inside
    from .program import Program
    with VethPair() as lab, Program(XDP_TC_SRC) as p:
        fn = p.load_func("xdp_pass", p.XDP)
        with inside(lab.ns["a"]):
            p.attach_xdp(lab.ifname["a"], fn, 0)
            p.remove_xdp(lab.ifname["a"], 0)
    return "attached to a veth in a private netns (native mode)"


def probe_tc() -> str:
    from pyroute2 import NetNS

    from .sandbox.net import VethPair, netlink
    from .program import Program

    def attach(ns_name: str, ifname: str, fd: int, name: str) -> None:
        with NetNS(ns_name) as n:
            idx = n.link_lookup(ifname=ifname)[0]
            n.tc("add", "clsact", idx)
            n.tc("add-filter", "bpf", idx, ":1", fd=fd, name=name, parent="ffff:fff3",
                 classid=1, direct_action=True)

    with VethPair() as lab, Program(XDP_TC_SRC) as p:
        fn = p.load_func("tc_pass", p.SCHED_CLS)
        netlink(attach, lab.ns["a"], lab.ifname["a"], fn.fd, fn.name)
    return "clsact egress filter attached to a veth in a private netns"


def probe_cgroup() -> str:
    from .kernel.bcc_import import bcc
    from .sandbox.cgroup import ScratchCgroup
    from .program import Program
    with ScratchCgroup("doctor") as cg, \
            Program("int allow(struct __sk_buff *skb) { return 1; }") as p:
        fn = p.load_func("allow", p.CGROUP_SKB)
        p.attach_func(fn, cg.fd(), bcc.BPFAttachType.CGROUP_INET_EGRESS)
        p.detach_func(fn, cg.fd(), bcc.BPFAttachType.CGROUP_INET_EGRESS)
    return "cgroup_skb egress attached to a scratch cgroup"


def _reason(name: str, cfg: dict[str, str]) -> str:
    """Why a feature is missing, and the fix, from what we can see."""
    if name == "kprobes" and cfg and cfg.get("CONFIG_KPROBES") != "y":
        return "this kernel is built without CONFIG_KPROBES: use tracepoints here, or the course VM"
    if name in ("fentry", "LSM") and cfg.get("CONFIG_FUNCTION_TRACER") == "y":
        try:
            Path("/sys/kernel/tracing/available_filter_functions").open().close()
        except PermissionError:
            return ("the kernel refuses ftrace function hooks (EPERM, even for root), which "
                    "fentry and LSM programs need: run this chapter in the course VM")
        except OSError:
            pass
    if name == "LSM":
        return "boot with `lsm=...,bpf` (CONFIG_BPF_LSM=y), or use the course VM"
    if name == "fentry":
        return "needs CONFIG_DEBUG_INFO_BTF and CONFIG_FUNCTION_TRACER (5.5+): use the course VM"
    return "see the detail above; docs in README.md, section 'What the doctor reports'"


FEATURES: list[tuple[str, Callable[[], str]]] = [
    ("tracepoints", probe_tracepoint),
    ("raw tracepoints", probe_raw_tracepoint),
    ("kprobes", probe_kprobe),
    ("fentry", probe_fentry),
    ("LSM", probe_lsm),
    ("uprobes", probe_uprobe),
    ("XDP", probe_xdp),
    ("TC", probe_tc),
    ("cgroup programs", probe_cgroup),
    ("ring buffer", probe_ringbuf),
    ("perf sampling", probe_perf_sampling),
]


def _feature_items() -> list[Item]:
    if os.geteuid() != 0:
        return [Item("features", name, MISSING, "not tried: not root", "run the doctor as root")
                for name, _ in FEATURES]
    cfg = kernel_config()
    return [feature_item(name, cfg) for name, _ in FEATURES]


def feature_item(name: str, cfg: dict[str, str] | None = None) -> Item:
    """Try one feature of FEATURES by attaching a real program: what happened,
    and the fix when it is missing. `cfg` is kernel_config(), read if not given."""
    ok, detail = _probe(dict(FEATURES)[name])
    if ok:
        return Item("features", name, OK, detail)
    return Item("features", name, MISSING, detail,
                _reason(name, kernel_config() if cfg is None else cfg))


def doctor(features: bool = True) -> Report:
    """Check this machine for the course; see the module docstring."""
    items = _system_items() + _bcc_items()
    if features:
        items += _feature_items()
    return Report(items)
