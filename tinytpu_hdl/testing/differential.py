"""Run the same case on several backends and compare everything the host can see."""

import numpy as np

from ..gateware.control import CSR
from ..host_protocol import Space
from ..isa import NUM_REGS, ConfigReg
from ..runtime.driver import HostDriver, TPUError

__all__ = ["observe", "run_case", "compare"]


def observe(driver):
    """Everything the host can read: memories, status, counters, registers."""
    cfg = driver.cfg
    return {
        "ub": np.array(driver.read(Space.UB, 0, cfg.ub_depth)),
        "acc": np.array(driver.read(Space.ACC, 0, cfg.acc_depth)),
        "csr": np.array(driver.read(Space.CSR, 0, CSR.SEED + 1)),
        "regs": np.array(driver.read(Space.CSR, CSR.REG_BASE, NUM_REGS)),
        "cfgs": np.array(driver.read(Space.CSR, CSR.CFG_BASE, len(ConfigReg))),
    }


def run_case(transport, case):
    """Load and run a :class:`~.program_gen.FuzzCase`; return (observation, error).

    State the host cannot write (the array's weight registers, the generators' position
    after a run) carries over from earlier cases, so compare backends that have run the same
    sequence of cases."""
    d = HostDriver(transport)
    d.recover()
    d.write(Space.UB, 0, case.ub)
    d.write(Space.ACC, 0, case.acc)
    d.write(Space.IMEM, 0, case.words + [0] * (d.cfg.imem_depth - len(case.words)))
    regs = [case.regs.get(r, 0) for r in range(1, NUM_REGS)]
    d.write(Space.CSR, CSR.REG_BASE + 1, regs)
    d.write(Space.CSR, CSR.CFG_BASE, [case.cfgs.get(r, 0) for r in ConfigReg])
    d.write_csr(CSR.SEED, case.seed_csr)
    error = None
    try:
        d.run(watchdog=case.watchdog)
    except TPUError as exc:
        error = (exc.code, exc.pc)
    return observe(d), error


def compare(a, b):
    """Names of the observed items that differ between two observations."""
    return [key for key in a if not np.array_equal(a[key], b[key])]
