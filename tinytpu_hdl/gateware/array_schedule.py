"""Cycle schedules for the systolic array, and a simulation driver that plays them.

The schedule rule is the one documented on :class:`~.systolic.SystolicArray`:
a tile's weight load may begin ``rows - 1`` cycles after the previous tile's
first row (``cols - 1`` for a transposed load) and the tile may switch in
once its load has completed. These functions are used by tests and
benchmarks that drive the bare array; the control unit applies the same
rule in hardware.
"""

from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from .systolic import SystolicArray

__all__ = ["ArrayCycle", "Tile", "schedule_tiles", "run_array"]


@dataclass
class ArrayCycle:
    """What the array's input ports carry in one cycle (``None``: not valid)."""

    act: "np.ndarray | None" = None
    switch: bool = False
    weights: "np.ndarray | None" = None
    transpose: bool = False


@dataclass
class Tile:
    """A stationary matrix and the input rows streamed against it.

    ``stationary`` is the matrix ``S`` the array must hold (``rows`` x
    ``cols``). With ``transpose=True`` it is loaded through the transposed
    path (its columns pushed from the left), which is how a matrix stored as
    rows of ``S^T`` is loaded without a copy.
    """

    stationary: np.ndarray
    inputs: np.ndarray
    transpose: bool = False
    first_row_cycle: int = field(default=-1, init=False)


def schedule_tiles(tiles, rows, cols):
    """Lay ``tiles`` out back to back at the earliest legal cycles.

    Returns the per-cycle list of :class:`ArrayCycle` and sets each tile's
    ``first_row_cycle``.
    """
    cycles = {}

    def at(cycle):
        return cycles.setdefault(cycle, ArrayCycle())

    load_start = 0
    prev_first = None
    prev_end = 0
    for tile in tiles:
        s = np.asarray(tile.stationary, dtype=np.int64)
        x = np.asarray(tile.inputs, dtype=np.int64)
        if s.shape != (rows, cols):
            raise ValueError(f"Stationary matrix must be {rows}x{cols}, not {s.shape}")
        if x.ndim != 2 or x.shape[1] != rows or x.shape[0] < 1:
            raise ValueError(f"Input tile must be (M, {rows}) with M >= 1, not {x.shape}")
        depth = cols if tile.transpose else rows
        if prev_first is not None:
            load_start = max(load_start, prev_first + depth - 1)
        vectors = [s[:, c] for c in reversed(range(cols))] if tile.transpose \
            else [s[r, :] for r in reversed(range(rows))]
        width = max(rows, cols)
        for i, vec in enumerate(vectors):
            cyc = at(load_start + i)
            if cyc.weights is not None:
                raise AssertionError("weight loads overlap")
            cyc.weights = np.zeros(width, dtype=np.int64)
            cyc.weights[:len(vec)] = vec
            cyc.transpose = tile.transpose
        first = max(prev_end, load_start + depth)
        for i, row in enumerate(x):
            cyc = at(first + i)
            cyc.act = row
            cyc.switch = i == 0
        tile.first_row_cycle = first
        prev_first = first
        prev_end = first + len(x)
        load_start = load_start + depth
    length = max(cycles) + 1
    return [cycles.get(i, ArrayCycle()) for i in range(length)]


def run_array(array: SystolicArray, schedule, *, extra_cycles=None, vcd=None):
    """Simulate ``array`` playing ``schedule`` (a list of :class:`ArrayCycle`).

    Returns a list of ``(cycle, values, overflow)`` for every cycle in which
    ``result.valid`` was high, ``values`` being raw accumulator integers.
    """
    if extra_cycles is None:
        extra_cycles = array.latency + 1
    width = max(array.rows, array.cols)
    zeros_act = [0] * array.rows
    zeros_w = [0] * width
    results = []

    async def testbench(ctx):
        for cycle in range(len(schedule) + extra_cycles):
            step = schedule[cycle] if cycle < len(schedule) else ArrayCycle()
            if step.act is not None:
                ctx.set(array.act.payload, {"data": [int(v) for v in step.act],
                                            "switch": int(step.switch)})
                ctx.set(array.act.valid, 1)
            else:
                ctx.set(array.act.payload, {"data": zeros_act, "switch": 0})
                ctx.set(array.act.valid, 0)
            if step.weights is not None:
                ctx.set(array.weights.payload, {"data": [int(v) for v in step.weights],
                                                "transpose": int(step.transpose)})
                ctx.set(array.weights.valid, 1)
            else:
                ctx.set(array.weights.payload, {"data": zeros_w, "transpose": 0})
                ctx.set(array.weights.valid, 0)
            if ctx.get(array.result.valid):
                payload = ctx.get(array.result.payload)
                results.append((cycle, [int(v) for v in payload.data], bool(payload.overflow)))
            await ctx.tick()

    sim = Simulator(array)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return results
