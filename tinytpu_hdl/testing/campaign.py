"""Differential fuzz campaigns: random programs (valid and faulting) and random data on the
gateware (Verilator or Amaranth simulation) and on the reference model, sharded by seed so
that shards run on any engine (:mod:`tinytpu_hdl.distributed`) with the same results.

Every mismatch is saved as a reproducible case (JSON: configuration, seed, program text,
what differed) that :func:`replay` runs again.
"""

import collections
import json
import time
from dataclasses import asdict
from pathlib import Path

from ..asm import disassemble
from ..config import TPUConfig
from ..reference import ReferenceTransport
from .differential import compare, run_case
from .program_gen import random_case

__all__ = ["FUZZ_CONFIG", "fuzz_shard", "run_campaign", "replay"]

#: The configuration campaigns run on by default: small memories, so that random addresses
#: hit every range check often.
FUZZ_CONFIG = dict(n=2, ub_depth=32, acc_depth=16, imem_depth=32)


def _device(backend, cfg):
    if backend == "verilator":
        from ..runtime.verilator import VerilatorTransport
        return VerilatorTransport(cfg, progress=lambda text: None)
    if backend == "pysim":
        from ..runtime.pysim import PysimTransport
        return PysimTransport(cfg, check_collisions=True)
    raise ValueError(f"backend must be 'verilator' or 'pysim', not {backend!r}")


def _close(device):
    close = getattr(device, "close", None)
    if close:
        close()


def fuzz_shard(task):
    """One shard: ``task`` is ``(backend, config dict, first seed, count, out folder or
    None)``. Returns ``{"outcomes": {...}, "mismatches": [seeds], "seconds": s}``."""
    backend, config, first, count, out = task
    cfg = TPUConfig(**config)
    device = ref = None
    outcomes = collections.Counter()
    mismatches = []
    start = time.perf_counter()
    for seed in range(first, first + count):
        if device is None:
            device, ref = _device(backend, cfg), ReferenceTransport(cfg)
            fresh_from = seed
        case = random_case(cfg, seed)
        (ro, re_), (do, de) = run_case(ref, case), run_case(device, case)
        outcomes["ok" if re_ is None else re_[0].name] += 1
        diff = compare(ro, do)
        if diff or re_ != de:
            mismatches.append(seed)
            if out:
                Path(out).mkdir(parents=True, exist_ok=True)
                record = {"backend": backend, "cfg": config, "seed": seed, "from": fresh_from,
                          "description": case.description, "differs": diff,
                          "errors": [str(re_), str(de)], "program": disassemble(case.words)}
                (Path(out) / f"mismatch_{backend}_{seed}.json").write_text(
                    json.dumps(record, indent=1))
            # A mismatch may leave the two sides in different states: start both afresh.
            _close(device)
            device = None
    if device is not None:
        _close(device)
    return {"outcomes": dict(outcomes), "mismatches": mismatches,
            "seconds": time.perf_counter() - start}


def run_campaign(cases, *, first=0, shards=1, backend="verilator", config=None, engine="local",
                 workers=None, address=None, out=None, on_shard=None):
    """``cases`` programs from seed ``first`` on, in ``shards`` shards; returns (outcome
    counts, mismatching seeds, the shards' total seconds)."""
    config = dict(FUZZ_CONFIG, **(config or {}))
    size = -(-cases // shards)
    tasks = [(backend, config, first + k * size, min(size, cases - k * size), out)
             for k in range(shards) if k * size < cases]
    if backend == "verilator" and engine == "local":
        # Build (or find) the library once here, not in every worker at the same time.
        from ..runtime.verilator import build_library
        build_library(TPUConfig(**config))
    from ..distributed import run_tasks
    results = run_tasks(fuzz_shard, tasks, engine=engine, workers=workers, address=address,
                        on_result=on_shard)
    outcomes = collections.Counter()
    mismatches = []
    for r in results:
        outcomes.update(r["outcomes"])
        mismatches += r["mismatches"]
    return dict(outcomes), sorted(mismatches), sum(r["seconds"] for r in results)


def replay(path):
    """Run a saved mismatch again (with the cases before it since both sides started: state
    the host cannot write, such as the array's weights, carries over); True if the two sides
    agree now."""
    record = json.loads(Path(path).read_text())
    first = record.get("from", record["seed"])
    result = fuzz_shard((record["backend"], record["cfg"], first, record["seed"] - first + 1,
                         None))
    return record["seed"] not in result["mismatches"]


def config_of(cfg):
    """The integer, flag and string fields of a :class:`TPUConfig` (what a shard task
    carries; the number formats are the defaults)."""
    return {k: v for k, v in asdict(cfg).items() if isinstance(v, (int, bool, str))}
