"""A block RAM with a write port and a read port, whose read data leaves through a
register (the block's own output register on ECP5, a register in the fabric elsewhere) or,
unregistered, straight from the block.

A read through a block RAM without its output register spends the block's clock-to-output
(5.8 ns on the ECP5-85F, speed grade 6) and the routing to wherever the reader's register
is placed in one cycle; those paths bound the 8x8 TPU's clock out of context. The ECP5's
``DP16KD`` has an output register (``REGMODE = "OUTREG"``) that Yosys never uses, so
:class:`BlockRAM` instantiates the blocks by hand there: the register that the
engines would load with the row anyway is in the block, and what leaves it is a register.

Timing of the registered form (the same on every family; ``en`` low keeps the data)::

    cycle      t              t+1                    t+2
    r          addr, en       -                      data = row addr
    block      -              row in output latch    row in output register

The unregistered form's data arrives in ``t + 1`` (a :class:`~amaranth.lib.memory.Memory`'s
read port on every family: Yosys maps it to whichever blocks it chooses).

A write presented in cycle ``t`` is seen by reads presented in ``t + 1`` and later. Reads
of the row written in the same cycle are "don't care" (the TPU never makes them).

On ECP5 the memory is cut into blocks of one of the ``DP16KD`` shapes (512 x 36 in its
pseudo-dual-port form, 1,024 x 18, 2,048 x 9, 4,096 x 4, 8,192 x 2, 16,384 x 1; the
write on port A, the read on port B, pins as Yosys's own mapping of the block uses
them; :func:`dp16kd_shape`). With more than one bank a multiplexer selects the bank after
the output registers (its select registered twice beside them).
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from amaranth.utils import ceil_log2

from .memory import read_request, write_request

__all__ = ["BlockRAM", "dp16kd_shape"]

#: ``DP16KD`` shapes: (data width, rows); 36 is the pseudo-dual-port form.
DP16KD_SHAPES = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))


def dp16kd_shape(depth, width):
    """The ``DP16KD`` shape ``(data width, rows, banks, slices)`` for a memory of ``depth``
    rows of ``width`` bits: the fewest banks (no bank multiplexer where one bank will do)
    among the shapes that take at most 10 % more blocks (``banks * slices``) than the
    fewest, then the fewest blocks."""
    shapes = []
    for w, rows in DP16KD_SHAPES:
        banks, slices = -(-depth // rows), -(-width // w)
        shapes.append((banks, banks * slices, (w, rows, banks, slices)))
    fewest = min(blocks for _, blocks, _ in shapes)
    return min(s for s in shapes if s[1] * 10 <= fewest * 11)[2]


class BlockRAM(wiring.Component):
    """``depth`` rows of ``width`` bits; a write port ``w`` and a read port ``r`` whose data
    arrives two cycles after the request, or one with ``registered=False`` (module
    documentation).

    Parameters
    ----------
    registered : bool
        The read data leaves through a register (the default).
    family : str or None
        ``"ecp5"`` and registered: ``DP16KD`` blocks with their output registers (no
        initial contents other than zeros). Otherwise a
        :class:`~amaranth.lib.memory.Memory` (and a register in the fabric).
    init : list of int
        Initial rows (the fabric form only).
    transparent : bool
        Reads presented in the cycle of a write to their row see the new row (the fabric
        form only).
    """

    def __init__(self, depth, width, *, registered=True, family=None, init=(),
                 transparent=False):
        self._registered = registered
        self._depth = depth
        self._width = width
        self._init = list(init)
        self._transparent = transparent
        self._family = None if family is None else str(family).lower()
        if registered and self._family == "ecp5" and (any(self._init) or transparent):
            raise ValueError("BlockRAM: the registered ECP5 form has neither initial contents "
                             "(its block RAMs start at zero) nor transparent reads")
        super().__init__({"w": In(write_request(depth, unsigned(width))),
                          "r": In(read_request(depth, unsigned(width)))})

    def elaborate(self, platform):
        if self._registered and self._family == "ecp5":
            return self._elaborate_ecp5()
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self._width), depth=self._depth,
                                        init=self._init)
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=(wp,) if self._transparent else ())
        m.d.comb += [wp.addr.eq(self.w.addr), wp.data.eq(self.w.data), wp.en.eq(self.w.en),
                     rp.addr.eq(self.r.addr), rp.en.eq(self.r.en)]
        if self._registered:
            data_q = Signal(self._width, name="data_q", reset_less=True)
            m.d.sync += data_q.eq(rp.data)
            m.d.comb += self.r.data.eq(data_q)
        else:
            m.d.comb += self.r.data.eq(rp.data)
        return m

    def _elaborate_ecp5(self):
        m = Module()
        w, rows, banks, slices = dp16kd_shape(self._depth, self._width)
        low = ceil_log2(rows)
        shift = ceil_log2(16384 // rows)   # the row's place in the 14-bit address
        w_row, r_row = self.w.addr[:low], self.r.addr[:low]
        w_bank, r_bank = self.w.addr[low:], self.r.addr[low:]
        outputs = []
        for bank in range(banks):
            w_en = self.w.en if banks == 1 else self.w.en & (w_bank == bank)
            r_en = self.r.en if banks == 1 else self.r.en & (r_bank == bank)
            bank_data = []
            for s in range(slices):
                lo, hi = s * w, min((s + 1) * w, self._width)
                di = Signal(36, name=f"di_{bank}_{s}")
                do = Signal(36, name=f"do_{bank}_{s}")
                m.d.comb += di.eq(self.w.data[lo:hi])
                bank_data.append(do[:hi - lo])
                m.submodules[f"bram_{bank}_{s}"] = self._dp16kd(w, shift, w_row, w_en, di,
                                                                r_row, r_en, do)
            outputs.append(Signal(self._width, name=f"bank_{bank}"))
            m.d.comb += outputs[-1].eq(Cat(*bank_data))
        if banks == 1:
            m.d.comb += self.r.data.eq(outputs[0])
        else:
            # The bank of the row in the output latch (loaded with the request, like the
            # latch), then of the row in the output register.
            sel_latch = Signal(range(banks), name="bank_latch")
            sel_reg = Signal(range(banks), name="bank_reg")
            with m.If(self.r.en):
                m.d.sync += sel_latch.eq(r_bank)
            m.d.sync += sel_reg.eq(sel_latch)
            data = outputs[-1]
            for bank in reversed(range(banks - 1)):
                data = Mux(sel_reg == bank, outputs[bank], data)
            m.d.comb += self.r.data.eq(data)
        return m

    @staticmethod
    def _dp16kd(w, shift, w_row, w_en, di, r_row, r_en, do):
        """One ``DP16KD``: writes on port A, reads on port B through the output registers
        (both ports' in the 36-bit form, whose read data leaves on DOA and DOB). Pins as
        Yosys's ``$__PDPW16KD_`` (36) and ``$__DP16KD_`` (the others) use them."""
        # (The 36-bit form's read data leaves through both ports' pins, DOA's through port
        # A's output register.)
        ports = {"p_DATA_WIDTH_A": w, "p_DATA_WIDTH_B": w,
                 "p_REGMODE_A": "OUTREG" if w == 36 else "NOREG", "p_REGMODE_B": "OUTREG",
                 "p_RESETMODE": "SYNC", "p_ASYNC_RESET_RELEASE": "SYNC",
                 "p_CSDECODE_A": "0b000", "p_CSDECODE_B": "0b000",
                 "p_WRITEMODE_A": "NORMAL", "p_WRITEMODE_B": "NORMAL", "p_GSR": "AUTO",
                 "i_CLKA": ClockSignal(), "i_CLKB": ClockSignal(),
                 "i_OCEA": Const(1), "i_OCEB": Const(1), "i_RSTA": Const(0),
                 "i_RSTB": Const(0), "i_WEB": Const(0), "i_CEB": r_en}
        for i in range(3):
            ports[f"i_CSA{i}"] = Const(0)
            ports[f"i_CSB{i}"] = Const(0)
        # Port A: the write. In the 36-bit form the write enable is the clock enable and
        # ADA0..3 are byte enables; in the 18-bit form ADA0..1 are.
        ports["i_CEA"] = w_en
        ports["i_WEA"] = Const(1) if w == 36 else w_en
        byte_enables = {36: 4, 18: 2}.get(w, 0)
        for i in range(14):
            row_bit = i - shift
            if i < byte_enables:
                ports[f"i_ADA{i}"] = Const(1)
            elif 0 <= row_bit < len(w_row):
                ports[f"i_ADA{i}"] = w_row[row_bit]
            else:
                ports[f"i_ADA{i}"] = Const(0)
            ports[f"i_ADB{i}"] = r_row[row_bit] if 0 <= row_bit < len(r_row) else Const(0)
        # Data: the 36-bit form takes {DIB, DIA} and gives {DOB, DOA}; the others use DIA
        # and DOB.
        for i in range(18):
            ports[f"i_DIA{i}"] = di[i]
            ports[f"i_DIB{i}"] = di[18 + i] if w == 36 else Const(0)
            if w == 36:
                ports[f"o_DOA{i}"] = do[i]
                ports[f"o_DOB{i}"] = do[18 + i]
            else:
                ports[f"o_DOB{i}"] = do[i]
        return Instance("DP16KD", **ports)
