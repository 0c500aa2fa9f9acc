"""A learner's path through JupyterLab, in a real browser (headless Chromium).

As the README gives it: `./course lab` run by a normal user, whose notebook
kernel starts through the kernelspec's `sudo -n` rule. Debian's chromium,
driven by Playwright, opens the printed URL, runs chapter 1 with "Run All",
then does lab 1.1 three ways: untouched (the starter runs top to bottom and
ends in the check's readable FAIL), with a wrong answer typed into the editor
(FAIL, no traceback), and with the solution (PASS, once, and `progress` has
it). The same test checks what protects the server: loopback only, a token,
and a sudoers rule that allows the kernel command and nothing else.

Screenshots go to build/browser-*.png (CI keeps build/).
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jupytext
import pytest

from tests.conftest import ROOT, needs_root
from tests.mutants.ch01 import MUTANTS
from ebpf_tutor.sandbox.prometheus import free_port

sys.path.insert(0, str(ROOT / "tools"))
from labgen import solution_view  # noqa: E402

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
SUDOERS = Path("/etc/sudoers.d/ebpf-tutor")
SHOTS = ROOT / "build"
CHAPTER = "notebooks/ch01_introduction.ipynb"
LAB = "labs/ch01/lab_1_1_hello_execve.ipynb"
# Chromium on a machine with no internet: no background connections, no sandbox as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [needs_root,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")]


def as_user(user: str, command: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-l", user, "-c", command], capture_output=True,
                          text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def learner():
    """A fresh normal user, provisioned for the way the README says: the
    provisioning run with sudo writes the kernel's sudoers rule for them."""
    name = f"ebt-learner-{os.getpid()}"
    saved = SUDOERS.read_bytes() if SUDOERS.exists() else None
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    try:
        out = subprocess.run([str(ROOT / "course"), "provision"], cwd=ROOT, text=True,
                             capture_output=True, env=dict(os.environ, SUDO_USER=name))
        assert out.returncode == 0, out.stdout + out.stderr
        yield name
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        time.sleep(0.5)
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
        if saved is None:
            SUDOERS.unlink(missing_ok=True)
        else:
            SUDOERS.write_bytes(saved)


@pytest.fixture(scope="module")
def server(learner):
    """`./course lab` as the learner; yields (url it printed, port, server pid)."""
    port = free_port()
    proc = subprocess.Popen(["runuser", "-l", learner, "-c", f"cd {ROOT} && PORT={port} ./course lab"],
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url, lines, deadline = None, [], time.monotonic() + 120
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(rf"http://127\.0\.0\.1:{port}/\S+\?token=\w+", line)
        url = m.group(0) if m else None
    pid = None
    while url and pid is None and time.monotonic() < deadline:
        ss = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
        m = re.search(r"pid=(\d+)", ss)
        pid = int(m.group(1)) if m else time.sleep(0.2)
    if pid is None:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("JupyterLab did not come up:\n" + "".join(lines[-30:]))
    try:
        yield url, port, pid
    finally:
        os.kill(pid, signal.SIGTERM)                   # the server, by its pid
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def uid_of(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


# ----------------------------------------------------------------- security --
def test_server_runs_as_the_learner_on_loopback_only(server, learner):
    url, port, pid = server
    assert uid_of(pid) == pwd.getpwnam(learner).pw_uid
    ss = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    addrs = {line.split()[3].rsplit(":", 1)[0] for line in ss.splitlines() if line.strip()}
    assert addrs and addrs <= {"127.0.0.1"}, addrs


def test_a_request_without_the_token_is_refused(server):
    _, port, _ = server
    for path in ("/api/sessions", "/api/contents/notebooks", "/api/kernels"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
        assert e.value.code in (401, 403), path
    token = server[0].rpartition("token=")[2]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/kernels",
                                 headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def test_the_sudoers_rule_allows_the_kernel_command_only(learner):
    venv_python = f"{ROOT}/.venv/bin/python"
    listed = as_user(learner, "sudo -n -l").stdout
    commands = [ln.strip() for ln in listed.splitlines() if "NOPASSWD" in ln or ln.startswith("    /")]
    assert commands and all(f"{venv_python} -m ipykernel_launcher" in c for c in commands), listed
    for attempt in ("sudo -n true", "sudo -n id", f"sudo -n {venv_python} -c 'print(1)'",
                    f"sudo -n {venv_python} -m pip --version", "sudo -n /bin/sh -c id",
                    f"sudo -n env FOO=1 {venv_python} -m ipykernel_launcher --version"):
        r = as_user(learner, attempt)
        assert r.returncode != 0, f"{attempt!r} was allowed: {r.stdout}"


# ------------------------------------------------------------------ browser --
def shot(page, name: str) -> None:
    """A screenshot of the current notebook scrolled to its end (the check's verdict)."""
    SHOTS.mkdir(exist_ok=True)
    current(page).locator(".jp-CodeCell").last.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / f"browser-{name}.png"))


def open_notebook(page, url: str, name: str) -> None:
    page.goto(url)
    page.locator(".lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel", has_text=name) \
        .first.wait_for(timeout=60_000)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.wait_for(timeout=60_000)
    kernel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-KernelName")
    for _ in range(300):                               # the kernel the notebook asks for
        if kernel.inner_text().strip() == "eBPF (root)":
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"kernel shown: {kernel.inner_text()!r}")


def current(page):
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")


def run_all(page, timeout_s: float = 240) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    prompts = current(page).locator(".jp-CodeCell .jp-InputPrompt")
    deadline = time.monotonic() + timeout_s
    page.wait_for_timeout(1000)
    while time.monotonic() < deadline:
        texts = prompts.all_text_contents()
        if texts and all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in texts):
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"Run All did not finish: prompts {prompts.all_text_contents()}")


def outputs(page) -> list[str]:
    """The output text of every code cell of the current notebook, in order."""
    return current(page).locator(".jp-CodeCell").evaluate_all(
        "cells => cells.map(c => c.querySelector('.jp-OutputArea')?.textContent ?? '')")


def cell_with_tag(page, notebook: str, tag: str) -> int:
    cells = [c for c in jupytext.read(ROOT / notebook).cells if c.cell_type == "code"]
    return next(i for i, c in enumerate(cells) if tag in c.metadata.get("tags", []))


def type_answer(page, index: int, code: str) -> None:
    editor = current(page).locator(".jp-CodeCell").nth(index).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(code)
    page.keyboard.press("Escape")


def test_chapter_1_runs_all_with_its_programs_attached(server, page):
    url, port, pid = server
    assert f"/lab/tree/{CHAPTER}?" in url, f"the printed URL does not open chapter 1: {url}"
    open_notebook(page, url, "ch01_introduction.ipynb")
    listing = page.locator(".jp-DirListing-itemText").all_inner_texts()
    assert "ch01_introduction.ipynb" in listing and not [n for n in listing if n.endswith(".py")], listing
    run_all(page)
    shot(page, "ch01")
    assert page.get_by_text("official Jupyter news").count() == 0     # overrides.json
    text = "\n".join(outputs(page))
    assert re.search(r"true\s+5", text) and re.search(r"uname\s+3", text), text[-3000:]
    assert "gone: bpftool no longer knows that id" in text
    assert "Traceback" not in text and "<pid>" not in text
    assert re.search(r"hello lines from our 3 execs", text)
    kernels = [k for k in descendants(pid) if "ipykernel_launcher" in cmdline(k)]
    assert kernels and all(uid_of(k) == 0 for k in kernels), kernels   # through sudo -n


def test_lab_starter_then_wrong_then_right(server, page, learner):
    url, _, _ = server
    base = url.split("/lab/")[0]
    token = url.rpartition("token=")[2]
    open_notebook(page, f"{base}/lab/workspaces/ci-{uuid.uuid4().hex[:8]}/tree/{LAB}?reset&token={token}",
                  Path(LAB).name)
    answer, check = cell_with_tag(page, LAB, "answer"), cell_with_tag(page, LAB, "check")

    run_all(page)                                      # untouched: ends in the check's FAIL
    shot(page, "lab-starter")
    cells = outputs(page)
    assert "FAIL lab 1.1" in cells[check] and "Traceback" not in "\n".join(cells), cells
    assert "Try it: this cell stopped with" in "\n".join(cells)

    src = jupytext.read(ROOT / "solutions/ch01/lab_1_1_hello_execve.py")
    solution = solution_view(next(c.source for c in src.cells if "answer" in c.metadata.get("tags", [])))
    _, old, new = next(m for m in MUTANTS["1.1"] if m[0] == "counts twice per exec")
    type_answer(page, answer, solution.replace(old, new))
    run_all(page)
    shot(page, "lab-wrong")
    cells = outputs(page)
    assert "FAIL lab 1.1" in cells[check] and "Traceback" not in cells[check], cells[check]

    type_answer(page, answer, solution)
    run_all(page)
    shot(page, "lab-pass")
    cells = outputs(page)
    assert cells[check].count("PASS lab 1.1") == 1, cells[check]
    page.keyboard.press("Control+S")                   # saved to the learner's own copy
    saved = Path(pwd.getpwnam(learner).pw_dir) / "ebpf-course-work" / LAB
    for _ in range(50):
        if "execs.atomic_increment(key);" in saved.read_text():
            break
        page.wait_for_timeout(200)
    assert "execs.atomic_increment(key);" in saved.read_text()
    assert "execs.atomic_increment(key);" not in (ROOT / LAB).read_text()
    progress = as_user(learner, f"{ROOT}/.venv/bin/ebpf-tutor progress").stdout
    assert re.search(r"\[x\] 1\.1 ", progress), progress
    record = json.loads((Path(pwd.getpwnam(learner).pw_dir) / "ebpf-course-work/.progress.json").read_text())
    assert record["1.1"]["passed"] and record["1.1"]["attempts"] >= 3


def test_the_checkout_stays_clean(server, learner):
    """The server serves the learner's work folder: nothing of theirs lands in the course."""
    uid = pwd.getpwnam(learner).pw_uid
    theirs = [p for d in ("notebooks", "labs") for p in (ROOT / d).rglob("*") if p.stat().st_uid == uid]
    checkpoints = [p for d in ("notebooks", "labs") for p in (ROOT / d).rglob(".ipynb_checkpoints")]
    assert not theirs and not checkpoints, theirs + checkpoints
    work = Path(pwd.getpwnam(learner).pw_dir) / "ebpf-course-work"
    assert (work / ".ebpf-course.json").is_file() and list(work.rglob(".ipynb_checkpoints"))
