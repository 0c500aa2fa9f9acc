"""Kernel headers for BCC, on any kernel, checked against BTF.

BCC compiles C against the running kernel's headers. When the layouts in
those headers differ from the kernel's real ones, programs still compile and
load but read the wrong bytes (a parent pid of 0, say). So this module:

1. finds a header tree that already exists (`$BCC_KERNEL_SOURCE`,
   `/lib/modules/$(uname -r)/build`, the kernel's own kheaders archive, or
   our cache);
2. otherwise prepares one from the distribution's kernel source of the same
   major.minor, configured with the running kernel's exact `/proc/config.gz`;
3. always audits every struct of the course's header set against BTF
   (`layouts.py`); in a tree it prepared, it rewrites the structs that
   disagree from BTF and makes any it cannot fix unusable (`repair.py`).
   A tree with a silently wrong struct is never used.

Run it as `ebpf-tutor headers` (the provisioning script does).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import layouts, repair
from .arch import kernel_arch
from .btf import VMLINUX, kernel_btf

# Fields whose offsets must agree between the header tree and BTF. They span
# the structs the course reads: processes, sockets, packets, files.
LAYOUT_FIELDS: list[tuple[str, str]] = [
    ("task_struct", "pid"),
    ("task_struct", "tgid"),
    ("task_struct", "real_parent"),
    ("task_struct", "comm"),
    ("task_struct", "mm"),
    ("task_struct", "cgroups"),
    ("sk_buff", "len"),
    ("sk_buff", "protocol"),
    ("sock_common", "skc_daddr"),
    ("sock_common", "skc_rcv_saddr"),
    ("sock_common", "skc_dport"),
    ("sock_common", "skc_family"),
    ("sock", "sk_rcvbuf"),
    ("file", "f_path"),
    ("file", "f_inode"),
    ("dentry", "d_name"),
    ("inode", "i_ino"),
    ("mm_struct", "arg_start"),
]
SOURCE_SUITES = ["bookworm", "bookworm-backports", "trixie", "trixie-backports", "sid"]
STATUS_FILE = ".ebpf-tutor-headers.json"
# Bump when the way a tree is prepared or audited changes: older statuses
# are then audited again (and our own trees prepared again).
RECIPE = 4


class HeadersError(RuntimeError):
    """No usable header tree: the message says why and what to do."""


@dataclass
class FieldCheck:
    field: str
    btf: int | None
    headers: int | None

    @property
    def ok(self) -> bool:
        return self.btf is not None and self.btf == self.headers


@dataclass
class HeadersStatus:
    path: str
    origin: str                      # "env", "lib/modules", "kheaders", "prepared"
    verified: bool
    checks: list[FieldCheck] = field(default_factory=list)   # the well-known fields, shown
    source: str = ""                 # e.g. "linux_6.18.15.orig.tar.xz"
    error: str = ""
    members: int = 0                 # the full audit: members and structs compared
    records: int = 0
    wrong: list[str] = field(default_factory=list)      # mismatches in usable structs
    wrong_structs: list[str] = field(default_factory=list)
    skipped_headers: list[str] = field(default_factory=list)   # do not compile here: not audited
    repaired: list[str] = field(default_factory=list)   # structs rewritten from BTF
    poisoned: list[str] = field(default_factory=list)   # structs made unusable
    btf_id: str = ""
    recipe: int = 0
    seconds: float = 0.0             # time to prepare (or audit) this tree

    @property
    def mismatches(self) -> list[FieldCheck]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> str:
        if self.error:
            return f"{self.path}: {self.error}"
        where = f"{self.path} ({self.origin}{', ' + self.source if self.source else ''})"
        if not self.verified:
            bad = [f"{c.field} headers={c.headers} btf={c.btf}" for c in self.mismatches[:3]] or self.wrong[:3]
            return f"{where}: WRONG layouts: {', '.join(bad)}"
        text = f"{where}: {self.members:,} members of {self.records:,} structs match BTF"
        if self.repaired:
            text += f"; {len(self.repaired)} structs repaired from BTF"
        if self.poisoned:
            text += f"; {len(self.poisoned)} unusable ({', '.join(self.poisoned)})"
        if self.skipped_headers:
            text += f"; not compiling here, so not audited: {', '.join(self.skipped_headers)}"
        return text


def release() -> str:
    return platform.release()


def cache_dir() -> Path:
    """Where prepared trees live: $EBPF_TUTOR_CACHE, else /var/cache/ebpf-tutor."""
    return Path(os.environ.get("EBPF_TUTOR_CACHE", "/var/cache/ebpf-tutor"))


# ---------------------------------------------------------------- finding --
def candidates() -> list[tuple[str, Path]]:
    """Header trees to try, best first, that exist on disk."""
    rel = release()
    found: list[tuple[str, Path]] = []
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        found.append(("env", Path(env)))
    for sub in ("build", "source"):
        p = Path("/lib/modules", rel, sub)
        if (p / "include").is_dir():
            found.append(("lib/modules", p.resolve()))
    for origin in ("kheaders", "prepared"):
        p = cache_dir() / "headers" / f"{rel}-{origin}"
        if (p / "include").is_dir():
            found.append((origin, p))
    return found


def _read_status(tree: Path) -> HeadersStatus | None:
    try:
        raw = json.loads((tree / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    raw["checks"] = [FieldCheck(**c) for c in raw.get("checks", [])]
    return HeadersStatus(**raw)


def _write_status(tree: Path, st: HeadersStatus) -> None:
    try:
        (tree / STATUS_FILE).write_text(json.dumps(asdict(st), indent=1))
    except OSError:
        pass  # read-only tree (a distro package): fine, we verify again next time


# ------------------------------------------------------------- verifying --
def source_dir(tree: Path) -> Path:
    """Where the non-generated headers of a tree are. Debian splits a headers
    package in two: <flavour>/ (config, generated files) and a -common/ tree,
    named by the one-line Makefile `include .../linux-headers-X-common/Makefile`."""
    try:
        m = re.match(r"include (\S+)/Makefile\s*$", (tree / "Makefile").read_text())
    except OSError:
        m = None
    return Path(m.group(1)) if m and Path(m.group(1), "include").is_dir() else tree


def compile_flags(tree: Path) -> list[str]:
    """The include flags BCC's kbuild helper uses for a tree (written anew here).

    No compat.h here: it stands in for BCC's bundled uapi <linux/bpf.h>,
    while this compile sees the tree's own, complete uapi."""
    a = kernel_arch()
    k, s = str(tree), str(source_dir(tree))
    return [
        f"-I{s}/arch/{a}/include", f"-I{k}/arch/{a}/include/generated",
        f"-I{s}/include", f"-I{k}/include", f"-I{s}/arch/{a}/include/uapi",
        f"-I{k}/arch/{a}/include/generated/uapi", f"-I{s}/include/uapi",
        f"-I{k}/include/generated/uapi", "-include", f"{s}/include/linux/kconfig.h",
        "-D__KERNEL__", "-D__BPF_TRACING__", '-DKBUILD_MODNAME="ebpf_tutor"',
        f"-D__TARGET_ARCH_{a}",
    ]


def btf_identity() -> str:
    """A short hash of the running kernel's BTF: a status is valid for it only."""
    try:
        return hashlib.sha256(VMLINUX.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def verify(tree: Path, origin: str = "", source: str = "",
           poisoned: list[str] | None = None) -> HeadersStatus:
    """Audit every struct of the header set in `tree` against BTF. Structs
    already made unusable (`poisoned`) may differ; any other difference
    leaves the tree unverified."""
    st = HeadersStatus(path=str(tree), origin=origin, verified=False, source=source,
                       btf_id=btf_identity(), recipe=RECIPE, poisoned=sorted(poisoned or []))
    if not VMLINUX.exists():
        st.error = "no BTF at /sys/kernel/btf/vmlinux, so layouts cannot be checked"
        return st
    btf = kernel_btf()
    try:
        full = layouts.audit(compile_flags(tree), btf)
    except layouts.LayoutCompileError as e:
        st.error = f"headers in {tree} do not compile: {e}"
        return st
    st.members, st.records = full.members, full.records
    st.skipped_headers = full.skipped_headers
    bad = [m for m in full.mismatches if m.record not in st.poisoned]
    st.wrong = [str(m) for m in bad]
    st.wrong_structs = sorted({m.record for m in bad})
    for s, m in LAYOUT_FIELDS:      # the well-known fields, shown by the doctor and chapter 4
        try:
            want: int | None = btf.member_offset(s, m)
        except KeyError:
            continue
        st.checks.append(FieldCheck(f"{s}.{m}", want, full.offsets.get((f"struct {s}", m))))
    st.verified = full.records > 0 and not st.wrong and all(
        c.ok for c in st.checks if c.field.rsplit(".", 1)[0] not in {p.split()[-1] for p in st.poisoned})
    return st


def repair_tree(tree: Path, st: HeadersStatus, log=print) -> HeadersStatus:
    """Rewrite the structs that disagree with BTF; make unusable those that
    cannot be rewritten; audit again. Twice at most: a repaired struct can
    expose one that embeds it."""
    flags = compile_flags(tree)
    repaired: set[str] = set(st.repaired)
    poisoned: set[str] = set(st.poisoned)
    for _ in range(2):
        wrong = [w for w in st.wrong_structs if w not in poisoned]
        if not wrong:
            break
        log(f"repairing {len(wrong)} structs from BTF ({', '.join(wrong[:5])}{', ...' if len(wrong) > 5 else ''})")
        try:
            result = repair.repair(flags, wrong, log=log)
        except RuntimeError as e:
            raise HeadersError(f"could not repair {tree}: {e}") from None
        repaired |= set(result.repaired)
        poisoned |= set(result.poisoned)
        repaired -= poisoned
        st = verify(tree, st.origin, st.source, sorted(poisoned))
    st.repaired = sorted(repaired)
    return st


# ------------------------------------------------------------- preparing --
def _regenerate_autoconf(tree: Path, config_text: str) -> None:
    """Write include/generated/autoconf.h straight from the running kernel's
    config. `make olddefconfig` drops options the local compiler or the
    vanilla source does not know, which shifts struct layouts."""
    out = ["/* generated by ebpf-tutor from /proc/config.gz */"]
    for line in config_text.splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if not m:
            continue
        name, val = m.groups()
        if val == "y":
            out.append(f"#define {name} 1")
        elif val == "m":
            out.append(f"#define {name}_MODULE 1")
        elif val != "n":
            out.append(f"#define {name} {val}")
    (tree / "include/generated/autoconf.h").write_text("\n".join(out) + "\n")


# Generated headers whose values come from compiling a file of the tree with
# its config: (source, header, include guard), as the top-level Kbuild makes them.
GENERATED_OFFSETS = [
    ("kernel/bounds.c", "include/generated/bounds.h", "__LINUX_BOUNDS_H__"),
    ("arch/{arch}/kernel/asm-offsets.c", "include/generated/asm-offsets.h", "__ASM_OFFSETS_H__"),
    ("kernel/sched/rq-offsets.c", "include/generated/rq-offsets.h", "__RQ_OFFSETS_H__"),
]


def _regenerate_offsets(tree: Path, log=print) -> list[str]:
    """Compute bounds.h, asm-offsets.h and rq-offsets.h again from the
    verbatim config: `make prepare` computed them from the olddefconfig'd
    one (NR_PAGEFLAGS, MAX_NR_ZONES... size struct zone and pglist_data).
    Each `->NAME value` marker of the compiled file becomes a #define, as
    Kbuild's sed script does. Returns the headers rewritten."""
    done = []
    for src, header, guard in GENERATED_OFFSETS:
        path = tree / src.format(arch=kernel_arch())
        if not path.exists():
            continue
        cmd = ["clang", "-nostdinc", "-isystem", layouts.clang_include(), "-w", "-S", "-O2",
               "-fno-PIE", "-o", "-", *compile_flags(tree), str(path)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tree)
        marks = re.findall(r'\.ascii\s*"->(\S*)(?: [$#]*(\S+) (.*))?"', r.stdout)
        if r.returncode == 0 and marks:
            lines = [f"#ifndef {guard}", f"#define {guard}", "/*", " * DO NOT MODIFY.", " *",
                     " * Generated by ebpf-tutor from the running kernel's config", " */", ""]
            for name, value, comment in marks:
                lines.append(f"#define {name} {value} /* {comment} */" if value else
                             (f"/* {name.lstrip('#')} */" if name else ""))
            (tree / header).write_text("\n".join(lines + ["", "#endif", ""]))
            done.append(header)
        elif (tree / header).exists():
            log(f"{src} does not compile outside Kbuild: make's {header} is kept, its offsets taken from BTF")
        if (tree / header).exists():
            _offsets_from_btf(tree / header)
    return done


def _offsets_from_btf(header: Path) -> None:
    """Every `#define NAME value /* offsetof(struct S, m) */` takes BTF's
    offset: BTF describes the running kernel, whatever the tree says
    (rq-offsets.h's RQ_nr_pinned is used by linux/sched.h's inline code)."""
    btf = kernel_btf()

    def exact(m: re.Match) -> str:
        try:
            return f"{m.group(1)}{btf.member_offset(m.group(4), m.group(5))}{m.group(3)}"
        except KeyError:
            return m.group(0)
    pattern = r"^(#define \w+ )(\d+)( /\* offsetof\(struct (\w+), ([\w.]+)\) \*/)$"
    header.write_text(re.sub(pattern, exact, header.read_text(), flags=re.M))


def _mirror_uri() -> str:
    """The Debian mirror this machine's apt already uses."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            texts.append(p.read_text())
        except OSError:
            continue
    for text in texts:
        for m in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s*)?)(\S+)", text, re.M):
            uri = m.group(1)
            if "security" not in uri and "debian" in uri:
                return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def _version_key(v: str) -> list:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]


def _series(version: str) -> tuple[int, int]:
    """(major, minor) of a Debian linux version such as 6.18.15-1~bpo13+1."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _nearest_series(listed: set[str], want: tuple[int, int]) -> list[str]:
    """The versions of the series nearest to `want` (the older on a tie), newest first."""
    series = sorted({_series(v) for v in listed},
                    key=lambda s: (abs((s[0] - want[0]) * 1000 + s[1] - want[1]), s > want))
    if not series:
        return []
    return sorted((v for v in listed if _series(v) == series[0]), key=_version_key, reverse=True)


def _download_source(workdir: Path, log) -> Path:
    """Download the orig tarball of a Debian `linux` source of the running
    kernel's major.minor, with a temporary apt source list (the system's apt
    configuration is left alone)."""
    major_minor = os.environ.get("EBPF_TUTOR_SOURCE_SERIES") or ".".join(release().split(".")[:2])
    upstream = re.match(r"\d+\.\d+(\.\d+)?", release()).group(0)
    lists = workdir / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    src_list = workdir / "sources.list"
    uri = _mirror_uri()
    src_list.write_text("".join(f"deb-src {uri} {s} main\n" for s in SOURCE_SUITES))
    opts = ["-o", f"Dir::Etc::SourceList={src_list}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={lists}", "-o", "Acquire::Check-Valid-Until=false"]
    log(f"looking up Debian kernel sources for {major_minor} on {uri}")
    subprocess.run(["apt-get", *opts, "update", "-qq"], check=False, capture_output=True)
    shown = subprocess.run(["apt-cache", *opts, "showsrc", "linux"], capture_output=True, text=True)
    listed = set(re.findall(r"^Version: (\S+)", shown.stdout, re.M))
    versions = sorted({v for v in listed if v.startswith(major_minor + ".")},
                      key=_version_key, reverse=True)
    # the exact upstream release first, then the newest of the same major.minor
    versions.sort(key=lambda v: not v.startswith(upstream + "-"))
    if not versions:
        # No source of this series (a kernel newer than the distribution, say):
        # the nearest series, older first; the audit and the repair from BTF
        # then make its layouts this kernel's.
        versions = _nearest_series(listed, _series(major_minor))
        if versions:
            log(f"no linux {major_minor} source is listed: using the nearest, "
                "{}.{} (the audit will repair what differs)".format(*_series(versions[0])))
    if not versions:
        raise HeadersError(f"no Debian source package of linux is listed in "
                           f"{', '.join(SOURCE_SUITES)}: install headers for this kernel, "
                           "or set BCC_KERNEL_SOURCE to a prepared tree")
    for v in versions:
        log(f"downloading linux {v} source (orig tarball)")
        r = subprocess.run(["apt-get", *opts, "source", "--download-only", "--tar-only", "-qq",
                            f"linux={v}"], cwd=workdir, capture_output=True, text=True)
        tars = sorted(workdir.glob("linux_*.orig.tar.*"))
        if tars:
            return tars[0]
        log(f"  not available ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})")
    raise HeadersError(f"none of the linux {major_minor} sources could be downloaded")


def prepare_from_source(dest: Path, log=print) -> HeadersStatus:
    """Build a header tree at `dest` from the distro's source + /proc/config.gz."""
    config = Path("/proc/config.gz")
    if not config.exists():
        raise HeadersError("the kernel does not expose /proc/config.gz (CONFIG_IKCONFIG_PROC), "
                           "so its exact configuration is unknown: install its headers package")
    config_text = gzip.decompress(config.read_bytes()).decode()
    dest.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="prep-", dir=dest.parent))
    try:
        tarball = _download_source(work, log)
        log(f"unpacking {tarball.name}")
        _untar(tarball, work)
        tree = next(p for p in work.iterdir() if p.is_dir() and p.name.startswith("linux"))
        (tree / ".config").write_text(config_text)
        a = kernel_arch()
        log("make olddefconfig && make prepare")
        for target in ("olddefconfig", "prepare"):
            r = subprocess.run(["make", f"ARCH={a}", f"-j{os.cpu_count() or 2}", target],
                               cwd=tree, capture_output=True, text=True)
            if r.returncode != 0:
                raise HeadersError(f"make {target} failed: {r.stderr.strip()[-400:]}")
        _regenerate_autoconf(tree, config_text)
        _regenerate_offsets(tree, log)
        log("auditing every struct of the header set against BTF")
        st = verify(tree, "prepared", tarball.name)
        if st.wrong:
            st = repair_tree(tree, st, log)
            _regenerate_offsets(tree, lambda *_: None)   # asm-offsets from the repaired layouts
        if not st.verified:
            raise HeadersError("prepared headers do not match BTF: " + st.summary())
        _prune(tree, a)
        if dest.exists():
            shutil.rmtree(dest)
        tree.rename(dest)
        st.path = str(dest)
        st.seconds = round(time.monotonic() - began, 1)
        _write_status(dest, st)
        return st
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prune(tree: Path, arch: str) -> None:
    """Keep only what a compile needs: include/, arch/<arch>/, scripts, config."""
    keep = {"include", "arch", "scripts", "Makefile", ".config", "Kconfig"}
    for p in tree.iterdir():
        if p.name not in keep:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in (tree / "arch").iterdir():
        if p.is_dir() and p.name != arch:
            shutil.rmtree(p)


def extract_kheaders(dest: Path) -> bool:
    """Unpack the kernel's own headers archive (CONFIG_IKHEADERS), if present."""
    archive = Path("/sys/kernel/kheaders.tar.xz")
    if not archive.exists():
        return False
    dest.mkdir(parents=True, exist_ok=True)
    _untar(archive, dest)
    return True


def _untar(archive: Path, dest: Path) -> None:
    """Unpack with tar(1): several times faster than tarfile on a kernel tree,
    and the same on every Python version."""
    r = subprocess.run(["tar", "-xf", str(archive), "-C", str(dest)], capture_output=True, text=True)
    if r.returncode != 0:
        raise HeadersError(f"could not unpack {archive.name}: {r.stderr.strip()[-300:]}")


# ------------------------------------------------------------ the entry --
def ensure(log=print, prepare: bool = True) -> HeadersStatus:
    """Return a verified header tree, preparing one if needed.

    Trees we verified before carry a status file, so a second call takes
    milliseconds. Raises HeadersError when no verified tree can be had."""
    rel = release()
    kh = cache_dir() / "headers" / f"{rel}-kheaders"
    if not (kh / "include").is_dir():
        extract_kheaders(kh)
    rejected: list[HeadersStatus] = []
    here = btf_identity()
    for origin, tree in candidates():
        st = _read_status(tree)
        if st is None or st.recipe != RECIPE or st.btf_id != here:
            if origin == "prepared" and st is not None and st.recipe != RECIPE:
                log(f"{tree} was prepared by an older recipe: preparing it again")
                continue
            began = time.monotonic()
            st = verify(tree, origin)
            if st.wrong and origin == "kheaders":
                st = repair_tree(tree, st, log)
            st.seconds = round(time.monotonic() - began, 1)
            if st.verified:
                _write_status(tree, st)
        if st.verified:
            return st
        rejected.append(st)
        log(f"rejected header tree {st.summary()}")
    if not prepare:
        raise HeadersError("no header tree verified against BTF"
                           + "".join(f"\n  {r.summary()}" for r in rejected)
                           + "\nfix: run `ebpf-tutor headers` (or scripts/provision.sh)")
    return prepare_from_source(cache_dir() / "headers" / f"{rel}-prepared", log)


def activate(st: HeadersStatus) -> None:
    """Point BCC at the verified tree for this process and its children.

    Trees under /lib/modules are where BCC looks by itself (and there it
    also finds the second half of a split Debian package), so they need no
    variable; BCC_KERNEL_SOURCE names a single tree."""
    if st.origin != "lib/modules":
        os.environ["BCC_KERNEL_SOURCE"] = st.path
