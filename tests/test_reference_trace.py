"""The reference model's replay of recorded runs against its interpreter."""

from dataclasses import replace

import numpy as np
import pytest

from tinytpu_hdl.asm import assemble
from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.reference import ReferenceTPU, ReferenceTransport
from tinytpu_hdl.testing.differential import compare, run_case
from tinytpu_hdl.testing.program_gen import random_case


def _pair(cfg):
    """A model that replays recorded runs and one that interprets every run."""
    cached = ReferenceTPU(cfg)
    return (ReferenceTransport(cfg, cached), cached), ReferenceTransport(
        cfg, ReferenceTPU(cfg, trace_cache=0))


def _with_data(case, other, small):
    """``case``'s program, registers and watchdog with ``other``'s data (its buffer rows
    scaled into a small range when ``small``: no partial sum saturates)."""
    ub = other.ub % 128 - 64 if small else other.ub
    return replace(case, ub=ub, acc=other.acc, cfgs=other.cfgs, seed_csr=other.seed_csr)


@pytest.mark.parametrize("n", [2, 3])
def test_replayed_runs_of_random_programs_equal_interpreted_ones(n):
    cfg = TPUConfig(n=n, ub_depth=64, acc_depth=32, imem_depth=64)
    (cached_t, cached), plain_t = _pair(cfg)
    for seed in range(120):
        case = random_case(cfg, seed)
        # The same program again with other data, small then full-range.
        runs = [case, _with_data(case, random_case(cfg, seed + 10_000), True),
                _with_data(case, random_case(cfg, seed + 20_000), False)]
        for i, run in enumerate(runs):
            got, got_error = run_case(cached_t, run)
            want, want_error = run_case(plain_t, run)
            assert got_error == want_error, (seed, i, case.description)
            assert compare(got, want) == [], (seed, i, case.description)
    # Every repeated run was a replay (the cases' first runs were recorded).
    assert cached.traces.hits == 2 * 120
    assert cached.traces.misses == 120


def _gemm_like(n):
    """Loads (one transposed, one short) and matmuls that overwrite and accumulate into
    overlapping rows with unequal row counts, the first before any load (it uses the
    weights the previous run left), a vector pass between them."""
    return assemble(f"""
        matmul ub[0], acc[0], rows=3
        loadw ub[32], rows={n}
        matmul ub[4], acc[0], rows=4, accumulate
        matmul ub[8], acc[2], rows=4
        loadw ub[40], rows={n}, transpose
        matmul ub[12], acc[1], rows=2, accumulate
        matmul ub[16], acc[3], rows=5, stride=2, accumulate
        vpu acc[0], ub[48], rows=4, path=bias|act, bias=ub[60]
        loadw ub[48], rows={n - 1}
        matmul ub[20], acc[8], rows=4
        matmul ub[24], acc[8], rows=4, accumulate
        halt
    """)


@pytest.mark.parametrize("small", [True, False])
def test_replayed_matmul_blocks_equal_the_array_chain(small):
    """Accumulator rows hit by several matmuls: the replay's one reduction per row (the
    products no later overwrite discards) equals the interpreter, and so does its fallback
    through the saturating chain (full-range data) with the overflow flag."""
    cfg = TPUConfig(n=4, ub_depth=64, acc_depth=32)
    program = _gemm_like(cfg.n)
    (cached_t, cached), plain_t = _pair(cfg)
    rng = np.random.default_rng(1)
    base = random_case(cfg, 0)
    words = program.words + [0] * (cfg.imem_depth - len(program.words))
    flags = set()
    for run in range(4):
        ub = rng.integers(cfg.data.min_int, cfg.data.max_int + 1, (cfg.ub_depth, cfg.n))
        acc = rng.integers(-(1 << 28), 1 << 28, (cfg.acc_depth, cfg.n))
        if small:
            ub, acc = ub % 64 - 32, acc % 1024
        case = replace(base, words=words, ub=ub, acc=acc, regs={}, watchdog=0)
        got, got_error = run_case(cached_t, case)
        want, want_error = run_case(plain_t, case)
        assert got_error is None and want_error is None
        assert compare(got, want) == []
        flags.add(int(got["csr"][0]) >> 16 & 1)
    assert cached.traces.hits == 3
    assert flags == ({0} if small else {1})


def test_a_changed_program_word_is_interpreted_again():
    cfg = TPUConfig(n=2, ub_depth=32, acc_depth=16)
    model = ReferenceTPU(cfg)
    plain = ReferenceTPU(cfg, trace_cache=0)
    first = assemble("loadw ub[0], rows=2\nmatmul ub[2], acc[0], rows=2\nhalt")
    second = assemble("loadw ub[0], rows=2\nmatmul ub[4], acc[1], rows=2\nhalt")
    rng = np.random.default_rng(2)
    for program in (first, first, second):
        data = rng.integers(-100, 100, (cfg.ub_depth, cfg.n))
        for m in (model, plain):
            m.ub[:] = data
            m.imem[:len(program.words)] = program.words
            m.start()
        assert np.array_equal(model.acc, plain.acc)
        assert model.cycles == plain.cycles
    assert (model.traces.hits, model.traces.misses) == (1, 2)


def test_index_registers_are_part_of_the_start_state():
    cfg = TPUConfig(n=2, ub_depth=32, acc_depth=16)
    model, plain = ReferenceTPU(cfg), ReferenceTPU(cfg, trace_cache=0)
    program = assemble("loadw ub[0], rows=2\nmatmul ub[r1], acc[r1], rows=2\nhalt")
    rng = np.random.default_rng(3)
    for r1 in (0, 3, 0, 3, 20):            # 20: the matmul's source is out of range
        data = rng.integers(-100, 100, (cfg.ub_depth, cfg.n))
        for m in (model, plain):
            m.clear()
            m.ub[:] = data
            m.regs[1] = r1
            m.imem[:len(program.words)] = program.words
            m.start()
        assert np.array_equal(model.acc, plain.acc)
        assert (model.state, model.error_code, model.cycles) == \
            (plain.state, plain.error_code, plain.cycles)
    assert (model.traces.hits, model.traces.misses) == (2, 3)


@pytest.mark.parametrize("start_pc, watchdog", [(40, 0), (0, 2)])
def test_runs_that_stop_before_their_first_fetch_are_replayed_too(start_pc, watchdog):
    """A start address past the instruction memory (PC_RANGE) or a watchdog that expires
    before the first instruction: nothing fetched, the same error every time."""
    from tinytpu_hdl.gateware.control import CSR
    cfg = TPUConfig(n=2, ub_depth=32, acc_depth=16, imem_depth=16)
    model, plain = ReferenceTPU(cfg), ReferenceTPU(cfg, trace_cache=0)
    for _ in range(2):
        for m in (model, plain):
            m.clear()
            m.write_csr(CSR.START_PC, start_pc)
            m.write_csr(CSR.WATCHDOG_LO, watchdog)
            m.start()
        assert (model.state, model.error_code, model.error_pc, model.cycles) == \
            (plain.state, plain.error_code, plain.error_pc, plain.cycles)
        assert model.error_code.name == ("PC_RANGE" if start_pc >= 16 else "WATCHDOG")
    assert model.traces.hits == 1


def test_only_registers_read_before_written_select_a_recording():
    """A loop that sets its own counter replays from its second call on, although the
    first left the counter changed; a register the run reads first (r3) selects among
    recordings; a register it never touches (r5) may hold anything and keeps its value
    through a replay."""
    cfg = TPUConfig(n=2, ub_depth=32, acc_depth=16)
    model, plain = ReferenceTPU(cfg), ReferenceTPU(cfg, trace_cache=0)
    program = assemble("""
        loadw ub[0], rows=2
        setr r1, 3
        addi r2, r3, 4
    loop:
        matmul ub[r2], acc[r2], rows=2
        addi r2, r2, 2
        djnz r1, loop
        halt
    """)
    rng = np.random.default_rng(4)
    for r3, r5 in ((0, 0), (0, 7), (1, 9), (0, 11), (1, 0)):
        data = rng.integers(-100, 100, (cfg.ub_depth, cfg.n))
        for m in (model, plain):
            m.ub[:] = data
            m.regs[3], m.regs[5] = r3, r5
            m.imem[:len(program.words)] = program.words
            m.start()
        assert np.array_equal(model.acc, plain.acc)
        assert model.regs == plain.regs and model.regs[5] == r5
        assert (model.state, model.cycles) == (plain.state, plain.cycles)
    assert (model.traces.hits, model.traces.misses) == (3, 2)
