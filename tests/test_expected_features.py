"""What each kernel the course runs on can do, and what it must be able to do.

Every feature the doctor knows is tried here by loading and attaching a real
program. The outcome is recorded in the JUnit XML (property `feature`), from
which tools/compat_matrix.py builds the feature table of
docs/compatibility.md. A missing feature must come with a reason and a fix.

The course VM (vm/course_vm.py) boots stock Debian kernels where kprobes,
fentry and BPF LSM work, and sets EBPF_TUTOR_EXPECT_FEATURES to say so; a
regression that made the doctor (and so every fallback decision) miss them
fails here."""
import os

import pytest

from ebpf_tutor.doctor import FEATURES, OK, feature_item
from tests.conftest import needs_root

EXPECTED = {f.strip().lower() for f in os.environ.get("EBPF_TUTOR_EXPECT_FEATURES", "").split(",")
            if f.strip()}


@needs_root
@pytest.mark.parametrize("feature", [name for name, _ in FEATURES])
def test_feature(feature, record_property):
    item = feature_item(feature)
    if item.status == OK:
        record_property("feature", "available")
        return
    record_property("feature", f"missing: {item.detail}")
    assert feature.lower() not in EXPECTED, f"{feature} should work on this kernel: {item.detail}"
    assert item.detail.strip() and "Traceback" not in item.detail, f"{feature}: no readable reason"
    assert item.fix.strip(), f"{feature}: the doctor gives no fix"


def test_expected_names_are_features():
    known = {name.lower() for name, _ in FEATURES}
    assert EXPECTED <= known, f"unknown in EBPF_TUTOR_EXPECT_FEATURES: {EXPECTED - known}"
