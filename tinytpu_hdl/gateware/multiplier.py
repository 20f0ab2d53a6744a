"""Pipelined signed multiplier: registered operands, registered product (the processing
elements' multiply and the vector unit's).

On ECP5 the two register stages are the input and output registers of a ``MULT18X18D``
block, instantiated directly: Yosys maps a multiplication to ``MULT18X18D`` but leaves the
registers around it in the fabric, where the placer puts them next to the logic that
feeds them, often far from the multiplier block. Everywhere else (simulation, Verilog
export, iCE40, other FPGAs) the same two stages are plain registers around a ``*``.

The *logic* form (``logic=True``) uses no multiplier block at all, for devices whose
blocks all go to the array (a 12x12 TPU on the ECP5-85F): the first stage registers the
products of ``a`` with each 4-bit slice of ``b`` (sums of shifted copies of ``a``), the
second their shifted sum. Same latency and results; adders and carry chains instead of a
block.

:class:`SharedMultipliers` is one such multiplier per lane that the vector and
gradient-descent units share (``TPUConfig.unit_multipliers="shared"``): they never run at
the same time, and each spaces its rows so that no two of its own multiplies meet in a
cycle.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PipelinedMultiplier", "MULTIPLIER_FAMILIES", "SharedMultipliers",
           "gradient_split", "shared_widths", "multiplier_port"]

#: The FPGA families with a dedicated form of the multiplier (others use the generic form).
MULTIPLIER_FAMILIES = ("ecp5",)

_ECP5_WIDTH = 18
#: Bits of ``b`` per partial product of the logic form.
_SLICE = 4


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
    logic : bool
        The logic form: partial products of 4-bit slices of ``b`` in the first stage,
        their sum in the second; no ``*``, so synthesis uses no multiplier block.

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
    the first operands have gone through (the registers' initial value). In the logic
    form the first stage holds the partial products ``a * b[4j+3:4j]`` instead of the
    operands.
    """

    #: Cycles from the operands to their product.
    LATENCY = 2

    def __init__(self, a_width, b_width=None, *, family=None, logic=False):
        b_width = a_width if b_width is None else b_width
        for value in (a_width, b_width):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"multiplier widths must be positive integers, not {value!r}")
        if not isinstance(logic, bool):
            raise TypeError(f"logic must be a bool, not {logic!r}")
        self._a_width, self._b_width = a_width, b_width
        self._logic = logic
        self._uses_block = not logic and self.block_fits(family, a_width, b_width)
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
        elif self._logic:
            self._elaborate_logic(m)
        else:
            # No resets, so that synthesis can put the registers into a multiplier block
            # (Yosys does for iCE40's SB_MAC16).
            a = Signal.like(self.a, reset_less=True)
            b = Signal.like(self.b, reset_less=True)
            p = Signal.like(self.p, reset_less=True)
            m.d.sync += [a.eq(self.a), b.eq(self.b), p.eq(a * b)]
            m.d.comb += self.p.eq(p)
        return m

    def _elaborate_logic(self, m):
        # b = sum_j slice_j * 2^(4j), each slice unsigned but the top one (signed: it holds
        # the sign bit). Stage 1: a * slice_j as a sum of a << i where bit i is set (the top
        # bit of the top slice subtracted); stage 2: the shifted sum of the slices.
        a, b = self.a, self.b
        parts = []
        for j, low in enumerate(range(0, self._b_width, _SLICE)):
            high = min(low + _SLICE, self._b_width)
            terms = [Mux(b[low + i], a << i, 0) for i in range(high - low)]
            if high == self._b_width:          # the slice with the sign bit
                value = sum(terms[:-1], Const(0)) - terms[-1]
            else:
                value = sum(terms, Const(0))
            part = Signal(signed(self._a_width + high - low + 1), name=f"part_{j}",
                          reset_less=True)
            m.d.sync += part.eq(value)
            parts.append((part, low))
        p = Signal.like(self.p, reset_less=True)
        m.d.sync += p.eq(sum((part << low for part, low in parts), Const(0)))
        m.d.comb += self.p.eq(p)

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


def gradient_split(cfg):
    """Where the gradient-descent unit splits an accumulator-format gradient for 18x18
    multiplier blocks: its low ``k`` bits (unsigned) and the rest (signed), one partial
    product each."""
    return min(17, cfg.acc.width - 1)


def shared_widths(cfg):
    """Operand widths ``(a, b)`` of the units' shared multipliers: ``a`` takes the vector
    unit's data-format operands and both of the gradient's parts, ``b`` a scalar."""
    k = gradient_split(cfg)
    return max(cfg.data.width, k + 1, cfg.acc.width - k), cfg.scalar.width


def multiplier_port(cfg):
    """A unit's side of the shared multipliers: in a cycle with ``en`` high the lanes'
    operands ``a`` and the scalar ``b`` are sampled; their products are ``p`` two cycles
    later (:attr:`PipelinedMultiplier.LATENCY`)."""
    a_width, b_width = shared_widths(cfg)
    return wiring.Signature({
        "en": Out(1),
        "a": Out(data.ArrayLayout(signed(a_width), cfg.n)),
        "b": Out(signed(b_width)),
        "p": In(data.ArrayLayout(signed(a_width + b_width), cfg.n)),
    })


class SharedMultipliers(wiring.Component):
    """One :class:`PipelinedMultiplier` per lane, shared by units that never multiply in
    the same cycle.

    Parameters
    ----------
    cfg : TPUConfig
    users : sequence of str
        The units' port names, in falling priority.
    family : str or None
        As for :class:`PipelinedMultiplier` (on ECP5 a ``MULT18X18D`` per lane).

    Members
    -------
    <user> : In(:func:`multiplier_port`)
        One port per user. The multipliers take the operands of the first user whose
        ``en`` is high (else of the last); every user sees the products.

    Timing
    ------
    ::

        cycle      t                 t+1          t+2
        <user>     en, a, b
        p                                         a * b (to every user)
    """

    def __init__(self, cfg, users=("vector", "gd"), *, family=None):
        self._cfg = cfg
        self._users = tuple(users)
        self._family = family
        super().__init__({name: In(multiplier_port(cfg)) for name in self._users})

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        a_width, b_width = shared_widths(cfg)
        ports = [getattr(self, name) for name in self._users]
        b = ports[-1].b
        for port in reversed(ports[:-1]):
            b = Mux(port.en, port.b, b)
        for lane in range(cfg.n):
            mult = PipelinedMultiplier(a_width, b_width, family=self._family)
            m.submodules[f"mult_{lane}"] = mult
            a = ports[-1].a[lane]
            for port in reversed(ports[:-1]):
                a = Mux(port.en, port.a[lane], a)
            m.d.comb += [mult.a.eq(a), mult.b.eq(b)]
            m.d.comb += [port.p[lane].eq(mult.p) for port in ports]
        return m
