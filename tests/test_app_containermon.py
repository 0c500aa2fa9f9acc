"""Chapter 17's monitor (ebpf_tutor/apps/containermon): containers made of
namespaces and a scratch cgroup, events keyed by cgroup id against host
decoys, each scripted incident against its rule (benign work raises none),
in-kernel enforcement, and the command line (`python -m ebpf_tutor
containermon ... --json`)."""
import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT, needs_root

from ebpf_tutor.apps.containermon import incidents, rules
from ebpf_tutor.apps.containermon.rules import Alert, CpuWatch, Settings


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ebpf_tutor", "containermon", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# ------------------------------------------------------------ no kernel --
def ev(kind, **kw):
    return {"kind": kind, "container": "c", "pid": 7, "comm": "x", **kw}


def test_rules_on_events():
    s = Settings()
    assert rules.check(ev("exec", path="/usr/bin/bash"), s).rule == "terminal shell in container"
    assert rules.check(ev("exec", path="/usr/bin/ls"), s) is None
    assert rules.check(ev("exec", path="/opt/bashful"), s) is None
    assert rules.check(ev("open_w", path="/etc/passwd", flags=1), s).rule == "write below etc"
    assert rules.check(ev("open_w", path="/etcetera/x", flags=1), s) is None
    assert rules.check(ev("open_w", path="/tmp/x", flags=1), s) is None
    a = rules.check(ev("unshare", flags=rules.CLONE_NEWUSER | rules.CLONE_NEWNS), s)
    assert a.detail == "unshare(mnt,user)"
    assert rules.check(ev("connect", addr="127.0.0.1", port=80), s) is None


def test_cpu_watch_needs_the_whole_window():
    w = CpuWatch(share=0.8, seconds=2.0)
    key = ("c", 1, "burn")
    assert w.sample(0.0, {key: 0}) == []
    assert w.sample(1.0, {key: int(1e9)}) == []             # only 1 s seen
    alerts = w.sample(2.0, {key: int(2e9)})
    assert [a.rule for a in alerts] == ["cryptominer-like CPU burn"]
    assert w.sample(3.0, {key: int(3e9)}) == []             # flagged once
    short = ("c", 2, "short")
    assert w.sample(4.0, {short: 0}) == [] and w.sample(6.0, {short: int(0.5e9)}) == []


def test_help_and_usage_errors():
    r = cli("--help")
    assert r.returncode == 0 and "--enforce-shell" in r.stdout and "--demo" in r.stdout
    assert cli().returncode == 2
    assert cli("--run").returncode == 2
    r = cli("--cgroup", "/sys/fs/cgroup", "--enforce-shell")
    assert r.returncode == 2 and "enforcement" in r.stderr


# ------------------------------------------------------------ the kernel --
@pytest.fixture
def monitor():
    from ebpf_tutor.apps.containermon.monitor import Monitor
    with Monitor(Settings(cpu_seconds=1.0)) as mon:
        yield mon


@needs_root
def test_exec_events_per_container_and_no_host_decoys(monitor):
    from ebpf_tutor.sandbox.container import Container
    marker = f"cm{uuid.uuid4().hex[:8]}"
    with Container("a") as a, Container("b") as b:
        assert a.cgroup_id != b.cgroup_id and a.pidns != b.pidns
        assert a.pidns != os.stat("/proc/self/ns/pid").st_ino
        monitor.watch(a)
        monitor.watch(b)
        os.symlink("/usr/bin/true", f"/tmp/{marker}")
        try:
            for _ in range(3):
                subprocess.run([f"/tmp/{marker}"], check=True)          # host decoy
            assert a.run([f"/tmp/{marker}"]).rc == 0
            for _ in range(2):
                assert b.run([f"/tmp/{marker}"]).rc == 0
            assert a.run(["sh", "-c", "echo $$"]).out.strip() != ""     # pid in its own ns
        finally:
            os.unlink(f"/tmp/{marker}")
        monitor.settle()
        execs = [e for e in monitor.events if e["kind"] == "exec" and e["path"].endswith(marker)]
        assert sorted(e["container"] for e in execs) == ["a", "b", "b"]
        assert {e["cgroup"] for e in execs if e["container"] == "a"} == {a.cgroup_id}
        assert monitor.pidns == {"a": a.pidns, "b": b.pidns}
        cg = a.cgroup.path
    assert not cg.exists()                       # removed at the end of the with


@needs_root
def test_each_incident_raises_its_rule_and_benign_work_none(monitor):
    from ebpf_tutor.sandbox.container import Container
    with Container("web") as web, Container("pwned") as bad:
        monitor.watch(web)
        monitor.watch(bad)
        assert all(r.rc == 0 for r in incidents.benign(web))
        for name, fn in incidents.INCIDENTS.items():
            r = fn(bad, 1.8) if name == "miner" else fn(bad)
            assert r.rc == 0, (name, r.err)
        monitor.settle(quiet=0.6)
        assert monitor.alerts_for("web") == []
        raised = {a.rule for a in monitor.alerts_for("pwned")}
        assert set(incidents.EXPECTED.values()) <= raised
    assert not os.path.exists("/etc/cron.hourly-backdoor")   # the container's /etc is a copy


@needs_root
def test_enforcement_kills_shells_and_refuses_a_port():
    from ebpf_tutor.sandbox.container import Container
    from ebpf_tutor.apps.containermon.monitor import Monitor
    connect = ("import socket, sys\ns = socket.socket(); s.settimeout(2)\n"
               "try: s.connect(('127.0.0.1', int(sys.argv[1])))\nexcept OSError as e: print(e.errno)")
    with Monitor(Settings(enforce_shell_kill=True, deny_ports=(4444,))) as mon, \
            Container("x") as c:
        mon.watch(c)
        shell = incidents.shell(c)
        assert c.run(["ls", "/"]).rc == 0
        assert c.run([incidents.PY, "-I", "-c", connect, "4444"]).out.strip() == "1"    # EPERM
        assert c.run([incidents.PY, "-I", "-c", connect, "4445"]).out.strip() == "111"  # ECONNREFUSED
        host = subprocess.run(["sh", "-c", "echo alive"], capture_output=True, text=True)
        assert host.stdout == "alive\n"          # the host's shells are not the policy's
        mon.settle()
        assert mon.refused() == {4444: 1}
        if mon.lsm is not None:                  # BPF LSM (the course VM): refused at exec
            assert shell.rc == 127 and mon.lsm_refusals() == {"x": 1} and mon.alerts == []
        else:
            assert shell.rc == -9
            assert [a.rule for a in mon.alerts] == ["shell killed (enforce)"]


@needs_root
def test_cli_demo_json():
    r = cli("--demo", "--incident", "shell", "--incident", "reverse-shell", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rules_seen = {(a["container"], a["rule"]) for a in out["alerts"]}
    assert ("pwned", "terminal shell in container") in rules_seen
    assert ("pwned", "reverse shell (socket on stdin/stdout)") in rules_seen
    assert not any(c == "web" for c, _ in rules_seen)
    assert out["results"]["benign"] == [0] * 5
    r = cli("--run", "--json", "--", "sh", "-c", "echo x > /etc/cm-test")
    assert r.returncode == 0
    assert {a["rule"] for a in json.loads(r.stdout)["alerts"]} == {
        "terminal shell in container", "write below etc"}
    assert not os.path.exists("/etc/cm-test")


@needs_root
def test_enforce_shell_uses_lsm_where_it_works_else_says_so():
    """With BPF LSM (the course VM) a shell's exec fails with EPERM and the
    shell never starts; elsewhere one line says the signal kill is used."""
    from ebpf_tutor import features
    from ebpf_tutor.apps.containermon.monitor import Monitor
    from ebpf_tutor.sandbox.container import Container
    with Monitor(Settings(enforce_shell_kill=True)) as mon, Container("x") as c:
        mon.watch(c)
        r = incidents.shell(c)
        assert c.run(["ls", "/"]).rc == 0
        mon.settle()
        if features.available("lsm"):
            assert mon.lsm is not None and mon.lsm_note == ""
            assert r.rc == 127 and "Operation not permitted" in r.err   # execve: EPERM
            assert mon.lsm_refusals() == {"x": 1}
            assert not [a for a in mon.alerts if a.rule == "shell killed (enforce)"]
        else:
            assert mon.lsm is None and mon.lsm_note.startswith("BPF LSM: not available")
            assert "\n" not in mon.lsm_note
            assert r.rc == -9 and mon.lsm_refusals() == {}


@needs_root
def test_cli_watches_an_existing_cgroup():
    """--cgroup PATH: events of a cgroup made elsewhere (here a scratch one),
    for --duration seconds; a process outside it is not reported."""
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    with ScratchCgroup("watched") as cg:
        p = subprocess.Popen([sys.executable, "-m", "ebpf_tutor", "containermon", "--cgroup",
                              str(cg.path), "--duration", "2", "--json"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stderr.readline().startswith("watching")       # attached
        assert cg.run(["sh", "-c", "true"]).returncode == 0
        subprocess.run(["sh", "-c", "true"], check=True)       # outside: not reported
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    doc = json.loads(out)
    assert [(a["container"], a["rule"]) for a in doc["alerts"]] == [
        (cg.path.name, "terminal shell in container")]
