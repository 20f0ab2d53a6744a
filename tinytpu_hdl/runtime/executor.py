"""The one executor of :class:`~tinytpu_hdl.compiler.plan.Plan` objects, for every backend.

It loads the plan's programs into the instruction memory, then carries out its steps in
order through a :class:`~.driver.HostDriver`: writes pack host tensors into rows, runs set
index registers and start a program at its origin, reads unpack rows into host tensors.
"""

from dataclasses import dataclass

import numpy as np

from ..compiler.plan import LoadPrograms, Mark, Read, Run, Wait, Write
from ..gateware.control import CSR
from ..host_protocol import Space

__all__ = ["Stats", "execute"]


@dataclass(frozen=True)
class Stats:
    """Counters of the last operation, summed over its program runs."""

    n: int
    runs: int = 0
    cycles: int = 0
    array_busy_cycles: int = 0
    macs: int = 0
    instructions: int = 0
    overflow: bool = False

    @property
    def utilization(self):
        """PE multiply-accumulates over the array's peak, ``macs / (cycles * n^2)``."""
        return self.macs / (self.cycles * self.n * self.n) if self.cycles else 0.0

    def __add__(self, run):
        return Stats(self.n, self.runs + 1, self.cycles + run.cycles,
                     self.array_busy_cycles + run.array_busy_cycles, self.macs + run.macs,
                     self.instructions + run.instructions,
                     self.overflow or run.overflow_array or run.overflow_vector or run.overflow_gd)


def _write_regs(driver, regs):
    """Index registers in as few CSR writes as there are runs of consecutive registers."""
    regs = sorted(regs)
    start = 0
    while start < len(regs):
        end = start + 1
        while end < len(regs) and regs[end][0] == regs[end - 1][0] + 1:
            end += 1
        driver.write(Space.CSR, CSR.REG_BASE + regs[start][0],
                     [value & 0xFFFF for _, value in regs[start:end]])
        start = end


def _poll(on_poll, step):
    return None if on_poll is None else (lambda cycles: on_poll(step, cycles))


def _finish(driver, step, stats, on_run, on_poll=None):
    driver.wait(on_poll=on_poll)
    stats = stats + driver.stats()
    if on_run is not None:
        on_run(step, stats)
    return stats


def _load(driver, images):
    for image in images:
        driver.write(Space.IMEM, image.origin, image.program.words)


def execute(plan, driver, tensors, *, watchdog=0, stats=None, on_run=None, on_mark=None,
            on_poll=None):
    """Carry out ``plan`` on the device behind ``driver``. ``tensors`` maps the names the
    plan's transfers use to raw-integer arrays (reads store into it). Returns the summed
    :class:`Stats` (added to ``stats``). ``watchdog`` is every run's cycle budget (0:
    none). ``on_run(step, stats)`` is called after each run, ``on_mark(tag, stats)`` at
    each :class:`~tinytpu_hdl.compiler.plan.Mark`, ``on_poll(step, cycles)`` while a run
    goes on (a backend slow enough to be polled). The device is made idle first, so a
    plan runs after any earlier error or interruption."""
    cfg = plan.cfg
    n = cfg.n
    stats = stats if stats is not None else Stats(n)
    driver.recover()
    driver.set_watchdog(watchdog)
    _load(driver, plan.programs)
    origins = {image.name: image.origin for image in plan.all_programs()}
    pending = None
    for step in plan.steps:
        if isinstance(step, Write):
            rows = np.asarray(step.source.pack(tensors, n), dtype=np.int64)
            if len(rows) != step.rows:
                raise AssertionError(f"{step.source} packed {len(rows)} rows, the plan "
                                     f"says {step.rows}")
            driver.write(step.space, step.address, rows)
        elif isinstance(step, Run):
            _write_regs(driver, step.regs)
            driver.start(origins[step.program])
            pending = step
            if step.wait:
                stats = _finish(driver, pending, stats, on_run, _poll(on_poll, pending))
                pending = None
        elif isinstance(step, Wait):
            if pending is None:
                raise AssertionError("a Wait step without a run under way")
            stats = _finish(driver, pending, stats, on_run, _poll(on_poll, pending))
            pending = None
        elif isinstance(step, Read):
            rows = np.array(driver.read(step.space, step.address, step.rows), dtype=np.int64)
            step.sink.unpack(tensors, rows.reshape(step.rows, -1), n)
        elif isinstance(step, LoadPrograms):
            _load(driver, step.programs)
        elif isinstance(step, Mark):
            if on_mark is not None:
                on_mark(step.tag, stats)
        else:
            raise TypeError(f"not a plan step: {step!r}")
    return stats
