"""Gradient-descent unit: ``theta <- theta - lr * grad`` in place in the unified buffer."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..numeric import (
    FixedFormat, hdl_saturate, hdl_stochastic_round, hdl_xorshift32, xorshift_seed,
)
from .memory import AccumulatorMemory, UnifiedBuffer, addr_width, read_request, write_request
from .multiplier import PipelinedMultiplier, gradient_split, multiplier_port
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
    generator, advanced once per stochastically rounded row; a pulse of ``reseed``
    restarts them from ``seed`` (which must hold its value in the pulse's cycle and the
    next) in the cycle after the pulse. ``overflow`` pulses for a row in which
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
    A command accepted in cycle ``c`` reads gradient row ``i`` in cycle ``c+1+i*I``,
    parameter row ``i`` in cycle ``c+P+i*I``, and writes the parameter row back in
    cycle ``c+L+i*I``. ``busy`` is low from cycle ``c+(rows-1)*I+1+L`` on. ``L`` is
    :meth:`latency` (8, or 10 with ``cfg.isolated_multipliers``; one more with shared
    multipliers), ``P`` is :meth:`param_delay` (``L - 3``, or ``L - 4`` with
    ``cfg.registered_requests``, whose parameter rows are registered twice on their way
    from the block RAM), ``I`` is :meth:`row_interval` (1, or 2 with shared multipliers:
    ``cfg.unit_multipliers == "shared"``, one multiplier per lane through port ``mul``,
    which takes the gradient's low part as the row arrives and its high part, registered,
    a cycle later).
    Stages: the memories' outputs registered, the partial products (the gradient's
    low and high halves times the rate, one multiplier block each), their sum, the
    rounding offset added and the fraction dropped, the saturation to the data format,
    the subtraction with saturation (no stage holds more than one multiply or one
    carry chain and its saturation). With isolated multipliers the gradient row is
    registered once more before the multipliers (whose input registers copy it) and the
    partial products once more after them, so that only routing lies between a
    multiplier block and the block RAM or logic around it.
    """

    @staticmethod
    def latency(cfg):
        """Cycles from a command's acceptance to its first row's write."""
        return (8 + (2 if cfg.isolated_multipliers else 0)
                + (1 if cfg.unit_multipliers == "shared" else 0))

    @staticmethod
    def row_interval(cfg):
        """Cycles between a pass's rows: 1, or 2 with shared multipliers (the gradient's
        two partial products take the lane's multiplier in turn)."""
        return 2 if cfg.unit_multipliers == "shared" else 1

    @staticmethod
    def spread(cfg, rows):
        """Cycles the gaps between a pass's rows add to each of its timings after the
        first row: ``(rows - 1) * (interval - 1)``."""
        return max(rows - 1, 0) * (GradientDescentUnit.row_interval(cfg) - 1)

    @staticmethod
    def param_delay(cfg):
        """Cycles from a command's acceptance to its first parameter row's read (``P``)."""
        return GradientDescentUnit.latency(cfg) - (4 if cfg.registered_requests else 3)

    @staticmethod
    def idle_after(cfg, rows):
        """Cycles from a command's acceptance to the first in which ``busy`` is low."""
        return rows + GradientDescentUnit.latency(cfg) + GradientDescentUnit.spread(cfg, rows)

    def __init__(self, cfg, *, multiplier_width=18, family=None, pipelined_multipliers=None):
        self._cfg = cfg
        self._multiplier_width = multiplier_width
        self._family = family
        # The gradient's split for 18x18 blocks: its low k bits (unsigned) and the rest.
        self._k = k = gradient_split(cfg)
        # Multipliers in logic or shared: the pipelined form, split as for 18x18 blocks.
        self._logic = cfg.unit_multipliers == "logic"
        self._shared = cfg.unit_multipliers == "shared"
        if self._logic or self._shared:
            multiplier_width = self._multiplier_width = 18
            pipelined_multipliers = True
        if pipelined_multipliers is None:
            pipelined_multipliers = self._logic or multiplier_width >= 18 and all(
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
            # (With ``cfg.overlap_units``: gradient rows are still to be read; parameter
            # rows are still to be read in a later cycle.)
            **({"reading": Out(1), "param_pending": Out(1)} if cfg.overlap_units else {}),
            # (With ``cfg.registered_requests``: ``ub_wr.en`` will be high next cycle.)
            **({"writes_next": Out(1)} if cfg.registered_requests else {}),
            # (With shared multipliers: their port.)
            **({"mul": Out(multiplier_port(cfg))} if self._shared else {}),
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
        # ``active`` (``remaining != 0``) and ``busy`` are registers (see VectorUnit).
        active = Signal()
        busy = Signal()
        # ``read``: a row is read now (with shared multipliers every other cycle while
        # ``active``: ``gap`` is high in the cycle after a read).
        if self._shared:
            gap = Signal()
            read = active & ~gap
            m.d.sync += gap.eq(read & ~self.cmd.valid)
            next_active = Mux(self.cmd.valid, self.cmd.payload.rows != 0,
                              Mux(gap, remaining != 0, remaining >= 2))
        else:
            read = active
            next_active = Mux(self.cmd.valid, self.cmd.payload.rows != 0, remaining >= 2)
        m.d.sync += active.eq(next_active)
        if cfg.overlap_units:
            m.d.comb += self.reading.eq(active)
        with m.If(read):
            m.d.comb += [self.acc_rd.addr.eq(src), self.acc_rd.en.eq(1)]
            m.d.sync += [remaining.eq(remaining - 1), src.eq(src + 1)]
        with m.If(self.cmd.valid):
            m.d.sync += [remaining.eq(self.cmd.payload.rows), src.eq(self.cmd.payload.src),
                         param_rd.eq(self.cmd.payload.param), param_wr.eq(self.cmd.payload.param),
                         stochastic.eq(self.cmd.payload.stochastic)]

        # valid[j]: a row is in stage j (valid[0]: the memory's output).
        isolated = cfg.isolated_multipliers
        # (Shared multipliers: the partial products a cycle apart, their sum a stage
        # later.)
        extra = (2 if isolated else 0) + (1 if self._shared else 0)
        valid = [Signal(name=f"valid_{i}") for i in range(7 + extra)]
        m.d.sync += valid[0].eq(read)
        m.d.sync += [valid[i].eq(valid[i - 1]) for i in range(1, len(valid))]
        # Named by what the row is in: the products' sum, rounding, saturation, subtraction.
        v_sum, v_round, v_sat, v_write = (valid[3 + extra], valid[4 + extra],
                                          valid[5 + extra], valid[6 + extra])

        # Stage 1 (row i in cycle c+3+i): the accumulator memory's output, registered (in
        # the multipliers' input registers on ECP5, see below). With isolated multipliers,
        # registered in the fabric first, the multipliers' input registers a stage later.
        acc_row = self.acc_rd.data
        if isolated:
            acc_row = AccumulatorMemory.registered_row(m, cfg, self.acc_rd.data, "grad_in")
        # The parameter row is read four cycles after the gradient row (six with isolated
        # multipliers) and registered, so that it arrives in the subtraction stage instead
        # of being carried to it. With ``cfg.registered_requests`` it is read a cycle
        # earlier and registered twice (where it leaves the block RAM, then beside the
        # lanes).
        read_stage = 3 + extra - (1 if cfg.registered_requests else 0)
        v_param = valid[read_stage]
        with m.If(v_param):
            m.d.comb += [self.ub_rd.addr.eq(param_rd), self.ub_rd.en.eq(1)]
            m.d.sync += param_rd.eq(param_rd + 1)
        if cfg.overlap_units:
            # Whether a parameter row will be read after this cycle (a row left to read or
            # in a stage before the read's), registered like the vector unit's.
            assert read_stage + 2 == self.param_delay(cfg)  # valid[j]: row 0 in cycle c+2+j
            pending = Signal()
            m.d.sync += pending.eq(next_active | active | Cat(valid[:read_stage - 1]).any())
            m.d.comb += self.param_pending.eq(pending)
        theta_valid = Signal()
        theta = Signal(data.ArrayLayout(fmt.shape, n))
        if cfg.registered_requests:
            theta_row = UnifiedBuffer.registered_row(m, cfg, self.ub_rd.data, "theta_row")
            theta_arrived = Signal()
            m.d.sync += [theta_arrived.eq(v_param), theta_valid.eq(theta_arrived)]
            with m.If(theta_valid):
                m.d.sync += theta.eq(theta_row)
        else:
            m.d.sync += theta_valid.eq(v_param)
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
        # the extra register into the blocks' input registers). With isolated multipliers
        # the partial products are registered once more before they are added
        # (:meth:`_isolated`), and the gradient once more before them (above).
        prods = [Signal(prod_fmt.shape, name=f"prod_{lane}", reset_less=True)
                 for lane in range(n)]
        k = self._k
        low_width, high_width = k + 1, cfg.acc.width - k
        if not self._pipelined:
            grad = Signal(data.ArrayLayout(cfg.acc.shape, n))
            m.d.sync += grad.eq(acc_row)
        if self._shared:
            # The low part takes the lane's multiplier as the row arrives (``first``), the
            # high part, registered, in the next cycle; the low product waits a cycle (and
            # with isolated multipliers both once more) for the high one.
            first = valid[1 if isolated else 0]
            second = valid[2 if isolated else 1]
            m.d.comb += [self.mul.en.eq(first | second), self.mul.b.eq(self.lr)]
        for lane in range(n):
            if self._shared:
                high_op = Signal(signed(high_width), name=f"grad_high_{lane}",
                                 reset_less=True)
                m.d.sync += high_op.eq(acc_row[lane][k:].as_signed())
                m.d.comb += self.mul.a[lane].eq(
                    Mux(second, high_op, acc_row[lane][:k].as_unsigned()))
                low_q = Signal(signed(low_width + cfg.scalar.width), name=f"prod_low_{lane}",
                               reset_less=True)
                m.d.sync += low_q.eq(self.mul.p[lane])
                low_p, high_p = self._isolated(m, low_q, self.mul.p[lane], lane)
                m.d.sync += prods[lane].eq((high_p << k) + low_p)
            elif self._pipelined:
                low = PipelinedMultiplier(low_width, cfg.scalar.width, family=self._family,
                                          logic=self._logic)
                high = PipelinedMultiplier(high_width, cfg.scalar.width, family=self._family,
                                           logic=self._logic)
                m.submodules[f"mult_low_{lane}"] = low
                m.submodules[f"mult_high_{lane}"] = high
                m.d.comb += [low.a.eq(acc_row[lane][:k].as_unsigned()), low.b.eq(self.lr),
                             high.a.eq(acc_row[lane][k:].as_signed()), high.b.eq(self.lr)]
                low_p, high_p = self._isolated(m, low.p, high.p, lane)
                m.d.sync += prods[lane].eq((high_p << k) + low_p)
            elif self._multiplier_width >= 18:
                low = Signal(signed(low_width + cfg.scalar.width), name=f"prod_low_{lane}",
                             reset_less=True)
                high = Signal(signed(high_width + cfg.scalar.width), name=f"prod_high_{lane}",
                              reset_less=True)
                m.d.sync += [low.eq(grad[lane][:k].as_unsigned() * self.lr),
                             high.eq(grad[lane][k:].as_signed() * self.lr)]
                low_p, high_p = self._isolated(m, low, high, lane)
                m.d.sync += prods[lane].eq((high_p << k) + low_p)
            else:
                operand = Signal(cfg.acc.shape, name=f"grad_operand_{lane}", reset_less=True)
                m.d.sync += operand.eq(grad[lane])
                if isolated:
                    product = Signal(prod_fmt.shape, name=f"grad_product_{lane}",
                                     reset_less=True)
                    m.d.sync += [product.eq(operand * self.lr), prods[lane].eq(product)]
                else:
                    m.d.sync += prods[lane].eq(operand * self.lr)

        # Stage 4: the rounding offset (half an output step, or random bits) added and the
        # fraction dropped; stage 5: saturated to the data format.
        shift = prod_fmt.frac - fmt.frac
        states = [Signal(32, name=f"rng_{lane}", init=xorshift_seed(0, lane)) for lane in range(n)]
        rounded = [Signal(signed(prod_fmt.width - shift + 1), name=f"rounded_{lane}")
                   for lane in range(n)]
        updates = Signal(data.ArrayLayout(fmt.shape, n))
        update_ovf = Signal()
        ovf = Const(0, 1)
        # A reseed takes effect a cycle after the ``reseed`` pulse (the unit is idle then:
        # the host writes the seed only while no program runs), from registered per-lane
        # checks of whether the seed would give a generator the all-zero state.
        reseed = Signal()
        m.d.sync += reseed.eq(self.reseed)
        for lane in range(n):
            offset = Mux(stochastic, states[lane], 1 << (shift - 1))
            m.d.sync += rounded[lane].eq(hdl_stochastic_round(prods[lane], prod_fmt, fmt, offset))
            update, o_update = hdl_saturate(rounded[lane], fmt)
            m.d.sync += updates[lane].eq(update)
            ovf = ovf | o_update
            seeded = self.seed ^ Const((lane + 1) * 0x9E3779B9 & 0xFFFFFFFF, 32)
            degenerate = Signal(name=f"seed_degenerate_{lane}")
            m.d.sync += degenerate.eq(seeded == 0)
            with m.If(reseed):
                m.d.sync += states[lane].eq(Mux(degenerate, 0x6D2B79F5, seeded))
            with m.Elif(v_sum & stochastic):
                m.d.sync += states[lane].eq(hdl_xorshift32(states[lane]))
        m.d.sync += update_ovf.eq(ovf & v_round)

        # Stage 6: subtract and saturate.
        new = Signal(data.ArrayLayout(fmt.shape, n))
        new_ovf = Signal()
        ovf = Const(0, 1)
        for lane in range(n):
            value, o_value = hdl_saturate(theta[lane] - updates[lane], fmt)
            m.d.sync += new[lane].eq(value)
            ovf = ovf | o_value
        m.d.sync += new_ovf.eq((ovf & v_sat) | update_ovf)

        m.d.comb += [self.ub_wr.addr.eq(param_wr), self.ub_wr.data.eq(new)]
        with m.If(v_write):
            m.d.comb += [self.ub_wr.en.eq(1), self.overflow.eq(new_ovf)]
            m.d.sync += param_wr.eq(param_wr + 1)
        m.d.sync += busy.eq(next_active | active | Cat(valid[:-1]).any())
        m.d.comb += self.busy.eq(busy)
        if cfg.registered_requests:
            m.d.comb += self.writes_next.eq(v_sat)
        return m

    def _isolated(self, m, low, high, lane):
        """The partial products, registered once more in the fabric with isolated
        multipliers (as they are otherwise)."""
        if not self._cfg.isolated_multipliers:
            return low, high
        low_q = Signal.like(low, name=f"prod_low_q_{lane}", reset_less=True)
        high_q = Signal.like(high, name=f"prod_high_q_{lane}", reset_less=True)
        m.d.sync += [low_q.eq(low), high_q.eq(high)]
        return low_q, high_q
