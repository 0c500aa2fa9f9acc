"""The course VM: a stock Debian kernel under QEMU, where kprobes, fentry and
BPF LSM work, for the cells and labs this machine's kernel cannot run.

    sudo .venv/bin/python vm/course_vm.py build --suite bookworm
    sudo .venv/bin/python vm/course_vm.py run --suite bookworm -- \
        python -m pytest tests/test_labs.py -k "5."

`build` makes a disk image from Debian packages alone (debootstrap, the
distribution's kernel and matching headers, BCC) and provisions it with
scripts/provision.sh, the same path as everywhere else, then boots it once to
keep what provisioning does on its own kernel (the header audit). The image is
cached under /var/cache/ebpf-tutor/vm and rebuilt only when its inputs change.

`run` boots it (KVM when it works here, software emulation otherwise), shares
this checkout into the VM at /w, runs the command there with BPF LSM enabled
on the kernel command line, streams its output and returns its exit status.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EBPF_TUTOR_CACHE", "/var/cache/ebpf-tutor")) / "vm"
WORK = ROOT / "vm" / "work"                    # shared with the VM; git-ignored
VENV_IN_VM = "/opt/ebpf-venv"
SUITES = {"bookworm": "Debian 12, kernel 6.1", "trixie": "Debian 13, kernel 6.12"}
BUILD_INPUTS = ["vm/image.txt", "requirements.txt", "constraints.txt",
                "scripts/provision.sh", "vm/init.sh"]
KERNEL_CMDLINE = ("console=ttyS0 root=/dev/vda rw init=/usr/local/sbin/course-vm-init "
                  "panic=-1 lsm=lockdown,capability,landlock,yama,apparmor,bpf")


def log(msg: str) -> None:
    print(f"[vm] {msg}", flush=True)


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def mirror() -> str:
    sys.path.insert(0, str(ROOT))
    from ebpf_tutor.kernel.headers import _mirror_uri
    return _mirror_uri()


# ------------------------------------------------------------------ build --
def image_spec() -> dict[str, str]:
    """vm/image.txt as a dict (`key: value` lines)."""
    pairs = [ln.split(":", 1) for ln in (ROOT / "vm/image.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    return {k.strip(): v.strip() for k, v in pairs}


def image_key(suite: str) -> str:
    h = hashlib.sha256(suite.encode())
    for name in BUILD_INPUTS:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()[:12]


def image_dir(suite: str) -> Path:
    return CACHE / f"{suite}-{image_key(suite)}"


def build(suite: str) -> Path:
    """Build (or reuse) the image for `suite`, warmed; returns its folder."""
    out = image_dir(suite)
    if (out / "disk.img").exists():
        log(f"image {out.name} is up to date")
        warm(out, suite)
        return out
    t0 = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(f"{suite}-*"):
        shutil.rmtree(old, ignore_errors=True)      # one image per suite
    tmp = Path(tempfile.mkdtemp(prefix=f"build-{suite}-", dir=CACHE))
    rootfs = tmp / "rootfs"
    try:
        log(f"debootstrap {suite} (stock kernel, headers, BCC)")
        sh("debootstrap", "--variant=minbase", f"--include={image_spec()['packages']}",
           suite, str(rootfs), mirror(), stdout=subprocess.DEVNULL)
        _provision_rootfs(rootfs)
        kernel = sorted((rootfs / "boot").glob("vmlinuz-*"))[-1]
        initrd = sorted((rootfs / "boot").glob("initrd.img-*"))[-1]
        tmp_out = tmp / "image"
        tmp_out.mkdir()
        shutil.copy(kernel, tmp_out / "vmlinuz")
        shutil.copy(initrd, tmp_out / "initrd.img")
        (tmp_out / "kernel-release").write_text(kernel.name.removeprefix("vmlinuz-") + "\n")
        log("making the disk image")
        sh("mkfs.ext4", "-q", "-F", "-L", "coursevm", "-d", str(rootfs),
           str(tmp_out / "disk.img"), "8G")
        tmp_out.rename(out)
        log(f"built {out.name} in {time.monotonic() - t0:.0f} s")
        warm(out, suite)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _provision_rootfs(rootfs: Path) -> None:
    """Run scripts/provision.sh --image inside the new root, like any machine."""
    w = rootfs / "w"
    try:     # the tree may be in use (CI builds images while the host tests run)
        shutil.copytree(ROOT, w, ignore=shutil.ignore_patterns(
            ".venv", ".git", "vm", "build", ".hypothesis", ".pytest_cache", "__pycache__",
            "*.egg-info", "*.ipynb"))
    except shutil.Error as e:
        if not all("No such file" in str(err) for err in e.args[0]):
            raise
    shutil.copy(ROOT / "vm" / "init.sh", rootfs / "usr/local/sbin/course-vm-init")
    os.chmod(rootfs / "usr/local/sbin/course-vm-init", 0o755)
    # This build machine's network setup (resolver, CA bundle for a TLS proxy, pip config).
    shutil.copy("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(crt, rootfs / "usr/local/share/ca-certificates" / crt.name)
    if Path("/etc/pip.conf").exists():
        shutil.copy("/etc/pip.conf", rootfs / "etc/pip.conf")
    script = (
        "set -e; mount -t proc proc /proc; mount -t sysfs sys /sys; "
        "update-ca-certificates >/dev/null 2>&1 || true; "
        f"cd /w && EBPF_TUTOR_VENV={VENV_IN_VM} bash scripts/provision.sh --image; "
        "apt-get clean; umount /sys /proc"
    )
    log("provisioning the image with scripts/provision.sh --image")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_FIND")}
    sh("unshare", "-m", "--propagation", "private", "chroot", str(rootfs), "/bin/bash", "-c",
       script, env=env)
    shutil.rmtree(w)
    w.mkdir()                                       # the 9p mount point
    (rootfs / "etc/hostname").write_text("course-vm\n")


# -------------------------------------------------------------------- run --
def kvm_works() -> bool:
    """KVM here may be a nested one that hangs a stock kernel: only use it when
    asked (EBPF_TUTOR_VM_ACCEL=kvm) and /dev/kvm exists."""
    return os.environ.get("EBPF_TUTOR_VM_ACCEL") == "kvm" and Path("/dev/kvm").exists()


def warm(img: Path, suite: str) -> None:
    """Boot a new image once with its disk writable, so that the one-time work
    of provisioning on its own kernel (the header audit against BTF: 2-3 min
    under emulation) is kept in the image instead of redone at every run.
    It boots a copy, which replaces the image only if the boot succeeded."""
    if (img / "warmed").exists():
        return
    copy = img / "disk.warming.img"
    sh("cp", "--sparse=always", str(img / "disk.img"), str(copy))
    log("warming the image: one boot that provisions it on its own kernel")
    rc = _boot(img, copy, suite, ["true"], timeout=1800, writable=True)
    if rc == 0:
        copy.replace(img / "disk.img")
        (img / "warmed").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    else:
        copy.unlink(missing_ok=True)
        log(f"warming failed (exit {rc}): each run will audit the headers itself")


def run(suite: str, command: list[str], timeout: int, memory: str = "3G") -> int:
    img = build(suite)
    return _boot(img, img / "disk.img", suite, command, timeout, memory=memory)


def _boot(img: Path, disk: Path, suite: str, command: list[str], timeout: int,
          memory: str = "3G", writable: bool = False) -> int:
    """Boot `disk` (changes discarded unless `writable`), run `command` in it
    after provisioning, and return its exit status."""
    WORK.mkdir(parents=True, exist_ok=True)
    job = f"{suite}-{os.getpid()}{'-warm' if writable else ''}"
    (WORK / f"{job}.sh").write_text("#!/bin/bash\n" + " ".join(_quote(c) for c in command) + "\n")
    for ext in ("log", "rc"):
        (WORK / f"{job}.{ext}").unlink(missing_ok=True)
    accel = "kvm" if kvm_works() else "tcg"
    log(f"booting {SUITES.get(suite, suite)} ({(img / 'kernel-release').read_text().strip()}) "
        f"with {accel}; job {job}")
    qemu = ["qemu-system-x86_64", "-accel", accel, "-smp", "2", "-m", memory,
            "-nographic", "-no-reboot", "-kernel", str(img / "vmlinuz"),
            "-initrd", str(img / "initrd.img"),
            "-drive", f"file={disk},format=raw,if=virtio,snapshot={'off' if writable else 'on'}",
            "-virtfs", f"local,path={ROOT},mount_tag=repo,security_model=none,id=repo",
            "-nic", "none",
            "-append", f"{KERNEL_CMDLINE} course.job={job}"]
    if accel == "tcg":
        qemu[1:1] = ["-cpu", "max"]
    t0 = time.monotonic()
    console = WORK / f"{job}.console"
    with open(console, "w") as con:
        try:
            subprocess.run(qemu, stdout=con, stderr=subprocess.STDOUT, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            log(f"timed out after {timeout} s; console tail:")
            print(console.read_text()[-3000:])
            return 124
    out = WORK / f"{job}.log"
    rc_file = WORK / f"{job}.rc"
    if out.exists():
        print(out.read_text())
    if not rc_file.exists():
        log("the job did not finish; console tail:")
        print(console.read_text()[-3000:])
        return 125
    rc = int(rc_file.read_text().strip() or 1)
    log(f"{suite}: exit {rc} in {time.monotonic() - t0:.0f} s")
    return rc


def _quote(s: str) -> str:
    import shlex
    return shlex.quote(s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--suite", default="bookworm", choices=sorted(SUITES))
    r = sub.add_parser("run")
    r.add_argument("--suite", default="bookworm", choices=sorted(SUITES))
    r.add_argument("--timeout", type=int, default=1800)
    r.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        build(args.suite)
        return 0
    command = [c for c in args.command if c != "--"] or ["true"]
    return run(args.suite, command, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
