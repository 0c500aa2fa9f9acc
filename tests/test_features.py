"""ebpf_tutor.features: cached feature detection, reasons, the one-line notice."""
from __future__ import annotations

import os

import pytest

from ebpf_tutor import features
from tests.conftest import needs_root


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.delenv(features.DISABLE_ENV, raising=False)
    features.reset()
    yield
    features.reset()


def fake_probes(monkeypatch, results: dict[str, tuple[bool, str]]) -> list[str]:
    """Replace the doctor's probes with canned results; returns the call log."""
    calls: list[str] = []

    def probe_function(name):
        def probe():
            calls.append(name)
            ok, detail = results[name]
            if not ok:
                raise RuntimeError(detail)
            return detail
        return probe

    monkeypatch.setattr(features, "_probe_function", probe_function)
    monkeypatch.setattr(features.os, "geteuid", lambda: 0)
    return calls


def test_aliases_and_unknown_names():
    assert features.canonical("kretprobes") == "kprobes"
    assert features.canonical("KPROBE") == "kprobes"
    assert features.canonical("fexit") == "fentry"
    assert features.canonical("LSM") == "lsm"
    assert features.canonical("raw_tracepoint") == "raw tracepoints"
    with pytest.raises(KeyError, match="unknown feature"):
        features.canonical("time travel")


def test_each_feature_is_tried_once(monkeypatch):
    calls = fake_probes(monkeypatch, {"tracepoints": (True, "attached"),
                                      "kprobes": (False, "no kprobe_events")})
    monkeypatch.setattr(features, "_kernel_config", lambda: {})
    for _ in range(3):
        assert features.available("tracepoints")
        assert not features.available("kretprobes")
    assert calls == ["tracepoints", "kprobes"]


def test_reason_from_kernel_config(monkeypatch):
    fake_probes(monkeypatch, {"kprobes": (False, "kprobes are not available: tracefs has "
                                          "no kprobe_events")})
    monkeypatch.setattr(features, "_kernel_config", lambda: {"CONFIG_BPF": "y"})
    assert features.reason("kprobes") == "built without CONFIG_KPROBES"


def test_reason_falls_back_to_the_probe_detail(monkeypatch):
    fake_probes(monkeypatch, {"uprobes": (False, "attached, but counted 0/3 calls")})
    monkeypatch.setattr(features, "_kernel_config", lambda: {})
    assert features.reason("uprobes") == "RuntimeError: attached, but counted 0/3 calls"


def test_fentry_reason_when_ftrace_is_refused(monkeypatch):
    fake_probes(monkeypatch, {"fentry": (False, "loading kfunc__x was refused")})
    monkeypatch.setattr(features, "_kernel_config",
                        lambda: {"CONFIG_DEBUG_INFO_BTF": "y", "CONFIG_FUNCTION_TRACER": "y"})
    monkeypatch.setattr(features, "_ftrace_refused", lambda: True)
    assert "refuses ftrace function hooks" in features.reason("fexit")


def test_notice_is_one_line_and_only_when_missing(monkeypatch, capsys):
    fake_probes(monkeypatch, {"kprobes": (False, "x"), "tracepoints": (True, "ok")})
    monkeypatch.setattr(features, "_kernel_config", lambda: {"CONFIG_KPROBES": "n"})
    features.notice("kprobes", "the tracepoint fallback")
    features.notice("tracepoints", "nothing")
    out = capsys.readouterr().out
    assert out == ("kprobes: not available on this kernel (built without CONFIG_KPROBES); "
                   "running the tracepoint fallback instead.\n")


def test_disable_env_wins_without_probing(monkeypatch, capsys):
    calls = fake_probes(monkeypatch, {"tracepoints": (True, "ok")})
    monkeypatch.setenv(features.DISABLE_ENV, "tracepoint, fexit")
    assert not features.available("tracepoints")
    assert not features.available("fentry")
    assert calls == []
    features.notice("fentry", "a tracepoint")
    assert capsys.readouterr().out.strip() == (
        f"fentry/fexit: not available on this kernel (disabled by {features.DISABLE_ENV}); "
        "running a tracepoint instead.")


def test_not_root_is_a_reason(monkeypatch):
    monkeypatch.setattr(features.os, "geteuid", lambda: 1000)
    assert not features.available("kprobes")
    assert features.reason("kprobes").startswith("not root")


def test_requires_is_a_skip_mark(monkeypatch):
    fake_probes(monkeypatch, {"kprobes": (False, "x"), "tracepoints": (True, "ok")})
    monkeypatch.setattr(features, "_kernel_config", lambda: {"CONFIG_KPROBES": "n"})
    missing, present = features.requires("kprobes"), features.requires("tracepoints")
    assert missing.name == present.name == "skipif"
    assert missing.args == (True,) and present.args == (False,)
    assert missing.kwargs["reason"] == "kprobes not available: built without CONFIG_KPROBES"


# ------------------------------------------------- on this machine, for real --
@needs_root
def test_tracepoints_really_work_here():
    assert features.available("tracepoints")
    assert features.reason("tracepoints") == "available"


@needs_root
def test_kprobes_answer_matches_the_kernel_config():
    from ebpf_tutor.doctor import kernel_config
    cfg = kernel_config()
    if not cfg:
        pytest.skip("no /proc/config.gz")
    has = features.available("kprobes")
    if cfg.get("CONFIG_KPROBES") != "y":
        assert not has
        assert features.reason("kprobes") == "built without CONFIG_KPROBES"
    else:
        assert has == os.path.exists("/sys/kernel/tracing/kprobe_events")


@needs_root
@features.requires("tracepoints")
def test_requires_lets_a_test_run_where_the_feature_exists():
    from ebpf_tutor import Program
    with Program("BPF_ARRAY(n, u64, 1);\nTRACEPOINT_PROBE(syscalls, sys_enter_getppid) "
                 "{ n.increment(0); return 0; }") as prog:
        os.getppid()
        assert prog["n"][0].value >= 1
