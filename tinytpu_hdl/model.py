"""A multilayer perceptron held as float arrays, with a float reference of its maths."""

from dataclasses import dataclass

import numpy as np

from .compiler.mlp import LayerSpec
from .validate import positive_int, real_array, real_number

__all__ = ["MLP", "ACTIVATIONS"]

#: Activation names accepted by :class:`MLP`: ``"leaky_relu"`` (with the model's ``leak``;
#: leak 0 is ReLU), ``"relu"`` (leak 0) and ``"none"`` (identity).
ACTIVATIONS = ("leaky_relu", "relu", "none")


@dataclass
class MLP:
    """Fully connected layers ``h = act(h W^T + b)``; ``W`` is shaped ``(out, in)`` like
    ``torch.nn.Linear.weight``."""

    weights: list
    biases: list
    activations: list
    leak: float = 0.01

    def __post_init__(self):
        self.weights = [real_array(f"weights[{i}]", w).copy()
                        for i, w in enumerate(self.weights)]
        self.biases = [real_array(f"biases[{i}]", b).reshape(-1).copy()
                       for i, b in enumerate(self.biases)]
        self.activations = list(self.activations)
        self.leak = real_number("leak", self.leak, lo=0.0, hi=1.0)
        if not (len(self.weights) == len(self.biases) == len(self.activations)) or not self.weights:
            raise ValueError(f"an MLP needs as many weights, biases and activations, at least one "
                             f"each; got {len(self.weights)}, {len(self.biases)}, "
                             f"{len(self.activations)}")
        for i, (w, b, act) in enumerate(zip(self.weights, self.biases, self.activations)):
            if w.ndim != 2:
                raise ValueError(f"layer {i}: weights must be 2-D (out, in), not shape {w.shape}")
            if b.shape != (w.shape[0],):
                raise ValueError(f"layer {i}: bias has shape {b.shape}, expected ({w.shape[0]},)")
            if not isinstance(act, str) or act not in ACTIVATIONS:
                raise ValueError(f"layer {i}: unknown activation {act!r}; choose one of "
                                 f"{', '.join(ACTIVATIONS)}")
            if i and self.weights[i - 1].shape[0] != w.shape[1]:
                raise ValueError(f"layer {i} takes {w.shape[1]} inputs but layer {i - 1} has "
                                 f"{self.weights[i - 1].shape[0]} outputs")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ValueError(f"layer {i}: parameters contain NaN or infinity")

    @classmethod
    def from_arrays(cls, weights, biases, activations, leak=0.01):
        return cls(list(weights), list(biases), list(activations), leak)

    @classmethod
    def random(cls, sizes, *, seed=0, activations=None, leak=0.01, scale=None):
        """Layers of ``sizes[i] -> sizes[i+1]``, weights uniform in ``+-1/sqrt(in)`` (like
        torch.nn.Linear), Leaky ReLU on every layer unless ``activations`` says otherwise."""
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output size, not {sizes}")
        sizes = [positive_int(f"sizes[{i}]", size) for i, size in enumerate(sizes)]
        rng = np.random.default_rng(seed)
        weights, biases = [], []
        for fan_in, fan_out in zip(sizes, sizes[1:]):
            bound = scale if scale is not None else 1 / np.sqrt(fan_in)
            weights.append(rng.uniform(-bound, bound, (fan_out, fan_in)))
            biases.append(rng.uniform(-bound, bound, fan_out))
        acts = activations or ["leaky_relu"] * (len(sizes) - 1)
        return cls(weights, biases, acts, leak)

    def copy(self):
        return MLP([w.copy() for w in self.weights], [b.copy() for b in self.biases],
                   list(self.activations), self.leak)

    @property
    def sizes(self):
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    def layer_leak(self, i):
        return 0.0 if self.activations[i] == "relu" else self.leak

    def specs(self):
        """The layers as the compiler sees them."""
        return [LayerSpec(w.shape[1], w.shape[0], "none" if act == "none" else "leaky_relu",
                          self.layer_leak(i))
                for i, (w, act) in enumerate(zip(self.weights, self.activations))]

    # --- float reference ---------------------------------------------------------------------

    def _act(self, i, z):
        if self.activations[i] == "none":
            return z
        return np.where(z >= 0, z, self.layer_leak(i) * z)

    def forward_float(self, x):
        """Float64 forward pass; returns the output."""
        return self.forward_float_all(x)[-1]

    def forward_float_all(self, x):
        hs = [np.asarray(x, dtype=np.float64)]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            hs.append(self._act(i, hs[-1] @ w.T + b))
        return hs

    def sgd_step_float(self, x, y, lr):
        """One float64 SGD step on the MSE loss (mean over all elements); returns the loss
        before the step. Used as the reference the device's training is checked against."""
        hs = self.forward_float_all(x)
        out = hs[-1]
        y = np.asarray(y, dtype=np.float64).reshape(out.shape)
        loss = float(np.mean((out - y) ** 2))
        grad = 2.0 / out.size * (out - y)
        for i in reversed(range(len(self.weights))):
            z = hs[i] @ self.weights[i].T + self.biases[i]
            if self.activations[i] != "none":
                grad = grad * np.where(z > 0, 1.0, self.layer_leak(i))
            dw = grad.T @ hs[i]
            db = grad.sum(axis=0)
            grad = grad @ self.weights[i]
            self.weights[i] -= lr * dw
            self.biases[i] -= lr * db
        return loss

    # --- torch -------------------------------------------------------------------------------

    def to_torch(self):
        """A ``torch.nn.Sequential`` of float64 ``Linear`` and ``LeakyReLU``/``ReLU`` layers
        (torch needed; ``.float()`` it for float32)."""
        import torch
        layers = []
        for i, (w, b, act) in enumerate(zip(self.weights, self.biases, self.activations)):
            lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if act == "relu":
                layers.append(torch.nn.ReLU())
            elif act == "leaky_relu":
                layers.append(torch.nn.LeakyReLU(self.leak))
        return torch.nn.Sequential(*layers)

    @classmethod
    def from_torch(cls, seq):
        """From a ``torch.nn.Sequential`` of ``Linear`` layers, each optionally followed by
        ``ReLU`` or ``LeakyReLU`` (one negative slope for the whole model)."""
        import torch
        weights, biases, acts = [], [], []
        leak = None
        for module in seq:
            if isinstance(module, torch.nn.Linear):
                weights.append(module.weight.detach().double().numpy().copy())
                bias = module.bias
                biases.append(bias.detach().double().numpy().copy() if bias is not None
                              else np.zeros(module.out_features))
                acts.append("none")
            elif isinstance(module, (torch.nn.ReLU, torch.nn.LeakyReLU)):
                if not acts or acts[-1] != "none":
                    raise ValueError(f"{module} does not follow a Linear layer")
                if isinstance(module, torch.nn.ReLU):
                    acts[-1] = "relu"
                else:
                    if leak is not None and leak != module.negative_slope:
                        raise ValueError("all LeakyReLU layers must share one negative slope")
                    leak = module.negative_slope
                    acts[-1] = "leaky_relu"
            else:
                raise ValueError(f"unsupported module {type(module).__name__}; only Linear, ReLU "
                                 f"and LeakyReLU")
        return cls(weights, biases, acts, 0.01 if leak is None else leak)
