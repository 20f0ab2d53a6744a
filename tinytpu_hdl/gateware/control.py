"""Control unit: fetches, checks and issues instructions; holds registers, status and counters."""

from enum import IntEnum

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..isa import (
    FLAG_ACCUMULATE, FLAG_TRANSPOSE, FLAG_TRANSPOSE_OUT, INSTRUCTION_BITS, NUM_REGS, REG_BITS, ConfigReg, ErrorCode,
    InstructionLayout, Op, Pathway, used_mask,
)
from ..numeric import hdl_mul_const
from .arith import complement, compress, negative, product_terms, quotient
from .gd_unit import GradientCommandLayout
from .loader import LoadCommandLayout, load_after_matmul, matmul_after_load
from .matmul_engine import MatmulCommandLayout, MatmulEngine
from .memory import read_request
from .signatures import valid_stream
from .vector_unit import VectorCommandLayout, VectorUnit

__all__ = ["ControlUnit", "State", "CSR", "CHECK_CYCLES", "INFO_FIELDS", "identity_registers"]


class State(IntEnum):
    """The ``state`` field of the status register."""
    IDLE = 0
    RUNNING = 1
    DONE = 2
    ERROR = 3


class CSR(IntEnum):
    """Addresses of the 32-bit control and status registers seen by the host."""
    STATUS = 0          # [1:0] state, [11:8] error code, [16] array, [17] vector, [18] gd overflow
    ERROR_PC = 1
    PC = 2
    START_PC = 3        # read/write
    WATCHDOG_LO = 4     # read/write: cycle budget of a run, 0 = none
    WATCHDOG_HI = 5
    CYCLES_LO = 6
    CYCLES_HI = 7
    ARRAY_BUSY_LO = 8   # cycles in which a row entered the array
    ARRAY_BUSY_HI = 9
    MACS_LO = 10        # multiply-accumulates performed by the PEs (n*n per row)
    MACS_HI = 11
    INSTRUCTIONS_LO = 12
    INSTRUCTIONS_HI = 13
    INFO = 14           # [7:0] n, [15:8] data width, [23:16] data fraction bits
    UB_DEPTH = 15
    ACC_DEPTH = 16
    IMEM_DEPTH = 17
    SEED = 18           # read/write: writing reseeds the stochastic-rounding generators
    CONFIG = 19         # TPUConfig.fingerprint() of the configuration built
    REG_BASE = 32       # R0..R15, read/write (R0 reads 0)
    CFG_BASE = 48       # LEAK, LR, LOSS_SCALE, read/write


#: The fields of the ``INFO`` register: (name, lowest bit, value of a configuration); 8 bits each.
INFO_FIELDS = (("n", 0, lambda cfg: cfg.n), ("data width", 8, lambda cfg: cfg.data.width),
               ("data fraction bits", 16, lambda cfg: cfg.data.frac))


def identity_registers(cfg):
    """The read-only registers that say what the device was built from, and their values
    for ``cfg`` (the gateware's constants, the reference model's values, what the host
    compares): ``INFO``, the memory depths and ``CONFIG``."""
    return {CSR.INFO: sum((value(cfg) & 0xFF) << shift for _, shift, value in INFO_FIELDS),
            CSR.UB_DEPTH: cfg.ub_depth, CSR.ACC_DEPTH: cfg.acc_depth,
            CSR.IMEM_DEPTH: cfg.imem_depth, CSR.CONFIG: cfg.fingerprint()}


class _Mode(IntEnum):
    IDLE = 0
    FETCH = 1
    DECODE = 2
    ISSUE = 3
    DRAIN = 4
    DONE = 5
    ERROR = 6


def _bit_groups():
    """The instruction word cut into the fewest bit ranges ``(lo, hi)`` that every opcode
    either uses entirely or not at all: legality then needs one OR per range."""
    cuts = {0, INSTRUCTION_BITS}
    for code in Op:
        mask = used_mask(code)
        for bit in range(1, INSTRUCTION_BITS):
            if ((mask >> bit) & 1) != ((mask >> (bit - 1)) & 1):
                cuts.add(bit)
    cuts = sorted(cuts)
    return list(zip(cuts, cuts[1:]))


#: Issue cycles an engine instruction spends on its operand checks before it may issue
#: (or fault): one, and two for VPU, whose overlap checks compare addresses with the
#: span, which its first check cycle adds up from its carry-save terms.
CHECK_CYCLES = {Op.LOADW: 1, Op.MATMUL: 1, Op.VPU: 2, Op.GD: 1}

#: Width of the issue checks' arithmetic: a 17-bit effective address plus a span of up to
#: 24 bits (``(rows - 1) * stride``), with a sign bit.
CHECK_WIDTH = 26
#: Width of a range check without a span: an address, a register value and a count (each
#: below 2 ** 16) less a depth, which lies in [-2 ** 18, 2 ** 18).
ROWS_CHECK_WIDTH = (3 * 0xFFFF).bit_length() + 1


class ControlUnit(wiring.Component):
    """Runs the program in the instruction memory on its own.

    Parameters
    ----------
    cfg : TPUConfig
    instruction_register : bool
        Keep the registers that only serve speed: the instruction memory's output
        registered before it is decoded (the memory's output holds the word anyway) and
        ``pc + 1`` registered beside ``pc``. Cycles and results are the same without
        them (for FPGAs short of logic cells).
    register_ram : bool
        Keep the index registers in block RAM (a copy per read port) instead of
        flip-flops: same values and cycles, few logic cells (for FPGAs short of them).
        The registers then keep their values through a reset.
    span_multiplier : bool
        Compute the span ``(rows - 1) * stride`` of strided operands with a multiply (one
        DSP block) instead of carry-save partial products (logic). Same results and
        timing; the multiply suits FPGAs with DSPs to spare and few logic cells.

    Members
    -------
    imem : Out(read_request)           -- instruction memory read port
    load_cmd, matmul_cmd, vpu_cmd, gd_cmd : Out(valid_stream)
        Commands to the engines, valid for one cycle when an instruction issues.
    load_ready, load_busy, matmul_ready, matmul_busy, vpu_busy, gd_busy : In(1)
    unit_reading : In(1)               -- with ``cfg.overlap_units``: the vector or
                                          gradient-descent unit still reads accumulator rows
    unit_r1_pending : In(1)            -- with ``cfg.overlap_units``: the unit will read aux
                                          rows or parameters after this cycle
    row_fed : In(1)                    -- a row entered the array this cycle (counters)
    array_overflow, vpu_overflow, gd_overflow : In(1)  -- saturation pulses (sticky flags)
    leak, lr, loss_scale : Out         -- configuration registers
    start, stop, clear : In(1)         -- host commands (one-cycle pulses)
    host_conflict : In(1)              -- the host wrote a memory while the program ran
    csr_addr, csr_rdata, csr_wdata, csr_we : host access to the CSRs (a read presented in
                                       cycle t answers in cycle t + 1)
    running : Out(1)
    seed, reseed : Out                 -- the SEED CSR, and a pulse in the cycle after the host
                                          writes it
    state : Out(2)                     -- the ``State`` of the status register
    pc : Out(16)                       -- the program counter (for waveforms)

    Timing
    ------
    Three stages: fetch (instruction memory read), decode (from the instruction
    register: effective addresses, ``(rows - 1) * stride`` as two carry-save terms,
    legality, one-hot opcode classes, the branch decision and next pc, all
    registered) and issue (waits, engine commands; for an engine instruction, the
    range and overlap checks from the decoded registers take the first issue cycle,
    the first two for VPU (:data:`CHECK_CYCLES`), and are registered, so it issues
    from the cycle after them)::

        cycle        s      s+1     s+2     s+3      ...  c       c+1     c+2
        state        start  FETCH   LATCH   DECODE   ISSUE...     DECODE  ISSUE
        imem read           pc0             pc1                           (pc2 in c+1)
        instruction                         i0 dec   i0 issues    i1 dec  i1 ...

    A ``start`` in cycle ``s`` fetches the instruction at ``START_PC`` in cycle
    ``s+1``; it is latched in ``s+2``, decoded in ``s+3`` and may issue from
    ``s+4``. The decode cycle also fetches the next instruction (the branch is
    resolved there), so each later instruction is decoded in the cycle after
    its predecessor issues and may issue one cycle later (an engine instruction
    two cycles later, VPU three): two cycles per instruction when nothing waits,
    three for LOADW, MATMUL and GD, four for VPU. An instruction issues in the first
    cycle its conditions hold. An error found in issue (or a fetch beyond the
    instruction memory, or the watchdog, or a host stop) stops the run, waits
    until the engines have finished the instructions already issued, then
    enters the error state. ``HALT`` issues when every engine is idle and
    enters the done state. ``CYCLES`` counts the cycles from the first fetch
    to the halt (or the end of draining) inclusive.

    Issue conditions (in-order issue, engine-level hazards; with ``cfg.overlap_units``
    region hazards between the loads and matmuls and the last VPU or GD pass):

    ========  ============================================================
    LOADW     loader ready; ``n`` cycles since the last MATMUL issued (``n - 1`` with
              ``cfg.registered_weight_rows``, at least 1: :func:`.load_after_matmul`);
              vector and gradient units idle; with ``cfg.overlap_units``: or the
              last pass writes none of the rows loaded and has read its aux rows or
              parameters, if any (a VPU with LOSS or DERIV, a GD), up to this cycle
    MATMUL    matmul engine ready; ``max(n - 1, 1)`` cycles since the last LOADW
              issued (``n`` with ``cfg.registered_weight_rows``:
              :func:`.matmul_after_load`); vector and gradient units idle; with
              ``cfg.overlap_units``: or the last pass writes none of the rows streamed, and the
              destination row is at or below the first accumulator row the pass
              reads, or past its last, or the pass has read its rows; with
              ``cfg.chains_passes`` the rows streamed may be the pass's if it is a lone
              VPU (issued with the unit idle), not transposed, both strides are 1, and
              ``L + src - dst`` cycles have passed since the VPU issued (``L`` =
              :meth:`.VectorUnit.latency`: each row is read after it is written)
    VPU, GD   loader, matmul engine, vector and gradient units all idle; with
              ``cfg.chase_matmul``: loader, vector and gradient units idle, and the
              matmul engine idle, or ready (its rows streamed) with
              ``MatmulEngine.chase_after`` cycles since the last MATMUL issued and the
              source row at or below that MATMUL's destination row; with
              ``cfg.overlap_units`` also a source row past the MATMUL's last, and the
              rows need not have streamed unless the pass writes one of them;
              with ``cfg.chains_passes`` a VPU also with the vector unit busy, if it
              is ``chain_ready`` (:meth:`.VectorUnit.chain_after`) and the VPU is not
              transposed, reads no aux or bias row in the rows the passes in flight
              write (``u_lo .. u_hi``, their hull), and, with a bias row, no aux row is
              still to be read (it would meet the bias read on port r1)
    CFG       vector and gradient units idle
    SYNC      every engine idle (HALT likewise)
    others    none
    ========  ============================================================
    """

    def __init__(self, cfg, *, instruction_register=True, span_multiplier=False,
                 register_ram=False):
        if register_ram and instruction_register:
            raise ValueError("register_ram needs the instruction memory's output undelayed "
                             "(instruction_register=False)")
        self._cfg = cfg
        self._register_ram = bool(register_ram)
        self._instruction_register = instruction_register
        self._span_multiplier = bool(span_multiplier)
        super().__init__({
            "imem": Out(read_request(cfg.imem_depth, INSTRUCTION_BITS)),
            "load_cmd": Out(valid_stream(LoadCommandLayout(cfg))),
            "load_ready": In(1), "load_busy": In(1),
            "matmul_cmd": Out(valid_stream(MatmulCommandLayout(cfg))),
            "matmul_ready": In(1), "matmul_busy": In(1),
            "vpu_cmd": Out(valid_stream(VectorCommandLayout(cfg))),
            "vpu_busy": In(1),
            "gd_cmd": Out(valid_stream(GradientCommandLayout(cfg))),
            "gd_busy": In(1),
            # (With ``cfg.overlap_units``: a unit still reads accumulator rows.)
            **({"unit_reading": In(1), "unit_r1_pending": In(1)}
               if cfg.overlap_units else {}),
            # (With ``cfg.chains_passes``: the vector unit would take a pass now behind the
            # one in flight.)
            **({"vpu_chain_ready": In(1)} if cfg.chains_passes else {}),
            "row_fed": In(1),
            "array_overflow": In(1), "vpu_overflow": In(1), "gd_overflow": In(1),
            "leak": Out(cfg.scalar.shape), "lr": Out(cfg.scalar.shape),
            "loss_scale": Out(cfg.scalar.shape),
            "start": In(1), "stop": In(1), "clear": In(1), "host_conflict": In(1),
            "csr_addr": In(6), "csr_rdata": Out(32), "csr_wdata": In(32), "csr_we": In(1),
            "running": Out(1),
            "state": Out(2),
            "pc": Out(16),
            "seed": Out(32), "reseed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        n = cfg.n

        mode = Signal(_Mode)
        pc = Signal(16)
        start_pc = Signal(16)
        error_code = Signal(4)
        error_pc = Signal(16)
        width = cfg.counter_width
        watchdog = Signal(width)
        cycles = Signal(width)
        array_busy = Signal(width)
        issued = Signal(width)
        flag_array = Signal()
        flag_vpu = Signal()
        flag_gd = Signal()
        # R0 is the constant 0. Each register has one write enable and shares one write
        # data multiplexer: instructions write while running, the host only while not.
        cfgs = Array(Signal(16, name=f"cfg_{r.name.lower()}") for r in ConfigReg)
        reg_we = Signal(NUM_REGS)
        cfg_we = Signal(len(ConfigReg))
        reg_wdata = Signal(16)
        cfg_wdata = Signal(16)
        # Beside each register, whether it holds 1 (the DJNZ branch decision in decode
        # then selects one bit instead of comparing a selected register).
        reg_is_one = Array([Const(0, 1)] + [Signal(name=f"r{i}_is_one")
                                            for i in range(1, NUM_REGS)])
        for i in range(1, NUM_REGS):
            with m.If(reg_we[i]):
                m.d.sync += reg_is_one[i].eq(reg_wdata == 1)
        if not self._register_ram:
            regs = Array([Const(0, 16)] + [Signal(16, name=f"r{i}")
                                           for i in range(1, NUM_REGS)])
            for i in range(1, NUM_REGS):
                with m.If(reg_we[i]):
                    m.d.sync += regs[i].eq(reg_wdata)
        for r in ConfigReg:
            with m.If(cfg_we[r]):
                m.d.sync += cfgs[r].eq(cfg_wdata)
        load_hold = Signal(range(n + 1))     # cycles until a LOADW may issue
        switch_hold = Signal(range(n + 1))   # cycles until a MATMUL may issue
        # (Each set at an issue to the cycles to wait after the next: a MATMUL or LOADW
        # may issue in the cycle after the one in which its hold is at most one.)
        load_wait = load_after_matmul(cfg) - 1
        switch_wait = matmul_after_load(cfg) - 1
        # Cycles until a VPU or GD may read the last MATMUL's rows as they are written
        # (``cfg.chase_matmul``), and that MATMUL's accumulator destination.
        chase_delay = MatmulEngine.chase_after(cfg)
        chase_hold = Signal(range(chase_delay + 1))
        mm_dst = Signal(17)

        running = mode.matches(_Mode.FETCH, _Mode.DECODE, _Mode.ISSUE, _Mode.DRAIN)
        m.d.comb += [
            self.running.eq(running),
            self.pc.eq(pc),
            self.leak.eq(cfgs[ConfigReg.LEAK]),
            self.lr.eq(cfgs[ConfigReg.LR]),
            self.loss_scale.eq(cfgs[ConfigReg.LOSS_SCALE]),
        ]

        # --- counters -------------------------------------------------------------------
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)
        # The watchdog check is registered: a running cycle in which the counter equals the
        # budget minus one (kept beside the budget, ``wd_last``, a cycle after each write of
        # it; the host cannot start a run in the cycle it writes a register) is followed by
        # one in which it equals the budget, the cycle that stops the run (``wd_expired``,
        # checked in every running cycle before draining: the counter, starting at 0 and
        # counting every running cycle, first reaches the budget exactly).
        wd_last = Signal(width)
        wd_armed = Signal()
        wd_expired = Signal()
        m.d.sync += [wd_last.eq(watchdog - 1), wd_armed.eq(watchdog != 0),
                     wd_expired.eq(wd_armed & running & (cycles == wd_last))]
        with m.If(self.row_fed):
            m.d.sync += array_busy.eq(array_busy + 1)
        # The instruction counter counts the cycle after each issue (a registered pulse, so
        # that the issue decision does not drive its adder): the last issue of a run, the
        # HALT's, is counted in the first cycle after the run, before any host command can
        # read the counter or start another run.
        issue_pulse = Signal()
        m.d.sync += issue_pulse.eq(0)
        with m.If(issue_pulse):
            m.d.sync += issued.eq(issued + 1)
        # Every row that enters the array makes n * n multiply-accumulates.
        macs = hdl_mul_const(array_busy, n * n)[:width]
        with m.If(self.array_overflow):
            m.d.sync += flag_array.eq(1)
        with m.If(self.vpu_overflow):
            m.d.sync += flag_vpu.eq(1)
        with m.If(self.gd_overflow):
            m.d.sync += flag_gd.eq(1)
        with m.If(load_hold != 0):
            m.d.sync += load_hold.eq(load_hold - 1)
        with m.If(switch_hold != 0):
            m.d.sync += switch_hold.eq(switch_hold - 1)
        # Whether each hold has run out, registered beside it (set with it where an
        # instruction issues), so that the issue decision reads one bit.
        load_free = Signal(init=1)
        switch_free = Signal(init=1)
        chase_free = Signal(init=1)
        def at_most_one(hold):
            # A one-bit counter is always <= 1 (written as a constant: a comparison that
            # cannot fail is a lint warning in the Verilog at N = 1).
            return hold[1:] == 0 if len(hold) > 1 else Const(1)
        m.d.sync += [load_free.eq(at_most_one(load_hold)),
                     switch_free.eq(at_most_one(switch_hold)),
                     chase_free.eq(at_most_one(chase_hold))]
        with m.If(chase_hold != 0):
            m.d.sync += chase_hold.eq(chase_hold - 1)

        # --- fetch ----------------------------------------------------------------------
        # The instruction register latches the instruction memory's output in the cycle
        # after each fetch, so that no decode logic hangs off the block RAM's output.
        if self._instruction_register:
            fetched = Signal()
            ir = Signal(INSTRUCTION_BITS)
            m.d.sync += fetched.eq(self.imem.en)
            with m.If(fetched):
                m.d.sync += ir.eq(self.imem.data)
        else:
            # The memory's output holds the fetched word until the next fetch, which is
            # never before the decode cycle: the same values, without the register.
            ir = self.imem.data

        # --- decode (from the instruction register and the index registers) -------------
        ins = data.View(InstructionLayout, ir)
        op = ins.opcode
        rows = ins.count
        # The register file's four read ports (each an 8-way multiplexer, built once).
        reg_a, reg_b, reg_c, reg_d = (Signal(16, name=f"reg_{s}") for s in "abcd")
        fields = [ins.a.reg, ins.b.reg, ins.c.reg, ins.d.reg]
        if not self._register_ram:
            m.d.comb += [value.eq(regs[field])
                         for value, field in zip((reg_a, reg_b, reg_c, reg_d), fields)]
        else:
            # The register file in block RAM: one copy per read port (four for decode, one
            # for the host), written together. Without the instruction register the
            # instruction memory's output shows the next instruction from the cycle after
            # its fetch, which is before its decode cycle: its register fields address the
            # copies then, and decode finds the values on their outputs. The register the
            # instruction before it wrote in its issue cycle (the last cycle of those reads)
            # is forwarded from beside the write.
            assert not self._instruction_register
            # (Synthesis would make flip-flops of so small a memory unless told.)
            m.submodules.regfile = regfile = Memory(shape=16, depth=NUM_REGS,
                                                    init=[0] * NUM_REGS,
                                                    attrs={"ram_style": "block"})
            rf_w = regfile.write_port()
            rf_addr = Signal(REG_BITS)
            m.d.comb += [rf_w.addr.eq(rf_addr), rf_w.data.eq(reg_wdata),
                         rf_w.en.eq(reg_we[1:].any())]
            with m.Switch(reg_we):
                for i in range(1, NUM_REGS):
                    with m.Case(1 << i):
                        m.d.comb += rf_addr.eq(i)
            wrote = Signal()
            wrote_reg = Signal(REG_BITS)
            wrote_value = Signal(16)
            m.d.sync += [wrote.eq(rf_w.en), wrote_reg.eq(rf_addr), wrote_value.eq(reg_wdata)]
            for value, field in zip((reg_a, reg_b, reg_c, reg_d), fields):
                port = regfile.read_port()
                m.d.comb += [port.addr.eq(field), port.en.eq(1),
                             value.eq(Mux(wrote & (wrote_reg == field), wrote_value,
                                          port.data))]
            host_port = regfile.read_port()
            m.d.comb += [host_port.addr.eq(self.csr_addr[:REG_BITS]), host_port.en.eq(1)]

        legal = Signal()
        groups = _bit_groups()
        nonzero = Signal(len(groups))
        for i, (lo, hi) in enumerate(groups):
            m.d.comb += nonzero[i].eq(ir[lo:hi].any())
        with m.Switch(op):
            for code in Op:
                with m.Case(code):
                    unused = ~used_mask(code)
                    ok = ~Cat(nonzero[i] for i, (lo, hi) in enumerate(groups)
                              if (unused >> lo) & 1).any()
                    if code == Op.CFG:
                        ok = ok & (ins.flags < len(ConfigReg))
                    m.d.comb += legal.eq(ok)
            with m.Default():
                m.d.comb += legal.eq(0)

        # The next fetch address is on a short path: the branch decision (R - 1 != 0 is
        # R != 1) reads the register's "holds 1" flag, and the range checks of both
        # candidates are made side by side (pc + 1 < depth as pc < depth - 1).
        taken = (op == Op.DJNZ) & ~reg_is_one[ins.a.reg]
        # pc + 1 (17 bits: it may be 65536) is a register loaded beside pc, so that no
        # adder lies on the next fetch's address path (without the speed registers, the
        # sum).
        seq_pc = Signal(17) if self._instruction_register else pc + 1

        def seq_pc_loads(value):
            """The statements that load ``seq_pc`` where ``pc`` loads ``value``."""
            return [seq_pc.eq(value + 1)] if self._instruction_register else []
        next_pc = Mux(taken, ins.count, seq_pc)
        next_ok = Mux(taken, ins.count < cfg.imem_depth, pc < cfg.imem_depth - 1)

        # Decoded instruction, registered for the issue stage.
        d_op = Signal(6)
        d_legal = Signal()
        d_bad = Signal()                 # operand errors that need no address arithmetic
        # Each address operand as its base and its register's value, registered apart (no
        # adder after the register file's multiplexers in decode): the issue checks take
        # the two as separate carry-save terms, and the sums are registered in the first
        # issue cycle for the commands (``e_q``) and for the VPU's overlap checks.
        d_base = [Signal(16, name=f"d_base_{s}") for s in "abcd"]
        d_regv = [Signal(16, name=f"d_reg_{s}") for s in "abcd"]
        e_q = [Signal(17, name=f"e{s}_q") for s in "abcd"]
        m.d.sync += [e.eq(b + r) for e, b, r in zip(e_q, d_base, d_regv)]
        terms = [[b, r] for b, r in zip(d_base, d_regv)]
        d_count = Signal(16)             # the count field: rows, or the value of a CFG
        # ``rows - k`` for the constants ``k`` the range checks subtract from an address
        # range's end (a memory's depth + 1) and the overlap checks (1), sign-extended to
        # ``CHECK_WIDTH`` (the range checks take the low ``ROWS_CHECK_WIDTH`` bits).
        past = set() if self._span_multiplier else {cfg.acc_depth + 1,
                                                      cfg.ub_loadable_rows + 1}
        if cfg.overlap_units:
            past.add(1)
        d_rows_past = {k: Signal(CHECK_WIDTH, name=f"d_rows_past_{k}") for k in sorted(past)}
        # (rows - 1) * stride in carry-save form (two terms whose sum is the span modulo
        # 2 ** CHECK_WIDTH): rows * stride as the stride's partial products of rows, minus
        # the stride, through 3:2 compressors, no carry chain and no multiplier block
        # (with ``span_multiplier``: the product, and zero).
        d_span = [Signal(CHECK_WIDTH, name=f"d_span_{i}") for i in range(2)]
        d_stride = Signal(8)
        d_flags = Signal(8)
        d_rd = Signal(REG_BITS)
        d_next_pc = Signal(16)
        d_next_ok = Signal()
        # One-hot opcode classes, decoded here so that the issue decision and the checks
        # start from registers: the engine instructions (each its own flag, which also says
        # which readiness condition it issues on, see ``can_issue``), those that wait for
        # every engine or for the two units, and the VPU's operand uses.
        d_is = {op_: Signal(name=f"d_is_{op_.name.lower()}")
                for op_ in (Op.LOADW, Op.MATMUL, Op.VPU, Op.GD)}
        d_waits_all, d_waits_units, d_engine, d_chases = (
            Signal(name=f"d_{name}") for name in ("waits_all", "waits_units", "engine",
                                                  "chases"))
        chase = cfg.chase_matmul
        d_vpu_aux, d_vpu_bias = Signal(), Signal()
        d_in_place_ok = Signal()         # a VPU may write its aux rows in place
        ir_pathway = ins.flags[:4]
        ir_aux = (ir_pathway[Pathway.LOSS.bit_length() - 1] |
                  ir_pathway[Pathway.DERIV.bit_length() - 1])
        ir_bias = ir_pathway[Pathway.BIAS.bit_length() - 1]
        engine = op.matches(Op.LOADW, Op.MATMUL, Op.VPU, Op.GD)
        # A transposed VPU writes rows up to (rows - 1) // n + (n - 1) * stride past its
        # destination (``vpu_transposed_extent``): that extent replaces the span, as the
        # quotient and the stride's partial products (two terms, like the span). With one
        # lane it is (rows - 1) * 1: the multiply form multiplies by 1 instead.
        assert FLAG_TRANSPOSE_OUT == 1 << 4
        ir_transposed = (op == Op.VPU) & ins.flags[4]
        if self._span_multiplier:
            # One multiply (a DSP block) and a constant zero for the second term.
            factor = ins.stride if n > 1 else Mux(ir_transposed, 1, ins.stride)
            span = ((rows - 1)[:16] * factor, Const(0, CHECK_WIDTH))
        else:
            span_terms = product_terms(rows, ins.stride) + [complement(ins.stride, CHECK_WIDTH)]
            span = compress(span_terms, CHECK_WIDTH, carry_in=1)
        # (rows - 1) // n with the decrement inside the quotient's compressors: rows == 0
        # is a bad operand (``d_bad``) whatever the extent.
        extent_terms = [quotient(rows, n, less=1)] + [
            Cat(Const(0, bit), ins.stride) for bit in range((n - 1).bit_length())
            if ((n - 1) >> bit) & 1]
        if self._span_multiplier and n == 1:
            extent = span
        elif self._span_multiplier:
            extent = (sum(extent_terms[1:], extent_terms[0]), Const(0, CHECK_WIDTH))
        else:
            extent = compress(extent_terms, CHECK_WIDTH)
        # ``cfg.overlap_units``: the last VPU's or GD's buffer rows written (``u_lo ..
        # u_hi``), accumulator rows read (``ua_lo .. ua_hi``), whether it reads the loader's
        # port after its first cycle (``u_r1``), and the last MATMUL's streamed rows
        # (``mm_src .. mm_hi``), set when they issue (see the issue checks). Decode
        # subtracts them from the operands' base addresses (immediates), registered, so
        # that each comparison in the check cycle adds no more terms than a range check.
        overlap_diffs = {}
        if cfg.overlap_units:
            u_lo, u_hi, ua_lo, ua_hi, mm_src, mm_hi, mm_dst_end = (
                Signal(17, name=name) for name in ("u_lo", "u_hi", "ua_lo", "ua_hi", "mm_src",
                                                   "mm_hi", "mm_dst_end"))
            u_r1 = Signal()
            overlap_diffs = {
                "a_lo": ins.a.addr - u_lo, "hi_a": u_hi - ins.a.addr,
                "alo_b": ua_lo - ins.b.addr, "ahi_b": ua_hi - ins.b.addr,
                "b_msrc": ins.b.addr - mm_src, "mhi_b": mm_hi - ins.b.addr,
                "mde_a": mm_dst_end - ins.a.addr,
            }
        if not self._span_multiplier:
            # A MATMUL's source range check, ``a + span - ub_depth < 0``: the immediate less
            # the depth from decode, so that the check adds four terms, not five.
            overlap_diffs["a_ub"] = ins.a.addr - cfg.ub_depth
        d_diff = {name: Signal(CHECK_WIDTH, name=f"d_{name}") for name in overlap_diffs}
        decode_regs = [
            *[d_diff[name].eq(value) for name, value in overlap_diffs.items()],   # sign-extended
            d_op.eq(op), d_legal.eq(legal),
            d_bad.eq(engine & ((rows == 0) | ((op == Op.LOADW) & (rows > n)) |
                               (ir_transposed & ir_aux))),
            *[b.eq(slot.addr) for b, slot in zip(d_base, (ins.a, ins.b, ins.c, ins.d))],
            *[r.eq(v) for r, v in zip(d_regv, (reg_a, reg_b, reg_c, reg_d))],
            d_count.eq(rows),
            *[term.eq(rows - k) for k, term in d_rows_past.items()],
            *[term.eq(span[i] if extent is span else Mux(ir_transposed, extent[i], span[i]))
              for i, term in enumerate(d_span)],
            d_stride.eq(ins.stride), d_flags.eq(ins.flags),
            d_rd.eq(ins.a.reg),
            d_next_pc.eq(next_pc), d_next_ok.eq(next_ok),
            d_waits_all.eq(op.matches(Op.SYNC, Op.HALT) if chase else
                           op.matches(Op.VPU, Op.GD, Op.SYNC, Op.HALT)),
            d_chases.eq(op.matches(Op.VPU, Op.GD) if chase else 0),
            d_waits_units.eq(op == Op.CFG),
            d_engine.eq(engine),
            d_vpu_aux.eq((op == Op.VPU) & ir_aux), d_vpu_bias.eq((op == Op.VPU) & ir_bias),
            d_in_place_ok.eq((ins.stride != 0) | (rows == 1)),
        ] + [flag.eq(op == code) for code, flag in d_is.items()]

        # --- issue checks (from the decoded registers) -----------------------------------
        # Each check is one carry chain after at most two levels of 3:2 compressors: the
        # sign of a sum of registers, the span's two terms and a constant. An address range
        # ``addr .. addr + extent`` fits a memory of ``depth`` rows if
        # ``addr + extent - depth`` is negative; for ``extent = rows - 1`` that is
        # ``addr + rows - (depth + 1)``.
        # Sums with the span are taken modulo 2 ** CHECK_WIDTH (the carry-save terms are
        # exact only modulo that); the others in the fewest bits that hold them. The
        # multiply form's span is one term.
        spans = d_span if not self._span_multiplier else d_span[:1]

        def below(plus, minus):
            if any(t is d_span[0] or t is d_span[1] for t in plus):
                width = CHECK_WIDTH
            else:
                width = max(sum((1 << len(Value.cast(t))) - 1 for t in terms)
                            for terms in (plus, minus)).bit_length() + 1
            return negative(plus, minus, width=width)

        def rows_fit(addr, depth):
            # ``rows - (depth + 1)`` comes from decode (``d_rows_past``, not with
            # ``span_multiplier``, whose small FPGAs keep the logic cells): one compressor
            # level before the carry chain instead of two.
            if self._span_multiplier:
                return below([*addr, d_count], [Const(depth + 1)])
            return negative([*addr, d_rows_past[depth + 1]], width=ROWS_CHECK_WIDTH)

        def span_fits(addr, depth, span_terms):
            return below([*addr, *span_terms], [Const(depth)])

        is_loadw, is_matmul, is_vpu, is_gd = (d_is[o] for o in (Op.LOADW, Op.MATMUL, Op.VPU,
                                                                 Op.GD))
        # A VPU's checks compare addresses with its span (a true span is below 2 ** 24),
        # added up in its first check cycle and registered; they are registered at the end
        # of its second (``CHECK_CYCLES``).
        if self._span_multiplier:
            vpu_span = d_span[0]
        else:
            vpu_span = Signal(24)
            m.d.sync += vpu_span.eq((d_span[0] + d_span[1])[:24])
        # aux overlap: ec <= eb + span and eb <= ec + span (unless in place);
        # bias overlap: eb <= ed <= eb + span; from the sums registered in the first check
        # cycle, like the span.
        _, eb, ec, ed = e_q
        aux_overlap = ~below([eb, vpu_span], [ec]) & ~below([ec, vpu_span], [eb])
        in_place = (ec == eb) & d_in_place_ok
        bias_overlap = ~below([ed], [eb]) & ~below([eb, vpu_span], [ed])
        # Per kind, whether any check of the instruction failed (each check gated by the
        # registered flag of the instruction it belongs to, so that no opcode decode or
        # multiplexer follows the carry chains): ``bad``, overlapping operands (and the
        # decode-time operand errors); ``ub``, ``acc``, a range beyond the buffer or the
        # accumulators. The first issue cycle of an engine instruction registers them and
        # the error code is chosen from these three bits in the following cycles.
        bad = (d_bad | (d_vpu_aux & aux_overlap & ~in_place) | (d_vpu_bias & bias_overlap))
        ta, tb = terms[0], terms[1]
        # (The rows loaded, aux and bias rows and parameters are read from the buffer's
        # second copy, which may hold fewer rows: ``cfg.ub_loadable_rows``.)
        ub_rows, loadable = cfg.ub_depth, cfg.ub_loadable_rows
        ub_out = ((is_loadw & ~rows_fit(ta, loadable)) |
                  (is_matmul & ~(span_fits(ta, ub_rows, spans) if self._span_multiplier else
                                 negative([d_diff["a_ub"], d_regv[0], *spans],
                                          width=CHECK_WIDTH))) |
                  (is_vpu & ~span_fits([eb], ub_rows, [vpu_span])) |
                  (d_vpu_aux & ~span_fits([ec], loadable, [vpu_span])) |
                  (d_vpu_bias & ~below([ed], [Const(loadable)])) |
                  (is_gd & ~rows_fit(tb, loadable)))
        acc_out = (((is_vpu | is_gd) & ~rows_fit(ta, cfg.acc_depth)) |
                   (is_matmul & ~rows_fit(tb, cfg.acc_depth)))

        # The operand and range checks of an engine instruction take its first issue cycle
        # and are registered: the instruction may issue (or fail) from its second. The
        # codes in the order of the checks: bad operands, then the ranges in operand order
        # (a MATMUL's buffer source before its accumulator destination, a VPU's and a GD's
        # accumulator source before their buffer operands).
        # (``checked``: the check cycles are over; the fault bits are those of an engine
        # instruction only, so that ``checks_failed`` needs no decode of the opcode.)
        engine_op = d_engine
        checked = Signal()
        checked_once = Signal()
        assert set(CHECK_CYCLES.values()) == {1, 2} and CHECK_CYCLES[Op.VPU] == 2
        bad_q, ub_q, acc_q = Signal(), Signal(), Signal()
        m.d.sync += [bad_q.eq(bad), ub_q.eq(ub_out), acc_q.eq(acc_out)]
        # Whether a VPU's or GD's accumulator source starts at or below the last MATMUL's
        # destination (registered with the checks; no MATMUL issues in between); with
        # ``cfg.overlap_units`` also whether it starts past the MATMUL's last row (the
        # rows it reads are then written by earlier MATMULs, which have finished by the
        # chase delay).
        src_below_q = Signal()
        if self._span_multiplier:
            m.d.sync += src_below_q.eq(below(ta, [mm_dst, Const(1)]))
        else:
            # (``a <= mm_dst`` as ``a + ~mm_dst < 0``: three terms, one compressor level.)
            src_width = max((1 << 16) * 2, 1 << len(mm_dst)).bit_length() + 1
            m.d.sync += src_below_q.eq(negative([*ta, complement(mm_dst, src_width)],
                                                width=src_width))
        chase_ok = src_below_q
        if cfg.overlap_units:
            src_above_q = Signal()
            m.d.sync += src_above_q.eq(negative([d_diff["mde_a"]], [d_regv[0]],
                                                width=CHECK_WIDTH))
            chase_ok = src_below_q | src_above_q
        checked_error = Signal(4)
        acc_first = is_vpu | is_gd
        with m.If(bad_q):
            m.d.comb += checked_error.eq(ErrorCode.BAD_OPERAND)
        with m.Elif(acc_q & (acc_first | ~ub_q)):
            m.d.comb += checked_error.eq(ErrorCode.ACC_RANGE)
        with m.Elif(ub_q):
            m.d.comb += checked_error.eq(ErrorCode.UB_RANGE)
        checks_failed = bad_q | ub_q | acc_q

        all_idle = ~(self.load_busy | self.matmul_busy | self.vpu_busy | self.gd_busy)
        units_idle = ~(self.vpu_busy | self.gd_busy)
        # With ``cfg.overlap_units`` the buffer's port r0 streams into the array only, and
        # LOADW and MATMUL wait for a busy unit only if they conflict with its pass: the
        # rows it writes in the buffer; for a LOADW, whether the pass has still to read
        # through the loader's port r1 (a VPU's aux rows, a GD's parameters); for a
        # MATMUL, whether its accumulator destination starts inside the rows the pass reads,
        # past their first (``ua_lo < dst <= ua_hi``), until the pass has read them
        # (``unit_reading`` falls). (Both read and write accumulator rows in order, one per
        # cycle, and the matmul writes its first row more than a cycle after it issues, so
        # a destination at or below the pass's first row is written behind the pass's
        # reads.) The comparisons with a LOADW's or MATMUL's operands take its check cycle
        # and are registered like the checks.
        load_units_ok = units_idle
        matmul_units_ok = units_idle
        vpu_chain_ok = Const(0)
        if cfg.overlap_units:
            # (With chained passes, a VPU issued while the vector unit is busy extends
            # ``u_lo .. u_hi`` to the hull of its rows and those of the passes in flight,
            # and ``u_r1`` holds while any of them reads aux rows.)
            chaining = self.vpu_busy if cfg.chains_passes else Const(0)
            vpu_hi = (e_q[1] + vpu_span)[:17]
            if cfg.chains_passes:
                # The pass's last written row, registered in its second check cycle.
                vpu_hi_q = Signal(17)
                m.d.sync += vpu_hi_q.eq(vpu_hi)
                vpu_hi = vpu_hi_q
            with m.If(self.vpu_cmd.valid | self.gd_cmd.valid):
                m.d.sync += [ua_lo.eq(e_q[0]), ua_hi.eq((e_q[0] + d_count - 1)[:17])]
            with m.If(self.gd_cmd.valid | (self.vpu_cmd.valid &
                                           ~(chaining & (u_lo < e_q[1])))):
                m.d.sync += u_lo.eq(e_q[1])
            with m.If(self.vpu_cmd.valid):
                m.d.sync += u_r1.eq(d_vpu_aux | (chaining & u_r1))
                with m.If(~(chaining & (u_hi > vpu_hi))):
                    m.d.sync += u_hi.eq(vpu_hi)
            with m.If(self.gd_cmd.valid):
                m.d.sync += [u_hi.eq((e_q[1] + d_count - 1)[:17]), u_r1.eq(1)]

            def neg(plus, minus=()):
                return negative(plus, minus, width=CHECK_WIDTH)
            reg_a, reg_b = d_regv[0], d_regv[1]
            rows_less_1 = d_rows_past[1]
            # [first, last] overlaps [u_lo, u_hi] unless last < u_lo or u_hi < first. Each
            # comparison is registered by itself (no logic between a carry chain and its
            # register); the issue decision ANDs the registers.
            load_reaches_lo, matmul_reaches_lo, first_below_hi, dst_above_alo, dst_within_ahi = (
                Signal(name=name) for name in ("load_reaches_lo", "matmul_reaches_lo",
                                               "first_below_hi", "dst_above_alo",
                                               "dst_within_ahi"))
            m.d.sync += [
                load_reaches_lo.eq(~neg([d_diff["a_lo"], reg_a, rows_less_1])),
                matmul_reaches_lo.eq(~neg([d_diff["a_lo"], reg_a, *spans])),
                first_below_hi.eq(~neg([d_diff["hi_a"]], [reg_a])),
                # ua_lo < dst <= ua_hi.
                dst_above_alo.eq(neg([d_diff["alo_b"]], [reg_b])),
                dst_within_ahi.eq(~neg([d_diff["ahi_b"]], [reg_b])),
            ]
            load_conflict = load_reaches_lo & first_below_hi
            matmul_conflict = matmul_reaches_lo & first_below_hi
            acc_conflict = dst_above_alo & dst_within_ahi
            load_units_ok = units_idle | ~(load_conflict | (u_r1 & self.unit_r1_pending))
            write_chased = Const(0)
            if cfg.chains_passes:
                # A MATMUL that streams rows the last pass writes may chase its writes
                # when that pass is a lone VPU (issued with the unit idle), not transposed,
                # with stride 1, and the MATMUL's stride is 1: it reads row ``src + j`` in
                # cycle ``issue + 1 + j``, the pass writes row ``dst + i`` in cycle
                # ``c_v + L + i``, so every row it reads is written before once ``issue >=
                # c_v + L + src - dst``. ``chase_count`` is ``t - c_v + 3 - L`` in cycle
                # ``t`` (set when the VPU issues, saturating, in ``chase_width`` bits two's
                # complement), so that ``next cycle >= c_v + L + src - dst`` is
                # ``chase_count + ~a_lo + ~reg_a >= 0`` (``a_lo + reg_a = src - dst``)
                # modulo ``2 ** chase_width``:
                # three terms, one compressor level and a carry chain, compared every cycle
                # for the next one and registered. (``src - dst`` lies in
                # ``(-2 ** 16, 2 ** 16)``, the count below ``2 ** 17``: the true difference
                # fits.)
                u_chase = Signal()
                chase_width = 19
                latency = VectorUnit.latency(cfg)
                chase_count = Signal(chase_width)
                saturated = ~chase_count[-1] & chase_count[-2]
                with m.If(self.vpu_cmd.valid):
                    m.d.sync += [u_chase.eq(~self.vpu_busy & ~d_flags[4] & (d_stride == 1)),
                                 chase_count.eq((4 - latency) % (1 << chase_width))]
                with m.Elif(~saturated):
                    m.d.sync += chase_count.eq(chase_count + 1)
                with m.If(self.gd_cmd.valid):
                    m.d.sync += u_chase.eq(0)
                write_chased = Signal()
                s_, c_ = compress([chase_count, complement(d_diff["a_lo"][:chase_width],
                                                           chase_width),
                                   complement(reg_a, chase_width)], chase_width)
                not_yet = (s_ + c_)[chase_width - 1]
                m.d.sync += write_chased.eq(u_chase & (d_stride == 1) & ~not_yet)
            matmul_units_ok = units_idle | ((~matmul_conflict | write_chased) &
                                            ~(acc_conflict & self.unit_reading))
            # A VPU or GD that chases the last MATMUL need not wait for its rows to stream
            # (the units no longer read port r0) unless it writes rows the MATMUL streams.
            # Compared in the pass's last check cycle (a VPU's second, with its write span
            # and destination registered), registered.
            with m.If(self.matmul_cmd.valid):
                m.d.sync += [mm_src.eq(e_q[0]), mm_hi.eq((e_q[0] + vpu_span)[:17])]
            vpu_writes_streamed = ~below([eb, vpu_span], [mm_src]) & ~below([mm_hi], [eb])
            gd_writes_streamed = (~neg([d_diff["b_msrc"], reg_b, rows_less_1]) &
                                  ~neg([d_diff["mhi_b"]], [reg_b]))
            stream_conflict_q = Signal()
            m.d.sync += stream_conflict_q.eq((is_vpu & vpu_writes_streamed) |
                                             (is_gd & gd_writes_streamed))
            streamed = self.matmul_ready | ~stream_conflict_q
            if cfg.chains_passes:
                # A VPU may follow the pass in flight (``chain_ready``) unless it writes
                # its output transposed (the transposer serves one pass at a time) or reads
                # an aux or bias row in ``u_lo .. u_hi`` (the rows the passes in flight
                # write): compared in its second check cycle, registered.
                chain_conflict_q = Signal()
                aux_in_flight = (d_vpu_aux & ~below([ec, vpu_span], [u_lo]) &
                                 ~below([u_hi], [ec]))
                bias_in_flight = d_vpu_bias & ~below([ed], [u_lo]) & ~below([u_hi], [ed])
                m.d.sync += chain_conflict_q.eq(aux_in_flight | bias_in_flight | d_flags[4])
                # Nor may its bias row's read (in the cycle after it issues, through port
                # r1) meet an aux row's read of a pass in flight: with a bias row it waits
                # until they have none to read after this cycle.
                vpu_chain_ok = (is_vpu & self.vpu_chain_ready & ~self.gd_busy &
                                ~chain_conflict_q &
                                ~(d_vpu_bias & u_r1 & self.unit_r1_pending))
        else:
            streamed = self.matmul_ready
        # LOADW and MATMUL wait for their engine and the vector and gradient-descent units;
        # VPU, GD, SYNC and HALT for every engine; CFG for the two units (whose scalars it
        # may change); the other instructions issue at once.
        # With ``cfg.chase_matmul`` VPU and GD wait for the loader and both units, and for
        # the matmul engine to be idle, or to have streamed its rows (``ready``) with the
        # chase delay over and their source at or below its destination.
        # (Each engine's command is valid on its own term, not on ``can_issue``: the
        # opcode classes are one-hot, which synthesis cannot know, so that the other
        # engines' conditions stay off the paths to its command registers' enables.)
        can_issue = Signal()
        waits_any = is_loadw | is_matmul | d_waits_all | d_waits_units | d_chases
        drained = ~self.matmul_busy | (chase_free & chase_ok)
        load_go = Signal()
        matmul_go = Signal()
        unit_go = Signal()      # a VPU or GD (or SYNC, HALT) may issue
        m.d.comb += [
            load_go.eq(is_loadw & self.load_ready & load_free & load_units_ok),
            matmul_go.eq(is_matmul & self.matmul_ready & switch_free & matmul_units_ok),
            unit_go.eq((d_chases & ~self.load_busy & (units_idle | vpu_chain_ok) & streamed &
                        drained) | (d_waits_all & all_idle)),
            can_issue.eq(load_go | matmul_go | unit_go | (d_waits_units & units_idle) |
                         ~waits_any),
        ]
        issue_ok = Signal()     # in ISSUE, nothing stops or fails it, the checks are over
        m.d.comb += [
            self.load_cmd.valid.eq(issue_ok & load_go),
            self.matmul_cmd.valid.eq(issue_ok & matmul_go),
            self.vpu_cmd.valid.eq(issue_ok & is_vpu & unit_go),
            self.gd_cmd.valid.eq(issue_ok & is_gd & unit_go),
        ]

        # --- command payloads (valid only in the issue cycle) ----------------------------
        pathway = d_flags[:4]
        m.d.comb += [
            self.load_cmd.payload.addr.eq(e_q[0]),
            self.load_cmd.payload.rows.eq(d_count),
            self.load_cmd.payload.transpose.eq(d_flags[0]),
            self.matmul_cmd.payload.src.eq(e_q[0]),
            self.matmul_cmd.payload.stride.eq(d_stride),
            self.matmul_cmd.payload.rows.eq(d_count),
            self.matmul_cmd.payload.dst.eq(e_q[1]),
            self.matmul_cmd.payload.accumulate.eq(d_flags[0]),
            self.vpu_cmd.payload.src.eq(e_q[0]),
            self.vpu_cmd.payload.dst.eq(e_q[1]),
            self.vpu_cmd.payload.aux.eq(e_q[2]),
            self.vpu_cmd.payload.bias.eq(e_q[3]),
            self.vpu_cmd.payload.rows.eq(d_count),
            self.vpu_cmd.payload.stride.eq(d_stride),
            self.vpu_cmd.payload.pathway.eq(pathway),
            self.vpu_cmd.payload.transpose.eq(d_flags[4]),
            self.gd_cmd.payload.src.eq(e_q[0]),
            self.gd_cmd.payload.param.eq(e_q[1]),
            self.gd_cmd.payload.rows.eq(d_count),
            self.gd_cmd.payload.stochastic.eq(d_flags[0]),
        ]
        assert FLAG_TRANSPOSE == 1 and FLAG_ACCUMULATE == 1

        def fail(code):
            m.d.sync += [error_code.eq(code), error_pc.eq(pc)]
            m.next = "DRAIN"

        def stop_from_outside():
            """The first branches of every running state but DRAIN: the host or the watchdog
            stops the run (the caller continues the chain with ``m.Elif``/``m.Else``)."""
            with m.If(self.stop | self.host_conflict):
                fail(Mux(self.stop, ErrorCode.STOPPED, ErrorCode.HOST_CONFLICT))
            with m.Elif(wd_expired):
                fail(ErrorCode.WATCHDOG)

        with m.FSM(init="IDLE"):
            def host_commands(allow_start):
                if allow_start:
                    with m.If(self.start):
                        m.d.sync += [
                            pc.eq(start_pc), *seq_pc_loads(start_pc),
                            cycles.eq(0), array_busy.eq(0),
                            issued.eq(0), flag_array.eq(0), flag_vpu.eq(0), flag_gd.eq(0),
                            error_code.eq(0), error_pc.eq(0), load_hold.eq(0),
                            switch_hold.eq(0), load_free.eq(1), switch_free.eq(1),
                            chase_hold.eq(0), chase_free.eq(1),
                        ]
                        m.next = "FETCH"
                with m.If((self.clear & ~self.start) if allow_start else self.clear):
                    m.d.sync += [error_code.eq(0), error_pc.eq(0)]
                    m.next = "IDLE"

            with m.State("IDLE"):
                m.d.comb += mode.eq(_Mode.IDLE)
                host_commands(True)
            with m.State("DONE"):
                m.d.comb += mode.eq(_Mode.DONE)
                host_commands(True)
            with m.State("ERROR"):
                m.d.comb += mode.eq(_Mode.ERROR)
                host_commands(False)
            with m.State("FETCH"):
                m.d.comb += mode.eq(_Mode.FETCH)
                stop_from_outside()
                with m.Elif(pc >= cfg.imem_depth):
                    fail(ErrorCode.PC_RANGE)
                with m.Else():
                    m.d.comb += [self.imem.addr.eq(pc), self.imem.en.eq(1)]
                    m.next = "LATCH"
            with m.State("LATCH"):
                m.d.comb += mode.eq(_Mode.FETCH)
                stop_from_outside()
                with m.Else():
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += mode.eq(_Mode.DECODE)
                stop_from_outside()
                with m.Else():
                    m.d.sync += decode_regs + [checked.eq(0), checked_once.eq(0)]
                    # Fetch the next instruction now: its decode follows this one's issue.
                    # (Not gated by ``next_ok``, so that the range check stays off the
                    # address path: a word read from beyond the end is never decoded, the
                    # issue stage goes to FETCH, which stops with PC_RANGE.)
                    m.d.comb += [self.imem.addr.eq(next_pc), self.imem.en.eq(1)]
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += mode.eq(_Mode.ISSUE)
                m.d.sync += [checked_once.eq(1), checked.eq(checked_once | ~is_vpu)]
                stop_from_outside()
                with m.Elif(~d_legal):
                    fail(ErrorCode.ILLEGAL_INSTRUCTION)
                with m.Elif(checked & checks_failed):
                    fail(checked_error)
                with m.Elif(checked | ~engine_op):
                    m.d.comb += issue_ok.eq(1)
                with m.If(issue_ok & can_issue):
                    m.d.sync += [issue_pulse.eq(1), pc.eq(d_next_pc),
                                 *seq_pc_loads(d_next_pc)]
                    with m.If(d_next_ok):
                        m.next = "DECODE"
                    with m.Else():
                        m.next = "FETCH"      # which stops with PC_RANGE
                    with m.Switch(d_op):
                        with m.Case(Op.HALT):
                            m.next = "DONE"
                        with m.Case(Op.SETR, Op.ADDI, Op.DJNZ):
                            m.d.comb += reg_we.eq(1 << d_rd)
                        with m.Case(Op.CFG):
                            m.d.comb += cfg_we.eq(1 << d_flags[:2])
                        with m.Case(Op.LOADW):
                            m.d.sync += [switch_hold.eq(switch_wait),
                                         switch_free.eq(switch_wait == 0)]
                        with m.Case(Op.MATMUL):
                            m.d.sync += [load_hold.eq(load_wait), load_free.eq(load_wait == 0),
                                         chase_hold.eq(chase_delay - 1), chase_free.eq(0),
                                         mm_dst.eq(e_q[1])]
                            if cfg.overlap_units:
                                m.d.sync += mm_dst_end.eq((e_q[1] + d_count - 1)[:17])
            with m.State("DRAIN"):
                m.d.comb += mode.eq(_Mode.DRAIN)
                with m.If(all_idle):
                    m.next = "ERROR"

        # --- CSRs ------------------------------------------------------------------------
        state = Signal(2)
        with m.Switch(mode):
            with m.Case(_Mode.IDLE):
                m.d.comb += state.eq(State.IDLE)
            with m.Case(_Mode.DONE):
                m.d.comb += state.eq(State.DONE)
            with m.Case(_Mode.ERROR):
                m.d.comb += state.eq(State.ERROR)
            with m.Default():
                m.d.comb += state.eq(State.RUNNING)
        m.d.comb += self.state.eq(state)
        status = Cat(state, Const(0, 6), error_code, Const(0, 4), flag_array, flag_vpu, flag_gd)
        readable = {
            CSR.STATUS: status, CSR.ERROR_PC: error_pc, CSR.PC: pc, CSR.START_PC: start_pc,
            CSR.WATCHDOG_LO: watchdog[:32], CSR.WATCHDOG_HI: watchdog[32:],
            CSR.CYCLES_LO: cycles[:32], CSR.CYCLES_HI: cycles[32:],
            CSR.ARRAY_BUSY_LO: array_busy[:32], CSR.ARRAY_BUSY_HI: array_busy[32:],
            CSR.MACS_LO: macs[:32], CSR.MACS_HI: macs[32:],
            CSR.INSTRUCTIONS_LO: issued[:32], CSR.INSTRUCTIONS_HI: issued[32:],
            CSR.SEED: self.seed,
            **{address: Const(value, 32) for address, value in identity_registers(cfg).items()},
        }
        # Reads are registered, like the memories': ``csr_addr`` in cycle t gives the value
        # on ``csr_rdata`` in cycle t + 1.
        csr_q = Signal(32)
        with m.Switch(self.csr_addr):
            for addr, value in readable.items():
                with m.Case(addr):
                    m.d.sync += csr_q.eq(value)
            if not self._register_ram:
                for i in range(NUM_REGS):
                    with m.Case(CSR.REG_BASE + i):
                        m.d.sync += csr_q.eq(regs[i])
            for r in ConfigReg:
                with m.Case(CSR.CFG_BASE + r):
                    m.d.sync += csr_q.eq(cfgs[r])
            with m.Default():
                m.d.sync += csr_q.eq(0)

        m.d.sync += self.reseed.eq(0)
        with m.If(self.csr_we & ~running):
            with m.Switch(self.csr_addr):
                with m.Case(CSR.START_PC):
                    m.d.sync += start_pc.eq(self.csr_wdata)
                with m.Case(CSR.WATCHDOG_LO):
                    m.d.sync += watchdog[:32].eq(self.csr_wdata)
                if width > 32:
                    with m.Case(CSR.WATCHDOG_HI):
                        m.d.sync += watchdog[32:].eq(self.csr_wdata)
                with m.Case(CSR.SEED):
                    # The pulse follows the write, so that ``seed`` holds the new value.
                    m.d.sync += [self.seed.eq(self.csr_wdata), self.reseed.eq(1)]
                for i in range(1, NUM_REGS):
                    with m.Case(CSR.REG_BASE + i):
                        m.d.comb += reg_we[i].eq(1)
                for r in ConfigReg:
                    with m.Case(CSR.CFG_BASE + r):
                        m.d.comb += cfg_we[r].eq(1)
        if self._register_ram:
            # The host's register reads come from the host's copy of the register file,
            # which answers a cycle after the address like the other CSRs' register.
            reading_reg = Signal()
            m.d.sync += reading_reg.eq((self.csr_addr >= CSR.REG_BASE) &
                                       (self.csr_addr < CSR.REG_BASE + NUM_REGS))
            m.d.comb += self.csr_rdata.eq(Mux(reading_reg, host_port.data, csr_q))
        else:
            m.d.comb += self.csr_rdata.eq(csr_q)
        # SETR/ADDI: rs + imm (a legal SETR leaves ``b`` zero, so rs reads R0); DJNZ: rd - 1.
        result = Mux(d_op == Op.DJNZ, (d_regv[0] - 1)[:16], (d_regv[1] + d_base[0])[:16])
        m.d.comb += [reg_wdata.eq(Mux(running, result, self.csr_wdata)),
                     cfg_wdata.eq(Mux(running, d_count, self.csr_wdata))]
        return m
