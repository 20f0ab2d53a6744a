"""Weight loads moved ahead of vector and gradient-descent passes: where it is allowed,
where not, and that programs mean the same and run faster."""

import numpy as np
import pytest

from tinytpu_hdl import Accelerator, TPUConfig
from tinytpu_hdl.asm import assemble
from tinytpu_hdl.compiler import emit
from tinytpu_hdl.compiler.schedule import hoist_weight_loads
from tinytpu_hdl.demos.xor import XOR_X, XOR_Y, xor_model
from tinytpu_hdl.isa import ConfigReg, Op
from tinytpu_hdl.reference import ReferenceTPU

# Without ``overlap_units`` every load waits for the passes before it (with it, the
# control unit overlaps those that cannot conflict by itself: see the last test).
CFG = TPUConfig(n=2, ub_depth=64, acc_depth=16, overlap_units=False)
OVERLAP = TPUConfig(n=2, ub_depth=64, acc_depth=16, overlap_units=True)


def _ops(program):
    return [ins.op for ins in program.instructions]


def _run(program, seed=0, cfg=CFG):
    model = ReferenceTPU(cfg, trace_cache=0)
    rng = np.random.default_rng(seed)
    model.ub[:] = rng.integers(-300, 300, model.ub.shape)
    model.acc[:] = rng.integers(-3000, 3000, model.acc.shape)
    model.cfgs[ConfigReg.LEAK] = 0x1000
    model.cfgs[ConfigReg.LR] = 0x0800
    model.imem[:len(program)] = program.words
    model.start()
    return model


def _text(pass_line, load_line, label=""):
    return f"""
        loadw ub[0], rows=2
        matmul ub[2], acc[0], rows=4
        {pass_line}
        {label}{load_line}
        matmul ub[12], acc[4], rows=4
        halt
    """


@pytest.mark.parametrize("pass_line, load_line, moves", [
    ("vpu acc[0], ub[40], rows=4, path=act", "loadw ub[8], rows=2", True),
    ("vpu acc[0], ub[40], rows=4, path=act", "loadw ub[39], rows=2", False),  # reads ub[40]
    ("vpu acc[0], ub[40], rows=4, path=act", "loadw ub[44], rows=2", True),
    ("vpu acc[0], ub[40], rows=4, stride=3, path=act", "loadw ub[49], rows=2", False),
    ("vpu acc[0], ub[40], rows=4, stride=3, path=act", "loadw ub[50], rows=2", True),
    # Transposed: rows 40 .. 40 + (4-1)//2 + (2-1)*1 = 42 written.
    ("vpu acc[0], ub[40], rows=4, path=act, transpose", "loadw ub[42], rows=2", False),
    ("vpu acc[0], ub[40], rows=4, path=act, transpose", "loadw ub[43], rows=2", True),
    ("gd acc[0], ub[20], rows=3", "loadw ub[22], rows=2", False),
    ("gd acc[0], ub[20], rows=3", "loadw ub[23], rows=2", True),
    # Another index register: the rows cannot be compared.
    ("vpu acc[0], ub[r1+40], rows=4, path=act", "loadw ub[8], rows=2", False),
])
def test_a_load_moves_ahead_of_a_pass_that_cannot_write_its_rows(pass_line, load_line, moves):
    program = assemble(_text(pass_line, load_line))
    moved = hoist_weight_loads(program, CFG.n)
    unit = Op.GD if pass_line.startswith("gd") else Op.VPU
    want = [Op.LOADW, Op.MATMUL, Op.LOADW, unit] if moves else \
        [Op.LOADW, Op.MATMUL, unit, Op.LOADW]
    assert _ops(moved)[:4] == want
    if moves:
        # The same memories, flags and counters but for fewer cycles.
        before, after = _run(program), _run(moved)
        assert np.array_equal(before.ub, after.ub) and np.array_equal(before.acc, after.acc)
        assert before.flags == after.flags and before.macs == after.macs
        assert after.cycles < before.cycles
    # With overlap_units the load issues beside the pass where it does not conflict (a
    # pass without aux or parameter reads): as early as moved, in the program as written.
    overlapped = _run(program, cfg=OVERLAP)
    assert np.array_equal(overlapped.ub, _run(program).ub)
    if moves and unit == Op.VPU:
        assert overlapped.cycles <= _run(moved, cfg=OVERLAP).cycles < _run(program).cycles
    elif not moves and "r1" not in pass_line:
        assert overlapped.cycles == _run(program).cycles


def test_a_load_named_by_a_label_stays():
    program = assemble(_text("vpu acc[0], ub[40], rows=4, path=act", "loadw ub[8], rows=2",
                             label="again: "))
    assert hoist_weight_loads(program, CFG.n) is program


def test_a_load_moves_past_several_passes_and_a_label_follows_it():
    program = assemble("""
        loadw ub[0], rows=2
        head: matmul ub[2], acc[0], rows=4
        vpu acc[0], ub[40], rows=4, path=act
        gd acc[0], ub[20], rows=3
        loadw ub[8], rows=2
        matmul ub[12], acc[4], rows=4
        halt
    """)
    moved = hoist_weight_loads(program, CFG.n)
    assert _ops(moved)[:5] == [Op.LOADW, Op.MATMUL, Op.LOADW, Op.VPU, Op.GD]
    assert moved.labels == program.labels


def test_compiled_training_is_the_same_and_faster(monkeypatch):
    """An XOR training epoch compiled with and without the move: the same losses and
    weights, fewer cycles."""
    results = {}
    for hoist in (True, False):
        if not hoist:
            monkeypatch.setattr(emit, "hoist_weight_loads", lambda program, n: program)
        model = xor_model()
        acc = Accelerator(TPUConfig(n=2, overlap_units=False))
        losses = acc.train(model, XOR_X, XOR_Y, lr=0.5, epochs=3, batch_size=4)
        results[hoist] = (losses, model.weights + model.biases, acc.stats.cycles)
    assert results[True][0] == results[False][0]
    assert all(np.array_equal(a, b) for a, b in zip(results[True][1], results[False][1]))
    assert results[True][2] < results[False][2]


@pytest.mark.parametrize("hidden", [4, 6, 8, 9])
def test_pipelined_forward_tiles_compute_the_same_in_fewer_cycles(hidden):
    """With ``overlap_units`` the compiler software-pipelines a layer's output tiles (two
    accumulator regions; the vector passes of a tile among the next tile's matmuls): the
    same losses, weights and outputs as the tile-by-tile program, bit for bit, in fewer
    cycles, for even and odd numbers of tiles; the gateware runs the pipelined program
    with the reference model's cycles."""
    from tinytpu_hdl.model import MLP
    rng = np.random.default_rng(hidden)
    x, y = rng.uniform(-1, 1, (6, 5)), rng.uniform(-1, 1, (6, 3))
    results = {}
    for overlap in (False, True):
        cfg = TPUConfig(n=2, overlap_units=overlap)
        model = MLP.random([5, hidden, 3], seed=2, leak=0.25,
                           activations=["leaky_relu", "none"])
        acc = Accelerator(cfg)
        losses = acc.train(model, x, y, lr=0.25, epochs=2, batch_size=6)
        train_cycles = acc.stats.cycles
        out = acc.forward(model, x)
        results[overlap] = (losses, model.weights + model.biases, out, train_cycles,
                            acc.stats.cycles)
    (l0, p0, o0, t0, f0), (l1, p1, o1, t1, f1) = results[False], results[True]
    assert l0 == l1 and np.array_equal(o0, o1)
    assert all(np.array_equal(a, b) for a, b in zip(p0, p1))
    assert t1 < t0 and f1 < f0
    if hidden == 6:
        model = MLP.random([5, hidden, 3], seed=2, leak=0.25, activations=["leaky_relu", "none"])
        stats = {}
        for backend in ("reference", "pysim"):
            acc = Accelerator(TPUConfig(n=2), backend=backend)
            losses = acc.train(model.copy(), x, y, lr=0.25, epochs=1, batch_size=6)
            stats[backend] = (losses, acc.stats)
        assert stats["reference"] == stats["pysim"]


@pytest.mark.parametrize("sizes, activations, acc_depth", [
    ([5, 6, 7, 3], ["leaky_relu", "relu", "none"], 512),   # a leak change between layers
    ([5, 7, 3], ["leaky_relu", "leaky_relu"], 512),
    ([5, 6, 3], ["leaky_relu", "leaky_relu"], 512),        # the carried pass reads acc[0]
    ([5, 7, 3], ["leaky_relu", "leaky_relu"], 16),         # no room above for the gradients
    ([5, 3, 2], ["leaky_relu", "none"], 512),              # a one-tile next layer
    ([5, 6, 2], ["leaky_relu", "none"], 512),              # ... writing the carry's rows
])
def test_passes_carried_into_the_next_phase_compute_the_same(sizes, activations, acc_depth):
    """With ``overlap_units`` a hidden layer's last transposed pass runs among the next
    layer's matmuls, and the last pass of a layer's input gradients among the weight
    gradients' (which then accumulate above the rows that pass reads, where they fit): the
    same losses, weights and outputs as the tile-by-tile program, bit for bit, in fewer
    cycles, whatever leak the next layer sets and wherever the gradients fit."""
    from tinytpu_hdl.model import MLP
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (6, sizes[0])), rng.uniform(-1, 1, (6, sizes[-1]))
    results = {}
    for overlap in (False, True):
        model = MLP.random(sizes, seed=0, leak=0.25, activations=activations)
        acc = Accelerator(TPUConfig(n=2, acc_depth=acc_depth, overlap_units=overlap))
        losses = acc.train(model, x, y, lr=0.25, epochs=2, batch_size=6)
        results[overlap] = (losses, model.weights + model.biases, acc.stats.cycles)
    (l0, p0, t0), (l1, p1, t1) = results[False], results[True]
    assert l0 == l1
    assert all(np.array_equal(a, b) for a, b in zip(p0, p1))
    assert t1 < t0
