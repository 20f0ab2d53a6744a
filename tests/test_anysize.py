# amaranth: UnusedElaboratable=no
"""Any size on any configuration: matrix products, inference and training past every
on-chip limit (buffer rows, accumulator rows, instruction words, samples), checked bit for
bit against numpy models of the arithmetic and across backends."""

import re
from dataclasses import replace

import numpy as np
import pytest

from tinytpu_hdl import MLP, Accelerator, TPUConfig
from tinytpu_hdl.compiler import CompileError, compile_forward, compile_matmul, compile_training
from tinytpu_hdl.compiler.memory import MemoryPlan
from tinytpu_hdl.compiler.mlp import LayerSpec, training_footprint
from tinytpu_hdl.numeric import add_sat, dot_chain, mul_narrow, narrow
from tinytpu_hdl.runtime.verilator import verilator_missing


def chained_matmul(a_raw, b_raw, cfg):
    """The device's product: per K tile of n the array's saturating chain, then saturating
    accumulation over the tiles (in K order)."""
    out = None
    for k0 in range(0, a_raw.shape[1], cfg.n):
        part = dot_chain(a_raw[:, k0:k0 + cfg.n], b_raw[k0:k0 + cfg.n], cfg.acc)
        out = part if out is None else add_sat(out, part, cfg.acc)
    return out


def quantized_forward(cfg, model, x):
    """Bit-exact numpy model of the device's inference: the chained product, then the
    vector unit's narrowing, bias and Leaky ReLU, layer after layer."""
    fmt, sc = cfg.data, cfg.scalar
    h = fmt.encode(x)
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        z = chained_matmul(h, fmt.encode(w).T, cfg)
        h = add_sat(narrow(z, cfg.acc, fmt), fmt.encode(b)[None, :], fmt)
        if model.activations[i] != "none":
            leak = int(sc.encode(model.layer_leak(i)))
            h = np.where(h < 0, mul_narrow(h, fmt, leak, sc, fmt), h)
    return fmt.decode(h)


def random_raw(rng, shape, bound=32768):
    return rng.integers(-bound, bound, shape)


SMALL = TPUConfig(n=2, ub_depth=24, acc_depth=6, imem_depth=64)


@pytest.mark.parametrize("shape", [
    (7, 3, 3),        # M = accumulator rows + 1
    (2, 25, 2),       # A's rows (K blocks) past the buffer
    (3, 4, 25),       # B's tiles past the buffer
    (25, 25, 25),     # everything past everything
    (1, 1, 1),
])
def test_matmul_past_every_limit_reference(shape):
    m, k, n_out = shape
    rng = np.random.default_rng(sum(shape))
    a, b = random_raw(rng, (m, k)), random_raw(rng, (k, n_out))
    acc = Accelerator(SMALL)
    assert np.array_equal(acc.matmul_raw(a, b), chained_matmul(a, b, SMALL))
    plan = acc.last_plan
    assert plan.runs == acc.stats.runs
    assert acc.stats.macs == m * -(-k // 2) * -(-n_out // 2) * 4       # every tile once
    assert max(len(p) for p in plan.all_programs()) <= SMALL.imem_depth
    if m > SMALL.acc_depth or k * 2 > SMALL.ub_depth:
        assert plan.runs > 1


def test_large_matmul_reference_exact():
    """256 x 300 @ 300 x 270 on the default configuration: one product the old single-run
    compiler refused; the float result equals the product of the rounded operands."""
    rng = np.random.default_rng(5)
    a, b = rng.uniform(-1, 1, (256, 300)), rng.uniform(-1, 1, (300, 270))
    acc = Accelerator(TPUConfig(n=8))
    got = acc.matmul(a, b)
    fmt = acc.cfg.data
    assert np.array_equal(got, fmt.decode(fmt.encode(a)) @ fmt.decode(fmt.encode(b)))
    assert acc.stats.utilization > 0.9


@pytest.mark.parametrize("backend", ["pysim", pytest.param("verilator",
                                                            marks=pytest.mark.extended)])
def test_matmul_backends_agree_past_the_limits(backend):
    if backend == "verilator" and verilator_missing():
        pytest.skip(f"verilator backend needs {verilator_missing()}")
    cfg = TPUConfig(n=2, ub_depth=16, acc_depth=4, imem_depth=48)
    m, k, n_out = (5, 9, 5) if backend == "pysim" else (21, 40, 17)
    rng = np.random.default_rng(1)
    a, b = random_raw(rng, (m, k)), random_raw(rng, (k, n_out))
    out = {}
    for name in ("reference", backend):
        acc = Accelerator(cfg, backend=name)
        out[name] = (acc.matmul_raw(a, b), acc.stats)
    assert np.array_equal(out["reference"][0], chained_matmul(a, b, cfg))
    assert np.array_equal(out[backend][0], out["reference"][0])
    assert out[backend][1] == out["reference"][1]                 # cycles included
    assert out["reference"][1].runs > 2


def _model(sizes, seed, acts=None):
    return MLP.random(sizes, seed=seed, leak=0.25, activations=acts)


@pytest.mark.parametrize("cfg, form", [
    (TPUConfig(n=2, ub_depth=128, acc_depth=8, imem_depth=96), "resident"),
    (TPUConfig(n=2, ub_depth=48, acc_depth=8, imem_depth=96), "layer by layer"),
])
def test_forward_any_samples_bit_exact(cfg, form):
    model = _model([5, 9, 3], 2, ["leaky_relu", "none"])
    x = np.random.default_rng(3).uniform(-1, 1, (37, 5))
    acc = Accelerator(cfg)
    got = acc.forward(model, x)
    assert acc.last_plan.info["form"] == form
    assert acc.stats.runs > 1
    assert np.array_equal(got, quantized_forward(cfg, model, x))


@pytest.mark.parametrize("backend", ["pysim", pytest.param("verilator",
                                                            marks=pytest.mark.extended)])
def test_forward_backends_agree(backend):
    if backend == "verilator" and verilator_missing():
        pytest.skip(f"verilator backend needs {verilator_missing()}")
    model = _model([5, 6, 3], 4)
    x = np.random.default_rng(4).uniform(-1, 1, (11 if backend == "pysim" else 40, 5))
    for cfg in (TPUConfig(n=2, ub_depth=64, acc_depth=4, imem_depth=96),
                TPUConfig(n=2, ub_depth=32, acc_depth=4, imem_depth=96)):
        out = {}
        for name in ("reference", backend):
            acc = Accelerator(cfg, backend=name)
            out[name] = (acc.forward(model, x), acc.stats, acc.last_plan.info)
        assert np.array_equal(out[backend][0], out["reference"][0])
        assert out[backend][1] == out["reference"][1]
        assert np.array_equal(out["reference"][0], quantized_forward(cfg, model, x))
        info = out[backend][2]
        assert info["form"] == ("resident" if cfg.ub_depth == 64 else "layer by layer")
        assert info.get("input buffers", 2) == 2         # inputs written while it runs


def _train(cfg, model, x, y, backend="reference", check_collisions=False,
           ram_output_registers=None, **kwargs):
    m = model.copy()
    options = {} if backend != "pysim" else {"check_collisions": check_collisions,
                                             "ram_output_registers": ram_output_registers}
    acc = Accelerator(cfg, backend=backend, **options)
    losses = acc.train(m, x, y, lr=0.5, **kwargs)
    return losses, m, acc


def test_training_streamed_equals_resident():
    """Samples streamed run by run (a buffer too small for the data set) give exactly the
    weights and losses of the run that holds every sample on chip."""
    model = _model([3, 5, 2], 6)
    rng = np.random.default_rng(6)
    x, y = rng.uniform(-1, 1, (24, 3)), rng.uniform(-1, 1, (24, 2))
    big = TPUConfig(n=2, ub_depth=1024, acc_depth=8, imem_depth=128)
    small = TPUConfig(n=2, ub_depth=96, acc_depth=8, imem_depth=128)
    l1, m1, a1 = _train(big, model, x, y, epochs=3, batch_size=4)
    l2, m2, a2 = _train(small, model, x, y, epochs=3, batch_size=4)
    assert a1.last_plan.info["batches per run"] == 6 and a1.stats.runs == 1
    assert a2.last_plan.info["batches per run"] < 6 and a2.stats.runs > 3
    assert l1 == l2 and len(l1) == 3
    for a, b in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        assert np.array_equal(a, b)
    assert not np.array_equal(m1.weights[0], model.weights[0])      # it trained


@pytest.mark.parametrize("n, inputs", [(2, 13), (4, 9)])
def test_training_layer_wider_than_the_accumulators(n, inputs):
    """A layer with more inputs than accumulator rows: its weight gradients are computed
    and applied in chunks of accumulator rows (with 9 inputs on N = 4 the bias row needs a
    chunk of its own); same result as with room for all of them."""
    model = _model([inputs, 3, 2], 7)
    rng = np.random.default_rng(7)
    x, y = rng.uniform(-1, 1, (8, inputs)), rng.uniform(-1, 1, (8, 2))
    wide = TPUConfig(n=n, ub_depth=512, acc_depth=16, imem_depth=128)
    narrow_acc = TPUConfig(n=n, ub_depth=512, acc_depth=5, imem_depth=128)
    l1, m1, _ = _train(wide, model, x, y, epochs=2, batch_size=4)
    l2, m2, _ = _train(narrow_acc, model, x, y, epochs=2, batch_size=4)
    assert l1 == l2
    for a, b in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        assert np.array_equal(a, b)
    assert not np.array_equal(m1.weights[0], model.weights[0])


@pytest.mark.parametrize("backend, options", [
    ("pysim", {}), ("pysim", {"ram_output_registers": False}),
    pytest.param("verilator", {}, marks=pytest.mark.extended)])
def test_training_streamed_backends_agree(backend, options):
    """Also on the gateware as built for iCE40 (index registers in block RAM), which the
    loops of a training program use in every address operand."""
    if backend == "verilator" and verilator_missing():
        pytest.skip(f"verilator backend needs {verilator_missing()}")
    model = _model([3, 4, 2], 8)
    rng = np.random.default_rng(8)
    samples = 8 if backend == "pysim" else 40
    x, y = rng.uniform(-1, 1, (samples, 3)), rng.uniform(-1, 1, (samples, 2))
    cfg = TPUConfig(n=2, ub_depth=88, acc_depth=4, imem_depth=128)
    l1, m1, a1 = _train(cfg, model, x, y, epochs=2, batch_size=4)
    l2, m2, a2 = _train(cfg, model, x, y, backend, epochs=2, batch_size=4,
                        check_collisions=backend == "pysim", **options)
    assert a1.stats.runs > 2
    # Two record buffers: the host writes the next batches while the device trains.
    assert a2.last_plan.info["record buffers"] == 2
    assert l1 == l2 and a1.stats == a2.stats
    for a, b in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("sizes", [
    [2, 2, 1], [64, 32, 10], [784, 64, 10], [784, 256, 128, 10], [100, 90, 80, 70, 10],
    [300, 300, 300, 300, 10],
])
def test_programs_fit_the_default_instruction_memory(sizes):
    """Program length depends on the number of layers, not on their sizes, the batch or the
    number of samples: training of up to four layers and inference fit 256 words."""
    layers = [LayerSpec(a, b, "leaky_relu", 0.1) for a, b in zip(sizes, sizes[1:])]
    trained = 0
    for n in (2, 8):
        roomy = TPUConfig(n=n, ub_depth=65536, acc_depth=512)
        assert roomy.imem_depth == 256
        if training_footprint(roomy, layers, 32).minimum() <= roomy.ub_depth:
            plan = compile_training(roomy, layers, 10_000, 32, 0.1, epochs=2)
            assert len(plan.programs[0]) <= 256
            trained += 1
        for cfg in (TPUConfig(n=n), roomy):
            plan = compile_forward(cfg, layers, 10_000)
            assert all(len(p) <= 256 for p in plan.all_programs())
    assert trained                              # at N = 8 every one of them fits the buffer


def test_matmul_programs_fit_the_default_instruction_memory():
    for shape in ((4096, 4096, 4096), (1, 65536, 1), (70000, 8, 8), (3, 100_000, 5)):
        plan = compile_matmul(TPUConfig(n=8), *shape)
        assert all(len(p) <= 256 for p in plan.all_programs())


def test_training_that_cannot_fit_names_what_would():
    cfg = TPUConfig(n=8)
    layers = [LayerSpec(784, 64, "leaky_relu", 0.01), LayerSpec(64, 10, "none")]
    with pytest.raises(CompileError, match=r"784-64-10 network with batch 32 needs 13,394 "
                                           r"unified-buffer rows on chip \(parameters 6,410, "
                                           r".* ub_depth=4,096\. Use ub_depth >= 13,394; no "
                                           r"2-layer network with 784 inputs and 10 outputs "
                                           r"trains here at batch 32"):
        compile_training(cfg, layers, 60_000, 32, 0.1)
    layers = [LayerSpec(64, 300, "leaky_relu", 0.01), LayerSpec(300, 10, "none")]
    with pytest.raises(CompileError, match=r"Use ub_depth >= [\d,]+, or batch <= (\d+); the "
                                           r"largest 2-layer network with 64 inputs and 10 "
                                           r"outputs that trains here at batch 32 is "
                                           r"64-(\d+)-10") as exc:
        compile_training(cfg, layers, 60_000, 32, 0.1)
    batch, hidden = map(int, re.search(r"batch <= (\d+); .* is 64-(\d+)-10",
                                       str(exc.value)).groups())
    compile_training(cfg, layers, 60_000, batch, 0.1)
    with pytest.raises(CompileError):
        compile_training(cfg, layers, 60_000, batch + 1, 0.1)
    fits = [LayerSpec(64, hidden, "leaky_relu", 0.01), LayerSpec(hidden, 10, "none")]
    compile_training(cfg, fits, 60_000, 32, 0.1)
    wider = [LayerSpec(64, hidden + 1, "leaky_relu", 0.01), LayerSpec(hidden + 1, 10, "none")]
    with pytest.raises(CompileError):
        compile_training(cfg, wider, 60_000, 32, 0.1)


@pytest.mark.extended
@pytest.mark.parametrize("board", ["ulx3s-85f", "icebreaker"])
def test_digits_trains_on_every_board_configuration(board):
    """The digits demo on a board's own configuration (reference backend): the ULX3S holds
    64-32-10 at batch 32 and every sample on chip; the iCEBreaker's 1x1 TPU with its
    1,536-row buffer holds only a small network, which it trains with samples streamed."""
    pytest.importorskip("sklearn")
    from tinytpu_hdl.boards import get_board
    from tinytpu_hdl.demos.digits import run_digits
    cfg = get_board(board).cfg
    lines = []
    device, reference, losses, float_losses = run_digits(cfg=cfg, epochs=2, plot=None,
                                                         out=lines.append)
    text = "\n".join(lines)
    assert losses[-1] < losses[0]
    assert abs(losses[-1] - float_losses[-1]) < 0.1 * float_losses[-1]
    assert abs(device - reference) < 0.05
    if board == "ulx3s-85f":
        assert "64-32-10 MLP" in text and "batch 32" in text and device > 0.7
    else:
        assert "trains at most 64-10-10 with batch 4" in text


def test_training_program_one_word_past_the_instruction_memory():
    """The compiler unrolls less until the program fits; a memory one word smaller than its
    most looped form is refused with the length it needs."""
    layers = [LayerSpec(64, 32, "leaky_relu", 0.1), LayerSpec(32, 10, "none")]
    big = TPUConfig(n=8, imem_depth=4096)
    unrolled = len(compile_training(big, layers, 256, 32, 0.1).programs[0])

    def fits(depth):
        try:
            plan = compile_training(TPUConfig(n=8, imem_depth=depth), layers, 256, 32, 0.1)
        except CompileError:
            return False
        assert len(plan.programs[0]) <= depth
        return True
    looped = next(d for d in range(1, unrolled + 1) if fits(d))
    assert looped < unrolled and all(fits(d) for d in range(looped, unrolled + 1, 7))
    with pytest.raises(CompileError, match=rf"has {looped} instructions even with every "
                                           rf"dimension looped; the instruction memory holds "
                                           rf"{looped - 1}"):
        compile_training(TPUConfig(n=8, imem_depth=looped - 1), layers, 256, 32, 0.1)


def _loaded_regions_end_below(plan, rows, names):
    """The plan's buffer regions whose names start with one of ``names`` (those the loader
    or the units read) end at or below row ``rows``."""
    loaded = [r for name, r in plan.regions.items() if name.startswith(names)]
    assert loaded and all(r.end <= rows for r in loaded), loaded


def test_a_partial_buffer_copy_holds_what_is_loaded():
    """With ``ub_copy_depth`` (the loader's and the units' copy of the lower rows only) the
    compiler puts what they read there (parameters, activations, targets, weight tiles,
    bias rows) and the rest above: training (fewer records per run where a record's
    targets would lie above the copy), inference and matrix products give exactly the
    results they give with a whole copy."""
    model = _model([3, 4, 2], 9)
    rng = np.random.default_rng(9)
    x, y = rng.uniform(-1, 1, (24, 3)), rng.uniform(-1, 1, (24, 2))
    whole = TPUConfig(n=2, ub_depth=256, acc_depth=8, imem_depth=128)
    part = TPUConfig(n=2, ub_depth=256, acc_depth=8, imem_depth=128, ub_copy_depth=85)
    l1, m1, a1 = _train(whole, model, x, y, epochs=2, batch_size=4)
    l2, m2, a2 = _train(part, model, x, y, epochs=2, batch_size=4)
    assert a1.last_plan.info["batches per run"] == 6
    # Fixed regions 37 rows, records of 22 rows starting with 4 rows of targets: the
    # targets of three records lie below row 85 (two buffers of one).
    assert a2.last_plan.info["batches per run"] == 1
    assert a2.last_plan.info["record buffers"] == 2
    _loaded_regions_end_below(a2.last_plan, 85, ("params", "h", "dz"))
    assert l1 == l2
    for a, b in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        assert np.array_equal(a, b)

    model = _model([5, 9, 3], 2, ["leaky_relu", "none"])
    x = np.random.default_rng(3).uniform(-1, 1, (37, 5))
    for copy, form in ((57, "resident"), (56, "layer by layer")):
        # All the parameters take 57 rows; with fewer, layer by layer (matrix products).
        cfg = TPUConfig(n=2, ub_depth=128, acc_depth=8, imem_depth=96, ub_copy_depth=copy)
        acc = Accelerator(cfg)
        assert np.array_equal(acc.forward(model, x), quantized_forward(cfg, model, x))
        assert acc.last_plan.info["form"] == form
    _loaded_regions_end_below(acc.last_plan, 56, ("layer0.B", "layer0.bias", "layer1.B",
                                                  "layer1.bias"))

    rng = np.random.default_rng(10)
    a_raw, b_raw = random_raw(rng, (9, 7)), random_raw(rng, (7, 11))
    cfg = TPUConfig(n=2, ub_depth=40, acc_depth=6, imem_depth=64, ub_copy_depth=9)
    acc = Accelerator(cfg)
    got = acc.matmul(cfg.data.decode(a_raw), cfg.data.decode(b_raw))
    assert np.array_equal(cfg.acc.encode(got), chained_matmul(a_raw, b_raw, cfg))
    _loaded_regions_end_below(acc.last_plan, 9, ("B",))


def test_a_partial_buffer_copy_too_small_is_named():
    layers = [LayerSpec(5, 9, "leaky_relu", 0.25), LayerSpec(9, 3, "none")]
    cfg = TPUConfig(n=2, ub_depth=300, acc_depth=8, imem_depth=96, ub_copy_depth=100)
    with pytest.raises(CompileError, match=r"targets in the buffer's first 115 rows, which the "
                                           r"weight loader and the vector unit must read; this "
                                           r"TPUConfig has ub_copy_depth=100"):
        compile_training(cfg, layers, 8, 4, 0.1)
    compile_training(replace(cfg, ub_copy_depth=115), layers, 8, 4, 0.1)
    cfg = TPUConfig(n=2, ub_depth=128, acc_depth=8, imem_depth=96, ub_copy_depth=2)
    with pytest.raises(CompileError, match=r"ub_depth=128 and ub_copy_depth=2 \(the weight "
                                           r"tile and the bias row must lie below it: 3 rows\)"):
        compile_forward(cfg, layers, 37)
    mem = MemoryPlan.of(TPUConfig(n=2, ub_depth=300, ub_copy_depth=30))
    mem.alloc("A", 20)
    mem.alloc("B", 10, loaded=True)
    with pytest.raises(CompileError, match=r"W \(1 rows at row 30\) is loaded as weights or "
                                           r"read as aux rows, bias rows or parameters, which "
                                           r"must lie below row 30 \(TPUConfig.ub_copy_depth; "
                                           r"already used: A 20, B 10\)"):
        mem.alloc("W", 1, loaded=True)
    assert mem.alloc("C", 270).end == 300
