"""Lowering of a multilayer perceptron to TPU programs: inference, and training on the device.

Conventions (see :mod:`.layout` for the data layouts):

* parameters of layer ``l`` in the parameter layout (``W^T`` tiles and bias rows),
* activations ``H`` in the blocked layout (batch rows, feature lanes),
* the transposes ``H^T`` that weight gradients need in the transposed-chunk layout,
  produced on the device by streaming an identity matrix against the activations
  loaded transposed (``loadw ..., transpose``),
* index registers: ``r1`` batch counter, ``r2``/``r3``/``r4`` offsets of the current batch
  in the inputs / transposed inputs / targets (or outputs), ``r5`` epochs of this run and
  ``r6`` loss-log offset (both written by the host before the run).

Forward through layer ``l`` (``Z = H W^T + b``): for each output tile, the ``W^T`` tiles of
the tile's column are loaded as they are stored and the matching input blocks streamed,
accumulating over the input tiles; the vector unit adds the bias and applies the
activation. Backward: the last layer's vector pass computes ``dZ = s (H - Y) * act'``
directly from its accumulators; ``dH = dZ W`` streams ``dZ`` against the same stored
``W^T`` tiles loaded transposed, and the vector unit multiplies by the activation
derivative taken from the stored ``H``; weight and bias gradients ``[dW^T; db] =
[H^T; 1] dZ`` stream the transposed activations (and a row of ones) against ``dZ`` chunks,
accumulating over the batch, and one ``gd`` per output tile updates ``W^T`` and ``b``.
"""

from dataclasses import dataclass, field

from ..isa import ConfigReg
from .emit import Emitter
from .layout import ceil_div
from .memory import CompileError, MemoryPlan

__all__ = ["LayerSpec", "ForwardPlan", "TrainingPlan", "compile_forward", "compile_training",
           "split_loss_scale"]

MAX_STRIDE = 255


@dataclass(frozen=True)
class LayerSpec:
    """Shape and activation of one fully connected layer."""

    in_features: int
    out_features: int
    activation: str       # "leaky_relu" or "none"
    leak: float = 0.0

    @property
    def leaky(self):
        return self.activation == "leaky_relu"


@dataclass
class ForwardPlan:
    program: object
    layers: tuple
    batch: int
    batches: int
    regions: dict = field(default_factory=dict)

    @property
    def x_stride(self):
        return self.batch * ceil_div(self.layers[0].in_features, self.n)

    @property
    def out_stride(self):
        return self.batch * ceil_div(self.layers[-1].out_features, self.n)

    n: int = 0


@dataclass
class TrainingPlan:
    program: object
    layers: tuple
    batch: int
    batches: int
    n: int
    lr: float                  # the learning rate asked for
    loss_scale: float          # value of the loss_scale register
    lr_register: float         # value of the lr register
    log_slots: int             # epochs whose outputs fit in the loss log (0: no log)
    regions: dict = field(default_factory=dict)

    @property
    def effective_lr(self):
        """The learning rate the device applies to the true MSE gradient (after rounding the
        two registers to the scalar format)."""
        return self._effective

    _effective: float = 0.0


def _check_layers(layers):
    for i, layer in enumerate(layers):
        if layer.activation not in ("leaky_relu", "none"):
            raise CompileError(f"layer {i}: unknown activation {layer.activation!r}")
        if i and layers[i - 1].out_features != layer.in_features:
            raise CompileError(f"layer {i} takes {layer.in_features} inputs but layer {i - 1} "
                               f"gives {layers[i - 1].out_features}")


def _alloc_params(plan, layers, n):
    return [plan.alloc(f"params{i}", ceil_div(layer.out_features, n) * (layer.in_features + 1))
            for i, layer in enumerate(layers)]


def _forward_layer(e, layer, params, src, acc_base, batch):
    """Emit ``src @ W^T`` for one layer, one output tile at a time, into the accumulators.
    ``src`` is ``(base, reg)`` of a blocked matrix with ``batch`` rows per block. A generator:
    after each output tile's matrix products it yields ``(tile, bias_row)`` so that the caller
    emits that tile's vector pass before the next tile reuses the accumulators."""
    n = e.n
    in_f = layer.in_features
    for ot, (o0, _) in enumerate(e.tiles(layer.out_features)):
        tile_base = params.base + ot * (in_f + 1)
        e.matmul_tiles(
            weights=lambda it: (tile_base + it * n, min(n, in_f - it * n)),
            inputs=lambda it: (src[0] + it * batch, src[1], 1),
            acc_base=acc_base, m=batch, k_total=ceil_div(in_f, n), transpose=False,
            comment=f"layer {layer.in_features}->{layer.out_features}, outputs {o0}..")
        yield ot, tile_base + in_f


def _vpu(e, src, dst, rows, *, dst_reg=0, aux=None, bias=None, path=(), stride=1):
    text = f"vpu {e.addr('acc', src)}, {e.addr('ub', dst, dst_reg)}, rows={rows}"
    if aux is not None:
        text += f", aux={e.addr('ub', *aux)}"
    if bias is not None:
        text += f", bias={e.addr('ub', bias)}"
    if path:
        text += ", path=" + "|".join(path)
    if stride != 1:
        text += f", stride={stride}"
    e.emit(text)


def compile_forward(cfg, layers, batch, batches):
    """Inference over ``batches`` batches of ``batch`` samples stored one after the other."""
    layers = tuple(layers)
    _check_layers(layers)
    n = cfg.n
    if batch < 1 or batches < 1:
        raise CompileError(f"batch size and batch count must be positive, not {batch}, {batches}")
    plan = MemoryPlan(cfg.ub_depth, cfg.acc_depth)
    acc = plan.alloc_acc("work", batch)
    params = _alloc_params(plan, layers, n)
    x_stride = batch * ceil_div(layers[0].in_features, n)
    out_stride = batch * ceil_div(layers[-1].out_features, n)
    x = plan.alloc("x", batches * x_stride)
    out = plan.alloc("out", batches * out_stride)
    hidden = [plan.alloc(f"h{i}", batch * ceil_div(layer.out_features, n))
              for i, layer in enumerate(layers[:-1])]
    e = Emitter(cfg)
    e.emit(f"setr r1, {batches}")
    e.emit("setr r2, 0")
    e.emit("setr r4, 0")
    e.label("batch")
    e.forget_config()
    for i, layer in enumerate(layers):
        src = (x.base, 2) if i == 0 else (hidden[i - 1].base, 0)
        last = i == len(layers) - 1
        for ot, bias in _forward_layer(e, layer, params[i], src, acc.base, batch):
            path = ("bias", "act") if layer.leaky else ("bias",)
            if layer.leaky:
                e.config(ConfigReg.LEAK, layer.leak)
            if last:
                _vpu(e, acc.base, out.base + ot * batch, batch, dst_reg=4, bias=bias, path=path)
            else:
                _vpu(e, acc.base, hidden[i].base + ot * batch, batch, bias=bias, path=path)
    e.emit(f"addi r2, r2, {x_stride}")
    e.emit(f"addi r4, r4, {out_stride}")
    e.emit("djnz r1, batch")
    e.emit("halt")
    regions = {"x": x, "out": out, **{f"params{i}": p for i, p in enumerate(params)},
               **{f"h{i}": h for i, h in enumerate(hidden)}}
    fp = ForwardPlan(e.program(), layers, batch, batches, regions, n=n)
    fp.text = e.text
    return fp


def split_loss_scale(cfg, lr, scale):
    """Split ``lr * scale`` (scale = 2 / (batch * outputs)) between the ``lr`` and
    ``loss_scale`` registers.

    A gradient of Q8.8 values keeps most of its significant bits unscaled, so the loss
    scale register is 1 and the factor goes into the learning rate, unless that would leave
    the learning-rate register with fewer than 64 steps of its scalar format; then the loss
    scale shrinks by powers of two until it does not. Returns the two register values as
    represented, and the effective learning rate they give.
    """
    sc = cfg.scalar
    target = lr * scale
    loss = 1.0
    while target / loss * sc.scale < 64 and loss > sc.lsb * 64:
        loss /= 2
    lr_reg = target / loss
    if lr_reg > sc.max_value:
        loss = min(sc.max_value, target / sc.max_value * 2)
        lr_reg = target / loss
    lr_raw = int(sc.encode(lr_reg))
    loss_raw = int(sc.encode(loss))
    if lr_raw == 0:
        raise CompileError(f"learning rate {lr} is too small for the {sc} learning-rate "
                           f"register (lr * 2/(batch*outputs) = {target:.3g})")
    effective = sc.decode(lr_raw) * sc.decode(loss_raw) / scale
    return float(sc.decode(lr_raw)), float(sc.decode(loss_raw)), float(effective)


def compile_training(cfg, layers, batch, batches, lr, *, log_slots=None, stochastic=True):
    """Training with plain SGD on the MSE loss (mean over all elements) for ``r5`` epochs over
    ``batches`` batches of ``batch`` samples. ``log_slots`` epochs of the network's outputs
    are kept for the host to compute the loss (default: as many as fit, 0 for none).
    ``stochastic`` selects stochastic rounding of the parameter updates (see
    :func:`tinytpu_hdl.numeric.stochastic_narrow`) instead of rounding to nearest."""
    layers = tuple(layers)
    _check_layers(layers)
    n = cfg.n
    L = len(layers)
    if batch < 1 or batches < 1:
        raise CompileError(f"batch size and batch count must be positive, not {batch}, {batches}")
    nb = ceil_div(batch, n)
    if nb > MAX_STRIDE:
        raise CompileError(f"batch size {batch} needs a stride of {nb} rows for the transposed "
                           f"activations; the ISA allows {MAX_STRIDE} (batch <= {MAX_STRIDE * n})")
    out_f = layers[-1].out_features
    scale = 2.0 / (batch * out_f)
    lr_reg, loss_reg, effective = split_loss_scale(cfg, lr, scale)

    plan = MemoryPlan(cfg.ub_depth, cfg.acc_depth)
    max_in = max(layer.in_features for layer in layers)
    acc = plan.alloc_acc("work", max(batch, max_in + 1, n))
    params = _alloc_params(plan, layers, n)
    ident = plan.alloc("identity", n)
    x_stride = batch * ceil_div(layers[0].in_features, n)
    xt_stride = (layers[0].in_features + 1) * nb
    y_stride = batch * ceil_div(out_f, n)
    x = plan.alloc("x", batches * x_stride)
    xt = plan.alloc("xt", batches * xt_stride)
    y = plan.alloc("y", batches * y_stride)
    hidden = [plan.alloc(f"h{i}", batch * ceil_div(layer.out_features, n))
              for i, layer in enumerate(layers[:-1])]
    hidden_t = [plan.alloc(f"ht{i}", (layer.out_features + 1) * nb)
                for i, layer in enumerate(layers[:-1])]
    dz = [plan.alloc(f"dz{i}", batch * ceil_div(layer.out_features, n))
          for i, layer in enumerate(layers)]
    log_epoch = batches * y_stride
    free = cfg.ub_depth - plan.ub_used
    fit = free // log_epoch if log_epoch else 0
    slots = fit if log_slots is None else log_slots
    if log_slots is not None and log_slots > fit:
        raise CompileError(f"the loss log needs {log_slots * log_epoch} rows for {log_slots} "
                           f"epochs; {free} rows are free")
    slots = min(slots, 65535 // max(1, log_epoch))
    log = plan.alloc("log", slots * log_epoch) if slots else None

    e = Emitter(cfg)
    e.comment(f"SGD on MSE: lr {lr:g} x 2/({batch}*{out_f}) = lr register {lr_reg:g} x "
              f"loss_scale {loss_reg:g}")
    e.config(ConfigReg.LR, lr_reg)
    e.config(ConfigReg.LOSS_SCALE, loss_reg)
    e.label("epoch")
    e.emit(f"setr r1, {batches}")
    e.emit("setr r2, 0")
    e.emit("setr r3, 0")
    e.emit("setr r4, 0")
    e.label("batch")
    e.forget_config()
    e.config(ConfigReg.LR, lr_reg)
    e.config(ConfigReg.LOSS_SCALE, loss_reg)

    # Forward.
    for i, layer in enumerate(layers):
        src = (x.base, 2) if i == 0 else (hidden[i - 1].base, 0)
        last = i == L - 1
        for ot, bias in _forward_layer(e, layer, params[i], src, acc.base, batch):
            act = ("act",) if layer.leaky else ()
            if layer.leaky:
                e.config(ConfigReg.LEAK, layer.leak)
            if not last:
                _vpu(e, acc.base, hidden[i].base + ot * batch, batch, bias=bias,
                     path=("bias",) + act)
                continue
            if log is not None:
                _vpu(e, acc.base, log.base + ot * batch, batch, dst_reg=6, bias=bias,
                     path=("bias",) + act)
            deriv = ("deriv",) if layer.leaky else ()
            _vpu(e, acc.base, dz[i].base + ot * batch, batch, aux=(y.base + ot * batch, 4),
                 bias=bias, path=("bias",) + act + ("loss",) + deriv)
        if not last:
            e.comment(f"transpose h{i} for the weight gradients")
            for ot, (o0, ko) in enumerate(e.tiles(layer.out_features)):
                for bt, (b0, kb) in enumerate(e.tiles(batch)):
                    e.emit(f"loadw {e.addr('ub', hidden[i].base + ot * batch + b0)}, rows={kb}, "
                           f"transpose")
                    e.emit(f"matmul {e.addr('ub', ident.base)}, {e.addr('acc', acc.base)}, "
                           f"rows={ko}")
                    _vpu(e, acc.base, hidden_t[i].base + o0 * nb + bt, ko, stride=nb)

    # Backward.
    for i in reversed(range(L)):
        layer = layers[i]
        in_f = layer.in_features
        if i > 0:
            prev = layers[i - 1]
            e.comment(f"dZ{i - 1} = (dZ{i} W{i}) * act'(h{i - 1})")
            for it, (i0, _) in enumerate(e.tiles(in_f)):
                e.matmul_tiles(
                    weights=lambda ot, it=it: (params[i].base + ot * (in_f + 1) + it * n,
                                               min(n, in_f - it * n)),
                    inputs=lambda ot: (dz[i].base + ot * batch, 0, 1),
                    acc_base=acc.base, m=batch, k_total=ceil_div(layer.out_features, n),
                    transpose=True)
                if prev.leaky:
                    e.config(ConfigReg.LEAK, prev.leak)
                    _vpu(e, acc.base, dz[i - 1].base + it * batch, batch,
                         aux=(hidden[i - 1].base + it * batch, 0), path=("deriv",))
                else:
                    _vpu(e, acc.base, dz[i - 1].base + it * batch, batch)
        e.comment(f"[dW{i}^T; db{i}] = [h^T; 1] dZ{i}, then SGD")
        src_t = (xt.base, 3) if i == 0 else (hidden_t[i - 1].base, 0)
        for ot, _ in enumerate(e.tiles(layer.out_features)):
            e.matmul_tiles(
                weights=lambda bt, ot=ot: (dz[i].base + ot * batch + bt * n,
                                           min(n, batch - bt * n)),
                inputs=lambda bt: (src_t[0] + bt, src_t[1], nb),
                acc_base=acc.base, m=in_f + 1, k_total=nb, transpose=False)
            e.emit(f"gd {e.addr('acc', acc.base)}, {e.addr('ub', params[i].base + ot * (in_f + 1))}, "
                   f"rows={in_f + 1}" + (", stochastic" if stochastic else ""))

    e.emit(f"addi r2, r2, {x_stride}")
    e.emit(f"addi r3, r3, {xt_stride}")
    e.emit(f"addi r4, r4, {y_stride}")
    if log is not None:
        e.emit(f"addi r6, r6, {y_stride}")
    e.emit("djnz r1, batch")
    e.emit("djnz r5, epoch")
    e.emit("halt")

    regions = {"x": x, "xt": xt, "y": y, "identity": ident,
               **{f"params{i}": p for i, p in enumerate(params)},
               **{f"h{i}": h for i, h in enumerate(hidden)},
               **{f"ht{i}": h for i, h in enumerate(hidden_t)},
               **{f"dz{i}": d for i, d in enumerate(dz)}}
    if log is not None:
        regions["log"] = log
    tp = TrainingPlan(e.program(), layers, batch, batches, n, lr, loss_reg, lr_reg, slots, regions,
                      _effective=effective)
    tp.text = e.text
    tp.scale = scale
    return tp
