"""Out-of-context synthesis helpers (``tinytpu_hdl.synthesis``) that the benchmarks use."""

import pytest

from tinytpu_hdl.synthesis import ice40_blocks, synth_ice40


@pytest.mark.extended
def test_ice40_blocks_account_for_the_flat_netlist(tmp_path):
    """The per-block counts of the 1x1 iCEBreaker TPU name every block, and their sums
    agree with the flat synthesis: the same multiplier blocks and block RAMs, and
    logic within the few per cent that mapping the blocks apart costs."""
    flat = synth_ice40(1, tmp_path / "flat")
    blocks = ice40_blocks(1, tmp_path / "blocks")
    assert "error" not in flat and "error" not in blocks
    assert {"", "control", "vector", "gd", "host", "matmul", "loader", "ub", "acc", "imem",
            "array.pe_0_0"} <= set(blocks)
    total = {k: sum(c[k] for c in blocks.values()) for k in ("LUT4", "FF", "CARRY", "DSP",
                                                             "EBR")}
    assert total["DSP"] == flat["DSP"] and total["EBR"] == flat["EBR"]
    assert flat["LUT4"] <= total["LUT4"] <= 1.1 * flat["LUT4"]
    assert 0.9 * flat["FF"] <= total["FF"] <= 1.1 * flat["FF"]
    # The PE's multiply is the array's only multiplier block.
    assert sum(c["DSP"] for name, c in blocks.items() if name.startswith("array")) == 1
