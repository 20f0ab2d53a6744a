"""The user-facing API: compile, load, run and read back, on any backend."""

import warnings
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from ..asm import Program, assemble, check_program
from ..compiler import Capacity, compile_forward, compile_matmul, compile_training
from ..compiler.memory import CompileError
from ..config import TPUConfig
from ..model import MLP
from ..validate import flag, int_in_range, positive_int, raw_array, real_array, real_number
from .driver import HostDriver
from .executor import Stats, execute

__all__ = ["Accelerator", "Stats", "BACKENDS", "DEFAULT_RUN_WATCHDOG"]

#: Backend names and the transports that implement them.
BACKENDS = ("reference", "pysim", "verilator", "icarus", "uart", "serial-sim")


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
    if backend == "icarus":
        from .icarus import IcarusTransport
        return IcarusTransport(cfg, **options)
    if backend == "uart":
        from .uart import UARTTransport
        return UARTTransport(cfg, **options)
    if backend == "serial-sim":
        from .serial_sim import SimulatedSerialTransport
        return SimulatedSerialTransport(cfg, **options)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


#: Cycle budget of a raw program's run (``Accelerator.run``) unless given: 16.8 M cycles
#: (0.17 s at 100 MHz; about half a minute of a control loop on the reference model).
DEFAULT_RUN_WATCHDOG = 1 << 24


class Accelerator:
    """A TPU on a backend: ``"reference"`` (the numpy model of the ISA), ``"pysim"`` (the
    gateware in Amaranth's simulator), ``"verilator"`` (its Verilog compiled by Verilator),
    ``"icarus"`` (its Verilog under Icarus Verilog), ``"uart"`` (a board) or
    ``"serial-sim"`` (the board's serial link, simulated). All backends run the same plans
    through the same host protocol and give bit-identical results and cycle counts.
    Backend options go to the backend's transport, e.g. ``backdoor=True`` (verilator:
    buffer and accumulator rows copied straight into the simulated memories, see
    :mod:`~tinytpu_hdl.runtime.driver`), ``profile_guided=True`` (verilator: a build
    compiled for the counts of a short workload, about 1.4x as fast) or ``random_seed=S``
    (verilator).

    ``watchdog``: the cycle budget of every program run; a run that reaches it stops with
    the ``WATCHDOG`` error. By default raw programs (:meth:`run`) get
    :data:`DEFAULT_RUN_WATCHDOG` cycles and the runs of compiled plans the largest budget
    the counters hold (``2 ** counter_width - 1``); 0 means none. After any error the
    device is idle again and the next call works (memories and registers keep what the
    failed run left). Use it as a context manager, or call :meth:`close`, to end the
    backend's simulation or connection.

    The device's configuration registers are read before the first call's first transfer:
    a device built from another configuration than ``cfg`` (a board's bitstream of another
    ``variant``, Verilog exported for another array) raises
    :class:`~tinytpu_hdl.runtime.driver.ConfigMismatch` naming what differs.

    ``transport``: a transport of your own instead of a backend (e.g. the TPU's Verilog in
    your cocotb testbench: :class:`~tinytpu_hdl.runtime.cocotb_transport.CocotbTransport`).

    ``waveform="run.vcd"`` (pysim and verilator) traces every signal of the simulation;
    the file is complete after :meth:`close`, and ``run.gtkw`` beside it opens it in
    GTKWave with the signals grouped by block. ``timeline=True`` (reference) records what
    ran when (:meth:`timeline`)."""

    def __init__(self, cfg: TPUConfig | None = None, backend: str = "reference", *,
                 watchdog: int | None = None, timeline: bool = False,
                 waveform: str | None = None, transport: object = None, **options) -> None:
        self.cfg = TPUConfig() if cfg is None else cfg
        if not isinstance(self.cfg, TPUConfig):
            raise TypeError(f"cfg must be a TPUConfig, not {self.cfg!r}")
        if transport is not None:
            if not (callable(getattr(transport, "exchange", None)) and
                    callable(getattr(transport, "idle", None))):
                raise TypeError(f"transport must have exchange(words) and idle(cycles), not "
                                f"{transport!r}")
            backend = "custom"
        elif backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        top = (1 << self.cfg.counter_width) - 1
        self._plan_watchdog = top if watchdog is None else int_in_range("watchdog", watchdog,
                                                                          0, top)
        self._run_watchdog = DEFAULT_RUN_WATCHDOG if watchdog is None else self._plan_watchdog
        self.backend = backend
        if waveform is not None:
            if backend not in ("pysim", "verilator"):
                raise ValueError(f"waveform= needs the pysim or verilator backend, not "
                                 f"{backend!r}")
            options = dict(options, waveform=waveform)
        self.transport = transport or _transport(self.cfg, backend, options)
        self.driver = HostDriver(self.transport)
        self._config_checked = False
        self.stats = Stats(self.cfg.n)
        self.last_program = None
        self.last_plan = None
        self._events = None
        if flag("timeline", timeline):
            if backend != "reference":
                raise ValueError(f"timeline=True records on the reference model (its cycles "
                                 f"are the hardware's); backend {backend!r} cannot")
            self._events = self.transport.model.events = []

    def timeline(self) -> list:
        """The :class:`~tinytpu_hdl.reference.Event` of every instruction the last call
        issued (of all its runs), with ``Accelerator(..., timeline=True)``; draw them with
        :func:`tinytpu_hdl.runtime.timeline.save_timeline_plot`."""
        if self._events is None:
            raise ValueError("no timeline: create the Accelerator with timeline=True "
                             "(reference backend)")
        return list(self._events)

    def _start_call(self):
        # The device's configuration, read once, before the first call's first transfer
        # (not in the constructor: a cocotb testbench builds the Accelerator outside the
        # thread that may talk to the simulator).
        if not self._config_checked:
            self.driver.check_config()
            self._config_checked = True
        if self._events is not None:
            self._events.clear()

    def close(self) -> None:
        """End the backend's simulation or connection (idempotent)."""
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # --- data conversion ---------------------------------------------------------------------

    def _encode(self, name, values, *, clip=False):
        values = real_array(name, values)
        fmt = self.cfg.data
        raw, clipped = fmt.encode(values, return_clipped=True)
        if clipped:
            message = (f"{name}: {clipped} value(s) outside the {fmt} range "
                       f"[{fmt.min_value:g}, {fmt.max_value:g}]")
            if not clip:
                raise ValueError(message + " would be clipped; scale the data or pass clip=True")
            warnings.warn(message + " were clipped", stacklevel=3)
        return raw

    # --- what fits -----------------------------------------------------------------------

    def capacity(self) -> Capacity:
        """The :class:`~tinytpu_hdl.compiler.Capacity` of this configuration: memory sizes,
        and, with ``.training(sizes, batch)`` / ``.inference(sizes, samples)``, how a network
        would run. ``acc.last_plan`` is the plan of the last call (runs, transfers, memory
        map; ``print(acc.last_plan)``)."""
        return Capacity(self.cfg)

    def _execute(self, plan, tensors, **hooks):
        self._start_call()
        self.last_plan = plan
        return execute(plan, self.driver, tensors, watchdog=self._plan_watchdog, **hooks)

    # --- raw programs ------------------------------------------------------------------------

    def run(self, program: Program | str, *, watchdog: int | None = None) -> Stats:
        """Run an assembled :class:`~tinytpu_hdl.asm.Program` or assembly text from address 0,
        with a cycle budget of ``watchdog`` (default: the accelerator's, see the class).
        A program must end in a reachable ``halt`` and stay within itself (so that nothing an
        earlier program left in the instruction memory can run). Raises
        :class:`~tinytpu_hdl.runtime.driver.TPUError` if the hardware reports an error."""
        if isinstance(program, str):
            program = assemble(program, scalar=self.cfg.scalar)
        if not isinstance(program, Program):
            raise TypeError(f"run needs a Program or assembly text, not {type(program).__name__}")
        if program.origin != 0:
            raise ValueError(f"run loads programs at address 0; this one was assembled for "
                             f"origin {program.origin}")
        if len(program) > self.cfg.imem_depth:
            raise CompileError(f"the program has {len(program)} instructions; the instruction "
                               f"memory holds {self.cfg.imem_depth}")
        check_program(program)
        top = (1 << self.cfg.counter_width) - 1
        budget = self._run_watchdog if watchdog is None else int_in_range("watchdog", watchdog,
                                                                          0, top)
        self.last_program = program
        self._start_call()
        self.driver.recover()
        run = self.driver.run(program, watchdog=budget)
        self.stats = Stats(self.cfg.n) + run
        return self.stats

    # --- matrix product ----------------------------------------------------------------------

    def matmul(self, a: ArrayLike, b: ArrayLike, *, clip: bool = False) -> np.ndarray:
        """``a @ b`` for real arrays of any sizes, on the device. Inputs are rounded to the
        data format (values outside it raise, or are clipped with a warning with
        ``clip=True``); the result is the accumulators' value (accumulator format) as
        floats."""
        clip = flag("clip", clip)
        a, b = real_array("a", a, ndim=2), real_array("b", b, ndim=2)
        if a.shape[1] != b.shape[0] or not a.size or not b.size:
            raise ValueError(f"matmul needs non-empty (M, K) and (K, N) arrays, not {a.shape} "
                             f"and {b.shape}")
        a_raw = self._encode("a", a, clip=clip)
        b_raw = self._encode("b", b, clip=clip)
        return self.cfg.acc.decode(self.matmul_raw(a_raw, b_raw))

    def matmul_raw(self, a_raw: ArrayLike, b_raw: ArrayLike) -> np.ndarray:
        """``a @ b`` on raw data-format integers (each within the format's range); returns
        raw accumulator integers."""
        a_raw = raw_array("a_raw", a_raw, self.cfg.data)
        b_raw = raw_array("b_raw", b_raw, self.cfg.data)
        if a_raw.shape[1] != b_raw.shape[0] or not a_raw.size or not b_raw.size:
            raise ValueError(f"matmul_raw needs non-empty (M, K) and (K, N) arrays, not "
                             f"{a_raw.shape} and {b_raw.shape}")
        m, k = a_raw.shape
        n_out = b_raw.shape[1]
        plan = compile_matmul(self.cfg, m, k, n_out)
        tensors = {"A": a_raw, "B": b_raw, "C": np.zeros((m, n_out), dtype=np.int64)}
        self.stats = self._execute(plan, tensors)
        return tensors["C"]

    # --- MLP ---------------------------------------------------------------------------------

    def _check_model(self, model, x):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be an MLP, not {type(model).__name__}")
        x = real_array("x", x)
        if x.ndim != 2 or x.shape[1] != model.sizes[0]:
            raise ValueError(f"x must have shape (samples, {model.sizes[0]}), not {x.shape}")
        if len(x) == 0:
            raise ValueError("x has no samples")
        return x

    def _param_tensors(self, model, clip):
        tensors = {}
        for i, (w, b) in enumerate(zip(model.weights, model.biases)):
            tensors[f"W{i}"] = self._encode(f"weights[{i}]", w, clip=clip)
            tensors[f"b{i}"] = self._encode(f"biases[{i}]", b, clip=clip)
        return tensors

    def forward(self, model: MLP, x: ArrayLike, *, batch_size: int | None = None,
                clip: bool = False) -> np.ndarray:
        """Inference of ``model`` on ``x`` (samples, inputs) on the device; float outputs.
        Any number of samples and any layer sizes: the samples are streamed through the
        chip in chunks, and a network whose parameters do not fit runs layer by layer
        (``acc.last_plan`` shows how). ``batch_size`` caps the batch of the program."""
        x = self._check_model(model, x)
        clip = flag("clip", clip)
        if batch_size is not None:
            batch_size = positive_int("batch_size", batch_size)
        samples = len(x)
        plan = compile_forward(self.cfg, model.specs(), samples, batch=batch_size)
        x_raw = self._encode("x", x, clip=clip)
        params = self._param_tensors(model, clip)
        out_f = model.sizes[-1]
        if plan.info["form"] == "resident":
            padded = plan.info["padded samples"]
            tensors = dict(params)
            tensors["x"] = np.zeros((padded, x.shape[1]), dtype=np.int64)
            tensors["x"][:samples] = x_raw
            tensors["out"] = np.zeros((padded, out_f), dtype=np.int64)
            result = "out"
        else:
            tensors = {"h0": x_raw}
            for i, size in enumerate(model.sizes[1:]):
                tensors[f"WT{i}"] = params[f"W{i}"].T.copy()
                tensors[f"bias{i}"] = params[f"b{i}"][None, :]
                tensors[f"h{i + 1}"] = np.zeros((samples, size), dtype=np.int64)
            result = f"h{len(model.weights)}"
        self.stats = self._execute(plan, tensors)
        return self.cfg.data.decode(tensors[result][:samples])

    def train(self, model: MLP, x: ArrayLike, y: ArrayLike, *, lr: float, epochs: int,
              batch_size: int, record_loss: bool = True, clip: bool = False,
              rounding: str = "stochastic", seed: int = 0, epochs_per_run: int | None = None,
              progress: Callable | None = None) -> list[float]:
        """Train ``model`` on the device: plain SGD on the MSE loss (mean over all elements),
        ``epochs`` passes over ``x`` in order, in batches of ``batch_size`` (a last partial
        batch is dropped). Forward, backward and updates all run in the device program's
        loops; the parameters stay on chip, the samples are streamed through it run by run
        (or stay on chip for several epochs when they fit). Updates ``model`` in place and
        returns the loss of each epoch (computed from the outputs the device logged during
        the epoch), or an empty list with ``record_loss=False``.

        ``rounding`` is how parameter updates are rounded to the data format:
        ``"stochastic"`` (default; unbiased, so updates below one LSB are not lost) with the
        generators seeded by ``seed``, or ``"nearest"``.

        When the data set fits on chip, the epochs run in the program's hardware loop,
        ``epochs_per_run`` at a time (default: as many as the loss log holds).
        ``progress(done, epochs, losses)`` is called after each run (``done`` counts
        epochs, with fractions while the samples of an epoch are streamed), and, if it has
        one, ``progress.running(cycles)`` while a run goes on (slow backends)."""
        x = self._check_model(model, x)
        y = real_array("y", y)
        out_f = model.sizes[-1]
        if y.ndim == 1 and out_f == 1:
            y = y[:, None]
        if y.shape != (len(x), out_f):
            raise ValueError(f"y must have shape ({len(x)}, {out_f}), not {y.shape}")
        epochs = positive_int("epochs", epochs)
        batch_size = positive_int("batch_size", batch_size)
        lr = real_number("lr", lr, lo=0.0, lo_open=True)
        record_loss, clip = flag("record_loss", record_loss), flag("clip", clip)
        if rounding not in ("stochastic", "nearest"):
            raise ValueError(f"rounding must be 'stochastic' or 'nearest', not {rounding!r}")
        seed = int_in_range("seed", seed, 0, (1 << 32) - 1)
        if epochs_per_run is not None:
            epochs_per_run = positive_int("epochs_per_run", epochs_per_run)
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, not {progress!r}")
        batches = len(x) // batch_size
        if batches == 0:
            raise ValueError(f"batch_size {batch_size} is larger than the {len(x)} samples")
        used = batches * batch_size
        plan = compile_training(self.cfg, model.specs(), len(x), batch_size, lr, epochs=epochs,
                                record_loss=record_loss, stochastic=rounding == "stochastic",
                                epochs_per_run=epochs_per_run, seed=seed)
        tensors = self._param_tensors(model, clip)
        tensors["x"] = self._encode("x", x[:used], clip=clip)
        tensors["y"] = self._encode("y", y[:used], clip=clip)
        tensors["outputs"] = np.zeros((max(1, plan.info["log epochs"]) * used, out_f),
                                      dtype=np.int64)
        losses = []
        y_used = y[:used]
        data = self.cfg.data

        def on_mark(tag, stats):
            _, e0, e1 = tag
            if record_loss:
                for e in range(e1 - e0):
                    pred = data.decode(tensors["outputs"][e * used:(e + 1) * used])
                    losses.append(float(np.mean((pred - y_used) ** 2)))
            if progress is not None:
                progress(e1, epochs, losses)

        def done_of(step):
            """Epochs done when ``step``, a run, ends (fractions within an epoch)."""
            if step.tag[0] == "epochs":
                return step.tag[2]
            _, epoch, _, _, b1 = step.tag
            return epoch + b1 / batches

        def on_run(step, stats):
            if progress is not None and done_of(step) % 1:
                progress(done_of(step), epochs, losses)

        def on_poll(step, cycles):
            if progress is not None and hasattr(progress, "running"):
                progress.running(cycles)

        self.stats = self._execute(plan, tensors, on_mark=on_mark, on_run=on_run,
                                   on_poll=on_poll)
        for i in range(len(model.weights)):
            model.weights[i] = data.decode(tensors[f"W{i}"])
            model.biases[i] = data.decode(tensors[f"b{i}"])
        return losses
