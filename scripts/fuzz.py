#!/usr/bin/env python3
"""Differential fuzzing: random programs (valid and faulting) and random data on the
gateware (Verilator or Amaranth simulation) and on the reference model; everything the host
can see must agree (memories, status, counters, registers, error code and address).

    python scripts/fuzz.py --cases 100000 --seed 0 --backend verilator
    python scripts/fuzz.py --cases 500 --backend pysim --n 3

Each mismatch is saved as a reproducible case (``--out``, JSON: configuration, seed,
program text, what differed); ``--replay FILE`` runs one again.
"""

import argparse
import collections
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tinytpu_hdl.asm import disassemble
from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.reference import ReferenceTransport
from tinytpu_hdl.testing.differential import compare, run_case
from tinytpu_hdl.testing.program_gen import random_case


def transport(backend, cfg):
    if backend == "verilator":
        from tinytpu_hdl.runtime.verilator import VerilatorTransport
        return VerilatorTransport(cfg)
    from tinytpu_hdl.runtime.pysim import PysimTransport
    return PysimTransport(cfg, check_collisions=True)


def campaign(backend, cfg, seeds, out=None, progress=None):
    """Run ``seeds``; returns (outcome counts, mismatching seeds)."""
    device, ref = transport(backend, cfg), ReferenceTransport(cfg)
    outcomes = collections.Counter()
    mismatches = []
    for k, seed in enumerate(seeds):
        case = random_case(cfg, seed)
        (ro, re_), (do, de) = run_case(ref, case), run_case(device, case)
        outcomes["ok" if re_ is None else re_[0].name] += 1
        diff = compare(ro, do)
        if diff or re_ != de:
            mismatches.append(seed)
            record = {"backend": backend, "cfg": {k: v for k, v in asdict(cfg).items()
                                                  if isinstance(v, (int, bool))},
                      "seed": seed, "description": case.description, "differs": diff,
                      "errors": [str(re_), str(de)], "program": disassemble(case.words)}
            print(f"MISMATCH seed {seed} ({case.description}): differs in {diff}, errors "
                  f"{re_} vs {de}", flush=True)
            if out:
                Path(out).mkdir(parents=True, exist_ok=True)
                (Path(out) / f"mismatch_{backend}_{seed}.json").write_text(
                    json.dumps(record, indent=1))
            # A mismatch may leave the two devices in different states: start both afresh.
            device, ref = transport(backend, cfg), ReferenceTransport(cfg)
        if progress and (k + 1) % progress == 0:
            print(f"  {k + 1} cases, {len(mismatches)} mismatches", flush=True)
    return outcomes, mismatches


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="first case seed")
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--backend", choices=("verilator", "pysim"), default="verilator")
    parser.add_argument("--out", default="fuzz_mismatches",
                        help="folder for mismatching cases (default fuzz_mismatches)")
    parser.add_argument("--replay", help="a saved mismatch to run again")
    parser.add_argument("--progress", type=int, default=0, help="report every this many cases")
    args = parser.parse_args()
    if args.replay:
        record = json.loads(Path(args.replay).read_text())
        cfg = TPUConfig(**record["cfg"])
        outcomes, mismatches = campaign(record["backend"], cfg, [record["seed"]])
        print("still mismatches" if mismatches else "agrees now")
        return 1 if mismatches else 0
    cfg = TPUConfig(n=args.n, ub_depth=32, acc_depth=16, imem_depth=32)
    start = time.perf_counter()
    seeds = range(args.seed, args.seed + args.cases)
    outcomes, mismatches = campaign(args.backend, cfg, seeds, args.out, args.progress)
    elapsed = time.perf_counter() - start
    print(f"{args.cases} cases on {args.backend} (seeds {args.seed}..{args.seed + args.cases - 1}, "
          f"N={args.n}) in {elapsed:.1f} s ({args.cases / elapsed * 60:,.0f} per minute), "
          f"{len(mismatches)} mismatches; outcomes: "
          + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
