"""Broken programs give short, readable errors that point at the line."""
import errno

import pytest

from ebpf_tutor import errors
from tests.conftest import needs_root

SCREEN = 40  # lines: a diagnostic must fit on one screen

MALFORMED = """
BPF_HASH(counts, u32, u64);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u32 key = 0
    counts.increment(key);
    return 0;
}
"""

UNCHECKED_LOOKUP = """
BPF_HASH(seen, u32, u64);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u32 key = 0;
    u64 *value = seen.lookup(&key);
    return *value;
}
"""


@needs_root
def test_malformed_program_points_at_its_line():
    from ebpf_tutor import Program
    with pytest.raises(errors.CompileError) as info:
        Program(MALFORMED)
    text = info.value.format()
    assert len(text.splitlines()) <= SCREEN
    assert "line 4" in text
    assert ">   4 |     u32 key = 0" in text
    assert "expected ';'" in text
    assert "hint:" in text


@needs_root
def test_verifier_rejection_is_explained():
    from ebpf_tutor import Program
    with pytest.raises(errors.VerifierError) as info:
        Program(UNCHECKED_LOOKUP)
    e = info.value
    text = e.format()
    assert len(text.splitlines()) <= SCREEN
    assert "map_value_or_null" in e.summary
    assert "line 6" in text and "return *value;" in text
    assert "NULL" in e.hint
    assert errors.is_verifier_error(e) and not errors.is_permission_error(e)


@needs_root
def test_missing_attach_point_is_an_attach_error():
    from ebpf_tutor import Program
    with Program("int f(void *ctx) { return 0; }") as p:
        with pytest.raises(errors.AttachError) as info:
            p.attach_tracepoint(tp="syscalls:sys_enter_no_such_call", fn_name="f")
    assert "does not exist" in info.value.hint


def test_permission_error_gives_the_fix(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    e = errors.load_error("Need super-user privileges to run", "", "", "prog")
    assert isinstance(e, errors.BpfPermissionError)
    assert errors.is_permission_error(e)
    assert "eBPF (root)" in e.format()


def test_transient_errors_are_retried():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise errors.TransientError("busy", errno=errno.EBUSY)
        return "ok"

    assert errors.retry(flaky, attempts=3, delay=0) == "ok"
    assert len(calls) == 3


def test_non_transient_errors_are_not_retried():
    calls = []

    def rejected():
        calls.append(1)
        raise errors.VerifierError("no")

    with pytest.raises(errors.VerifierError):
        errors.retry(rejected, attempts=5, delay=0)
    assert len(calls) == 1


def test_errno_from_strerror_text():
    assert errors.errno_from_message("Failed to load: Permission denied") == errno.EACCES
    assert errors.errno_from_message("Device or resource busy") == errno.EBUSY


def test_verifier_hints_cover_common_rejections():
    log = "0: (b7) r0 = 0\nR1 invalid mem access 'scalar'\nprocessed 2 insns"
    e = errors.verifier_error(log, "int f() { return 0; }", "f")
    assert "bpf_probe_read" in e.hint
    log = "back-edge from insn 12 to 4\nprocessed 20 insns"
    assert "loop" in errors.verifier_error(log, "", "f").hint


def test_jupyter_shows_the_diagnostic_not_a_stack_trace():
    e = errors.CompileError("boom", where="line 1")
    assert e._render_traceback_() == e.format().splitlines()


# ------------------------------------------------ the gym: the explainer's corpus --
GYM_LAB = "solutions/ch14/lab_14_2_verifier_gym.py"


def gym_starters() -> dict[str, str]:
    """The unfixed gym programs: the starter's answer cells (NAME = r\"\"\"...\"\"\")."""
    import ast
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tools"))
    from labrun import lab_program
    tree = ast.parse(lab_program(root / GYM_LAB, starter=True))
    return {node.targets[0].id.lower(): node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str) and isinstance(node.targets[0], ast.Name)}


@needs_root
def test_explainer_classifies_every_gym_program_and_points_at_its_line():
    """Every unfixed gym program is a compile error or a verifier rejection
    (never generic), with a hint and the right line (at least 90% of them)."""
    from ebpf_tutor.labs.checks.ch14 import GYM, load_exercise
    starters = gym_starters()
    assert set(GYM) <= set(starters)
    right = []
    for name, ex in GYM.items():
        with pytest.raises(errors.BpfError) as info:
            load_exercise(name, starters[name])
        e = info.value
        kind = errors.CompileError if ex.kind == "compile" else errors.VerifierError
        assert isinstance(e, kind), f"{name}: {type(e).__name__}: {e.summary}"
        assert len(e.format().splitlines()) <= SCREEN
        marked = [ln for ln in e.excerpt.splitlines() if ln.startswith(">")]
        if e.hint and marked and marked[0].split("|", 1)[1].strip() == ex.culprit:
            right.append(name)
    assert len(right) >= 0.9 * len(GYM), f"hint and line right for {right} only"


@needs_root
def test_llvm_fatal_error_does_not_kill_the_process():
    """LLVM ends the process on some errors: the child compile takes the blow.
    It is on by default in a notebook kernel, where a crash loses the learner's state."""
    from ebpf_tutor import Program, program
    src = 'int f(void *ctx) {\n    bpf_trace_printk("%d %d %d %d\\n", 1, 2, 3, 4);\n    return 0;\n}\n'
    assert not program.in_notebook_kernel()
    with pytest.raises(errors.CompileError) as info:
        Program(src, precheck=True)
    assert "line 2" in info.value.where and "at most 3" in info.value.hint
    with Program("int g(void *ctx) { return 0; }") as p:     # and this process still works
        p.load_func("g", 17)


@needs_root
def test_undeclared_helper_is_a_compile_error():
    from ebpf_tutor import Program
    src = "int f(void *ctx) {\n    return bpf_no_such_helper(1);\n}\n"
    with pytest.raises(errors.CompileError) as info:
        with Program(src) as p:
            p.load_func("f", 17)
    assert "bpf_no_such_helper" in info.value.summary and "line 2" in info.value.where
