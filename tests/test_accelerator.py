# amaranth: UnusedElaboratable=no
"""The user API: matmul, forward and training on the device, against numpy and floats."""

import re

import numpy as np
import pytest

from tinytpu_hdl import MLP, Accelerator, TPUConfig, TPUError
from tinytpu_hdl.compiler import CompileError
from tinytpu_hdl.demos.xor import XOR_X, XOR_Y, xor_model
from tinytpu_hdl.isa import ErrorCode
from tinytpu_hdl.numeric import Q8_8, Q16_16, add_sat, dot_chain


def chained_matmul(a_raw, b_raw, n):
    """Numpy model of the tiled product: per tile the array's saturating chain, then a
    saturating accumulation over the tiles."""
    k = a_raw.shape[1]
    out = None
    for k0 in range(0, k, n):
        part = dot_chain(a_raw[:, k0:k0 + n], b_raw[k0:k0 + n], Q16_16)
        out = part if out is None else add_sat(out, part, Q16_16)
    return out


@pytest.mark.parametrize("m, k, n_out", [(1, 1, 1), (7, 5, 9), (12, 8, 4), (3, 11, 6)])
@pytest.mark.parametrize("n", [2, 4])
def test_matmul_reference_bit_exact(m, k, n_out, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n_out + n)
    acc = Accelerator(TPUConfig(n=n, ub_depth=512, acc_depth=16, imem_depth=32))
    a_raw = rng.integers(-32768, 32768, (m, k))
    b_raw = rng.integers(-32768, 32768, (k, n_out))
    assert np.array_equal(acc.matmul_raw(a_raw, b_raw), chained_matmul(a_raw, b_raw, n))
    a = rng.uniform(-3, 3, (m, k))
    b = rng.uniform(-3, 3, (k, n_out))
    got = acc.matmul(a, b)
    a_q, b_q = Q8_8.decode(Q8_8.encode(a)), Q8_8.decode(Q8_8.encode(b))
    assert np.array_equal(got, a_q @ b_q)                 # exact: no rounding in the array
    assert acc.stats.macs == acc.stats.array_busy_cycles * n * n


@pytest.mark.parametrize("n, shape", [(2, (5, 3, 7)), (3, (4, 7, 5))])
def test_matmul_pysim_matches_reference(n, shape):
    m, k, n_out = shape
    rng = np.random.default_rng(n)
    a_raw = rng.integers(-32768, 32768, (m, k))
    b_raw = rng.integers(-32768, 32768, (k, n_out))
    cfg = TPUConfig(n=n, ub_depth=64, acc_depth=5, imem_depth=16)
    results = []
    for backend in ("reference", "pysim"):
        acc = Accelerator(cfg, backend=backend)
        results.append((acc.matmul_raw(a_raw, b_raw), acc.stats))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][0], chained_matmul(a_raw, b_raw, n))
    assert results[0][1] == results[1][1]
    assert results[0][1].runs > 1                           # the result needed several passes


def test_looped_matmul_keeps_the_array_busy():
    acc = Accelerator(TPUConfig(n=4, ub_depth=4096, acc_depth=128, imem_depth=32))
    rng = np.random.default_rng(3)
    a = rng.integers(-1000, 1000, (64, 48))
    b = rng.integers(-1000, 1000, (48, 40))
    assert np.array_equal(acc.matmul_raw(a, b), a @ b)
    assert acc.stats.utilization > 0.9


def test_forward_matches_float_network():
    model = MLP.random([5, 7, 3], seed=1, leak=0.1, activations=["leaky_relu", "none"])
    x = np.random.default_rng(0).uniform(-1, 1, (9, 5))
    acc = Accelerator(TPUConfig(n=2, ub_depth=256, acc_depth=16))
    got = acc.forward(model, x, batch_size=4)
    assert got.shape == (9, 3)
    assert np.max(np.abs(got - model.forward_float(x))) < 0.02


@pytest.mark.parametrize("n", [2, 4])
def test_one_training_step_matches_float_sgd(n):
    """Same init, same lr, one step: every weight and bias of every layer agrees with float64
    SGD within a few LSBs of Q8.8, which checks the 2/(B*out) factor, the derivative, the bias
    gradients and the update sign."""
    model = MLP.random([3, 5, 2], seed=4, leak=0.25)
    x = np.random.default_rng(1).uniform(-1, 1, (6, 3))
    y = np.random.default_rng(2).uniform(-1, 1, (6, 2))
    ref = model.copy()
    ref_before = ref.copy()
    ref.sgd_step_float(x, y, 0.5)
    dev = model.copy()
    Accelerator(TPUConfig(n=n, ub_depth=512)).train(dev, x, y, lr=0.5, epochs=1, batch_size=6,
                                                   rounding="nearest")
    for i in range(2):
        for got, want, before in ((dev.weights[i], ref.weights[i], ref_before.weights[i]),
                                  (dev.biases[i], ref.biases[i], ref_before.biases[i])):
            assert np.max(np.abs(got - want)) <= 3 * Q8_8.lsb
            moved = np.abs(want - before) > 4 * Q8_8.lsb
            assert moved.any()                          # the step is large enough to test
            assert np.all(np.sign(got - before)[moved] == np.sign(want - before)[moved])


def test_xor_trains_on_reference():
    model = xor_model()
    acc = Accelerator(TPUConfig(n=2))
    losses = acc.train(model, XOR_X, XOR_Y, lr=0.5, epochs=300, batch_size=4)
    pred = acc.forward(model, XOR_X).ravel()
    assert np.all((pred > 0.5) == (XOR_Y.ravel() > 0.5))
    assert losses[-1] < 0.01 < losses[0]
    assert acc.stats.runs == 1


def test_xor_same_results_for_every_array_size():
    results = []
    for n in (2, 4):
        model = xor_model()
        losses = Accelerator(TPUConfig(n=n)).train(model, XOR_X, XOR_Y, lr=0.5, epochs=40,
                                                   batch_size=4)
        results.append((losses, model.weights, model.biases))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1] + results[0][2], results[1][1] + results[1][2]):
        assert np.array_equal(a, b)


def test_xor_training_pysim_matches_reference_bit_for_bit():
    cfg = TPUConfig(n=2)
    out = {}
    for backend, options in (("reference", {}), ("pysim", {"check_collisions": True})):
        model = xor_model()
        acc = Accelerator(cfg, backend=backend, **options)
        losses = acc.train(model, XOR_X, XOR_Y, lr=0.5, epochs=12, batch_size=4)
        out[backend] = (losses, model, acc.stats)
    (l1, m1, s1), (l2, m2, s2) = out["reference"], out["pysim"]
    assert l1 == l2 and s1 == s2
    for a, b in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        assert np.array_equal(a, b)


def test_stochastic_rounding_keeps_small_updates():
    """With a learning rate so small that every update is a fraction of an LSB, rounding to
    nearest leaves the parameters unchanged; stochastic rounding moves them by the right
    amount on average."""
    x = np.random.default_rng(0).uniform(0, 1, (32, 4))
    y = np.zeros((32, 1))
    model = MLP([np.zeros((1, 4))], [np.full(1, 0.5)], ["none"])
    lr, epochs = 2 ** -10, 100                   # exactly what the registers apply
    results = {}
    for rounding in ("nearest", "stochastic"):
        m = model.copy()
        Accelerator(TPUConfig(n=2, ub_depth=512)).train(m, x, y, lr=lr, epochs=epochs,
                                                       batch_size=32, rounding=rounding,
                                                       record_loss=False)
        results[rounding] = m
    assert results["nearest"].biases[0][0] == 0.5 and not results["nearest"].weights[0].any()
    f = model.copy()
    for _ in range(epochs):
        f.sgd_step_float(x, y, lr)
    moved = 0.5 - f.biases[0][0]
    got = 0.5 - results["stochastic"].biases[0][0]
    assert moved > 20 * Q8_8.lsb and abs(got - moved) < 0.3 * moved
    w_moved, w_got = -f.weights[0], -results["stochastic"].weights[0]
    assert np.all(w_moved > 5 * Q8_8.lsb) and np.all(np.abs(w_got - w_moved) < 0.5 * w_moved)


def test_digits_reference_accuracy():
    pytest.importorskip("sklearn")
    import re
    from tinytpu_hdl.demos.digits import load_digits_split, run_digits
    lines = []
    device_acc, float_acc, losses, _ = run_digits(epochs=10, plot=None, out=lines.append)
    assert device_acc >= 0.90
    assert losses[-1] < losses[0]
    assert abs(device_acc - float_acc) < 0.05
    # The cycles it reports are the training's: at least its multiply-accumulates (forward,
    # weight gradients of both layers, input gradients of the second) over the 64 PEs.
    cycles = int(re.search(r"Training ran (\d+) device cycles", "\n".join(lines)).group(1))
    batches = len(load_digits_split()[0]) // 32
    macs = 10 * batches * 32 * (2 * (64 * 32 + 32 * 10) + 32 * 10)
    assert macs <= cycles * 64 < 3 * macs


def test_digits_pysim_matches_reference_on_a_few_batches():
    pytest.importorskip("sklearn")
    from tinytpu_hdl.demos.digits import digits_model, load_digits_split
    x, y, _, _ = load_digits_split()
    x, onehot = x[:16], np.eye(10)[y[:16]]
    cfg = TPUConfig(n=4, ub_depth=2048, acc_depth=128, imem_depth=1024)
    out = {}
    for backend in ("reference", "pysim"):
        model = digits_model(hidden=8)
        acc = Accelerator(cfg, backend=backend)
        losses = acc.train(model, x, onehot, lr=0.5, epochs=1, batch_size=8)
        out[backend] = (losses, model, acc.stats)
    assert out["reference"][0] == out["pysim"][0]
    assert out["reference"][2] == out["pysim"][2]
    for a, b in zip(out["reference"][1].weights, out["pysim"][1].weights):
        assert np.array_equal(a, b)


class TestErrors:
    def test_model_too_large_for_the_buffer(self):
        acc = Accelerator(TPUConfig(n=2, ub_depth=64))
        model = MLP.random([20, 20, 2], seed=0)
        with pytest.raises(CompileError, match=r"training the 20-20-2 network with batch 4 needs "
                                               r"\d+ unified-buffer rows .* has ub_depth=64\. "
                                               r"Use ub_depth >= \d+; no 2-layer network with "
                                               r"20 inputs and 2 outputs trains here"):
            acc.train(model, np.zeros((8, 20)), np.zeros((8, 2)), lr=0.1, epochs=1, batch_size=4)
        acc = Accelerator(TPUConfig(n=2, ub_depth=200))
        with pytest.raises(CompileError, match=r"the largest 2-layer network with 20 inputs "
                                               r"and 2 outputs that trains here at batch 4 is "
                                               r"20-(\d+)-2") as exc:
            acc.train(model, np.zeros((8, 20)), np.zeros((8, 2)), lr=0.1, epochs=1, batch_size=4)
        hidden = int(re.search(r"is 20-(\d+)-2", str(exc.value)).group(1))
        fits = MLP.random([20, hidden, 2], seed=0)
        acc.train(fits, np.zeros((8, 20)), np.zeros((8, 2)), lr=0.1, epochs=1, batch_size=4)
        with pytest.raises(CompileError):
            acc.train(MLP.random([20, hidden + 1, 2], seed=0), np.zeros((8, 20)),
                      np.zeros((8, 2)), lr=0.1, epochs=1, batch_size=4)

    def test_batch_too_large_for_the_accumulators(self):
        acc = Accelerator(TPUConfig(n=2, ub_depth=4096, acc_depth=8))
        with pytest.raises(CompileError, match="batch size 16 needs 16 accumulator rows; this "
                                               "TPUConfig has acc_depth=8"):
            acc.train(xor_model(), np.tile(XOR_X, (4, 1)), np.tile(XOR_Y, (4, 1)), lr=0.1,
                      epochs=1, batch_size=16)

    def test_shape_mismatches(self):
        acc = Accelerator(TPUConfig(n=2))
        with pytest.raises(ValueError, match=r"x must have shape \(samples, 2\)"):
            acc.forward(xor_model(), np.zeros((4, 3)))
        with pytest.raises(ValueError, match=r"y must have shape \(4, 1\)"):
            acc.train(xor_model(), XOR_X, np.zeros((4, 2)), lr=0.1, epochs=1, batch_size=4)
        with pytest.raises(ValueError, match=r"matmul needs non-empty \(M, K\) and \(K, N\)"):
            acc.matmul(np.zeros((2, 3)), np.zeros((2, 3)))
        with pytest.raises(ValueError, match="layer 1 takes 3 inputs but layer 0 has 2"):
            MLP([np.zeros((2, 2)), np.zeros((1, 3))], [np.zeros(2), np.zeros(1)],
                ["none", "none"])

    def test_non_finite_inputs(self):
        acc = Accelerator(TPUConfig(n=2))
        x = XOR_X.copy()
        x[1, 1] = np.nan
        with pytest.raises(ValueError, match="x: 1 value.* NaN or infinite"):
            acc.forward(xor_model(), x)

    def test_values_out_of_range_are_counted(self):
        acc = Accelerator(TPUConfig(n=2))
        x = XOR_X * 300.0
        with pytest.raises(ValueError, match=r"x: 4 value\(s\) outside the Q8.8 range"):
            acc.forward(xor_model(), x)
        with pytest.warns(UserWarning, match="4 value.* were clipped"):
            acc.forward(xor_model(), x, clip=True)

    def test_unknown_activation(self):
        with pytest.raises(ValueError, match="unknown activation 'tanh'"):
            MLP.random([2, 2], activations=["tanh"])

    def test_bad_training_arguments(self):
        acc = Accelerator(TPUConfig(n=2))
        for kwargs, message in ((dict(epochs=0), "epochs must be a positive integer"),
                                (dict(batch_size=5), "batch_size 5 is larger than the 4"),
                                (dict(lr=-1.0), "lr must be a finite number > 0, not -1.0"),
                                (dict(rounding="up"), "rounding must be")):
            args = dict(lr=0.1, epochs=1, batch_size=4) | kwargs
            with pytest.raises(ValueError, match=message):
                acc.train(xor_model(), XOR_X, XOR_Y, **args)

    def test_unknown_backend(self):
        with pytest.raises(ValueError, match="unknown backend 'fpga'"):
            Accelerator(TPUConfig(n=2), backend="fpga")

    def test_run_reports_hardware_errors(self):
        acc = Accelerator(TPUConfig(n=2))
        with pytest.raises(TPUError, match="UB_RANGE at pc 1") as exc:
            acc.run("nop\nmatmul ub[5000], acc[0], rows=1\nhalt")
        assert exc.value.code == ErrorCode.UB_RANGE
        assert exc.value.instruction == "matmul ub[5000], acc[0], rows=1"


def test_torch_roundtrip():
    torch = pytest.importorskip("torch")
    model = MLP.random([3, 4, 2], seed=0, leak=0.2, activations=["leaky_relu", "relu"])
    seq = model.to_torch()
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3))
    with torch.no_grad():
        out = seq(torch.from_numpy(x)).numpy()
    assert np.allclose(out, model.forward_float(x))
    back = MLP.from_torch(seq)
    assert back.activations == ["leaky_relu", "relu"] and back.leak == pytest.approx(0.2)
    assert np.allclose(back.forward_float(x), out)
