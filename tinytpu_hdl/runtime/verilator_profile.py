"""The workload of a profile-guided Verilator build (``build_library(...,
profile_guided=True)``): the instrumented library runs it in a process of its own, and the
compiler optimizes the second build for the branches and calls it counted.

It exercises what a simulation spends its cycles on: blocked matmuls (weight loads,
streaming, accumulation), an MLP's forward pass and training steps (vector unit, gradient
descent, transposed writes), host transfers and polling, all at sizes scaled to the array
(``python -m tinytpu_hdl.runtime.verilator_profile LIBRARY CONFIG_PICKLE``).
"""

import pickle
import sys

import numpy as np

__all__ = ["run_profile_workload"]


def run_profile_workload(cfg, library):
    """Run the workload on the Verilator library at ``library`` built for ``cfg``; returns
    the simulated clock cycles. Training runs at the largest of the batches 2N, N and 1
    that fits the configuration's memories (none may: then matmuls alone)."""
    from ..compiler.memory import CompileError
    from ..model import MLP
    from .accelerator import Accelerator
    from .verilator import VerilatorTransport

    n = cfg.n
    rng = np.random.default_rng(0)
    transport = VerilatorTransport(cfg, library=library, progress=lambda text: None)
    with Accelerator(cfg, transport=transport) as acc:
        a, b = rng.uniform(-1, 1, (4 * n, 4 * n)), rng.uniform(-1, 1, (4 * n, 4 * n))
        acc.matmul(a, b)
        model = MLP.random([2 * n, 2 * n, n], activations=["leaky_relu", "none"], leak=0.25,
                           seed=1)
        x = rng.uniform(-1, 1, (8 * n, 2 * n))
        y = rng.uniform(-0.5, 0.5, (8 * n, n))
        for batch in sorted({2 * n, n, 1}, reverse=True):
            try:
                acc.train(model, x, y, lr=0.1, epochs=2, batch_size=batch, record_loss=False)
            except CompileError:
                continue
            acc.forward(model, x)
            break
        return transport.cycle


def main(argv=None):
    library, config = (argv or sys.argv[1:])
    with open(config, "rb") as f:
        cfg = pickle.load(f)
    cycles = run_profile_workload(cfg, library)
    print(f"profile workload: {cycles:,} cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
