"""The user-facing API: compile, load, run and read back, on any backend."""

import warnings
from dataclasses import dataclass

import numpy as np

from ..asm import Program, assemble
from ..compiler import compile_forward, compile_matmul, compile_training
from ..compiler.layout import (
    ceil_div, from_blocked, from_params, to_blocked, to_params, to_transposed_chunks,
)
from ..compiler.memory import CompileError
from ..config import TPUConfig
from ..gateware.control import CSR
from ..host_protocol import Space
from ..model import MLP
from ..numeric import FormatError
from .driver import HostDriver

__all__ = ["Accelerator", "Stats", "BACKENDS"]

#: Backend names and the transports that implement them.
BACKENDS = ("reference", "pysim", "verilator", "uart", "serial-sim")


@dataclass(frozen=True)
class Stats:
    """Counters of the last operation, summed over its program runs."""

    n: int
    runs: int = 0
    cycles: int = 0
    array_busy_cycles: int = 0
    macs: int = 0
    instructions: int = 0
    overflow: bool = False

    @property
    def utilization(self):
        """PE multiply-accumulates over the array's peak, ``macs / (cycles * n^2)``."""
        return self.macs / (self.cycles * self.n * self.n) if self.cycles else 0.0

    def __add__(self, run):
        return Stats(self.n, self.runs + 1, self.cycles + run.cycles,
                     self.array_busy_cycles + run.array_busy_cycles, self.macs + run.macs,
                     self.instructions + run.instructions,
                     self.overflow or run.overflow_array or run.overflow_vector or run.overflow_gd)


def _transport(cfg, backend, options):
    if backend == "reference":
        from ..reference import ReferenceTransport
        return ReferenceTransport(cfg, **options)
    if backend == "pysim":
        from .pysim import PysimTransport
        return PysimTransport(cfg, **options)
    if backend == "verilator":
        from .verilator import VerilatorTransport
        return VerilatorTransport(cfg, **options)
    if backend == "uart":
        from .uart import UARTTransport
        return UARTTransport(cfg, **options)
    if backend == "serial-sim":
        from .serial_sim import SimulatedSerialTransport
        return SimulatedSerialTransport(cfg, **options)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


class Accelerator:
    """A TPU on a backend: ``"reference"`` (the numpy model of the ISA), ``"pysim"`` (the
    gateware in Amaranth's simulator) or ``"verilator"`` (its Verilog compiled by Verilator).
    All backends run the same programs through the same host protocol and give bit-identical
    results and cycle counts."""

    def __init__(self, cfg: TPUConfig = None, backend="reference", **options):
        self.cfg = cfg or TPUConfig()
        if not isinstance(self.cfg, TPUConfig):
            raise TypeError(f"cfg must be a TPUConfig, not {self.cfg!r}")
        self.backend = backend
        self.transport = _transport(self.cfg, backend, options)
        self.driver = HostDriver(self.transport)
        self.stats = Stats(self.cfg.n)
        self.last_program = None

    # --- data conversion ---------------------------------------------------------------------

    def _encode(self, name, values, *, clip=False):
        values = np.asarray(values, dtype=np.float64)
        fmt = self.cfg.data
        try:
            raw, clipped = fmt.encode(values, return_clipped=True)
        except FormatError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if clipped:
            message = (f"{name}: {clipped} value(s) outside the {fmt} range "
                       f"[{fmt.min_value:g}, {fmt.max_value:g}]")
            if not clip:
                raise ValueError(message + " would be clipped; scale the data or pass clip=True")
            warnings.warn(message + " were clipped", stacklevel=3)
        return raw

    # --- raw programs ------------------------------------------------------------------------

    def run(self, program, *, watchdog=0):
        """Run an assembled :class:`~tinytpu_hdl.asm.Program` or assembly text from address 0.
        Raises :class:`~tinytpu_hdl.runtime.driver.TPUError` if the hardware reports an error."""
        if isinstance(program, str):
            program = assemble(program, scalar=self.cfg.scalar)
        if not isinstance(program, Program):
            raise TypeError(f"run needs a Program or assembly text, not {type(program).__name__}")
        if len(program) > self.cfg.imem_depth:
            raise CompileError(f"the program has {len(program)} instructions; the instruction "
                               f"memory holds {self.cfg.imem_depth}")
        self.last_program = program
        run = self.driver.run(program, watchdog=watchdog)
        self.stats = Stats(self.cfg.n) + run
        return self.stats

    def _run_program(self, program, stats, *, regs=None):
        if len(program) > self.cfg.imem_depth:
            raise CompileError(f"the program has {len(program)} instructions; the instruction "
                               f"memory holds {self.cfg.imem_depth} (use a TPUConfig with a "
                               f"larger imem_depth)")
        self.last_program = program
        self.driver.load_program(program)
        for reg, value in (regs or {}).items():
            self.driver.write_csr(CSR.REG_BASE + reg, value)
        return stats + self.driver.run()

    # --- matrix product ----------------------------------------------------------------------

    def matmul(self, a, b, *, clip=False):
        """``a @ b`` for float arrays of any sizes, on the device. Inputs are rounded to the
        data format; the result is the accumulators' value (accumulator format) as floats."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul needs (M, K) and (K, N) arrays, not {a.shape} and {b.shape}")
        a_raw = self._encode("a", a, clip=clip)
        b_raw = self._encode("b", b, clip=clip)
        return self.cfg.acc.decode(self.matmul_raw(a_raw, b_raw))

    def matmul_raw(self, a_raw, b_raw):
        """``a @ b`` on raw data-format integers; returns raw accumulator integers."""
        cfg, n = self.cfg, self.cfg.n
        m, k = a_raw.shape
        n_out = b_raw.shape[1]
        plan = compile_matmul(cfg, m, k, n_out)
        self.driver.write(Space.UB, plan.a_base, to_blocked(a_raw, n))
        b_padded = np.zeros((plan.b_rows, n_out), dtype=np.int64)
        b_padded[:k] = b_raw
        self.driver.write(Space.UB, plan.b_base, to_blocked(b_padded, n))
        out = np.zeros((m, ceil_div(n_out, n) * n), dtype=np.int64)
        stats = Stats(n)
        for p in plan.passes:
            stats = self._run_program(p.program, stats)
            rows = p.m1 - p.m0
            data = np.array(self.driver.read(Space.ACC, 0, rows * (p.t1 - p.t0)))
            for t in range(p.t0, p.t1):
                out[p.m0:p.m1, t * n:(t + 1) * n] = data[(t - p.t0) * rows:(t - p.t0 + 1) * rows]
        self.stats = stats
        return out[:, :n_out]

    # --- MLP ---------------------------------------------------------------------------------

    def _check_model(self, model, x):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be an MLP, not {type(model).__name__}")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != model.sizes[0]:
            raise ValueError(f"x must have shape (samples, {model.sizes[0]}), not {x.shape}")
        if len(x) == 0:
            raise ValueError("x has no samples")
        return x

    def _write_params(self, plan, model, clip):
        n = self.cfg.n
        for i, (w, b) in enumerate(zip(model.weights, model.biases)):
            rows = to_params(self._encode(f"weights[{i}]", w, clip=clip),
                             self._encode(f"biases[{i}]", b, clip=clip), n)
            self.driver.write(Space.UB, plan.regions[f"params{i}"].base, rows)

    def _read_params(self, plan, model):
        n = self.cfg.n
        for i, w in enumerate(model.weights):
            region = plan.regions[f"params{i}"]
            rows = np.array(self.driver.read(Space.UB, region.base, region.rows))
            w_raw, b_raw = from_params(rows, w.shape[0], w.shape[1], n)
            model.weights[i] = self.cfg.data.decode(w_raw)
            model.biases[i] = self.cfg.data.decode(b_raw)

    def forward(self, model, x, *, batch_size=None, clip=False):
        """Inference of ``model`` on ``x`` (samples, inputs) on the device; float outputs."""
        x = self._check_model(model, x)
        n = self.cfg.n
        samples = len(x)
        batch = batch_size or min(samples, self.cfg.acc_depth)
        batches = ceil_div(samples, batch)
        padded = np.zeros((batches * batch, x.shape[1]))
        padded[:samples] = x
        plan = compile_forward(self.cfg, model.specs(), batch, batches)
        self._write_params(plan, model, clip)
        x_raw = self._encode("x", padded, clip=clip)
        rows = np.concatenate([to_blocked(x_raw[j * batch:(j + 1) * batch], n)
                               for j in range(batches)])
        self.driver.write(Space.UB, plan.regions["x"].base, rows)
        self.stats = self._run_program(plan.program, Stats(n))
        out_f = model.sizes[-1]
        region = plan.regions["out"]
        data = np.array(self.driver.read(Space.UB, region.base, region.rows))
        stride = plan.out_stride
        out = np.concatenate([from_blocked(data[j * stride:(j + 1) * stride], batch, out_f, n)
                              for j in range(batches)])
        return self.cfg.data.decode(out[:samples])

    def train(self, model, x, y, *, lr, epochs, batch_size, record_loss=True, clip=False,
              rounding="stochastic", seed=0, epochs_per_run=None, progress=None):
        """Train ``model`` on the device: plain SGD on the MSE loss (mean over all elements),
        ``epochs`` passes over ``x`` in order, in batches of ``batch_size`` (a last partial
        batch is dropped). Forward, backward and updates all run in the device program's
        loops; the host only loads data and reads results. Updates ``model`` in place and
        returns the loss of each epoch (computed from the outputs the device logged during
        the epoch), or an empty list with ``record_loss=False``.

        ``rounding`` is how parameter updates are rounded to the data format:
        ``"stochastic"`` (default; unbiased, so updates below one LSB are not lost) with the
        generators seeded by ``seed``, or ``"nearest"``.

        The epochs run in the program's hardware loop, ``epochs_per_run`` at a time (default:
        as many as the loss log holds); ``progress(done, epochs, losses)`` is called after
        each run."""
        x = self._check_model(model, x)
        y = np.asarray(y, dtype=np.float64)
        out_f = model.sizes[-1]
        if y.ndim == 1 and out_f == 1:
            y = y[:, None]
        if y.shape != (len(x), out_f):
            raise ValueError(f"y must have shape ({len(x)}, {out_f}), not {y.shape}")
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a positive number, not {lr!r}")
        if rounding not in ("stochastic", "nearest"):
            raise ValueError(f"rounding must be 'stochastic' or 'nearest', not {rounding!r}")
        batches = len(x) // batch_size
        if batches == 0:
            raise ValueError(f"batch_size {batch_size} is larger than the {len(x)} samples")
        used = batches * batch_size
        n = self.cfg.n
        plan = compile_training(self.cfg, model.specs(), batch_size, batches, lr,
                                log_slots=None if record_loss else 0,
                                stochastic=rounding == "stochastic")
        if record_loss and plan.log_slots == 0:
            raise CompileError("no room in the unified buffer to log one epoch of outputs for "
                               "the loss; pass record_loss=False or use a larger ub_depth")
        self.last_plan = plan
        data = self.cfg.data
        one = int(data.encode(1.0))
        self._write_params(plan, model, clip)
        self.driver.write_csr(CSR.SEED, seed)
        x_raw = self._encode("x", x[:used], clip=clip)
        y_raw = self._encode("y", y[:used], clip=clip)
        bx = [x_raw[j * batch_size:(j + 1) * batch_size] for j in range(batches)]
        by = [y_raw[j * batch_size:(j + 1) * batch_size] for j in range(batches)]
        write = self.driver.write
        write(Space.UB, plan.regions["x"].base, np.concatenate([to_blocked(b, n) for b in bx]))
        write(Space.UB, plan.regions["xt"].base,
              np.concatenate([to_transposed_chunks(b, n, one) for b in bx]))
        write(Space.UB, plan.regions["y"].base, np.concatenate([to_blocked(b, n) for b in by]))
        write(Space.UB, plan.regions["identity"].base, np.eye(n, dtype=np.int64) * one)
        for i, layer in enumerate(model.specs()[:-1]):
            region = plan.regions[f"ht{i}"]
            write(Space.UB, region.base,
                  to_transposed_chunks(np.zeros((batch_size, layer.out_features), np.int64), n, one))

        losses = []
        stats = Stats(n)
        y_used = y[:used]
        remaining = epochs
        if epochs_per_run is not None and (not isinstance(epochs_per_run, int) or
                                           epochs_per_run < 1):
            raise ValueError(f"epochs_per_run must be a positive integer, not {epochs_per_run!r}")
        while remaining:
            chunk = min(remaining, plan.log_slots) if record_loss else remaining
            chunk = min(chunk, epochs_per_run or chunk, 0xFFFF)
            stats = self._run_program(plan.program, stats, regs={5: chunk, 6: 0})
            if record_loss:
                region = plan.regions["log"]
                rows = np.array(self.driver.read(Space.UB, region.base,
                                                 chunk * batches * plan.batch *
                                                 ceil_div(out_f, n)))
                stride = batch_size * ceil_div(out_f, n)
                for e in range(chunk):
                    outs = [from_blocked(rows[(e * batches + j) * stride:(e * batches + j + 1) *
                                              stride], batch_size, out_f, n)
                            for j in range(batches)]
                    pred = data.decode(np.concatenate(outs))
                    losses.append(float(np.mean((pred - y_used) ** 2)))
            remaining -= chunk
            if progress is not None:
                progress(epochs - remaining, epochs, losses)
        self.stats = stats
        self._read_params(plan, model)
        return losses
