"""Gradient-descent unit: ``theta <- theta - lr * grad`` in place in the unified buffer."""

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..numeric import (
    FixedFormat, hdl_saturate, hdl_stochastic_round, hdl_xorshift32, xorshift_seed,
)
from .memory import addr_width, read_request, write_request
from .multiplier import PipelinedMultiplier
from .signatures import valid_stream

__all__ = ["GradientDescentUnit", "GradientCommandLayout"]


class GradientCommandLayout(data.StructLayout):
    def __init__(self, cfg):
        super().__init__({"src": addr_width(cfg.acc_depth), "param": addr_width(cfg.ub_depth),
                          "rows": 16, "stochastic": 1})


class GradientDescentUnit(wiring.Component):
    """For ``i < rows``: ``ub[param + i] = sat(ub[param + i] - narrow(lr * acc[src + i]))``.

    The gradient is taken at full accumulator precision: the product of the
    learning rate (scalar format) and the gradient (accumulator format) is
    exact, and only the update is rounded to the data format, with the rules
    of :mod:`tinytpu_hdl.numeric`: to nearest, or stochastically when the
    command's ``stochastic`` bit is set. Each lane has its own xorshift32
    generator, advanced once per stochastically rounded row; writing ``seed``
    (pulse ``reseed``) restarts them. ``overflow`` pulses for a row in which
    the update or the new parameter saturated.

    Parameters
    ----------
    cfg : TPUConfig
    multiplier_width : int
        Operand width of the FPGA's multiplier blocks: 18 splits the product into two
        partial products, less multiplies it whole.
    family : str or None
        FPGA family (see :class:`.PipelinedMultiplier`).
    pipelined_multipliers : bool or None
        Make the partial products with pipelined multipliers fed with the accumulator
        row (default: where they are multiplier blocks, ECP5); needs
        ``multiplier_width >= 18``. Same results and timing.

    Timing
    ------
    A command accepted in cycle ``c`` reads gradient row ``i`` in cycle ``c+1+i``,
    parameter row ``i`` in cycle ``c+5+i``, and writes the parameter row back in
    cycle ``c+8+i``. ``busy`` is low from cycle ``c+rows+8`` on. Stages: the
    memories' outputs registered, the partial products (the gradient's low and high
    halves times the rate, one multiplier block each), their sum, the rounding
    offset added and the fraction dropped, the saturation to the data format, the
    subtraction with saturation (no stage holds more than one multiply or one carry
    chain and its saturation).
    """

    def __init__(self, cfg, *, multiplier_width=18, family=None, pipelined_multipliers=None):
        self._cfg = cfg
        self._multiplier_width = multiplier_width
        self._family = family
        # The gradient's split for 18x18 blocks: its low k bits (unsigned) and the rest.
        self._k = k = min(17, cfg.acc.width - 1)
        if pipelined_multipliers is None:
            pipelined_multipliers = multiplier_width >= 18 and all(
                PipelinedMultiplier.block_fits(family, width, cfg.scalar.width)
                for width in (k + 1, cfg.acc.width - k))
        if pipelined_multipliers and multiplier_width < 18:
            raise ValueError("pipelined multipliers need 18x18 multiplier blocks")
        self._pipelined = bool(pipelined_multipliers)
        super().__init__({
            "cmd": In(valid_stream(GradientCommandLayout(cfg))),
            "acc_rd": Out(read_request(cfg.acc_depth, data.ArrayLayout(cfg.acc.shape, cfg.n))),
            "ub_rd": Out(read_request(cfg.ub_depth, data.ArrayLayout(cfg.data.shape, cfg.n))),
            "ub_wr": Out(write_request(cfg.ub_depth, data.ArrayLayout(cfg.data.shape, cfg.n))),
            "lr": In(cfg.scalar.shape),
            "seed": In(32), "reseed": In(1),
            "busy": Out(1),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        n, fmt = cfg.n, cfg.data
        prod_fmt = FixedFormat(min(62, cfg.acc.width + cfg.scalar.width),
                               cfg.acc.frac + cfg.scalar.frac)

        remaining = Signal(16)
        src = Signal.like(self.cmd.payload.src)
        param_rd = Signal.like(self.cmd.payload.param)
        param_wr = Signal.like(self.cmd.payload.param)
        stochastic = Signal()
        active = remaining != 0
        with m.If(active):
            m.d.comb += [self.acc_rd.addr.eq(src), self.acc_rd.en.eq(1)]
            m.d.sync += [remaining.eq(remaining - 1), src.eq(src + 1)]
        with m.If(self.cmd.valid):
            m.d.sync += [remaining.eq(self.cmd.payload.rows), src.eq(self.cmd.payload.src),
                         param_rd.eq(self.cmd.payload.param), param_wr.eq(self.cmd.payload.param),
                         stochastic.eq(self.cmd.payload.stochastic)]

        v0, v1, v2, v3, v4, v5, v6 = (Signal(name=f"valid_{i}") for i in range(7))
        m.d.sync += [v0.eq(active), v1.eq(v0), v2.eq(v1), v3.eq(v2), v4.eq(v3), v5.eq(v4),
                     v6.eq(v5)]

        # Stage 1 (row i in cycle c+3+i): the accumulator memory's output, registered (in
        # the multipliers' input registers on ECP5, see below).
        acc_row = self.acc_rd.data
        # The parameter row is read four cycles after the gradient row and registered, so
        # that it arrives in the subtraction stage instead of being carried to it.
        with m.If(v3):
            m.d.comb += [self.ub_rd.addr.eq(param_rd), self.ub_rd.en.eq(1)]
            m.d.sync += param_rd.eq(param_rd + 1)
        theta_valid = Signal()
        theta = Signal(data.ArrayLayout(fmt.shape, n))
        m.d.sync += theta_valid.eq(v3)
        with m.If(theta_valid):
            m.d.sync += theta.eq(self.ub_rd.data)

        # Stages 2 and 3: the exact product lr * grad. With 18x18 multiplier blocks (ECP5 and
        # the default) as lr * (high * 2^k + low), the gradient's low k = 17 bits unsigned,
        # so that each partial product fits one block; the partial products are registered
        # (without a reset), then added. Where the blocks have registers of their own
        # (ECP5) they are pipelined multipliers fed with the accumulator row, their input
        # registers standing for stage 1, their output registers for stage 2. With 16x16
        # blocks (iCE40), where the split would take a third block, the gradient is
        # registered once more and multiplied whole (synthesis splits it itself and can put
        # the extra register into the blocks' input registers).
        prods = [Signal(prod_fmt.shape, name=f"prod_{lane}", reset_less=True)
                 for lane in range(n)]
        k = self._k
        low_width, high_width = k + 1, cfg.acc.width - k
        if not self._pipelined:
            grad = Signal(data.ArrayLayout(cfg.acc.shape, n))
            m.d.sync += grad.eq(acc_row)
        for lane in range(n):
            if self._pipelined:
                low = PipelinedMultiplier(low_width, cfg.scalar.width, family=self._family)
                high = PipelinedMultiplier(high_width, cfg.scalar.width, family=self._family)
                m.submodules[f"mult_low_{lane}"] = low
                m.submodules[f"mult_high_{lane}"] = high
                m.d.comb += [low.a.eq(acc_row[lane][:k].as_unsigned()), low.b.eq(self.lr),
                             high.a.eq(acc_row[lane][k:].as_signed()), high.b.eq(self.lr)]
                m.d.sync += prods[lane].eq((high.p << k) + low.p)
            elif self._multiplier_width >= 18:
                low = Signal(signed(low_width + cfg.scalar.width), name=f"prod_low_{lane}",
                             reset_less=True)
                high = Signal(signed(high_width + cfg.scalar.width), name=f"prod_high_{lane}",
                              reset_less=True)
                m.d.sync += [low.eq(grad[lane][:k].as_unsigned() * self.lr),
                             high.eq(grad[lane][k:].as_signed() * self.lr),
                             prods[lane].eq((high << k) + low)]
            else:
                operand = Signal(cfg.acc.shape, name=f"grad_operand_{lane}", reset_less=True)
                m.d.sync += [operand.eq(grad[lane]), prods[lane].eq(operand * self.lr)]

        # Stage 4: the rounding offset (half an output step, or random bits) added and the
        # fraction dropped; stage 5: saturated to the data format.
        shift = prod_fmt.frac - fmt.frac
        states = [Signal(32, name=f"rng_{lane}", init=xorshift_seed(0, lane)) for lane in range(n)]
        rounded = [Signal(signed(prod_fmt.width - shift + 1), name=f"rounded_{lane}")
                   for lane in range(n)]
        updates = Signal(data.ArrayLayout(fmt.shape, n))
        update_ovf = Signal()
        ovf = Const(0, 1)
        for lane in range(n):
            offset = Mux(stochastic, states[lane], 1 << (shift - 1))
            m.d.sync += rounded[lane].eq(hdl_stochastic_round(prods[lane], prod_fmt, fmt, offset))
            update, o_update = hdl_saturate(rounded[lane], fmt)
            m.d.sync += updates[lane].eq(update)
            ovf = ovf | o_update
            with m.If(self.reseed):
                seeded = self.seed ^ Const((lane + 1) * 0x9E3779B9 & 0xFFFFFFFF, 32)
                m.d.sync += states[lane].eq(Mux(seeded == 0, 0x6D2B79F5, seeded))
            with m.Elif(v3 & stochastic):
                m.d.sync += states[lane].eq(hdl_xorshift32(states[lane]))
        m.d.sync += update_ovf.eq(ovf & v4)

        # Stage 6: subtract and saturate.
        new = Signal(data.ArrayLayout(fmt.shape, n))
        new_ovf = Signal()
        ovf = Const(0, 1)
        for lane in range(n):
            value, o_value = hdl_saturate(theta[lane] - updates[lane], fmt)
            m.d.sync += new[lane].eq(value)
            ovf = ovf | o_value
        m.d.sync += new_ovf.eq((ovf & v5) | update_ovf)

        m.d.comb += [self.ub_wr.addr.eq(param_wr), self.ub_wr.data.eq(new)]
        with m.If(v6):
            m.d.comb += [self.ub_wr.en.eq(1), self.overflow.eq(new_ovf)]
            m.d.sync += param_wr.eq(param_wr + 1)
        m.d.comb += self.busy.eq(active | v0 | v1 | v2 | v3 | v4 | v5 | v6)
        return m
