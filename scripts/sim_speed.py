#!/usr/bin/env python3
"""Measure the Amaranth simulator's speed on the bare systolic array.

Streams back-to-back tiles (weights double-buffered, one input row per cycle)
through ``SystolicArray(n)`` and prints simulated cycles per second.

    python scripts/sim_speed.py --sizes 2 4 8 --cycles 2000
"""

import argparse
import platform
import time

import numpy as np

from tinytpu_hdl.gateware.array_schedule import Tile, run_array, schedule_tiles
from tinytpu_hdl.gateware.systolic import SystolicArray


def measure(n, cycles, seed=0):
    rng = np.random.default_rng(seed)
    m = 4 * n
    tiles = [Tile(rng.integers(-4096, 4096, (n, n)), rng.integers(-4096, 4096, (m, n)),
                  transpose=bool(i % 2)) for i in range(max(1, cycles // m))]
    schedule = schedule_tiles(tiles, n, n)
    array = SystolicArray(n)
    start = time.perf_counter()
    run_array(array, schedule)
    elapsed = time.perf_counter() - start
    simulated = len(schedule) + array.latency + 1
    return simulated, elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--cycles", type=int, default=2000)
    args = parser.parse_args()
    print(f"# Amaranth pysim speed, bare SystolicArray, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(f"{'N':>3} {'cycles':>8} {'seconds':>8} {'cycles/s':>9}")
    for n in args.sizes:
        cycles, seconds = measure(n, args.cycles)
        print(f"{n:>3} {cycles:>8} {seconds:>8.2f} {cycles / seconds:>9.0f}")


if __name__ == "__main__":
    main()
