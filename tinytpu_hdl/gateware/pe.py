"""Processing element: one multiply-accumulate cell of the systolic array."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..numeric import FixedFormat, check_accumulator, hdl_add_sat
from .multiplier import PipelinedMultiplier

__all__ = ["ActivationLayout", "PartialSumLayout", "ProcessingElement"]


class ActivationLayout(data.StructLayout):
    """What travels east through a row of PEs each cycle.

    ``data``: the input value; ``valid``: ``data`` belongs to a row of the
    stream; ``switch``: this is the first row of a new tile, so every PE it
    passes promotes its shadow weight to the active weight before using it.
    """

    def __init__(self, fmt: FixedFormat):
        super().__init__({"data": fmt.shape, "valid": 1, "switch": 1})


class PartialSumLayout(data.StructLayout):
    """What travels south through a column of PEs: a partial sum and a sticky
    flag telling that some addition on its way saturated."""

    def __init__(self, acc: FixedFormat):
        super().__init__({"value": acc.shape, "overflow": 1})


class ProcessingElement(wiring.Component):
    """Weight-stationary multiply-accumulate cell with a double-buffered weight.

    Parameters
    ----------
    fmt : FixedFormat
        Data format of inputs and weights.
    acc : FixedFormat
        Accumulator format of partial sums (``acc.frac == 2 * fmt.frac``).
    family : str or None
        FPGA family whose multiplier block to use (see :class:`.PipelinedMultiplier`);
        ``None`` for the generic form. Results and timing are the same.
    product_register : bool
        Register the product once more, in the fabric, before the addition (a
        four-stage pipeline: the multiplier block's output register then drives only
        routing to a register next to the adder).

    Members
    -------
    act_in : In(ActivationLayout)
        Input from the west neighbour (or the array's edge).
    act_out : Out(ActivationLayout)
        ``act_in`` registered, to the east neighbour.
    psum_in : In(PartialSumLayout)
        Partial sum from the north neighbour (zero for the top row).
    psum_out : Out(PartialSumLayout)
        Registered ``psum_in + act_in.data * weight``, saturated, to the south.
    w_north, shift_south : In
        When ``shift_south`` is high the shadow weight takes ``w_north``.
    w_west, shift_east : In
        Otherwise, when ``shift_east`` is high the shadow weight takes ``w_west``.
    w_shadow : Out
        The shadow weight, fed to the south and east neighbours' ``w_north``
        and ``w_west``, so the shadow registers of a column (a row) form a
        shift register for loading a tile (a transposed tile).
    w_active : Out
        The active weight (for observation and formal proofs; the array does
        not use it).

    Timing
    ------
    A three-stage pipeline: operands, product, sum. If ``act_in`` carries a valid
    input ``x`` in cycle ``t``, ``x`` and the weight ``w`` are registered at the end
    of cycle ``t`` (so that nothing but routing lies between a register and the
    multiplier), the product ``x * w`` at the end of cycle ``t + 1``; ``psum_in``
    must carry the matching partial sum in cycle ``t + 2``, and ``psum_out`` holds
    the new sum in cycle ``t + 3``. ``act_out`` repeats ``act_in`` one cycle later,
    so a neighbour one step east sees ``x`` in cycle ``t + 1``, and one step south
    (fed one cycle later by the array's input skew) in cycle ``t + 1`` too: the
    partial sums meet their products::

        cycle      t          t+1        t+2                t+3
        act_in     x, switch
        act_out               x, switch
        operands              x, w
        product                          x * w
        psum_in                          p
        psum_out                                            sat(p + x * w)

    The weight ``w`` used in cycle ``t`` is the active weight, or the shadow
    weight if ``act_in.switch`` is high, in which case the shadow weight
    also becomes the active weight for the following cycles. A shift in the
    same cycle as a switch is allowed: the switch takes the old shadow value.
    ``psum_out`` changes only in cycles following a valid input's product.

    With ``product_register`` every step from the product on is one cycle later:
    ``psum_in`` in cycle ``t + 3``, ``psum_out`` in cycle ``t + 4`` (:attr:`latency`).
    """

    def __init__(self, fmt: FixedFormat, acc: FixedFormat, *, family=None,
                 product_register=False):
        check_accumulator(fmt, acc)
        self._fmt = fmt
        self._acc = acc
        self._family = family
        self._product_register = bool(product_register)
        super().__init__({
            "act_in": In(ActivationLayout(fmt)),
            "act_out": Out(ActivationLayout(fmt)),
            "psum_in": In(PartialSumLayout(acc)),
            "psum_out": Out(PartialSumLayout(acc)),
            "w_north": In(fmt.shape),
            "shift_south": In(1),
            "w_west": In(fmt.shape),
            "shift_east": In(1),
            "w_shadow": Out(fmt.shape),
            "w_active": Out(fmt.shape),
        })

    @staticmethod
    def latency_of(product_register=False):
        """Cycles from a valid input on ``act_in`` to its sum on ``psum_out``."""
        return 3 + int(bool(product_register))

    @property
    def latency(self):
        return self.latency_of(self._product_register)

    @property
    def fmt(self):
        return self._fmt

    @property
    def acc(self):
        return self._acc

    def elaborate(self, platform):
        m = Module()

        active = self.w_active
        # The operands and the product are the multiplier's two register stages; the
        # valid bits travel beside them.
        m.submodules.mult = mult = PipelinedMultiplier(self._fmt.width, family=self._family)
        op_valid = Signal()
        product_valid = Signal()

        m.d.comb += [
            mult.a.eq(self.act_in.data),
            mult.b.eq(Mux(self.act_in.switch, self.w_shadow, active)),
        ]
        m.d.sync += [
            self.act_out.eq(self.act_in),
            op_valid.eq(self.act_in.valid),
            product_valid.eq(op_valid),
        ]
        with m.If(self.act_in.valid & self.act_in.switch):
            m.d.sync += active.eq(self.w_shadow)

        product = mult.p
        if self._product_register:
            product = Signal.like(mult.p, name="product", reset_less=True)
            product_copy_valid = Signal()
            m.d.sync += [product.eq(mult.p), product_copy_valid.eq(product_valid)]
            product_valid = product_copy_valid
        with m.If(product_valid):
            total, overflow = hdl_add_sat(self.psum_in.value, product, self._acc)
            m.d.sync += [
                self.psum_out.value.eq(total),
                self.psum_out.overflow.eq(self.psum_in.overflow | overflow),
            ]

        with m.If(self.shift_south):
            m.d.sync += self.w_shadow.eq(self.w_north)
        with m.Elif(self.shift_east):
            m.d.sync += self.w_shadow.eq(self.w_west)

        return m
