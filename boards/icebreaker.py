"""iCEBreaker (iCE40UP5K-SG48): 5,280 logic cells, 8 SB_MAC16, 30 EBR, 12 MHz oscillator.

The TPU does not fit the UP5K yet. Its multipliers: one per PE, three per
vector-unit lane, two per gradient-descent lane (a 32x16 product) and one in the
control unit, so a 2x2 array needs 15 SB_MAC16 and a 1x1 array 7 of the 8; and a
1x1 build measured 6,664 of the 5,280 logic cells (the control unit alone takes
about 2,400 LUTs). The configuration below is the smallest one, so that
``tinytpu build --board icebreaker`` reports exactly what is over. LEDs: green =
done, red = error, the break-off PMOD's LED 2 = running; the user button resets
the TPU. The TPU runs from the 12 MHz oscillator.
"""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from ..config import TPUConfig
from . import Board

BOARD = Board(
    name="icebreaker",
    platform=ICEBreakerPlatform,
    cfg=TPUConfig(n=1, ub_depth=1024, acc_depth=256, imem_depth=256),
    clock_hz=12e6,
    baud=1_000_000,
    leds={"running": ("led", 2), "done": ("led_g", 0), "error": ("led_r", 0)},
    reset_button="button",
    loader_id="icebreaker",
    programmer="iceprog",
    extra_resources=("break_off_pmod",),
    # Amaranth's iCE40 flow maps multipliers to logic unless told to use the DSPs.
    synth_opts="-dsp",
)
