"""sandbox.attempts: each action in its own child of one fresh process, inside
a scratch cgroup or outside, and one plain result string per action."""
import shutil
import signal
import socket

from tests.conftest import needs_root


def test_results_outside(tmp_path):
    from ebpf_tutor.sandbox.attempts import allowed, attempts
    (tmp_path / "f").write_text("first line\nsecond\n")
    tool = tmp_path / "tool"
    shutil.copy("/bin/echo", tool)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.socket() as free:           # bound, never listening: refused
            free.bind(("127.0.0.1", 0))
            closed = free.getsockname()[1]
            got = attempts([("read", str(tmp_path / "f")), ("read", str(tmp_path / "none")),
                            ("run", str(tool), "hi"), ("connect", port), ("connect", closed)])
    assert got == ["read: first line", "ENOENT", "ran: hi", "connected", "ECONNREFUSED"]
    assert [allowed(g) for g in got] == [True, False, True, True, False]


def test_a_killed_action_stops_only_itself(tmp_path):
    """A child that dies of a signal is reported as such; the next action runs.
    SIGTERM is ignored by the probe and what it runs, SIGKILL is not."""
    from ebpf_tutor.sandbox.attempts import attempts
    script = tmp_path / "selfkill"
    script.write_text("#!/bin/sh\nkill -TERM $$\nkill -KILL $$\n")
    script.chmod(0o755)
    got = attempts([("run", str(script), "x"), ("run", "/bin/echo", "after")])
    assert got == [f"killed by {signal.SIGKILL.name}", "ran: after"]


@needs_root
def test_inside_a_scratch_cgroup():
    from ebpf_tutor.sandbox.attempts import PROBE, attempts
    from ebpf_tutor.sandbox.cgroup import ScratchCgroup
    with ScratchCgroup("attempts") as cg:
        got = attempts([("run", "/bin/cat", "/proc/self/cgroup")], cg)
    assert got[0].startswith("ran: ")
    assert f"0::/ebpf-tutor/{cg.name}" in got[0].splitlines()
    assert "SIG_IGN" in PROBE
