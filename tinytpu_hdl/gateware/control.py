"""Control unit: fetches, checks and issues instructions; holds registers, status and counters."""

from enum import IntEnum

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa import (
    FLAG_ACCUMULATE, FLAG_TRANSPOSE, INSTRUCTION_BITS, NUM_REGS, ConfigReg, ErrorCode,
    InstructionLayout, Op, Pathway, used_mask,
)
from .gd_unit import GradientCommandLayout
from .loader import LoadCommandLayout
from .matmul_engine import MatmulCommandLayout
from .memory import read_request
from .signatures import valid_stream
from .vector_unit import VectorCommandLayout

__all__ = ["ControlUnit", "State", "CSR"]


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
    REG_BASE = 32       # R0..R7, read/write (R0 reads 0)
    CFG_BASE = 40       # LEAK, LR, LOSS_SCALE, read/write


class _Mode(IntEnum):
    IDLE = 0
    FETCH = 1
    ISSUE = 2
    DRAIN = 3
    DONE = 4
    ERROR = 5


class ControlUnit(wiring.Component):
    """Runs the program in the instruction memory on its own.

    Members
    -------
    imem : Out(read_request)           -- instruction memory read port
    load_cmd, matmul_cmd, vpu_cmd, gd_cmd : Out(valid_stream)
        Commands to the engines, valid for one cycle when an instruction issues.
    load_ready, load_busy, matmul_ready, matmul_busy, vpu_busy, gd_busy : In(1)
    row_fed : In(1)                    -- a row entered the array this cycle (counters)
    array_overflow, vpu_overflow, gd_overflow : In(1)  -- saturation pulses (sticky flags)
    leak, lr, loss_scale : Out         -- configuration registers
    start, stop, clear : In(1)         -- host commands (one-cycle pulses)
    host_conflict : In(1)              -- the host wrote a memory while the program ran
    csr_addr, csr_rdata, csr_wdata, csr_we : host access to the CSRs
    running : Out(1)
    seed, reseed : Out                 -- the SEED CSR, and a pulse in the cycle after the host
                                          writes it
    state : Out(2)                     -- the ``State`` of the status register

    Timing
    ------
    A ``start`` in cycle ``s`` fetches the instruction at ``START_PC`` in cycle
    ``s+1``. Each instruction spends one cycle in fetch (the instruction memory
    is read) and at least one in issue, where it is checked and waits for the
    engines it depends on; it issues in the first cycle its conditions hold,
    and the next instruction is fetched in the following cycle. An error found
    in issue (or a fetch beyond the instruction memory, or the watchdog) stops
    fetching, waits until the engines have finished the instructions already
    issued, then enters the error state. ``HALT`` issues when every engine is
    idle and enters the done state. ``CYCLES`` counts the cycles from the first
    fetch to the halt (or the end of draining) inclusive.

    Issue conditions (in-order issue, engine-level hazards):

    ========  ============================================================
    LOADW     loader ready; ``n - 1`` cycles since the last MATMUL issued;
              vector and gradient units idle
    MATMUL    matmul engine ready; ``n`` cycles since the last LOADW issued;
              vector and gradient units idle
    VPU, GD   loader, matmul engine, vector and gradient units all idle
    CFG       vector and gradient units idle
    SYNC      every engine idle (HALT likewise)
    others    none
    ========  ============================================================
    """

    def __init__(self, cfg):
        self._cfg = cfg
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
            "row_fed": In(1),
            "array_overflow": In(1), "vpu_overflow": In(1), "gd_overflow": In(1),
            "leak": Out(cfg.scalar.shape), "lr": Out(cfg.scalar.shape),
            "loss_scale": Out(cfg.scalar.shape),
            "start": In(1), "stop": In(1), "clear": In(1), "host_conflict": In(1),
            "csr_addr": In(6), "csr_rdata": Out(32), "csr_wdata": In(32), "csr_we": In(1),
            "running": Out(1),
            "state": Out(2),
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
        watchdog = Signal(64)
        cycles = Signal(64)
        array_busy = Signal(64)
        macs = Signal(64)
        issued = Signal(64)
        flag_array = Signal()
        flag_vpu = Signal()
        flag_gd = Signal()
        regs = Array(Signal(16, name=f"r{i}") for i in range(NUM_REGS))
        cfgs = Array(Signal(16, name=f"cfg_{r.name.lower()}") for r in ConfigReg)
        load_hold = Signal(range(n + 1))     # cycles until a LOADW may issue
        switch_hold = Signal(range(n + 1))   # cycles until a MATMUL may issue

        running = mode.matches(_Mode.FETCH, _Mode.ISSUE, _Mode.DRAIN)
        m.d.comb += [
            self.running.eq(running),
            self.leak.eq(cfgs[ConfigReg.LEAK]),
            self.lr.eq(cfgs[ConfigReg.LR]),
            self.loss_scale.eq(cfgs[ConfigReg.LOSS_SCALE]),
        ]

        # --- counters -------------------------------------------------------------------
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(self.row_fed):
            m.d.sync += [array_busy.eq(array_busy + 1), macs.eq(macs + n * n)]
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

        # --- decode ---------------------------------------------------------------------
        word = self.imem.data
        ins = data.View(InstructionLayout, word)
        op = ins.opcode
        rows = ins.count
        stride = ins.stride

        def eff(slot):
            operand = getattr(ins, slot)
            return (operand.addr + regs[operand.reg])[:17]

        ea, eb, ec, ed = eff("a"), eff("b"), eff("c"), eff("d")
        rows_m1 = (rows - 1)[:16]
        span = Signal(24)
        m.d.comb += span.eq(rows_m1 * stride)

        def fits(addr, extent, depth):
            return (addr + extent) < depth

        legal = Signal()
        with m.Switch(op):
            for code in Op:
                with m.Case(code):
                    mask = ((1 << INSTRUCTION_BITS) - 1) & ~used_mask(code)
                    ok = (word & Const(mask, INSTRUCTION_BITS)) == 0
                    if code == Op.CFG:
                        ok = ok & (ins.flags < len(ConfigReg))
                    m.d.comb += legal.eq(ok)
            with m.Default():
                m.d.comb += legal.eq(0)

        pathway = ins.flags[:4]
        use_bias = pathway[Pathway.BIAS.bit_length() - 1]
        use_aux = pathway[Pathway.LOSS.bit_length() - 1] | pathway[Pathway.DERIV.bit_length() - 1]

        bad = Signal()
        range_error = Signal(4)
        with m.Switch(op):
            with m.Case(Op.LOADW):
                m.d.comb += bad.eq((rows == 0) | (rows > n))
                with m.If(~fits(ea, rows_m1, cfg.ub_depth)):
                    m.d.comb += range_error.eq(ErrorCode.UB_RANGE)
            with m.Case(Op.MATMUL):
                m.d.comb += bad.eq(rows == 0)
                with m.If(~fits(ea, span, cfg.ub_depth)):
                    m.d.comb += range_error.eq(ErrorCode.UB_RANGE)
                with m.Elif(~fits(eb, rows_m1, cfg.acc_depth)):
                    m.d.comb += range_error.eq(ErrorCode.ACC_RANGE)
            with m.Case(Op.VPU):
                dst_end = eb + span
                aux_end = ec + span
                aux_overlap = (ec <= dst_end) & (eb <= aux_end)
                in_place = (ec == eb) & ((stride != 0) | (rows == 1))
                bias_overlap = (ed >= eb) & (ed <= dst_end)
                m.d.comb += bad.eq((rows == 0) | (use_aux & aux_overlap & ~in_place) |
                                   (use_bias & bias_overlap))
                with m.If(~fits(ea, rows_m1, cfg.acc_depth)):
                    m.d.comb += range_error.eq(ErrorCode.ACC_RANGE)
                with m.Elif(~fits(eb, span, cfg.ub_depth)):
                    m.d.comb += range_error.eq(ErrorCode.UB_RANGE)
                with m.Elif(use_aux & ~fits(ec, span, cfg.ub_depth)):
                    m.d.comb += range_error.eq(ErrorCode.UB_RANGE)
                with m.Elif(use_bias & ~fits(ed, 0, cfg.ub_depth)):
                    m.d.comb += range_error.eq(ErrorCode.UB_RANGE)
            with m.Case(Op.GD):
                m.d.comb += bad.eq(rows == 0)
                with m.If(~fits(ea, rows_m1, cfg.acc_depth)):
                    m.d.comb += range_error.eq(ErrorCode.ACC_RANGE)
                with m.Elif(~fits(eb, rows_m1, cfg.ub_depth)):
                    m.d.comb += range_error.eq(ErrorCode.UB_RANGE)

        error = Signal(4)
        with m.If(~legal):
            m.d.comb += error.eq(ErrorCode.ILLEGAL_INSTRUCTION)
        with m.Elif(bad):
            m.d.comb += error.eq(ErrorCode.BAD_OPERAND)
        with m.Else():
            m.d.comb += error.eq(range_error)

        all_idle = ~(self.load_busy | self.matmul_busy | self.vpu_busy | self.gd_busy)
        units_idle = ~(self.vpu_busy | self.gd_busy)
        can_issue = Signal()
        with m.Switch(op):
            with m.Case(Op.LOADW):
                m.d.comb += can_issue.eq(self.load_ready & (load_hold == 0) & units_idle)
            with m.Case(Op.MATMUL):
                m.d.comb += can_issue.eq(self.matmul_ready & (switch_hold == 0) & units_idle)
            with m.Case(Op.VPU, Op.GD, Op.SYNC, Op.HALT):
                m.d.comb += can_issue.eq(all_idle)
            with m.Case(Op.CFG):
                m.d.comb += can_issue.eq(units_idle)
            with m.Default():
                m.d.comb += can_issue.eq(1)

        # --- command payloads (valid only in the issue cycle) ----------------------------
        m.d.comb += [
            self.load_cmd.payload.addr.eq(ea),
            self.load_cmd.payload.rows.eq(rows),
            self.load_cmd.payload.transpose.eq(ins.flags[0]),
            self.matmul_cmd.payload.src.eq(ea),
            self.matmul_cmd.payload.stride.eq(stride),
            self.matmul_cmd.payload.rows.eq(rows),
            self.matmul_cmd.payload.dst.eq(eb),
            self.matmul_cmd.payload.accumulate.eq(ins.flags[0]),
            self.vpu_cmd.payload.src.eq(ea),
            self.vpu_cmd.payload.dst.eq(eb),
            self.vpu_cmd.payload.aux.eq(ec),
            self.vpu_cmd.payload.bias.eq(ed),
            self.vpu_cmd.payload.rows.eq(rows),
            self.vpu_cmd.payload.stride.eq(stride),
            self.vpu_cmd.payload.pathway.eq(pathway),
            self.gd_cmd.payload.src.eq(ea),
            self.gd_cmd.payload.param.eq(eb),
            self.gd_cmd.payload.rows.eq(rows),
            self.gd_cmd.payload.stochastic.eq(ins.flags[0]),
        ]
        assert FLAG_TRANSPOSE == 1 and FLAG_ACCUMULATE == 1

        def fail(code):
            m.d.sync += [error_code.eq(code), error_pc.eq(pc)]
            m.next = "DRAIN"

        wd_expired = (watchdog != 0) & (cycles >= watchdog)

        def stop_from_outside():
            """The first branches of FETCH and ISSUE: the host or the watchdog stops the run
            (the caller continues the chain with ``m.Elif``)."""
            with m.If(self.stop | self.host_conflict):
                fail(Mux(self.stop, ErrorCode.STOPPED, ErrorCode.HOST_CONFLICT))
            with m.Elif(wd_expired):
                fail(ErrorCode.WATCHDOG)

        with m.FSM(init="IDLE"):
            def host_commands(allow_start):
                if allow_start:
                    with m.If(self.start):
                        m.d.sync += [
                            pc.eq(start_pc), cycles.eq(0), array_busy.eq(0), macs.eq(0),
                            issued.eq(0), flag_array.eq(0), flag_vpu.eq(0), flag_gd.eq(0),
                            error_code.eq(0), error_pc.eq(0), load_hold.eq(0),
                            switch_hold.eq(0),
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
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += mode.eq(_Mode.ISSUE)
                stop_from_outside()
                with m.Elif(error != 0):
                    fail(error)
                with m.Elif(can_issue):
                    m.d.sync += [issued.eq(issued + 1), pc.eq(pc + 1)]
                    m.next = "FETCH"
                    rd = ins.a.reg
                    with m.Switch(op):
                        with m.Case(Op.HALT):
                            m.next = "DONE"
                        with m.Case(Op.SETR):
                            with m.If(rd != 0):
                                m.d.sync += regs[rd].eq(ins.a.addr)
                        with m.Case(Op.ADDI):
                            with m.If(rd != 0):
                                m.d.sync += regs[rd].eq(regs[ins.b.reg] + ins.a.addr)
                        with m.Case(Op.DJNZ):
                            dec = (regs[rd] - 1)[:16]
                            with m.If(rd != 0):
                                m.d.sync += regs[rd].eq(dec)
                            with m.If(dec != 0):
                                m.d.sync += pc.eq(ins.count)
                        with m.Case(Op.CFG):
                            m.d.sync += cfgs[ins.flags[:2]].eq(ins.count)
                        with m.Case(Op.LOADW):
                            m.d.comb += self.load_cmd.valid.eq(1)
                            m.d.sync += switch_hold.eq(n - 1)
                        with m.Case(Op.MATMUL):
                            m.d.comb += self.matmul_cmd.valid.eq(1)
                            m.d.sync += load_hold.eq(max(n - 2, 0))
                        with m.Case(Op.VPU):
                            m.d.comb += self.vpu_cmd.valid.eq(1)
                        with m.Case(Op.GD):
                            m.d.comb += self.gd_cmd.valid.eq(1)
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
        info = Cat(Const(n, 8), Const(cfg.data.width, 8), Const(cfg.data.frac, 8))
        readable = {
            CSR.STATUS: status, CSR.ERROR_PC: error_pc, CSR.PC: pc, CSR.START_PC: start_pc,
            CSR.WATCHDOG_LO: watchdog[:32], CSR.WATCHDOG_HI: watchdog[32:],
            CSR.CYCLES_LO: cycles[:32], CSR.CYCLES_HI: cycles[32:],
            CSR.ARRAY_BUSY_LO: array_busy[:32], CSR.ARRAY_BUSY_HI: array_busy[32:],
            CSR.MACS_LO: macs[:32], CSR.MACS_HI: macs[32:],
            CSR.INSTRUCTIONS_LO: issued[:32], CSR.INSTRUCTIONS_HI: issued[32:],
            CSR.INFO: info, CSR.UB_DEPTH: Const(cfg.ub_depth, 32),
            CSR.ACC_DEPTH: Const(cfg.acc_depth, 32), CSR.IMEM_DEPTH: Const(cfg.imem_depth, 32),
            CSR.SEED: self.seed,
        }
        with m.Switch(self.csr_addr):
            for addr, value in readable.items():
                with m.Case(addr):
                    m.d.comb += self.csr_rdata.eq(value)
            for i in range(NUM_REGS):
                with m.Case(CSR.REG_BASE + i):
                    m.d.comb += self.csr_rdata.eq(regs[i])
            for r in ConfigReg:
                with m.Case(CSR.CFG_BASE + r):
                    m.d.comb += self.csr_rdata.eq(cfgs[r])

        m.d.sync += self.reseed.eq(0)
        with m.If(self.csr_we & ~running):
            with m.Switch(self.csr_addr):
                with m.Case(CSR.START_PC):
                    m.d.sync += start_pc.eq(self.csr_wdata)
                with m.Case(CSR.WATCHDOG_LO):
                    m.d.sync += watchdog[:32].eq(self.csr_wdata)
                with m.Case(CSR.WATCHDOG_HI):
                    m.d.sync += watchdog[32:].eq(self.csr_wdata)
                with m.Case(CSR.SEED):
                    # The pulse follows the write, so that ``seed`` holds the new value.
                    m.d.sync += [self.seed.eq(self.csr_wdata), self.reseed.eq(1)]
                for i in range(1, NUM_REGS):
                    with m.Case(CSR.REG_BASE + i):
                        m.d.sync += regs[i].eq(self.csr_wdata)
                for r in ConfigReg:
                    with m.Case(CSR.CFG_BASE + r):
                        m.d.sync += cfgs[r].eq(self.csr_wdata)
        return m
