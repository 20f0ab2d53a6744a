"""Lowering of MLP inference and training to plans of any size.

**Inference.** When the parameters and one batch of activations fit the unified buffer,
one program holds the whole network (*resident* form): it loops over the batches of a
chunk of samples, which the host writes before each run and whose outputs it reads after;
the parameters are written once. Otherwise each layer is a matrix product with a bias and
activation epilogue (:func:`~.gemm.gemm_plan`), blocked over the memories, the activations
travelling through the host between layers (*layer-by-layer* form).

**Training** (plain SGD on the MSE loss, mean over all elements) keeps the parameters and
one batch's working state on chip; the samples are streamed: per run, a chunk of batches
(each batch a *record*: its inputs ``x`` blocked, its inputs transposed ``xt`` and its
targets ``y``), or the whole data set for several epochs per run when it fits. Per batch:

Forward through layer ``l`` (``Z = H W^T + b``): per output tile, the ``W^T`` tiles of the
tile's column are loaded as stored and the matching input blocks streamed, accumulating
over the input tiles; the vector unit adds the bias and applies the activation, and for a
hidden layer makes a second pass over the same accumulators that writes the activations
transposed (``vpu ..., transpose``), in the layout the weight gradients stream. Backward:
the last layer's vector pass computes ``dZ = s (H - Y) * act'`` from its accumulators;
``dH = dZ W`` streams ``dZ`` against the same ``W^T`` tiles loaded transposed, and the
vector unit multiplies by the activation derivative of the stored ``H``, in place; weight and bias
gradients ``[dW^T; db] = [H^T; 1] dZ`` stream the transposed activations (and a row of
ones) against ``dZ`` chunks, accumulating over the batch, in chunks of at most the
accumulator memory's rows, each followed by one ``gd`` that updates ``W^T`` and ``b``.

Every dimension is a loop (:class:`~.emit.Emitter`), so a program's length depends on the
number of layers only.

Index registers: ``r15`` epochs of the run and ``r14`` batches of the run (set by the host),
``r13`` batch counter, ``r12`` offset of the current batch's record (inputs), ``r11`` offset
of its outputs (inference) or of its logged outputs (training).
"""

import warnings
from dataclasses import dataclass

import numpy as np

from ..gateware.control import CSR
from ..host_protocol import Space
from ..isa import ConfigReg
from .emit import Addr, Emitter
from .gemm import Epilogue, gemm_plan, run_overhead
from .layout import ceil_div, pad
from .memory import CompileError, MemoryPlan
from .plan import (
    Blocked, Concat, Literal, LoadPrograms, Mark, Params, Plan, ProgramImage, Read, Run,
    TransposedChunks, Write, streamed,
)

__all__ = ["LayerSpec", "compile_forward", "compile_training", "split_loss_scale",
           "training_footprint", "MAX_STRIDE"]

MAX_STRIDE = 255
REG_EPOCHS, REG_BATCHES, REG_COUNT, REG_REC, REG_OUT, REG_BUFFER = 15, 14, 13, 12, 11, 10
RESERVED = (REG_EPOCHS, REG_BATCHES, REG_COUNT, REG_REC, REG_OUT, REG_BUFFER)


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


def _check_layers(layers):
    if not layers:
        raise CompileError("a network needs at least one layer")
    for i, layer in enumerate(layers):
        if layer.activation not in ("leaky_relu", "none"):
            raise CompileError(f"layer {i}: unknown activation {layer.activation!r}")
        if i and layers[i - 1].out_features != layer.in_features:
            raise CompileError(f"layer {i} takes {layer.in_features} inputs but layer {i - 1} "
                               f"gives {layers[i - 1].out_features}")


def _param_rows(layer, n):
    return ceil_div(layer.out_features, n) * (pad(layer.in_features, n) + 1)


def _blocks(features, n):
    return ceil_div(features, n)


def _assemble(cfg, build, what):
    """Emit with the most unrolling whose program fits the instruction memory, with the
    layers' output tiles software-pipelined (``overlap_units``) if that fits, else not."""
    for pipeline in (True, False) if cfg.overlap_units else (False,):
        for unroll in (4, 2, 1):
            e = build(unroll, pipeline)
            program = e.program()
            if len(program) <= cfg.imem_depth:
                return e, program
    raise CompileError(f"the {what} program has {len(program)} instructions even with every "
                       f"dimension looped; the instruction memory holds {cfg.imem_depth} "
                       f"(use a TPUConfig with a larger imem_depth, or fewer layers)")


@dataclass(frozen=True)
class _Carry:
    """Vector passes of a phase's last tile left for the next phase to emit among its
    matmuls (``emits``, functions that emit one pass each, as ``between`` of
    :meth:`.Emitter.reduce`: ``None`` leaves a place empty), and the accumulator rows
    they read (``region``)."""

    emits: tuple
    region: Addr

    def emit(self):
        for emit in self.emits:
            if emit is not None:
                emit()

    def later(self):
        """The same passes one place later among the matmuls (two tiles' streaming after
        the pass before them instead of one)."""
        return _Carry((None,) + self.emits, self.region)


def _tiles(e, count, streams, tile, passes, acc, batch, *, carry=None, keep=0):
    """``count`` tiles of a layer, each its matmuls into ``batch`` accumulator rows and
    then vector passes that read them: ``tile(addrs, acc, between)`` emits a tile's
    matmuls into the rows at ``acc`` with the functions ``between`` among them (see
    :meth:`Emitter.reduce`), ``passes(addrs, acc)`` lists the functions that emit its
    passes; ``addrs`` are the addresses of ``streams`` (``(origin, step)``) for the tile.

    With ``cfg.overlap_units`` and ``e.pipeline`` (and room for two tiles' rows in the
    accumulators) the tiles are software-pipelined: tile ``t`` accumulates into one of two
    regions while the passes of tile ``t - 1``, emitted among its matmuls, read the other,
    so that the array streams while the vector unit works.

    ``carry`` (a :class:`_Carry` of the phase before, or None) is emitted among the first
    tile's matmuls, which then write the region it does not read, or first where that
    cannot be. When pipelined, the last ``keep`` passes of the last tile are returned as a
    :class:`_Carry` instead of emitted (the caller guarantees that nothing before the
    next phase's first matmul reads the rows they write); else None."""
    cfg = e.cfg
    pipelined = (cfg.overlap_units and e.pipeline and count > 1 and
                 acc.base + 2 * batch <= cfg.acc_depth)
    if not pipelined:
        first = ()
        if carry is not None:
            if count == 1 and carry.region != acc:
                first = carry.emits
            else:
                carry.emit()

        def body(a):
            tile(a, acc, first)
            for emit in passes(a, acc):
                emit()
        e.loop(count, streams, body)
        return None

    regions = (acc, acc + batch)
    if carry is not None and carry.region == acc:
        regions = regions[::-1]

    def shifted(a, tiles_on):
        return [x + tiles_on * step for x, (_, step) in zip(a, streams)]

    def step(prev, region):
        """Tile ``prev + 1`` into ``region``, with the passes of tile ``prev`` (in the
        other region) among its matmuls."""
        tile(shifted(prev, 1), regions[region], passes(prev, regions[1 - region]))

    first = [origin for origin, _ in streams]
    tile(first, regions[0], carry.emits if carry is not None else ())
    # Tiles 1 .. count - 1, two per loop iteration (the regions alternate).
    loops, odd = divmod(count - 1, 2)
    e.loop(loops, [(origin, 2 * s) for origin, s in streams],
           lambda a: (step(a, 1), step(shifted(a, 1), 0)))
    last = shifted(first, 2 * loops)
    if odd:
        step(last, 1)
        last = shifted(last, 1)
    emits = passes(last, regions[odd])
    for emit in emits[:len(emits) - keep]:
        emit()
    return _Carry(tuple(emits[len(emits) - keep:]), regions[odd]) if keep else None


def _forward_layer(e, layer, params, src, batch, acc, *, out, carry=None, keep=0):
    """The forward pass of one layer, output tile by output tile (:func:`_tiles`): the
    tile's matmuls, then ``out.passes(addrs, bias, acc)``, the vector passes that read its
    accumulator rows at ``acc`` (a list of functions that emit one pass each).
    ``addrs[0]`` is the tile's parameters (its bias row at ``bias = addrs[0] +
    in_features``), the other addresses are the extra streams given in ``out.streams``
    (each stepping ``batch`` rows per tile, or ``step`` rows when given as ``(addr,
    step)``). ``carry`` and ``keep`` as in :func:`_tiles`; a carry is emitted before a
    change of the leak it was emitted for. Returns the last tile's kept passes."""
    n = e.n
    in_pad = pad(layer.in_features, n)
    if layer.leaky:
        if carry is not None and e.config_changes(ConfigReg.LEAK, layer.leak):
            carry.emit()
            carry = None
        e.config(ConfigReg.LEAK, layer.leak)
    streams = [(params, in_pad + 1)] + [s if isinstance(s, tuple) else (s, batch)
                                        for s in out.streams]
    return _tiles(e, _blocks(layer.out_features, n), streams,
                  lambda a, region, between: e.reduce(in_pad // n, a[0], n, src, batch,
                                                      region, batch, between=between),
                  lambda a, region: out.passes(a, a[0] + in_pad, region), acc, batch,
                  carry=carry, keep=keep)


class _Out:
    def __init__(self, streams, passes):
        self.streams = streams
        self.passes = passes


# --- inference --------------------------------------------------------------------------

@dataclass(frozen=True)
class _ForwardLayout:
    batch: int
    chunk: int           # batches per run
    x_stride: int
    out_stride: int


def _forward_memory(cfg, layers, batch, chunk, buffers=1):
    n = cfg.n
    mem = MemoryPlan.of(cfg)
    mem.alloc_acc("work", batch)
    params = [mem.alloc(f"params{i}", _param_rows(l, n), loaded=True)
              for i, l in enumerate(layers)]
    hidden = [mem.alloc(f"h{i}", batch * _blocks(l.out_features, n))
              for i, l in enumerate(layers[:-1])]
    x_stride = batch * _blocks(layers[0].in_features, n)
    out_stride = batch * _blocks(layers[-1].out_features, n)
    x = mem.alloc("x", buffers * chunk * x_stride)
    out = mem.alloc("out", chunk * out_stride)
    return mem, params, hidden, x, out, _ForwardLayout(batch, chunk, x_stride, out_stride)


def _forward_resident(cfg, layers, samples, batch=None):
    n = cfg.n
    # The largest batch (up to the accumulators) for which one batch fits; then as many
    # batches per run as fit.
    batch = min(samples, cfg.acc_depth, batch or 256)
    while True:
        try:
            mem, *_ = _forward_memory(cfg, layers, batch, 1)
            break
        except CompileError:
            if batch <= 1:
                raise
            batch = max(1, batch // 2)
    x_rows = batch * _blocks(layers[0].in_features, n)
    out_rows = batch * _blocks(layers[-1].out_features, n)
    batches = ceil_div(samples, batch)
    room = mem.ub_free + x_rows + out_rows           # for inputs and outputs
    # All batches in one run if they fit; else chunks, in two input buffers if two fit (the
    # host writes the next chunk while the device works on the last), else in one.
    buffers, chunk = 1, max(1, min(batches, room // (x_rows + out_rows)))
    if chunk < batches and room // (2 * x_rows + out_rows) >= 1:
        buffers, chunk = 2, room // (2 * x_rows + out_rows)
    mem, params, hidden, x, out, lay = _forward_memory(cfg, layers, batch, chunk, buffers)

    def build(unroll, pipeline):
        e = Emitter(cfg, unroll=unroll, reserved=RESERVED, pipeline=pipeline)
        acc = Addr("acc", 0)
        e.emit(f"addi r{REG_COUNT}, r{REG_BATCHES}, 0", "batches of this run (host)")
        e.emit(f"addi r{REG_REC}, r{REG_BUFFER}, 0", "the inputs' buffer (host)")
        e.emit(f"setr r{REG_OUT}, 0")
        e.label("batch")
        e.forget_config()
        for i, layer in enumerate(layers):
            src = Addr("ub", x.base, REG_REC) if i == 0 else Addr("ub", hidden[i - 1].base)
            path = ("bias", "act") if layer.leaky else ("bias",)
            dst = Addr("ub", out.base, REG_OUT) if i == len(layers) - 1 else \
                Addr("ub", hidden[i].base)
            _forward_layer(e, layer, Addr("ub", params[i].base), src, batch, acc,
                           out=_Out([dst], lambda a, bias, acc, path=path: [
                               lambda: e.vpu(acc, a[1], batch, bias=bias, path=path)]))
        e.emit(f"addi r{REG_REC}, r{REG_REC}, {lay.x_stride}")
        e.emit(f"addi r{REG_OUT}, r{REG_OUT}, {lay.out_stride}")
        e.emit(f"djnz r{REG_COUNT}, batch")
        e.emit("halt")
        return e

    _, program = _assemble(cfg, build, "inference")
    image = ProgramImage("forward", program, 0)
    steps = [Write(Space.UB, params[i].base, params[i].rows, Params(i))
             for i in range(len(layers))]
    in_f, out_f = layers[0].in_features, layers[-1].out_features
    chunks = [(b0, min(batches, b0 + chunk)) for b0 in range(0, batches, chunk)]

    def write(c, offset):
        rows = [Blocked("x", j * batch, (j + 1) * batch, 0, in_f) for j in range(*c)]
        return Write(Space.UB, x.base + offset, (c[1] - c[0]) * lay.x_stride,
                     Concat(tuple(rows)))

    def run(c, offset, wait):
        return Run("forward", ((REG_BATCHES, c[1] - c[0]), (REG_BUFFER, offset)),
                   ("batches", *c), wait)

    def after(c):
        return [Read(Space.UB, out.base, (c[1] - c[0]) * lay.out_stride,
                     Concat(tuple(Blocked("out", j * batch, (j + 1) * batch, 0, out_f)
                                  for j in range(*c))))]
    steps += streamed(chunks, second_buffer=chunk * lay.x_stride if buffers == 2 else 0,
                      write=write, run=run, after=after)
    info = {"form": "resident", "batch": batch, "batches per run": chunk,
            "input buffers": buffers, "padded samples": batches * batch}
    return Plan("inference", cfg, (image,), steps, mem.regions, info)


def _forward_layerwise(cfg, layers, samples):
    """Each layer a blocked matrix product with a bias/activation epilogue; tensors ``h0``
    (the inputs) .. ``h{L}`` (the outputs), ``WT{l}`` (in, out) and ``bias{l}`` (1, out)."""
    steps, images, regions = [], [], {}
    info = {"form": "layer by layer"}
    for i, layer in enumerate(layers):
        path = ("bias", "act") if layer.leaky else ("bias",)
        sub = gemm_plan(cfg, samples, layer.in_features, layer.out_features, a=f"h{i}",
                        b=f"WT{i}", c=f"h{i + 1}",
                        epilogue=Epilogue(f"bias{i}", path, layer.leak), kind=f"layer{i}")
        if i == 0:
            images = list(sub.programs)
        else:
            steps.append(LoadPrograms(sub.programs))
        steps.extend(sub.steps)
        regions.update({f"layer{i}.{k}": v for k, v in sub.regions.items()})
        info[f"layer {i}"] = sub.info["blocking"]
    plan = Plan("inference", cfg, tuple(images), steps, regions, info)
    return plan


def compile_forward(cfg, layers, samples, *, batch=None):
    """The plan of the inference of ``samples`` samples, in batches of at most ``batch``
    (default: as many as fit, up to 256). Resident form: tensors ``x`` in and ``out``
    out, both padded to ``plan.info["padded samples"]`` rows, and the parameters
    (:class:`~.plan.Params`); layer-by-layer form: ``h0`` (the inputs) .. ``h{L}`` (the
    outputs), ``WT{l}`` (in, out) and ``bias{l}`` (1, out)."""
    layers = tuple(layers)
    _check_layers(layers)
    if not isinstance(samples, int) or samples < 1:
        raise CompileError(f"the number of samples must be a positive integer, not {samples!r}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise CompileError(f"batch size must be a positive integer, not {batch!r}")
    try:
        return _forward_resident(cfg, layers, samples, batch)
    except CompileError:
        return _forward_layerwise(cfg, layers, samples)


# --- training ---------------------------------------------------------------------------

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
    largest = sc.max_value * sc.max_value / scale
    if lr_raw == 0:
        raise CompileError(f"lr={lr:g} is too small for the {sc} learning-rate register "
                           f"(lr * 2/(batch*outputs) = {target:.3g}); the smallest it "
                           f"applies here is {sc.lsb * sc.lsb * 64 / scale:.3g}")
    effective = sc.decode(lr_raw) * sc.decode(loss_raw) / scale
    error = abs(effective - lr) / lr
    if error > 0.01 and lr > largest * 0.99:
        raise CompileError(f"lr={lr:g} is larger than the learning-rate and loss-scale "
                           f"registers ({sc} each) can apply with this batch and output "
                           f"count: at most {largest:.6g}")
    if error > 0.005:
        warnings.warn(f"lr={lr:g} is applied as {effective:.6g}: the nearest the "
                      f"learning-rate and loss-scale registers ({sc}) give", stacklevel=4)
    return float(sc.decode(lr_raw)), float(sc.decode(loss_raw)), float(effective)


@dataclass(frozen=True)
class TrainingFootprint:
    """Unified-buffer rows of a training plan: ``fixed`` (parameters, working
    state of one batch), ``record`` per batch of samples, ``log`` per batch and epoch of
    logged outputs."""

    fixed: int
    record: int
    log: int

    def minimum(self, record_loss=True):
        return self.fixed + self.record + (self.log if record_loss else 0)

    def records_below(self, rows):
        """How many records, laid out after the fixed regions, have their targets (each
        record's first ``log`` rows) below buffer row ``rows``."""
        return (rows - self.fixed - self.log) // self.record + 1


def training_footprint(cfg, layers, batch):
    n = cfg.n
    nb = ceil_div(batch, n)
    fixed = sum(_param_rows(l, n) for l in layers)
    for l in layers[:-1]:
        fixed += batch * _blocks(l.out_features, n) + (pad(l.out_features, n) + 1) * nb
    y_stride = batch * _blocks(layers[-1].out_features, n)
    fixed += y_stride                                       # dZ of the last layer
    record = (batch * _blocks(layers[0].in_features, n)
              + (pad(layers[0].in_features, n) + 1) * nb + y_stride)
    return TrainingFootprint(fixed, record, y_stride)


def _largest_fitting(cfg, layers, batch, record_loss):
    """The network with the same input and output sizes and the same number of layers whose
    hidden layers are the widest (all scaled alike) that train on ``cfg``, or None."""
    if len(layers) < 2:
        return None
    widths = [l.out_features for l in layers[:-1]]
    best = None
    lo, hi = 1, max(widths)
    while lo <= hi:
        mid = (lo + hi) // 2
        scaled = [max(1, w * mid // max(widths)) for w in widths]
        sizes = [layers[0].in_features] + scaled + [layers[-1].out_features]
        trial = [LayerSpec(a, b, l.activation, l.leak) for a, b, l in zip(sizes, sizes[1:],
                                                                         layers)]
        if training_footprint(cfg, trial, batch).minimum(record_loss) <= cfg.ub_depth:
            best, lo = sizes, mid + 1
        else:
            hi = mid - 1
    return best


def _does_not_fit(cfg, layers, batch, fp, record_loss):
    n = cfg.n
    sizes = [layers[0].in_features] + [l.out_features for l in layers]
    name = "-".join(map(str, sizes))
    params = sum(_param_rows(l, n) for l in layers)
    need = fp.minimum(record_loss)
    fits = [b for b in range(1, min(batch, cfg.acc_depth, MAX_STRIDE * n) + 1)
            if training_footprint(cfg, layers, b).minimum(record_loss) <= cfg.ub_depth]
    smaller = f", or batch <= {fits[-1]}" if fits else ""
    best = _largest_fitting(cfg, layers, batch, record_loss)
    shape = f"{len(layers)}-layer network with {sizes[0]} inputs and {sizes[-1]} outputs"
    hint = (f"the largest {shape} that trains here at batch {batch} is "
            f"{'-'.join(map(str, best))}" if best else
            f"no {shape} trains here at batch {batch}")
    return (f"training the {name} network with batch {batch} needs {need:,} unified-buffer "
            f"rows on chip (parameters {params:,}, working state {fp.fixed - params:,}, one "
            f"batch of samples {fp.record:,}"
            f"{f', logged outputs {fp.log:,}' if record_loss else ''}); this TPUConfig(n={n}) "
            f"has ub_depth={cfg.ub_depth:,}. Use ub_depth >= {need:,}{smaller}; {hint}")


def _training_memory(cfg, layers, batch, chunk, log_batches, buffers=1):
    n = cfg.n
    nb = ceil_div(batch, n)
    mem = MemoryPlan.of(cfg)
    mem.alloc_acc("work", cfg.acc_depth)
    regions = {}
    # The regions read through the loader's port first (parameters: loads, bias rows, GD;
    # h and dZ: loads and aux rows; the records' targets: aux rows), so that they lie
    # below cfg.ub_loadable_rows; the transposed activations stream into the array.
    regions["params"] = [mem.alloc(f"params{i}", _param_rows(l, n), loaded=True)
                         for i, l in enumerate(layers)]
    regions["h"] = [mem.alloc(f"h{i}", batch * _blocks(l.out_features, n), loaded=True)
                    for i, l in enumerate(layers[:-1])]
    y_stride = batch * _blocks(layers[-1].out_features, n)
    regions["dz"] = mem.alloc("dz", y_stride, loaded=True)
    regions["ht"] = [mem.alloc(f"ht{i}", (pad(l.out_features, n) + 1) * nb)
                     for i, l in enumerate(layers[:-1])]
    fp = training_footprint(cfg, layers, batch)
    # Records ``[y, x, x^T]`` right after the fixed regions: every record's targets below
    # the loadable rows (compile_training chose ``chunk`` so).
    regions["records"] = mem.alloc("records", buffers * chunk * fp.record)
    assert regions["records"].base == fp.fixed and \
        buffers * chunk <= fp.records_below(cfg.ub_loadable_rows)
    regions["log"] = mem.alloc("log", log_batches * y_stride) if log_batches else None
    return mem, regions


def _training_program(cfg, layers, batch, regions, *, lr_reg, loss_reg, stochastic, log,
                      unroll, pipeline):
    n = cfg.n
    nb = ceil_div(batch, n)
    L = len(layers)
    e = Emitter(cfg, unroll=unroll, reserved=RESERVED, pipeline=pipeline)
    acc = Addr("acc", 0)
    params = [Addr("ub", p.base) for p in regions["params"]]
    hidden = [Addr("ub", h.base) for h in regions["h"]]
    hidden_t = [Addr("ub", h.base) for h in regions["ht"]]
    dz_last = Addr("ub", regions["dz"].base)
    rec = regions["records"].base
    in0 = layers[0].in_features
    y_rec = Addr("ub", rec, REG_REC)
    x_rec = y_rec + batch * _blocks(layers[-1].out_features, n)
    xt_rec = x_rec + batch * _blocks(in0, n)
    record_rows = training_footprint(cfg, layers, batch).record
    y_stride = batch * _blocks(layers[-1].out_features, n)
    log_addr = Addr("ub", regions["log"].base, REG_OUT) if log else None

    e.comment(f"SGD on MSE: lr register {lr_reg:g} x loss_scale {loss_reg:g}")
    e.config(ConfigReg.LR, lr_reg)
    e.config(ConfigReg.LOSS_SCALE, loss_reg)
    e.emit(f"setr r{REG_OUT}, 0")
    e.label("epoch")
    e.emit(f"addi r{REG_COUNT}, r{REG_BATCHES}, 0", "batches of this run (host)")
    e.emit(f"addi r{REG_REC}, r{REG_BUFFER}, 0", "the records' buffer (host)")
    e.label("batch")
    e.forget_config(keep=(ConfigReg.LR, ConfigReg.LOSS_SCALE))     # only LEAK changes

    # Forward. A hidden layer's last transposed pass (read only by the backward pass) is
    # emitted among the next layer's first matmuls.
    carry = None
    for i, layer in enumerate(layers):
        src = x_rec if i == 0 else hidden[i - 1]
        act = ("act",) if layer.leaky else ()
        if i < L - 1:
            # h, and its transposed-chunk layout for the weight gradients (a second pass
            # over the same accumulators, written transposed by tiles of n samples).
            out = _Out([hidden[i], (hidden_t[i], n * nb)], lambda a, bias, acc, act=act: [
                lambda: e.vpu(acc, a[1], batch, bias=bias, path=("bias",) + act),
                lambda: e.vpu(acc, a[2], batch, bias=bias, path=("bias",) + act, stride=nb,
                              transpose=True)])
        else:
            deriv = ("deriv",) if layer.leaky else ()

            def last(a, bias, acc, act=act, deriv=deriv):
                log_pass = [lambda: e.vpu(acc, a[3], batch, bias=bias, path=("bias",) + act)]
                return (log_pass if log else []) + [
                    lambda: e.vpu(acc, a[1], batch, aux=a[2], bias=bias,
                                  path=("bias",) + act + ("loss",) + deriv)]
            out = _Out([dz_last, y_rec] + ([log_addr] if log else []), last)
        carry = _forward_layer(e, layer, params[i], src, batch, acc, out=out,
                               carry=carry and carry.later(), keep=1 if i < L - 1 else 0)

    # Backward.
    for i in reversed(range(L)):
        layer = layers[i]
        in_pad = pad(layer.in_features, n)
        ot_count = _blocks(layer.out_features, n)
        dz = dz_last if i == L - 1 else hidden[i]        # dZ_i was written over h_i
        if i > 0:
            prev = layers[i - 1]
            e.comment(f"dZ{i - 1} = (dZ{i} W{i}) * act'(h{i - 1}), over h{i - 1}")
            if prev.leaky:
                e.config(ConfigReg.LEAK, prev.leak)

            def input_tile(a, region, between, dz=dz, in_pad=in_pad, ot_count=ot_count):
                e.reduce(ot_count, a[0], in_pad + 1, dz, batch, region, batch, transpose=True,
                         between=between)

            def input_passes(a, region, prev=prev):
                if prev.leaky:
                    return [lambda: e.vpu(region, a[1], batch, aux=a[1], path=("deriv",))]
                return [lambda: e.vpu(region, a[1], batch)]
            # The last tile's pass writes dZ{i-1}, which the weight gradients of this layer
            # do not read: it is emitted among their first matmuls.
            carry = _tiles(e, in_pad // n, [(params[i], n), (hidden[i - 1], batch)],
                           input_tile, input_passes, acc, batch, keep=1)
        e.comment(f"[dW{i}^T; db{i}] = [h^T; 1] dZ{i}, then SGD")
        src_t = xt_rec if i == 0 else hidden_t[i - 1]
        # The weight gradients accumulate from grad_acc on: above the rows the carried pass
        # reads where they fit there in one chunk (the pass then runs among their first
        # matmuls), else from acc on, after the pass.
        grad_acc = acc
        if carry is not None:
            if carry.region.base + batch + in_pad + 1 <= cfg.acc_depth:
                grad_acc = carry.region + batch
            else:
                carry.emit()
                carry = None
        rc_max = cfg.acc_depth - grad_acc.base     # rows of a weight-gradient chunk

        in_f = layer.in_features

        def gradient(param, dz_tile, src, stream, between=()):
            """Stream ``stream`` rows of ``[h^T; 1]`` from ``src`` against the batch's
            ``dZ`` chunks into the accumulators."""
            e.reduce(nb, dz_tile, n, src, 1, grad_acc, stream,
                     last_rows=batch - (nb - 1) * n, stride=nb, between=between)

        def update(param, rows, bias_at=None):
            """SGD on the real rows (the padding rows of the features have no parameters:
            their gradient is zero and they are skipped, so that the random stream of
            stochastic rounding is the same for every array size), then the bias row."""
            if bias_at == rows:
                e.gd(grad_acc, param, rows + 1, stochastic=stochastic)
                return
            if rows:
                e.gd(grad_acc, param, rows, stochastic=stochastic)
            if bias_at is not None:
                e.gd(grad_acc + bias_at, param + bias_at, 1, stochastic=stochastic)

        def output_tile(a, between=(), in_f=in_f, in_pad=in_pad, src_t=src_t):
            # Chunks of the weight rows of at most the accumulator memory's rows; the last
            # chunk also streams the padding rows and the bias row (the row of ones).
            # ``between``: the carried passes, among the first chunk's matmuls.
            full, last = divmod(in_f, rc_max)
            e.loop(full, [(a[0], rc_max), (a[1], 0), (src_t, rc_max * nb)],
                   lambda c: (gradient(c[0], c[1], c[2], rc_max), update(c[0], rc_max)))
            assert not (full and between), "a carry goes only to a one-chunk gradient"
            start = full * rc_max
            tail = in_pad + 1 - start                  # rows the last chunk streams
            if tail <= rc_max:
                gradient(a[0] + start, a[1], src_t + start * nb, tail, between)
                update(a[0] + start, last, bias_at=tail - 1)
                return
            # The last rows and the bias row do not fit one chunk: one chunk each.
            gradient(a[0] + start, a[1], src_t + start * nb, last, between)
            update(a[0] + start, last)
            gradient(a[0] + in_pad, a[1], src_t + in_pad * nb, 1)
            update(a[0] + in_pad, 0, bias_at=0)
        streams = [(params[i], in_pad + 1), (dz, batch)]
        if carry is not None:
            output_tile([origin for origin, _ in streams], carry.emits)
            e.loop(ot_count - 1, [(origin + step, step) for origin, step in streams],
                   output_tile)
            carry = None
        else:
            e.loop(ot_count, streams, output_tile)

    e.emit(f"addi r{REG_REC}, r{REG_REC}, {record_rows}")
    if log:
        e.emit(f"addi r{REG_OUT}, r{REG_OUT}, {y_stride}")
    e.emit(f"djnz r{REG_COUNT}, batch")
    e.emit(f"djnz r{REG_EPOCHS}, epoch")
    e.emit("halt")
    return e


def compile_training(cfg, layers, samples, batch, lr, *, epochs=1, record_loss=True,
                     stochastic=True, epochs_per_run=None, seed=0):
    """The plan of ``epochs`` epochs of SGD over ``samples // batch`` batches (a last partial
    batch is dropped). Tensors: ``x`` (samples, in) and ``y`` (samples, out) in,
    ``W{l}``/``b{l}`` in and out (the parameters), ``outputs`` out (the network's outputs
    during each epoch of a run, ``plan.info["log epochs"]`` epochs, for the loss).
    ``Mark(("epochs", e0, e1))`` steps follow the runs that finish epochs ``e0 .. e1 - 1``.
    ``seed`` seeds the stochastic-rounding generators (the ``SEED`` register)."""
    layers = tuple(layers)
    _check_layers(layers)
    n = cfg.n
    for name, value in (("batch size", batch), ("samples", samples), ("epochs", epochs)):
        if not isinstance(value, int) or value < 1:
            raise CompileError(f"{name} must be a positive integer, not {value!r}")
    batches = samples // batch
    if batches == 0:
        raise CompileError(f"batch size {batch} is larger than the {samples} samples")
    nb = ceil_div(batch, n)
    if nb > MAX_STRIDE:
        raise CompileError(f"batch size {batch} needs a stride of {nb} rows for the transposed "
                           f"activations; the ISA allows {MAX_STRIDE} (batch <= "
                           f"{MAX_STRIDE * n} on N={n})")
    if batch > cfg.acc_depth:
        raise CompileError(f"batch size {batch} needs {batch} accumulator rows; this TPUConfig "
                           f"has acc_depth={cfg.acc_depth} (use batch <= {cfg.acc_depth})")
    out_f = layers[-1].out_features
    lr_reg, loss_reg, effective = split_loss_scale(cfg, lr, 2.0 / (batch * out_f))

    fp = training_footprint(cfg, layers, batch)
    if fp.minimum(record_loss) > cfg.ub_depth:
        raise CompileError(_does_not_fit(cfg, layers, batch, fp, record_loss))
    free = cfg.ub_depth - fp.fixed
    log_per_batch = fp.log if record_loss else 0
    # Records whose targets lie below the rows the vector unit reads aux rows from.
    below = fp.records_below(cfg.ub_loadable_rows)
    if below < 1:
        raise CompileError(f"training keeps the parameters, the activations and a batch's "
                           f"targets in the buffer's first {fp.fixed + fp.log:,} rows, which "
                           f"the weight loader and the vector unit must read; this TPUConfig "
                           f"has ub_copy_depth={cfg.ub_loadable_rows:,}")
    if free >= batches * (fp.record + log_per_batch) and batches <= below:
        chunk = batches                                   # the whole data set on chip
        log_epochs = min(epochs, (free - batches * fp.record) // (batches * fp.log)) \
            if record_loss else epochs
        log_epochs = min(log_epochs, epochs_per_run or log_epochs, 0xFFFF)
    else:
        chunk = min(free // (fp.record + log_per_batch), below)
        log_epochs = 1
    # Streaming: two record buffers if two fit (the host writes the next chunk while the
    # device trains on the last).
    buffers = 1
    if chunk < batches and free // (2 * fp.record + log_per_batch) >= 1 and below >= 2:
        buffers, chunk = 2, min(free // (2 * fp.record + log_per_batch), below // 2)
    mem, regions = _training_memory(cfg, layers, batch, chunk,
                                    chunk * log_epochs if record_loss else 0, buffers)

    def build(unroll, pipeline):
        return _training_program(cfg, layers, batch, regions, lr_reg=lr_reg, loss_reg=loss_reg,
                                 stochastic=stochastic, log=record_loss, unroll=unroll,
                                 pipeline=pipeline)
    _, program = _assemble(cfg, build, "training")
    image = ProgramImage("train", program, 0)

    one = int(cfg.data.encode(1.0))
    in_f = layers[0].in_features
    steps = [Write(Space.CSR, CSR.SEED, 1, Literal("seed", np.array([seed], dtype=np.int64)))]
    steps += [Write(Space.UB, regions["params"][i].base, regions["params"][i].rows, Params(i))
              for i in range(len(layers))]
    for i, layer in enumerate(layers[:-1]):
        rows = (pad(layer.out_features, n) + 1) * nb
        init = np.zeros((rows, n), dtype=np.int64)
        init[rows - nb:] = one                                    # the rows of ones
        steps.append(Write(Space.UB, regions["ht"][i].base, rows, Literal(f"ht{i}", init)))

    def records(b0, b1):
        parts = []
        for j in range(b0, b1):
            s0, s1 = j * batch, (j + 1) * batch
            parts += [Blocked("y", s0, s1, 0, out_f), Blocked("x", s0, s1, 0, in_f),
                      TransposedChunks("x", s0, s1, one)]
        return Concat(tuple(parts))

    y_stride = fp.log
    if chunk == batches:
        steps.append(Write(Space.UB, regions["records"].base, batches * fp.record,
                           records(0, batches)))
        done = 0
        while done < epochs:
            count = min(log_epochs, epochs - done)
            steps.append(Run("train", ((REG_BATCHES, batches), (REG_EPOCHS, count),
                                       (REG_BUFFER, 0)), ("epochs", done, done + count)))
            if record_loss:
                steps.append(Read(Space.UB, regions["log"].base, count * batches * y_stride,
                                  Concat(tuple(Blocked("outputs", k * batch, (k + 1) * batch,
                                                       0, out_f)
                                               for k in range(count * batches)))))
            steps.append(Mark(("epochs", done, done + count)))
            done += count
    else:
        # Chunks of batches, epoch after epoch; the next chunk (of this epoch or the next)
        # is written while the device trains on the last.
        chunks = [(epoch, b0, min(batches, b0 + chunk)) for epoch in range(epochs)
                  for b0 in range(0, batches, chunk)]

        def write(c, offset):
            return Write(Space.UB, regions["records"].base + offset, (c[2] - c[1]) * fp.record,
                         records(c[1], c[2]))

        def run(c, offset, wait):
            return Run("train", ((REG_BATCHES, c[2] - c[1]), (REG_EPOCHS, 1),
                                 (REG_BUFFER, offset)), ("epoch", c[0], "batches", c[1], c[2]),
                       wait)

        def after(c):
            out = []
            if record_loss:
                out.append(Read(Space.UB, regions["log"].base, (c[2] - c[1]) * y_stride,
                                Concat(tuple(Blocked("outputs", k * batch, (k + 1) * batch,
                                                     0, out_f) for k in range(c[1], c[2])))))
            if c[2] == batches:
                out.append(Mark(("epochs", c[0], c[0] + 1)))
            return out
        steps += streamed(chunks, second_buffer=chunk * fp.record if buffers == 2 else 0,
                          write=write, run=run, after=after)
    for i, layer in enumerate(layers):
        steps.append(Read(Space.UB, regions["params"][i].base, regions["params"][i].rows,
                          Params(i)))
    info = {"batch": batch, "batches": batches, "batches per run": chunk,
            "record buffers": buffers,
            "log epochs": log_epochs if record_loss else 0,
            "lr register": lr_reg, "loss_scale register": loss_reg, "effective lr": effective,
            "per-run overhead estimate": run_overhead(cfg)}
    return Plan("training", cfg, (image,), steps, mem.regions, info)
