"""Matmul engine: streams unified-buffer rows through the array into the accumulators."""

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..numeric import hdl_saturate
from .delay import delayed
from .memory import AccumulatorMemory, UnifiedBuffer, addr_width, read_request, write_request
from .signatures import valid_stream
from .systolic import InputRowLayout, ResultRowLayout, array_latency

__all__ = ["MatmulEngine", "MatmulCommandLayout"]


class MatmulCommandLayout(data.StructLayout):
    def __init__(self, cfg):
        super().__init__({
            "src": addr_width(cfg.ub_depth), "stride": 8, "rows": 16,
            "dst": addr_width(cfg.acc_depth), "accumulate": 1,
        })


class _TagLayout(data.StructLayout):
    def __init__(self, cfg):
        super().__init__({"valid": 1, "addr": addr_width(cfg.acc_depth), "accumulate": 1})


class MatmulEngine(wiring.Component):
    """Feeds ``rows`` unified-buffer rows (``src``, ``src + stride``, ...) to the array and
    writes the result rows to accumulator rows ``dst .. dst + rows - 1``, either replacing
    them or adding to them (saturating) when ``accumulate`` is set.

    The first row carries the array's ``switch`` flag, so a command computes with the
    weight tile loaded most recently.

    Members
    -------
    cmd : In(valid_stream(MatmulCommandLayout))
    ub : Out(read_request)         -- unified-buffer read port (input rows)
    act : Out(valid_stream)        -- to the array's ``act``
    result : In(valid_stream)      -- from the array's ``result``
    acc_rd : Out(read_request)     -- accumulator read port (accumulate mode)
    acc_wr : Out(write_request)    -- accumulator write port
    ready, busy : Out(1)
    overflow : Out(1)              -- pulses when a written row saturated

    Timing
    ------
    A command accepted in cycle ``c`` reads row ``i`` in cycle ``c+1+i``, registers the
    memory's output and presents the row to the array in cycle ``c+3+i`` (so its switch
    is in cycle ``c+3``). Its result leaves the array ``latency`` (``λ`` = ``2n+1``, or
    ``2n+2`` with ``cfg.isolated_multipliers``: :meth:`array_latency`) cycles later, in
    cycle ``c+3+i+λ``, and is written two cycles after that, ``c+5+i+λ`` (registered,
    then added); in accumulate mode the old row is read one cycle before
    the result leaves the array, and the rows written in the two cycles before the
    addition and in the cycle of the addition are forwarded to it, so back-to-back
    commands accumulating into the same rows see each other's sums. ``overflow`` is high
    in the cycle of the write. ``ready`` is high from cycle ``c+rows`` on, so the next
    command's first row follows the last one with no gap; ``busy`` is low once the last
    row is written, from cycle ``c+rows+λ+5`` on (:meth:`idle_after`).
    """

    @staticmethod
    def array_latency(cfg):
        """The latency of the array the engine feeds (:func:`.array_latency`)."""
        return array_latency(cfg.n, cfg.n, cfg.isolated_multipliers)

    @staticmethod
    def switch_delay(cfg):
        """Cycles from a command's acceptance to its first row (with ``switch``) on
        ``act``."""
        return 3

    @staticmethod
    def chase_after(cfg):
        """Cycles from a command's acceptance after which a reader that reads the
        command's destination rows from its first on, one per cycle from the cycle after
        its own start, reads each row after it was written (``λ + 5``; the control unit
        lets a VPU or GD start then, :attr:`TPUConfig.chase_matmul`)."""
        return MatmulEngine.array_latency(cfg) + 5

    @staticmethod
    def idle_after(cfg, rows):
        """Cycles from a command's acceptance to the first in which ``busy`` is low."""
        return rows + MatmulEngine.array_latency(cfg) + 5

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "cmd": In(valid_stream(MatmulCommandLayout(cfg))),
            "ub": Out(read_request(cfg.ub_depth, data.ArrayLayout(cfg.data.shape, cfg.n))),
            "act": Out(valid_stream(InputRowLayout(cfg.data, cfg.n))),
            "result": In(valid_stream(ResultRowLayout(cfg.acc, cfg.n))),
            "acc_rd": Out(read_request(cfg.acc_depth, data.ArrayLayout(cfg.acc.shape, cfg.n))),
            "acc_wr": Out(write_request(cfg.acc_depth, data.ArrayLayout(cfg.acc.shape, cfg.n))),
            "ready": Out(1),
            "busy": Out(1),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        latency = self.array_latency(cfg)

        remaining = Signal(16)
        src = Signal.like(self.cmd.payload.src)
        stride = Signal(8)
        dst = Signal.like(self.cmd.payload.dst)
        accumulate = Signal()
        first = Signal()
        in_flight = Signal(range(latency + 7))

        # ``active`` (rows left to read: ``remaining != 0``) is a register, its next value
        # selected by ``cmd.valid`` (the control unit's issue decision, late in its cycle),
        # so that only an AND lies between it and the buffer's shared read address.
        active = Signal()
        m.d.sync += active.eq(Mux(self.cmd.valid, self.cmd.payload.rows != 0, remaining >= 2))
        m.d.comb += [
            self.ub.addr.eq(Mux(active, src, 0)),
            self.ub.en.eq(active),
        ]
        feed_valid = Signal()
        feed_switch = Signal()
        m.d.sync += [feed_valid.eq(active), feed_switch.eq(active & first)]
        next_remaining = Signal.like(remaining)
        m.d.comb += next_remaining.eq(remaining)
        m.d.sync += remaining.eq(next_remaining)
        with m.If(active):
            m.d.comb += next_remaining.eq(remaining - 1)
            m.d.sync += [
                src.eq(src + stride),
                dst.eq(dst + 1),
                first.eq(0),
            ]
        with m.If(self.cmd.valid):
            m.d.comb += next_remaining.eq(self.cmd.payload.rows)
            m.d.sync += [
                src.eq(self.cmd.payload.src),
                stride.eq(self.cmd.payload.stride),
                dst.eq(self.cmd.payload.dst),
                accumulate.eq(self.cmd.payload.accumulate),
                first.eq(1),
            ]
        # The row is registered between the block RAM's output and the array (no logic
        # between them in one cycle: the first PE multiplies what it receives).
        # (Where the buffer's port registers it itself, that register is this one.)
        m.d.sync += [self.act.valid.eq(feed_valid), self.act.payload.switch.eq(feed_switch)]
        m.d.comb += self.act.payload.data.eq(
            UnifiedBuffer.registered_row(m, cfg, self.ub.data, "act_data"))

        # The destination of each row travels alongside the array, latency + 1 cycles, to the
        # cycle before its result appears (the accumulate read).
        # (``accumulate`` in a tag implies ``valid``, so that the accumulate read's enable
        # is a register of the delay line.)
        tag = Signal(_TagLayout(cfg))
        m.d.comb += [tag.valid.eq(active), tag.addr.eq(dst),
                     tag.accumulate.eq(active & accumulate)]
        # With ``cfg.registered_requests`` the old row is read a cycle earlier and
        # registered where it leaves the block RAM (``read_row``), so that the forwarding
        # below starts from a register.
        early = cfg.registered_requests
        if early:
            early_tag = delayed(m, tag, latency, name="dst_tag")
            read_tag = delayed(m, early_tag, 1, name="dst_tag_read")
        else:
            early_tag = read_tag = delayed(m, tag, latency + 1, name="dst_tag")
        m.d.comb += [
            self.acc_rd.addr.eq(Mux(early_tag.accumulate, early_tag.addr, 0)),
            self.acc_rd.en.eq(early_tag.accumulate),
        ]

        # The write side, three stages, so that no carry chain follows a block RAM output
        # and no block RAM input follows a carry chain:
        #   R (result cycle t): the result row, and the row it adds to (zero when the
        #     command does not accumulate), registered;
        #   S (t+1): the sum, registered unsaturated (one bit wider);
        #   W (t+2): the sum, saturated, is written.
        # The read in t-1 sees the writes up to t-2. The rows written in t-1 and t (by rows
        # still in flight, when a command accumulates into rows the previous one just
        # wrote) replace what was read in stage R; the row written in t+1, the one stage W
        # holds while S adds, replaces it in S. So that path, the one that closes a loop
        # when consecutive rows accumulate into one row, is a multiplexer merged with the
        # saturation of W's sum, the adder and a register. (With the read in t-2 and
        # registered, the row written in t-2 replaces it too.)
        acc_row = data.ArrayLayout(cfg.acc.shape, cfg.n)
        raw_row = data.ArrayLayout(signed(cfg.acc.width + 1), cfg.n)
        r_tag = delayed(m, read_tag, 1, name="dst_tag_result")
        s_tag = Signal(_TagLayout(cfg), name="dst_tag_sum")
        w_tag = Signal(_TagLayout(cfg), name="dst_tag_write")
        m.d.sync += [s_tag.eq(r_tag), w_tag.eq(s_tag)]

        w_raw = Signal(raw_row, reset_less=True)
        w_row = Signal(acc_row)
        lane_overflow = []
        for lane in range(cfg.n):
            value, ovf = hdl_saturate(w_raw[lane], cfg.acc)
            m.d.comb += w_row[lane].eq(value)
            lane_overflow.append(ovf)
        written = Signal(acc_row, name="written_row", reset_less=True)   # the row written in t-1
        m.d.sync += written.eq(w_row)
        if early:
            written_2 = Signal(acc_row, name="written_row_2", reset_less=True)  # in t-2
            w_tag_2 = Signal(_TagLayout(cfg), name="dst_tag_written")           # its tag
            m.d.sync += [written_2.eq(written), w_tag_2.eq(w_tag)]
            read_row = AccumulatorMemory.registered_row(m, cfg, self.acc_rd.data, "read_row")
        else:
            read_row = self.acc_rd.data

        # Decided a cycle ahead, from the tags of the rows that will be in W and written:
        # in t-1 for stage R (which of S's and W's rows is the one R's row adds to), in t
        # for stage S (whether W's row then is).
        def same_row(t, dst):
            return t.valid & (t.addr == dst.addr)
        # One-hot selects of the row that stage R's row adds to (none: it does not
        # accumulate, and adds to zero), so that the block RAM's output meets one AND-OR.
        take_w, take_written, take_read = Signal(), Signal(), Signal()
        in_s, in_w = same_row(s_tag, read_tag), same_row(w_tag, read_tag)
        # (``not_written``: the row is in neither S nor W; with the early read, not the
        # row written in t-2 either.)
        not_s_or_w = read_tag.accumulate & ~in_s & ~in_w
        not_written = not_s_or_w
        if early:
            in_w_2 = same_row(w_tag_2, read_tag)
            not_written = not_s_or_w & ~in_w_2
        m.d.sync += [take_w.eq(read_tag.accumulate & in_s),
                     take_written.eq(read_tag.accumulate & ~in_s & in_w),
                     take_read.eq(not_written)]
        old = Signal(acc_row, reset_less=True)
        res = Signal(acc_row, reset_less=True)
        r_res_ovf = Signal()
        merged = ((Value.cast(read_row) & take_read.replicate(acc_row.size)) |
                  (Value.cast(w_row) & take_w.replicate(acc_row.size)) |
                  (Value.cast(written) & take_written.replicate(acc_row.size)))
        if early:
            take_written_2 = Signal()
            m.d.sync += take_written_2.eq(not_s_or_w & in_w_2)
            merged = merged | (Value.cast(written_2) & take_written_2.replicate(acc_row.size))
        m.d.sync += [old.eq(merged), res.eq(self.result.payload.data),
                     r_res_ovf.eq(self.result.payload.overflow)]

        take_sum = Signal()
        m.d.sync += take_sum.eq(r_tag.accumulate & same_row(s_tag, r_tag))
        w_res_ovf = Signal()
        m.d.sync += w_res_ovf.eq(r_res_ovf)
        for lane in range(cfg.n):
            base = Mux(take_sum, w_row[lane], old[lane])
            m.d.sync += w_raw[lane].eq(base + res[lane])

        m.d.comb += [self.acc_wr.addr.eq(w_tag.addr), self.acc_wr.data.eq(w_row)]
        with m.If(w_tag.valid):
            m.d.comb += [self.acc_wr.en.eq(1),
                         self.overflow.eq(w_res_ovf | Cat(lane_overflow).any())]

        started = active
        finished = w_tag.valid
        next_in_flight = Signal.like(in_flight)
        m.d.comb += next_in_flight.eq(in_flight)
        with m.If(started & ~finished):
            m.d.comb += next_in_flight.eq(in_flight + 1)
        with m.Elif(~started & finished):
            m.d.comb += next_in_flight.eq(in_flight - 1)
        # ``ready`` and ``busy`` come straight from registers (the control unit's issue
        # decision follows them in the same cycle). Their next values are selected by
        # ``cmd.valid`` (that decision, late in the cycle) from comparisons of the row
        # count register (without a command it drops by one while it is not zero) and of
        # the command's row count, so that only a multiplexer follows the decision.
        ready = Signal(init=1)
        busy = Signal()
        rows = self.cmd.payload.rows
        m.d.sync += [
            in_flight.eq(next_in_flight),
            ready.eq(Mux(self.cmd.valid, rows <= 1, remaining <= 2)),
            busy.eq(Mux(self.cmd.valid, rows != 0, remaining >= 2) | (next_in_flight != 0)),
        ]
        m.d.comb += [self.ready.eq(ready), self.busy.eq(busy)]
        return m
