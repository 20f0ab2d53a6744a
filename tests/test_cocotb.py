"""A cocotb testbench (cocotb 2 from PyPI) drives the exported Verilog under Icarus Verilog
(the simulator cocotb users run most), with the project's runtime; skipped, with the
reason, when cocotb or Icarus is missing."""

import importlib.util
import os
from pathlib import Path

import pytest

from tinytpu_hdl.export import to_verilog
from tinytpu_hdl.runtime.icarus import icarus_missing

HERE = Path(__file__).resolve().parent / "cocotb"


def test_xor_through_cocotb(tmp_path, monkeypatch):
    if importlib.util.find_spec("cocotb") is None:
        pytest.skip("cocotb is not installed (pip install cocotb)")
    if icarus_missing():
        pytest.skip(f"needs {icarus_missing()}")
    from cocotb_tools.runner import get_runner
    monkeypatch.syspath_prepend(str(HERE))
    from xor_bench import CFG
    source = tmp_path / "tinytpu.v"
    source.write_text(to_verilog(CFG, name="tinytpu"))
    runner = get_runner("icarus")
    runner.build(sources=[source], hdl_toplevel="tinytpu", build_dir=tmp_path / "build",
                 timescale=("1ns", "1ps"), always=True)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE),
                                                      os.environ.get("PYTHONPATH", "")]))
    results = runner.test(hdl_toplevel="tinytpu", test_module="xor_bench",
                          test_dir=HERE, build_dir=tmp_path / "build")
    text = Path(results).read_text()
    assert 'name="xor_matches_the_reference"' in text
    assert "<failure" not in text and "<error" not in text, text
