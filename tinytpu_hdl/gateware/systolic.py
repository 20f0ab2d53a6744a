"""Weight-stationary systolic array with skewing and de-skewing in hardware."""

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..numeric import FixedFormat, Q8_8, Q16_16, check_accumulator
from .delay import delayed
from .signatures import valid_stream
from .pe import ActivationLayout, ProcessingElement

__all__ = ["SystolicArray", "array_latency", "InputRowLayout", "WeightRowLayout", "ResultRowLayout"]


def array_latency(rows, cols, product_registers=False):
    """Cycles from an input row entering a ``rows`` x ``cols`` array to its result row
    leaving it: the skew (``r`` cycles for row ``r``), the PE pipelines down a column and
    the de-skew (``cols - 1 - c`` cycles for column ``c``)."""
    return rows + cols + ProcessingElement.latency_of(product_registers) - 2


class InputRowLayout(data.StructLayout):
    """Payload of the array's input stream: one row vector of ``rows`` data
    values and the ``switch`` flag marking the first row of a new tile."""

    def __init__(self, fmt, rows):
        super().__init__({"data": data.ArrayLayout(fmt.shape, rows), "switch": 1})


class WeightRowLayout(data.StructLayout):
    """Payload of the array's weight-load stream: one vector and the
    ``transpose`` flag selecting where it enters (see :class:`SystolicArray`)."""

    def __init__(self, fmt, length):
        super().__init__({"data": data.ArrayLayout(fmt.shape, length), "transpose": 1})


class ResultRowLayout(data.StructLayout):
    """Payload of the array's result stream: one row vector of ``cols``
    accumulator values and a flag telling that one of its sums saturated."""

    def __init__(self, acc, cols):
        super().__init__({"data": data.ArrayLayout(acc.shape, cols), "overflow": 1})


class SystolicArray(wiring.Component):
    """A ``rows`` x ``cols`` weight-stationary systolic array.

    The array holds a stationary matrix ``S`` (``rows`` x ``cols``, one
    value per PE) and computes, for every input row vector ``x`` (length
    ``rows``), the result row ``y = x @ S`` (length ``cols``) in the
    accumulator format, with the partial sums accumulated from row 0 down
    to row ``rows - 1`` and saturated after every addition (see
    :func:`tinytpu_hdl.numeric.dot_chain`).

    Parameters
    ----------
    rows, cols : int
        Array size (``cols`` defaults to ``rows``).
    fmt, acc : FixedFormat
        Data and accumulator formats.
    family : str or None
        FPGA family whose multiplier blocks the PEs use (:class:`.PipelinedMultiplier`).
    product_registers : bool
        The PEs register their products once more (see :class:`.ProcessingElement`):
        one cycle more latency.

    Members
    -------
    act : In(valid_stream(InputRowLayout))
        One input row per cycle while ``act.valid`` is high. No back-pressure.
        ``act.payload.switch`` marks the first row of a tile: from that row on
        the array uses the matrix loaded most recently into its shadow
        registers.
    weights : In(valid_stream(WeightRowLayout))
        Loads the shadow matrix, one vector per valid cycle, without
        disturbing the active matrix. With ``transpose`` low a vector is a
        row of ``S`` (first ``cols`` elements used) and enters at the top:
        push the rows of ``S`` **bottom row first**, ``rows`` vectors in all.
        With ``transpose`` high a vector is a column of ``S`` (first ``rows``
        elements used) and enters at the left: push the columns of ``S``
        **last column first**, ``cols`` vectors in all. A matrix stored as
        rows of ``T`` in memory thus loads as ``S = T`` (normal) or
        ``S = T^T`` (transposed) with no copy.
    result : Out(valid_stream(ResultRowLayout))
        The result rows in input order.

    Timing
    ------
    The input row presented in cycle ``t`` comes out on ``result`` in cycle
    ``t + latency`` with ``latency = rows + cols + 1`` (``+ 2`` with product
    registers). Row ``r`` of the input
    is delayed by ``r`` registers before entering the array (skew), the
    column ``c`` of the result by ``cols - 1 - c`` registers after leaving
    it (de-skew); PE ``(r, c)`` receives the row presented in cycle ``t``
    in cycle ``t + r + c`` and passes its sum south three cycles later (operands,
    product and sum registered, see :class:`ProcessingElement`; four with product
    registers). Input rows may be
    streamed every cycle.

    Weight loading (double buffering): a normal load vector presented in
    cycle ``t`` shifts column ``c`` in cycle ``t + c``; a transposed one
    shifts row ``r`` in cycle ``t + r``. A switch presented in cycle ``s``
    takes effect in PE ``(r, c)`` in cycle ``s + r + c``. Hence, for a tile
    whose first row (with ``switch``) is presented in cycle ``s``:

    * a load of the *next* tile may begin in cycle ``s + rows - 1`` (normal)
      or ``s + cols - 1`` (transposed), while the tile streams, and must not
      begin earlier;
    * the next tile may switch in ``rows`` (normal) or ``cols`` (transposed)
      cycles after its load began.

    So back-to-back tiles of at least ``2 * rows - 1`` (``2 * cols - 1``)
    rows stream with no idle cycle between them, their weights loading in
    the background.
    """

    def __init__(self, rows, cols=None, *, fmt: FixedFormat = Q8_8, acc: FixedFormat = Q16_16,
                 family=None, product_registers=False):
        cols = rows if cols is None else cols
        for name, value in (("rows", rows), ("cols", cols)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Array {name} must be a positive integer, not {value!r}")
        check_accumulator(fmt, acc)
        self._rows = rows
        self._cols = cols
        self._fmt = fmt
        self._acc = acc
        self._family = family
        self._product_registers = bool(product_registers)
        super().__init__({
            "act": In(valid_stream(InputRowLayout(fmt, rows))),
            "weights": In(valid_stream(WeightRowLayout(fmt, max(rows, cols)))),
            "result": Out(valid_stream(ResultRowLayout(acc, cols))),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def fmt(self):
        return self._fmt

    @property
    def acc(self):
        return self._acc

    @property
    def latency(self):
        """Cycles from an input row on ``act`` to its result row on ``result``."""
        return array_latency(self._rows, self._cols, self._product_registers)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols

        pes = [[ProcessingElement(self._fmt, self._acc, family=self._family,
                                  product_register=self._product_registers)
                for _ in range(C)] for _ in range(R)]
        for r in range(R):
            for c in range(C):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]

        # Input skew: row r enters r cycles late.
        for r in range(R):
            edge = Signal(ActivationLayout(self._fmt), name=f"act_edge_{r}")
            m.d.comb += [
                edge.data.eq(self.act.payload.data[r]),
                edge.valid.eq(self.act.valid),
                edge.switch.eq(self.act.valid & self.act.payload.switch),
            ]
            m.d.comb += pes[r][0].act_in.eq(delayed(m, edge, r, name=f"act_skew_{r}"))
            for c in range(1, C):
                m.d.comb += pes[r][c].act_in.eq(pes[r][c - 1].act_out)

        # Partial sums flow south.
        for r in range(1, R):
            for c in range(C):
                m.d.comb += pes[r][c].psum_in.eq(pes[r - 1][c].psum_out)

        # Weight loading: normal loads enter at the top, column c shifting c cycles late;
        # transposed loads enter at the left, row r shifting r cycles late.
        load_normal = self.weights.valid & ~self.weights.payload.transpose
        load_transposed = self.weights.valid & self.weights.payload.transpose
        for c in range(C):
            shift = delayed(m, load_normal, c, name=f"shift_south_skew_{c}")
            w_top = delayed(m, self.weights.payload.data[c], c, name=f"w_top_skew_{c}")
            m.d.comb += pes[0][c].w_north.eq(w_top)
            for r in range(R):
                m.d.comb += pes[r][c].shift_south.eq(shift)
                if r > 0:
                    m.d.comb += pes[r][c].w_north.eq(pes[r - 1][c].w_shadow)
        for r in range(R):
            shift = delayed(m, load_transposed, r, name=f"shift_east_skew_{r}")
            w_left = delayed(m, self.weights.payload.data[r], r, name=f"w_left_skew_{r}")
            m.d.comb += pes[r][0].w_west.eq(w_left)
            for c in range(C):
                m.d.comb += pes[r][c].shift_east.eq(shift)
                if c > 0:
                    m.d.comb += pes[r][c].w_west.eq(pes[r][c - 1].w_shadow)

        # Output de-skew: column c leaves the array at t + R - 1 + c + PE latency; delay it
        # by C - 1 - c cycles to t + latency.
        overflow = Const(0, 1)
        for c in range(C):
            out = delayed(m, pes[R - 1][c].psum_out, C - 1 - c, name=f"result_deskew_{c}")
            m.d.comb += self.result.payload.data[c].eq(out.value)
            overflow = overflow | out.overflow
        m.d.comb += self.result.payload.overflow.eq(overflow)
        m.d.comb += self.result.valid.eq(delayed(m, self.act.valid, self.latency,
                                                 name="valid_pipe"))

        return m
