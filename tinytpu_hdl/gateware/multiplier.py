"""Pipelined signed multiplier: registered operands, registered product (the processing
elements' multiply and the vector unit's).

On ECP5 the two register stages are the input and output registers of a ``MULT18X18D``
block, instantiated directly: Yosys maps a multiplication to ``MULT18X18D`` but leaves the
registers around it in the fabric, where the placer puts them next to the logic that
feeds them, often far from the multiplier block. Everywhere else (simulation, Verilog
export, iCE40, other FPGAs) the same two stages are plain registers around a ``*``.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PipelinedMultiplier", "MULTIPLIER_FAMILIES"]

#: The FPGA families with a dedicated form of the multiplier (others use the generic form).
MULTIPLIER_FAMILIES = ("ecp5",)

_ECP5_WIDTH = 18


class PipelinedMultiplier(wiring.Component):
    """Signed multiplier with two register stages.

    Parameters
    ----------
    a_width, b_width : int
        Operand widths (both operands are signed; ``b_width`` defaults to ``a_width``).
    family : str or None
        ``"ecp5"`` for a ``MULT18X18D`` block with its input and output registers when
        both operands have at most 18 bits (wider ones, and ``None`` or any other family,
        use registers around a ``*``). :attr:`uses_block` tells which form was chosen.

    Members
    -------
    a : In(signed(a_width))
    b : In(signed(b_width))
        Operands.
    p : Out(signed(a_width + b_width))
        The product.

    Timing
    ------
    ``a`` and ``b`` are sampled at the end of every cycle ``t``; ``p`` holds ``a * b``
    in cycle ``t + 2``::

        cycle    t        t+1        t+2
        a, b     x, y
        (regs)            x, y
        p                            x * y

    The registers load every cycle (no enable) and are not reset; ``p`` is zero until
    the first operands have gone through (the registers' initial value).
    """

    #: Cycles from the operands to their product.
    LATENCY = 2

    def __init__(self, a_width, b_width=None, *, family=None):
        b_width = a_width if b_width is None else b_width
        for value in (a_width, b_width):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"multiplier widths must be positive integers, not {value!r}")
        self._a_width, self._b_width = a_width, b_width
        self._uses_block = self.block_fits(family, a_width, b_width)
        super().__init__({
            "a": In(signed(a_width)),
            "b": In(signed(b_width)),
            "p": Out(signed(a_width + b_width)),
        })

    @staticmethod
    def block_fits(family, a_width, b_width):
        """Whether a multiplier of these widths is a multiplier block of ``family``."""
        family = str(family).lower() if family is not None else None
        return family == "ecp5" and max(a_width, b_width) <= _ECP5_WIDTH

    @property
    def widths(self):
        return self._a_width, self._b_width

    @property
    def uses_block(self):
        """Whether the multiplier is an FPGA multiplier block with its own registers."""
        return self._uses_block

    def elaborate(self, platform):
        m = Module()
        if self._uses_block:
            self._elaborate_ecp5(m)
        else:
            # No resets, so that synthesis can put the registers into a multiplier block
            # (Yosys does for iCE40's SB_MAC16).
            a = Signal.like(self.a, reset_less=True)
            b = Signal.like(self.b, reset_less=True)
            p = Signal.like(self.p, reset_less=True)
            m.d.sync += [a.eq(self.a), b.eq(self.b), p.eq(a * b)]
            m.d.comb += self.p.eq(p)
        return m

    def _elaborate_ecp5(self, m):
        # MULT18X18D: A and B (18 bits, sign-extended here) through the input registers,
        # the 36-bit product P through the output register, every register on CLK0 with
        # CE0 high and RST0 low (so never reset). The pipeline register stays off.
        a = Signal(signed(_ECP5_WIDTH))
        b = Signal(signed(_ECP5_WIDTH))
        p = Signal(2 * _ECP5_WIDTH)
        m.d.comb += [a.eq(self.a), b.eq(self.b),
                     self.p.eq(p[:self._a_width + self._b_width])]
        ports = {}
        for i in range(_ECP5_WIDTH):
            ports[f"i_A{i}"] = a[i]
            ports[f"i_B{i}"] = b[i]
            ports[f"i_C{i}"] = Const(0)
        for i in range(2 * _ECP5_WIDTH):
            ports[f"o_P{i}"] = p[i]
        for i in range(4):
            ports[f"i_CLK{i}"] = ClockSignal("sync") if i == 0 else Const(0)
            ports[f"i_CE{i}"] = Const(1)
            ports[f"i_RST{i}"] = Const(0)
        m.submodules.mult = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
            p_REG_INPUTC_CLK="NONE",
            p_REG_PIPELINE_CLK="NONE",
            p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
            p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED",
            p_CLK3_DIV="ENABLED", p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED",
            p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
            p_RESETMODE="SYNC",
            i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            **ports)
