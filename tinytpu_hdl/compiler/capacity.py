"""What fits a configuration: memory sizes, and how a network would run on it."""

from dataclasses import dataclass

from .mlp import MAX_STRIDE, LayerSpec, _largest_fitting, compile_forward, training_footprint

__all__ = ["Capacity", "TrainingFit"]


@dataclass(frozen=True)
class TrainingFit:
    """How training a network with a batch size uses the unified buffer (rows)."""

    sizes: tuple
    batch: int
    fixed: int                 # parameters, one batch's working state
    per_batch: int             # one batch of samples (inputs, transposed inputs, targets)
    log_per_batch: int         # one batch of logged outputs (for the loss)
    ub_depth: int
    largest: tuple             # the widest network of this shape that fits (None: none)
    reason: str = ""           # why it cannot train here ("" if it can)

    @property
    def fits(self):
        return not self.reason

    @property
    def batches_per_run(self):
        """Batches of samples on chip per run (at least 1 when it fits)."""
        if not self.fits:
            return 0
        return (self.ub_depth - self.fixed) // (self.per_batch + self.log_per_batch)

    def __str__(self):
        name = "-".join(map(str, self.sizes))
        if not self.fits:
            return f"{name} at batch {self.batch}: does not train here ({self.reason})"
        return (f"{name} at batch {self.batch}: {self.fixed:,} rows of parameters and working "
                f"state + {self.per_batch + self.log_per_batch:,} rows per batch of samples; "
                f"{self.batches_per_run} batches per run")


@dataclass(frozen=True)
class Capacity:
    """The sizes of one configuration's memories and what they hold (see
    :meth:`tinytpu_hdl.Accelerator.capacity`)."""

    cfg: object

    @property
    def max_batch(self):
        """The largest training batch: the accumulator rows, and the stride of the
        transposed activations (255 chunks of ``n`` samples)."""
        return min(self.cfg.acc_depth, MAX_STRIDE * self.cfg.n)

    def training(self, sizes, batch=32, *, record_loss=True):
        """:class:`TrainingFit` of an MLP with layer sizes ``sizes`` (inputs first)."""
        sizes = tuple(int(s) for s in sizes)
        layers = [LayerSpec(a, b, "leaky_relu", 0.0) for a, b in zip(sizes, sizes[1:])]
        fp = training_footprint(self.cfg, layers, batch)
        reason = ""
        if batch > self.max_batch:
            reason = f"batch {batch} > {self.max_batch}"
        elif fp.minimum(record_loss) > self.cfg.ub_depth:
            reason = (f"needs {fp.minimum(record_loss):,} unified-buffer rows, has "
                      f"{self.cfg.ub_depth:,}")
        largest = _largest_fitting(self.cfg, layers, batch, record_loss)
        return TrainingFit(sizes, batch, fp.fixed, fp.record, fp.log if record_loss else 0,
                           self.cfg.ub_depth, tuple(largest) if largest else None, reason)

    def inference(self, sizes, samples=1):
        """``"resident"`` (the whole network in one program, samples streamed) or
        ``"layer by layer"`` (parameters streamed too), and the batch of the program."""
        sizes = tuple(int(s) for s in sizes)
        layers = [LayerSpec(a, b, "leaky_relu", 0.0) for a, b in zip(sizes, sizes[1:])]
        plan = compile_forward(self.cfg, layers, samples)
        return plan.info["form"], plan.info.get("batch")

    def __str__(self):
        cfg = self.cfg
        ub_bits = cfg.ub_depth * cfg.n * cfg.data.width
        acc_bits = cfg.acc_depth * cfg.n * cfg.acc.width
        return (f"N={cfg.n}: unified buffer {cfg.ub_depth:,} rows ({ub_bits // 8192:,} KiB), "
                f"accumulators {cfg.acc_depth:,} rows ({acc_bits // 8192:,} KiB), instruction "
                f"memory {cfg.imem_depth} words; any matrix product and any MLP inference "
                f"run (blocked and streamed through the host); training keeps the parameters "
                f"and one batch's state on chip, batch <= {self.max_batch}")

