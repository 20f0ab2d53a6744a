"""Vector unit: the per-column element-wise stages between the accumulators and the buffer."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa import Pathway
from ..numeric import FixedFormat, hdl_add_sat, hdl_narrow
from .memory import AccumulatorMemory, UnifiedBuffer, addr_width, read_request, write_request
from .multiplier import PipelinedMultiplier, multiplier_port
from .signatures import valid_stream

__all__ = ["VectorUnit", "VectorCommandLayout"]


class VectorCommandLayout(data.StructLayout):
    def __init__(self, cfg):
        ub = addr_width(cfg.ub_depth)
        super().__init__({
            "src": addr_width(cfg.acc_depth), "dst": ub, "aux": ub, "bias": ub,
            "rows": 16, "stride": 8, "pathway": 4, "transpose": 1,
        })


class VectorUnit(wiring.Component):
    """``n`` lanes of a pipeline of element-wise stages, each enabled by a pathway bit or
    bypassed as plain registers.

    For accumulator row ``src + i`` (``i < rows``) it writes unified-buffer row
    ``dst + i * stride``::

        x = narrow(acc)                                   # always: accumulator -> data format
        x = x + bias                       if BIAS        # bias: one buffer row, read once
        h = x if x >= 0 else leak * x      if ACT         # Leaky ReLU (leak 0: ReLU)
        v = loss_scale * (h - y)           if LOSS        # y = buffer row aux + i * stride
        v = v if r > 0 else leak * v       if DERIV       # r = h if LOSS, else the aux row
        out = v

    With ``transpose`` (:data:`~tinytpu_hdl.isa.FLAG_TRANSPOSE_OUT`; no aux row) the output
    rows are cut into ``T = ceil(rows / n)`` tiles of ``n`` rows, the last padded with zero
    rows, and each tile is written transposed: lane ``j`` of buffer row ``dst + t + k *
    stride`` is lane ``k`` of output row ``t * n + j`` (``k``, ``j`` < ``n``). That is the
    layout in which the rows of a matrix's transpose stream through the array (the
    transposed-chunk layout of :mod:`tinytpu_hdl.compiler.layout` with ``stride`` = chunks).

    Every operation rounds and saturates with the rules of :mod:`tinytpu_hdl.numeric`;
    ``overflow`` pulses for a row in which any of them saturated. ``leak`` and
    ``loss_scale`` are in the scalar format.

    Parameters
    ----------
    cfg : TPUConfig
    family : str or None
        FPGA family (see :class:`.PipelinedMultiplier`).
    pipelined_multipliers : bool or None
        Multiply through pipelined multipliers fed with what the stage before each
        product stage loads (default: where they are multiplier blocks, ECP5), instead
        of multiplying the stage registers. Same results and timing.

    Timing
    ------
    A command accepted in cycle ``c`` reads the bias row in cycle ``c+1``, accumulator
    row ``i`` in cycle ``c+1+i*P``, aux row ``i`` in cycle ``c+A+i*P``, and writes output
    row ``i`` in cycle ``c+L+i*P``; ``busy`` is low from cycle ``c+(rows-1)*P+1+L`` on.
    ``L`` is :meth:`latency` (12, or 18 with ``cfg.isolated_multipliers``; 2 or 1 more
    with shared multipliers), ``A`` is :meth:`aux_delay` (5, or 7; one less with
    ``cfg.registered_requests``, whose bias and aux rows are registered twice on their way
    from the block RAM). ``P`` is :meth:`row_interval`: 1, but with shared multipliers
    (``cfg.unit_multipliers == "shared"``, one multiplier per lane, port ``mul``) the
    rows are spaced so that the multiplies the pathway uses take the lane's multiplier
    in turn, each in its product stage's cycle::

        multiplies the pathway uses     P (isolated_multipliers off / on)
        none or one                     1 / 1
        act and loss                    2 / 2
        act and derivative              2 / 3
        loss and derivative             3 / 2
        all three                       3 / 3

    Transposed, the rows leave the last stage as before into an ``n`` x ``n`` register
    transposer, which shifts once per cycle from the first row's cycle ``c+L`` for ``(T +
    1) * n`` cycles (zero rows after the last): rows enter along one edge and the previous
    tile's columns leave along the opposite edge, the direction turning after each tile,
    so that a tile is written while the next one fills::

        cycle         c+L ... c+L+n-1   c+L+n ... c+L+2n-1   ...   c+L+T*n ... c+L+(T+1)*n-1
        rows in       tile 0            tile 1                      (zeros)
        rows written                    tile 0, k = 0..n-1          tile T-1, k = 0..n-1

    ``busy`` is low from cycle ``c+L+(T+1)*n`` on (:meth:`idle_after`). With one lane
    there is no transposer: tile ``t`` is output row ``t``, written as without
    ``transpose`` (to ``dst + t``, in cycle ``c+L+t``).
    With chained passes (``cfg.chains_passes``) a command may also be accepted while the
    pass before it is in the stages, from the cycle ``chain_ready`` rises
    (:meth:`chain_after`: the cycle of that pass's last accumulator read, ``c+rows``, a
    cycle later without ``cfg.registered_requests``; ``c+(T+1)*n`` after a transposed
    pass). The new pass's rows follow the old one's, each row carrying its pathway and
    addresses, and every timing above holds for each pass from its own acceptance; the
    control unit accepts no transposed pass behind another, and keeps a pass that reads
    rows a pass in flight writes, or a bias row while aux rows are read, until it may::

        cycle     c_A+1 ... c_A+rows   c_B+1 ...            c_A+L ... c_A+L+rows-1   c_B+L ...
        acc read  pass A rows          pass B rows  (c_B = c_A + rows, the earliest)
        write                                               pass A rows              pass B rows

    The rows go through :meth:`stages` registers: the memories' outputs, narrowing,
    bias, and for each of the three multiplies a product stage and a
    rounding/saturating stage (the loss also has a difference stage), so that no
    stage holds more than one multiply or one carry chain and saturation. With
    isolated multipliers each multiply also has a stage before its product (the
    operand, which the multiplier block's input register copies from a fabric
    register) and one after it (the product copied into the fabric), so that only
    routing lies between a multiplier block and the logic around it::

        stage      ... bias   act_mul_in   act_mul   act_mul_out   act ...
        operand        x ──────► (block input register)
        product                              p ─────► p
        logic                                                      round, saturate
    """

    @staticmethod
    def _pads(cfg):
        """Stages added with shared multipliers, after the act stage and after the loss
        stage, so that the three product stages lie apart as :meth:`row_interval` needs."""
        if cfg.unit_multipliers != "shared":
            return 0, 0
        return (0, 1) if cfg.isolated_multipliers else (2, 0)

    @staticmethod
    def product_stages(cfg):
        """The stages (counted as in :meth:`stages`, 0 = the accumulator row's arrival)
        that hold the products of the act, loss and derivative multiplies."""
        after_act, after_loss = VectorUnit._pads(cfg)
        if cfg.isolated_multipliers:
            act = 5
            loss = act + 5 + after_act
            return act, loss, loss + 4 + after_loss
        act = 4
        loss = act + 3 + after_act
        return act, loss, loss + 2 + after_loss

    @staticmethod
    def row_interval(cfg, pathway):
        """Cycles between a pass's rows (``P``): 1, but with shared multipliers the
        smallest ``P`` no less than the number of multiplies the pathway uses for which
        their product stages differ modulo ``P`` (no two meet in a cycle): 1 for one
        multiply or none, 2 or 3 for two, 3 for all three."""
        if cfg.unit_multipliers != "shared":
            return 1
        used = [stage for stage, bit in zip(VectorUnit.product_stages(cfg),
                                            (Pathway.ACT, Pathway.LOSS, Pathway.DERIV))
                if int(pathway) & bit]
        interval = max(1, len(used))
        while len({stage % interval for stage in used}) < len(used):
            interval += 1
        return interval

    @staticmethod
    def spread(cfg, rows, pathway):
        """Cycles the gaps between a pass's rows add to each of its timings after the
        first row: ``(rows - 1) * (P - 1)``."""
        return max(rows - 1, 0) * (VectorUnit.row_interval(cfg, pathway) - 1)

    @staticmethod
    def stages(cfg):
        """Pipeline registers between the memories' outputs and the buffer write."""
        return 11 + (6 if cfg.isolated_multipliers else 0) + sum(VectorUnit._pads(cfg))

    @staticmethod
    def latency(cfg):
        """Cycles from a command's acceptance to its first row's write."""
        return VectorUnit.stages(cfg) + 1

    @staticmethod
    def aux_delay(cfg):
        """Cycles from a command's acceptance to its first aux row's read (``A``)."""
        return (7 if cfg.isolated_multipliers else 5) - (1 if cfg.registered_requests else 0)

    @staticmethod
    def chain_after(cfg, rows, transpose=False):
        """With ``cfg.chains_passes``: cycles from a command's acceptance to the first in
        which ``chain_ready`` is high, so that the next (not transposed) command may be
        accepted while its rows are in the stages: the cycle of its last accumulator read
        (the next pass's bias row then reaches the bias register after this pass's last
        row has left the bias stage), a cycle later without ``cfg.registered_requests``;
        after a transposed command (``n > 1``) ``(T + 1) * n`` cycles, so that the next
        pass's first row reaches the last stage in the cycle after the transposer's last
        shift (``T = ceil(rows / n)`` tiles)."""
        if transpose and cfg.n > 1:
            return (-(-rows // cfg.n) + 1) * cfg.n
        return rows + (0 if cfg.registered_requests else 1)

    @staticmethod
    def idle_after(cfg, rows, transpose=False, pathway=0):
        """Cycles from a command's acceptance to the first in which ``busy`` is low."""
        if transpose and cfg.n > 1:
            # (No aux row: at most one multiply, so a row every cycle.)
            return VectorUnit.latency(cfg) + (-(-rows // cfg.n) + 1) * cfg.n
        return rows + VectorUnit.latency(cfg) + VectorUnit.spread(cfg, rows, pathway)

    def __init__(self, cfg, *, family=None, pipelined_multipliers=None):
        self._cfg = cfg
        self._family = family
        self._logic = cfg.unit_multipliers == "logic"
        self._shared = cfg.unit_multipliers == "shared"
        if self._shared:
            pipelined_multipliers = True
        elif pipelined_multipliers is None:
            pipelined_multipliers = self._logic or PipelinedMultiplier.block_fits(
                family, cfg.data.width, cfg.scalar.width)
        self._pipelined = bool(pipelined_multipliers)
        row = data.ArrayLayout(cfg.data.shape, cfg.n)
        super().__init__({
            "cmd": In(valid_stream(VectorCommandLayout(cfg))),
            "acc_rd": Out(read_request(cfg.acc_depth, data.ArrayLayout(cfg.acc.shape, cfg.n))),
            "ub_aux": Out(read_request(cfg.ub_depth, row)),
            "ub_bias": Out(read_request(cfg.ub_depth, row)),
            "ub_wr": Out(write_request(cfg.ub_depth, row)),
            "leak": In(cfg.scalar.shape),
            "loss_scale": In(cfg.scalar.shape),
            "busy": Out(1),
            "overflow": Out(1),
            # (With ``cfg.overlap_units``: accumulator rows are still to be read; aux rows
            # are still to be read in a later cycle.)
            **({"reading": Out(1), "aux_pending": Out(1)} if cfg.overlap_units else {}),
            # (With ``cfg.chains_passes``: a command accepted now would follow the pass in
            # flight, see :meth:`chain_after`.)
            **({"chain_ready": Out(1)} if cfg.chains_passes else {}),
            # (With ``cfg.registered_requests``: ``ub_wr.en`` will be high next cycle, from
            # registers.)
            **({"writes_next": Out(1)} if cfg.registered_requests else {}),
            # (With shared multipliers: their port.)
            **({"mul": Out(multiplier_port(cfg))} if self._shared else {}),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        n, fmt = cfg.n, cfg.data
        row = data.ArrayLayout(fmt.shape, n)

        remaining = Signal(16)
        src = Signal.like(self.cmd.payload.src)
        aux = Signal.like(self.cmd.payload.aux)
        dst = Signal.like(self.cmd.payload.dst)
        stride = Signal(8)
        pathway = Signal(4)
        transpose = Signal()
        first = Signal()
        bias_addr = Signal.like(self.cmd.payload.bias)
        bias = Signal(row)

        use_bias = pathway[Pathway.BIAS.bit_length() - 1]
        # With chained passes (``cfg.chains_passes``) a command may be accepted while the
        # rows of the one before are in the stages: each row then carries its pathway
        # (``pw``), its output row's address (``wa``, from ``wptr``) and, up to the stage
        # that reads it, its aux row's address (``aa``, from ``aux``), both pointers
        # advancing as the row is read; the pass's registers serve its bias read (before
        # its first row's bias stage, after the last row of the pass before has left it)
        # and its transposer.
        chained = cfg.chains_passes
        wptr = Signal.like(dst, name="wptr") if chained else None
        tr_stride = Signal.like(stride, name="tr_stride") if chained else stride

        def use(stage, bit):
            """Whether the row in ``stage`` (a stage's dict, below) takes pathway ``bit``."""
            if chained:
                return stage["pw"][bit.bit_length() - 1]
            return pathway[bit.bit_length() - 1]

        # ``active`` (rows left to read: ``remaining != 0``) and ``busy`` are registers,
        # their next values selected by ``cmd.valid`` (the control unit's issue decision,
        # late in its cycle; ``busy`` feeds that decision in turn).
        active = Signal()
        busy = Signal()
        # ``read``: a row is read now (with shared multipliers every ``P`` cycles while
        # ``active``: ``gap`` counts the cycles to the next read down; ``P - 1`` is looked
        # up from the pathway as the command is accepted).
        if self._shared:
            gap, interval = Signal(2), Signal(2)
            read = active & (gap == 0)
            with m.If(self.cmd.valid):
                m.d.sync += gap.eq(0)
                with m.Switch(self.cmd.payload.pathway):
                    for value in range(16):
                        with m.Case(value):
                            m.d.sync += interval.eq(self.row_interval(cfg, value) - 1)
            with m.Elif(read):
                m.d.sync += gap.eq(interval)
            with m.Elif(gap != 0):
                m.d.sync += gap.eq(gap - 1)
            next_active = Mux(self.cmd.valid, self.cmd.payload.rows != 0,
                              Mux(gap == 0, remaining >= 2, remaining != 0))
        else:
            read = active
            next_active = Mux(self.cmd.valid, self.cmd.payload.rows != 0, remaining >= 2)
        m.d.sync += active.eq(next_active)
        if cfg.overlap_units:
            m.d.comb += self.reading.eq(active)
        with m.If(read):
            m.d.comb += [self.acc_rd.addr.eq(src), self.acc_rd.en.eq(1)]
            m.d.sync += [remaining.eq(remaining - 1), src.eq(src + 1), first.eq(0)]
            if chained:
                m.d.sync += [aux.eq(aux + stride),
                             wptr.eq(wptr + (Mux(transpose, 1, stride) if n == 1 else stride))]
        if chained:
            # ``chain_ready`` (a register, loaded with its next value, see chain_after): at
            # most one row left to read (no row left without registered requests, whose
            # bias row reaches the bias register a cycle sooner); for a transposed pass
            # (``n > 1``), ``tail`` cycles after its last read, so that the next pass's
            # first row reaches the last stage after the transposer's last shift:
            # ``2 n - 1 - phase`` cycles, ``phase`` = the last row's index modulo ``n``.
            chain_ready = Signal()
            if cfg.registered_requests:
                next_last = Mux(self.cmd.valid, self.cmd.payload.rows <= 1,
                                Mux(read, remaining <= 2, remaining <= 1))
            else:
                next_last = ~next_active
            if n > 1:
                phase = Signal(range(n))
                tail = Signal(range(2 * n - 1))
                with m.If(self.cmd.valid):
                    m.d.sync += phase.eq(0)
                with m.Elif(read):
                    m.d.sync += phase.eq(Mux(phase == n - 1, 0, phase + 1))
                next_tail = Mux(read & (remaining == 1) & transpose, 2 * n - 2 - phase,
                                Mux(tail != 0, tail - 1, 0))
                m.d.sync += tail.eq(next_tail)
                next_transpose = Mux(self.cmd.valid, self.cmd.payload.transpose, transpose)
                next_last = Mux(next_transpose, ~next_active & (next_tail == 0), next_last)
            m.d.sync += chain_ready.eq(next_last)
            m.d.comb += self.chain_ready.eq(chain_ready)
        # With ``cfg.registered_requests``, the bias read request (``active & first &
        # use_bias``, in the cycle of the first row's accumulator read) and its gated address
        # are registers loaded with their next values, so that the unified buffer's port
        # arbitration reads registers only.
        if cfg.registered_requests:
            bias_read = Signal()
            bias_req = Signal()
            bias_req_addr = Signal.like(bias_addr)
            payload_bias = self.cmd.payload.pathway[Pathway.BIAS.bit_length() - 1]
            next_bias_req = (next_active & (self.cmd.valid | (~active & first)) &
                             Mux(self.cmd.valid, payload_bias, use_bias))
            m.d.sync += [bias_req.eq(next_bias_req),
                         bias_req_addr.eq(Mux(next_bias_req,
                                              Mux(self.cmd.valid, self.cmd.payload.bias,
                                                  bias_addr), 0)),
                         bias_read.eq(bias_req)]
            m.d.comb += [self.ub_bias.addr.eq(bias_req_addr), self.ub_bias.en.eq(bias_req)]
        else:
            with m.If(active & first & use_bias):
                m.d.comb += [self.ub_bias.addr.eq(bias_addr), self.ub_bias.en.eq(1)]
            bias_read = Signal()
            m.d.sync += bias_read.eq(active & first & use_bias)
        if cfg.registered_requests:
            # The row is registered twice: where it leaves the block RAM (by the buffer's
            # port, or here in any cycle: the port's data holds while nothing reads), then
            # into the lanes' bias register a cycle later, still before the first row's
            # bias stage (cycle c+4).
            bias_row = UnifiedBuffer.registered_row(m, cfg, self.ub_bias.data, "bias_row")
            bias_loaded = Signal()
            m.d.sync += bias_loaded.eq(bias_read)
            with m.If(bias_loaded):
                m.d.sync += bias.eq(bias_row)
        else:
            with m.If(bias_read):
                m.d.sync += bias.eq(self.ub_bias.data)

        with m.If(self.cmd.valid):
            m.d.sync += [
                remaining.eq(self.cmd.payload.rows),
                src.eq(self.cmd.payload.src),
                aux.eq(self.cmd.payload.aux),
                stride.eq(self.cmd.payload.stride),
                pathway.eq(self.cmd.payload.pathway),
                transpose.eq(self.cmd.payload.transpose),
                first.eq(1),
                bias_addr.eq(self.cmd.payload.bias),
            ]
            if chained:
                # (The transposer's pointer only for a transposed pass: a pass that
                # follows one runs no transposer.)
                m.d.sync += wptr.eq(self.cmd.payload.dst)
                with m.If(self.cmd.payload.transpose):
                    m.d.sync += [dst.eq(self.cmd.payload.dst),
                                 tr_stride.eq(self.cmd.payload.stride)]
            else:
                m.d.sync += dst.eq(self.cmd.payload.dst)

        # The pipeline: every stage registers the row's validity and overflow flags (one
        # per lane, ORed only at the write, so that no OR across the lanes follows a
        # stage's arithmetic), and
        # carries the value ``x`` of each lane, the aux row ``y`` (targets or stored
        # pre-activations) and the activation ``h`` kept for the derivative. A product
        # ``p`` or a difference ``d`` is made for the next stage only. Multiplies have a
        # stage of their own, and their rounding and saturation the next one.
        prod_fmt = FixedFormat(min(62, fmt.width + cfg.scalar.width),
                               fmt.frac + cfg.scalar.frac)
        layouts = {"x": row, "y": row, "h": row, "d": row, "r": data.ArrayLayout(1, n),
                   "p": data.ArrayLayout(prod_fmt.shape, n)}
        carried = ("x", "y", "h")
        valids = []
        chain = []                      # the stages' dicts, in order
        products = []                   # the indices in ``valids`` of the product stages
        # With shared multipliers: per multiply, the cycle's condition for sampling its
        # operands (a row there and the multiply on the pathway), the operands, the scalar.
        uses = []

        def step(prev, name, *, ovf=None, drop=(), product=None, **new):
            """The stage after ``prev``. ``new`` maps a field to a function of the lane giving
            its value; the carried fields of ``prev`` not in ``new`` or ``drop`` pass on.
            ``ovf`` maps a lane to its overflow bit (sticky along the pipeline, per lane).
            ``product``: the lanes' products (already registered, from the multipliers'
            output registers), this stage's ``p``.
            ``nxt["next_x"]`` (``nxt["next_d"]``) lists, per lane, the value its ``x``
            (``d``) register loads, for a multiplier that takes it as an operand in step
            with the register."""
            nxt = {"valid": Signal(name=f"{name}_valid"), "o": Signal(n, name=f"{name}_ovf"),
                   "valid_in": prev["valid"]}
            valids.append(nxt["valid"])
            m.d.sync += nxt["valid"].eq(prev["valid"])
            if "x" in new:
                nxt["next_x"] = [new["x"](lane) for lane in range(n)]
            elif "x" in prev:
                nxt["next_x"] = [prev["x"][lane] for lane in range(n)]
            if "d" in new:
                nxt["next_d"] = [new["d"](lane) for lane in range(n)]
            if product is not None:
                nxt["p"] = Signal(layouts["p"], name=f"{name}_p")
                m.d.comb += [nxt["p"][lane].eq(p) for lane, p in enumerate(product)]
                products.append(len(valids) - 1)
            for key, layout in layouts.items():
                if key in new:
                    # Products have no reset, so that synthesis can put their register
                    # into the multiplier block.
                    nxt[key] = Signal(layout, name=f"{name}_{key}", reset_less=(key == "p"))
                    m.d.sync += [nxt[key][lane].eq(new[key](lane)) for lane in range(n)]
                elif key in carried and key in prev and key not in drop:
                    nxt[key] = Signal(layout, name=f"{name}_{key}")
                    m.d.sync += nxt[key].eq(prev[key])
            for key in ("pw", "wa", "aa", "tp"):
                # (A row's own context, with chained passes.)
                if key in prev and key not in drop:
                    nxt[key] = Signal.like(prev[key], name=f"{name}_{key}")
                    m.d.sync += nxt[key].eq(prev[key])
            prev_ovf = prev.get("o", Const(0, n))
            for lane in range(n):
                lane_ovf = ovf(lane) & prev["valid"] if ovf is not None else Const(0, 1)
                m.d.sync += nxt["o"][lane].eq(prev_ovf[lane] | lane_ovf)
            chain.append(nxt)
            return nxt

        # The accumulator memory's output, registered (no logic after a block RAM output):
        # the port's own register where it has one.
        raw_valid, mem_valid = Signal(), Signal()
        raw_acc = AccumulatorMemory.registered_row(m, cfg, self.acc_rd.data, "raw_acc",
                                                   reset_less=False)
        m.d.sync += [raw_valid.eq(read), mem_valid.eq(raw_valid)]
        valids += [raw_valid, mem_valid]
        s = {"valid": mem_valid}
        # ``(stage_dicts + chain)[j]``: the dict of the stage whose validity is ``valids[j]``.
        stage_dicts = [{"valid": raw_valid}, s]
        if chained:
            for key, value in (("pw", pathway), ("wa", wptr), ("aa", aux), ("tp", transpose)):
                raw, mem = (Signal.like(value, name=f"{stage}_{key}") for stage in ("raw", "mem"))
                m.d.sync += [raw.eq(value), mem.eq(raw)]
                stage_dicts[0][key], s[key] = raw, mem

        narrowed = [hdl_narrow(raw_acc[lane], cfg.acc, fmt) for lane in range(n)]
        s = step(s, "narrow", x=lambda l: narrowed[l][0], ovf=lambda l: narrowed[l][1])

        biased = [hdl_add_sat(s["x"][l], bias[l], fmt) for l in range(n)]
        row_bias = use(s, Pathway.BIAS)
        s = step(s, "bias", x=lambda l: Mux(row_bias, biased[l][0], s["x"][l]),
                 ovf=lambda l: row_bias & biased[l][1])

        # On FPGAs whose multiplier blocks have registers (ECP5), each multiply is a
        # pipelined multiplier. Without isolation it is fed with what the stage before
        # the product stage loads (so that its input register stands beside that stage's
        # register, and its output register is the product stage's); elsewhere the
        # product stage multiplies the stage register (no second copy of the operands).
        # With isolation the multiplier is fed from the stage register, and its product
        # is registered once more before any logic.
        isolated = cfg.isolated_multipliers

        def multiply(prev, name, field, scalar, used, **new):
            """The stages after ``prev`` that multiply ``prev[field][lane] * scalar``; the
            last holds the product ``p``. ``new`` gives fields set (from ``prev``) in the
            first of them and carried to the last. ``used``: whether the pathway uses the
            product (for shared multipliers)."""
            if not isolated:
                if not self._pipelined:
                    return step(prev, name, p=lambda l: prev[field][l] * scalar, **new)
                return step(prev, name, product=multipliers(
                    name, prev[f"next_{field}"], scalar, prev["valid_in"] & used), **new)
            operands = [prev[field][lane] for lane in range(n)]
            first = dict(new)
            if field not in carried and not self._pipelined:
                first[field] = lambda l: prev[field][l]
            s_in = step(prev, f"{name}_in", **first)
            keep = {key: (lambda l, key=key: s_in[key][l]) for key in new}
            if self._pipelined:
                s_p = step(s_in, name, product=multipliers(
                    name, operands, scalar, prev["valid"] & used), **keep)
            else:
                s_p = step(s_in, name, p=lambda l: s_in[field][l] * scalar, **keep)
            keep = {key: (lambda l, key=key: s_p[key][l]) for key in new}
            return step(s_p, f"{name}_out", p=lambda l: s_p["p"][l], **keep)

        def multipliers(name, operands, scalar, sample):
            """The lanes' products of ``operands`` and ``scalar`` (sampled at the end of
            the cycle, products two cycles later); ``sample``: the cycle's row needs them
            (for shared multipliers)."""
            if self._shared:
                uses.append((sample, operands, scalar))
                return [self.mul.p[lane] for lane in range(n)]
            products = []
            for lane in range(n):
                mult = PipelinedMultiplier(fmt.width, cfg.scalar.width, family=self._family,
                                           logic=self._logic)
                m.submodules[f"{name}_mult_{lane}"] = mult
                m.d.comb += [mult.a.eq(operands[lane]), mult.b.eq(scalar)]
                products.append(mult.p)
            return products

        after_act, after_loss = self._pads(cfg)

        def pad(s, name, count):
            """``count`` plain stages (with shared multipliers: they space the products)."""
            for i in range(count):
                s = step(s, f"{name}_{i}")
            return s

        # Leaky ReLU: h = x if x >= 0 else leak * x.
        s = multiply(s, "act_mul", "x", self.leak, use(s, Pathway.ACT))
        # The aux row is read in the cycle in which the row is two stages before the act
        # stage and registered, so that it joins the row there instead of being carried
        # through the stages before. With ``cfg.registered_requests`` it is read a stage
        # earlier and registered twice (where it leaves the block RAM, by the buffer's port
        # or here, then beside the lanes).
        aux_stage = chain[-3] if cfg.registered_requests else chain[-2]
        leaky = [hdl_narrow(s["p"][l], prod_fmt, fmt) for l in range(n)]
        row_act = use(s, Pathway.ACT)
        neg = [row_act & (s["x"][l] < 0) for l in range(n)]
        s = step(s, "act", x=lambda l: Mux(neg[l], leaky[l][0], s["x"][l]),
                 ovf=lambda l: neg[l] & leaky[l][1], drop=("aa",))

        if cfg.overlap_units:
            # Whether a row will reach the aux stage after this cycle: a row left to read
            # or in a stage before it; a register loaded with its next value (the rows of
            # the stages before the last one before the aux stage, the row read now, and
            # one read next).
            k = next(i for i, v in enumerate(valids) if v is aux_stage["valid"])
            assert k + 2 == self.aux_delay(cfg)      # valids[j] holds row 0 in cycle c+2+j
            pending = Signal()
            m.d.sync += pending.eq(next_active | active | Cat(valids[:k - 1]).any())
            m.d.comb += self.aux_pending.eq(pending)
        def uses_aux(stage):
            """Whether the row in ``stage`` reads an aux row (the loss derivative's target,
            or the stored activation that the activation derivative tests)."""
            return use(stage, Pathway.LOSS) | use(stage, Pathway.DERIV)

        aux_valid = Signal()
        s["y"] = Signal(row, name="aux_y")
        if cfg.registered_requests:
            # The read request (enable and gated address) from registers loaded with their
            # next values, as the bias request: the row one stage before the aux stage
            # reaches it next cycle (in a command's cycle the stages are empty, so the
            # pathway and the aux pointer are this pass's whenever a row is there).
            k = next(i for i, v in enumerate(valids) if v is aux_stage["valid"])
            assert k >= 1
            before = (stage_dicts + chain)[k - 1]
            assert before["valid"] is valids[k - 1]
            aux_read_next = valids[k - 1] & uses_aux(before)
            aux_read = Signal(name="aux_read")
            aux_req_addr = Signal.like(aux)
            next_addr = before["aa"] if chained else Mux(aux_read, aux + stride, aux)
            m.d.sync += [aux_read.eq(aux_read_next),
                         aux_req_addr.eq(Mux(aux_read_next, next_addr, 0))]
            m.d.comb += [self.ub_aux.addr.eq(aux_req_addr), self.ub_aux.en.eq(aux_read)]
        else:
            aux_read = aux_stage["valid"] & uses_aux(aux_stage)
            m.d.comb += [self.ub_aux.addr.eq(Mux(aux_read, aux_stage["aa"] if chained else aux,
                                                 0)),
                         self.ub_aux.en.eq(aux_read)]
        if not chained:
            with m.If(aux_read):
                m.d.sync += aux.eq(aux + stride)
        if cfg.registered_requests:
            aux_row = UnifiedBuffer.registered_row(m, cfg, self.ub_aux.data, "aux_row")
            aux_arrived = Signal()
            m.d.sync += [aux_arrived.eq(aux_read), aux_valid.eq(aux_arrived)]
            with m.If(aux_valid):
                m.d.sync += s["y"].eq(aux_row)
        else:
            m.d.sync += aux_valid.eq(aux_read)
            with m.If(aux_valid):
                m.d.sync += s["y"].eq(self.ub_aux.data)

        s = pad(s, "act_pad", after_act)

        # MSE derivative: v = loss_scale * (h - y); h is kept for the derivative.
        diffs = [hdl_add_sat(s["x"][l], -s["y"][l], fmt) for l in range(n)]
        row_loss = use(s, Pathway.LOSS)
        s = step(s, "loss_diff", d=lambda l: diffs[l][0], h=lambda l: s["x"][l],
                 ovf=lambda l: row_loss & diffs[l][1])
        s = multiply(s, "loss_mul", "d", self.loss_scale, use(s, Pathway.LOSS))
        scaled = [hdl_narrow(s["p"][l], prod_fmt, fmt) for l in range(n)]
        row_loss = use(s, Pathway.LOSS)
        s = step(s, "loss", x=lambda l: Mux(row_loss, scaled[l][0], s["x"][l]),
                 ovf=lambda l: row_loss & scaled[l][1])

        # Leaky-ReLU derivative: v if r > 0 else leak * v, r = h if LOSS else the aux row.
        # Whether r > 0 is decided where the multiply starts and carried as one bit per
        # lane (``r``), so that no comparison precedes the multiplexer after the product's
        # rounding.
        s = pad(s, "loss_pad", after_loss)
        row_loss = use(s, Pathway.LOSS)
        positive = [Mux(row_loss, s["h"][l], s["y"][l]) > 0 for l in range(n)]
        s = multiply(s, "deriv_mul", "x", self.leak, use(s, Pathway.DERIV),
                     r=lambda l: positive[l])
        deriv = [hdl_narrow(s["p"][l], prod_fmt, fmt) for l in range(n)]
        row_deriv = use(s, Pathway.DERIV)
        scale = [row_deriv & ~s["r"][l] for l in range(n)]
        s = step(s, "deriv", x=lambda l: Mux(scale[l], deriv[l][0], s["x"][l]),
                 ovf=lambda l: scale[l] & deriv[l][1], drop=("y", "h"))
        assert len(valids) == self.stages(cfg), valids
        if self._pipelined:
            assert tuple(products) == self.product_stages(cfg), products
        if self._shared:
            # The multipliers take the operands of the multiply whose row is there (rows
            # ``P`` cycles apart never bring two at once, see row_interval).
            m.d.comb += self.mul.en.eq(Cat(sample for sample, _, _ in uses).any())
            b = Const(0)
            for sample, _, scalar in uses:
                b = Mux(sample, scalar, b)
            m.d.comb += self.mul.b.eq(b)
            for lane in range(n):
                a = Const(0)
                for sample, operands, _ in uses:
                    a = Mux(sample, operands[lane], a)
                m.d.comb += self.mul.a[lane].eq(a)

        with m.If(s["valid"]):
            m.d.comb += self.overflow.eq(s["o"].any())
        tr_next = Signal()
        if n > 1:
            # The transposer (see the timing above): ``buf[r][c]``; shifting "up"
            # (``vertical``) a row enters at row n-1 and row 0 leaves; shifting "left" lane r
            # of a row enters row r at column n-1 and column 0 leaves. ``j`` counts the
            # shifts of a tile; ``full``: the tile before the one filling holds rows, and
            # leaves now; ``tile``: dst + the index of the tile leaving.
            buf = [[Signal(fmt.shape, name=f"tr_{r}_{c}") for c in range(n)] for r in range(n)]
            tr_on, tr_shift, vertical, full, has_rows = (
                Signal(name=f"tr_{name}") for name in ("on", "shift", "vertical", "full",
                                                        "has_rows"))
            j = Signal(range(n))
            tile = Signal.like(dst)
            # (A transposed pass has no aux row, so its pathway has at most one multiply,
            # and its rows come one per cycle with shared multipliers too.)
            # (With chained passes each row says whether it is transposed; the transposer
            # runs no longer than its pass's rows, a row of the next pass reaches the last
            # stage after its last shift, see chain_after.)
            row_tp = s["tp"] if chained else transpose
            m.d.comb += tr_shift.eq(tr_on | (row_tp & s["valid"]))
            m.d.sync += tr_on.eq(tr_next)
            incoming = [Mux(s["valid"], s["x"][lane], 0) for lane in range(n)]
            # The registers shift in every cycle, not only while ``tr_shift``: a pass shifts
            # in every cycle from its first row to its last tile's write, and what they hold
            # before its first row is never written (``full`` is low). Without an enable,
            # ``tr_shift`` drives a few registers beside the write address instead of all
            # n * n * width of them (its fan-out had placed it far from the address logic).
            for r in range(n):
                for c in range(n):
                    up = incoming[c] if r == n - 1 else buf[r + 1][c]
                    left = incoming[r] if c == n - 1 else buf[r][c + 1]
                    m.d.sync += buf[r][c].eq(Mux(vertical, up, left))
            out_row = Cat(*[Mux(vertical, buf[0][lane], buf[lane][0]) for lane in range(n)])
            wrap = j == n - 1
            filled = has_rows | s["valid"]
            m.d.comb += tr_next.eq(tr_shift & ~(wrap & ~filled))
            with m.If(tr_shift):
                m.d.sync += j.eq(Mux(wrap, 0, j + 1))
                with m.If(wrap):
                    m.d.sync += [vertical.eq(~vertical), full.eq(filled), has_rows.eq(0)]
                with m.Else():
                    m.d.sync += has_rows.eq(filled)
            with m.If(self.cmd.valid & (self.cmd.payload.transpose if chained else 1)):
                m.d.sync += tile.eq(self.cmd.payload.dst)
            # The write enable is a register of its own, loaded with what the conditions
            # below will be next cycle (it reaches the buffer's shared address and the
            # host's write arbitration, far away).
            write = Signal()
            valid_next = valids[-2]
            full_next = Mux(tr_shift & wrap, filled, full)
            if chained:
                # ``tr_sel``: the transposer writes (is shifting) in this cycle; a register
                # loaded with its next value, like the write enable.
                tr_sel = Signal()
                sel_next = tr_next | (valid_next & chain[-2]["tp"])
                m.d.sync += tr_sel.eq(sel_next)
                write_next = Mux(sel_next, (tr_next | valid_next) & full_next, valid_next)
                addr = Mux(tr_sel, dst, s["wa"])
            else:
                tr_sel = transpose
                write_next = Mux(transpose, (tr_next | valid_next) & full_next, valid_next)
                addr = dst
            m.d.sync += write.eq(write_next)
            m.d.comb += [self.ub_wr.addr.eq(addr), self.ub_wr.en.eq(write),
                         self.ub_wr.data.eq(Mux(tr_sel, out_row, s["x"]))]
            with m.If(tr_sel):
                with m.If(tr_shift & full):
                    with m.If(wrap):
                        m.d.sync += [tile.eq(tile + 1), dst.eq(tile + 1)]
                    with m.Else():
                        m.d.sync += dst.eq(dst + tr_stride)
            if not chained:
                with m.Elif(s["valid"]):
                    m.d.sync += dst.eq(dst + stride)
        else:
            # One lane: tile t is output row t, written to dst + t as it leaves the stages.
            m.d.comb += [self.ub_wr.addr.eq(s["wa"] if chained else dst),
                         self.ub_wr.data.eq(s["x"])]
            write_next = valids[-2]
            with m.If(s["valid"]):
                m.d.comb += self.ub_wr.en.eq(1)
                if not chained:
                    m.d.sync += dst.eq(dst + Mux(transpose, 1, stride))
        # Next cycle, the rows in the pipeline are those now in all stages but the last,
        # and one more if a row is read now; the transposer runs on after them.
        m.d.sync += busy.eq(next_active | active | Cat(valids[:-1]).any() | tr_next)
        m.d.comb += self.busy.eq(busy)
        if cfg.registered_requests:
            m.d.comb += self.writes_next.eq(write_next)
        return m
