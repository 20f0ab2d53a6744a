"""Verilog export of the top-level component."""

from amaranth.back import verilog

from .config import TPUConfig
from .gateware.systolic import SystolicArray

__all__ = ["top_component", "to_verilog"]


def top_component(cfg: TPUConfig):
    """The synthesizable top level for ``cfg``: the systolic array."""
    return SystolicArray(cfg.n, cfg.n, fmt=cfg.data, acc=cfg.acc)


def to_verilog(cfg: TPUConfig, *, name="tinytpu"):
    """Verilog source text of the top level for ``cfg``."""
    return verilog.convert(top_component(cfg), name=name)
