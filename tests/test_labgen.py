"""One source per lab: starters are generated from solutions and stay in sync;
chapter .ipynb files stay in sync with their .py sources."""
import subprocess
import sys

import jupytext
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from labgen import solution_view, strip_solutions  # noqa: E402


def test_starters_are_in_sync_with_solutions():
    r = subprocess.run([sys.executable, str(ROOT / "tools/labgen.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_c_solution_region_is_removed():
    src = "int f() {\n    // TODO: count\n    // BEGIN SOLUTION\n    n.increment(0);\n    // END SOLUTION\n    return 0;\n}"
    assert strip_solutions(src) == "int f() {\n    // TODO: count\n    return 0;\n}"
    assert "BEGIN" not in solution_view(src) and "n.increment(0);" in solution_view(src)


def test_python_solution_region_raises_in_starter():
    src = "def f():\n    # BEGIN SOLUTION\n    return 42\n    # END SOLUTION"
    assert strip_solutions(src) == 'def f():\n    raise NotImplementedError("your code here")'


def test_every_lab_has_hints_objective_and_check():
    for src in sorted((ROOT / "solutions").glob("ch*/lab_*.py")):
        nb = jupytext.read(src)
        text = "\n".join(c.source for c in nb.cells)
        assert "**Objective.**" in text and "**Expected observation.**" in text, src
        assert text.count("<details><summary>Hint") >= 2, src
        checks = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
        assert len(checks) == 1 and checks[0].source.startswith("check("), src
        assert "BEGIN SOLUTION" in text, src


@pytest.mark.parametrize("py", sorted((ROOT / "notebooks").glob("ch*.py")), ids=lambda p: p.stem)
def test_chapter_notebook_matches_its_source(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run tools/build_notebooks.py"
    a = [(c.cell_type, c.source) for c in jupytext.read(py).cells]
    b = [(c.cell_type, c.source) for c in jupytext.read(ipynb).cells]
    assert a == b, f"{ipynb.name} is stale: run tools/build_notebooks.py {py.stem}"
    nb = jupytext.read(ipynb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    unrun = [i for i, c in enumerate(code) if not c.get("execution_count")]
    assert not unrun, f"{ipynb.name}: code cells {unrun} were never run: rebuild it"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs
                   if "raises-exception" not in c.metadata.get("tags", []))
