"""tools/compat_matrix.py turns JUnit XML into the compatibility tables."""
import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import compat_matrix  # noqa: E402

HOST = """<testsuites><testsuite>
<testcase classname="tests.test_expected_features" name="test_feature[kprobes]">
  <properties><property name="feature" value="missing: built without CONFIG_KPROBES"/></properties></testcase>
<testcase classname="tests.test_expected_features" name="test_feature[XDP]">
  <properties><property name="feature" value="available"/></properties></testcase>
<testcase classname="tests.test_labs" name="test_solution_passes[5.1]">
  <system-out>PASS lab 5.1 (solution): tracepoint variant: ok; kprobe variant: 1 function(s) passed the verifier but were NOT attached</system-out></testcase>
<testcase classname="tests.test_labs" name="test_untouched_starter_fails[5.1]"/>
<testcase classname="tests.test_labs" name="test_wrong_solution_fails[5.1-x]"/>
<testcase classname="tests.test_labs" name="test_wrong_kprobe_variant_fails[5.1-y]"><skipped message="needs kprobes"/></testcase>
<testcase classname="tests.test_labs" name="test_solution_passes[7.1]"><failure message="boom"/></testcase>
<testcase classname="notebooks/ch05_kprobes.ipynb" name="Cell 0"/>
<testcase classname="notebooks/ch05_kprobes.ipynb" name="Cell 1"><skipped message="needs kprobes"/></testcase>
</testsuite></testsuites>"""

VM = """<testsuites><testsuite>
<testcase classname="tests.test_expected_features" name="test_feature[kprobes]">
  <properties><property name="feature" value="available"/></properties></testcase>
<testcase classname="tests.test_labs" name="test_solution_passes[5.1]">
  <system-out>PASS lab 5.1 (solution): kprobe on do_sys_openat2: ok; tracepoint variant: ok</system-out></testcase>
<testcase classname="tests.test_labs" name="test_solution_passes[5.2]">
  <system-out>PASS lab 5.2 (solution): kprobe on tcp_set_state: ok; tracepoint variant: ok</system-out></testcase>
<testcase classname="tests.test_labs" name="test_wrong_kprobe_variant_fails[5.2-old state]"/>
</testsuite></testsuites>"""


def test_tables_say_what_ran_and_what_attached(tmp_path):
    (tmp_path / "host.xml").write_text(HOST)
    (tmp_path / "vm.xml").write_text(VM)
    out = tmp_path / "compat.md"
    compat_matrix.main([str(out), f"host={tmp_path / 'host.xml'}", f"vm={tmp_path / 'vm.xml'}",
                        f"container={tmp_path / 'missing.xml'}"])
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
            for ln in out.read_text().splitlines() if ln.startswith("| ") and "---" not in ln}
    assert rows["kprobes"] == ["no: built without CONFIG_KPROBES", "yes", "not tried"]
    assert rows["XDP"] == ["yes", "not tried", "not tried"]
    assert rows["lab 5.1"] == ["passed (tracepoint fallback, wrong kprobe variants need kprobes)",
                               "passed (kprobe attached, solution only)", "–"]
    assert rows["lab 5.2"] == ["–", "passed (kprobe attached, solution and wrong kprobe variants)", "–"]
    assert rows["lab 7.1"][0] == "**failed**"
    assert rows["chapter 5 notebook"][0] == "passed (1 skipped)"
