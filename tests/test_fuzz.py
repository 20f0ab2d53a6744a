"""Differential fuzzing of the gateware against the reference model (a short run here; a
long one behind the ``slow`` marker and in scripts/fuzz.py)."""

import numpy as np
import pytest

from tinytpu_hdl.asm import assemble
from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.reference import ReferenceTransport
from tinytpu_hdl.runtime.pysim import PysimTransport
from tinytpu_hdl.testing.differential import compare, run_case
from tinytpu_hdl.testing.program_gen import FuzzCase, random_case

CFG = TPUConfig(n=2, ub_depth=32, acc_depth=16, imem_depth=32)


def fuzz(cfg, seeds, **options):
    # Also checks that no memory row is read in the cycle it is written (synthesis treats
    # that as "don't care").
    sim, ref = PysimTransport(cfg, check_collisions=True, **options), ReferenceTransport(cfg)
    outcomes = set()
    for seed in seeds:
        case = random_case(cfg, seed)
        (ro, re_), (so, se) = run_case(ref, case), run_case(sim, case)
        assert not compare(ro, so), f"seed {seed} ({case.description}): {compare(ro, so)}"
        assert re_ == se, f"seed {seed} ({case.description}): {re_} vs {se}"
        outcomes.add("ok" if re_ is None else re_[0].name)
    return outcomes


def test_generator_makes_valid_and_invalid_programs():
    kinds = {random_case(CFG, s).description.split(" ")[0].rstrip(",") for s in range(30)}
    assert kinds == {"valid", "invalid"}


def test_fuzz_short():
    outcomes = fuzz(CFG, range(15))
    assert "ok" in outcomes and "ILLEGAL_INSTRUCTION" in outcomes and len(outcomes) >= 3


@pytest.mark.parametrize("seeds", [range(200, 206), pytest.param(range(206, 260),
                                                                   marks=pytest.mark.extended)])
def test_fuzz_without_the_ram_output_registers(seeds):
    """The TPU as built for iCE40 (the control unit decoding straight from the instruction
    memory's output with its index registers in block RAM, the host interface selecting
    read words straight from the memories' outputs) behaves the same, cycle for cycle, and
    reads back the same memories."""
    fuzz(TPUConfig(n=1, ub_depth=32, acc_depth=16, imem_depth=32), seeds,
         ram_output_registers=False)


@pytest.mark.parametrize("seeds", [range(300, 303), pytest.param(range(303, 340),
                                                                   marks=pytest.mark.extended)])
def test_fuzz_with_multipliers_in_logic(seeds):
    """The vector and gradient-descent units' multiplies in adders (``unit_multipliers=
    "logic"``): the same memories and cycles as the reference model."""
    fuzz(TPUConfig(n=2, ub_depth=32, acc_depth=16, imem_depth=32, unit_multipliers="logic"),
         seeds)


@pytest.mark.parametrize("n, isolated, seeds", [
    (2, True, range(400, 412)), (3, False, range(420, 426)),
    pytest.param(2, True, range(412, 480), marks=pytest.mark.extended),
    pytest.param(3, False, range(426, 470), marks=pytest.mark.extended),
    pytest.param(1, True, range(470, 500), marks=pytest.mark.extended)])
def test_fuzz_with_shared_multipliers(n, isolated, seeds):
    """One multiplier per lane for both units (``unit_multipliers="shared"``): passes read
    a row every 1 to 3 cycles; the same memories and cycles as the reference model."""
    fuzz(TPUConfig(n=n, ub_depth=32, acc_depth=16, imem_depth=32, unit_multipliers="shared",
                   isolated_multipliers=isolated), seeds)


@pytest.mark.extended
def test_fuzz_n3():
    fuzz(TPUConfig(n=3, ub_depth=32, acc_depth=16, imem_depth=32), range(100, 115))


@pytest.mark.slow
def test_fuzz_long():
    fuzz(CFG, range(1000, 1600))


def test_regression_seed_written_by_the_host_reseeds_the_generators():
    """Found by the fuzzer: the gradient-descent unit reseeded from the previous SEED value
    because the reseed pulse came in the same cycle as the register write."""
    rng = np.random.default_rng(0)
    case = FuzzCase(assemble("cfg lr, 0x2697\ngd acc[5], ub[27], rows=4, stochastic\nhalt").words,
                    rng.integers(-32768, 32768, (32, 2)), rng.integers(-2**26, 2**26, (16, 2)),
                    {}, {}, 5, 0, "regression")
    (ro, _), (so, _) = run_case(ReferenceTransport(CFG), case), run_case(PysimTransport(CFG), case)
    assert not compare(ro, so)
