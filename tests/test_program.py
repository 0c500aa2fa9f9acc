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
