"""No figure in the prose that the stored outputs do not back.

A time, rate, percentage or factor written in a chapter's markdown must
appear in that chapter's stored outputs, so that a rebuild whose outputs no
longer say it fails here instead of leaving the prose wrong. Figures that are
not measurements (a parameter the workload is given, a line rate quoted for
comparison) are listed below with the reason."""
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted(Path(__file__).resolve().parent.parent.glob("notebooks/ch*.ipynb"))
FIGURE = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)?)\s?(ns|µs|us|ms|%|x|×|MB/s|Mpps|pps)(?!\w)")
NOT_MEASURED = {
    ("ch06_tracepoints", "200 µs"): "a sleep length the heatmap's workload asks for",
    ("ch07_xdp", "15 Mpps"): "10 GbE line rate for 64-byte frames, quoted for comparison",
    ("ch13_event_processing", "10 ms"): "the sleep per batch the slow handler is given",
    ("ch13_event_processing", "50 ms"): "RingBufferConsumer's poll timeout, a parameter",
}


def _outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_measured_figure_in_the_prose_is_in_the_outputs(path):
    nb = nbformat.read(path, as_version=4)
    outputs = _outputs(nb)
    unbacked = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for m in FIGURE.finditer(cell.source):
            if (path.stem, m.group(0)) in NOT_MEASURED:
                continue
            if not re.search(rf"(?<![\d.]){re.escape(m.group(1))}(?![\d])", outputs):
                unbacked.append(m.group(0))
    assert not unbacked, (f"{path.name}: the prose states {unbacked}, which no stored output "
                          "shows: print it from the cell that measures it, say it in words that "
                          "hold everywhere, or list it in NOT_MEASURED with the reason")


def test_the_check_catches_a_contradicted_figure(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("The call takes 38 ms here."),
                nbformat.v4.new_code_cell("print('30 ms')", outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text="now + 30 ms\n")])]
    bad = tmp_path / "ch99_x.ipynb"
    nbformat.write(nb, bad)
    with pytest.raises(AssertionError, match="38 ms"):
        test_every_measured_figure_in_the_prose_is_in_the_outputs(bad)
