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
    b_base: int      # B in blocked layout, K padded to whole tiles (ceil(N/n) blocks of
                     # ceil(K/n) * n rows)
    b_rows: int      # rows of one block of B
    passes: tuple


def compile_matmul(cfg, m, k, n_out):
    """Plan ``A @ B``: where A and B go in the unified buffer and the programs that compute
    the result into the accumulators, in as few passes as the accumulator memory allows.

    Every weight tile is a ``loadw`` of ``n`` rows of B's block followed by a ``matmul`` of
    all the pass's rows of A, so the next tile's load hides behind the current stream. A pass
    is emitted straight-line when it fits the instruction memory, else as two nested loops
    (output tiles, then input tiles; five instructions per tile).
    """
    for name, value in (("M", m), ("K", k), ("N", n_out)):
        if not isinstance(value, int) or value < 1:
            raise CompileError(f"matrix dimension {name} must be a positive integer, not {value}")
    n = cfg.n
    k_tiles = ceil_div(k, n)
    b_rows = k_tiles * n
    plan = MemoryPlan(cfg.ub_depth, cfg.acc_depth)
    a = plan.alloc("A", k_tiles * m)
    b = plan.alloc("B", ceil_div(n_out, n) * b_rows)
    out_tiles = ceil_div(n_out, n)
    rows_per_pass = min(m, cfg.acc_depth)
    passes = []
    for m0 in range(0, m, rows_per_pass):
        m1 = min(m, m0 + rows_per_pass)
        rows = m1 - m0
        tiles_per_pass = max(1, cfg.acc_depth // rows)
        for t0 in range(0, out_tiles, tiles_per_pass):
            t1 = min(out_tiles, t0 + tiles_per_pass)
            e = Emitter(cfg)
            if (t1 - t0) * k_tiles * 2 + 1 <= cfg.imem_depth:
                for t in range(t0, t1):
                    e.matmul_tiles(
                        weights=lambda kt, t=t: (b.base + t * b_rows + kt * n, n),
                        inputs=lambda kt: (a.base + kt * m + m0, 0, 1),
                        acc_base=(t - t0) * rows, m=rows, k_total=k_tiles, transpose=False,
                        comment=f"output columns {t * n}..{min(n_out, t * n + n) - 1}")
            else:
                _looped_pass(e, a.base + m0, b.base + t0 * b_rows, m, rows, k_tiles, t1 - t0)
            e.emit("halt")
            passes.append(GemmPass(e.program(), m0, m1, t0, t1))
    return GemmPlan(m, k, n_out, a.base, b.base, b_rows, tuple(passes))


def _looped_pass(e, a_base, b_base, m, rows, k_tiles, out_tiles):
    """Registers: r1 input-tile counter, r2 weight offset, r3 input offset, r4 output-tile
    counter, r5 accumulator offset."""
    n = e.n
    e.comment(f"{out_tiles} output tiles x {k_tiles} input tiles, looped")
    e.emit(f"setr r4, {out_tiles}")
    e.emit("setr r2, 0")
    e.emit("setr r5, 0")
    e.label("tile_out")
    e.emit("setr r3, 0")
    e.emit(f"loadw {e.addr('ub', b_base, 2)}, rows={n}")
    e.emit(f"matmul {e.addr('ub', a_base, 3)}, acc[r5], rows={rows}")
    e.emit(f"addi r2, r2, {n}")
    if k_tiles > 1:
        e.emit(f"setr r1, {k_tiles - 1}")
        e.label("tile_in")
        e.emit(f"addi r3, r3, {m}")
        e.emit(f"loadw {e.addr('ub', b_base, 2)}, rows={n}")
        e.emit(f"matmul {e.addr('ub', a_base, 3)}, acc[r5], rows={rows}, accumulate")
        e.emit(f"addi r2, r2, {n}")
        e.emit("djnz r1, tile_in")
    e.emit(f"addi r5, r5, {rows}")
    e.emit("djnz r4, tile_out")
