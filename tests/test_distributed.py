"""Sweeps and fuzz campaigns as independent tasks: the same results on the local process
pool, in one process and on Ray's local cluster (when Ray is installed), numbers checked
against independent computations, results cached, mismatches saved and replayed."""

import json

import numpy as np
import pytest

from tinytpu_hdl import MLP, Accelerator
from tinytpu_hdl.cli import main
from tinytpu_hdl.distributed import ray_missing, run_tasks
from tinytpu_hdl.runtime.verilator import verilator_missing
from tinytpu_hdl.sweep import (TIMING_COLUMNS, DesignPoint, evaluate, grid, run_sweep,
                               to_markdown)
from tinytpu_hdl.testing import campaign
from tinytpu_hdl.testing.campaign import FUZZ_CONFIG, fuzz_shard, replay, run_campaign

GEMM = 24
POINTS = grid(n=[2, 3], ub_depth=[512, 4096])
BACKEND = "pysim" if verilator_missing() else "verilator"
CASES = 8 if BACKEND == "verilator" else 4


def _square(x):
    return x * x


def test_run_tasks_keeps_order_and_checks_the_engine():
    assert run_tasks(_square, range(7), workers=2) == [x * x for x in range(7)]
    with pytest.raises(ValueError, match="engine must be one of local, ray, not 'spark'"):
        run_tasks(_square, [1], engine="spark")


def _sweep(**options):
    return run_sweep(POINTS, ["gemm", "training"], gemm_size=GEMM, cache=False, **options)


def _deterministic(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


@pytest.fixture(scope="module")
def local_sweep():
    return _sweep(workers=2)


def test_sweep_measures_every_point(local_sweep):
    """Cycles as the accelerator reports them, utilization recomputed from the MAC count,
    and a point whose training state does not fit reports why."""
    assert [(r["n"], r["ub_depth"]) for r in local_sweep] == [(2, 512), (2, 4096), (3, 512),
                                                              (3, 4096)]
    for point, row in zip(POINTS, local_sweep):
        acc = Accelerator(point.cfg())
        a = np.arange(GEMM * GEMM).reshape(GEMM, GEMM) % 97 - 48
        assert np.array_equal(acc.matmul_raw(a, a.T), a @ a.T)
        assert row["gemm_cycles"] == acc.stats.cycles
        assert row["gemm_utilization"] == round(GEMM ** 3 / (acc.stats.cycles * point.n ** 2), 4)
    # 64-32-10 with batch 32 needs 4,631 rows at N = 2 and more than 512 at any N.
    for row in local_sweep:
        fits = row["ub_depth"] == 4096 and row["n"] == 3
        assert (row["training_cycles"] is not None) == fits, row
        assert fits or "needs" in row["error"]
    row = local_sweep[3]
    acc = Accelerator(POINTS[3].cfg())
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, (32, 64)), rng.uniform(0, 1, (32, 10))
    acc.train(MLP.random([64, 32, 10], seed=0, activations=["leaky_relu", "none"], leak=0.1),
              x, y, lr=2 ** -6, epochs=1, batch_size=32, record_loss=False)
    assert row["training_cycles"] == acc.stats.cycles
    macs = 32 * (2 * (64 * 32 + 32 * 10) + 32 * 10)
    assert row["training_utilization"] == round(macs / (acc.stats.cycles * 9), 4)
    table = to_markdown(local_sweep)
    assert table.count("\n") == 2 + len(POINTS) and "gemm_utilization" in table


def test_sweep_is_the_same_in_one_process(local_sweep):
    assert _deterministic(_sweep(workers=1)) == _deterministic(local_sweep)


def test_sweep_results_are_cached(tmp_path):
    point = DesignPoint(n=2)
    task = (vars(point) | {}, "gemm", {"gemm_size": 8}, str(tmp_path), None)
    first = evaluate(task)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == first
    # A cached result is what is returned (not measured again).
    files[0].write_text(json.dumps(dict(first, gemm_cycles=-1)))
    assert evaluate(task)["gemm_cycles"] == -1
    # Another workload size is another key.
    assert evaluate(task[:2] + ({"gemm_size": 9},) + task[3:])["gemm_cycles"] > 0


def test_sweep_rejects_bad_points():
    with pytest.raises(ValueError, match="device must be one of ecp5-85f, ice40-up5k, not 'xc7'"):
        DesignPoint(n=2, device="xc7")
    with pytest.raises(ValueError, match="n"):
        DesignPoint(n=0)
    with pytest.raises(ValueError, match="metric must be one of"):
        run_sweep([DesignPoint(n=2)], ["area"])


def test_sweep_over_where_the_units_multiply(tmp_path):
    """``--unit-multipliers blocks logic``: one point each; the cycles are the same (the
    logic form has the blocks' latency), and a bad value names what is allowed."""
    assert main(["sweep", "--n", "2", "--unit-multipliers", "blocks", "logic", "--metrics",
                 "gemm", "--gemm-size", "16", "--no-cache", "--workers", "1",
                 "--out", str(tmp_path)]) == 0
    header, *rows = [line.split(",") for line in
                     (tmp_path / "sweep.csv").read_text().splitlines()]
    column = header.index("unit_multipliers")
    cycles = header.index("gemm_cycles")
    assert [r[column] for r in rows] == ["blocks", "logic"]
    assert rows[0][cycles] == rows[1][cycles] != ""
    assert DesignPoint(n=2, unit_multipliers="logic").cfg().unit_multipliers == "logic"
    with pytest.raises(ValueError, match="unit_multipliers must be 'blocks', 'logic' or 'shared', not 'dsp'"):
        DesignPoint(n=2, unit_multipliers="dsp")


def test_sweep_command_writes_its_tables(tmp_path, capsys):
    assert main(["sweep", "--n", "2", "--metrics", "gemm", "--gemm-size", "16", "--no-cache",
                 "--workers", "1", "--out", str(tmp_path)]) == 0
    csv = (tmp_path / "sweep.csv").read_text().splitlines()
    assert csv[0].startswith("device,n,format,ub_depth") and len(csv) == 2
    assert (tmp_path / "sweep.md").exists() and (tmp_path / "sweep.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["sweep", "--n", "2", "--format", "q8.8"])
    assert "--format takes WIDTH.FRAC" in capsys.readouterr().err


@pytest.fixture(scope="module")
def local_campaign():
    return run_campaign(CASES, shards=2, backend=BACKEND, workers=2)


def test_campaign_shards_agree_with_one_shard(local_campaign):
    outcomes, mismatches, _ = local_campaign
    single = fuzz_shard((BACKEND, FUZZ_CONFIG, 0, CASES, None))
    assert mismatches == [] and single["mismatches"] == []
    assert outcomes == single["outcomes"] and sum(outcomes.values()) == CASES


def test_campaign_saves_and_replays_mismatches(tmp_path, monkeypatch):
    """A difference (here made up by the comparison) is saved as a case that replays."""
    monkeypatch.setattr(campaign, "compare", lambda a, b: ["ub"])
    result = fuzz_shard(("pysim", FUZZ_CONFIG, 5, 1, str(tmp_path)))
    assert result["mismatches"] == [5]
    saved = tmp_path / "mismatch_pysim_5.json"
    record = json.loads(saved.read_text())
    assert record["seed"] == 5 and record["differs"] == ["ub"] and "halt" in record["program"]
    assert replay(saved) is False
    monkeypatch.undo()
    assert replay(saved) is True


@pytest.mark.skipif(ray_missing() is not None, reason=str(ray_missing()))
def test_ray_gives_the_same_results(local_sweep, local_campaign):
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert _deterministic(_sweep(engine="ray")) == _deterministic(local_sweep)
        ray_campaign = run_campaign(CASES, shards=2, backend=BACKEND, engine="ray")
        assert ray_campaign[:2] == local_campaign[:2]
    finally:
        ray.shutdown()


@pytest.mark.extended
def test_sweep_synthesizes_a_point(tmp_path):
    """Synthesis resources of a small point, on the local pool and (if installed) Ray."""
    point = DesignPoint(n=1, ub_depth=256, acc_depth=64, imem_depth=64)
    row, = run_sweep([point], ["resources"], cache=tmp_path)
    assert row["LUT4"] > 1000 and row["DSP"] >= 1 and row["BRAM"] >= 1 and not row["error"]
    # The cached result comes back (the same numbers, no second synthesis).
    again, = run_sweep([point], ["resources"], cache=tmp_path)
    assert again == row
    if ray_missing() is None:
        fresh, = run_sweep([point], ["resources"], cache=False, engine="ray", workers=1)
        assert _deterministic([fresh]) == _deterministic([row])
