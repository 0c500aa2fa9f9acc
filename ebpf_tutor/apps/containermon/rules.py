"""Detection rules: events (dicts from `monitor`) in, alerts out.

Each rule is a plain function of one event and the rule settings, so a
notebook can show it whole; the CPU rule works on samples instead
(`CpuWatch`). Names follow Falco's default rules where one matches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

SHELLS = ("sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "fish", "busybox")

# unshare(2) flags that make a new namespace (<linux/sched.h>)
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
NS_FLAGS = {0x00020000: "mnt", 0x02000000: "cgroup", 0x04000000: "uts", 0x08000000: "ipc",
            0x10000000: "user", 0x20000000: "pid", 0x40000000: "net", 0x00000080: "time"}


@dataclass
class Settings:
    shells: tuple[str, ...] = SHELLS
    etc_prefixes: tuple[str, ...] = ("/etc/",)      # container's view of the path
    cpu_share: float = 0.8                          # of one CPU...
    cpu_seconds: float = 2.0                        # ...for this long = a miner
    enforce_shell_kill: bool = False                # SIGKILL shells (in the kernel)
    deny_ports: tuple[int, ...] = ()                # connect4 refusals


@dataclass
class Alert:
    rule: str
    container: str
    pid: int
    comm: str
    detail: str

    def record(self) -> dict:
        return {"rule": self.rule, "container": self.container, "pid": self.pid,
                "comm": self.comm, "detail": self.detail}


def ns_names(flags: int) -> str:
    names = [n for bit, n in NS_FLAGS.items() if flags & bit]
    return ",".join(names) or hex(flags)


def check(ev: dict, s: Settings) -> Alert | None:
    """The alert one event raises, if any."""
    kind, ctr, pid, comm = ev["kind"], ev["container"], ev["pid"], ev["comm"]
    if kind == "exec" and os.path.basename(ev["path"]) in s.shells:
        return Alert("terminal shell in container", ctr, pid, comm, ev["path"])
    if kind == "killed":
        return Alert("shell killed (enforce)", ctr, pid, comm, ev["path"])
    if kind == "open_w" and ev["path"].startswith(s.etc_prefixes):
        return Alert("write below etc", ctr, pid, comm, ev["path"])
    if kind == "dup_sock":
        return Alert("reverse shell (socket on stdin/stdout)", ctr, pid, comm,
                     f"fd {ev['oldfd']} -> {ev['newfd']}")
    if kind == "unshare":
        return Alert("namespace change (escape attempt)", ctr, pid, comm,
                     f"unshare({ns_names(ev['flags'])})")
    if kind == "setns":
        return Alert("namespace change (escape attempt)", ctr, pid, comm, f"setns(fd {ev['fd']})")
    if kind == "mount":
        return Alert("mount in container (escape attempt)", ctr, pid, comm, ev["path"])
    return None


@dataclass
class CpuWatch:
    """Flags a process that keeps `share` of a CPU for `seconds` (a miner).

    `sample(t, totals)` takes the time and {(container, pid, comm): CPU ns so
    far}; a process is flagged once, when its CPU time over the last
    `seconds` reaches share * seconds."""
    share: float = 0.8
    seconds: float = 2.0
    history: dict = field(default_factory=dict)
    flagged: set = field(default_factory=set)

    def sample(self, t: float, totals: dict) -> list[Alert]:
        alerts = []
        for key, ns in totals.items():
            hist = self.history.setdefault(key, [])
            hist.append((t, ns))
            while len(hist) > 2 and t - hist[1][0] >= self.seconds:
                hist.pop(0)           # keep one sample at least `seconds` old
            t0, ns0 = hist[0]
            span = t - t0
            if key in self.flagged or span < self.seconds:
                continue
            share = (ns - ns0) / 1e9 / span
            if share >= self.share:
                self.flagged.add(key)
                ctr, pid, comm = key
                alerts.append(Alert("cryptominer-like CPU burn", ctr, pid, comm,
                                    f"{share:.0%} of a CPU for {span:.1f} s"))
        for key in set(self.history) - set(totals):
            del self.history[key]
        return alerts
