"""ULX3S with the ECP5 LFE5U-85F (CABGA381): 83,640 LUT4, 156 MULT18X18D, 208 DP16KD,
25 MHz oscillator.

An 8x8 array by default, clocked at 62.5 MHz by the ECP5's PLL from the 25 MHz oscillator
(4.0 GMAC/s peak): its board build routes with nextpnr's static placer and meets 65.2 MHz
with the clock at 62.5 MHz (builds asked for 50 MHz reached 65.9 to 68.9; docs/benchmarks.md,
"Board builds"). The
TPU's reset goes on a global network (see ``gateware/clocking.py``). LEDs 0/1/2 =
running/done/error; fire button 1 resets the TPU.
"""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from ..config import TPUConfig
from . import Board

BOARD = Board(
    name="ulx3s-85f",
    platform=ULX3S_85F_Platform,
    # A 16,384-row buffer (2 Mbit: 128 of the 208 DP16KD, one copy: see UnifiedBuffer) holds
    # a 784-64-10 network's parameters and training state with a batch of 32 samples; the
    # second copy of ``overlap_units`` would not fit beside it.
    cfg=TPUConfig(n=8, ub_depth=16384, overlap_units=False),
    clock_hz=62.5e6,
    baud=1_000_000,
    leds={"running": ("led", 0), "done": ("led", 1), "error": ("led", 2)},
    reset_button="button_fire",
    loader_id="ulx3s",
    programmer="openFPGALoader",
    # nextpnr's analytic "static" placer: with its default placer (HeAP) the 8x8 board
    # build never finished routing on a 2-core machine (docs/benchmarks.md).
    nextpnr_opts="--placer static",
)
