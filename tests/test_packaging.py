"""The environment files say the same thing, and say it honestly."""
import re

import yaml

from tests.conftest import ROOT


def pins(path) -> dict[str, str]:
    out = {}
    for line in (ROOT / path).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_environment_yml_parses_and_matches_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] and "conda-forge" in env["channels"]
    specs = {}
    for dep in env["dependencies"]:
        assert isinstance(dep, str), "pip sections are not used: every package comes from conda-forge"
        name, _, version = dep.partition("=")
        specs[name.lower().replace("_", "-")] = version
    assert "bcc" not in specs and "python3-bpfcc" not in specs, "BCC is not a conda-forge package"
    req = pins("requirements.txt")
    for name, version in req.items():
        assert specs.get(name) == version, f"{name}: requirements.txt pins {version}, environment.yml {specs.get(name)}"


def test_requirements_are_all_pinned_and_constrained():
    req = (ROOT / "requirements.txt").read_text().splitlines()
    reqs = [ln for ln in req if ln.strip() and not ln.startswith("#")]
    assert all("==" in ln for ln in reqs), "every requirement is pinned"
    frozen = pins("constraints.txt")
    for req_file in ("requirements.txt", "scripts/host-requirements.txt"):
        for name, version in pins(req_file).items():
            assert frozen.get(name) == version, f"{name} differs between {req_file} and constraints"


def test_dockerfile_and_vagrantfile_use_the_provisioning_script():
    assert "scripts/provision.sh --image" in (ROOT / "Dockerfile").read_text()
    assert "scripts/provision.sh --runtime" in (ROOT / "Dockerfile").read_text()
    assert "scripts/provision.sh" in (ROOT / "Vagrantfile").read_text()
    assert "ARG BASE" in (ROOT / "Dockerfile").read_text()
