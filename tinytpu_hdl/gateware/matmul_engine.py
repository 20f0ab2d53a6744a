"""Matmul engine: streams unified-buffer rows through the array into the accumulators."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..numeric import hdl_add_sat
from .delay import delayed
from .memory import addr_width, read_request, write_request
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
    is in cycle ``c+3``). Its result leaves the array ``latency`` (= ``2n+1``) cycles
    later, in cycle ``c+4+i+2n``, and is written two cycles after that, ``c+6+i+2n``
    (registered, then added); in accumulate mode the old row is read one cycle before
    the result leaves the array, and the rows written in the three cycles before the
    addition are forwarded to it, so back-to-back commands accumulating into the same
    rows see each other's sums. ``ready`` is high from cycle ``c+rows`` on, so the next
    command's first row follows the last one with no gap; ``busy`` is low once the last
    row is written, from cycle ``c+rows+2n+6`` on.
    """

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
        latency = array_latency(cfg.n, cfg.n)

        remaining = Signal(16)
        src = Signal.like(self.cmd.payload.src)
        stride = Signal(8)
        dst = Signal.like(self.cmd.payload.dst)
        accumulate = Signal()
        first = Signal()
        in_flight = Signal(range(latency + 7))

        active = remaining != 0
        m.d.comb += [
            self.ready.eq(remaining <= 1),
            self.busy.eq(active | (in_flight != 0)),
            self.ub.addr.eq(Mux(active, src, 0)),
            self.ub.en.eq(active),
        ]
        feed_valid = Signal()
        feed_switch = Signal()
        m.d.sync += [feed_valid.eq(active), feed_switch.eq(active & first)]
        with m.If(active):
            m.d.sync += [
                remaining.eq(remaining - 1),
                src.eq(src + stride),
                dst.eq(dst + 1),
                first.eq(0),
            ]
        with m.If(self.cmd.valid):
            m.d.sync += [
                remaining.eq(self.cmd.payload.rows),
                src.eq(self.cmd.payload.src),
                stride.eq(self.cmd.payload.stride),
                dst.eq(self.cmd.payload.dst),
                accumulate.eq(self.cmd.payload.accumulate),
                first.eq(1),
            ]
        # The row is registered between the block RAM's output and the array (no logic
        # between them in one cycle: the first PE multiplies what it receives).
        act_data = Signal(data.ArrayLayout(cfg.data.shape, cfg.n), reset_less=True)
        m.d.sync += [self.act.valid.eq(feed_valid), self.act.payload.switch.eq(feed_switch),
                     act_data.eq(self.ub.data)]
        m.d.comb += self.act.payload.data.eq(act_data)

        # The destination of each row travels alongside the array, latency + 1 cycles, to the
        # cycle before its result appears (the accumulate read).
        tag = Signal(_TagLayout(cfg))
        m.d.comb += [tag.valid.eq(active), tag.addr.eq(dst), tag.accumulate.eq(accumulate)]
        read_tag = delayed(m, tag, latency + 1, name="dst_tag")
        m.d.comb += [
            self.acc_rd.addr.eq(Mux(read_tag.valid & read_tag.accumulate, read_tag.addr, 0)),
            self.acc_rd.en.eq(read_tag.valid & read_tag.accumulate),
        ]

        # The write side, three stages, so that no carry chain follows a block RAM output
        # and no block RAM input follows a carry chain:
        #   R (result cycle t): the result row and the old accumulator row, registered;
        #   S (t+1): old + result, saturated, registered;
        #   W (t+2): the sum is written.
        # The read in t-1 sees the writes up to t-2; the rows written in t-1, t and t+1
        # (by rows still in flight, when a command accumulates into rows the previous one
        # just wrote) are forwarded into stage S instead.
        acc_row = data.ArrayLayout(cfg.acc.shape, cfg.n)
        r_tag = delayed(m, read_tag, 1, name="dst_tag_result")
        s_tag = Signal(_TagLayout(cfg), name="dst_tag_sum")
        m.d.sync += s_tag.eq(r_tag)
        old = Signal(acc_row, reset_less=True)
        res = Signal(acc_row, reset_less=True)
        res_ovf = Signal()
        m.d.sync += [old.eq(self.acc_rd.data), res.eq(self.result.payload.data),
                     res_ovf.eq(self.result.payload.overflow)]

        w_tag = Signal(_TagLayout(cfg))
        w_sum = Signal(acc_row, reset_less=True)
        w_ovf = Signal()
        # The last two rows written: (valid, addr) one and two cycles ago, and their values.
        past_tags = [Signal(_TagLayout(cfg), name=f"written_tag_{i}") for i in (1, 2)]
        past_sums = [Signal(acc_row, name=f"written_sum_{i}", reset_less=True) for i in (1, 2)]
        m.d.sync += [past_tags[0].eq(w_tag), past_sums[0].eq(w_sum),
                     past_tags[1].eq(past_tags[0]), past_sums[1].eq(past_sums[0])]

        # Which of the three rows written around stage S holds the row S adds to is decided
        # in stage R, a cycle ahead, from the tags that will be in W, W+1 and W+2 then
        # (S's, W's and W+1's now), so that S has only the multiplexer before its adder.
        forward = Signal(3)
        m.d.sync += forward.eq(Cat(t.valid & (t.addr == r_tag.addr)
                                   for t in (s_tag, w_tag, past_tags[0])))
        base = Value.cast(old)
        for hit, value in reversed(list(zip(forward, [w_sum] + past_sums))):
            base = Mux(hit, Value.cast(value), base)
        base = data.View(acc_row, base)
        sums_overflow = Const(0, 1)
        for lane in range(cfg.n):
            total, ovf = hdl_add_sat(base[lane], res[lane], cfg.acc)
            m.d.sync += w_sum[lane].eq(Mux(s_tag.accumulate, total, res[lane]))
            sums_overflow = sums_overflow | ovf
        m.d.sync += [w_tag.eq(s_tag), w_ovf.eq(res_ovf | (s_tag.accumulate & sums_overflow))]

        m.d.comb += [self.acc_wr.addr.eq(w_tag.addr), Value.cast(self.acc_wr.data).eq(w_sum)]
        with m.If(w_tag.valid):
            m.d.comb += [self.acc_wr.en.eq(1), self.overflow.eq(w_ovf)]

        started = active
        finished = w_tag.valid
        with m.If(started & ~finished):
            m.d.sync += in_flight.eq(in_flight + 1)
        with m.Elif(~started & finished):
            m.d.sync += in_flight.eq(in_flight - 1)
        return m
