"""Train the 2-2-1 XOR network on the device."""

import numpy as np

from ..config import TPUConfig
from ..model import MLP
from ..runtime.accelerator import Accelerator
from .common import ProgressBar, save_loss_plot, save_step_timeline

__all__ = ["XOR_X", "XOR_Y", "xor_model", "run_xor"]

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = np.array([[0], [1], [1], [0]], dtype=np.float64)


def xor_model(seed=13):
    """The 2-2-1 network with Leaky ReLU (0.5) on both layers, initialised from ``seed``."""
    return MLP.random([2, 2, 1], seed=seed, leak=0.5, scale=1.0)


def run_xor(*, backend="reference", n=2, epochs=300, lr=0.5, seed=13, plot="xor_loss.png",
            out=print, cfg=None, options=None, timeline=None, waveform=None):
    """Train XOR on ``backend``. ``cfg`` (default: a ``TPUConfig`` with an ``n`` x ``n``
    array) must match the hardware behind the backend, e.g. a board's configuration;
    ``options`` go to the backend's transport (e.g. ``port`` and ``baudrate`` for uart).
    ``timeline``: a PNG path for one training step's per-engine timeline; ``waveform``: a
    VCD of the whole simulation (pysim and verilator), with a GTKWave ``.gtkw`` beside it."""
    cfg = cfg or TPUConfig(n=n)
    n = cfg.n
    if waveform:
        options = dict(options or {}, waveform=waveform)
    acc = Accelerator(cfg, backend=backend, **(options or {}))
    model = xor_model(seed)
    if timeline:
        if save_step_timeline(cfg, model, XOR_X, XOR_Y, batch_size=4, lr=lr, path=timeline,
                              title=f"XOR on N={n}"):
            out(f"timeline of one training step written to {timeline}")
    out(f"Training XOR: 2-2-1 MLP, Leaky ReLU 0.5, MSE, SGD lr {lr}, seed {seed}, batch 4, "
        f"on the {backend} backend (N={n}, {cfg.data} data)")
    bar = ProgressBar(epochs)
    losses = acc.train(model, XOR_X, XOR_Y, lr=lr, epochs=epochs, batch_size=4,
                       epochs_per_run=max(1, epochs // 20), progress=bar)
    s = acc.stats
    step = max(1, epochs // 10)
    out("epoch   loss")
    for e in list(range(0, epochs, step)) + ([epochs - 1] if (epochs - 1) % step else []):
        out(f"{e + 1:>5}   {losses[e]:.5f}")
    pred = acc.forward(model, XOR_X).ravel()
    out(f"Predictions after {epochs} epochs:")
    correct = 0
    for (a, b), p, t in zip(XOR_X.astype(int), pred, XOR_Y.ravel().astype(int)):
        good = (p > 0.5) == bool(t)
        correct += good
        out(f"  {a} XOR {b} -> {p:7.4f}  (target {t})  {'ok' if good else 'WRONG'}")
    out(f"{correct}/4 correct. Training ran {s.cycles} device cycles in {s.runs} program runs "
        f"({s.cycles // epochs} cycles per epoch), {s.instructions} instructions, array "
        f"utilization {100 * s.utilization:.1f}%")
    if plot:
        if save_loss_plot(losses, plot, f"XOR on tinytpu_hdl (N={n}, {backend})"):
            out(f"loss curve written to {plot}")
        else:
            out("matplotlib is not installed: no loss curve (pip install matplotlib)")
    acc.close()
    return correct == 4, losses, model
