"""Weight loader: reads a weight tile from the unified buffer into the array's shadow registers."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .matmul_engine import MatmulEngine
from .memory import UnifiedBuffer, addr_width, read_request
from .signatures import valid_stream
from .systolic import WeightRowLayout

__all__ = ["WeightLoader", "LoadCommandLayout", "matmul_after_load", "load_after_matmul"]


def matmul_after_load(cfg):
    """Cycles from a LOADW's issue to the first in which a MATMUL may issue: the
    MATMUL's switch (:meth:`.MatmulEngine.switch_delay`) comes ``n`` cycles after the
    load's first vector (:class:`.SystolicArray`), and at least one cycle later."""
    return max(WeightLoader.row_delay(cfg) + cfg.n - MatmulEngine.switch_delay(cfg), 1)


def load_after_matmul(cfg):
    """Cycles from a MATMUL's issue to the first in which a LOADW may issue: the load's
    first vector comes ``n - 1`` cycles after the MATMUL's switch, and at least one cycle
    later."""
    return max(MatmulEngine.switch_delay(cfg) + cfg.n - 1 - WeightLoader.row_delay(cfg), 1)


class LoadCommandLayout(data.StructLayout):
    def __init__(self, cfg):
        super().__init__({"addr": addr_width(cfg.ub_depth), "rows": 16, "transpose": 1})


class WeightLoader(wiring.Component):
    """Streams ``rows`` (1 to ``n``) unified-buffer rows into the array as a weight tile.

    The array wants the tile's last vector first, so the loader pushes ``n``
    vectors: first ``n - rows`` zero vectors (padding), then the rows at
    ``addr + rows - 1`` down to ``addr``. The stored rows become the rows of
    the stationary matrix (normal load) or its columns (``transpose``).

    Members
    -------
    cmd : In(valid_stream(LoadCommandLayout))
        A command accepted in a cycle in which ``ready`` is high.
    ub : Out(read_request)
        Unified-buffer read port.
    weights : Out(valid_stream(WeightRowLayout))
        To the array's ``weights`` input.
    ready, busy : Out(1)
        ``ready``: a command may be given this cycle. ``busy``: a load is in progress.

    Timing
    ------
    A command accepted in cycle ``c`` reads in cycles ``c+1 .. c+n`` and presents
    its ``n`` vectors to the array in cycles ``c+d .. c+d+n-1``, ``d`` = 2, or 3 with
    ``cfg.registered_weight_rows`` (each row registered after the buffer's output:
    :meth:`row_delay`). ``ready`` is high from cycle ``c+n`` on (a following command
    continues without a gap); ``busy`` is low from cycle ``c+d+n`` on (:meth:`idle_after`).

    ======  =========  ===============  ==========================================
    cycle   read       vector (d = 2)   vector (d = 3)
    ======  =========  ===============  ==========================================
    c       (command)
    c+1     row n-1
    c+2     row n-2    row n-1
    c+3     ...        row n-2          row n-1
    c+n     row 0      ...              ...
    c+n+1              row 0            ...
    c+n+2              (idle)           row 0
    ======  =========  ===============  ==========================================

    (Rows past ``rows`` are not read; zero vectors take their places.) With the array's
    rule (:class:`.SystolicArray`) and the matmul engine's switch in the third cycle after
    its command (:meth:`.MatmulEngine.switch_delay`), a MATMUL may issue :func:`matmul_after_load`
    cycles after a LOADW and a LOADW :func:`load_after_matmul` cycles after a MATMUL.
    """

    @staticmethod
    def row_delay(cfg):
        """Cycles from a command's acceptance to its first vector on ``weights``."""
        return 3 if cfg.registered_weight_rows else 2

    @staticmethod
    def ready_after(cfg):
        """Cycles from a command's acceptance to the first in which ``ready`` is high."""
        return cfg.n

    @staticmethod
    def idle_after(cfg):
        """Cycles from a command's acceptance to the first in which ``busy`` is low."""
        return cfg.n + WeightLoader.row_delay(cfg)

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "cmd": In(valid_stream(LoadCommandLayout(cfg))),
            "ub": Out(read_request(cfg.ub_depth, data.ArrayLayout(cfg.data.shape, cfg.n))),
            "weights": Out(valid_stream(WeightRowLayout(cfg.data, cfg.n))),
            "ready": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._cfg.n

        remaining = Signal(range(n + 1))
        # Bit j: the (j+1)-th tile row after the one in this address phase is a stored row
        # (not padding), the rows running from the tile's last to its first; shifted down
        # once per row, so that the next ``is_row`` is one bit, not a comparison of the row
        # index with the 16-bit row count.
        upcoming = Signal(n)
        transpose = Signal()
        push_valid = Signal()
        push_zero = Signal()
        push_transpose = Signal()

        # ``active`` (``remaining != 0``), ``is_row`` (the tile row pushed next is a stored
        # row, not padding) and the row's address are registers loaded with their next values;
        # so are the read request (``read`` = ``active & is_row``, and the address gated by it),
        # which the port takes with ``cfg.registered_requests`` (its address multiplexer then
        # reads registers only; without, synthesis drops them as unused).
        active = Signal()
        is_row = Signal()
        addr = Signal.like(self.cmd.payload.addr)
        read = Signal()
        read_addr = Signal.like(self.cmd.payload.addr)
        # ``ready`` (``remaining <= 1``) and ``busy`` (``remaining != 0`` or a vector still
        # to push) are registers too, their next values selected by ``cmd.valid`` (the
        # control unit's issue decision, which they feed) from registers.
        ready = Signal(init=1)
        busy = Signal()
        registered = self._cfg.registered_weight_rows
        # (Busy also while the registered last row is presented.)
        loading = self.cmd.valid | active | push_valid if registered else \
            self.cmd.valid | active
        m.d.sync += [ready.eq(Mux(self.cmd.valid, n <= 1, remaining <= 2)),
                     busy.eq(loading)]
        m.d.comb += [self.ready.eq(ready), self.busy.eq(busy)]

        if self._cfg.registered_requests:
            m.d.comb += [self.ub.addr.eq(read_addr), self.ub.en.eq(read)]
        else:
            m.d.comb += [self.ub.addr.eq(Mux(active & is_row, addr, 0)),
                         self.ub.en.eq(active & is_row)]
        m.d.sync += [
            push_valid.eq(active),
            push_zero.eq(~is_row),
            push_transpose.eq(transpose),
        ]
        with m.If(active):
            next_read = (remaining != 1) & upcoming[0]
            m.d.sync += [remaining.eq(remaining - 1), upcoming.eq(upcoming >> 1),
                         active.eq(remaining != 1), is_row.eq(upcoming[0]),
                         addr.eq(addr - 1),
                         read.eq(next_read), read_addr.eq(Mux(next_read, addr - 1, 0))]

        with m.If(self.cmd.valid):
            m.d.sync += [
                remaining.eq(n),
                upcoming.eq(Cat(*(n - 2 - j < self.cmd.payload.rows for j in range(n - 1)))),
                transpose.eq(self.cmd.payload.transpose),
                active.eq(1),
                is_row.eq(n - 1 < self.cmd.payload.rows),
                addr.eq(self.cmd.payload.addr + n - 1),
                read.eq(n - 1 < self.cmd.payload.rows),
                read_addr.eq(Mux(n - 1 < self.cmd.payload.rows,
                                 self.cmd.payload.addr + n - 1, 0)),
            ]

        if registered and UnifiedBuffer.registered_reads(self._cfg):
            # One more stage, in which the buffer's port has registered the row itself.
            zero = Signal()
            m.d.sync += [
                self.weights.valid.eq(push_valid),
                self.weights.payload.transpose.eq(push_transpose),
                zero.eq(~push_valid | push_zero),
            ]
            m.d.comb += self.weights.payload.data.as_value().eq(
                Mux(zero, 0, self.ub.data.as_value()))
            return m
        if registered:
            # One more stage: the buffer's output drives this register only.
            m.d.sync += [
                self.weights.valid.eq(push_valid),
                self.weights.payload.transpose.eq(push_transpose),
                self.weights.payload.data.as_value().eq(
                    Mux(push_valid & ~push_zero, self.ub.data.as_value(), 0)),
            ]
            return m
        m.d.comb += [
            self.weights.valid.eq(push_valid),
            self.weights.payload.transpose.eq(push_transpose),
        ]
        with m.If(push_valid & ~push_zero):
            m.d.comb += self.weights.payload.data.eq(self.ub.data)
        return m
