#!/usr/bin/env python3
"""Differential fuzzing: ``tinytpu fuzz`` (see ``tinytpu fuzz --help``). Random programs
(valid and faulting) and random data on the gateware (Verilator or Amaranth simulation) and
on the reference model; everything the host can see must agree (memories, status, counters,
registers, error code and address). Sharded by seed over a local process pool or Ray.

    python scripts/fuzz.py --cases 100000 --backend verilator
    python scripts/fuzz.py --cases 1000000 --engine ray --address auto
    python scripts/fuzz.py --replay fuzz_mismatches/mismatch_verilator_123.json
"""

import sys

from tinytpu_hdl.cli import main

if __name__ == "__main__":
    sys.exit(main(["fuzz", *sys.argv[1:]]))
