"""Lowering of a matrix product ``C = A (M, K) @ B (K, N)`` of any size.

The product is blocked over the on-chip memories and run as a sequence of program runs,
the host moving the operands' blocks in between:

* a *run* computes ``rows`` rows of ``C`` for ``tiles`` output tiles (``n`` columns
  each) over ``k_blocks`` blocks of ``n`` of the ``K`` dimension: the unified buffer holds
  those blocks of ``A`` (``k_blocks * rows`` rows) and of ``B`` (``tiles * k_blocks * n``
  rows), the accumulators ``rows * tiles`` rows of ``C``;
* the runs over ``K`` accumulate into the same accumulator rows (the accumulators keep
  their contents between runs); the first overwrites them;
* the host reads the rows of ``C`` after the last run over ``K``.

The blocking is chosen to minimise an estimate of device cycles (streaming plus a fixed
cost per run) plus host words moved (as one word per cycle), within the buffer, the
accumulators and the instruction memory. A block already in the buffer is not written
again: with all of ``K`` in one run, ``A``'s rows are written once for all output tiles.

An *epilogue* (``bias`` and an activation through the vector unit) turns the product into
one layer of an MLP whose outputs land in the unified buffer in the data format; the
layer-by-layer inference of a network too large for the chip uses it.

Programs (a handful of variants, resident together in the instruction memory; the host
sets ``r15`` = output tiles of the run and ``r14`` = ``K`` blocks of the run)::

    addi  r1, r15, 0                 # tiles
    setr  r2, 0                      # B offset of the tile
    setr  r3, 0                      # accumulator offset of the tile
    tile:
    loadw ub[B + r2], rows=n         # K blocks: the first overwrites (first run only), the
    matmul ub[A], acc[r3], rows=R    # others accumulate; a loop when there are many
    ...
    addi  r2, r2, k_blocks * n
    addi  r3, r3, R
    djnz  r1, tile
    [vpu acc[t * R], ub[OUT + t * R], rows=R, bias=ub[BIAS + t], path=...]   (epilogue)
    halt
"""

from dataclasses import dataclass

from ..host_protocol import Space, item_words
from ..isa import ConfigReg
from .emit import Addr, Emitter
from .layout import ceil_div
from .memory import CompileError, MemoryPlan
from .plan import Blocked, Plan, ProgramImage, Read, Run, Write

__all__ = ["Blocking", "Epilogue", "blockings", "choose_blocking", "compile_matmul", "gemm_plan",
           "run_overhead"]

#: Index registers the host sets before each run of a product program.
REG_TILES = 15
REG_KBLOCKS = 14


def run_overhead(cfg):
    """Cycles a program run spends besides streaming, for planning: the first fetch and
    decode, the first weight load, the array's fill and drain and the halt."""
    return 3 * cfg.n + 24


@dataclass(frozen=True)
class Epilogue:
    """Bias and activation on the way out: ``C = act(A @ B + bias)`` in the data format.
    ``bias`` names a ``(1, N)`` tensor; ``path`` the vector-unit stages; ``leak`` the Leaky
    ReLU factor."""

    bias: str
    path: tuple
    leak: float = 0.0


@dataclass(frozen=True)
class Blocking:
    rows: int        # rows of A (and C) per run
    tiles: int       # output tiles per run
    k_blocks: int    # blocks of n of K per run

    def __str__(self):
        return f"{self.rows} rows x {self.tiles} output tiles x {self.k_blocks} K blocks per run"


def _ub_rows(cfg, b, epilogue):
    n = cfg.n
    rows = b.k_blocks * b.rows + b.tiles * b.k_blocks * n
    if epilogue is not None:
        rows += b.tiles * b.rows + b.tiles
    return rows


def _cost(cfg, m, k_tiles, out_tiles, b, epilogue):
    """Estimated device cycles plus host words (one word per cycle) of a blocking."""
    n = cfg.n
    runs_m = ceil_div(m, b.rows)
    runs_t = ceil_div(out_tiles, b.tiles)
    runs_k = ceil_div(k_tiles, b.k_blocks)
    runs = runs_m * runs_t * runs_k
    stream = m * k_tiles * out_tiles
    # A K-block iteration of a loop takes 12 control cycles, hidden behind 12 or more rows.
    control = max(0, 12 - b.rows) * k_tiles * out_tiles * runs_m
    cycles = stream + control + runs * run_overhead(cfg)
    if epilogue is not None:
        cycles += runs_m * runs_t * (b.tiles * (b.rows + 18))
    ub_words = item_words(cfg, Space.UB)
    a_writes = m * k_tiles * (1 if runs_k == 1 else runs_t)
    b_writes = out_tiles * k_tiles * n * (1 if runs_k == 1 and runs_t == 1 else runs_m)
    reads = m * out_tiles * (ub_words if epilogue else item_words(cfg, Space.ACC))
    return cycles + (a_writes + b_writes) * ub_words + reads


def _splits(total, limit):
    """Block sizes worth trying for a dimension of ``total``: even splits up to ``limit``."""
    sizes = {ceil_div(total, j) for j in range(1, min(total, 64) + 1)}
    sizes |= {1 << i for i in range(17)}
    return sorted(s for s in sizes if 1 <= s <= min(total, limit))


def blockings(cfg, m, k, n_out, *, epilogue=None):
    """Every :class:`Blocking` of ``(m, k) @ (k, n_out)`` that fits the memories, cheapest
    first."""
    n = cfg.n
    k_tiles, out_tiles = ceil_div(k, n), ceil_div(n_out, n)
    found = []
    for rows in _splits(m, cfg.acc_depth):
        for tiles in _splits(out_tiles, cfg.acc_depth // rows):
            per_block = rows + tiles * n
            spare = cfg.ub_depth - (tiles * rows + tiles if epilogue else 0)
            # B's tiles and the bias rows (first in the buffer) below the loadable rows.
            loadable = cfg.ub_loadable_rows - (tiles if epilogue else 0)
            k_blocks = min(k_tiles, spare // per_block, loadable // (tiles * n)) \
                if spare > 0 and loadable > 0 else 0
            if k_blocks < 1:
                continue
            b = Blocking(rows, tiles, k_blocks)
            found.append((_cost(cfg, m, k_tiles, out_tiles, b, epilogue), b))
    if not found:
        need = 1 + n + (2 if epilogue else 0)
        loaded = n + (1 if epilogue else 0)
        copy = (f" and ub_copy_depth={cfg.ub_loadable_rows} (the weight tile"
                f"{' and the bias row' if epilogue else ''} must lie below it: {loaded} rows)"
                if cfg.ub_copy_depth is not None else "")
        raise CompileError(
            f"a matrix product needs at least {need} unified-buffer rows (one row of A, one "
            f"weight tile{', one output row and a bias row' if epilogue else ''}); this "
            f"TPUConfig has ub_depth={cfg.ub_depth}{copy}")
    found.sort(key=lambda cb: (cb[0], -cb[1].rows))
    return [b for _, b in found]


def choose_blocking(cfg, m, k, n_out, *, epilogue=None):
    """The cheapest :class:`Blocking` of ``(m, k) @ (k, n_out)`` that fits the memories
    (the instruction memory aside: :func:`gemm_plan` takes the next one if its programs do
    not fit)."""
    return blockings(cfg, m, k, n_out, epilogue=epilogue)[0]


def _program(cfg, *, rows, first_blocks, b_tile_rows, a_base, b_base, epilogue_at,
             unroll, leak_path):
    """One program variant: ``first_blocks`` K blocks from an immediate (the first run over
    K, which overwrites the accumulators), or ``None``: ``r14`` blocks, all accumulating.
    ``epilogue_at``: ``(out_base, bias_base)`` of the vector passes, or ``None``."""
    n = cfg.n
    e = Emitter(cfg, unroll=unroll, reserved=(REG_TILES, REG_KBLOCKS))
    r_tiles, r_b, r_acc = e.alloc(), e.alloc(), e.alloc()
    e.emit(f"addi r{r_tiles}, r{REG_TILES}, 0", "output tiles of this run (host)")
    e.emit(f"setr r{r_b}, 0")
    e.emit(f"setr r{r_acc}, 0")
    head = e.new_label("tile")
    e.label(head)
    w = Addr("ub", b_base, r_b)
    x = Addr("ub", a_base, 0)
    acc = Addr("acc", 0, r_acc)
    if first_blocks is not None:
        e.reduce(first_blocks, w, n, x, rows, acc, rows)
    else:
        r_k, r_w, r_x = e.alloc(), e.alloc(), e.alloc()
        e.emit(f"addi r{r_k}, r{REG_KBLOCKS}, 0", "K blocks of this run (host)")
        e.emit(f"addi r{r_w}, r{r_b}, 0")
        e.emit(f"setr r{r_x}, 0")
        inner = e.new_label("k")
        e.label(inner)
        e.loadw(Addr("ub", b_base, r_w), n)
        e.matmul(Addr("ub", a_base, r_x), acc, rows, accumulate=True)
        e.emit(f"addi r{r_w}, r{r_w}, {n}")
        e.emit(f"addi r{r_x}, r{r_x}, {rows}")
        e.emit(f"djnz r{r_k}, {inner}")
        e.release(r_k, r_w, r_x)
    e.emit(f"addi r{r_b}, r{r_b}, {b_tile_rows}")
    e.emit(f"addi r{r_acc}, r{r_acc}, {rows}")
    e.emit(f"djnz r{r_tiles}, {head}")
    if epilogue_at is not None:
        out_base, bias_base = epilogue_at
        path, leak = leak_path
        if "act" in path:
            e.config(ConfigReg.LEAK, leak)
        r_t, r_o, r_bias = e.alloc(), e.alloc(), e.alloc()
        e.emit(f"addi r{r_t}, r{REG_TILES}, 0")
        e.emit(f"setr r{r_o}, 0")
        e.emit(f"setr r{r_bias}, 0")
        vhead = e.new_label("out")
        e.label(vhead)
        e.vpu(Addr("acc", 0, r_o), Addr("ub", out_base, r_o), rows,
              bias=Addr("ub", bias_base, r_bias), path=path)
        e.emit(f"addi r{r_o}, r{r_o}, {rows}")
        e.emit(f"addi r{r_bias}, r{r_bias}, 1")
        e.emit(f"djnz r{r_t}, {vhead}")
    e.emit("halt")
    return e


def gemm_plan(cfg, m, k, n_out, *, a="A", b="B", c="C", epilogue=None, blocking=None,
              kind="matmul"):
    """The :class:`~.plan.Plan` of ``c = a @ b`` (tensors of raw integers: ``a`` (m, k)
    and ``b`` (k, n_out) in the data format; ``c`` (m, n_out) receives accumulator-format
    values, or data-format values with an ``epilogue``). The cheapest blocking whose
    programs fit the instruction memory (a blocking with an uneven last block of rows or
    several runs over ``K`` needs more program variants)."""
    for name, value in (("M", m), ("K", k), ("N", n_out)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CompileError(f"matrix dimension {name} must be a positive integer, "
                               f"not {value!r}")
    if blocking is not None:
        return _gemm_plan(cfg, m, k, n_out, a, b, c, epilogue, blocking, kind)
    error = None
    for candidate in blockings(cfg, m, k, n_out, epilogue=epilogue)[:64]:
        try:
            return _gemm_plan(cfg, m, k, n_out, a, b, c, epilogue, candidate, kind)
        except _ProgramsTooLong as exc:
            error = error or exc
    raise CompileError(str(error))


class _ProgramsTooLong(CompileError):
    pass


def _gemm_plan(cfg, m, k, n_out, a, b, c, epilogue, bl, kind):
    n = cfg.n
    k_tiles, out_tiles = ceil_div(k, n), ceil_div(n_out, n)
    mem = MemoryPlan.of(cfg)
    # The weight tiles and bias rows first: the loader and the vector unit read them
    # (below cfg.ub_loadable_rows); A streams into the array.
    b_tile_rows = bl.k_blocks * n
    b_reg = mem.alloc("B", bl.tiles * b_tile_rows, loaded=True)
    out_reg = bias_reg = None
    if epilogue is not None:
        bias_reg = mem.alloc("bias", bl.tiles, loaded=True)
    a_reg = mem.alloc("A", bl.k_blocks * bl.rows)
    if epilogue is not None:
        out_reg = mem.alloc("out", bl.tiles * bl.rows)
    mem.alloc_acc("C", bl.tiles * bl.rows)

    variants = {}          # (rows, first_blocks or None, epilogue) -> name

    def variant(rows, first_blocks, last):
        key = (rows, first_blocks, bool(last and epilogue))
        if key not in variants:
            variants[key] = f"{kind}_{len(variants)}"
        return variants[key]

    steps = []
    resident = {}
    n_runs_k = ceil_div(k_tiles, bl.k_blocks)
    for m0 in range(0, m, bl.rows):
        m1 = min(m, m0 + bl.rows)
        rows = m1 - m0
        for t0 in range(0, out_tiles, bl.tiles):
            t1 = min(out_tiles, t0 + bl.tiles)
            c0, c1 = t0 * n, min(n_out, t1 * n)
            for kr in range(n_runs_k):
                kb0 = kr * bl.k_blocks
                kb1 = min(k_tiles, kb0 + bl.k_blocks)
                k0, k1 = kb0 * n, min(k, kb1 * n)
                a_view = Blocked(a, m0, m1, k0, k1)
                if resident.get("A") != a_view:
                    steps.append(Write(Space.UB, a_reg.base, (kb1 - kb0) * rows, a_view))
                    resident["A"] = a_view
                b_view = Blocked(b, k0, k1, c0, c1, block_rows=b_tile_rows)
                if resident.get("B") != b_view:
                    steps.append(Write(Space.UB, b_reg.base, (t1 - t0) * b_tile_rows, b_view))
                    resident["B"] = b_view
                last = kr == n_runs_k - 1
                if epilogue is not None and last:
                    bias_view = Blocked(epilogue.bias, 0, 1, c0, c1)
                    if resident.get("bias") != bias_view:
                        steps.append(Write(Space.UB, bias_reg.base, t1 - t0, bias_view))
                        resident["bias"] = bias_view
                first = kb1 - kb0 if kr == 0 else None
                regs = ((REG_TILES, t1 - t0),) + (((REG_KBLOCKS, kb1 - kb0),) if kr else ())
                steps.append(Run(variant(rows, first, last), regs,
                                 ("rows", m0, m1, "tiles", t0, t1, "k", kb0, kb1)))
            if epilogue is None:
                steps.append(Read(Space.ACC, 0, rows * (t1 - t0), Blocked(c, m0, m1, c0, c1)))
            else:
                steps.append(Read(Space.UB, out_reg.base, rows * (t1 - t0),
                                  Blocked(c, m0, m1, c0, c1)))
                resident.pop("out", None)

    def build(unroll):
        images, origin = [], 0
        for (rows, first, epi), name in variants.items():
            e = _program(cfg, rows=rows, first_blocks=first, b_tile_rows=b_tile_rows,
                         a_base=a_reg.base, b_base=b_reg.base,
                         epilogue_at=(out_reg.base, bias_reg.base) if epi else None,
                         unroll=unroll,
                         leak_path=(epilogue.path, epilogue.leak) if epilogue else None)
            images.append(ProgramImage(name, e.program(origin), origin))
            origin += len(images[-1])
        return images, origin

    for unroll in (4, 2, 1):
        images, words = build(unroll)
        if words <= cfg.imem_depth:
            break
    else:
        raise _ProgramsTooLong(f"the matrix product's {len(variants)} programs need {words} "
                               f"instructions; the instruction memory holds "
                               f"{cfg.imem_depth} (use a TPUConfig with a larger imem_depth)")
    info = {"blocking": str(bl), "shape": f"({m}, {k}) @ ({k}, {n_out})"}
    return Plan(kind, cfg, tuple(images), steps, mem.regions, info)


def compile_matmul(cfg, m, k, n_out):
    """The plan of ``C = A @ B`` for ``A`` (m, k) and ``B`` (k, n_out): tensors ``"A"``,
    ``"B"`` in, ``"C"`` out (accumulator format)."""
    return gemm_plan(cfg, m, k, n_out)
