"""iCEBreaker (iCE40UP5K-SG48): 5,280 logic cells, 8 SB_MAC16, 30 EBR, 12 MHz oscillator.

A 1x1 TPU, the largest that fits: 5,267 of the 5,280 logic cells (99.8 %), 7 of the 8
DSPs (one for the PE, three for the vector unit's multiplies, two for the
gradient-descent unit's 32x16 product, one for the control unit's range check) and 29 of
the 30 EBR (the index registers live in five of them, see ControlUnit's register_ram), with
38-bit counters (3.6 hours at 21 MHz: the PLL's lock logic took the cells of
two counter bits), without ``chase_matmul`` (its second copy of
the accumulators would need two more EBR) and without ``registered_requests`` and
``registered_weight_rows`` (with them the 1x1 packs into more logic cells than the UP5K
has); 22.4 MHz after routing with the clock at 21 MHz (2026-12-04; 24.7 MHz from the
12 MHz oscillator with 40-bit counters before). At 99.8 % the packed count moves by tens
of cells with small netlist changes: the bitstream test in CI is the check. The buffer has 1,536 rows (two copies of six EBR: iCE40 block RAMs have one read port each).
Yosys maps a 2x2 TPU to 12 SB_MAC16. The compiler tiles any network onto the 1x1 array
and streams what does not fit, so XOR and the other demos run unchanged, only slower;
training keeps a network's parameters on chip, which here holds 64-10-10 at batch 4 for
the digits. LEDs: green = done, red = error, the break-off PMOD's LED 2 = running; the
user button resets the TPU. The TPU runs at 21 MHz from the UP5K's PLL (its input is the
oscillator's pin, the PLL's own pad), 21 cycles per bit at 1 Mbaud.
"""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from ..config import TPUConfig
from . import Board

BOARD = Board(
    name="icebreaker",
    platform=ICEBreakerPlatform,
    cfg=TPUConfig(n=1, ub_depth=1536, acc_depth=256, imem_depth=256, counter_width=38,
                  isolated_multipliers=False, chase_matmul=False,
                  registered_requests=False, registered_weight_rows=False),
    clock_hz=21e6,
    baud=1_000_000,
    leds={"running": ("led", 2), "done": ("led_g", 0), "error": ("led_r", 0)},
    reset_button="button",
    loader_id="icebreaker",
    programmer="iceprog",
    extra_resources=("break_off_pmod",),
    # Amaranth's iCE40 flow maps multipliers to logic unless told to use the DSPs.
    synth_opts="-dsp",
)
