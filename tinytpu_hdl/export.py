"""Verilog export of the top-level component."""

from amaranth.back import verilog

from .config import TPUConfig
from .gateware.systolic import SystolicArray
from .gateware.tpu import TPU

__all__ = ["TOPS", "top_component", "to_verilog", "LINT_WAIVERS"]

#: What ``tinytpu verilog --top`` can emit.
TOPS = ("tpu", "array")

#: Verilator warnings that Yosys's Verilog back end provokes by design and that say nothing
#: about the circuit: it writes constants and operands in their minimal width (WIDTHEXPAND,
#: WIDTHTRUNC) and leaves a ``case`` without ``default`` where the result is assigned before
#: it (CASEINCOMPLETE). The bare array lints clean without them; every other warning is kept.
LINT_WAIVERS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE")


def top_component(cfg: TPUConfig, top="tpu"):
    """The synthesizable top level for ``cfg``: the whole TPU, or the bare systolic array."""
    if top == "tpu":
        return TPU(cfg)
    if top == "array":
        return SystolicArray(cfg.n, cfg.n, fmt=cfg.data, acc=cfg.acc)
    raise ValueError(f"Unknown top level {top!r}; choose one of {', '.join(TOPS)}")


def to_verilog(cfg: TPUConfig, *, top="tpu", name="tinytpu"):
    """Verilog source text of the top level for ``cfg``."""
    return verilog.convert(top_component(cfg, top), name=name)
