"""Train a small MLP on scikit-learn's 8x8 digits on the device, next to the same network
trained in float64 numpy with the same initialisation and schedule."""

import numpy as np

from ..config import TPUConfig
from ..model import MLP
from ..runtime.accelerator import Accelerator
from .common import ProgressBar, save_loss_plot, save_step_timeline

__all__ = ["load_digits_split", "digits_model", "run_digits"]


def load_digits_split(seed=0, train_fraction=0.8):
    """The bundled digits (no download), pixels scaled to [0, 1], shuffled, split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise RuntimeError("the digits demo needs scikit-learn (pip install scikit-learn)") \
            from None
    digits = load_digits()
    x = digits.data / 16.0
    y = digits.target
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(train_fraction * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def digits_model(hidden=32, seed=0):
    return MLP.random([64, hidden, 10], seed=seed, leak=0.01,
                      activations=["leaky_relu", "none"])


def train_float(model, x, y_onehot, *, lr, epochs, batch_size):
    batches = len(x) // batch_size
    losses = []
    for _ in range(epochs):
        epoch = [model.sgd_step_float(x[j * batch_size:(j + 1) * batch_size],
                                      y_onehot[j * batch_size:(j + 1) * batch_size], lr)
                 for j in range(batches)]
        losses.append(float(np.mean(epoch)))
    return losses


def fitting_size(cfg, hidden=None, batch_size=None):
    """``(hidden, batch_size)`` for training 64-hidden-10 on ``cfg``: the given values, or
    where one is not given, the largest up to 32 that trains with the other on this
    configuration (a small board's buffer does not hold 64-32-10 at batch 32)."""
    from ..compiler import Capacity
    cap = Capacity(cfg)
    hiddens = [hidden] if hidden else list(range(32, 0, -1))
    batches = [batch_size] if batch_size else list(range(min(32, cap.max_batch), 0, -1))
    # The widest hidden layer with a batch of at least 4 (then any batch).
    for least in (min(4, batches[0]), 1):
        for h in hiddens:
            for b in batches:
                if b >= least and cap.training([64, h, 10], b).fits:
                    return h, b
    return hiddens[0], batches[0]             # does not fit: training says why


def run_digits(*, backend="reference", n=8, epochs=10, lr=0.5, batch_size=None, hidden=None,
               seed=0, plot="digits_loss.png", out=print, cfg=None, options=None,
               timeline=None, waveform=None):
    """Train on ``backend``. ``cfg`` (default: ``TPUConfig(n=n)`` with its default memories)
    must match the hardware behind the backend, e.g. a board's configuration; ``options``
    go to the backend's transport (e.g. ``port`` and ``baudrate`` for uart). The samples
    are streamed through the chip when they do not fit it (``acc.last_plan`` says how).
    ``hidden`` and ``batch_size`` default to 32, or the largest that fit ``cfg``.
    ``timeline``: a PNG path for one training step's per-engine timeline; ``waveform``: a
    VCD of the whole simulation (pysim and verilator), with a GTKWave ``.gtkw`` beside it."""
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    onehot = np.eye(10)[y_train]
    cfg = cfg or TPUConfig(n=n)
    n = cfg.n
    fitted = fitting_size(cfg, hidden, batch_size)
    if (hidden, batch_size) != fitted and fitted != (32, 32):
        out(f"This configuration (N={n}, {cfg.ub_depth:,}-row buffer) trains at most "
            f"64-{fitted[0]}-10 with batch {fitted[1]} on chip: training that.")
    hidden, batch_size = fitted
    if waveform:
        options = dict(options or {}, waveform=waveform)
    acc = Accelerator(cfg, backend=backend, **(options or {}))
    model = digits_model(hidden, seed)
    if timeline and save_step_timeline(cfg, model, x_train, onehot, batch_size=batch_size,
                                       lr=lr, path=timeline, title=f"digits on N={n}"):
        out(f"timeline of one training step written to {timeline}")
    reference = model.copy()
    out(f"Training a 64-{hidden}-10 MLP on {len(x_train)} digits ({len(x_test)} held out), "
        f"MSE on one-hot targets, SGD lr {lr}, batch {batch_size}, {epochs} epochs, on the "
        f"{backend} backend (N={n})")
    losses = acc.train(model, x_train, onehot, lr=lr, epochs=epochs, batch_size=batch_size,
                       progress=ProgressBar(epochs))
    stats = acc.stats                   # the training's (the test-set pass below has its own)
    train_plan = acc.last_plan
    device_acc = float(np.mean(np.argmax(acc.forward(model, x_test), axis=1) == y_test))
    float_losses = train_float(reference, x_train, onehot, lr=lr, epochs=epochs,
                               batch_size=batch_size)
    float_acc = float(np.mean(np.argmax(reference.forward_float(x_test), axis=1) == y_test))
    out(f"{'':>22} {'device':>10} {'float64':>10}")
    out(f"{'final training loss':>22} {losses[-1]:>10.5f} {float_losses[-1]:>10.5f}")
    out(f"{'test accuracy':>22} {100 * device_acc:>9.1f}% {100 * float_acc:>9.1f}%")
    out(f"Training ran {stats.cycles} device cycles ({stats.cycles // epochs} per epoch) in "
        f"{stats.runs} program runs ({train_plan.info['batches per run']} batches of "
        f"{batch_size} per run, buffer {cfg.ub_depth} rows), array utilization "
        f"{100 * stats.utilization:.1f}%")
    if plot and save_loss_plot(losses, plot, f"digits on tinytpu_hdl (N={n}, {backend})",
                               extra=[("float64", float_losses)]):
        out(f"loss curves written to {plot}")
    acc.close()
    return device_acc, float_acc, losses, float_losses
