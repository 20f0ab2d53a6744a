"""Chained vector-unit passes (``TPUConfig.chain_passes``): a ``vpu`` issues behind the pass
in flight. The gateware must keep the reference model's results and cycles; the reference
model must take fewer cycles than with one pass at a time, and wait where a pass reads what
one in flight writes."""

from dataclasses import replace

import numpy as np
import pytest

from tinytpu_hdl.asm import assemble
from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.gateware.control import CSR
from tinytpu_hdl.gateware.vector_unit import VectorUnit
from tinytpu_hdl.isa import Op
from tinytpu_hdl.reference import ReferenceTransport
from tinytpu_hdl.runtime.pysim import PysimTransport
from tinytpu_hdl.testing.differential import compare, run_case
from tinytpu_hdl.testing.program_gen import FuzzCase, random_case

CFG = TPUConfig(n=2, ub_depth=64, acc_depth=32, imem_depth=32)

# Each program: two or three passes, and whether the later ones may chain.
PROGRAMS = {
    "independent": ("vpu acc[0], ub[0], rows=6, bias=ub[40], path=bias|act\n"
                    "vpu acc[8], ub[16], rows=5, aux=ub[48], path=loss|deriv\n"
                    "vpu acc[16], ub[24], rows=3, stride=2, aux=ub[50], path=deriv\n",
                    True),
    "after a transposed pass": ("vpu acc[0], ub[0], rows=5, stride=3, path=act, transpose\n"
                                "vpu acc[8], ub[16], rows=4, bias=ub[41], path=bias|act\n",
                                True),
    "bias after aux rows": ("vpu acc[0], ub[0], rows=3, aux=ub[48], path=loss\n"
                            "vpu acc[8], ub[16], rows=4, bias=ub[42], path=bias\n", True),
    "reads what the pass before writes": (
        "vpu acc[0], ub[0], rows=6, bias=ub[40], path=bias|act\n"
        "vpu acc[8], ub[16], rows=4, aux=ub[2], path=loss|act\n", False),
    "bias row written by the pass before": (
        "vpu acc[0], ub[0], rows=6, path=act\n"
        "vpu acc[8], ub[16], rows=4, bias=ub[5], path=bias\n", False),
    "transposed after a pass": ("vpu acc[0], ub[0], rows=4, path=act\n"
                                "vpu acc[8], ub[16], rows=4, stride=2, path=bias, "
                                "bias=ub[44], transpose\n", False),
}


def case_for(cfg, source, seed=0):
    rng = np.random.default_rng(seed)
    return FuzzCase(assemble(source + "halt").words,
                    rng.integers(-4096, 4096, (cfg.ub_depth, cfg.n)),
                    rng.integers(-2 ** 22, 2 ** 22, (cfg.acc_depth, cfg.n)),
                    {}, {0: 0x0666, 2: 0x2000}, 1, 0, "chained")


def chained_pairs(transport):
    vpus = [e for e in transport.model.events if e.instruction.op is Op.VPU]
    return sum(b.issue < a.end for a, b in zip(vpus, vpus[1:]))


@pytest.mark.parametrize("cfg", [CFG, replace(CFG, registered_requests=False),
                                 replace(CFG, isolated_multipliers=False, n=3)],
                         ids=["default", "unregistered-requests", "n3-unisolated"])
def test_chained_passes_match_the_reference_cycle_for_cycle(cfg):
    sim, ref = PysimTransport(cfg, check_collisions=True), ReferenceTransport(cfg)
    ref.model.events = []
    one_at_a_time = ReferenceTransport(replace(cfg, chain_passes=False))
    for name, (source, chains) in PROGRAMS.items():
        case = case_for(cfg, source)
        ref.model.events.clear()
        (ro, re_), (so, se) = run_case(ref, case), run_case(sim, case)
        assert re_ is None and se is None, (name, re_, se)
        assert not compare(ro, so), (name, compare(ro, so))
        (oo, _) = run_case(one_at_a_time, case)
        # The same memories one pass at a time (the hazards keep the program's order).
        assert np.array_equal(oo["ub"], ro["ub"]), name
        cycles, serial = ro["csr"][CSR.CYCLES_LO], oo["csr"][CSR.CYCLES_LO]
        if chains:
            assert chained_pairs(ref) >= 1 and cycles < serial, (name, cycles, serial)
        else:
            assert chained_pairs(ref) == 0 and cycles == serial, (name, cycles, serial)


@pytest.mark.parametrize("source, chases", [
    # The matmul streams the pass's output rows, from its first (stride 1 both).
    ("vpu acc[0], ub[8], rows=6, bias=ub[40], path=bias|act\n"
     "loadw ub[44], rows=2\nmatmul ub[8], acc[16], rows=6\n", True),
    # From a row below the pass's first.
    ("vpu acc[0], ub[8], rows=6, path=act\nloadw ub[44], rows=2\n"
     "matmul ub[5], acc[16], rows=8\n", True),
    # Its last rows only.
    ("vpu acc[0], ub[8], rows=6, path=act\nloadw ub[44], rows=2\n"
     "matmul ub[12], acc[16], rows=5\n", True),
    # Strided: waits for the pass.
    ("vpu acc[0], ub[8], rows=6, path=act\nloadw ub[44], rows=2\n"
     "matmul ub[8], acc[16], rows=3, stride=2\n", False),
    # The pass transposed: waits.
    ("vpu acc[0], ub[8], rows=6, stride=2, path=act, transpose\nloadw ub[44], rows=2\n"
     "matmul ub[8], acc[16], rows=3\n", False),
    # The pass behind another (chained): waits.
    ("vpu acc[0], ub[24], rows=2, path=act\nvpu acc[2], ub[8], rows=6, path=act\n"
     "loadw ub[44], rows=2\nmatmul ub[8], acc[16], rows=6\n", False),
])
def test_a_matmul_chases_the_writes_of_a_lone_pass(source, chases):
    """A ``matmul`` that streams rows a lone ``vpu`` writes (not transposed, both with
    stride 1) issues before the pass is idle, as early as reading each row after its write
    allows: the gateware's memories and cycles are the reference model's, the matmul
    overlaps the pass exactly when it may, and the result is the one-at-a-time result."""
    cfg = CFG
    sim, ref = PysimTransport(cfg, check_collisions=True), ReferenceTransport(cfg)
    ref.model.events = []
    case = case_for(cfg, source, seed=3)
    (ro, re_), (so, se) = run_case(ref, case), run_case(sim, case)
    assert re_ is None and se is None
    assert not compare(ro, so), compare(ro, so)
    vpu = [e for e in ref.model.events if e.instruction.op is Op.VPU][-1]
    mm = next(e for e in ref.model.events if e.instruction.op is Op.MATMUL)
    assert (mm.issue < vpu.end) == chases, (mm.issue, vpu.end)
    if chases:
        # The earliest issue that reads each row after it is written: row dst + i is
        # written in vpu.issue + L + i, the matmul reads row src + j in its issue + 1 + j.
        src, dst = mm.instruction.a[0], vpu.instruction.b[0]
        assert mm.issue == max(mm.ready, vpu.issue + VectorUnit.latency(cfg) + src - dst)
    (oo, _) = run_case(ReferenceTransport(replace(cfg, chain_passes=False)), case)
    assert np.array_equal(oo["ub"], ro["ub"]) and np.array_equal(oo["acc"], ro["acc"])


def test_fuzz_programs_whose_passes_chain():
    """Random programs (the fuzzer's) in which a ``vpu`` issues behind another: the
    gateware's memories, status and cycles are the reference model's."""
    cfg = TPUConfig(n=2, ub_depth=32, acc_depth=16, imem_depth=32)
    # The seeds whose programs chain passes (the backends then run the same sequence:
    # state the host cannot write carries over from case to case).
    probe = ReferenceTransport(cfg)
    probe.model.events = []
    seeds = []
    for seed in range(600, 800):
        probe.model.events.clear()
        run_case(probe, random_case(cfg, seed))
        if chained_pairs(probe):
            seeds.append(seed)
    assert len(seeds) >= 12
    sim, ref = PysimTransport(cfg, check_collisions=True), ReferenceTransport(cfg)
    ref.model.events = []
    chained = 0
    for seed in seeds[:12]:
        case = random_case(cfg, seed)
        ref.model.events.clear()
        (ro, re_), (so, se) = run_case(ref, case), run_case(sim, case)
        assert not compare(ro, so), f"seed {seed}: {compare(ro, so)}"
        assert re_ == se, f"seed {seed}: {re_} vs {se}"
        chained += chained_pairs(ref)
    assert chained >= 12


def test_chain_passes_needs_overlap_units_and_own_multipliers():
    with pytest.raises(ValueError, match="chain_passes=True needs overlap_units"):
        TPUConfig(chase_matmul=False, overlap_units=False, chain_passes=True)
    with pytest.raises(ValueError, match="chain_passes=True needs unit_multipliers"):
        TPUConfig(unit_multipliers="shared", chain_passes=True)
    with pytest.raises(TypeError, match="chain_passes must be a bool or None, not 1"):
        TPUConfig(chain_passes=1)
    assert TPUConfig().chains_passes
    assert not TPUConfig(unit_multipliers="shared").chains_passes
    assert not TPUConfig(chase_matmul=False, overlap_units=False).chains_passes
