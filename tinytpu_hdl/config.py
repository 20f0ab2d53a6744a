"""Configuration of one TPU instance: array size and number formats."""

import zlib
from dataclasses import dataclass, field, fields

from .numeric import FixedFormat, Q8_8, check_accumulator

__all__ = ["TPUConfig", "UNIT_MULTIPLIERS"]

#: Where the vector and gradient-descent units multiply (``TPUConfig.unit_multipliers``).
UNIT_MULTIPLIERS = ("blocks", "logic", "shared")


@dataclass(frozen=True)
class TPUConfig:
    """Parameters shared by the gateware, the reference model, the compiler and the runtime.

    ``n`` is the side of the square systolic array. ``data`` is the storage
    format (default Q8.8); ``acc`` the accumulator format, by default twice
    as wide with twice the fraction bits so that products are exact;
    ``scalar`` the format of the configuration registers (leak factor,
    learning rate, loss scale), by default 16 bits with 14 fraction bits
    (range [-2, 2), resolution 6.1e-5). ``ub_depth``, ``acc_depth`` and
    ``imem_depth`` are the sizes, in rows of ``n`` words or in
    instructions, of the unified buffer, the accumulator memory and the
    instruction memory (at most 65536 each: the ISA's addresses are 16-bit).
    ``counter_width`` is the width of the cycle, array-busy, multiply-accumulate
    and instruction counters and of the watchdog register (8 to 64 bits; the
    counters wrap modulo ``2 ** counter_width``): 64 by default, fewer on small
    FPGAs (at 12 MHz, 40 bits last 25 hours).

    ``isolated_multipliers`` gives each of the vector unit's three multiplies a
    register stage of its own on either side, so that nothing but routing lies
    between a multiplier block and the logic before and after it (six more
    vector-unit stages: every VPU instruction takes six cycles longer). It is on by
    default, for FPGAs whose multiplier blocks the placer puts far from the logic
    around them (ECP5 at N = 8); small FPGAs, where registers cost logic cells and
    the clock is slow, leave it off. The reference model follows either timing.

    ``chase_matmul`` gives the vector and gradient-descent units a read port of their
    own on the accumulator memory (a second copy of its block RAM), so that a ``vpu`` or
    ``gd`` may issue as soon as the last ``matmul`` has streamed its rows and its first
    result row is written, and then reads each accumulator row after the array has
    written it, instead of waiting until the matmul engine is idle (see
    :class:`~tinytpu_hdl.gateware.control.ControlUnit`). On by default; off it saves the
    block RAM and a few logic cells (the iCEBreaker's 1x1 TPU).

    ``registered_requests`` makes the weight loader's and the vector unit's read requests
    on the unified buffer (enable and address) registers loaded with their next values,
    so that the buffer port's address multiplexer reads registers only, and registers the
    rows the vector unit (bias, aux) and the gradient-descent unit (parameters) read twice
    on their way from the block RAM, once where they leave it and once beside the lanes
    (Fmax on the ECP5). The aux and parameter rows are then read a cycle earlier
    (:meth:`~tinytpu_hdl.gateware.vector_unit.VectorUnit.aux_delay`,
    :meth:`~tinytpu_hdl.gateware.gd_unit.GradientDescentUnit.param_delay`), so a weight
    load waiting for them may issue a cycle earlier; with ``overlap_units`` the host's
    buffer writes wait on a register (the units say a cycle ahead that they will write).
    Off, the requests are gated from the engines' state in the cycle they are used, which
    saves about 30 logic cells (the iCEBreaker's 1x1 TPU).

    ``registered_weight_rows`` puts a register between the unified buffer's output and the
    array's weight input: each row the weight loader reads is registered before the PEs'
    shadow registers take it, so that the block RAM's output and the multiplexer over its
    blocks drive one register instead of every PE of the array's edge (Fmax on the ECP5).
    A load then takes a cycle longer (:class:`~tinytpu_hdl.gateware.loader.WeightLoader`),
    a ``matmul`` after a ``loadw`` waits a cycle longer and a ``loadw`` after a ``matmul``
    a cycle less. On by default; off it saves a register per weight bit (the iCEBreaker's
    1x1 TPU).

    ``overlap_units`` lets ``loadw`` and ``matmul`` issue while a vector or
    gradient-descent pass runs, unless they touch the buffer rows it writes, or, for a
    ``loadw``, the pass has aux rows or parameters still to read (through the loader's
    port), or, for a ``matmul``, its accumulator destination starts inside the rows the
    pass has still to read (see :class:`~tinytpu_hdl.gateware.control.ControlUnit`). The buffer port that
    streams into the array is then the array's alone, and the weight loader and the units
    read a second copy of the unified buffer, which doubles its block RAM. The next weight
    tile's load and matmul run beside a vector or gradient-descent pass over the last
    results. Needs ``chase_matmul``; by default on where ``chase_matmul`` is.

    ``ub_copy_depth`` (with ``overlap_units``) is how many rows of the unified buffer the
    second copy holds, from row 0 (default: all ``ub_depth``). The rows the weight loader
    loads, the vector unit's aux and bias rows and the gradient-descent unit's parameters
    are read from that copy, so they must lie below ``ub_copy_depth`` (else the instruction
    stops the run with ``UB_RANGE``); the matmul engine's input rows, the vector unit's
    destination rows and the host may use every row. A copy of the rows that hold
    parameters and weights only is what lets a deep buffer overlap its units where two
    whole copies would not fit (the ULX3S: 12,288 rows, 7,168 of them copied). Without
    ``overlap_units`` the buffer is held once and every row is readable everywhere.

    ``chain_passes`` lets a ``vpu`` issue while the pass before it is still in the vector
    unit's pipeline, once that pass has read its last accumulator row (a cycle later
    without ``registered_requests``; after a transposed pass, once the next pass's rows
    would reach the transposer after it is done), unless the new pass writes its output
    transposed or reads (aux or bias) a row that a pass in flight writes: the passes'
    rows then follow each other through the stages, each row carrying its pathway and
    its buffer addresses (:class:`~tinytpu_hdl.gateware.vector_unit.VectorUnit`). With
    it, a ``matmul`` that streams the rows a lone pass writes (a pass issued with the unit
    idle, not transposed, both with stride 1) chases the pass's writes instead of waiting
    for it to finish: it reads each row after the pass has written it. By default
    (``None``) on where ``overlap_units`` is and the units' multipliers are their own (not
    ``"shared"``); off the vector unit takes one pass at a time, as on the iCEBreaker,
    whose logic cells it would not fit.

    ``unit_multipliers`` is where the vector and gradient-descent units multiply:
    ``"blocks"`` (default) in the FPGA's multiplier blocks, ``"logic"`` in adders and
    carry chains (:class:`~tinytpu_hdl.gateware.multiplier.PipelinedMultiplier`'s logic
    form), leaving every multiplier block to the array: a 12x12 TPU needs 144 blocks for
    its PEs and 60 more for the units, where the ECP5-85F has 156. Results and cycle
    counts are the same either way. ``"shared"`` gives the two units one multiplier
    (block) per lane between them (:class:`~tinytpu_hdl.gateware.multiplier.
    SharedMultipliers`, ``n`` blocks instead of ``5 n``): a ``vpu`` then reads a row every
    ``P`` cycles, ``P`` from 1 to 3 by the multiplies its pathway uses
    (:meth:`~tinytpu_hdl.gateware.vector_unit.VectorUnit.row_interval`), and a ``gd`` a row
    every 2 cycles, a cycle later (results the same, passes longer; the reference model
    follows).
    """

    n: int = 2
    data: FixedFormat = Q8_8
    acc: FixedFormat = field(default=None)
    scalar: FixedFormat = field(default=None)
    ub_depth: int = 4096
    acc_depth: int = 512
    imem_depth: int = 256
    counter_width: int = 64
    isolated_multipliers: bool = True
    chase_matmul: bool = True
    registered_requests: bool = True
    registered_weight_rows: bool = True
    overlap_units: bool = None
    unit_multipliers: str = "blocks"
    ub_copy_depth: int = None
    chain_passes: bool = None

    @property
    def chains_passes(self):
        """Whether a ``vpu`` may follow the one before it through the vector unit's
        pipeline (``chain_passes``, by default where ``overlap_units`` is on and the units
        have multipliers of their own)."""
        if self.chain_passes is None:
            return self.overlap_units and self.unit_multipliers != "shared"
        return self.chain_passes

    @property
    def ub_loadable_rows(self):
        """The buffer rows the weight loader and the units' aux, bias and parameter reads
        may use: ``ub_copy_depth``, or every row."""
        return self.ub_depth if self.ub_copy_depth is None else self.ub_copy_depth

    def fingerprint(self) -> int:
        """A 32-bit CRC of every field: what the device's ``CONFIG`` register reads, so that
        a host can tell whether the hardware behind it was built from this configuration
        (fields the other registers do not show: formats beyond the data's, the copy's
        depth, the timing options)."""
        def text(value):
            if isinstance(value, FixedFormat):
                return f"FixedFormat({value.width},{value.frac})"
            return repr(value)
        return zlib.crc32(";".join(f"{f.name}={text(getattr(self, f.name))}"
                                   for f in fields(self)).encode())

    def __post_init__(self):
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"Array size n must be a positive integer, not {self.n!r}")
        if not isinstance(self.data, FixedFormat):
            raise TypeError(f"Data format must be a FixedFormat, not {self.data!r}")
        if self.acc is None:
            object.__setattr__(self, "acc",
                               FixedFormat(min(62, 2 * self.data.width), 2 * self.data.frac))
        if self.scalar is None:
            width = min(16, self.data.width)
            object.__setattr__(self, "scalar", FixedFormat(width, width - 2))
        if not isinstance(self.scalar, FixedFormat) or self.scalar.width > 16:
            raise ValueError(f"Scalar format must be a FixedFormat of at most 16 bits, "
                             f"not {self.scalar!r}")
        for name in ("ub_depth", "acc_depth", "imem_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65536:
                raise ValueError(f"{name} must be an integer from 1 to 65536, not {value!r}")
        if (not isinstance(self.counter_width, int) or isinstance(self.counter_width, bool)
                or not 8 <= self.counter_width <= 64):
            raise ValueError(f"counter_width must be an integer from 8 to 64, "
                             f"not {self.counter_width!r}")
        if self.overlap_units is None:
            object.__setattr__(self, "overlap_units", self.chase_matmul)
        for name in ("isolated_multipliers", "chase_matmul", "registered_requests",
                     "registered_weight_rows", "overlap_units"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {getattr(self, name)!r}")
        if self.overlap_units and not self.chase_matmul:
            raise ValueError("overlap_units needs chase_matmul (the units' accumulator read "
                             "port of their own)")
        if self.ub_copy_depth is None:
            pass
        elif (not isinstance(self.ub_copy_depth, int) or isinstance(self.ub_copy_depth, bool)
              or not 1 <= self.ub_copy_depth <= self.ub_depth):
            raise ValueError(f"ub_copy_depth must be an integer from 1 to ub_depth "
                             f"({self.ub_depth}), not {self.ub_copy_depth!r}")
        elif self.ub_copy_depth != self.ub_depth and not self.overlap_units:
            raise ValueError(f"ub_copy_depth={self.ub_copy_depth} needs overlap_units (without "
                             f"it the buffer is held once: leave ub_copy_depth unset)")
        elif self.ub_copy_depth == self.ub_depth:
            # Stored as unset, so that a copy of the config with another ub_depth
            # (dataclasses.replace) still copies every row.
            object.__setattr__(self, "ub_copy_depth", None)
        if self.unit_multipliers not in UNIT_MULTIPLIERS:
            raise ValueError(f"unit_multipliers must be 'blocks', 'logic' or 'shared', not "
                             f"{self.unit_multipliers!r}")
        if self.chain_passes is not None:
            if not isinstance(self.chain_passes, bool):
                raise TypeError(f"chain_passes must be a bool or None, not "
                                f"{self.chain_passes!r}")
            if self.chain_passes and not self.overlap_units:
                raise ValueError("chain_passes=True needs overlap_units (the control unit "
                                 "tracks the rows the passes in flight write)")
            if self.chain_passes and self.unit_multipliers == "shared":
                raise ValueError("chain_passes=True needs unit_multipliers 'blocks' or "
                                 "'logic', not 'shared' (passes with other row intervals "
                                 "would meet in the shared multipliers)")
        if not isinstance(self.acc, FixedFormat):
            raise TypeError(f"Accumulator format must be a FixedFormat, not {self.acc!r}")
        check_accumulator(self.data, self.acc)
