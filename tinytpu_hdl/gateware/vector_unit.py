"""Vector unit: the per-column element-wise stages between the accumulators and the buffer."""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa import Pathway
from ..numeric import hdl_add_sat, hdl_mul_narrow, hdl_narrow
from .memory import addr_width, read_request, write_request
from .signatures import valid_stream

__all__ = ["VectorUnit", "VectorCommandLayout"]


class VectorCommandLayout(data.StructLayout):
    def __init__(self, cfg):
        ub = addr_width(cfg.ub_depth)
        super().__init__({
            "src": addr_width(cfg.acc_depth), "dst": ub, "aux": ub, "bias": ub,
            "rows": 16, "stride": 8, "pathway": 4,
        })


class VectorUnit(wiring.Component):
    """``n`` lanes of five one-cycle pipeline stages, each enabled by a pathway bit or
    bypassed as a plain register.

    For accumulator row ``src + i`` (``i < rows``) it writes unified-buffer row
    ``dst + i * stride``::

        x = narrow(acc)                                   # always: accumulator -> data format
        x = x + bias                       if BIAS        # bias: one buffer row, read once
        h = x if x >= 0 else leak * x      if ACT         # Leaky ReLU (leak 0: ReLU)
        v = loss_scale * (h - y)           if LOSS        # y = buffer row aux + i * stride
        v = v if r > 0 else leak * v       if DERIV       # r = h if LOSS, else the aux row
        out = v

    Every operation rounds and saturates with the rules of :mod:`tinytpu_hdl.numeric`;
    ``overflow`` pulses for a row in which any of them saturated. ``leak`` and
    ``loss_scale`` are in the scalar format.

    Timing
    ------
    A command accepted in cycle ``c`` reads the bias row in cycle ``c+1``, accumulator
    row ``i`` and aux row ``i`` in cycle ``c+1+i``, and writes output row ``i`` in cycle
    ``c+7+i``. ``busy`` is low from cycle ``c+rows+7`` on.
    """

    STAGES = 5

    def __init__(self, cfg):
        self._cfg = cfg
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
        first = Signal()
        bias_addr = Signal.like(self.cmd.payload.bias)
        bias = Signal(row)

        use_bias = pathway[Pathway.BIAS.bit_length() - 1]
        use_act = pathway[Pathway.ACT.bit_length() - 1]
        use_loss = pathway[Pathway.LOSS.bit_length() - 1]
        use_deriv = pathway[Pathway.DERIV.bit_length() - 1]
        use_aux = use_loss | use_deriv

        active = remaining != 0
        with m.If(active):
            m.d.comb += [
                self.acc_rd.addr.eq(src), self.acc_rd.en.eq(1),
                self.ub_aux.addr.eq(Mux(use_aux, aux, 0)), self.ub_aux.en.eq(use_aux),
            ]
            m.d.sync += [remaining.eq(remaining - 1), src.eq(src + 1), aux.eq(aux + stride),
                         first.eq(0)]
        with m.If(active & first & use_bias):
            m.d.comb += [self.ub_bias.addr.eq(bias_addr), self.ub_bias.en.eq(1)]
        bias_read = Signal()
        m.d.sync += bias_read.eq(active & first & use_bias)
        with m.If(bias_read):
            m.d.sync += bias.eq(self.ub_bias.data)

        with m.If(self.cmd.valid):
            m.d.sync += [
                remaining.eq(self.cmd.payload.rows),
                src.eq(self.cmd.payload.src),
                aux.eq(self.cmd.payload.aux),
                dst.eq(self.cmd.payload.dst),
                stride.eq(self.cmd.payload.stride),
                pathway.eq(self.cmd.payload.pathway),
                first.eq(1),
                bias_addr.eq(self.cmd.payload.bias),
            ]

        # Stage registers: value, the aux row (targets or stored activations), the
        # activation h kept for the derivative, validity and overflow of each row.
        valid = [Signal(name=f"valid_{s}") for s in range(self.STAGES + 1)]
        m.d.sync += valid[0].eq(active)

        x0 = Signal(row, name="narrowed")
        y0 = Signal(row, name="aux_0")
        o0 = Signal(name="ovf_0")
        ovf = Const(0, 1)
        for lane in range(n):
            value, lane_ovf = hdl_narrow(self.acc_rd.data[lane], cfg.acc, fmt)
            m.d.sync += x0[lane].eq(value)
            ovf = ovf | lane_ovf
        m.d.sync += [y0.eq(self.ub_aux.data), o0.eq(ovf & valid[0]), valid[1].eq(valid[0])]

        def stage(index, compute, x_in, y_in, o_in, h_in=None):
            x_out = Signal(row, name=f"value_{index}")
            y_out = Signal(row, name=f"aux_{index}")
            o_out = Signal(name=f"ovf_{index}")
            h_out = Signal(row, name=f"act_{index}")
            ovf = Const(0, 1)
            for lane in range(n):
                value, lane_ovf = compute(lane)
                m.d.sync += x_out[lane].eq(value)
                ovf = ovf | lane_ovf
            m.d.sync += [y_out.eq(y_in), o_out.eq(o_in | (ovf & valid[index + 1])),
                         valid[index + 2].eq(valid[index + 1])]
            if h_in is not None:
                m.d.sync += h_out.eq(h_in)
            return x_out, y_out, o_out, h_out

        def bias_add(lane):
            total, o = hdl_add_sat(x0[lane], bias[lane], fmt)
            return Mux(use_bias, total, x0[lane]), use_bias & o

        x1, y1, o1, _ = stage(0, bias_add, x0, y0, o0)

        def leaky(lane):
            scaled, o = hdl_mul_narrow(x1[lane], fmt, self.leak, cfg.scalar, fmt)
            neg = x1[lane] < 0
            return Mux(use_act & neg, scaled, x1[lane]), use_act & neg & o

        x2, y2, o2, _ = stage(1, leaky, x1, y1, o1)

        def loss(lane):
            diff, o_diff = hdl_add_sat(x2[lane], -y2[lane], fmt)
            scaled, o = hdl_mul_narrow(diff, fmt, self.loss_scale, cfg.scalar, fmt)
            return Mux(use_loss, scaled, x2[lane]), use_loss & (o_diff | o)

        x3, y3, o3, h3 = stage(2, loss, x2, y2, o2, h_in=x2)

        def deriv(lane):
            ref = Mux(use_loss, h3[lane], y3[lane])
            scaled, o = hdl_mul_narrow(x3[lane], fmt, self.leak, cfg.scalar, fmt)
            keep = ref > 0
            return Mux(use_deriv & ~keep, scaled, x3[lane]), use_deriv & ~keep & o

        x4, _, o4, _ = stage(3, deriv, x3, y3, o3)

        with m.If(valid[5]):
            m.d.comb += [self.ub_wr.addr.eq(dst), self.ub_wr.data.eq(x4), self.ub_wr.en.eq(1),
                         self.overflow.eq(o4)]
            m.d.sync += dst.eq(dst + stride)
        m.d.comb += self.busy.eq(active | valid[0] | valid[1] | valid[2] | valid[3] | valid[4] |
                                 valid[5])
        return m
