"""The compiled-RTL backend: same programs, same results and cycle counts as the reference
model and the Amaranth simulation. Builds are cached (~25 s each the first time)."""

import numpy as np
import pytest

from tinytpu_hdl import Accelerator, TPUConfig
from tinytpu_hdl.demos.xor import XOR_X, XOR_Y, xor_model
from tinytpu_hdl.reference import ReferenceTransport
from tinytpu_hdl.runtime.verilator import VerilatorUnavailable, verilator_missing
from tinytpu_hdl.testing.differential import compare, run_case
from tinytpu_hdl.testing.program_gen import random_case

pytestmark = pytest.mark.skipif(verilator_missing() is not None,
                                reason=f"verilator backend unavailable: missing "
                                       f"{verilator_missing()}")

FUZZ_CFG = TPUConfig(n=2, ub_depth=32, acc_depth=16, imem_depth=32)


@pytest.mark.extended
def test_fuzz_against_reference():
    from tinytpu_hdl.runtime.verilator import VerilatorTransport
    vt, ref = VerilatorTransport(FUZZ_CFG), ReferenceTransport(FUZZ_CFG)
    outcomes = set()
    for seed in range(300):
        case = random_case(FUZZ_CFG, seed)
        (ro, re_), (vo, ve) = run_case(ref, case), run_case(vt, case)
        assert not compare(ro, vo), f"seed {seed}: {compare(ro, vo)}"
        assert re_ == ve, f"seed {seed}: {re_} vs {ve}"
        outcomes.add("ok" if re_ is None else re_[0].name)
    assert {"ok", "ILLEGAL_INSTRUCTION", "BAD_OPERAND"} <= outcomes


@pytest.mark.extended
def test_xor_training_matches_reference_and_pysim():
    results = {}
    for backend, epochs in (("reference", 300), ("verilator", 300), ("pysim", 8)):
        model = xor_model()
        acc = Accelerator(TPUConfig(n=2), backend=backend)
        losses = acc.train(model, XOR_X, XOR_Y, lr=0.5, epochs=epochs, batch_size=4)
        results[backend] = (losses, model, acc.stats)
    ref, ver, sim = results["reference"], results["verilator"], results["pysim"]
    assert ref[0] == ver[0] and ref[2] == ver[2]
    for a, b in zip(ref[1].weights + ref[1].biases, ver[1].weights + ver[1].biases):
        assert np.array_equal(a, b)
    assert ver[0][:8] == sim[0]
    pred = Accelerator(TPUConfig(n=2), backend="reference").forward(ver[1], XOR_X).ravel()
    assert np.all((pred > 0.5) == (XOR_Y.ravel() > 0.5))


@pytest.mark.extended
def test_matmul_matches_reference():
    rng = np.random.default_rng(0)
    a = rng.integers(-32768, 32768, (13, 9))
    b = rng.integers(-32768, 32768, (9, 7))
    out = {}
    for backend in ("reference", "verilator"):
        acc = Accelerator(TPUConfig(n=2), backend=backend)
        out[backend] = (acc.matmul_raw(a, b), acc.stats)
    assert np.array_equal(out["reference"][0], out["verilator"][0])
    assert out["reference"][1] == out["verilator"][1]


@pytest.mark.extended
def test_digits_demo_runs_on_verilator():
    pytest.importorskip("sklearn")
    from tinytpu_hdl.demos.digits import run_digits
    lines = []
    device_acc, _, losses, _ = run_digits(backend="verilator", epochs=2, plot=None,
                                          out=lines.append)
    ref_acc, _, ref_losses, _ = run_digits(backend="reference", epochs=2, plot=None,
                                           out=lambda *a: None)
    assert losses == ref_losses and device_acc == ref_acc
    assert device_acc > 0.8


def test_missing_compiler_is_reported(monkeypatch):
    import tinytpu_hdl.runtime.verilator as v
    monkeypatch.setattr(v.shutil, "which", lambda *a, **k: None)
    assert v.verilator_missing().startswith("Verilator")
    with pytest.raises(VerilatorUnavailable, match="needs Verilator"):
        v.build_library(FUZZ_CFG)
