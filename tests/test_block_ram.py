# amaranth: UnusedElaboratable=no
"""Block RAMs with registered reads (tinytpu_hdl.gateware.block_ram): the choice of the
ECP5 block shape, the fabric form in the Amaranth simulator, and the ECP5 form (DP16KD
blocks through their output registers) under Verilator with a behavioural model of the
block (tests/models/DP16KD.v), both against a Python model of the memory cycle by
cycle."""

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from tinytpu_hdl import TPUConfig
from tinytpu_hdl.gateware.block_ram import BlockRAM, dp16kd_shape
from tinytpu_hdl.gateware.memory import AccumulatorMemory, UnifiedBuffer

from test_multiplier import HARNESS, _verilator

MODEL = Path(__file__).parent / "models" / "DP16KD.v"


@pytest.mark.parametrize("depth, width, want", [
    (512, 256, (36, 512, 1, 8)),        # the 8x8's accumulators: 8 blocks, as Yosys maps
    (4096, 128, (4, 4096, 1, 32)),      # the 8x8's buffer: one bank (two of 9 bits: 30)
    (2500, 16, (18, 1024, 3, 1)),       # 3 blocks; 9 or 4 bits wide would take 4
    (5000, 3, (2, 8192, 1, 2)),         # 2 blocks either 4 or 2 bits wide: fewer banks
    (12288, 160, (9, 2048, 6, 18)),     # the ULX3S's 10x10 buffer: 108 blocks
])
def test_dp16kd_shape_takes_the_fewest_blocks(depth, width, want):
    assert dp16kd_shape(depth, width) == want
    w, rows, banks, slices = want
    assert banks * rows >= depth and slices * w >= width


def test_the_ecp5_form_refuses_contents_and_transparency():
    with pytest.raises(ValueError, match="initial contents"):
        BlockRAM(16, 8, family="ecp5", init=[1])
    with pytest.raises(ValueError, match="transparent"):
        BlockRAM(16, 8, family="ecp5", transparent=True)


def test_default_memories_register_their_reads():
    cfg = TPUConfig(n=8)
    assert UnifiedBuffer.registered_reads(cfg) and AccumulatorMemory.registered_reads(cfg)
    assert not AccumulatorMemory.registered_reads(TPUConfig(n=8, isolated_multipliers=False))


def _stimulus(depth, width, cycles, seed, registered=True):
    """Per cycle ``(w_en, w_addr, w_data, r_en, r_addr)`` over a few rows (so that rows
    are read after they are written; among them a row's neighbours in every address
    bit), never reading the row written in the same cycle;
    and the read data the memory gives in each cycle (that of the last read requested
    two or more cycles before, one or more unregistered, as the memory was when
    requested)."""
    rng = random.Random(seed)
    # Neighbouring rows too (a row address bit lost or moved makes two of them one).
    base = rng.randrange(depth)
    near = (base ^ (1 << b) for b in range(depth.bit_length()))
    rows = sorted({0, depth - 1, base, *rng.sample(range(depth), min(depth, 12)),
                   *(row for row in near if row < depth)})
    ops, out = [], []
    mem, latch, reg = {}, 0, 0
    for _ in range(cycles):
        w_en = rng.random() < 0.5
        w_addr, w_data = rng.choice(rows), rng.getrandbits(width)
        r_en = rng.random() < 0.6
        r_addr = rng.choice(rows)
        if w_en and r_addr == w_addr:
            r_en = False
        ops.append((int(w_en), w_addr, w_data, int(r_en), r_addr))
        out.append(reg if registered else latch)
        # The clock edge: the register takes the latch, the latch the row, then the write.
        reg = latch
        if r_en:
            latch = mem.get(r_addr, 0)
        if w_en:
            mem[w_addr] = w_data
    return ops, out


@pytest.mark.parametrize("registered", [True, False], ids=["registered", "unregistered"])
@pytest.mark.parametrize("depth, width", [(64, 24), (300, 40)])
def test_fabric_form_reads_two_cycles_later(depth, width, registered):
    """Registered: a read's row arrives two cycles after the request; unregistered, one."""
    dut = BlockRAM(depth, width, registered=registered)
    ops, want = _stimulus(depth, width, 400, seed=depth, registered=registered)
    seen = []

    async def bench(ctx):
        for w_en, w_addr, w_data, r_en, r_addr in ops:
            ctx.set(dut.w.en, w_en)
            ctx.set(dut.w.addr, w_addr)
            ctx.set(dut.w.data, w_data)
            ctx.set(dut.r.en, r_en)
            ctx.set(dut.r.addr, r_addr)
            seen.append(ctx.get(dut.r.data))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == want


#: (depth, width) of the ECP5 form's cases: every block shape, one bank and several.
ECP5_CASES = [(512, 72), (1000, 40), (2500, 16), (2048, 9), (3000, 20), (5000, 3),
              (10000, 1), (1500, 72)]


def _pack(width, w_en, w_addr, w_data, r_en, r_addr):
    """A cycle's operations as the bench takes them: {w_en, r_en, w_addr (14 bits),
    r_addr (14 bits), w_data}."""
    return ((w_en << (width + 29)) | (r_en << (width + 28)) | (w_addr << (width + 14))
            | (r_addr << width) | w_data)


def _bench(cases, cycles):
    lines = ["module bench(input clk);", "    integer t = 0;"]
    for k, (depth, width) in enumerate(cases):
        total = 30 + width
        lines += [
            f"    reg [{total - 1}:0] ops{k} [0:{cycles - 1}];",
            f'    initial $readmemh("ops{k}.hex", ops{k});',
            f"    wire [{total - 1}:0] op{k} = ops{k}[t < {cycles} ? t : 0];",
            f"    wire [{width - 1}:0] e{k}, g{k};",
            f"    ram{k}_ecp5 ecp5_{k}(.clk(clk), .rst(1'b0), .w__en(op{k}[{total - 1}]),"
            f" .r__en(op{k}[{total - 2}]), .w__addr(op{k}[{total - 3}:{total - 16}]),"
            f" .r__addr(op{k}[{total - 17}:{total - 30}]), .w__data(op{k}[{width - 1}:0]),"
            f" .r__data(e{k}));",
            f"    ram{k}_generic generic_{k}(.clk(clk), .rst(1'b0), .w__en(op{k}[{total - 1}]),"
            f" .r__en(op{k}[{total - 2}]), .w__addr(op{k}[{total - 3}:{total - 16}]),"
            f" .r__addr(op{k}[{total - 17}:{total - 30}]), .w__data(op{k}[{width - 1}:0]),"
            f" .r__data(g{k}));",
        ]
    shown = " ".join("%h %h" for _ in cases)
    values = ", ".join(f"e{k}, g{k}" for k in range(len(cases)))
    lines += ["    always @(posedge clk) begin",
              f'        if (t < {cycles}) $display("{shown}", {values});',
              "        t <= t + 1;",
              f"        if (t == {cycles}) $finish;",
              "    end", "endmodule", ""]
    return "\n".join(lines)


def test_ecp5_form_matches_the_memory_under_verilator(tmp_path):
    exe = _verilator()
    cycles = 800
    sources, wants = [], []
    for k, (depth, width) in enumerate(ECP5_CASES):
        ops, want = _stimulus(depth, width, cycles, seed=k)
        wants.append(want)
        digits = -(-(30 + width) // 4)
        (tmp_path / f"ops{k}.hex").write_text("".join(
            f"{_pack(width, *op):0{digits}x}\n" for op in ops))
        for form, family in (("ecp5", "ecp5"), ("generic", None)):
            name = f"ram{k}_{form}"
            # (The bench's addresses are 14 bits wide, the memories' narrower.)
            dut = BlockRAM(depth, width, family=family)
            text = verilog.convert(dut, name=name)
            (tmp_path / f"{name}.v").write_text(text)
            sources.append(f"{name}.v")
    (tmp_path / "bench.v").write_text(_bench(ECP5_CASES, cycles))
    (tmp_path / "main.cpp").write_text(HARNESS)
    shutil.copy(MODEL, tmp_path / "DP16KD.v")
    build = subprocess.run(
        [exe, "--cc", "--exe", "--build", "-Wno-fatal", "-Wno-lint", "-Wno-style",
         "--top-module", "bench", "bench.v", *sources, "DP16KD.v", "main.cpp",
         "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "-o", "bench"],
        cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    run = subprocess.run(["obj_dir/bench"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "not modelled" not in run.stdout, run.stdout + run.stderr
    lines = [line.split() for line in run.stdout.splitlines()
             if len(line.split()) == 2 * len(ECP5_CASES)]
    assert len(lines) == cycles
    for k, (depth, width) in enumerate(ECP5_CASES):
        ecp5 = [int(line[2 * k], 16) for line in lines]
        generic = [int(line[2 * k + 1], 16) for line in lines]
        assert generic == wants[k], (depth, width)
        assert ecp5 == wants[k], (depth, width, dp16kd_shape(depth, width))
