"""The learner's work folder: filled from the course, never overwritten, reset one lab at a time."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from ebpf_tutor import workspace
from ebpf_tutor.labs import progress_file, trycell
from tests.conftest import ROOT


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A tiny course: one chapter with its jupytext twin and a data folder, one lab."""
    root = tmp_path / "course"
    (root / "notebooks/ch10").mkdir(parents=True)
    (root / "labs/ch01").mkdir(parents=True)
    nb = {"cells": [], "metadata": {"jupytext": {"formats": "ipynb,py:percent"},
                                    "kernelspec": {"name": "ebpf-root"}}, "nbformat": 4, "nbformat_minor": 5}
    (root / "notebooks/ch01_intro.ipynb").write_text(json.dumps(nb))
    (root / "notebooks/ch01_intro.py").write_text("# the jupytext source\n")
    (root / "notebooks/ch10/demo.py").write_text("print('data')\n")
    (root / "labs/ch01/lab_1_1_hello.ipynb").write_text(json.dumps(nb))
    return root


def test_first_start_copies_notebooks_without_their_jupytext_pairing(course, tmp_path):
    work = tmp_path / "work"
    report = workspace.sync(work, root=course)
    assert sorted(report.copied) == ["labs/ch01/lab_1_1_hello.ipynb", "notebooks/ch01_intro.ipynb",
                                     "notebooks/ch10/demo.py"]
    assert not (work / "notebooks/ch01_intro.py").exists()        # the twin is not the learner's
    meta = json.loads((work / "notebooks/ch01_intro.ipynb").read_text())["metadata"]
    assert "jupytext" not in meta and meta["kernelspec"]["name"] == "ebpf-root"
    assert workspace.sync(work, root=course).text() == f"work folder: {work}"    # nothing to do


def test_course_updates_reach_untouched_copies_only(course, tmp_path):
    work = tmp_path / "work"
    workspace.sync(work, root=course)
    mine = work / "labs/ch01/lab_1_1_hello.ipynb"
    mine.write_text(mine.read_text().replace('"cells": []', '"cells": [{"mine": 1}]'))
    for rel in ("labs/ch01/lab_1_1_hello.ipynb", "notebooks/ch01_intro.ipynb"):
        p = course / rel
        p.write_text(p.read_text().replace('"nbformat_minor": 5', '"nbformat_minor": 4'))
    report = workspace.sync(work, root=course)
    assert report.updated == ["notebooks/ch01_intro.ipynb"]
    assert report.kept == ["labs/ch01/lab_1_1_hello.ipynb"] and '"mine": 1' in mine.read_text()
    assert "./course reset 1.1" in report.text()


def test_reset_puts_back_the_course_version_and_keeps_the_learners(course, tmp_path):
    work = tmp_path / "work"
    workspace.sync(work, root=course)
    mine = work / "labs/ch01/lab_1_1_hello.ipynb"
    mine.write_text("my answer")
    assert workspace.reset("1.1", work, root=course) == ["labs/ch01/lab_1_1_hello.ipynb"]
    assert mine.read_text() == workspace.learner_copy(course / "labs/ch01/lab_1_1_hello.ipynb").decode()
    backups = list((work / ".backup").rglob("lab_1_1_hello.ipynb"))
    assert len(backups) == 1 and backups[0].read_text() == "my answer"
    assert workspace.reset("ch01", work, root=course) == ["notebooks/ch01_intro.ipynb"]
    for bad in ("9.9", "chapter one"):
        with pytest.raises(ValueError):
            workspace.reset(bad, work, root=course)


def test_progress_lives_in_the_work_folder_that_holds_the_kernel(course, tmp_path, monkeypatch):
    work = tmp_path / "work"
    workspace.sync(work, root=course)
    monkeypatch.delenv("EBPF_TUTOR_PROGRESS", raising=False)
    monkeypatch.chdir(work / "labs/ch01")
    assert progress_file() == work / ".progress.json"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EBPF_TUTOR_WORK", str(work))
    assert progress_file() == work / ".progress.json"


def test_the_real_course_copies_every_chapter_and_lab(tmp_path):
    files = workspace.course_files(ROOT)
    assert len([f for f in files if f.startswith("labs/")]) == len(list(ROOT.glob("labs/ch*/*.ipynb")))
    assert not [f for f in files if f.startswith("notebooks/ch") and f.endswith(".py") and f.count("/") == 1]
    assert "notebooks/ch10/procinfo.bpf.o" in files


def test_a_failed_try_cell_reads_as_three_lines():
    def cell():
        {}["execs"]
    code = compile("cell()", "/tmp/ipykernel_42/123.py", "exec")
    try:
        exec(code, {"cell": cell})
    except KeyError:
        lines = trycell.summary(*sys.exc_info())
    assert lines[0] == "Try it: this cell stopped with KeyError: 'execs'"
    assert "check cell below" in lines[1]
    assert lines[2].startswith("  It stopped at line 1 of this cell")
