"""On a kernel that is known to have a feature, the doctor must find it.

The course VM (vm/course_vm.py) boots stock Debian kernels where kprobes,
fentry and BPF LSM work, and sets EBPF_TUTOR_EXPECT_FEATURES to say so; a
regression that made the doctor (and so every fallback decision) miss them
fails here. Without the variable this test has nothing to assert and skips."""
import os

import pytest

from tests.conftest import needs_root

EXPECTED = [f.strip() for f in os.environ.get("EBPF_TUTOR_EXPECT_FEATURES", "").split(",") if f.strip()]


@needs_root
@pytest.mark.skipif(not EXPECTED, reason="EBPF_TUTOR_EXPECT_FEATURES not set (set by the course VM)")
@pytest.mark.parametrize("feature", EXPECTED or ["-"])
def test_expected_feature_is_available(feature):
    from ebpf_tutor.doctor import FEATURES, _probe
    probe = dict(FEATURES)[feature]
    ok, detail = _probe(probe)
    assert ok, f"{feature} should work on this kernel: {detail}"
