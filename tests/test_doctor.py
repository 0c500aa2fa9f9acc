"""The doctor decides features by trying them, and explains every gap."""
import pytest

from ebpf_tutor.doctor import MISSING, OK, capabilities, doctor, kernel_config
from tests.conftest import needs_root


@pytest.fixture(scope="module")
def report():
    return doctor()


@needs_root
def test_every_missing_item_has_a_fix(report):
    for item in report.items:
        assert item.status in (OK, MISSING, "warn")
        if item.status == MISSING:
            assert item.fix, f"{item.name} is missing without a fix or reason"


@needs_root
def test_features_agree_with_the_kernel_build(report):
    cfg = kernel_config()
    if cfg:
        assert report.available("kprobes") == (cfg.get("CONFIG_KPROBES") == "y" and
                                                report.available("kprobes"))
        if cfg.get("CONFIG_KPROBES") != "y":
            assert not report.available("kprobes")
            assert "CONFIG_KPROBES" in report.get("kprobes").fix
    # what every kernel the course supports (5.8+, BTF) must have
    for name in ("tracepoints", "raw tracepoints", "uprobes", "XDP", "TC",
                 "cgroup programs", "ring buffer"):
        assert report.available(name), f"{name}: {report.get(name).detail}"


@needs_root
def test_headers_are_verified_against_btf(report):
    item = report.get("kernel headers")
    assert item.status == OK, item.detail
    assert "structs match BTF" in item.detail


def test_capabilities_parse_a_status_file(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000000c000001000\n")   # bits 12, 38, 39
    assert capabilities("CapEff", str(status)) == {"CAP_NET_ADMIN", "CAP_PERFMON", "CAP_BPF"}


def test_report_renders_as_text_and_html():
    r = doctor(features=False)
    assert "kernel" in r.text()
    assert "<table>" in r._repr_html_()
