"""Lowering of a matrix product ``A (M, K) @ B (K, N)`` of any size to TPU programs."""

from dataclasses import dataclass

from .emit import Emitter
from .layout import ceil_div
from .memory import CompileError, MemoryPlan

__all__ = ["GemmPass", "GemmPlan", "compile_matmul"]


@dataclass(frozen=True)
class GemmPass:
    """One program run: rows ``m0:m1`` of the result, output tiles ``t0:t1``. The result of
    output tile ``t`` is in accumulator rows ``(t - t0) * (m1 - m0)`` onwards."""

    program: object
    m0: int
    m1: int
    t0: int
    t1: int


@dataclass(frozen=True)
class GemmPlan:
    m: int
    k: int
    n_out: int
    a_base: int      # A in blocked layout (ceil(K/n) blocks of M rows)
    b_base: int      # B in blocked layout (ceil(N/n) blocks of K rows)
    passes: tuple


def compile_matmul(cfg, m, k, n_out):
    """Plan ``A @ B``: where A and B go in the unified buffer and the programs that compute
    the result into the accumulators, as few passes as the accumulator memory allows.

    Every weight tile is a ``loadw`` of up to ``n`` rows of B's block followed by a ``matmul``
    of all the pass's rows of A, so the next tile's load hides behind the current stream.
    """
    for name, value in (("M", m), ("K", k), ("N", n_out)):
        if not isinstance(value, int) or value < 1:
            raise CompileError(f"matrix dimension {name} must be a positive integer, not {value}")
    n = cfg.n
    plan = MemoryPlan(cfg.ub_depth, cfg.acc_depth)
    a = plan.alloc("A", ceil_div(k, n) * m)
    b = plan.alloc("B", ceil_div(n_out, n) * k)
    out_tiles = ceil_div(n_out, n)
    rows_per_pass = min(m, cfg.acc_depth)
    if rows_per_pass < 1:
        raise CompileError("the accumulator memory has no rows")
    passes = []
    for m0 in range(0, m, rows_per_pass):
        m1 = min(m, m0 + rows_per_pass)
        tiles_per_pass = max(1, cfg.acc_depth // (m1 - m0))
        for t0 in range(0, out_tiles, tiles_per_pass):
            t1 = min(out_tiles, t0 + tiles_per_pass)
            e = Emitter(cfg)
            for t in range(t0, t1):
                e.matmul_tiles(
                    weights=lambda kt, t=t: (b.base + t * k + kt * n, min(n, k - kt * n)),
                    inputs=lambda kt: (a.base + kt * m + m0, 0, 1),
                    acc_base=(t - t0) * (m1 - m0), m=m1 - m0, k_total=ceil_div(k, n),
                    transpose=False, comment=f"output columns {t * n}..{min(n_out, t * n + n) - 1}")
            e.emit("halt")
            passes.append(GemmPass(e.program(), m0, m1, t0, t1))
    return GemmPlan(m, k, n_out, a.base, b.base, tuple(passes))
