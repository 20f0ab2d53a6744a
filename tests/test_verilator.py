"""The compiled-RTL backend: same programs, same results and cycle counts as the reference
model and the Amaranth simulation. Builds are cached (~25 s each the first time)."""

import numpy as np
import pytest

from tinytpu_hdl import Accelerator, TPUConfig
from tinytpu_hdl.demos.xor import XOR_X, XOR_Y, xor_model
from tinytpu_hdl.isa import ErrorCode
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


@pytest.mark.extended
@pytest.mark.parametrize("n", [1, 2])
def test_unregistered_requests_match_reference(n):
    """``registered_requests=False`` (the iCEBreaker's: the loader's and vector unit's
    buffer requests gated in the cycle they are used) runs random programs with the same
    results and cycles as the reference model, with the iCEBreaker's other options."""
    from tinytpu_hdl.runtime.verilator import VerilatorTransport
    cfg = TPUConfig(n=n, ub_depth=32, acc_depth=16, imem_depth=32, registered_requests=False,
                    chase_matmul=False, isolated_multipliers=False)
    vt, ref = VerilatorTransport(cfg), ReferenceTransport(cfg)
    for seed in range(200):
        case = random_case(cfg, seed)
        (ro, re_), (vo, ve) = run_case(ref, case), run_case(vt, case)
        assert not compare(ro, vo), f"seed {seed}: {compare(ro, vo)}"
        assert re_ == ve, f"seed {seed}: {re_} vs {ve}"


@pytest.mark.parametrize("n", [1, 2])
def test_partial_buffer_copy_matches_reference(n):
    """``ub_copy_depth`` below ``ub_depth`` (the loader and the units read a copy of the
    lower rows only): random programs, some of whose loads, aux and bias rows and
    parameters lie above the copy (UB_RANGE), run with the same results and cycles as the
    reference model."""
    from tinytpu_hdl.runtime.verilator import VerilatorTransport
    cfg = TPUConfig(n=n, ub_depth=32, acc_depth=16, imem_depth=32, ub_copy_depth=16)
    vt, ref = VerilatorTransport(cfg), ReferenceTransport(cfg)
    faults = 0
    for seed in range(300):
        case = random_case(cfg, seed)
        (ro, re_), (vo, ve) = run_case(ref, case), run_case(vt, case)
        assert not compare(ro, vo), f"seed {seed}: {compare(ro, vo)}"
        assert re_ == ve, f"seed {seed}: {re_} vs {ve}"
        faults += re_ is not None and re_[0] == ErrorCode.UB_RANGE
    assert faults >= 10


def test_profile_guided_must_be_a_flag():
    import tinytpu_hdl.runtime.verilator as v
    with pytest.raises(ValueError, match="profile_guided must be True or False, not 'yes'"):
        v.build_library(FUZZ_CFG, profile_guided="yes")


@pytest.mark.extended
def test_profile_guided_build_matches_reference():
    """The profile-guided build (the C++ compiled again for the counts of a workload run on
    an instrumented first build) runs random programs exactly as the reference model, and
    is a library of its own."""
    from tinytpu_hdl.runtime.verilator import VerilatorTransport, build_library
    cfg = TPUConfig(n=3, ub_depth=64, acc_depth=16, imem_depth=32)
    assert build_library(cfg, profile_guided=True) != build_library(cfg)
    vt, ref = VerilatorTransport(cfg, profile_guided=True), ReferenceTransport(cfg)
    for seed in range(150):
        case = random_case(cfg, seed)
        (ro, re_), (vo, ve) = run_case(ref, case), run_case(vt, case)
        assert not compare(ro, vo), f"seed {seed}: {compare(ro, vo)}"
        assert re_ == ve, f"seed {seed}: {re_} vs {ve}"


BACKDOOR_CFGS = [FUZZ_CFG, TPUConfig(n=1, ub_depth=32, acc_depth=16, imem_depth=32),
                 TPUConfig(n=3, ub_depth=32, acc_depth=16, imem_depth=32),
                 # (the buffer's second copy holds the lower 20 rows only)
                 TPUConfig(n=2, ub_depth=32, acc_depth=16, imem_depth=32, ub_copy_depth=20)]


@pytest.mark.extended
@pytest.mark.parametrize("cfg", BACKDOOR_CFGS,
                         ids=lambda c: f"n{c.n}" + ("_copy" if c.ub_copy_depth else ""))
def test_backdoor_transfers_equal_the_host_protocol(cfg):
    """Random programs with every buffer and accumulator row written and read back through
    the backdoor (rows of 16 to 96 bits: the model's integer and wide arrays) leave what
    the reference model leaves, in fewer simulated cycles."""
    from tinytpu_hdl.runtime.verilator import VerilatorTransport
    door, wire = VerilatorTransport(cfg, backdoor=True), VerilatorTransport(cfg)
    ref = ReferenceTransport(cfg)
    for seed in range(60):
        case = random_case(cfg, seed)
        (ro, re_), (do, de), (wo, we) = (run_case(t, case) for t in (ref, door, wire))
        assert compare(ro, do) == [] and re_ == de, seed
        assert compare(ro, wo) == [] and re_ == we, seed
    assert door.cycle < wire.cycle


@pytest.mark.extended
def test_backdoor_refuses_what_the_host_interface_refuses():
    """While a program runs, accumulator writes (which also stop the program with
    HOST_CONFLICT) and every read are BUSY, buffer writes go in; rows past the end are
    RANGE, values outside the format a ValueError; the device works on afterwards. The same
    answers as through the host protocol."""
    from tinytpu_hdl.asm import assemble
    from tinytpu_hdl.gateware.control import CSR
    from tinytpu_hdl.host_protocol import Space, Status
    from tinytpu_hdl.isa import ErrorCode
    from tinytpu_hdl.runtime.driver import HostDriver, HostError, TPUError
    from tinytpu_hdl.runtime.verilator import VerilatorTransport
    cfg = FUZZ_CFG
    spin = assemble("setr r1, 2000\nloop: djnz r1, loop\nhalt")
    outcomes = {}
    for backdoor in (True, False):
        d = HostDriver(VerilatorTransport(cfg, backdoor=backdoor))
        d.load_program(spin)
        d.start(0)
        seen = []
        for call in (lambda: d.read(Space.UB, 0, 1), lambda: d.read(Space.ACC, 0, 1),
                     lambda: d.write(Space.UB, 3, [[5, -6]]),
                     lambda: d.write(Space.ACC, 0, [[1, 2]])):
            try:
                call()
                seen.append("ok")
            except HostError as exc:
                seen.append(exc.status)
        with pytest.raises(TPUError) as stopped:
            d.wait()
        seen.append(stopped.value.code)
        for call in (lambda: d.write(Space.UB, cfg.ub_depth - 1, [[1, 2], [3, 4]]),
                     lambda: d.read(Space.ACC, cfg.acc_depth, 1)):
            with pytest.raises(HostError) as info:
                call()
            seen.append(info.value.status)
        with pytest.raises(ValueError, match="would wrap"):
            d.write(Space.UB, 0, [[40000, 0]])
        seen.append(d.read(Space.UB, 3, 1)[0].tolist())
        seen.append(d.csr(CSR.STATUS) & 3)
        outcomes[backdoor] = seen
    assert outcomes[True] == outcomes[False] == [
        Status.BUSY, Status.BUSY, "ok", Status.BUSY, ErrorCode.HOST_CONFLICT, Status.RANGE,
        Status.RANGE, [5, -6], 0]


@pytest.mark.extended
def test_xor_training_through_the_backdoor_matches_reference():
    results = {}
    for backend, options in (("reference", {}), ("verilator", {"backdoor": True})):
        model = xor_model()
        acc = Accelerator(TPUConfig(n=2), backend=backend, **options)
        losses = acc.train(model, XOR_X, XOR_Y, lr=0.5, epochs=50, batch_size=4)
        results[backend] = (losses, model.weights + model.biases, acc.stats)
    ref, door = results["reference"], results["verilator"]
    assert ref[0] == door[0] and ref[2] == door[2]
    assert all(np.array_equal(a, b) for a, b in zip(ref[1], door[1]))
