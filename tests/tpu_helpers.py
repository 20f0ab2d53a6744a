"""Shared helpers: run one program on the reference model and on the simulated gateware."""

import numpy as np

from tinytpu_hdl.asm import format_instruction
from tinytpu_hdl.gateware.control import CSR, State
from tinytpu_hdl.host_protocol import Space
from tinytpu_hdl.isa import NUM_REGS, ConfigReg, decode
from tinytpu_hdl.reference import ReferenceTransport
from tinytpu_hdl.runtime.driver import HostDriver, TPUError
from tinytpu_hdl.runtime.pysim import PysimTransport

BACKENDS = {"reference": ReferenceTransport, "pysim": PysimTransport}


def snapshot(driver):
    """Everything the host can see of a device."""
    cfg = driver.cfg
    state, code, status = driver.status()
    return {
        "ub": np.array(driver.read(Space.UB, 0, cfg.ub_depth)),
        "acc": np.array(driver.read(Space.ACC, 0, cfg.acc_depth)),
        "status": status,
        "error_pc": driver.csr(CSR.ERROR_PC),
        "pc": driver.csr(CSR.PC),
        "counters": driver.read(Space.CSR, CSR.CYCLES_LO, 8),
        "regs": driver.read(Space.CSR, CSR.REG_BASE, NUM_REGS),
        "cfgs": driver.read(Space.CSR, CSR.CFG_BASE, len(ConfigReg)),
    }


def run_on(backend, cfg, program, ub=None, acc=None, watchdog=0):
    """Write ``ub``/``acc`` ({address: rows}), run ``program``; return (snapshot, error)."""
    driver = HostDriver(BACKENDS[backend](cfg))
    for addr, rows in (ub or {}).items():
        driver.write(Space.UB, addr, np.atleast_2d(rows))
    for addr, rows in (acc or {}).items():
        driver.write(Space.ACC, addr, np.atleast_2d(rows))
    return snapshot_after(driver, program, watchdog)


def snapshot_after(driver, program, watchdog=0):
    """Run ``program`` and poll the device without the driver's recovery, so that the
    snapshot shows the error state as the hardware left it; returns (snapshot, error)."""
    driver.set_watchdog(watchdog)
    driver.load_program(program)
    driver.start()
    while driver.status()[0] == State.RUNNING:
        driver.transport.idle(16)
    state, code, _ = driver.status()
    error = None
    if state == State.ERROR:
        pc = driver.csr(CSR.ERROR_PC)
        text = None
        if pc < driver.cfg.imem_depth:
            try:
                text = format_instruction(decode(driver.read(Space.IMEM, pc, 1)[0]))
            except ValueError:
                text = "illegal instruction word"
        error = TPUError(code, pc, text)
    return snapshot(driver), error


def run_both(cfg, program, **kwargs):
    """Run on both backends and assert that everything visible is identical."""
    ref, ref_err = run_on("reference", cfg, program, **kwargs)
    sim, sim_err = run_on("pysim", cfg, program, **kwargs)
    for key in ref:
        assert np.array_equal(ref[key], sim[key]), f"{key} differs: {ref[key]} vs {sim[key]}"
    assert (ref_err is None) == (sim_err is None)
    if ref_err is not None:
        assert (ref_err.code, ref_err.pc, ref_err.instruction) == \
            (sim_err.code, sim_err.pc, sim_err.instruction)
    return ref, ref_err
