"""Every lab: the solution passes its check, the untouched starter fails it,
and each plausible wrong solution fails it too. Labs run as a learner would
run them (tools/labrun.py), each in a fresh process."""
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_root
from tests.mutants import all_mutants

sys.path.insert(0, str(ROOT / "tools"))
import labrun  # noqa: E402

SOURCES = sorted((ROOT / "solutions").glob("ch*/lab_*.py"))
PASS, FAIL = 0, 3
MUTANTS = all_mutants()
KPROBE_MUTANTS = all_mutants("kprobe")
LSM_MUTANTS = all_mutants("lsm")


def lab_id(src: Path) -> str:
    major, minor = src.stem.split("_")[1:3]
    return f"{major}.{minor}"


def run_lab(src: Path, starter: bool = False, replace: tuple = ()) -> subprocess.CompletedProcess:
    """Run the lab as a learner would, in a fresh process; its code is made
    here, so that process does not pay for importing jupytext."""
    code = labrun.lab_program(src, starter, replace)
    return subprocess.run([sys.executable, str(ROOT / "tools/labrun.py"), "--stdin", str(src)],
                          input=code, capture_output=True, text=True, timeout=300, cwd=ROOT)


def verdict(r: subprocess.CompletedProcess) -> str:
    return (r.stdout + r.stderr).strip()[-1500:]


@needs_root
@pytest.mark.parametrize("src", SOURCES, ids=lab_id)
def test_solution_passes(src):
    r = run_lab(src)
    assert r.returncode == PASS, verdict(r)
    assert f"PASS lab {lab_id(src)}" in r.stdout
    passes = [ln for ln in r.stdout.splitlines() if ln.startswith("PASS")]
    assert len(passes) == 1
    print(passes[0])          # in the JUnit XML: docs/compatibility.md says what attached


@needs_root
@pytest.mark.parametrize("src", SOURCES, ids=lab_id)
def test_untouched_starter_fails(src):
    r = run_lab(src, starter=True)
    assert r.returncode == FAIL, verdict(r)
    assert f"FAIL lab {lab_id(src)}" in r.stdout
    assert "next step:" in r.stdout


MUTANT_CASES = [(src, m) for src in SOURCES for m in MUTANTS.get(lab_id(src), [])]


KPROBE_CASES = [(src, m) for src in SOURCES for m in KPROBE_MUTANTS.get(lab_id(src), [])]


def run_mutant(src: Path, mutant: tuple[str, ...]) -> subprocess.CompletedProcess:
    edits = mutant[1:]
    return run_lab(src, replace=list(zip(edits[::2], edits[1::2])))


@needs_root
@pytest.mark.parametrize("src,mutant", MUTANT_CASES,
                         ids=[f"{lab_id(s)}-{m[0][:40]}" for s, m in MUTANT_CASES])
def test_wrong_solution_fails(src, mutant):
    r = run_mutant(src, mutant)
    assert r.returncode == FAIL, verdict(r)


@needs_root
@pytest.mark.parametrize("src,mutant", KPROBE_CASES,
                         ids=[f"{lab_id(s)}-{m[0][:40]}" for s, m in KPROBE_CASES])
def test_wrong_kprobe_variant_fails(src, mutant):
    """Only a kernel with kprobes judges the kprobe variant (the course VM)."""
    from ebpf_tutor import features
    if not features.available("kprobes"):
        pytest.skip(f"needs kprobes ({features.reason('kprobes')})")
    r = run_mutant(src, mutant)
    assert r.returncode == FAIL, verdict(r)


LSM_CASES = [(src, m) for src in SOURCES for m in LSM_MUTANTS.get(lab_id(src), [])]


@needs_root
@pytest.mark.parametrize("src,mutant", LSM_CASES,
                         ids=[f"{lab_id(s)}-{m[0][:40]}" for s, m in LSM_CASES])
def test_wrong_lsm_variant_fails(src, mutant):
    """Only a kernel whose BPF LSM programs load judges the LSM variant (the course VM)."""
    from ebpf_tutor import features
    if not features.available("lsm"):
        pytest.skip(f"needs BPF LSM ({features.reason('lsm')})")
    r = run_mutant(src, mutant)
    assert r.returncode == FAIL, verdict(r)


@pytest.mark.parametrize("src,mutant", KPROBE_CASES + LSM_CASES,
                         ids=[f"{lab_id(s)}-{m[0][:40]}" for s, m in KPROBE_CASES + LSM_CASES])
def test_kprobe_mutant_applies(src, mutant):
    """Where they are skipped, their texts still must occur in the solution."""
    text = src.read_text()
    for old in mutant[1::2]:
        assert old in text, f"{old!r} is not in {src.name}"


def test_every_lab_has_wrong_solutions():
    for src in SOURCES:
        assert len(MUTANTS.get(lab_id(src), [])) >= 2, f"lab {lab_id(src)} needs wrong solutions"


def test_every_lab_has_a_registered_check():
    from ebpf_tutor.labs import load_checks
    labs = load_checks()
    for src in SOURCES:
        assert lab_id(src) in labs
