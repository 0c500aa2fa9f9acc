"""tools/ci_budget.py: a run's test time by unit tests, chapter notebooks and chapter labs."""
import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import ci_budget  # noqa: E402

JUNIT = """<testsuites><testsuite>
<testcase classname="tests.test_labs" name="test_solution_passes[1.1]" time="2.0"/>
<testcase classname="tests.test_labs" name="test_wrong_solution_fails[1.2-forgets]" time="3.0"/>
<testcase classname="tests.test_labs" name="test_solution_passes[12.3]" time="5.0"/>
<testcase classname="notebooks.ch01_introduction.ipynb" name="Cell 1" time="1.5"/>
<testcase classname="tests.test_labs" name="test_every_lab_has_wrong_solutions" time="0.5"/>
<testcase classname="tests.test_asm" name="test_mov" time="0.25"/>
</testsuite></testsuites>"""


def test_time_is_grouped_by_chapter(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    assert ci_budget.groups(junit) == {"labs ch01": 5.0, "labs ch12": 5.0,
                                       "notebook ch01": 1.5, "unit": 0.75}
    text = ci_budget.report(junit)
    assert "labs ch12" in text and "25 chapters" not in text   # two chapters: no projection
