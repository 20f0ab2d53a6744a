# amaranth: UnusedElaboratable=no
"""Systolic array: bit-exact results against the numpy model, latency, double buffering."""

import numpy as np
import pytest

from tinytpu_hdl.gateware.array_schedule import ArrayCycle, Tile, run_array, schedule_tiles
from tinytpu_hdl.gateware.systolic import SystolicArray
from tinytpu_hdl.numeric import FixedFormat, Q16_16, dot_chain


def random_tile(rng, rows, cols, m, *, transpose=False, big=False):
    hi = 32768 if big else 4096
    s = rng.integers(-hi, hi, (rows, cols))
    x = rng.integers(-hi, hi, (m, rows))
    return Tile(s, x, transpose=transpose)


def check_tiles(array, tiles, acc=Q16_16):
    schedule = schedule_tiles(tiles, array.rows, array.cols)
    results = run_array(array, schedule)
    expect = np.concatenate([dot_chain(t.inputs, t.stationary, acc) for t in tiles])
    expect_ovf = np.concatenate([dot_chain(t.inputs, t.stationary, acc, return_overflow=True)[1]
                                 for t in tiles])
    got = np.array([v for _, v, _ in results], dtype=np.int64)
    assert got.shape == expect.shape
    assert np.array_equal(got, expect)
    assert [o for _, _, o in results] == list(expect_ovf)
    return schedule, results


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 2), (3, 3), (4, 4), (8, 8), (2, 3), (3, 2),
                                        (1, 4), (4, 1)])
def test_random_tiles_bit_exact(rows, cols):
    rng = np.random.default_rng(rows * 10 + cols)
    m = 2 * max(rows, cols)
    tiles = [random_tile(rng, rows, cols, m), random_tile(rng, rows, cols, m, transpose=True)]
    check_tiles(SystolicArray(rows, cols), tiles)


@pytest.mark.parametrize("n", [2, 4])
def test_saturation_bit_exact(n):
    rng = np.random.default_rng(7 + n)
    tiles = [random_tile(rng, n, n, 4 * n, big=True) for _ in range(2)]
    # Force a column whose sum overflows in the middle of the chain.
    tiles[0].stationary[:, 0] = -32768
    tiles[0].inputs[0, :] = -32768
    schedule, results = check_tiles(SystolicArray(n), tiles)
    flags = [o for _, _, o in results]
    assert any(flags) and not all(flags)


def test_narrow_format():
    fmt, acc = FixedFormat(8, 4), FixedFormat(16, 8)
    rng = np.random.default_rng(5)
    tiles = [Tile(rng.integers(-128, 128, (3, 3)), rng.integers(-128, 128, (6, 3)))]
    check_tiles(SystolicArray(3, fmt=fmt, acc=acc), tiles, acc)


@pytest.mark.parametrize("product_registers", [False, True])
@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 2), (4, 4), (3, 5)])
def test_latency(rows, cols, product_registers):
    rng = np.random.default_rng(1)
    array = SystolicArray(rows, cols, product_registers=product_registers)
    assert array.latency == rows + cols + 1 + int(product_registers)
    tile = random_tile(rng, rows, cols, 3)
    schedule, results = check_tiles(array, [tile])
    first_in = tile.first_row_cycle
    assert [c for c, _, _ in results] == [first_in + array.latency + i for i in range(3)]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_back_to_back_tiles_without_idle_cycles(n):
    rng = np.random.default_rng(n)
    m = 2 * n - 1          # the shortest tile for which loads hide completely
    tiles = [random_tile(rng, n, n, m + (i % 2), transpose=(i == 2)) for i in range(5)]
    schedule, results = check_tiles(SystolicArray(n), tiles)
    # Input rows enter on consecutive cycles across all tiles ...
    act_cycles = [i for i, step in enumerate(schedule) if step.act is not None]
    assert act_cycles == list(range(act_cycles[0], act_cycles[0] + len(act_cycles)))
    # ... and result rows leave on consecutive cycles.
    out_cycles = [c for c, _, _ in results]
    assert out_cycles == list(range(out_cycles[0], out_cycles[0] + len(out_cycles)))
    # Every load after the first overlaps streaming.
    load_cycles = [i for i, step in enumerate(schedule) if step.weights is not None]
    overlapped = [i for i in load_cycles if schedule[i].act is not None]
    assert len(overlapped) == len(load_cycles) - n


def _shift_loads(schedule, tile_first_cycle, delta):
    """Move every weight load from ``tile_first_cycle`` on by ``delta`` cycles."""
    loads = [i for i, step in enumerate(schedule)
             if step.weights is not None and i >= tile_first_cycle]
    moved = [ArrayCycle(act=s.act, switch=s.switch) for s in schedule]
    for i, step in enumerate(schedule):
        if step.weights is not None and i not in loads:
            moved[i].weights, moved[i].transpose = step.weights, step.transpose
    for i in loads:
        moved[i + delta].weights = schedule[i].weights
        moved[i + delta].transpose = schedule[i].transpose
    return moved


@pytest.mark.parametrize("transpose", [False, True])
def test_shadow_load_does_not_disturb_tile_in_flight(transpose):
    """The next tile's load runs while the current tile streams, starting at the earliest cycle
    the documented rule allows, and both tiles are exact. One cycle earlier corrupts the tile in
    flight, so the rule is tight and the load really overlaps the computation."""
    n = 3
    rng = np.random.default_rng(11)
    tiles = [random_tile(rng, n, n, 2 * n - 1), random_tile(rng, n, n, 2 * n - 1, transpose=transpose)]
    array = SystolicArray(n)
    schedule = schedule_tiles(tiles, n, n)
    first = tiles[0].first_row_cycle
    second_load = [i for i, s in enumerate(schedule) if s.weights is not None and i >= first]
    assert second_load[0] == first + n - 1
    assert all(schedule[i].act is not None for i in second_load)
    expect = np.concatenate([dot_chain(t.inputs, t.stationary, Q16_16) for t in tiles])
    got = np.array([v for _, v, _ in run_array(array, schedule)])
    assert np.array_equal(got, expect)
    early = _shift_loads(schedule, first, -1)
    got_early = np.array([v for _, v, _ in run_array(array, early)])
    assert not np.array_equal(got_early[:len(tiles[0].inputs)], expect[:len(tiles[0].inputs)])


def test_constructor_validation():
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        SystolicArray(0)
    with pytest.raises(ValueError, match="cols must be a positive integer"):
        SystolicArray(2, 2.5)
    with pytest.raises(ValueError, match="cannot hold products"):
        SystolicArray(2, acc=FixedFormat(24, 16))


def test_schedule_validation():
    with pytest.raises(ValueError, match="Stationary matrix must be 2x2"):
        schedule_tiles([Tile(np.zeros((3, 2)), np.zeros((4, 2)))], 2, 2)
    with pytest.raises(ValueError, match="Input tile must be"):
        schedule_tiles([Tile(np.zeros((2, 2)), np.zeros((4, 3)))], 2, 2)
