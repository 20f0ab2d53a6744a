"""ULX3S with the ECP5 LFE5U-85F (CABGA381): 83,640 LUT4, 156 MULT18X18D, 208 DP16KD,
25 MHz oscillator.

A 10x10 array by default, clocked at 66.7 MHz (25 MHz x 8 / 3) by the ECP5's PLL from
the 25 MHz oscillator (6.67 GMAC/s peak), with the vector and gradient-descent units
sharing one multiplier block per lane (``unit_multipliers="shared"``: 110 of the 156
MULT18X18D). Its board build met 66.7 MHz at 76.4 MHz (2026-12-06, 15 % margin; 69.1
MHz before the transposed extent's quotient lost a carry chain, 72.9 MHz asked for the
earlier 62.5 MHz clock; docs/benchmarks.md, "Board builds"). Why not larger: a 12x12
takes every multiplier block of the device, and its board builds on a 2-core machine
route slowly or not at all: asked for 62.5 MHz it reached 60.8 MHz (58 minutes), asked
for 58.3 and for 75 MHz router1 was stopped far from done after 30 and 38 minutes. Arrays are padded to multiples of N: networks whose widths are
multiples of 8 (the digits demo's 64-32-10) run more cycles per step on the 10x10 than
on an 8x8 (``variant(n=8, unit_multipliers="blocks", ub_depth=16384, clock_hz=200e6 /
3)`` is the earlier default, 4.3 GMAC/s peak).
The 12,288-row buffer runs with ``overlap_units``: its second copy, read by the weight
loader and the units, holds the lower 7,168 rows, where the compiler puts what they read
(a 784-64-10 network's parameters, activations and targets take 6,180 rows of ten
words), 194 of the 208 DP16KD in all. Its board build routes with nextpnr's static
placer. The TPU's reset goes on a global network (see ``gateware/clocking.py``). LEDs
0/1/2 = running/done/error; fire button 1 resets the TPU.
"""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from ..config import TPUConfig
from . import Board

BOARD = Board(
    name="ulx3s-85f",
    platform=ULX3S_85F_Platform,
    # A 12,288-row buffer (rows of ten 16-bit words: 1.97 Mbit) holds a 784-64-10 network's
    # parameters and training state with a batch of 32 samples (11,904 rows); a second
    # copy of all of it for ``overlap_units`` would not fit beside it, one of its lower
    # 7,168 rows does.
    cfg=TPUConfig(n=10, ub_depth=12288, ub_copy_depth=7168, unit_multipliers="shared"),
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
