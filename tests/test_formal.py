# amaranth: UnusedElaboratable=no
"""Formal properties, checked by SymbiYosys with yices (all from PyPI).

Every property is listed with its mode and depth in docs/verification.md.
"""

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume, Cover, Module, Mux, Signal, signed
from amaranth.lib import data

from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.gateware.control import ControlUnit
from tinytpu_hdl.gateware.gd_unit import GradientDescentUnit
from tinytpu_hdl.gateware.host import HostInterface
from tinytpu_hdl.gateware.loader import WeightLoader
from tinytpu_hdl.gateware.matmul_engine import MatmulEngine
from tinytpu_hdl.gateware.pe import ProcessingElement
from tinytpu_hdl.gateware.vector_unit import VectorUnit
from tinytpu_hdl.isa import Op, Pathway
from tinytpu_hdl.numeric import FixedFormat
from tinytpu_hdl.testing.formal import formal_tools_missing, run_formal

pytestmark = pytest.mark.skipif(formal_tools_missing() is not None,
                                reason=f"formal tool missing: {formal_tools_missing()}")

SMALL = TPUConfig(n=1, data=FixedFormat(4, 2), ub_depth=16, acc_depth=8, imem_depth=8)


def check(spec, mode, depth, name):
    result = run_formal(spec, mode=mode, depth=depth, name=name)
    assert result.passed, result.log[-3000:]


def drive_anyseq(m, *signals):
    for sig in signals:
        width = len(sig.as_value()) if isinstance(sig, data.View) else len(sig)
        m.d.comb += sig.as_value().eq(AnySeq(width)) if isinstance(sig, data.View) \
            else sig.eq(AnySeq(width))


def pe_spec(fmt, acc, *, wrong=False, product_register=False):
    """Shadow = last weight shifted in; active = shadow at the last switch; psum_out three
    cycles after a valid input = saturate(psum_in two cycles after it + x * w), with w the
    shadow weight on a switch, else the active one; overflow = incoming flag or saturation.
    With the product register, psum_in three and psum_out four cycles after the input."""
    m = Module()
    m.submodules.pe = pe = ProcessingElement(fmt, acc, product_register=product_register)
    drive_anyseq(m, pe.act_in, pe.psum_in, pe.w_north, pe.shift_south, pe.w_west, pe.shift_east)
    shadow, active = Signal(fmt.shape), Signal(fmt.shape)
    with m.If(pe.shift_south):
        m.d.sync += shadow.eq(pe.w_north)
    with m.Elif(pe.shift_east):
        m.d.sync += shadow.eq(pe.w_west)
    switch = pe.act_in.valid & pe.act_in.switch
    with m.If(switch):
        m.d.sync += active.eq(shadow)
    m.d.comb += [Assert(pe.w_shadow == shadow), Assert(pe.w_active == active)]
    x1, w1, x2, w2, x3, w3 = (Signal(fmt.shape) for _ in range(6))
    v1, v2, v3, v4 = Signal(), Signal(), Signal(), Signal()
    m.d.sync += [x1.eq(pe.act_in.data), w1.eq(Mux(switch, shadow, active)), x2.eq(x1),
                 w2.eq(w1), x3.eq(x2), w3.eq(w2),
                 v1.eq(pe.act_in.valid), v2.eq(v1), v3.eq(v2), v4.eq(v3)]
    if product_register:
        x2, w2, v3 = x3, w3, v4
    exact = Signal(signed(acc.width + 2))
    m.d.comb += exact.eq(pe.psum_in.value + x2 * w2)
    high, low = exact > acc.max_int, exact < acc.min_int
    expected = Signal(acc.shape)
    expected_ovf = Signal()
    if wrong:       # wrap-around instead of saturation: must be refuted
        m.d.sync += expected.eq(exact)
    else:
        m.d.sync += expected.eq(Mux(high, acc.max_int, Mux(low, acc.min_int, exact)))
    m.d.sync += expected_ovf.eq(pe.psum_in.overflow | high | low)
    with m.If(v3):
        m.d.comb += [Assert(pe.psum_out.value == expected),
                     Assert(pe.psum_out.overflow == expected_ovf)]
    return m


@pytest.mark.parametrize("product_register", [False, True])
def test_pe_small_format_by_induction(product_register):
    check(pe_spec(FixedFormat(4, 2), FixedFormat(8, 4), product_register=product_register),
          "prove", 5 if product_register else 4, f"pe_small_{int(product_register)}")


def test_pe_spec_is_not_vacuous():
    result = run_formal(pe_spec(FixedFormat(4, 2), FixedFormat(8, 4), wrong=True), mode="bmc",
                        depth=6, name="pe_wrong")
    assert not result.passed and "Assert failed" in result.log


@pytest.mark.slow
def test_pe_q4_4_by_induction():
    """A wider format than the default-run proof (8-bit data, 16-bit accumulators). The
    default Q8.8 x Q8.8 multiplier did not finish in 30 minutes of yices."""
    check(pe_spec(FixedFormat(8, 4), FixedFormat(16, 8)), "prove", 4, "pe_q44")


def engine_writes_spec(engine_cls, cfg, port, base_field, *, stride=True, count=None):
    """After a command is accepted, the k-th write (or read) of ``port`` goes to
    ``base + k * stride`` and there are at most ``rows`` of them; none happens while idle."""
    m = Module()
    m.submodules.eng = eng = engine_cls(cfg)
    inputs = [eng.cmd.payload]
    for name in ("leak", "loss_scale", "lr", "seed", "reseed"):
        if hasattr(eng, name):
            inputs.append(getattr(eng, name))
    for name in ("acc_rd", "ub_aux", "ub_bias", "ub_rd", "ub"):
        if hasattr(eng, name):
            inputs.append(getattr(eng, name).data)
    if hasattr(eng, "result"):
        inputs += [eng.result.payload, eng.result.valid]
    drive_anyseq(m, *inputs)
    valid = Signal()
    m.d.comb += [valid.eq(AnySeq(1)), eng.cmd.valid.eq(valid)]
    busy = eng.busy
    ready = getattr(eng, "ready", ~busy)
    m.d.comb += Assume(~valid | ready)
    payload = eng.cmd.payload
    base = Signal(17)
    step = Signal(9)
    rows = Signal(16)
    k = Signal(17)
    accepted = Signal()
    access = getattr(eng, port)
    enable = access.en
    with m.If(valid):
        m.d.sync += [base.eq(getattr(payload, base_field)), rows.eq(payload.rows), k.eq(0),
                     accepted.eq(1),
                     step.eq(payload.stride if stride else 1)]
    with m.Elif(enable):
        m.d.sync += k.eq(k + 1)
    # One command at a time in this harness: the next is accepted only when idle.
    m.d.comb += Assume(~valid | ~busy)
    with m.If(enable):
        m.d.comb += [Assert(accepted), Assert(k < rows),
                     Assert(access.addr == (base + k * step)[:len(access.addr)])]
    m.d.comb += Cover(accepted & (k == 3) & ~busy)
    return m


@pytest.mark.parametrize("engine, port, base, stride", [
    (VectorUnit, "ub_wr", "dst", True),
    (VectorUnit, "acc_rd", "src", False),
    (GradientDescentUnit, "ub_wr", "param", False),
    (MatmulEngine, "acc_wr", "dst", False),
    (MatmulEngine, "ub", "src", True),
])
def test_engine_accesses_stay_in_the_commanded_rows(engine, port, base, stride):
    check(engine_writes_spec(engine, SMALL, port, base, stride=stride), "bmc", 16,
          f"{engine.__name__}_{port}")


def test_weight_loader_reads_only_the_tile():
    cfg = TPUConfig(n=3, data=FixedFormat(4, 2), ub_depth=16, acc_depth=8, imem_depth=8)
    m = Module()
    m.submodules.ld = ld = WeightLoader(cfg)
    drive_anyseq(m, ld.cmd.payload, ld.ub.data)
    valid = Signal()
    m.d.comb += [valid.eq(AnySeq(1)), ld.cmd.valid.eq(valid), Assume(~valid | ld.ready)]
    base, rows = Signal(17), Signal(16)
    with m.If(valid):
        m.d.sync += [base.eq(ld.cmd.payload.addr), rows.eq(ld.cmd.payload.rows)]
    # What the control unit guarantees before it issues a LOADW.
    m.d.comb += Assume(~valid | ((ld.cmd.payload.rows >= 1) & (ld.cmd.payload.rows <= cfg.n) &
                                 (ld.cmd.payload.addr + ld.cmd.payload.rows <= cfg.ub_depth)))
    with m.If(ld.ub.en):
        m.d.comb += [Assert(ld.ub.addr >= base), Assert(ld.ub.addr < base + rows)]
    check(m, "bmc", 16, "loader")


def test_control_issues_reads_of_a_partial_copy_below_it():
    """With ``ub_copy_depth`` (the buffer's second copy holds its lower rows only), whatever
    the program, every LOADW the control unit issues loads rows below the copy, every GD's
    parameters lie below it, and every VPU's bias row and aux rows (when its pathway reads
    them) too."""
    from tinytpu_hdl.isa import Pathway
    cfg = TPUConfig(n=2, data=FixedFormat(4, 2), ub_depth=16, acc_depth=8, imem_depth=8,
                    ub_copy_depth=10)
    m, cu, _ = control_spec(cfg)
    copy = cfg.ub_copy_depth
    ld, gd, vpu = cu.load_cmd, cu.gd_cmd, cu.vpu_cmd
    with m.If(ld.valid):
        m.d.comb += Assert(ld.payload.addr + ld.payload.rows <= copy)
    with m.If(gd.valid):
        m.d.comb += Assert(gd.payload.param + gd.payload.rows <= copy)
    p = vpu.payload
    with m.If(vpu.valid & (p.pathway & Pathway.BIAS).any()):
        m.d.comb += Assert(p.bias < copy)
    with m.If(vpu.valid & (p.pathway & (Pathway.LOSS | Pathway.DERIV)).any()):
        m.d.comb += Assert(p.aux + (p.rows - 1) * p.stride < copy)
    check(m, "bmc", 10, "control_copy")


def control_with_any_program(cfg):
    """A module with the control unit, whose instruction memory answers every fetch with
    an arbitrary word."""
    m = Module()
    m.submodules.cu = cu = ControlUnit(cfg)
    word = Signal(128)
    with m.If(cu.imem.en):
        m.d.sync += word.eq(AnySeq(128))
    m.d.comb += cu.imem.data.eq(word)
    return m, cu


def control_spec(cfg, *, watchdog_bound=None, cover_op=None):
    """The control unit with an arbitrary instruction memory and idle engines."""
    m, cu = control_with_any_program(cfg)
    m.d.comb += [cu.load_ready.eq(1), cu.matmul_ready.eq(1), cu.load_busy.eq(0),
                 cu.matmul_busy.eq(0), cu.vpu_busy.eq(0), cu.gd_busy.eq(0), cu.stop.eq(0),
                 cu.host_conflict.eq(0)]
    drive_anyseq(m, cu.start, cu.clear, cu.row_fed, cu.array_overflow, cu.vpu_overflow,
                 cu.gd_overflow, cu.csr_addr, cu.csr_wdata, cu.csr_we)
    issued = cu.load_cmd.valid | cu.matmul_cmd.valid | cu.vpu_cmd.valid | cu.gd_cmd.valid
    return m, cu, issued


def test_control_issues_or_faults_within_n_cycles_when_engines_are_idle():
    """No deadlock: with idle engines no instruction waits in issue longer than the array's
    double-buffering holds (n cycles), so the unit keeps fetching, or halts or faults.

    Between two fetches lie the latch or decode cycle, an engine instruction's operand-check
    cycle, at most n - 1 cycles of waiting for the double-buffering holds and the issue
    cycle, and, when the next instruction would lie beyond the instruction memory, the
    fetch that faults and one drain cycle: n + 4 at most (the bound is tight: n + 3
    fails)."""
    cfg = TPUConfig(n=3, data=FixedFormat(4, 2), ub_depth=16, acc_depth=8, imem_depth=8)
    m, cu, _ = control_spec(cfg)
    stuck = Signal(range(16))
    with m.If(cu.running & ~cu.imem.en):
        m.d.sync += stuck.eq(stuck + 1)
    with m.Else():
        m.d.sync += stuck.eq(0)
    m.d.comb += Assert(stuck <= cfg.n + 4)
    check(m, "bmc", 24, "control_liveness")


@pytest.mark.extended
def test_control_watchdog_bounds_every_run():
    """With a watchdog of W cycles, a run ends (done or error) within W + 2 cycles of its
    start, whatever the program, when the engines are idle."""
    cfg = SMALL
    m, cu, _ = control_spec(cfg)
    budget = Signal(4)
    m.d.comb += [budget.eq(AnyConst(4)), Assume(budget != 0)]
    # The host sets the watchdog before starting; CSR writes only reach it while idle.
    m.d.comb += Assume(~cu.csr_we | (cu.csr_addr != 5))
    with m.If(cu.csr_we & (cu.csr_addr == 4)):
        m.d.comb += Assume(cu.csr_wdata == budget)
    armed = Signal()
    with m.If(cu.csr_we & (cu.csr_addr == 4) & ~cu.running):
        m.d.sync += armed.eq(1)
    m.d.comb += Assume(~cu.start | armed)
    elapsed = Signal(8)
    with m.If(cu.running):
        m.d.sync += elapsed.eq(elapsed + 1)
    with m.Else():
        m.d.sync += elapsed.eq(0)
    m.d.comb += Assert(elapsed <= budget + 2)
    check(m, "bmc", 24, "control_watchdog")


def test_control_keeps_the_engines_off_each_others_ports():
    """Whatever the program and whatever the engines report: a VPU or GD issues only with
    the loader and both units idle and the matmul engine's rows streamed, and while the
    matmul engine is still busy only ``chase_after`` cycles or more after the last MATMUL
    issued and from a source row at or below its destination; a LOADW or MATMUL only with
    both units idle (without ``overlap_units``)."""
    cfg = TPUConfig(n=2, data=FixedFormat(4, 2), ub_depth=16, acc_depth=8, imem_depth=8,
                    overlap_units=False)
    m, cu = control_with_any_program(cfg)
    drive_anyseq(m, cu.load_ready, cu.matmul_ready, cu.load_busy, cu.matmul_busy,
                 cu.vpu_busy, cu.gd_busy, cu.start, cu.clear, cu.row_fed, cu.array_overflow,
                 cu.vpu_overflow, cu.gd_overflow, cu.csr_addr, cu.csr_wdata, cu.csr_we)
    m.d.comb += [cu.stop.eq(0), cu.host_conflict.eq(0)]
    delay = MatmulEngine.chase_after(cfg)
    since = Signal(range(delay + 1), init=delay)       # cycles since the last MATMUL issued
    last_dst = Signal(8)
    with m.If(cu.matmul_cmd.valid):
        m.d.sync += [since.eq(1), last_dst.eq(cu.matmul_cmd.payload.dst)]
    with m.Elif(cu.start):
        m.d.sync += since.eq(delay)
    with m.Elif(since < delay):
        m.d.sync += since.eq(since + 1)
    for cmd in (cu.vpu_cmd, cu.gd_cmd):
        with m.If(cmd.valid):
            m.d.comb += [Assert(~cu.load_busy & ~cu.vpu_busy & ~cu.gd_busy & cu.matmul_ready),
                         Assert(~cu.matmul_busy | ((since >= delay) &
                                                   (cmd.payload.src <= last_dst)))]
    with m.If(cu.load_cmd.valid | cu.matmul_cmd.valid):
        m.d.comb += Assert(~cu.vpu_busy & ~cu.gd_busy)
    m.d.comb += Cover(cu.vpu_cmd.valid & cu.matmul_busy)
    check(m, "bmc", 20, "control_ports")


@pytest.mark.parametrize("part", [pytest.param("loads", marks=pytest.mark.extended),
                                  pytest.param("passes", marks=pytest.mark.extended),
                                  "wrong"])
def test_control_overlaps_units_only_where_nothing_conflicts(part):
    """With ``overlap_units``, whatever the program and whatever the engines report: a
    LOADW issues while a unit is busy only if the unit's pass has no aux or parameter rows
    left to read (the loader's port) and writes none of the rows loaded; a MATMUL only if the pass
    writes none of the rows it streams, and its accumulator destination does not start
    past the first of the rows the pass reads while it still reads them. The ranges here
    are taken from the commands (independently of the control unit's registers). And
    (``passes``) a VPU or GD chases a MATMUL whose rows have not all streamed only if it
    writes none of them; a VPU issues while the vector unit is busy (``chain_passes``) only
    if the unit is ``chain_ready``, the VPU is not transposed, reads no aux or bias row
    that a pass in flight writes (the passes' rows then the hull of theirs), and, with a
    bias row, no aux row is left to read. With ``wrong`` the spec demands that a MATMUL
    never issues beside a busy unit: that must fail (the overlap happens). (Two proofs
    of the two parts: together they take the solver several times longer.)"""
    wrong = part == "wrong"
    cfg = TPUConfig(n=2, data=FixedFormat(4, 2), ub_depth=16, acc_depth=8, imem_depth=8,
                    overlap_units=True)
    m, cu = control_with_any_program(cfg)
    drive_anyseq(m, cu.load_ready, cu.matmul_ready, cu.load_busy, cu.matmul_busy,
                 cu.vpu_busy, cu.gd_busy, cu.start, cu.clear, cu.row_fed, cu.array_overflow,
                 cu.vpu_overflow, cu.gd_overflow, cu.csr_addr, cu.csr_wdata, cu.csr_we,
                 cu.unit_reading, cu.unit_r1_pending, cu.vpu_chain_ready)
    m.d.comb += [cu.stop.eq(0), cu.host_conflict.eq(0)]
    lo, hi, acc_lo, acc_hi = (Signal(24, name=name) for name in ("lo", "hi", "acc_lo", "acc_hi"))
    reads_r1 = Signal()
    vpu, gd = cu.vpu_cmd.payload, cu.gd_cmd.payload
    aux = (vpu.pathway & (Pathway.LOSS | Pathway.DERIV)) != 0
    # A transposed VPU at n = 2 writes rows up to (rows - 1) // 2 + stride past dst.
    vpu_last = Mux(vpu.transpose, ((vpu.rows - 1) >> 1) + vpu.stride,
                   (vpu.rows - 1) * vpu.stride)
    vpu_hi = vpu.dst + vpu_last
    with m.If(cu.vpu_cmd.valid):
        m.d.sync += [acc_lo.eq(vpu.src), acc_hi.eq(vpu.src + vpu.rows - 1)]
        with m.If(cu.vpu_busy):
            # Behind a pass in flight: the rows of both.
            m.d.sync += [lo.eq(Mux(vpu.dst < lo, vpu.dst, lo)),
                         hi.eq(Mux(vpu_hi > hi, vpu_hi, hi)), reads_r1.eq(reads_r1 | aux)]
        with m.Else():
            m.d.sync += [lo.eq(vpu.dst), hi.eq(vpu_hi), reads_r1.eq(aux)]
    with m.If(cu.gd_cmd.valid):
        m.d.sync += [lo.eq(gd.param), hi.eq(gd.param + gd.rows - 1), reads_r1.eq(1),
                     acc_lo.eq(gd.src), acc_hi.eq(gd.src + gd.rows - 1)]
    busy = cu.vpu_busy | cu.gd_busy

    def disjoint(first, last):
        return (last < lo) | (hi < first)
    load, mm = cu.load_cmd.payload, cu.matmul_cmd.payload
    # A MATMUL may stream rows a lone VPU (issued with the unit idle; not transposed,
    # stride 1) writes if it has stride 1 and issues L + src - dst cycles after the VPU or
    # later (row dst + i is written L + i cycles after the VPU's issue, row src + j read
    # 1 + j cycles after the MATMUL's).
    lone, since = Signal(), Signal(8)
    with m.If(cu.vpu_cmd.valid):
        m.d.sync += [lone.eq(~cu.vpu_busy & ~vpu.transpose & (vpu.stride == 1)), since.eq(1)]
    with m.Elif(since != 255):
        m.d.sync += since.eq(since + 1)
    with m.If(cu.gd_cmd.valid):
        m.d.sync += lone.eq(0)
    chased = lone & (mm.stride == 1) & (since + lo >= VectorUnit.latency(cfg) + mm.src)
    if part == "loads":
        with m.If(cu.load_cmd.valid & busy):
            m.d.comb += Assert(~(reads_r1 & cu.unit_r1_pending) &
                               disjoint(load.addr, load.addr + load.rows - 1))
        with m.If(cu.matmul_cmd.valid & busy):
            m.d.comb += Assert((disjoint(mm.src, mm.src + (mm.rows - 1) * mm.stride) | chased) &
                               ~((acc_lo < mm.dst) & (mm.dst <= acc_hi) & cu.unit_reading))
    if wrong:
        with m.If(cu.matmul_cmd.valid & busy):
            m.d.comb += Assert(0)
    # A VPU or GD issues with the loader and both units idle and, while the matmul engine
    # is busy, the chase delay over and its source at or below the last MATMUL's
    # destination or past its last row; before the MATMUL's rows have streamed only if it
    # writes none of them.
    delay = MatmulEngine.chase_after(cfg)
    since = Signal(range(delay + 1), init=delay)
    last_dst, last_src, last_end = Signal(8), Signal(8), Signal(24)
    last_dst_end = Signal(17)
    with m.If(cu.matmul_cmd.valid):
        m.d.sync += [since.eq(1), last_dst.eq(mm.dst), last_src.eq(mm.src),
                     last_end.eq(mm.src + (mm.rows - 1) * mm.stride),
                     last_dst_end.eq(mm.dst + mm.rows - 1)]
    with m.Elif(cu.start):
        m.d.sync += since.eq(delay)
    with m.Elif(since < delay):
        m.d.sync += since.eq(since + 1)
    checks = ((cu.vpu_cmd, vpu.dst, vpu.dst + vpu_last),
              (cu.gd_cmd, gd.param, gd.param + gd.rows - 1)) if part == "passes" else ()
    bias = (vpu.pathway & Pathway.BIAS) != 0
    aux_last = vpu.aux + (vpu.rows - 1) * vpu.stride
    may_chain = (cu.vpu_chain_ready & ~vpu.transpose &
                 ~(aux & ~((aux_last < lo) | (hi < vpu.aux))) &
                 ~(bias & (lo <= vpu.bias) & (vpu.bias <= hi)) &
                 ~(bias & reads_r1 & cu.unit_r1_pending))
    for cmd, first, last in checks:
        with m.If(cmd.valid):
            unit_ok = ~cu.vpu_busy | may_chain if cmd is cu.vpu_cmd else ~cu.vpu_busy
            m.d.comb += [
                Assert(~cu.load_busy & unit_ok & ~cu.gd_busy),
                Assert(~cu.matmul_busy | ((since >= delay) &
                                          ((cmd.payload.src <= last_dst) |
                                           (cmd.payload.src > last_dst_end)))),
                Assert(cu.matmul_ready | (last < last_src) | (last_end < first))]
    if wrong:
        result = run_formal(m, mode="bmc", depth=12, name="control_overlap_wrong")
        assert not result.passed
    else:
        check(m, "bmc", 12, f"control_overlap_{part}")


@pytest.mark.parametrize("op", [Op.LOADW, Op.MATMUL, Op.VPU, Op.GD])
def test_every_engine_instruction_can_issue(op):
    cfg = TPUConfig(n=2, data=FixedFormat(4, 2), ub_depth=16, acc_depth=8, imem_depth=8)
    m, cu, _ = control_spec(cfg)
    command = {Op.LOADW: cu.load_cmd, Op.MATMUL: cu.matmul_cmd, Op.VPU: cu.vpu_cmd,
               Op.GD: cu.gd_cmd}[op]
    m.d.comb += Cover(command.valid)
    check(m, "cover", 8, f"cover_{op.name}")


@pytest.mark.parametrize("buffered", [False, True])
def test_host_interface_never_writes_outside_a_memory(buffered):
    """Whatever the command stream, a memory write address is inside the memory; while a
    program runs only the unified buffer is written, and only in cycles in which no engine
    uses its shared port (also when the host writes buffer rows from a register of its
    own, ``buffered_ub_write``)."""
    cfg = SMALL
    m = Module()
    m.submodules.host = host = HostInterface(cfg, buffered_ub_write=buffered)
    drive_anyseq(m, host.cmd.valid, host.cmd.payload, host.resp.ready, host.ub_rd.data,
                 host.acc_rd.data, host.imem_rd.data, host.csr_rdata, host.faulted,
                 host.ub_busy)
    # A program runs from a START until it ends, at any time.
    running = Signal()
    with m.If(host.start):
        m.d.sync += running.eq(1)
    with m.Elif(AnySeq(1)):
        m.d.sync += running.eq(0)
    m.d.comb += host.running.eq(running)
    for port, depth in ((host.ub_wr, cfg.ub_depth), (host.acc_wr, cfg.acc_depth),
                        (host.imem_wr, cfg.imem_depth)):
        with m.If(port.en.any()):
            m.d.comb += Assert(port.addr < depth)
            if port is host.ub_wr:
                m.d.comb += Assert(~(host.running & host.ub_busy))
            else:
                m.d.comb += Assert(~host.running)
    m.d.comb += Cover(host.ub_wr.en & host.running)
    check(m, "bmc", 14, "host_ranges")


def host_response_spec(bound, *, drop_word=False, buffered=False):
    """Every command packet (as the UART bridge forwards them: whole, see
    ``host_protocol.packet_words``) is taken without stalling for more than ``bound``
    cycles per word and answered within ``bound`` cycles of its last word, whatever the
    command, the memories' data and whether a program runs. With ``drop_word`` the model
    sends one word fewer than a WRITE needs: the property must fail (the check is not
    vacuous)."""
    from tinytpu_hdl.host_protocol import Command, Space, item_words
    cfg = SMALL
    m = Module()
    m.submodules.host = host = HostInterface(cfg, buffered_ub_write=buffered)
    drive_anyseq(m, host.ub_rd.data, host.acc_rd.data, host.imem_rd.data, host.csr_rdata,
                 host.faulted, host.running, host.cmd.payload)
    m.d.comb += host.resp.ready.eq(1)
    left = Signal(8)                # words of the packet still to send (0: between packets)
    pending = Signal()              # the packet is complete, its response has not begun
    answering = Signal()            # a response is under way (no command is sent then)
    word = host.cmd.payload
    cmd, space, count = word[:8], word[8:16], word[16:]
    # Packets of at most two items keep the depth small; the logic is the same for more.
    first = (left == 0) & ~pending & ~answering
    m.d.comb += host.cmd.valid.eq((left != 0) | first & AnySeq(1))
    with m.If(first & host.cmd.valid):
        m.d.comb += Assume(count <= 2)
    data = Signal(8)
    with m.Switch(space):
        for sp in Space:
            with m.Case(sp):
                m.d.comb += data.eq(count * item_words(cfg, sp))
    words = Mux((cmd == Command.WRITE) & (space < len(Space)), 2 + data, 2)
    if drop_word:
        words = Mux((cmd == Command.WRITE) & (space < len(Space)) & (count != 0),
                    1 + data, words)
    with m.If(host.cmd.valid & host.cmd.ready):
        with m.If(first):
            m.d.sync += left.eq(words - 1)
            m.d.sync += pending.eq(words == 1)
        with m.Else():
            m.d.sync += left.eq(left - 1)
            with m.If(left == 1):
                m.d.sync += pending.eq(1)
    with m.If(host.resp.valid):
        m.d.sync += [pending.eq(0), answering.eq(1)]
    with m.Elif(host.cmd.ready):
        m.d.sync += answering.eq(0)         # back to reading commands
    waited = Signal(range(bound + 2))
    with m.If((pending & ~host.resp.valid) | (host.cmd.valid & ~host.cmd.ready &
                                              ~answering & ~pending)):
        m.d.sync += waited.eq(waited + 1)
    with m.Else():
        m.d.sync += waited.eq(0)
    m.d.comb += Assert(waited <= bound)
    m.d.comb += Cover(pending & host.resp.valid & (cmd == Command.WRITE))
    return m


@pytest.mark.parametrize("buffered", [False, True])
def test_host_interface_answers_every_packet_within_a_bound(buffered):
    check(host_response_spec(6, buffered=buffered), "bmc", 24,
          f"host_response{'_buffered' if buffered else ''}")


def test_host_response_property_catches_a_short_packet():
    result = run_formal(host_response_spec(6, drop_word=True), mode="bmc", depth=24,
                        name="host_response_short")
    assert not result.passed


def test_bridge_crc_check_matches_the_reference_crc():
    """The gateware CRC byte step equals the host's crc16 (checked exhaustively over bytes)."""
    from amaranth.sim import Simulator
    from tinytpu_hdl.gateware.uart_bridge import hdl_crc16_byte
    from tinytpu_hdl.host_protocol import crc16
    m = Module()
    state, byte, out = Signal(16), Signal(8), Signal(16)
    m.d.comb += out.eq(hdl_crc16_byte(state, byte))
    mismatches = []

    async def tb(ctx):
        for s in (0xFFFF, 0x0000, 0x1D0F, 0xA5A5):
            for b in range(256):
                ctx.set(state, s)
                ctx.set(byte, b)
                if ctx.get(out) != crc16(bytes([b]), s):
                    mismatches.append((s, b))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert not mismatches


def bridge_crc_spec(max_words):
    """A frame with a bad CRC never reaches the TPU: no word is forwarded unless the last
    complete frame's CRC (computed here independently of the receiver's state machine)
    matched, and never more words than that frame carried."""
    from tinytpu_hdl.gateware.uart_bridge import FrameReceiver, hdl_crc16_byte
    from tinytpu_hdl.host_protocol import FRAME_TO_DEVICE
    m = Module()
    m.submodules.fr = fr = FrameReceiver(SMALL, max_words=max_words, timeout=1000)
    drive_anyseq(m, fr.bytes.valid, fr.bytes.payload, fr.error_ack, fr.reply_done, fr.cmd.ready)
    m.d.comb += fr.framing_error.eq(0)
    got, byte = fr.bytes.valid, fr.bytes.payload
    # Independent parser of the wire format.
    state = Signal(3)       # 0 sync, 1 len0, 2 len1, 3 data, 4 crc0, 5 crc1
    length, seen, crc, crc_lo = Signal(16), Signal(16), Signal(16), Signal(8)
    matched, budget = Signal(), Signal(16)
    listening = fr.listening
    with m.If(got & listening):
        with m.Switch(state):
            with m.Case(0):
                with m.If(byte == FRAME_TO_DEVICE):
                    m.d.sync += [state.eq(1), crc.eq(0xFFFF), seen.eq(0), matched.eq(0)]
            with m.Case(1):
                m.d.sync += [length[:8].eq(byte), crc.eq(hdl_crc16_byte(crc, byte)), state.eq(2)]
            with m.Case(2):
                total = length[:8] | (byte << 8)
                m.d.sync += [length[8:].eq(byte), crc.eq(hdl_crc16_byte(crc, byte))]
                m.d.sync += state.eq(Mux((total == 0) | (total > max_words), 0, 3))
            with m.Case(3):
                m.d.sync += [crc.eq(hdl_crc16_byte(crc, byte)), seen.eq(seen + 1)]
                with m.If(seen == length * 4 - 1):
                    m.d.sync += state.eq(4)
            with m.Case(4):
                m.d.sync += [crc_lo.eq(byte), state.eq(5)]
            with m.Case(5):
                ok = (crc[:8] == crc_lo) & (crc[8:] == byte)
                m.d.sync += [matched.eq(ok), budget.eq(Mux(ok, length, 0)), state.eq(0)]
    with m.If(fr.cmd.valid & fr.cmd.ready):
        m.d.sync += budget.eq(budget - 1)
    with m.If(fr.cmd.valid):
        m.d.comb += [Assert(matched), Assert(budget != 0)]
    m.d.comb += Cover(fr.cmd.valid & fr.cmd.ready & (budget == 1))
    return m


@pytest.mark.extended
def test_bridge_forwards_only_frames_whose_crc_matches():
    check(bridge_crc_spec(max_words=1), "bmc", 14, "bridge_crc")


@pytest.mark.slow
def test_bridge_forwards_only_frames_whose_crc_matches_two_word_frames():
    check(bridge_crc_spec(max_words=2), "bmc", 22, "bridge_crc2")
