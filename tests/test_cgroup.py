"""The scratch cgroup: processes start inside, programs attach only to it,
and everything (attachments, processes, directories) is released on success,
on error and on interrupt."""
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import bpf_prog_ids, needs_root

DENY_EGRESS = "int deny_all(struct __sk_buff *skb) { return 0; }\n" \
              "int allow_all(struct __sk_buff *skb) { return 1; }\n"
SEND = ("import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "try:\n    s.sendto(b'x', ('127.0.0.1', int(sys.argv[1]))); print('sent')\n"
        "except OSError as e:\n    print(e.errno)\n")


def test_hook_table_matches_bcc():
    from ebpf_tutor.kernel.bcc_import import BPF, bcc
    from ebpf_tutor.sandbox.cgroup import HOOKS
    at = bcc.BPFAttachType
    assert HOOKS["ingress"][:2] == (BPF.CGROUP_SKB, at.CGROUP_INET_INGRESS)
    assert HOOKS["egress"][:2] == (BPF.CGROUP_SKB, at.CGROUP_INET_EGRESS)
    assert HOOKS["connect4"][:2] == (BPF.CGROUP_SOCK_ADDR, at.CGROUP_INET4_CONNECT)
    assert HOOKS["bind4"][:2] == (BPF.CGROUP_SOCK_ADDR, at.CGROUP_INET4_BIND)
    assert HOOKS["device"][:2] == (BPF.CGROUP_DEVICE, at.CGROUP_DEVICE)
    assert HOOKS["sysctl"][1] == at.CGROUP_SYSCTL
    assert HOOKS["sysctl"][0] == 23          # BPF_PROG_TYPE_CGROUP_SYSCTL, unnamed in BCC 0.26


@needs_root
def test_names_place_and_id():
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup, base_dir, cgroup_of
    with ScratchCgroup("t") as cg:
        assert cg.path.parent == base_dir()
        assert cg.path.name.startswith(f"{os.getpid()}-") and cg.path.name.endswith("-t")
        kid = cg.child("kid")
        assert kid.path.parent == cg.path
        assert cg.id == os.stat(cg.path).st_ino
        p = kid.spawn(["sleep", "5"])
        assert cgroup_of(p.pid) == kid.path
        assert kid.pids() == [p.pid]
        assert cgroup_of() != kid.path             # we stayed outside
        assert kid.cpu_usage_us() >= 0 and cg.cpu_usage_us() >= kid.cpu_usage_us()
    assert not cg.path.exists() and p.returncode == -9


@needs_root
def test_process_is_inside_from_its_first_instruction():
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    with ScratchCgroup("first") as cg:
        # /proc/self/cgroup read by the very program that was exec'd
        r = cg.run(["cat", "/proc/self/cgroup"])
        assert f"0::/ebpf-tutor/{cg.name}" in r.stdout
        r = cg.run(["sh", "-c", "cat; echo $$"], input="hello\n")
        assert r.stdout.startswith("hello\n")


@needs_root
def test_close_kills_what_still_runs_and_reaps_it():
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    with ScratchCgroup("kill") as cg:
        p = cg.spawn(["sh", "-c", "sleep 300 & sleep 300"])     # a child and a grandchild
        deadline = time.monotonic() + 5
        while len(cg.pids()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        inside = cg.pids()
    assert p.returncode == -9
    assert not cg.path.exists()
    assert not any(os.path.exists(f"/proc/{pid}/cmdline") and
                   open(f"/proc/{pid}/cmdline").read().startswith("sleep") for pid in inside)


def _udp_sink():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


@needs_root
def test_enforcement_inside_only_and_detached_at_close():
    from ebpf_tutor import Program
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    sink = _udp_sink()
    argv = [sys.executable, "-c", SEND, str(sink.getsockname()[1])]
    try:
        with ScratchCgroup("deny") as cg, Program(DENY_EGRESS) as prog:
            a = cg.attach(prog, "deny_all", "egress")
            assert [h for h, _, n in cg.programs()] == ["egress"]
            ids = [i for _, i, _ in cg.programs()]
            assert cg.run(argv).stdout.strip() == "1"                        # EPERM inside
            assert subprocess.run(argv, capture_output=True, text=True).stdout.strip() == "sent"
            a.detach()
            assert cg.programs() == []
            assert cg.run(argv).stdout.strip() == "sent"                     # allowed again
    finally:
        sink.close()
    assert not ids[0] in bpf_prog_ids()


@needs_root
def test_refuses_foreign_cgroups_unless_overridden():
    from ebpf_tutor import Program
    from ebpf_tutor.sandbox.cgroup import NotOurCgroup, ScratchCgroup, attach_func, base_dir, cgroup2_root
    foreign = base_dir() / f"{os.getpid()}-foreign"
    with Program(DENY_EGRESS) as prog:
        fn = prog.load_func("allow_all", prog.CGROUP_SKB)
        for path in (cgroup2_root(), base_dir(), foreign):
            with pytest.raises(NotOurCgroup, match="not a scratch cgroup"):
                attach_func(fn, path, 1)
        foreign.mkdir(parents=True)
        try:
            with attach_func(fn, foreign, 1, allow_foreign=True) as a:   # the explicit override
                assert a.attached
            assert not a.attached
        finally:
            foreign.rmdir()
        with ScratchCgroup("ok") as cg:
            a = attach_func(fn, cg.path, 1)      # a scratch cgroup, given by path: fine
            a.detach()
        with pytest.raises(NotOurCgroup):
            cg.attach_func(fn, 1)                 # closed: refused


@needs_root
@pytest.mark.parametrize("how", ["error", "interrupt"])
def test_everything_released_on_error_and_interrupt(how):
    from ebpf_tutor import Program
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    exc = RuntimeError if how == "error" else KeyboardInterrupt
    with pytest.raises(exc):
        with ScratchCgroup(how) as cg, Program(DENY_EGRESS) as prog:
            kid = cg.child("kid")
            cg.attach(prog, "deny_all", "egress")
            kid.attach(prog, "allow_all", "ingress")
            p = kid.spawn(["sleep", "300"])
            ids = [i for _, i, _ in kid.programs(effective=True)]
            assert len(ids) == 2
            raise exc("boom")
    assert not cg.path.exists() and p.returncode == -9
    assert not set(ids) & bpf_prog_ids()


@needs_root
def test_untracked_attachment_detached_and_attachment_outlives_program():
    from ebpf_tutor import Program
    from ebpf_tutor.kernel.bcc_import import BPF
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    with ScratchCgroup("raw") as cg:
        prog = Program(DENY_EGRESS)
        fn = prog.load_func("deny_all", BPF.CGROUP_SKB)
        BPF.attach_func(fn, cg.fd(), 1, 2)                   # plain BCC: cg does not know
        a = cg.attach(prog, "allow_all", "egress")
        prog.close()                                         # the attachment keeps its own fd
        ids = [i for _, i, _ in cg.programs()]
        assert len(ids) == 2 and set(ids) <= bpf_prog_ids()
    assert not a.attached
    assert not set(ids) & bpf_prog_ids()


@needs_root
def test_unknown_hook_and_wrong_type_explained():
    from ebpf_tutor import AttachError, Program
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    with ScratchCgroup("bad") as cg, Program(DENY_EGRESS) as prog:
        with pytest.raises(ValueError, match="unknown cgroup hook"):
            cg.attach(prog, "deny_all", "egres")
        fn = prog.load_func("deny_all", prog.CGROUP_SKB)
        with pytest.raises(AttachError, match="device") as e:
            cg.attach_func(fn, 6)                     # a skb program on the device hook
        assert "program type" in e.value.hint


@needs_root
def test_sweep_releases_a_killed_runs_attached_cgroup():
    import textwrap

    from ebpf_tutor.sandbox.sweep import sweep
    code = textwrap.dedent(f"""
        import time
        from ebpf_tutor import Program
        from ebpf_tutor.sandbox.cgroup import ScratchCgroup
        cg = ScratchCgroup("killed").__enter__()
        prog = Program({DENY_EGRESS!r})
        cg.attach(prog, "deny_all", "egress")
        print(cg.path, [i for _, i, _ in cg.programs()][0], flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    path, prog_id = child.stdout.readline().split()
    child.kill()
    child.wait()
    assert os.path.isdir(path)
    removed = sweep()
    assert any(path in r for r in removed)
    assert not os.path.exists(path)
    for _ in range(50):                       # the kernel frees the program asynchronously
        if int(prog_id) not in bpf_prog_ids():
            break
        time.sleep(0.1)
    assert int(prog_id) not in bpf_prog_ids()
