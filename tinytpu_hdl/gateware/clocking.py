"""Board clocking: the ``sync`` domain from a board oscillator, through a PLL when the TPU
runs faster than the oscillator, with a reset from a button and the PLL's lock.

The PLL parameter searches follow the vendors' constraints (the same ones ``icepll``
and ``ecppll`` apply) and return the closest frequency they can make; the chosen
frequency is reported so that the UART divisor is computed from the real clock.
"""

from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import AsyncFFSynchronizer

__all__ = ["PLLParams", "ice40_pll", "ecp5_pll", "board_pll", "BoardClocking"]


@dataclass(frozen=True)
class PLLParams:
    """A PLL setting: the family's divider parameters, the frequency they give
    (``f_out``) and the one asked for (``target``), in Hz."""
    family: str
    f_in: float
    f_out: float
    params: dict
    target: float


def _best(candidates, target):
    if not candidates:
        return None
    return min(candidates, key=lambda c: (abs(c[0] - target), c[1:]))


def ice40_pll(f_in, f_out):
    """SB_PLL40 (SIMPLE feedback) dividers for ``f_out`` from ``f_in`` (Hz).

    ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)`` with the phase detector at
    10..133 MHz and the VCO at 533..1066 MHz (iCE40 sysCLOCK PLL guide).
    """
    if not 16e6 <= f_out <= 275e6:
        raise ValueError(f"iCE40 PLL output must be 16 to 275 MHz, not {f_out / 1e6:g} MHz")
    candidates = []
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                candidates.append((f_vco / 2 ** divq, divr, divf, divq, f_pfd))
    best = _best(candidates, f_out)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting makes {f_out / 1e6:g} MHz from "
                         f"{f_in / 1e6:g} MHz")
    f, divr, divf, divq, f_pfd = best
    filter_range = next(i for i, limit in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 133e6), 1)
                        if f_pfd < limit)
    return PLLParams("ice40", f_in, f, {"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                        "FILTER_RANGE": filter_range}, f_out)


def ecp5_pll(f_in, f_out):
    """EHXPLLL dividers (feedback from CLKOP) for ``f_out`` from ``f_in`` (Hz).

    ``f_out = f_in * CLKFB_DIV / CLKI_DIV`` with the VCO (``f_out * CLKOP_DIV``) at
    400..800 MHz and the phase detector at 3.125..400 MHz (ECP5 sysCLOCK guide).
    """
    if not 3.125e6 <= f_out <= 400e6:
        raise ValueError(f"ECP5 PLL output must be 3.125 to 400 MHz, not {f_out / 1e6:g} MHz")
    candidates = []
    for clki in range(1, 129):
        f_pfd = f_in / clki
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            f = f_pfd * clkfb
            for clkop in range(1, 129):
                if 400e6 <= f * clkop <= 800e6:
                    candidates.append((f, clki, clkfb, clkop))
                    break
    best = _best(candidates, f_out)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {f_out / 1e6:g} MHz from "
                         f"{f_in / 1e6:g} MHz")
    f, clki, clkfb, clkop = best
    return PLLParams("ecp5", f_in, f, {"CLKI_DIV": clki, "CLKFB_DIV": clkfb,
                                       "CLKOP_DIV": clkop, "CLKOP_CPHASE": clkop - 1}, f_out)


def board_pll(platform, f_sync):
    """The PLL that makes ``f_sync`` (Hz) from ``platform``'s default clock, or ``None``
    when that clock is ``f_sync`` already; ``ValueError`` when the family's PLL cannot make
    it (checked before any logic is built: :class:`BoardClocking` takes the result)."""
    f_in = platform.default_clk_frequency
    searches = {"ice40": ice40_pll, "ecp5": ecp5_pll}
    if abs(f_sync - f_in) < 1:
        return None
    if platform.family.lower() not in searches:
        raise ValueError(f"no PLL support for the {platform.family} family")
    return searches[platform.family.lower()](f_in, f_sync)


class BoardClocking(wiring.Component):
    """Drives the clock and reset of the ``sync`` domain on a board (the top level
    defines the domain).

    The board's default clock drives ``sync`` directly when ``pll`` is ``None``, else
    through the family's PLL with the settings ``pll`` (:func:`board_pll`). ``sync`` is
    held in reset while the reset button (``reset_button``: a resource name, or ``None``)
    is pressed or the PLL is not locked, and leaves reset synchronously.

    Members: ``frequency`` -- the ``sync`` frequency in Hz (a Python float, after the
    PLL's rounding).
    """

    def __init__(self, platform, pll, *, reset_button=None):
        self._f_in = platform.default_clk_frequency
        self._reset_button = reset_button
        self._pll = pll
        self.frequency = self._f_in if self._pll is None else self._pll.f_out
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        clk_pin = platform.request(platform.default_clk, dir="-")
        locked = Signal()
        if self._pll is not None and self._pll.family == "ice40":
            # The oscillator's pin is the PLL's own input pad (pin 35 of the iCEBreaker's
            # UP5K): the PLL takes it directly (SB_PLL40_PAD). An input buffer on the pin
            # feeding SB_PLL40_CORE cannot be placed (nextpnr: the PLL "conflicts with
            # input ... on pin '35'").
            p = self._pll.params
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
                p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"],
                i_PACKAGEPIN=clk_pin.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=ClockSignal("sync"), o_LOCK=locked)
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
        if self._pll is None:
            m.d.comb += [ClockSignal("sync").eq(clk_buf.i), locked.eq(1)]
        elif self._pll.family == "ecp5":
            p = self._pll.params
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{self._f_in / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.frequency / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"],
                p_CLKOP_DIV=p["CLKOP_DIV"], p_CLKOP_CPHASE=p["CLKOP_CPHASE"],
                p_CLKOP_FPHASE=0,
                i_CLKI=clk_buf.i, i_CLKFB=ClockSignal("sync"), i_RST=Const(0),
                i_STDBY=Const(0), i_PHASESEL0=Const(0), i_PHASESEL1=Const(0),
                i_PHASEDIR=Const(0), i_PHASESTEP=Const(0), i_PHASELOADREG=Const(0),
                i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
                o_CLKOP=ClockSignal("sync"), o_LOCK=locked)
        if self._pll is not None:
            clk = Signal()
            m.d.comb += clk.eq(ClockSignal("sync"))
            platform.add_clock_constraint(clk, self.frequency)
        pressed = Signal()
        if self._reset_button is not None:
            button = platform.request(self._reset_button, 0, dir="-")
            m.submodules.button_buf = button_buf = io.Buffer("i", button)
            m.d.comb += pressed.eq(button_buf.i)
        # Asserted at once, released synchronously (two flip-flops).
        reset = Signal()
        m.submodules.reset_sync = AsyncFFSynchronizer(pressed | ~locked, reset, o_domain="sync")
        if platform.family.lower() == "ecp5":
            # Most of the TPU's flip-flops take this reset (11,826 of 14,356 in the 8x8
            # ULX3S build): it goes on a global network, as the clock does, instead of
            # through general routing. (nextpnr-ice40 promotes a reset by itself.)
            m.submodules.reset_buf = Instance("DCCA", i_CLKI=reset, i_CE=Const(1),
                                              o_CLKO=ResetSignal("sync"))
        else:
            m.d.comb += ResetSignal("sync").eq(reset)
        return m
