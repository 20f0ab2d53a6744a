"""cocotb testbench: the TPU's exported Verilog (tinytpu verilog) driven through the host
protocol by the project's own runtime; XOR inference and one training epoch checked against
the reference model (results and cycle counts). Run by tests/test_cocotb.py."""

import os

import cocotb
import numpy as np
from cocotb.task import bridge

from tinytpu_hdl import Accelerator, TPUConfig
from tinytpu_hdl.demos.xor import XOR_X, XOR_Y, xor_model
from tinytpu_hdl.runtime.cocotb_transport import CocotbTransport

CFG = TPUConfig(n=int(os.environ.get("TINYTPU_N", "2")), ub_depth=256, acc_depth=64,
                imem_depth=128)


def session(acc):
    out = acc.forward(xor_model(), XOR_X)
    forward = acc.stats
    model = xor_model()
    losses = acc.train(model, XOR_X, XOR_Y, lr=0.5, epochs=1, batch_size=4)
    return out, forward, losses, model.weights + model.biases, acc.stats


@cocotb.test()
async def xor_matches_the_reference(dut):
    transport = CocotbTransport(CFG, dut)
    await transport.start()
    got = await bridge(session)(Accelerator(CFG, transport=transport))
    want = session(Accelerator(CFG))
    assert np.array_equal(got[0], want[0]), (got[0], want[0])
    assert got[1] == want[1], (got[1], want[1])                  # cycles included
    assert got[2] == want[2]
    assert all(np.array_equal(a, b) for a, b in zip(got[3], want[3]))
    assert got[4] == want[4]
    dut._log.info(f"XOR on the Verilog: outputs {got[0].ravel()}, {got[1].cycles} cycles, "
                  f"as the reference model")
