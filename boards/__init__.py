"""Boards the TPU is built for: one small file per board.

This folder is installed as the package ``tinytpu_hdl.boards``. Each board file
defines ``BOARD``, a :class:`Board`: the amaranth-boards platform, the TPU
configuration that fits the device, the TPU clock (a PLL makes it when it differs
from the board's oscillator), the UART baud rate and which LEDs and button to use.
Adding a board is adding a file and its name to :data:`BOARD_MODULES`.
"""

import importlib
from dataclasses import dataclass, field

from ..config import TPUConfig

__all__ = ["Board", "BOARD_MODULES", "board_names", "get_board"]


@dataclass(frozen=True)
class Board:
    """What the build needs to know about one board.

    ``platform``: the amaranth-boards platform class. ``cfg``: the TPU configuration
    built for it. ``clock_hz``: the frequency of the TPU's clock domain. ``baud``: the
    UART's baud rate on the board's USB serial port. ``leds``: the LED resource
    (name, number) that shows each of ``running``, ``done`` and ``error``.
    ``reset_button``: the resource name of a button that resets the TPU, or ``None``.
    ``programmer``: the tool ``--program`` runs; ``loader_id`` the board's name for
    openFPGALoader's ``-b``. ``synth_opts``: extra options of the
    Yosys synthesis command; ``nextpnr_opts``: extra options of nextpnr; ``seed``:
    nextpnr's placement seed (``None``: nextpnr's own).
    ``extra_resources``: names of resource lists of the
    platform class to add (e.g. a PMOD board that ships attached).
    """

    name: str
    platform: type
    cfg: TPUConfig
    clock_hz: float
    baud: int = 1_000_000
    leds: dict = field(default_factory=dict)
    reset_button: str = None
    programmer: str = "openFPGALoader"
    loader_id: str = ""
    synth_opts: str = ""
    nextpnr_opts: str = ""
    extra_resources: tuple = ()
    seed: int = None

    def make_platform(self):
        """An instance of the platform with the board's extra resources added."""
        platform = self.platform()
        for name in self.extra_resources:
            platform.add_resources(getattr(platform, name))
        return platform

    def with_n(self, n):
        """This board with an ``n`` x ``n`` array (other sizes kept)."""
        return self.variant(n=n)

    def variant(self, *, clock_hz=None, seed=None, **cfg_fields):
        """This board with other :class:`~tinytpu_hdl.config.TPUConfig` fields
        (``n=12, unit_multipliers="shared"``, ...: the configuration checks them), another
        TPU clock ``clock_hz`` (the board top refuses one its PLL cannot make, before any
        tool runs) or another nextpnr placement ``seed`` (Fmax moves with placement)."""
        from dataclasses import fields, replace
        known = {f.name for f in fields(TPUConfig)}
        unknown = sorted(set(cfg_fields) - known)
        if unknown:
            raise ValueError(f"unknown TPU configuration field {unknown[0]!r}; the fields "
                             f"are {', '.join(sorted(known))}")
        board = replace(self, cfg=replace(self.cfg, **cfg_fields)) if cfg_fields else self
        if clock_hz is not None:
            if not clock_hz > 0:
                raise ValueError(f"clock_hz must be positive, not {clock_hz!r}")
            board = replace(board, clock_hz=float(clock_hz))
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
            board = replace(board, seed=seed)
        return board


#: Board name -> module of this package that defines ``BOARD``.
BOARD_MODULES = {
    "icebreaker": "icebreaker",
    "ulx3s-85f": "ulx3s_85f",
}


def board_names():
    return sorted(BOARD_MODULES)


def get_board(name):
    """The :class:`Board` called ``name``; ``ValueError`` names the known boards."""
    if name not in BOARD_MODULES:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(board_names())}")
    return importlib.import_module(f"{__name__}.{BOARD_MODULES[name]}").BOARD
