#!/usr/bin/env python3
"""Differential fuzzing: random programs (valid and invalid) and random data on the gateware
(Amaranth simulation) and on the reference model; everything the host can see must agree.

    python scripts/fuzz.py --cases 500 --seed 0 --n 2
"""

import argparse
import collections
import sys
import time

from tinytpu_hdl.asm import disassemble
from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.reference import ReferenceTransport
from tinytpu_hdl.runtime.pysim import PysimTransport
from tinytpu_hdl.testing.differential import compare, run_case
from tinytpu_hdl.testing.program_gen import random_case


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="first case seed")
    parser.add_argument("--n", type=int, default=2)
    args = parser.parse_args()
    cfg = TPUConfig(n=args.n, ub_depth=32, acc_depth=16, imem_depth=32)
    sim, ref = PysimTransport(cfg), ReferenceTransport(cfg)
    outcomes = collections.Counter()
    failures = 0
    start = time.perf_counter()
    for seed in range(args.seed, args.seed + args.cases):
        case = random_case(cfg, seed)
        (ro, re_), (so, se) = run_case(ref, case), run_case(sim, case)
        outcomes["ok" if re_ is None else re_[0].name] += 1
        diff = compare(ro, so)
        if diff or re_ != se:
            failures += 1
            print(f"MISMATCH seed {seed} ({case.description}): differs in {diff}, "
                  f"errors {re_} vs {se}")
            print(disassemble(case.words))
    elapsed = time.perf_counter() - start
    print(f"{args.cases} cases (seeds {args.seed}..{args.seed + args.cases - 1}, N={args.n}) in "
          f"{elapsed:.1f} s, {failures} mismatches; outcomes: "
          + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
