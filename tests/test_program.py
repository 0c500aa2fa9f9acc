"""The Program handle loads, attaches, and always cleans up."""
import os
import signal
import subprocess
import sys
import textwrap

from tests.conftest import bpf_prog_ids, held_prog_ids, needs_root

COUNTER = """
BPF_ARRAY(n, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) == TGID) n.increment(0);
    return 0;
}
"""


@needs_root
def test_counts_and_unloads():
    from ebpf_tutor import Program
    with Program(COUNTER.replace("TGID", str(os.getpid()))) as p:
        mine = held_prog_ids()
        assert mine <= bpf_prog_ids()
        for _ in range(7):
            os.getppid()
        assert p["n"][0].value == 7
    assert not mine & bpf_prog_ids()
    p.close()  # a second close is harmless


@needs_root
def test_exception_inside_with_still_unloads():
    from ebpf_tutor import Program
    mine = set()
    try:
        with Program(COUNTER.replace("TGID", "0")):
            mine = held_prog_ids()
            raise RuntimeError("learner bug")
    except RuntimeError:
        pass
    assert mine and not mine & bpf_prog_ids()


@needs_root
def test_killed_process_leaves_nothing_loaded():
    code = textwrap.dedent(f"""
        import os, time
        from ebpf_tutor import Program
        p = Program({COUNTER.replace('TGID', '0')!r})
        print("loaded", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "loaded"
    theirs = held_prog_ids(child.pid)
    assert theirs and theirs <= bpf_prog_ids()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not theirs & bpf_prog_ids()


@needs_root
def test_parent_pid_read_through_kernel_structs_is_right():
    """Wrong header layouts make this read 0: the headers test in one line."""
    from ebpf_tutor import Program
    src = """
    #include <linux/sched.h>
    BPF_ARRAY(ppid, u32, 1);
    TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
        if ((bpf_get_current_pid_tgid() >> 32) != TGID) return 0;
        struct task_struct *t = (struct task_struct *)bpf_get_current_task();
        u32 v = t->real_parent->tgid;
        int k = 0;
        ppid.update(&k, &v);
        return 0;
    }
    """.replace("TGID", str(os.getpid()))
    with Program(src) as p:
        os.getppid()
        assert p["ppid"][0].value == os.getppid()


@needs_root
def test_verifier_log_of_an_accepted_and_a_rejected_function():
    """verifier_log loads the function once more with a log buffer of the level
    asked for, and unloads it: the statistics line for an accepted program,
    the register states (level 2) for a rejected one."""
    import re
    from ebpf_tutor import Program
    src = ("BPF_HASH(h, u32, u64);\n"
           "int ok(void *ctx) {\n    u32 k = 0;\n    u64 *v = h.lookup(&k);\n    return v ? *v : 0;\n}\n"
           "int bad(void *ctx) {\n    u32 k = 0;\n    u64 *v = h.lookup(&k);\n    return *v;\n}\n")
    with Program(src) as p:
        fn = p.load_func("ok", 17)
        from ebpf_tutor.bpfsys.programs import prog_info
        log = p.verifier_log("ok", 17, level=1)
        processed = int(re.search(r"processed (\d+) insns", log).group(1))
        assert processed == prog_info(fn.fd).verified_insns
        log2 = p.verifier_log("bad", 17, level=2)
        assert "map_value_or_null" in log2 and "invalid mem access" in log2


@needs_root
def test_least_privilege_is_per_thread_and_restored():
    """The gym's least-privilege loader drops CAP_PERFMON and CAP_SYS_ADMIN
    from this thread only, and puts them back."""
    from ebpf_tutor.labs.checks.ch14 import CAP_PERFMON, CAP_SYS_ADMIN, least_privilege
    from ebpf_tutor.testing.fixtures import effective_capabilities
    before = effective_capabilities()
    with least_privilege():
        now = effective_capabilities()
        assert not now & (1 << CAP_PERFMON) and not now & (1 << CAP_SYS_ADMIN)
    assert effective_capabilities() == before


@needs_root
def test_a_missing_map_is_named_not_a_bare_keyerror():
    from ebpf_tutor import Program
    from ebpf_tutor.program import MapNotFound
    with Program("BPF_ARRAY(hits, u64, 1);\nint f(void *ctx) { return 0; }") as prog:
        assert prog["hits"] is prog["hits"]
        try:
            prog["execs"]
        except KeyError as e:           # still a KeyError for code that catches one
            assert isinstance(e, MapNotFound)
            assert str(e).startswith("this program has no map named 'execs'")
        else:
            raise AssertionError("no error for a missing map")
