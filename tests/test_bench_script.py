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
    bench.write_report(out, "# Benchmarks\n\nold table\n")
    assert out.read_text() == "# Benchmarks\n\nold table\n"
    out.write_text(out.read_text() + "\n" + bench.NOTES_MARKER + "\n\n## Notes\n\nanalysis\n")
    bench.write_report(out, "# Benchmarks\n\nnew table\n")
    assert out.read_text() == ("# Benchmarks\n\nnew table\n\n" + bench.NOTES_MARKER +
                               "\n\n## Notes\n\nanalysis\n")


def test_the_benchmarks_document_has_the_marker():
    assert load_bench().NOTES_MARKER in (ROOT / "docs" / "benchmarks.md").read_text()
