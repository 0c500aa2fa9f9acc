"""Build docs/compatibility.md from the JUnit XML of real test runs.

    python tools/compat_matrix.py out.md "6.18 host=host.xml" "6.1 VM=vm-bookworm.xml" ...

Each argument after the output names a kernel and the pytest `--junitxml`
file of its run (made with `-o junit_logging=system-out`, so that the PASS
lines of the labs are in it). Two tables come out: the features each kernel
has (tests/test_expected_features.py tries each one), and every chapter
notebook and lab, with what was run and what attached.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
NOT_RUN = "–"


@dataclass
class Run:
    """What one kernel's run showed."""
    rows: dict[str, list[tuple[str, str, str]]] = field(default_factory=lambda: defaultdict(list))
    features: dict[str, str] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)      # lab -> what attached


def read(xml_path: Path) -> Run:
    run = Run()
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name, cls = case.get("name", ""), case.get("classname", "")
        if name.startswith("test_feature["):
            prop = case.find("properties/property[@name='feature']")
            run.features[name[len("test_feature["):-1]] = (
                prop.get("value", "") if prop is not None else _outcome(case)[0])
            continue
        row = _row(cls, name)
        if not row:
            continue
        outcome, reason = _outcome(case)
        run.rows[row].append((outcome, reason, _kind(name)))
        out = case.findtext("system-out") or ""
        if outcome == PASSED and (m := re.search(r"^PASS lab .*$", out, re.M)):
            run.how[row] = _attached(m.group(0))
    return run


def _outcome(case: ET.Element) -> tuple[str, str]:
    if case.find("failure") is not None or case.find("error") is not None:
        return FAILED, ""
    if (sk := case.find("skipped")) is not None:
        return SKIPPED, (sk.get("message") or "").strip()
    return PASSED, ""


def _row(cls: str, name: str) -> str:
    m = re.search(r"\[(\d+\.\d+)", name)
    if "test_labs" in cls and m:
        return f"lab {m.group(1)}"
    if "test_core_vm" in cls:
        return "chapter 10 CO-RE object, built on 6.18"
    m = re.search(r"ch(\d+)_\w+\.ipynb", cls + name)
    if m:
        return f"chapter {int(m.group(1))} notebook"
    return ""


KINDS = {"test_solution_passes": "solution", "test_untouched_starter_fails": "starter",
         "test_wrong_solution_fails": "wrong",     # the tests of tests/test_labs.py
         "test_wrong_kprobe_variant_fails": "wrong kprobe",
         "test_wrong_lsm_variant_fails": "wrong LSM"}
VARIANTS = {"wrong kprobe": "kprobes", "wrong LSM": "BPF LSM"}   # run where the feature is


def _kind(name: str) -> str:
    return KINDS.get(name.split("[")[0], "cell")


def _attached(pass_line: str) -> str:
    """From a lab's PASS line: which variant really attached (chapter 5)."""
    if "kprobe on " in pass_line:
        return "kprobe attached"
    if "NOT attached" in pass_line:
        return "tracepoint fallback"
    return ""


def verdict(results: list[tuple[str, str, str]], how: str) -> str:
    if not results:
        return NOT_RUN
    if any(o == FAILED for o, _, _ in results):
        return "**failed**"
    if all(o == SKIPPED for o, _, _ in results):
        reason = results[0][1].replace("|", "/")[:80]
        return f"skipped ({reason})" if reason else "skipped"
    kinds = {k for o, _, k in results if o == PASSED}
    ran = [f"{k} variants" for k in VARIANTS if k in kinds]
    notes = [how] if how else []
    if "solution" in kinds and not kinds & {"starter", "wrong"}:
        notes.append(" and ".join(["solution", *ran]) if ran else "solution only")
    elif ran:
        notes.append(" and ".join(ran) + " too")
    n_skipped = sum(o == SKIPPED and k not in VARIANTS for o, _, k in results)
    if n_skipped:
        notes.append(f"{n_skipped} skipped")
    for k, feature in VARIANTS.items():
        if any(o == SKIPPED and kind == k for o, _, kind in results):
            notes.append(f"{k} variants need {feature}")
    return PASSED + (f" ({', '.join(notes)})" if notes else "")


def _sort_key(row: str) -> tuple:
    kind, num = row.split(" ")[0], row.split(" ")[1]
    major, _, minor = num.partition(".")
    return (int(major), 0 if kind == "chapter" else 1, int(minor or 0), row)


def _feature_cell(value: str) -> str:
    if value == "available":
        return "yes"
    if not value:
        return "not tried"
    return "no: " + value.removeprefix("missing: ").replace("|", "/")[:70]


def provenance() -> str:
    """The commit and day of the runs (the checkout this tool runs in)."""
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    return f"This copy: commit {commit}, {time.strftime('%Y-%m-%d', time.gmtime())}."


def render(runs: list[tuple[str, Run]], source: str = "") -> str:
    head = "| | " + " | ".join(name for name, _ in runs) + " |"
    sep = "|---|" + "---|" * len(runs)
    lines = ["# Kernel compatibility", "",
             "Generated by `tools/compat_matrix.py` from the JUnit XML of real runs in CI "
             "(`.ci/run`): this machine's kernel, stock Debian kernels in the course VM "
             "(`vm/course_vm.py`) and the course container. Do not edit by hand. " + source, "",
             "## Features", "",
             "Each feature was tried by loading and attaching a real program "
             "(`tests/test_expected_features.py`).", "", head, sep]
    names = list(dict.fromkeys(f for _, run in runs for f in run.features))
    for f in names:
        lines.append(f"| {f} | " + " | ".join(_feature_cell(run.features.get(f, ""))
                                               for _, run in runs) + " |")
    lines += ["", "## Chapters and labs", "",
              "A lab *passed* when its solution passed its check and its untouched starter "
              "and every plausible wrong solution failed it; *solution only* means only the "
              "solution ran there (emulation is slow); *wrong kprobe variants* are wrong "
              "solutions that only a kernel with kprobes can tell apart. A notebook passed when every cell ran "
              "(with its reference outputs on the host). In chapter 5, *kprobe attached* "
              "means the kprobe variant was attached and judged; *tracepoint fallback* "
              "means it was only verified, and the tracepoint variant was judged. "
              f"{NOT_RUN} means not run on that kernel (the VM and the container run a "
              "selection: what needs their kernels, and one lab of each kind).", "",
              head, sep]
    all_rows = sorted({r for _, run in runs for r in run.rows}, key=_sort_key)
    for row in all_rows:
        lines.append(f"| {row} | " + " | ".join(verdict(run.rows.get(row, []), run.how.get(row, ""))
                                                 for _, run in runs) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    out, specs = Path(argv[0]), argv[1:]
    runs = []
    for spec in specs:
        name, _, path = spec.rpartition("=")
        runs.append((name, read(Path(path)) if Path(path).exists() else Run()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(runs, provenance()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
