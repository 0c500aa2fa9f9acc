"""Chapter 18's profiler: folding, the flame graph's layout and SVG, perf's
output parsed, and the CLI on workloads whose profiles are known."""
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from ebpf_tutor.apps.profiler import flamegraph, fold, perf, workloads
from tests.conftest import ROOT, interruptible, needs_root

FOLDED = {"app;main;hot;spin": 300, "app;main;cold;spin": 100,
          "app;main;hot;spin;irq_[k]": 4}


def test_fold_adds_equal_stacks_and_round_trips():
    f = fold.fold([(["a", "b"], 2), (["a", "b"], 3), (["a", "c;d"], 1)])
    assert f == {"a;b": 5, "a;c:d": 1}
    assert fold.parse(fold.to_text(f)) == f
    assert fold.to_text(f) == "a;b 5\na;c:d 1\n"


def test_share_is_inclusive_and_counts_a_stack_once():
    assert fold.share(FOLDED, "hot") == pytest.approx(304 / 404)
    assert fold.share(FOLDED, "main") == 1.0
    assert fold.share({"a;f;f": 2, "a;g": 2}, "f") == 0.5
    assert fold.share({}, "f") == 0.0


def test_layout_nests_children_inside_parents():
    boxes = flamegraph.layout(FOLDED)
    assert boxes[0].name == "all" and boxes[0].width == 1.0
    by = {(b.name, b.depth): b for b in boxes}
    hot, cold = by[("hot", 3)], by[("cold", 3)]
    assert hot.width == pytest.approx(304 / 404) and cold.width == pytest.approx(100 / 404)
    assert cold.x + cold.width <= hot.x + 1e-9          # siblings side by side, sorted by name
    irq = by[("irq_[k]", 5)]
    spin = [b for b in boxes if b.name == "spin" and b.x <= irq.x < b.x + b.width][0]
    assert spin.x <= irq.x and irq.x + irq.width <= spin.x + spin.width + 1e-9


def test_svg_is_well_formed_with_a_tooltip_per_box():
    svg = flamegraph.render(FOLDED, title="t <&>")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    titles = [t.text for t in root.iter(f"{ns}title")]
    assert len(titles) == len(flamegraph.layout(FOLDED))
    assert any(t.startswith("hot (304 samples, 75.2%)") for t in titles)
    assert "rgb(" in svg and flamegraph.FlameGraph(FOLDED)._repr_svg_().startswith("<svg")
    assert "no samples" in flamegraph.render({})


def test_perf_script_parsed_leaf_last_kernel_marked():
    text = ("my app 181 \n"
            "\tffffffff81000 schedule+0x12 ([kernel.kallsyms])\n"
            "\t    1172 spin (/x/hc)\n\t    11a1 hot (/x/hc)\n\n"
            "my app 181 \n\t    1179 spin (/x/hc)\n\t    11bd cold (/x/hc)\n")
    assert perf.parse_script(text) == {"my app;hot;spin;schedule_[k]": 1, "my app;cold;spin": 1}


def test_help_lists_the_modes():
    r = subprocess.run([sys.executable, "-m", "ebpf_tutor", "profile", "--help"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0
    for mode in ("oncpu", "offcpu", "alloc", "io", "--folded", "--svg", "-- COMMAND"):
        assert mode in r.stdout


def profile(*args: str, stdin=None, timeout: float = 60) -> dict:
    r = subprocess.run([sys.executable, "-m", "ebpf_tutor", "profile", *args],
                       capture_output=True, text=True, cwd=ROOT, input=stdin, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@needs_root
def test_a_command_that_does_not_start_is_an_error():
    r = subprocess.run([sys.executable, "-m", "ebpf_tutor", "profile", "--json", "--",
                        "/nonexistent/ebt-prog"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "did not start" in r.stderr
    assert json.loads(r.stdout)["exit_status"] == 127


@needs_root
def test_oncpu_finds_the_hot_cold_split(tmp_path):
    svg = tmp_path / "cpu.svg"
    doc = profile("oncpu", "--json", "--svg", str(svg), "--", str(workloads.hotcold()), "2")
    folded = {s["stack"]: s["value"] for s in doc["stacks"]}
    assert doc["unit"] == "samples" and doc["total"] >= 20
    hot, cold = fold.share(folded, "hot"), fold.share(folded, "cold")
    assert 0.6 < hot < 0.92 and 0.08 < cold < 0.4, folded
    assert all(s.split(";").index("main") < s.split(";").index("hot")
               for s in folded if "hot" in s.split(";"))
    assert "hot (" in svg.read_text()


@needs_root
def test_offcpu_time_per_function():
    doc = profile("offcpu", "--json", "--", str(workloads.sleeper()), "4", "60", "20")
    folded = {s["stack"]: s["value"] for s in doc["stacks"]}
    long_ms = sum(n for s, n in fold.only(folded, "wait_long").items()) / 1e6
    short_ms = sum(n for s, n in fold.only(folded, "wait_short").items()) / 1e6
    assert 235 <= long_ms < 400 and 75 <= short_ms < 200, (long_ms, short_ms)


@needs_root
def test_alloc_outstanding_bytes_per_stack():
    with interruptible([sys.executable, "-m", "ebpf_tutor", "profile", "alloc", "--json",
                        "--duration", "30", "--", str(workloads.leaker()), "7", "1000", "300"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, cwd=ROOT) as proc:
        for _ in range(100):            # the CLI says so once the probes are in place
            line = proc.stderr.readline()
            if "attached" in line or not line:
                break
        assert "attached" in line, line
        proc.stdin.write("\n")
        proc.stdin.flush()
        time.sleep(1)
        proc.send_signal(signal.SIGINT)     # Ctrl-C: summary so far, exit 130
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-2000:]
    doc = json.loads(out)
    assert doc["interrupted"]
    folded = {s["stack"]: s["value"] for s in doc["stacks"]}
    assert sum(fold.only(folded, "leaky").values()) == 7000, folded
    assert not fold.only(folded, "tidy"), folded


@needs_root
def test_io_histogram_or_one_line_why_not(tmp_path):
    from ebpf_tutor.apps.profiler.probes import BLOCK_TRACEPOINTS, tracepoint_exists
    if not all(tracepoint_exists(t) for t in BLOCK_TRACEPOINTS):
        r = subprocess.run([sys.executable, "-m", "ebpf_tutor", "profile", "io", "--duration",
                            "0.1"], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 1 and "not on this kernel" in r.stderr
        return
    script = ("import os,mmap\np='/var/tmp/ebt-prof-io-%d'%os.getpid()\n"
              "try: fd=os.open(p,os.O_CREAT|os.O_WRONLY|os.O_DIRECT,0o600)\n"
              "except OSError: fd=os.open(p,os.O_CREAT|os.O_WRONLY,0o600)\n"
              "b=mmap.mmap(-1,1<<16)\n"
              "for _ in range(32): os.write(fd,b); os.fsync(fd)\n"
              "os.close(fd); os.unlink(p)\n")
    doc = profile("io", "--json", "--", sys.executable, "-c", script)
    assert sum(b["count"] for b in doc["histogram"]) >= 1, doc
    assert all(b["low_us"] <= b["high_us"] for b in doc["histogram"])
