"""The TPU: array, memories, engines, control unit and host interface."""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import TPUConfig
from ..isa import INSTRUCTION_BITS
from .control import ControlUnit, State
from .gd_unit import GradientDescentUnit
from .host import HostInterface
from .loader import WeightLoader
from .matmul_engine import MatmulEngine
from .memory import AccumulatorMemory, RowMemory, UnifiedBuffer, share_read, share_write
from .multiplier import SharedMultipliers
from .systolic import SystolicArray
from .vector_unit import VectorUnit

__all__ = ["TPU"]


class TPU(wiring.Component):
    """A complete TPU for a :class:`~tinytpu_hdl.config.TPUConfig`.

    ::

        host_cmd ──► HostInterface ──► memories, CSRs, start/stop
        host_resp ◄──┘
                      ControlUnit ── fetch ◄── instruction memory
                        │ issue
           ┌────────────┼───────────────┬─────────────────┐
           ▼            ▼               ▼                 ▼
        WeightLoader  MatmulEngine    VectorUnit     GradientDescentUnit
           │ UB r1      │ UB r0         │ ACC r1, UB r0/r1/w  │ ACC r1, UB r0/w
           ▼            ▼
        SystolicArray (weights, act) ──► result ──► MatmulEngine ──► accumulators

    Parameters
    ----------
    cfg : TPUConfig
        Array size, formats, memory depths.
    family : str or None
        FPGA family to build for (``"ecp5"``, ``"ice40"``; default: the platform's
        ``family``, or none when elaborated without a platform). On ECP5 the PEs, the
        vector unit and the gradient-descent unit use ``MULT18X18D`` blocks with their
        own registers; on iCE40 the gradient-descent unit keeps its product within
        one 16x16 DSP and the RAM output registers are left out. Results and cycle counts are the same for every family.
    ram_output_registers : bool or None
        Keep the registers that only serve speed: the control unit's instruction
        register, the host interface's read registers and its range check split over
        two cycles (default: everywhere but iCE40, where logic cells are scarcer).
        Without them the control unit's index registers are in block RAM as well.

    Members
    -------
    host_cmd : In(stream.Signature(32))
        Host-protocol command words (:mod:`tinytpu_hdl.host_protocol`).
    host_resp : Out(stream.Signature(32))
        Response words.
    running, done, error : Out(1)
        State of the control unit (for LEDs).
    """

    host_cmd: In(stream.Signature(32))
    host_resp: Out(stream.Signature(32))
    running: Out(1)
    done: Out(1)
    error: Out(1)

    def __init__(self, cfg: TPUConfig, *, family=None, ram_output_registers=None):
        if not isinstance(cfg, TPUConfig):
            raise TypeError(f"TPU needs a TPUConfig, not {cfg!r}")
        self._cfg = cfg
        self._family = None if family is None else str(family).lower()
        self._ram_output_registers = ram_output_registers
        super().__init__()

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg

        family = self._family
        if family is None:
            family = str(getattr(platform, "family", "")).lower() or None
        m.submodules.array = array = SystolicArray(
            cfg.n, cfg.n, fmt=cfg.data, acc=cfg.acc, family=family,
            product_registers=cfg.isolated_multipliers)
        m.submodules.ub = ub = UnifiedBuffer(cfg, cfg.ub_depth, family=family)
        m.submodules.acc = acc = AccumulatorMemory(cfg, cfg.acc_depth, family=family)
        # (The host writes instructions a 32-bit word at a time.)
        m.submodules.imem = imem = RowMemory(cfg.imem_depth, INSTRUCTION_BITS, granularity=32)
        # The control unit's instruction register and the host interface's read register
        # only keep logic off block RAM outputs, for timing; results and cycle counts are
        # the same without them, so they are left out where logic cells are scarcer than
        # speed (iCE40), unless asked for.
        ram_registers = self._ram_output_registers
        if ram_registers is None:
            ram_registers = family != "ice40"
        # The span of a strided operand, (rows - 1) * stride, is a multiply on iCE40 (one
        # DSP, which the 1x1 TPU has to spare, against hundreds of logic cells) and
        # carry-save partial products elsewhere (off the multiplier blocks, which the
        # placer puts far away).
        # Without the RAM output registers (for logic-cell economy), the index registers
        # live in block RAM too.
        m.submodules.control = control = ControlUnit(
            cfg, instruction_register=ram_registers, span_multiplier=family == "ice40",
            register_ram=not ram_registers)
        m.submodules.loader = loader = WeightLoader(cfg)
        m.submodules.matmul = matmul = MatmulEngine(cfg)
        m.submodules.vector = vector = VectorUnit(cfg, family=family)
        m.submodules.gd = gd = GradientDescentUnit(
            cfg, multiplier_width=16 if family == "ice40" else 18, family=family)
        if cfg.unit_multipliers == "shared":
            # One multiplier per lane for both units (they never run at the same time).
            m.submodules.unit_mult = unit_mult = SharedMultipliers(cfg, family=family)
            wiring.connect(m, vector.mul, unit_mult.vector)
            wiring.connect(m, gd.mul, unit_mult.gd)
        # (With ``overlap_units`` and ``registered_requests`` the host's buffer writes wait
        # on a register, see below.)
        registered_host_writes = cfg.overlap_units and cfg.registered_requests
        m.submodules.host = host = HostInterface(
            cfg, read_register=ram_registers, buffered_ub_write=registered_host_writes,
            read_wait=UnifiedBuffer.registered_reads(cfg))
        #: The memories never read in the cycle a row is written, by name (for the collision
        #: check in simulation, see :mod:`.memory`; the accumulators are left out: the
        #: matmul engine forwards what it would read there).
        self.checked_memories = {"ub": ub, "imem": imem}
        #: The blocks, by name (for waveforms; set when elaborated).
        self.blocks = {"host": host, "control": control, "loader": loader, "matmul": matmul,
                       "array": array, "vector": vector, "gd": gd, "ub": ub, "acc": acc,
                       "imem": imem}

        wiring.connect(m, wiring.flipped(self.host_cmd), host.cmd)
        wiring.connect(m, host.resp, wiring.flipped(self.host_resp))

        # Array.
        wiring.connect(m, loader.weights, array.weights)
        wiring.connect(m, matmul.act, array.act)
        wiring.connect(m, array.result, matmul.result)

        # Memory ports (engines sharing a port never use it in the same cycle).
        if cfg.overlap_units:
            m.d.comb += [control.unit_reading.eq(vector.reading | gd.reading),
                         control.unit_r1_pending.eq(vector.aux_pending | gd.param_pending)]
            if cfg.chains_passes:
                m.d.comb += control.vpu_chain_ready.eq(vector.chain_ready)
            # r0 streams into the array only; the loader and the units read through r1.
            share_read(m, ub.r0, [matmul.ub, host.ub_rd])
            share_read(m, ub.r1, [loader.ub, vector.ub_bias, vector.ub_aux, gd.ub_rd])
        else:
            share_read(m, ub.r0, [matmul.ub, vector.ub_aux, gd.ub_rd, host.ub_rd])
            share_read(m, ub.r1, [loader.ub, vector.ub_bias])
        share_write(m, ub.w, [vector.ub_wr, gd.ub_wr, host.ub_wr])
        if cfg.chase_matmul:
            share_read(m, acc.r0, [matmul.acc_rd, host.acc_rd])
            share_read(m, acc.r1, [vector.acc_rd, gd.acc_rd])
        else:
            share_read(m, acc.r0, [matmul.acc_rd, vector.acc_rd, gd.acc_rd, host.acc_rd])
        share_write(m, acc.w, [matmul.acc_wr, host.acc_wr])
        share_read(m, imem.r0, [control.imem, host.imem_rd])
        share_write(m, imem.w, [host.imem_wr])

        # The host writes the buffer in a cycle in which no engine uses its write port (or
        # the read port that shares its address). With ``overlap_units`` no read port
        # does; with ``registered_requests`` the writers say a cycle ahead, and the host
        # writes from a row register of its own, so that the buffer's write enable is an
        # OR of registers and an AND of two.
        if registered_host_writes:
            ub_busy = Signal()
            m.d.sync += ub_busy.eq(vector.writes_next | gd.writes_next)
        else:
            ub_busy = vector.ub_wr.en | gd.ub_wr.en | loader.ub.en | vector.ub_bias.en

        # Control.
        m.d.comb += [
            loader.cmd.valid.eq(control.load_cmd.valid),
            loader.cmd.payload.eq(control.load_cmd.payload),
            control.load_ready.eq(loader.ready),
            control.load_busy.eq(loader.busy),
            matmul.cmd.valid.eq(control.matmul_cmd.valid),
            matmul.cmd.payload.eq(control.matmul_cmd.payload),
            control.matmul_ready.eq(matmul.ready),
            control.matmul_busy.eq(matmul.busy),
            vector.cmd.valid.eq(control.vpu_cmd.valid),
            vector.cmd.payload.eq(control.vpu_cmd.payload),
            control.vpu_busy.eq(vector.busy),
            gd.cmd.valid.eq(control.gd_cmd.valid),
            gd.cmd.payload.eq(control.gd_cmd.payload),
            control.gd_busy.eq(gd.busy),
            control.row_fed.eq(array.act.valid),
            control.array_overflow.eq(matmul.overflow),
            control.vpu_overflow.eq(vector.overflow),
            control.gd_overflow.eq(gd.overflow),
            vector.leak.eq(control.leak),
            vector.loss_scale.eq(control.loss_scale),
            gd.lr.eq(control.lr),
            gd.seed.eq(control.seed),
            gd.reseed.eq(control.reseed),
            # Host.
            control.start.eq(host.start),
            control.stop.eq(host.stop),
            control.clear.eq(host.clear),
            control.host_conflict.eq(host.host_conflict),
            control.csr_addr.eq(host.csr_addr),
            control.csr_wdata.eq(host.csr_wdata),
            control.csr_we.eq(host.csr_we),
            host.csr_rdata.eq(control.csr_rdata),
            host.running.eq(control.running),
            host.ub_busy.eq(ub_busy),
            host.faulted.eq(control.state == State.ERROR),
            # Status outputs.
            self.running.eq(control.running),
            self.done.eq(control.state == State.DONE),
            self.error.eq(control.state == State.ERROR),
        ]
        return m
