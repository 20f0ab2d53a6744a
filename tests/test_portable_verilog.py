# amaranth: UnusedElaboratable=no
"""The exported Verilog simulates the same in every language mode and from any initial
state: Icarus Verilog in Verilog-2005 and SystemVerilog modes and Verilator with random
initial values run XOR inference and training exactly like the reference model."""

import re

import numpy as np
import pytest

from tinytpu_hdl import Accelerator, TPUConfig
from tinytpu_hdl.demos.xor import XOR_X, XOR_Y, xor_model
from tinytpu_hdl.export import to_verilog
from tinytpu_hdl.host_protocol import Space
from tinytpu_hdl.runtime.icarus import icarus_missing
from tinytpu_hdl.runtime.verilator import verilator_missing

CFG = TPUConfig(n=2, ub_depth=256, acc_depth=64, imem_depth=128)


def xor_session(acc):
    """XOR inference, then two epochs of training: outputs, losses, weights, counters."""
    out = acc.forward(xor_model(), XOR_X)
    forward_stats = acc.stats
    model = xor_model()
    losses = acc.train(model, XOR_X, XOR_Y, lr=0.5, epochs=2, batch_size=4)
    return out, forward_stats, losses, model.weights + model.biases, acc.stats


@pytest.fixture(scope="module")
def reference():
    return xor_session(Accelerator(CFG))


def assert_same(got, want):
    out, fstats, losses, params, stats = got
    assert np.array_equal(out, want[0])
    assert fstats == want[1]                               # cycles included
    assert losses == want[2]
    assert all(np.array_equal(a, b) for a, b in zip(params, want[3]))
    assert stats == want[4]


def test_no_process_depends_on_running_at_time_zero():
    """Every combinational process is written as continuous assignments: no ``always @*``
    block, and no dummy register whose initializer would have to trigger one."""
    text = to_verilog(CFG)
    assert "always @*" not in text and "always @(*)" not in text
    assert "verilog_backend" not in text
    assert "always @(posedge clk)" in text


def test_without_initial_values_only_reset_defines_the_state():
    with_values = to_verilog(CFG)
    text = to_verilog(CFG, initial_values=False)
    declared = re.compile(r"^\s*reg [^;]*=", re.M)
    assert declared.search(with_values) and "initial begin" in with_values
    assert not declared.search(text) and "initial" not in text


@pytest.mark.parametrize("mode", ["2005", "2005-sv", "2012"])
def test_icarus_in_every_language_mode(mode, reference):
    if icarus_missing():
        pytest.skip(f"the icarus backend needs {icarus_missing()}")
    acc = Accelerator(CFG, backend="icarus", mode=mode)
    try:
        assert_same(xor_session(acc), reference)
    finally:
        acc.transport.close()


def test_verilator_from_random_initial_states(reference):
    """Registers and memories without a reset start from random values (three seeds):
    the results and cycle counts do not change. That the randomization is real shows in a
    buffer row nobody wrote."""
    if verilator_missing():
        pytest.skip(f"the verilator backend needs {verilator_missing()}")
    untouched = []
    for seed in (1, 2, 3):
        acc = Accelerator(CFG, backend="verilator", random_seed=seed)
        untouched.append(np.array(acc.driver.read(Space.UB, CFG.ub_depth - 1, 1)))
        assert_same(xor_session(acc), reference)
    assert not np.array_equal(untouched[0], untouched[1])
    assert any(row.any() for row in untouched)
