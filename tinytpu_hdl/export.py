"""Verilog export of the top-level component."""

from amaranth.back import verilog

from .config import TPUConfig
from .gateware.systolic import SystolicArray
from .gateware.tpu import TPU

__all__ = ["TOPS", "FAMILIES", "top_component", "to_verilog", "LINT_WAIVERS"]

#: What ``tinytpu verilog --top`` can emit.
TOPS = ("tpu", "array")

#: Verilator warnings that Yosys's Verilog back end provokes by design and that say nothing
#: about the circuit: it writes constants and operands in their minimal width (WIDTHEXPAND,
#: WIDTHTRUNC) and leaves a ``case`` without ``default`` where the result is assigned before
#: it (CASEINCOMPLETE). The bare array lints clean without them; every other warning is kept.
LINT_WAIVERS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE")


#: FPGA families ``tinytpu verilog --family`` can target (see :class:`~.gateware.tpu.TPU`).
FAMILIES = ("ecp5", "ice40")


def top_component(cfg: TPUConfig, top="tpu", *, family=None):
    """The synthesizable top level for ``cfg``: the whole TPU, or the bare systolic array,
    generic or with the primitives of an FPGA ``family``."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"Unknown FPGA family {family!r}; choose one of {', '.join(FAMILIES)}")
    if top == "tpu":
        return TPU(cfg, family=family)
    if top == "array":
        return SystolicArray(cfg.n, cfg.n, fmt=cfg.data, acc=cfg.acc, family=family)
    raise ValueError(f"Unknown top level {top!r}; choose one of {', '.join(TOPS)}")


def to_verilog(cfg: TPUConfig, *, top="tpu", name="tinytpu", family=None):
    """Verilog source text of the top level for ``cfg`` (generic Verilog, or with the
    primitives of ``family``: ECP5 ``MULT18X18D`` blocks need Yosys's ``synth_ecp5``)."""
    return verilog.convert(top_component(cfg, top, family=family), name=name)
