"""The control unit's issue checks at their edges: every operand range one row inside and
one row outside its memory, every overlap rule on both sides of its bound, spans wider than
16 bits, register offsets. Gateware and reference model must agree on everything the host
sees, and the expected outcome is written out here from the ISA's rules (docs/isa.md)."""

import numpy as np
import pytest

from tinytpu_hdl.asm import assemble
from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.gateware.control import CSR
from tinytpu_hdl.host_protocol import Space
from tinytpu_hdl.isa import NUM_REGS, ErrorCode
from tinytpu_hdl.reference import ReferenceTransport
from tinytpu_hdl.runtime.driver import HostDriver, TPUError
from tinytpu_hdl.runtime.pysim import PysimTransport

from tpu_helpers import snapshot

# 64 buffer rows, 32 accumulator rows.
CFG = TPUConfig(n=2, ub_depth=64, acc_depth=32, imem_depth=16)
OK, UB, ACC, BAD = None, ErrorCode.UB_RANGE, ErrorCode.ACC_RANGE, ErrorCode.BAD_OPERAND

CASES = [
    # LOADW: rows addr .. addr + rows - 1 of the buffer.
    ("loadw ub[62], rows=2", OK),
    ("loadw ub[63], rows=2", UB),
    ("setr r1, 60\nloadw ub[r1+2], rows=2", OK),
    ("setr r1, 60\nloadw ub[r1+3], rows=2", UB),
    # MATMUL: buffer rows src + i * stride, then accumulator rows dst .. dst + rows - 1.
    ("matmul ub[42], acc[0], rows=4, stride=7", OK),        # last row 63
    ("matmul ub[43], acc[0], rows=4, stride=7", UB),
    ("matmul ub[0], acc[29], rows=3", OK),
    ("matmul ub[0], acc[30], rows=3", ACC),
    ("matmul ub[63], acc[31], rows=2, stride=0", ACC),      # stride 0: one buffer row
    ("matmul ub[64], acc[31], rows=2", UB),                 # buffer first, then accumulators
    # (rows - 1) * stride = 65536: zero in 16 bits, still beyond the buffer.
    ("matmul ub[0], acc[0], rows=4097, stride=16", UB),
    ("matmul ub[0], acc[0], rows=65535, stride=255", UB),   # the largest span
    # VPU: accumulator rows src ..; buffer rows dst + i * stride, aux + i * stride; bias.
    ("vpu acc[30], ub[0], rows=2", OK),
    ("vpu acc[31], ub[0], rows=2", ACC),
    ("vpu acc[0], ub[53], rows=3, stride=5", OK),           # last row 63
    ("vpu acc[0], ub[54], rows=3, stride=5", UB),
    ("vpu acc[31], ub[54], rows=3, stride=5", ACC),         # accumulators first
    ("vpu acc[0], ub[0], rows=3, stride=5, aux=ub[53], path=deriv", OK),
    ("vpu acc[0], ub[0], rows=3, stride=5, aux=ub[54], path=deriv", UB),
    ("vpu acc[0], ub[0], rows=3, stride=5, aux=ub[54]", OK),  # aux unused: not checked
    ("vpu acc[0], ub[0], rows=1, bias=ub[63], path=bias", OK),
    ("vpu acc[0], ub[0], rows=1, bias=ub[64], path=bias", UB),
    ("vpu acc[0], ub[0], rows=1, bias=ub[64]", OK),           # bias unused: not checked
    # Aux rows overlapping the destination rows, unless written in place.
    ("vpu acc[0], ub[20], rows=3, stride=2, aux=ub[25], path=loss", OK),
    ("vpu acc[0], ub[20], rows=3, stride=2, aux=ub[24], path=loss", BAD),
    ("vpu acc[0], ub[20], rows=3, stride=2, aux=ub[15], path=loss", OK),
    ("vpu acc[0], ub[20], rows=3, stride=2, aux=ub[16], path=loss", BAD),
    ("vpu acc[0], ub[20], rows=3, stride=2, aux=ub[20], path=loss", OK),   # in place
    ("vpu acc[0], ub[20], rows=3, stride=0, aux=ub[20], path=loss", BAD),
    ("vpu acc[0], ub[20], rows=1, stride=0, aux=ub[20], path=loss", OK),
    ("vpu acc[0], ub[20], rows=3, stride=2, aux=ub[24], path=act", OK),    # aux unused
    # A bias row inside the destination rows.
    ("vpu acc[0], ub[20], rows=3, stride=2, bias=ub[19], path=bias", OK),
    ("vpu acc[0], ub[20], rows=3, stride=2, bias=ub[20], path=bias", BAD),
    ("vpu acc[0], ub[20], rows=3, stride=2, bias=ub[24], path=bias", BAD),
    ("vpu acc[0], ub[20], rows=3, stride=2, bias=ub[25], path=bias", OK),
    ("vpu acc[0], ub[20], rows=3, stride=2, bias=ub[24], path=act", OK),   # bias unused
    ("setr r2, 20\nvpu acc[0], ub[r2], rows=3, stride=2, bias=ub[r2+4], path=bias", BAD),
    ("vpu acc[0], ub[0], rows=0", BAD),
    # Transposed output: tiles of 2 rows to dst + t + k * stride, up to dst + (rows - 1) // 2
    # + stride; no aux operand.
    ("vpu acc[0], ub[60], rows=5, transpose", OK),                       # last row 63
    ("vpu acc[0], ub[61], rows=5, transpose", UB),
    ("vpu acc[0], ub[52], rows=4, stride=10, path=bias|act, transpose", OK),
    ("vpu acc[0], ub[53], rows=4, stride=10, path=bias|act, transpose", UB),
    ("vpu acc[31], ub[53], rows=4, stride=10, transpose", ACC),
    ("vpu acc[0], ub[0], rows=65535, stride=255, transpose", ACC),
    ("vpu acc[0], ub[0], rows=31, stride=255, transpose", UB),
    ("vpu acc[0], ub[0], rows=3, aux=ub[40], path=loss, transpose", BAD),
    ("vpu acc[0], ub[0], rows=3, aux=ub[40], path=deriv, transpose", BAD),
    ("vpu acc[0], ub[0], rows=3, aux=ub[40], path=act, transpose", OK),  # aux unused
    ("vpu acc[0], ub[20], rows=3, stride=2, bias=ub[23], path=bias, transpose", BAD),
    ("vpu acc[0], ub[20], rows=3, stride=2, bias=ub[24], path=bias, transpose", OK),
    ("vpu acc[0], ub[20], rows=3, stride=2, bias=ub[19], path=bias, transpose", OK),
    # GD: accumulator rows src .., buffer rows param ...
    ("gd acc[30], ub[0], rows=2", OK),
    ("gd acc[31], ub[0], rows=2", ACC),
    ("gd acc[0], ub[62], rows=2", OK),
    ("gd acc[0], ub[63], rows=2", UB),
    ("gd acc[31], ub[63], rows=2", ACC),
]


def _drivers(family):
    return {"reference": HostDriver(ReferenceTransport(CFG)),
            "pysim": HostDriver(PysimTransport(CFG, family=family))}


@pytest.fixture(scope="module")
def drivers():
    """One device per backend for all the cases (a program leaves nothing behind that the
    next one reads: each starts from the same buffer contents and registers)."""
    return _drivers(None)


@pytest.fixture(scope="module")
def ice40_drivers():
    """The gateware as built for iCE40: the span as a multiply, the lean registers."""
    return _drivers("ice40")


def _run(driver, words, cfg=CFG):
    if driver.status()[0] == 3:
        driver.clear()
    driver.write(Space.UB, 0, np.ones((4, cfg.n), dtype=int))
    for reg in range(1, NUM_REGS):
        driver.write_csr(CSR.REG_BASE + reg, 0)
    try:
        driver.run(words + [0] * (cfg.imem_depth - len(words)))
    except TPUError as exc:
        return snapshot(driver), exc
    return snapshot(driver), None


def _check(drivers, text, expect, cfg=CFG):
    words = assemble(text + "\nhalt").words
    (ref, ref_err), (sim, sim_err) = (_run(drivers[b], words, cfg)
                                      for b in ("reference", "pysim"))
    for key in ref:
        assert np.array_equal(ref[key], sim[key]), f"{key} differs: {ref[key]} vs {sim[key]}"
    for error in (ref_err, sim_err):
        if expect is None:
            assert error is None
        else:
            assert error is not None and error.code == expect
            assert error.pc == text.count("\n")         # the checked instruction


@pytest.mark.parametrize("text, expect", CASES)
def test_issue_check(drivers, text, expect):
    _check(drivers, text, expect)


@pytest.mark.parametrize("text, expect", [c for c in CASES if "stride=" in c[0]
                                          or "transpose" in c[0]])
def test_issue_check_with_the_span_multiplier(ice40_drivers, text, expect):
    """The cases with a span, on the form that multiplies it out."""
    _check(ice40_drivers, text, expect)


# A transposed VPU's extent at n = 3: (rows - 1) // 3 + 2 * stride (a quotient by a
# constant that is not a power of two).
CASES_N3 = [
    ("vpu acc[0], ub[51], rows=7, stride=5, transpose", OK),             # 51 + 2 + 10 = 63
    ("vpu acc[0], ub[52], rows=7, stride=5, transpose", UB),
    ("vpu acc[0], ub[52], rows=6, stride=5, transpose", OK),             # 52 + 1 + 10
    ("vpu acc[0], ub[42], rows=30, stride=6, transpose", OK),            # 42 + 9 + 12
    ("vpu acc[0], ub[43], rows=30, stride=6, transpose", UB),
]


@pytest.mark.parametrize("family", [None, "ice40"])
def test_issue_check_of_transposed_output_on_three_lanes(family):
    cfg = TPUConfig(n=3, ub_depth=64, acc_depth=32, imem_depth=16)
    drivers = {"reference": HostDriver(ReferenceTransport(cfg)),
               "pysim": HostDriver(PysimTransport(cfg, family=family))}
    for text, expect in CASES_N3:
        _check(drivers, text, expect, cfg)


# A buffer whose second copy holds rows 0 .. 39 only: loads, aux and bias rows and GD
# parameters must lie below row 40; matmul inputs and VPU destinations may use all 64.
CFG_COPY = TPUConfig(n=2, ub_depth=64, acc_depth=32, imem_depth=16, ub_copy_depth=40)
CASES_COPY = [
    ("loadw ub[38], rows=2", OK),
    ("loadw ub[39], rows=2", UB),
    ("setr r1, 30\nloadw ub[r1+9], rows=2", UB),
    ("matmul ub[62], acc[0], rows=2", OK),                    # inputs: every row
    ("vpu acc[0], ub[53], rows=3, stride=5", OK),             # destination: every row
    ("vpu acc[0], ub[50], rows=3, stride=5, aux=ub[29], path=deriv", OK),  # last aux 39
    ("vpu acc[0], ub[50], rows=3, stride=5, aux=ub[30], path=deriv", UB),
    ("vpu acc[0], ub[50], rows=3, stride=5, aux=ub[20], path=loss", OK),
    ("vpu acc[0], ub[0], rows=1, bias=ub[39], path=bias", OK),
    ("vpu acc[0], ub[0], rows=1, bias=ub[40], path=bias", UB),
    ("vpu acc[0], ub[0], rows=1, bias=ub[40]", OK),           # bias unused: not checked
    ("gd acc[0], ub[38], rows=2", OK),
    ("gd acc[0], ub[39], rows=2", UB),
]


@pytest.fixture(scope="module")
def copy_drivers():
    return {"reference": HostDriver(ReferenceTransport(CFG_COPY)),
            "pysim": HostDriver(PysimTransport(CFG_COPY))}


@pytest.mark.parametrize("text, expect", CASES_COPY)
def test_issue_check_of_a_partial_buffer_copy(copy_drivers, text, expect):
    _check(copy_drivers, text, expect, CFG_COPY)
