"""scripts/bench.py's report writing (the benchmarks themselves are never run in tests)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rewriting_the_tables_keeps_the_notes_below_the_marker(tmp_path):
    bench = load_bench()
    out = tmp_path / "benchmarks.md"
    bench.write_report(out, "# Benchmarks", {"Training steps": "_Measured with `x`, 2026-01-01._\n\nold"})
    assert out.read_text() == ("# Benchmarks\n\n## Training steps\n\n"
                               "_Measured with `x`, 2026-01-01._\n\nold\n")
    out.write_text(out.read_text() + "\n" + bench.NOTES_MARKER + "\n\n## Notes\n\nanalysis\n")
    bench.write_report(out, "# Benchmarks", {"Training steps": "new"})
    assert out.read_text() == ("# Benchmarks\n\n## Training steps\n\nnew\n\n" +
                               bench.NOTES_MARKER + "\n\n## Notes\n\nanalysis\n")


def test_sections_not_measured_again_are_kept_with_their_provenance(tmp_path):
    bench = load_bench()
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nMachine: x; command `python scripts/bench.py --synth`; "
                   "2026-12-01.\n\n## Training steps\n\nold steps\n\n"
                   "## Board builds (`tinytpu build`)\n\nold boards\n")
    bench.write_report(out, "# Benchmarks", {"GEMM cycles and utilization": "gemm"})
    text = out.read_text()
    # In document order, the kept ones naming the run that measured them.
    assert text.index("## GEMM") < text.index("## Training") < text.index("## Board")
    assert "_Measured with `python scripts/bench.py --synth`, 2026-12-01._\n\nold steps" in text
    assert "old boards" in text


def test_the_benchmarks_document_has_the_marker():
    assert load_bench().NOTES_MARKER in (ROOT / "docs" / "benchmarks.md").read_text()
