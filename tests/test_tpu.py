"""The whole TPU: programs loaded through the host interface run on their own in simulation
and give the reference model's results bit for bit, with the same cycle counts."""

import numpy as np
import pytest

from tinytpu_hdl.asm import assemble
from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.isa import ErrorCode, Pathway
from tinytpu_hdl.numeric import Q8_8

from tpu_helpers import run_both, run_on

SMALL = dict(ub_depth=64, acc_depth=32, imem_depth=64)


def pad(a, n):
    a = np.atleast_2d(np.asarray(a))
    out = np.zeros((a.shape[0], max(n, a.shape[1])), dtype=np.int64)
    out[:, :a.shape[1]] = a
    return out


def reference_events(cfg, program, ub):
    """The reference model's timeline (:class:`~tinytpu_hdl.reference.Event` per issued
    instruction) of ``program`` run once with the buffer rows ``ub`` ({address: rows})."""
    from tinytpu_hdl.reference import ReferenceTPU
    model = ReferenceTPU(cfg)
    for addr, rows in ub.items():
        model.ub[addr:addr + len(rows)] = rows
    model.events = []
    model.imem[:len(program.words)] = program.words
    model.start()
    return model.events


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_W1 = np.array([[0.8, -0.6], [-0.7, 0.9]])       # (out, in) like torch
XOR_B1 = np.array([0.1, -0.2])
XOR_W2 = np.array([[1.1, 0.95]])
XOR_B2 = np.array([-0.3])
XOR_FORWARD = """
    cfg leak, 0.5
    loadw ub[8], rows={k1}              # S = W1^T: rows of W1^T are the input features
    matmul ub[0], acc[0], rows=4
    vpu acc[0], ub[16], rows=4, bias=ub[12], path=bias|act
    loadw ub[20], rows={k2}             # S = W2^T
    matmul ub[16], acc[4], rows=4
    vpu acc[4], ub[24], rows=4, bias=ub[14], path=bias|act
    halt
"""


def xor_forward(n):
    enc = Q8_8.encode
    ub = {0: pad(enc(XOR_X), n), 8: pad(enc(XOR_W1.T), n), 12: pad(enc(XOR_B1), n),
          14: pad(enc(XOR_B2), n), 20: pad(enc(XOR_W2.T), n)}
    program = assemble(XOR_FORWARD.format(k1=2, k2=2))
    return ub, program


def leaky(z, a=0.5):
    return np.where(z >= 0, z, a * z)


@pytest.mark.parametrize("n", [2, 4])
def test_xor_forward_pass(n):
    cfg = TPUConfig(n=n, **SMALL)
    ub, program = xor_forward(n)
    state, error = run_both(cfg, program, ub=ub)
    assert error is None
    h1 = leaky(XOR_X @ XOR_W1.T + XOR_B1)
    h2 = leaky(h1 @ XOR_W2.T + XOR_B2)
    got_h1 = Q8_8.decode(state["ub"][16:20, :2])
    got_h2 = Q8_8.decode(state["ub"][24:28, :1])
    assert np.max(np.abs(got_h1 - h1)) < 4 * Q8_8.lsb
    assert np.max(np.abs(got_h2 - h2)) < 8 * Q8_8.lsb
    # Padding lanes stay exactly zero.
    assert not state["ub"][16:20, 2:].any() and not state["ub"][24:28, 1:].any()
    cycles, _, busy, _, macs, _, instructions, _ = state["counters"]
    assert (busy, macs, instructions) == (8, 8 * n * n, 8)
    assert cycles > busy


def test_matmul_with_k_larger_than_n_accumulates_over_tiles():
    n = 2
    cfg = TPUConfig(n=n, **SMALL)
    rng = np.random.default_rng(0)
    M, K, C = 5, 6, 4
    x = rng.integers(-2000, 2000, (M, K))
    w = rng.integers(-2000, 2000, (K, C))           # stationary S = w, tiled N x N
    ub = {}
    for kt in range(K // n):                       # x stored as K/N blocks of M rows
        ub[kt * M] = x[:, kt * n:(kt + 1) * n]
    lines = []
    for ct in range(C // n):
        for kt in range(K // n):
            ub[32 + (ct * (K // n) + kt) * n] = w[kt * n:(kt + 1) * n, ct * n:(ct + 1) * n]
            lines.append(f"loadw ub[{32 + (ct * (K // n) + kt) * n}], rows={n}")
            acc_flag = ", accumulate" if kt else ""
            lines.append(f"matmul ub[{kt * M}], acc[{ct * M}], rows={M}{acc_flag}")
    lines.append("halt")
    state, error = run_both(cfg, assemble("\n".join(lines)), ub=ub)
    assert error is None
    got = np.concatenate([state["acc"][ct * M:(ct + 1) * M] for ct in range(C // n)], axis=1)
    assert np.array_equal(got, x @ w)


def test_every_vector_pathway():
    n = 2
    cfg = TPUConfig(n=n, **SMALL)
    rng = np.random.default_rng(1)
    acc = {0: rng.integers(-2**24, 2**24, (4, n))}
    acc[0][0, 0] = 2**31 - 1                        # saturates when narrowed
    ub = {0: rng.integers(-3000, 3000, (4, n)), 4: rng.integers(-3000, 3000, (1, n))}
    lines = ["cfg leak, 0.25", "cfg loss_scale, -0.75"]
    for path in range(16):
        names = "|".join(p.name.lower() for p in Pathway if path & p)
        p = f", path={names}" if names else ""
        lines.append(f"vpu acc[0], ub[{8 + 3 * path}], rows=3, aux=ub[0], bias=ub[4]{p}")
    lines.append("halt")
    state, error = run_both(cfg, assemble("\n".join(lines)), ub=ub, acc=acc)
    assert error is None
    outputs = [state["ub"][8 + 3 * p: 11 + 3 * p] for p in range(16)]
    assert len({o.tobytes() for o in outputs}) == 16     # every pathway does something else
    assert state["status"] >> 17 & 1                     # the vector-unit overflow flag


@pytest.mark.parametrize("n", [2, 3])
def test_weight_loads_overlap_streaming(n):
    """Tiles back to back: every extra tile costs exactly its rows in cycles, so no array cycle
    is lost to weight loading between tiles. The shortest such tile has 2n-1 rows (the
    array's double-buffering rule) and at least 6 (a LOADW and a MATMUL take the control unit
    three cycles each)."""
    cfg = TPUConfig(n=n, **SMALL)
    rng = np.random.default_rng(n)
    m = max(2 * n - 1, 6)
    ub = {0: rng.integers(-500, 500, (m, n)), 16: rng.integers(-500, 500, (n, n))}

    def program(tiles):
        lines = []
        for t in range(tiles):
            lines += [f"loadw ub[16], rows={n}{', transpose' if t % 2 else ''}",
                      f"matmul ub[0], acc[{t % 2 * m}], rows={m}"]
        return assemble("\n".join(lines + ["halt"]))

    counts = {}
    for tiles in (3, 6):
        state, error = run_both(cfg, program(tiles), ub=ub)
        assert error is None
        cycles, _, busy, _, macs, _, _, _ = state["counters"]
        assert busy == tiles * m and macs == tiles * m * n * n
        counts[tiles] = cycles
    assert counts[6] - counts[3] == 3 * m


@pytest.mark.parametrize("text, code, pc", [
    ("nop\nloadw ub[0], rows=3\nhalt", ErrorCode.BAD_OPERAND, 1),
    ("matmul ub[60], acc[0], rows=5\nhalt", ErrorCode.UB_RANGE, 0),
    ("setr r1, 30\nmatmul ub[0], acc[r1], rows=3\nhalt", ErrorCode.ACC_RANGE, 1),
    ("vpu acc[0], ub[4], rows=4, aux=ub[6], path=deriv\nhalt", ErrorCode.BAD_OPERAND, 0),
    ("vpu acc[0], ub[4], rows=4, bias=ub[5], path=bias\nhalt", ErrorCode.BAD_OPERAND, 0),
    ("gd acc[0], ub[0], rows=0\nhalt", ErrorCode.BAD_OPERAND, 0),
    ("setr r1, 2\nloop: djnz r1, 70\nhalt", ErrorCode.PC_RANGE, 70),
    ("nop\nnop", ErrorCode.PC_RANGE, 64),
])
def test_errors_agree(text, code, pc):
    cfg = TPUConfig(n=2, **SMALL)
    program = assemble(text)
    program_words = program.words
    if code == ErrorCode.PC_RANGE and text.startswith("nop"):
        program_words = [0] * 64                     # 64 NOPs: falls off the end
    state, error = run_both(cfg, program_words, ub={0: np.ones((4, 2), dtype=int)})
    assert error is not None and error.code == code and error.pc == pc
    assert state["status"] & 3 == 3


def test_illegal_instruction_word():
    cfg = TPUConfig(n=2, **SMALL)
    words = assemble("nop\nhalt").words
    words[1] |= 1 << 120                             # a reserved bit
    state, error = run_both(cfg, words)
    assert error.code == ErrorCode.ILLEGAL_INSTRUCTION and error.pc == 1
    assert error.instruction == "illegal instruction word"


def test_loop_and_registers():
    cfg = TPUConfig(n=2, **SMALL)
    rng = np.random.default_rng(9)
    ub = {0: rng.integers(-100, 100, (8, 2)), 40: rng.integers(-100, 100, (2, 2))}
    program = assemble("""
        setr r1, 4
        setr r2, 0
        loadw ub[40], rows=2
    loop:
        matmul ub[r2], acc[r2+1], rows=2
        addi r2, r2, 2
        djnz r1, loop
        sync
        halt
    """)
    state, error = run_both(cfg, program, ub=ub)
    assert error is None
    assert state["regs"][1:3] == [0, 8]
    assert np.array_equal(state["acc"][1:9], ub[0] @ ub[40])


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5])
def test_back_to_back_accumulation_into_rows_still_in_flight(rows):
    """Matmuls accumulating into rows the previous one is still writing (the engine
    forwards its sums): same result as numpy, on both backends, cycle for cycle."""
    cfg = TPUConfig(n=2, **SMALL)
    rng = np.random.default_rng(rows)
    ub = rng.integers(-300, 300, (48, 2))
    s = ub[40:42]                          # the weight tile (rows of S)
    program = assemble(f"""
        loadw ub[40], rows=2
        matmul ub[0], acc[4], rows={rows}
        matmul ub[8], acc[4], rows={rows}, accumulate
        matmul ub[16], acc[5], rows={rows}, accumulate
        matmul ub[24], acc[4], rows={rows}, accumulate
        sync
        halt
    """)
    state, error = run_both(cfg, program, ub={0: ub})
    assert error is None
    want = np.zeros((cfg.acc_depth, 2), dtype=np.int64)
    want[4:4 + rows] = ub[0:rows] @ s
    want[4:4 + rows] += ub[8:8 + rows] @ s
    want[5:5 + rows] += ub[16:16 + rows] @ s
    want[4:4 + rows] += ub[24:24 + rows] @ s
    assert np.array_equal(state["acc"][4:6 + rows], want[4:6 + rows])


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
def test_back_to_back_accumulation_forwards_saturated_sums(rows):
    """Accumulations into rows still in flight whose sums saturate: the row forwarded to
    the next addition is the saturated one (an unsaturated sum one bit wider would give
    a different result once a negative row follows), and the overflow flag is set."""
    cfg = TPUConfig(n=2, **SMALL)
    rng = np.random.default_rng(100 + rows)
    ub = np.zeros((48, 2), dtype=np.int64)
    ub[40:42] = -32768                                    # S: every weight -128.0
    ub[0:8] = rng.integers(-32768, -30000, (8, 2))        # products near +2**30
    ub[8:16] = rng.integers(-32768, -30000, (8, 2))
    ub[16:24] = rng.integers(30000, 32768, (8, 2))        # products near -2**30
    program = assemble(f"""
        loadw ub[40], rows=2
        matmul ub[0], acc[4], rows={rows}
        matmul ub[8], acc[4], rows={rows}, accumulate
        matmul ub[16], acc[4], rows={rows}, accumulate
        sync
        halt
    """)
    state, error = run_both(cfg, program, ub={0: ub})
    assert error is None
    lo, hi = -2**31, 2**31 - 1
    s = ub[40:42]
    want = np.clip(ub[0:rows] @ s, lo, hi)                # both products of a row have one sign
    want = np.clip(want + ub[8:8 + rows] @ s, lo, hi)
    want = np.clip(want + ub[16:16 + rows] @ s, lo, hi)
    assert (want > -2**30).all() and (want < 2**30).all()  # back from saturation
    assert np.array_equal(state["acc"][4:4 + rows], want)
    assert state["status"] >> 16 & 1 == 1


def test_watchdog_stops_an_endless_loop():
    cfg = TPUConfig(n=2, **SMALL)
    program = assemble("loop: nop\ndjnz r0, loop")
    state, error = run_both(cfg, program, watchdog=100)
    assert error.code == ErrorCode.WATCHDOG
    # The watchdog fires in cycle 100; one cycle of draining (nothing in flight) follows.
    assert state["counters"][0] == 102


@pytest.mark.parametrize("field, value, message", [
    ("n", 0, "Array size n must be a positive integer"),
    ("ub_depth", 65537, "ub_depth must be an integer from 1 to 65536"),
    ("imem_depth", 0, "imem_depth must be an integer from 1 to 65536"),
    ("counter_width", 7, "counter_width must be an integer from 8 to 64"),
    ("counter_width", 65, "counter_width must be an integer from 8 to 64"),
    ("counter_width", True, "counter_width must be an integer from 8 to 64"),
])
def test_config_rejects_bad_sizes(field, value, message):
    with pytest.raises(ValueError, match=message):
        TPUConfig(**{field: value})


def test_counters_wrap_at_the_counter_width():
    program = assemble("""
        setr r1, 130
    loop:
        matmul ub[0], acc[0], rows=2
        djnz r1, loop
        sync
        halt
    """)
    ub = {0: np.arange(4).reshape(2, 2)}
    wide, _ = run_on("reference", TPUConfig(n=2, **SMALL), program, ub=ub)
    narrow, error = run_both(TPUConfig(n=2, counter_width=8, **SMALL), program, ub=ub)
    assert error is None
    lows = wide["counters"][0::2]
    assert min(lows) > 255 and not any(wide["counters"][1::2])   # every counter wrapped
    assert narrow["counters"] == [v for low in lows for v in (low & 0xFF, 0)]
    # A watchdog budget that does not fit the counters is refused, not truncated.
    with pytest.raises(ValueError, match="watchdog must be .* 2\\*\\*8 - 1"):
        run_on("reference", TPUConfig(n=2, counter_width=8, **SMALL), program, watchdog=256)


def test_stochastic_gradient_descent_program():
    cfg = TPUConfig(n=2, **SMALL)
    rng = np.random.default_rng(4)
    ub = {0: rng.integers(-3000, 3000, (8, 2))}
    acc = {0: rng.integers(-2**20, 2**20, (8, 2))}
    program = assemble("""
        cfg lr, 0.01
        gd acc[0], ub[0], rows=4, stochastic
        gd acc[4], ub[4], rows=4
        gd acc[0], ub[0], rows=4, stochastic
        halt
    """)
    state, error = run_both(cfg, program, ub=ub, acc=acc)
    assert error is None and state["ub"][:8].any()


def test_overflow_flags_are_sticky_per_run():
    cfg = TPUConfig(n=2, **SMALL)
    big = np.full((2, 2), -32768)
    ub = {0: big, 8: big, 16: np.full((2, 2), 32767)}
    program = assemble("""
        loadw ub[8], rows=2
        matmul ub[0], acc[0], rows=2            # 2 * 2**30 saturates the accumulators
        vpu acc[0], ub[20], rows=2               # narrowing a saturated sum saturates
        cfg lr, -1.5
        gd acc[0], ub[16], rows=2                # 32767 + 1.5 * huge saturates
        loadw ub[16], rows=1
        matmul ub[16], acc[4], rows=1
        halt
    """)
    state, error = run_both(cfg, program, ub=ub)
    assert error is None
    assert state["status"] >> 16 & 7 == 7
    small, _ = run_both(cfg, assemble("loadw ub[16], rows=1\nmatmul ub[16], acc[4], rows=1\n"
                                      "halt"), ub={16: np.full((2, 2), 16)})
    assert small["status"] >> 16 & 7 == 0


def test_fault_leaves_memory_as_the_instructions_before_it_left_it():
    cfg = TPUConfig(n=2, **SMALL)
    rng = np.random.default_rng(8)
    ub = {0: rng.integers(-1000, 1000, (40, 2))}
    acc = {0: rng.integers(-2**20, 2**20, (16, 2))}
    prefix = """
        loadw ub[0], rows=2
        matmul ub[4], acc[0], rows=6
        vpu acc[0], ub[30], rows=6, path=act
        gd acc[6], ub[10], rows=3
    """
    faulting, error = run_both(cfg, assemble(prefix + "vpu acc[0], ub[60], rows=6\nhalt"),
                               ub=ub, acc=acc)
    assert error.code == ErrorCode.UB_RANGE and error.pc == 4
    clean, _ = run_both(cfg, assemble(prefix + "halt"), ub=ub, acc=acc)
    assert np.array_equal(faulting["ub"], clean["ub"])
    assert np.array_equal(faulting["acc"], clean["acc"])


@pytest.mark.parametrize("offset", [0, -2, 1])
def test_vector_and_gd_units_chase_the_matmul(offset):
    """With ``chase_matmul`` a VPU (or GD) whose accumulator rows start at or below the last
    matmul's destination issues once the matmul has streamed its rows and
    ``MatmulEngine.chase_after`` cycles have passed, and still reads every row after the
    array wrote it; a source above the destination waits for the matmul engine to be
    idle. Results against numpy; cycles against the rule, on both backends. (Without
    ``overlap_units``, under which the pass need not wait for the rows to stream: see
    ``test_passes_chase_a_matmul_before_its_rows_have_streamed``.)"""
    from tinytpu_hdl.gateware.matmul_engine import MatmulEngine
    n, m = 2, 20
    cfg = TPUConfig(n=n, **SMALL, overlap_units=False)
    rng = np.random.default_rng(7)
    x = rng.integers(-300, 300, (m, n))
    w = rng.integers(-300, 300, (n, n))
    dst, src = 6, 6 + offset
    program = assemble(f"loadw ub[40], rows={n}\nmatmul ub[0], acc[{dst}], rows={m}\n"
                       f"vpu acc[{src}], ub[42], rows=3\nhalt")
    state, error = run_both(cfg, program, ub={0: x, 40: w})
    assert error is None
    acc = np.zeros((cfg.acc_depth, n), dtype=np.int64)
    acc[dst:dst + m] = x @ w
    # The VPU narrows Q16.16 sums to Q8.8: the rows it read are the matmul's results.
    expect = np.clip((acc[src:src + 3] + (1 << 7)) >> 8, -32768, 32767)
    assert np.array_equal(state["ub"][42:45], expect)
    mm, vpu = reference_events(cfg, program, {0: x, 40: w})[1:3]
    if offset <= 0:
        assert vpu.issue == max(vpu.ready, mm.issue + m, mm.issue + MatmulEngine.chase_after(cfg))
        assert vpu.issue < mm.end
    else:
        assert vpu.issue == max(vpu.ready, mm.end)


@pytest.mark.parametrize("case", ["beside", "reads_result", "acc_inside", "acc_at_first",
                                  "aux", "load_reads_result", "without"])
def test_loads_and_matmuls_overlap_vector_passes(case):
    """With ``overlap_units`` a LOADW and a MATMUL after a VPU issue while it runs unless
    they conflict with it: a MATMUL streaming rows the pass writes chases its writes (with
    ``chain_passes``, the default), a LOADW loading them waits until it is idle; a MATMUL
    whose destination starts inside the accumulator
    rows the pass reads (past the first) waits until it has read them (``rows + 1`` cycles
    after its issue); at or below the first it does not wait (it writes each row after the
    pass read it); a LOADW after a pass with aux rows (read through the loader's port)
    waits until the pass has read them. Results against numpy, cycles against the rule,
    both backends."""
    from tinytpu_hdl.gateware.vector_unit import VectorUnit
    n, m = 2, 8
    cfg = TPUConfig(n=n, **SMALL, overlap_units=case != "without")
    rng = np.random.default_rng(3)
    a = rng.integers(-300, 300, (m, n))
    x = rng.integers(-300, 300, (4, n))
    w0, w1 = rng.integers(-300, 300, (n, n)), rng.integers(-300, 300, (n, n))
    load = 20 if case == "load_reads_result" else 42
    src = 20 if case == "reads_result" else 10
    dst = {"acc_inside": 2, "acc_at_first": 0}.get(case, 16)
    vpu = ("vpu acc[0], ub[20], rows=8, aux=ub[50], path=deriv" if case == "aux"
           else "vpu acc[0], ub[20], rows=8")
    program = assemble(f"loadw ub[40], rows=2\nmatmul ub[0], acc[0], rows={m}\n{vpu}\n"
                       f"loadw ub[{load}], rows=2\nmatmul ub[{src}], acc[{dst}], rows=4\nhalt")
    ub = {0: a, 10: x, 40: w0, 42: w1, 50: rng.integers(-300, 300, (m, n))}
    state, error = run_both(cfg, program, ub=ub)
    assert error is None
    narrowed = np.clip((a @ w0 + (1 << 7)) >> 8, -32768, 32767)
    if case != "aux":
        # The pass read every accumulator row before the second matmul overwrote it.
        assert np.array_equal(state["ub"][20:28], narrowed)
        weights = narrowed[:2] if case == "load_reads_result" else w1
        stream = narrowed[:4] if case == "reads_result" else x
        assert np.array_equal(state["acc"][dst:dst + 4], stream @ weights)
    _, _, unit, ld, mm, _ = reference_events(cfg, program, ub)
    waits_for_load = case in ("load_reads_result", "without")
    assert (ld.issue >= unit.end) == waits_for_load
    if case == "aux":
        # Until the pass has read its aux rows (row i in cycle issue + A + i).
        assert ld.issue == max(ld.ready, unit.issue + VectorUnit.aux_delay(cfg) + m - 1)
    elif not waits_for_load:
        assert ld.issue == ld.ready
    if case == "reads_result":
        # It chases the pass's writes (chain_passes): row 20 + i is written in cycle
        # issue + L + i, and read after that.
        assert mm.issue == max(mm.ready, unit.issue + VectorUnit.latency(cfg)) < unit.end
    elif case == "without" or waits_for_load:
        assert mm.issue >= unit.end
    elif case == "aux":
        assert mm.issue == mm.ready < unit.end
    elif case == "acc_inside":
        assert mm.issue == max(mm.ready, unit.issue + 8 + 1) < unit.end
    else:
        assert mm.issue == mm.ready < unit.end


@pytest.mark.parametrize("dst, overlap", [(30, True), (8, True), (30, False)])
def test_passes_chase_a_matmul_before_its_rows_have_streamed(dst, overlap):
    """With ``overlap_units`` a VPU chasing a MATMUL (its source at the matmul's
    destination) issues once the chase delay is over even if the matmul still streams,
    unless it writes rows the matmul streams: then, as without ``overlap_units``, it waits
    until they have streamed. The matmul streams the rows as they were before the pass."""
    from tinytpu_hdl.gateware.matmul_engine import MatmulEngine
    n, m = 2, 16
    cfg = TPUConfig(n=n, **SMALL, overlap_units=overlap)
    rng = np.random.default_rng(5)
    x = rng.integers(-300, 300, (m, n))
    w = rng.integers(-300, 300, (n, n))
    program = assemble(f"loadw ub[40], rows={n}\nmatmul ub[0], acc[0], rows={m}\n"
                       f"vpu acc[0], ub[{dst}], rows=4\nhalt")
    state, error = run_both(cfg, program, ub={0: x, 40: w})
    assert error is None
    assert np.array_equal(state["acc"][:m], x @ w)
    narrowed = np.clip((x @ w + (1 << 7)) >> 8, -32768, 32767)
    assert np.array_equal(state["ub"][dst:dst + 4], narrowed[:4])
    mm, vpu = reference_events(cfg, program, {0: x, 40: w})[1:3]
    chased = max(vpu.ready, mm.issue + MatmulEngine.chase_after(cfg))
    if overlap and dst >= m:
        assert vpu.issue == chased < mm.issue + m
    else:
        assert vpu.issue == max(chased, mm.issue + m)
