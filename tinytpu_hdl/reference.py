"""Bit-exact, cycle-exact reference model of the TPU, in numpy.

:class:`ReferenceTPU` executes the ISA of :mod:`tinytpu_hdl.isa` over the same
memories, registers and number format as the gateware, one instruction at a
time, with whole-matrix numpy operations. It also computes the cycle at which
the control unit would issue each instruction (the issue rules documented on
:class:`~tinytpu_hdl.gateware.control.ControlUnit` and the engine timings
documented on each engine), so its ``CYCLES`` counter and other counters
equal the hardware's.

:class:`ReferenceTransport` puts the model behind the host protocol, so the
runtime drives it exactly like the simulated or real hardware.
"""

from dataclasses import dataclass

import numpy as np

from .config import TPUConfig
from .gateware.control import CHECK_CYCLES, CSR, State, identity_registers
from .gateware.gd_unit import GradientDescentUnit
from .gateware.loader import WeightLoader, load_after_matmul, matmul_after_load
from .gateware.matmul_engine import MatmulEngine
from .gateware.vector_unit import VectorUnit
from .host_protocol import (
    Command, Space, Status, item_words, pack_items, parse_header, space_depth, unpack_items,
    unpack_rows,
)
from .isa import (
    FLAG_ACCUMULATE, FLAG_STOCHASTIC, FLAG_TRANSPOSE, FLAG_TRANSPOSE_OUT, NUM_REGS, ConfigReg,
    DecodeError, ErrorCode, Op, Pathway, decode, vpu_transposed_extent,
)
from .numeric import (
    FixedFormat, add_sat, dot_chain, mul_narrow, narrow, saturate, stochastic_narrow,
    xorshift32_sequence, xorshift_seed,
)
from .reference_trace import (
    CONFIG, GD as GD_PASS, LOAD, MATMUL as MATMUL_OP, VECTOR, RunTrace, TraceCache,
    TrackedRegisters,
)

__all__ = ["ReferenceTPU", "ReferenceTransport", "Event"]

# Engine timings (cycles after the issue cycle c), as documented on the engines.
LOAD_READY = WeightLoader.ready_after
LOAD_IDLE = WeightLoader.idle_after
MATMUL_READY = lambda n, rows: rows               # noqa: E731
MATMUL_IDLE = MatmulEngine.idle_after
MATMUL_CHASE = MatmulEngine.chase_after
VPU_IDLE = VectorUnit.idle_after
GD_IDLE = GradientDescentUnit.idle_after
# Instructions whose operands the control unit checks in cycles of their own
# (``CHECK_CYCLES``) before they may issue.
ENGINE_OPS = frozenset(CHECK_CYCLES)
#: Check cycles of every opcode (0 for those without), looked up per instruction.
_CHECKS = {op: CHECK_CYCLES.get(op, 0) for op in Op}
#: Instructions that wait until every engine is idle.
WAIT_ALL = frozenset((Op.VPU, Op.GD, Op.SYNC, Op.HALT))


#: The engine each engine instruction runs on (others: the control unit).
ENGINES = {Op.LOADW: "loader", Op.MATMUL: "matmul", Op.VPU: "vector", Op.GD: "gd"}


@dataclass(frozen=True)
class Event:
    """One issued instruction of a run, in cycles from the run's start: ``decode`` its
    first cycle (fetch or decode), ``ready`` the first cycle it could have issued (after
    its checks), ``issue`` the cycle it issued, ``end`` the first cycle its engine was idle
    again (control instructions: the cycle after issue). The hardware's timing exactly."""

    run: int
    pc: int
    instruction: object
    engine: str
    decode: int
    ready: int
    issue: int
    end: int

    @property
    def text(self):
        from .asm import format_instruction
        return format_instruction(self.instruction)

    @property
    def stall(self):
        return self.issue - self.ready


class _Fault(Exception):
    def __init__(self, code):
        self.code = code


class ReferenceTPU:
    """The architectural state of one TPU and an interpreter for its programs.

    ``trace_cache`` runs (distinct start states) are remembered and replayed when a run
    starts from the same program, watchdog and values of the index registers it reads
    before writing them again (see
    :mod:`tinytpu_hdl.reference_trace`); 0 interprets every run."""

    def __init__(self, cfg: TPUConfig, *, trace_cache=64):
        self.cfg = cfg
        self.traces = TraceCache(trace_cache) if trace_cache else None
        n = cfg.n
        self.ub = np.zeros((cfg.ub_depth, n), dtype=np.int64)
        self.acc = np.zeros((cfg.acc_depth, n), dtype=np.int64)
        self.imem = [0] * cfg.imem_depth
        self.regs = [0] * NUM_REGS
        self.cfgs = [0] * len(ConfigReg)
        self.shadow = np.zeros((n, n), dtype=np.int64)
        self.active = np.zeros((n, n), dtype=np.int64)
        self.state = State.IDLE
        self.error_code = ErrorCode.NONE
        self.error_pc = 0
        self.pc = 0
        self.start_pc = 0
        self.watchdog = 0
        self.cycles = 0
        self.array_busy = 0
        self.macs = 0
        self.instructions = 0
        self.flags = [False, False, False]   # array, vector, gradient-descent overflow
        self.seed = 0
        self.rng = np.array([xorshift_seed(0, lane) for lane in range(n)], dtype=np.int64)
        #: With a list here, every run appends an :class:`Event` per issued instruction.
        self.events = None
        self.runs = 0
        self._pending = []

    # --- CSRs ------------------------------------------------------------------------------

    def read_csr(self, addr):
        return self.read_csrs(addr, 1)[0]

    def read_csrs(self, addr, count):
        """``count`` CSRs from ``addr`` (unmapped addresses read 0)."""
        status = (int(self.state) | (int(self.error_code) << 8) | (self.flags[0] << 16) |
                  (self.flags[1] << 17) | (self.flags[2] << 18))
        cfg = self.cfg
        mask = self._counter_mask
        values = {
            CSR.STATUS: status, CSR.ERROR_PC: self.error_pc, CSR.PC: self.pc,
            CSR.START_PC: self.start_pc,
            CSR.WATCHDOG_LO: self.watchdog, CSR.WATCHDOG_HI: self.watchdog >> 32,
            CSR.SEED: self.seed, **identity_registers(cfg),
        }
        # Counters: (low word, high word), wrapped to the counter width.
        for lo, value in ((CSR.CYCLES_LO, self.cycles), (CSR.ARRAY_BUSY_LO, self.array_busy),
                          (CSR.MACS_LO, self.macs), (CSR.INSTRUCTIONS_LO, self.instructions)):
            values[lo], values[lo + 1] = value & mask, (value & mask) >> 32
        for i, value in enumerate(self.regs):
            values[CSR.REG_BASE + i] = value
        for i, value in enumerate(self.cfgs):
            values[CSR.CFG_BASE + i] = value
        return [values.get(a, 0) & 0xFFFFFFFF for a in range(addr, addr + count)]

    def write_csr(self, addr, value):
        value &= 0xFFFFFFFF
        if addr == CSR.START_PC:
            self.start_pc = value & 0xFFFF
        elif addr == CSR.WATCHDOG_LO:
            self.watchdog = ((self.watchdog & ~0xFFFFFFFF) | value) & self._counter_mask
        elif addr == CSR.WATCHDOG_HI:
            self.watchdog = ((self.watchdog & 0xFFFFFFFF) | (value << 32)) & self._counter_mask
        elif addr == CSR.SEED:
            self.seed = value
            self.rng = np.array([xorshift_seed(value, lane) for lane in range(self.cfg.n)],
                                dtype=np.int64)
        elif CSR.REG_BASE + 1 <= addr < CSR.REG_BASE + NUM_REGS:
            self.regs[addr - CSR.REG_BASE] = value & 0xFFFF
        elif CSR.CFG_BASE <= addr < CSR.CFG_BASE + len(ConfigReg):
            self.cfgs[addr - CSR.CFG_BASE] = value & 0xFFFF

    @property
    def _counter_mask(self):
        return (1 << self.cfg.counter_width) - 1

    def clear(self):
        self.state = State.IDLE
        self.error_code = ErrorCode.NONE
        self.error_pc = 0

    def _scalar(self, reg):
        return int(self.cfg.scalar.from_unsigned(self.cfgs[reg]))

    # --- execution -------------------------------------------------------------------------

    def start(self):
        """Run the program from ``START_PC`` to its end (HALT or an error)."""
        if self.state == State.ERROR:
            raise RuntimeError("start refused in the error state")
        self.pc = self.start_pc
        self.cycles = self.array_busy = self.macs = self.instructions = 0
        self.flags = [False, False, False]
        self.error_code = ErrorCode.NONE
        self.error_pc = 0
        self.state = State.RUNNING
        key = recording = fetched = trace = tracked = None
        if self.traces is not None and self.events is None:
            key = (self.start_pc, self.watchdog)
            trace = self.traces.lookup(key, self.imem, self.regs)
            if trace is None:
                recording, fetched = [], {}
                tracked = self.regs = TrackedRegisters(self.regs)
        try:
            if trace is not None:
                trace.replay(self)
                self.runs += 1
                return
            self._run(recording, fetched)
            self._flush()
            self.runs += 1
        except KeyboardInterrupt:
            self._flush()
            # Interrupted by the user: stopped, as a STOP would leave the hardware.
            self.error_code = ErrorCode.STOPPED
            self.error_pc = self.pc
            self.state = State.ERROR
            raise
        finally:
            if tracked is not None:
                self.regs = list(tracked)
        if key is not None:
            final = {name: getattr(self, name) for name in (
                "pc", "state", "error_code", "error_pc", "cycles", "instructions",
                "array_busy", "macs")}
            final["regs"] = {i: self.regs[i] for i in tracked.written}
            self.traces.store(key, RunTrace(self.cfg, fetched, recording, final,
                                            sorted(tracked.read_first.items())))

    def _run(self, rec=None, fetched=None):
        """Interpret the program from ``pc``; with ``rec`` a list and ``fetched`` a dict,
        record the run's actions on the memories and the words it fetched."""
        cfg = self.cfg
        n = cfg.n
        wd = self.watchdog
        load_ready = load_idle = matmul_ready = matmul_idle = vpu_idle = gd_idle = 0
        load_allowed = switch_allowed = 0
        load_ready_after, load_idle_after = LOAD_READY(cfg), LOAD_IDLE(cfg)
        switch_after, load_after = matmul_after_load(cfg), load_after_matmul(cfg)
        # The last matmul's issue cycle and accumulator destination (for the chase rule),
        # and the buffer rows it streams (for overlap_units).
        mm_issue, mm_dst, mm_dst_end = 0, 0, 0
        mm_src, mm_hi = 0, -1
        # The last vector or gradient-descent pass (``cfg.overlap_units``): the cycle it is
        # idle from, whether it reads the buffer's port r1 after its first cycle and the
        # cycle of its last read there, the buffer rows it writes, the accumulator rows it
        # reads and the cycle from which it has read them.
        overlap = cfg.overlap_units
        unit_idle, unit_r1, unit_r1_done, unit_lo, unit_hi = 0, False, 0, 0, -1
        uacc_lo, uacc_hi, uacc_done = 0, -1, 0
        # With chained passes (``cfg.chains_passes``): the cycle from which a VPU may
        # follow the last one through the vector unit.
        chains = cfg.chains_passes
        vpu_chain = 0
        chain_after = VectorUnit.chain_after
        # And whether a matmul may chase the last pass's writes (a lone VPU, not
        # transposed, stride 1), the cycle that VPU issued, and the unit's latency.
        unit_chase, vpu_issue, vpu_latency = False, 0, VectorUnit.latency(cfg)
        f = 0                       # first cycle of the current instruction (fetch or decode)
        first = True
        # (Opcodes compared by identity: decode gives the Op members themselves, and an
        # enum's == and hash are Python calls, a good part of this loop's time.)
        LOADW, MATMUL, VPU, GD, HALT = Op.LOADW, Op.MATMUL, Op.VPU, Op.GD, Op.HALT
        SETR, ADDI, DJNZ, CFG = Op.SETR, Op.ADDI, Op.DJNZ, Op.CFG
        checks = _CHECKS

        def stop(code, cycle):
            self.error_code = ErrorCode(code)
            self.error_pc = self.pc
            drain = max(cycle + 1, load_idle, matmul_idle, vpu_idle, gd_idle)
            self.cycles = drain + 1
            self.state = State.ERROR

        while True:
            if wd and f >= wd:
                return stop(ErrorCode.WATCHDOG, wd)
            if self.pc >= cfg.imem_depth:
                return stop(ErrorCode.PC_RANGE, f)
            # The first instruction is fetched, latched and decoded before it can issue;
            # later ones were fetched while their predecessor was decoded.
            e = f + (3 if first else 1)
            first = False
            if wd and e >= wd:
                return stop(ErrorCode.WATCHDOG, wd)
            word = self.imem[self.pc]
            if fetched is not None:
                fetched[self.pc] = word
            try:
                ins = decode(word)
            except DecodeError:
                return stop(ErrorCode.ILLEGAL_INSTRUCTION, e)
            op = ins.op
            extra = checks[op]
            if extra:
                # The operand checks take the first issue cycles.
                e += extra
                if wd and e >= wd:
                    return stop(ErrorCode.WATCHDOG, wd)
            try:
                operands = self._check(ins)
            except _Fault as fault:
                return stop(fault.code, e)
            rows = ins.count
            if op is MATMUL and overlap:
                # Beside a busy unit unless it writes rows this matmul streams; beside a
                # unit reading accumulator rows from below this one's destination on, once
                # they are read (from the destination's first row down the matmul writes
                # each row after the unit has read it).
                src, dst = operands["src"], operands["dst"]
                acc_wait = uacc_done if uacc_lo < dst <= uacc_hi else 0
                if src <= unit_hi and unit_lo <= src + (rows - 1) * ins.stride:
                    wait = unit_idle
                    if unit_chase and ins.stride == 1:
                        # Chasing the pass's writes: row src + j is read in cycle
                        # issue + 1 + j, row dst + i written in vpu_issue + L + i.
                        wait = min(unit_idle, max(vpu_issue + vpu_latency + src - unit_lo,
                                                  acc_wait))
                else:
                    wait = acc_wait
                ready = max(matmul_ready, switch_allowed, wait)
            elif op is LOADW and overlap:
                # Beside a busy unit unless it writes rows this load reads, once it has
                # read its aux rows or parameters (through the loader's port).
                src = operands["src"]
                if src <= unit_hi and unit_lo <= src + rows - 1:
                    wait = unit_idle
                else:
                    wait = unit_r1_done if unit_r1 else 0
                ready = max(load_ready, load_allowed, wait)
            elif op is MATMUL:
                ready = max(matmul_ready, switch_allowed, vpu_idle, gd_idle)
            elif op is LOADW:
                ready = max(load_ready, load_allowed, vpu_idle, gd_idle)
            elif (op is VPU or op is GD) and cfg.chase_matmul:
                # The loader and both units idle, the matmul's rows streamed, and every
                # accumulator row read after it is written: from its issue plus the chase
                # delay when the source starts at or below the matmul's destination
                # (row r then is read no earlier than the matmul writes it), else idle.
                # With overlap_units also when the source starts past the matmul's last
                # row (the rows it reads were written by earlier matmuls, which have
                # finished writing them by then), and the rows need not have streamed
                # unless the pass writes one of them.
                drained = matmul_idle
                if operands["src"] <= mm_dst or (overlap and operands["src"] > mm_dst_end):
                    drained = min(matmul_idle, mm_issue + MATMUL_CHASE(cfg))
                streamed = matmul_ready
                if overlap:
                    lo, hi = operands["written"]
                    if not (lo <= mm_hi and mm_src <= hi):
                        streamed = 0
                vpu_wait = vpu_idle
                if op is VPU and chains:
                    # Behind the pass in flight, unless this one is transposed (the
                    # transposer serves one pass at a time) or reads an aux or bias row
                    # that a pass in flight writes (unit_lo .. unit_hi).
                    aux_rows, bias = operands["aux_rows"], operands["bias_row"]
                    conflict = (
                        ins.flags & FLAG_TRANSPOSE_OUT or
                        (aux_rows is not None and aux_rows[0] <= unit_hi and
                         unit_lo <= aux_rows[1]) or
                        (bias is not None and unit_lo <= bias <= unit_hi))
                    if not conflict:
                        # (A bias row is read in the cycle after the issue, through the
                        # port of the aux rows: after the last of those in flight.)
                        chain = vpu_chain
                        if bias is not None and unit_r1:
                            chain = max(chain, unit_r1_done)
                        vpu_wait = min(vpu_idle, chain)
                ready = max(load_idle, vpu_wait, gd_idle, streamed, drained)
            elif op in WAIT_ALL:
                ready = max(load_idle, matmul_idle, vpu_idle, gd_idle)
            elif op is CFG:
                ready = max(vpu_idle, gd_idle)
            else:
                ready = 0
            c = max(e, ready)
            if wd and c >= wd:
                return stop(ErrorCode.WATCHDOG, wd)
            # Issue in cycle c.
            self.instructions += 1
            next_pc = self.pc + 1
            if op is HALT:
                self.cycles = c + 1
                if self.events is not None:
                    self.events.append(Event(self.runs, self.pc, ins, "control", f, e, c,
                                             c + 1))
                self.pc = next_pc
                self.state = State.DONE
                return
            if op is SETR:
                self._set_reg(ins.a[1], ins.a[0])
            elif op is ADDI:
                self._set_reg(ins.a[1], self.regs[ins.b[1]] + ins.a[0])
            elif op is DJNZ:
                value = (self.regs[ins.a[1]] - 1) & 0xFFFF
                self._set_reg(ins.a[1], value)
                if value:
                    next_pc = ins.count
            elif op is CFG:
                self.cfgs[ins.flags] = ins.count
                if rec is not None:
                    rec.append((CONFIG, ins.flags, ins.count))
            elif op is LOADW:
                transpose = bool(ins.flags & FLAG_TRANSPOSE)
                self._loadw(operands["src"], rows, transpose)
                if rec is not None:
                    rec.append((LOAD, operands["src"], rows, transpose))
                load_ready, load_idle = c + load_ready_after, c + load_idle_after
                switch_allowed = c + switch_after
            elif op is MATMUL:
                accumulate = bool(ins.flags & FLAG_ACCUMULATE)
                self._matmul(operands["src"], ins.stride, rows, operands["dst"], accumulate)
                if rec is not None:
                    rec.append((MATMUL_OP, operands["src"], ins.stride, rows, operands["dst"],
                                accumulate))
                matmul_ready, matmul_idle = c + MATMUL_READY(n, rows), c + MATMUL_IDLE(cfg, rows)
                mm_issue, mm_dst = c, operands["dst"]
                mm_dst_end = mm_dst + rows - 1
                mm_src, mm_hi = operands["src"], operands["src"] + (rows - 1) * ins.stride
                load_allowed = c + load_after
            elif op is VPU:
                self._flush()
                self._vpu(ins, operands)
                if rec is not None:
                    rec.append((VECTOR, ins, operands))
                pathway = ins.flags & 0xF
                transposed = bool(ins.flags & FLAG_TRANSPOSE_OUT)
                r1 = bool(ins.flags & (Pathway.LOSS | Pathway.DERIV))
                lo, hi = operands["written"]
                if chains and c < vpu_idle:
                    # Behind a pass in flight: the rows written and the aux reads are
                    # those of every pass in flight.
                    r1 = r1 or unit_r1
                    lo, hi = min(lo, unit_lo), max(hi, unit_hi)
                unit_chase = chains and c >= vpu_idle and not transposed and ins.stride == 1
                vpu_issue = c
                vpu_idle = c + VPU_IDLE(cfg, rows, transposed, pathway)
                vpu_chain = c + chain_after(cfg, rows, transposed)
                unit_idle = vpu_idle
                unit_r1 = r1
                # Aux row i is read in cycle c + A + i * P (accumulator row i in cycle
                # c + 1 + i * P; the spread is (rows - 1) * (P - 1)).
                spread = VectorUnit.spread(cfg, rows, pathway)
                unit_r1_done = c + VectorUnit.aux_delay(cfg) + rows - 1 + spread
                unit_lo, unit_hi = lo, hi
                uacc_lo, uacc_hi = operands["src"], operands["src"] + rows - 1
                uacc_done = c + rows + 1 + spread
            elif op is GD:
                self._flush()
                stochastic = bool(ins.flags & FLAG_STOCHASTIC)
                self._gd(operands["src"], operands["param"], rows, stochastic)
                if rec is not None:
                    rec.append((GD_PASS, operands["src"], operands["param"], rows, stochastic))
                gd_idle = c + GD_IDLE(cfg, rows)
                unit_idle, unit_r1, unit_chase = gd_idle, True, False
                # Parameter row i is read in cycle c + P + i * I (gradient row i in cycle
                # c + 1 + i * I; I = row_interval, the spread is (rows - 1) * (I - 1)).
                spread = GradientDescentUnit.spread(cfg, rows)
                unit_r1_done = c + GradientDescentUnit.param_delay(cfg) + rows - 1 + spread
                unit_lo, unit_hi = operands["written"]
                uacc_lo, uacc_hi = operands["src"], operands["src"] + rows - 1
                uacc_done = c + rows + 1 + spread
            if self.events is not None:
                end = {Op.LOADW: load_idle, Op.MATMUL: matmul_idle, Op.VPU: vpu_idle,
                       Op.GD: gd_idle}.get(op, c + 1)
                self.events.append(Event(self.runs, self.pc, ins, ENGINES.get(op, "control"),
                                         f, e, c, end))
            self.pc = next_pc
            f = c + 1

    def _set_reg(self, rd, value):
        if rd:
            self.regs[rd] = value & 0xFFFF

    def _check(self, ins):
        """The issue-time checks of the control unit, in its order. Returns the effective
        addresses of the operands; raises :class:`_Fault`."""
        op = ins.op
        if op not in ENGINE_OPS:
            return {}
        cfg = self.cfg
        rows, stride = ins.count, ins.stride
        regs = self.regs
        (a_base, a_reg), (b_base, b_reg) = ins.a, ins.b
        ea = a_base + regs[a_reg]
        if rows == 0 or (op == Op.LOADW and rows > cfg.n):
            raise _Fault(ErrorCode.BAD_OPERAND)
        last = rows - 1
        # (The loads and matmuls of a GEMM first: they are most of what runs.)
        # (Rows read through the buffer's second copy: below cfg.ub_loadable_rows.)
        loadable = cfg.ub_loadable_rows
        if op == Op.LOADW:
            if ea + last >= loadable:
                raise _Fault(ErrorCode.UB_RANGE)
            return {"src": ea}
        eb = b_base + regs[b_reg]
        if op == Op.MATMUL:
            if ea + last * stride >= cfg.ub_depth:
                raise _Fault(ErrorCode.UB_RANGE)
            if eb + last >= cfg.acc_depth:
                raise _Fault(ErrorCode.ACC_RANGE)
            return {"src": ea, "dst": eb}
        if op == Op.GD:
            if ea + last >= cfg.acc_depth:
                raise _Fault(ErrorCode.ACC_RANGE)
            if eb + last >= loadable:
                raise _Fault(ErrorCode.UB_RANGE)
            return {"src": ea, "param": eb, "written": (eb, eb + last)}
        # VPU: overlaps, then the accumulator source, destination, aux and bias rows.
        ec, ed = ins.c[0] + regs[ins.c[1]], ins.d[0] + regs[ins.d[1]]
        path = ins.flags
        use_bias = bool(path & Pathway.BIAS)
        use_aux = bool(path & (Pathway.LOSS | Pathway.DERIV))
        span = last * stride
        if path & FLAG_TRANSPOSE_OUT:
            # Transposed output: no aux operand; the written rows span the extent.
            if use_aux:
                raise _Fault(ErrorCode.BAD_OPERAND)
            span = vpu_transposed_extent(cfg.n, rows, stride)
        dst_end, aux_end = eb + span, ec + last * stride
        aux_overlap = ec <= dst_end and eb <= aux_end
        in_place = ec == eb and (stride != 0 or rows == 1)
        if (use_aux and aux_overlap and not in_place) or (use_bias and eb <= ed <= dst_end):
            raise _Fault(ErrorCode.BAD_OPERAND)
        if ea + last >= cfg.acc_depth:
            raise _Fault(ErrorCode.ACC_RANGE)
        if dst_end >= cfg.ub_depth or (use_aux and aux_end >= loadable) or \
                (use_bias and ed >= loadable):
            raise _Fault(ErrorCode.UB_RANGE)
        return {"src": ea, "dst": eb, "aux": ec, "bias": ed, "written": (eb, dst_end),
                "aux_rows": (ec, aux_end) if use_aux else None,
                "bias_row": ed if use_bias else None}

    def _loadw(self, src, rows, transpose):
        tile = np.zeros((self.cfg.n, self.cfg.n), dtype=np.int64)
        tile[:rows] = self.ub[src:src + rows]
        self.shadow = tile.T.copy() if transpose else tile

    def _matmul(self, src, stride, rows, dst, accumulate):
        """Deferred: the products are computed together by :meth:`_flush`, before anything
        reads the accumulators or writes the buffer (nothing else can change the rows a
        matmul reads or writes in between)."""
        cfg = self.cfg
        self.active = self.shadow.copy()
        x = self.ub[src:src + rows] if stride == 1 else self.ub[src + stride * np.arange(rows)]
        self._pending.append((x, self.active, dst, rows, accumulate))
        self.array_busy += rows
        self.macs += rows * cfg.n * cfg.n

    def _flush(self):
        """The pending matmuls, in order. All products at once when no partial sum can
        saturate (bounded by the sums of absolute products over every tile that reaches a
        row, plus the row's old value): then they are plain integer sums; else each matmul
        through the array's saturating chain."""
        ops, self._pending = self._pending, []
        if not ops:
            return
        cfg = self.cfg
        counts = [op[3] for op in ops]
        x = np.concatenate([op[0] for op in ops])
        w = np.stack([op[1] for op in ops])
        which = np.repeat(np.arange(len(ops)), counts)
        rows = np.concatenate([np.arange(op[2], op[2] + op[3]) for op in ops])
        bound = np.abs(self.acc[np.unique(rows)]).max(initial=0)
        reach = np.zeros(self.acc.shape, dtype=np.int64)
        np.add.at(reach, rows, np.einsum("rk,rkn->rn", np.abs(x), np.abs(w)[which]))
        if int(bound + reach.max()) <= min(cfg.acc.max_int, -cfg.acc.min_int):
            products = np.einsum("rk,rkn->rn", x, w[which])
            start = 0
            for _, _, dst, count, accumulate in ops:
                part = products[start:start + count]
                if accumulate:
                    self.acc[dst:dst + count] += part
                else:
                    self.acc[dst:dst + count] = part
                start += count
            return
        self._chain(ops)

    def _chain(self, ops):
        """Matmuls ``(x, w, dst, rows, accumulate)`` in order through the array's
        saturating chain."""
        cfg = self.cfg
        for xs, ws, dst, count, accumulate in ops:
            result, ovf = dot_chain(xs, ws, cfg.acc, return_overflow=True)
            if accumulate:
                result, add_ovf = add_sat(self.acc[dst:dst + count], result, cfg.acc,
                                          return_overflow=True)
                ovf = ovf | add_ovf.any(axis=1)
            self.acc[dst:dst + count] = result
            self.flags[0] |= bool(ovf.any())

    def _vpu(self, ins, operands):
        cfg = self.cfg
        fmt, sc = cfg.data, cfg.scalar
        rows, stride, path = ins.count, ins.stride, ins.flags
        leak = self._scalar(ConfigReg.LEAK)
        loss_scale = self._scalar(ConfigReg.LOSS_SCALE)
        src, dst, aux, bias = (operands[k] for k in ("src", "dst", "aux", "bias"))
        x, ovf = narrow(self.acc[src:src + rows], cfg.acc, fmt, return_overflow=True)
        if path & Pathway.BIAS:
            x, o = add_sat(x, self.ub[bias][None, :], fmt, return_overflow=True)
            ovf |= o
        if path & Pathway.ACT:
            scaled, o = mul_narrow(x, fmt, leak, sc, fmt, return_overflow=True)
            neg = x < 0
            x = np.where(neg, scaled, x)
            ovf |= neg & o
        h = x
        y = self.ub[aux + stride * np.arange(rows)] if path & (Pathway.LOSS | Pathway.DERIV) \
            else None
        if path & Pathway.LOSS:
            diff, o1 = add_sat(x, -y, fmt, return_overflow=True)
            x, o2 = mul_narrow(diff, fmt, loss_scale, sc, fmt, return_overflow=True)
            ovf |= o1 | o2
        if path & Pathway.DERIV:
            ref = h if path & Pathway.LOSS else y
            scaled, o = mul_narrow(x, fmt, leak, sc, fmt, return_overflow=True)
            keep = ref > 0
            x = np.where(keep, x, scaled)
            ovf |= ~keep & o
        if path & FLAG_TRANSPOSE_OUT:
            # Tiles of n rows (the last padded with zero rows), each written as its
            # transpose: row k of tile t to dst + t + k * stride, in that order (the last
            # write of a row wins).
            n = cfg.n
            tiles = -(-rows // n)
            padded = np.zeros((tiles * n, n), dtype=np.int64)
            padded[:rows] = x
            out = padded.reshape(tiles, n, n).transpose(0, 2, 1).reshape(-1, n)
            addr = (dst + np.arange(tiles)[:, None] + stride * np.arange(n)[None, :]).ravel()
            _, first_of_reversed = np.unique(addr[::-1], return_index=True)
            last = len(addr) - 1 - first_of_reversed
            self.ub[addr[last]] = out[last]
        else:
            self.ub[dst + stride * np.arange(rows)] = x
        self.flags[1] |= bool(ovf.any())

    def _gd(self, src, param, rows, stochastic=False):
        cfg = self.cfg
        lr = self._scalar(ConfigReg.LR)
        grad = self.acc[src:src + rows]
        if stochastic:
            prod_fmt = FixedFormat(min(62, cfg.acc.width + cfg.scalar.width),
                                   cfg.acc.frac + cfg.scalar.frac)
            bits, self.rng = xorshift32_sequence(self.rng, rows)
            update, o1 = stochastic_narrow(grad * lr, prod_fmt, cfg.data, bits,
                                           return_overflow=True)
        else:
            update, o1 = mul_narrow(grad, cfg.acc, lr, cfg.scalar, cfg.data, return_overflow=True)
        theta, o2 = saturate(self.ub[param:param + rows] - update, cfg.data, return_overflow=True)
        self.ub[param:param + rows] = theta
        self.flags[2] |= bool((o1 | o2).any())


class ReferenceTransport:
    """A transport (see :mod:`tinytpu_hdl.runtime.driver`) to a :class:`ReferenceTPU`.

    Implements the host protocol with the same statuses as the gateware. A ``START``
    runs the whole program before it is answered, so the device is never seen running.
    """

    def __init__(self, cfg, model=None):
        self.cfg = cfg
        self.model = model or ReferenceTPU(cfg)

    def idle(self, cycles):
        pass

    def exchange(self, words):
        cfg, model = self.cfg, self.model
        command, space, count = parse_header(words[0])
        address = words[1] if len(words) > 1 else 0

        def reply(status, data=()):
            rcount = count if status == Status.OK else 0
            return [command | (int(status) << 8) | (rcount << 16), *data]

        if command in (Command.WRITE, Command.READ):
            if space not in set(Space):
                return reply(Status.BAD_COMMAND)
            space = Space(space)
            if address + count > space_depth(cfg, space):
                return reply(Status.RANGE)
            if command == Command.WRITE:
                data = list(words[2:])
                if len(data) != count * item_words(cfg, space):
                    raise ValueError(f"WRITE of {count} items carries {len(data)} words")
                if space in (Space.UB, Space.ACC):
                    memory = model.ub if space == Space.UB else model.acc
                    memory[address:address + count] = unpack_rows(cfg, space, data)
                    return reply(Status.OK)
                for i, item in enumerate(unpack_items(cfg, space, data)):
                    self._write_item(space, address + i, item)
                return reply(Status.OK)
            if space in (Space.UB, Space.ACC):
                memory = model.ub if space == Space.UB else model.acc
                return reply(Status.OK, pack_items(cfg, space, memory[address:address + count]))
            if space == Space.CSR:
                return reply(Status.OK, model.read_csrs(address, count))
            return reply(Status.OK, pack_items(cfg, space, model.imem[address:address + count]))
        if command == Command.START:
            if model.state == State.ERROR:
                model.write_csr(CSR.START_PC, address)
                return reply(Status.REFUSED)
            model.write_csr(CSR.START_PC, address)
            model.start()
            return reply(Status.OK)
        if command == Command.STOP:
            return reply(Status.OK)
        if command == Command.CLEAR:
            model.clear()
            return reply(Status.OK)
        return reply(Status.BAD_COMMAND)

    def _write_item(self, space, addr, item):
        """An instruction word or a CSR (buffer and accumulator rows are written whole)."""
        if space == Space.IMEM:
            self.model.imem[addr] = item
        else:
            self.model.write_csr(addr, item)
