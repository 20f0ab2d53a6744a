"""Backend: the TPU's exported Verilog under Icarus Verilog, as a user's simulator runs it.

The Verilog of ``tinytpu verilog`` and a plain Verilog-2005 testbench
(``icarus_tb.v``) are compiled with ``iverilog -g<mode>`` (``2005``, ``2005-sv``,
``2012``: Verilog and SystemVerilog), then ``vvp`` runs them as a separate process that
exchanges host packets with Python through two named pipes. Slow (an event-driven
simulator), but it checks the Verilog itself in the language modes users simulate it in
(Debian: ``apt install iverilog``).
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..export import to_verilog
from ..host_protocol import Space, item_words

__all__ = ["IcarusTransport", "IcarusUnavailable", "icarus_missing", "MODES"]

TESTBENCH = Path(__file__).with_name("icarus_tb.v")

#: Language modes of ``iverilog -g``.
MODES = ("2005", "2005-sv", "2009", "2012")


class IcarusUnavailable(RuntimeError):
    """Icarus Verilog is not installed."""


def icarus_missing():
    """What is missing to run the Icarus backend (None if nothing)."""
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            return f"Icarus Verilog ({tool}; Debian: apt install iverilog)"
    return None


class IcarusTransport:
    """A transport (see :mod:`.driver`) to the TPU's Verilog running under ``vvp``.
    ``mode`` is the language mode of ``iverilog -g``; ``verilog`` the Verilog text (by
    default ``to_verilog(cfg)``)."""

    def __init__(self, cfg, *, mode="2012", verilog=None):
        missing = icarus_missing()
        if missing:
            raise IcarusUnavailable(f"the icarus backend needs {missing}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.cfg = cfg
        self.mode = mode
        self._dir = Path(tempfile.mkdtemp(prefix="tinytpu_icarus_"))
        (self._dir / "tinytpu.v").write_text(verilog or to_verilog(cfg, name="tinytpu"))
        words = {s: item_words(cfg, s) for s in Space}
        params = [f"-Ptinytpu_tb.UB_WORDS={words[Space.UB]}",
                  f"-Ptinytpu_tb.ACC_WORDS={words[Space.ACC]}",
                  f"-Ptinytpu_tb.IMEM_WORDS={words[Space.IMEM]}",
                  f"-Ptinytpu_tb.CSR_WORDS={words[Space.CSR]}"]
        build = subprocess.run(["iverilog", f"-g{mode}", "-s", "tinytpu_tb", *params,
                                "-o", "sim.vvp", str(TESTBENCH), "tinytpu.v"],
                               cwd=self._dir, capture_output=True, text=True)
        if build.returncode != 0:
            raise IcarusUnavailable("iverilog failed:\n" + (build.stdout + build.stderr)[-4000:])
        to_sim, from_sim = self._dir / "to_sim", self._dir / "from_sim"
        os.mkfifo(to_sim)
        os.mkfifo(from_sim)
        self._proc = subprocess.Popen(["vvp", "-n", "sim.vvp", f"+IN={to_sim}",
                                       f"+OUT={from_sim}"], cwd=self._dir,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
        self._out = open(to_sim, "w")
        self._in = open(from_sim, "r")

    def exchange(self, words):
        self._out.write("X " + " ".join(f"{int(w):x}" for w in [len(words), *words]) + "\n")
        self._out.flush()
        try:
            line = self._in.readline()
        except KeyboardInterrupt:
            self._in.readline()              # the answer under way: stay in step
            raise
        if not line.startswith("R "):
            raise RuntimeError(f"the Icarus simulation stopped: {line!r} "
                               f"{self._proc.stdout.read() if self._proc.poll() is not None else ''}")
        fields = [int(f, 16) for f in line.split()[1:]]
        return fields[1:1 + fields[0]]

    def idle(self, cycles):
        self._out.write(f"I {int(cycles):x}\n")
        self._out.flush()

    def close(self):
        if self._proc is None:
            return
        try:
            self._out.write("Q\n")
            self._out.close()
            self._in.close()
            self._proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
