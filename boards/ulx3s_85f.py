"""ULX3S with the ECP5 LFE5U-85F (CABGA381): 83,640 LUT4, 156 MULT18X18D, 208 DP16KD,
25 MHz oscillator.

An 8x8 array by default, clocked at 66.7 MHz (25 MHz x 8 / 3) by the ECP5's PLL from the
25 MHz oscillator (4.3 GMAC/s peak): its board build routes with nextpnr's static placer
(194 of the 208 DP16KD; docs/benchmarks.md, "Board builds"). Asked for 75 MHz, two
builds of nearly the same gateware reached 76.4 and 68.6 MHz: their worst path, a block
RAM's unregistered output through the buffer's multiplexer over its 32 banks (spread
across the whole device), moves with placement, so the clock keeps below the slower one.
The 16,384-row buffer runs with ``overlap_units``: its second copy, read by the weight
loader and the units, holds the lower 7,168 rows, where the compiler puts what they read
(a 784-64-10 network's parameters, activations and targets take 7,054). The
TPU's reset goes on a global network (see ``gateware/clocking.py``). LEDs 0/1/2 =
running/done/error; fire button 1 resets the TPU.
"""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from ..config import TPUConfig
from . import Board

BOARD = Board(
    name="ulx3s-85f",
    platform=ULX3S_85F_Platform,
    # A 16,384-row buffer (2 Mbit) holds a 784-64-10 network's parameters and training
    # state with a batch of 32 samples; a second copy of all of it for ``overlap_units``
    # would not fit beside it (240 DP16KD for the two), one of its lower 7,168 rows does
    # (56 DP16KD more).
    cfg=TPUConfig(n=8, ub_depth=16384, ub_copy_depth=7168),
    clock_hz=200e6 / 3,
    baud=1_000_000,
    leds={"running": ("led", 0), "done": ("led", 1), "error": ("led", 2)},
    reset_button="button_fire",
    loader_id="ulx3s",
    programmer="openFPGALoader",
    # nextpnr's analytic "static" placer: with its default placer (HeAP) the 8x8 board
    # build never finished routing on a 2-core machine (docs/benchmarks.md).
    nextpnr_opts="--placer static",
)
