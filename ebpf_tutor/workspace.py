"""The learner's own copy of the course: the work folder JupyterLab opens.

`./course lab` serves a work folder, not the checkout: the chapter notebooks
and the lab starters are copied there on first start, so a learner's answers,
autosaves and checkpoints never touch the tracked files, and updating the
course (`git pull`) never conflicts with them. Each later start brings the
work folder up to date without losing anything:

* a file new in the course is copied;
* a copy the learner never changed follows the course when the course changes;
* a copy the learner changed is kept, and reported if the course changed it
  (`reset` gets the new version, keeping the learner's in `.backup/`).

The folder is `$EBPF_TUTOR_WORK`, else `<checkout>/work` (git-ignored), else,
when the checkout is not the learner's to write, `~/ebpf-course-work`. Lab
progress lives in it too (`.progress.json`, see `labs.progress_file`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
MANIFEST = ".ebpf-course.json"   # in the work folder: what was copied, as what


def default_dir() -> Path:
    """$EBPF_TUTOR_WORK, else <checkout>/work, else (a checkout this user may not
    write to, such as one root cloned) ~/ebpf-course-work."""
    if os.environ.get("EBPF_TUTOR_WORK"):
        return Path(os.environ["EBPF_TUTOR_WORK"])
    inside = CHECKOUT / "work"
    if os.access(inside if inside.exists() else CHECKOUT, os.W_OK):
        return inside
    return Path.home() / "ebpf-course-work"


def find_dir(start: Path | None = None) -> Path | None:
    """The work folder that holds `start` (default: the current directory), if any."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / MANIFEST).is_file():
            return d
    return None


def course_files(root: Path = CHECKOUT) -> dict[str, Path]:
    """What a learner works on, by path relative to the work folder: the chapter
    notebooks, their data folders (notebooks/ch10/...) and the lab starters.
    The jupytext twins (notebooks/chNN_*.py) are the sources, not for learners."""
    files: dict[str, Path] = {}
    for p in sorted((root / "notebooks").rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or "__pycache__" in rel.parts or ".ipynb_checkpoints" in rel.parts:
            continue
        if len(rel.parts) == 2 and p.suffix == ".py":     # a chapter's jupytext source
            continue
        files[str(rel)] = p
    for p in sorted((root / "labs").glob("ch*/*.ipynb")):
        files[str(p.relative_to(root))] = p
    return files


def learner_copy(src: Path) -> bytes:
    """The bytes a learner gets: a notebook without its jupytext pairing, so that
    saving it writes no .py twin; any other file as it is."""
    if src.suffix != ".ipynb":
        return src.read_bytes()
    nb = json.loads(src.read_text())
    nb.get("metadata", {}).pop("jupytext", None)
    return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class SyncReport:
    work: Path
    copied: list[str] = field(default_factory=list)     # new to the learner
    updated: list[str] = field(default_factory=list)    # untouched copies the course changed
    kept: list[str] = field(default_factory=list)       # changed by the learner AND by the course

    def text(self) -> str:
        lines = [f"work folder: {self.work}"]
        if self.copied:
            lines.append(f"  copied {len(self.copied)} files from the course")
        if self.updated:
            lines.append(f"  updated {len(self.updated)} files you had not changed")
        for rel in self.kept:
            lines.append(f"  kept your {rel}; the course has a newer version: "
                         f"`./course reset {reset_name(rel)}` takes it (yours goes to .backup/)")
        return "\n".join(lines)


def reset_name(rel: str) -> str:
    """What to pass to `reset` for a file: a lab id (1.1) or a chapter (ch07)."""
    m = re.match(r"labs/ch\d+/lab_(\d+)_(\d+)_", rel)
    if m:
        return f"{m[1]}.{m[2]}"
    m = re.match(r"notebooks/(ch\d+)_", rel)
    return m[1] if m else rel


def _read_manifest(work: Path) -> dict[str, str]:
    try:
        return json.loads((work / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return {}


def _write_manifest(work: Path, files: dict[str, str]) -> None:
    body = {"course": str(CHECKOUT), "files": dict(sorted(files.items()))}
    (work / MANIFEST).write_text(json.dumps(body, indent=1) + "\n")


def sync(work: Path | None = None, root: Path = CHECKOUT) -> SyncReport:
    """Create or bring up to date the work folder; never overwrite a learner's change."""
    work = Path(work or default_dir())
    work.mkdir(parents=True, exist_ok=True)
    made = _read_manifest(work)
    report = SyncReport(work)
    for rel, src in course_files(root).items():
        want, dst = learner_copy(src), work / rel
        want_digest = _digest(want)
        have = _digest(dst.read_bytes()) if dst.exists() else None
        if have is None:
            report.copied.append(rel)
        elif have == want_digest:
            made[rel] = have
            continue
        elif have == made.get(rel):
            report.updated.append(rel)
        else:                                  # the learner's: keep it
            if made.get(rel) != want_digest:
                report.kept.append(rel)        # ...though the course changed it too
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(want)
        shutil.copymode(src, dst)
        made[rel] = want_digest
    _write_manifest(work, made)
    return report


def reset(target: str, work: Path | None = None, root: Path = CHECKOUT) -> list[str]:
    """Put back the course's version of one lab ("1.1") or chapter ("ch07", "7").
    The learner's copy is moved to <work>/.backup/<time>/, never deleted."""
    work = Path(work or default_dir())
    if (m := re.fullmatch(r"(\d+)\.(\d+)", target)):
        pattern = re.compile(rf"labs/ch{int(m[1]):02d}/lab_{m[1]}_{m[2]}_.*\.ipynb")
    elif (m := re.fullmatch(r"(?:ch)?(\d+)", target)):
        pattern = re.compile(rf"notebooks/ch{int(m[1]):02d}_.*\.ipynb")
    else:
        raise ValueError(f"reset what? {target!r}: give a lab (1.1) or a chapter (ch07)")
    chosen = {rel: src for rel, src in course_files(root).items() if pattern.fullmatch(rel)}
    if not chosen:
        raise ValueError(f"no lab or chapter {target!r} in the course")
    backup = work / ".backup" / time.strftime("%Y%m%d-%H%M%S")
    made = _read_manifest(work)
    for rel, src in chosen.items():
        dst = work / rel
        if dst.exists():
            (backup / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(dst, backup / rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(learner_copy(src))
        made[rel] = _digest(dst.read_bytes())
    _write_manifest(work, made)
    return list(chosen)


# JupyterLab settings for the course (written into the venv by provisioning):
# no "would you like to receive news?" popup and no update check, which also
# keeps JupyterLab from reaching out to the network.
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"checkForUpdates": False,
                                                    "fetchNews": "false"},
}


def install_lab_settings(prefix: str) -> Path:
    """Write <prefix>/share/jupyter/lab/settings/overrides.json."""
    path = Path(prefix, "share/jupyter/lab/settings/overrides.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(LAB_OVERRIDES, indent=1) + "\n")
    return path
