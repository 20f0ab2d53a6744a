"""Recorded runs of the reference model, replayed with whole-block numpy operations.

Which instructions a run issues, their effective addresses, every fault and every cycle
count depend only on the program words fetched, the index registers it reads before
writing them and the watchdog at the start: never on the data in the memories. :class:`~tinytpu_hdl.reference.ReferenceTPU`
therefore records, on its first run from a given start state, what the run did to the
memories (a *trace*: weight loads, matmuls, vector and gradient-descent passes,
configuration writes) and the state it ended in. A later run from the same state (same
start address, registers and watchdog, the same words at every address fetched) replays
the trace instead of interpreting the program again:

* the weight loads and matmuls between two vector or gradient-descent passes become one
  :class:`MatmulBlock`: one gather of every weight tile and input row, every product in
  one batched float64 product (exact: it is taken only when no partial sum can leave the
  accumulator range and that range is below 2**53), and one reduction per accumulator row
  that keeps only the products no later overwrite discards. When the bound does not hold,
  the block goes through the array's saturating chain, matmul by matmul, exactly as the
  interpreter does;
* vector and gradient-descent passes and configuration writes run through the model's own
  methods, in program order, with the operands the interpreter resolved.

The replay is bit-exact with the interpreter (tests compare every memory, register, flag
and counter after runs of random programs with new data).
"""

from collections import OrderedDict
from operator import itemgetter

import numpy as np

__all__ = ["MatmulBlock", "RunTrace", "TraceCache", "TrackedRegisters"]

# Actions a recording holds, as tuples tagged by their first item.
LOAD, MATMUL, VECTOR, GD, CONFIG = "L", "M", "V", "G", "C"


class MatmulBlock:
    """Consecutive weight loads and matmuls of a trace, as index arrays.

    ``loads``: ``(src, rows, transpose)`` per load; ``matmuls``: ``(src, stride, rows, dst,
    accumulate, tile)`` per matmul, ``tile`` 0 for the weights held when the block starts,
    ``i`` for the ``i``-th load of the block.
    """

    def __init__(self, cfg, loads, matmuls):
        n = self.n = cfg.n
        self.limit = min(cfg.acc.max_int, -cfg.acc.min_int)
        self.loads = len(loads)
        k = np.arange(n)
        self.load_rows = np.array([[src + i if i < rows else src for i in k]
                                   for src, rows, _ in loads], dtype=np.intp).reshape(-1, n)
        self.load_mask = np.array([[[i < rows] for i in k] for _, rows, _ in loads],
                                  dtype=np.int64).reshape(-1, n, 1)
        self.load_transpose = np.array([t for _, _, t in loads], dtype=bool)
        self.matmuls = matmuls
        if not matmuls:
            return
        counts = np.array([m[2] for m in matmuls])
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self.uniform = bool((counts == counts[0]).all())
        self.x_rows = np.concatenate([src + stride * np.arange(rows)
                                      for src, stride, rows, *_ in matmuls]).astype(np.intp)
        dst_rows = np.concatenate([dst + np.arange(rows) for _, _, rows, dst, *_ in matmuls])
        op_of_row = np.repeat(np.arange(len(matmuls)), counts)
        self.tile_of_op = np.array([m[5] for m in matmuls], dtype=np.intp)
        # The last matmul that overwrites (does not accumulate into) each row: products of
        # earlier matmuls into that row, and the row's old value, do not survive the block.
        last_overwrite = {}
        for i, (_, _, rows, dst, accumulate, _) in enumerate(matmuls):
            if not accumulate:
                for r in range(dst, dst + rows):
                    last_overwrite[r] = i
        cut = np.array([last_overwrite.get(int(r), -1) for r in dst_rows])
        kept = op_of_row >= cut
        order = np.argsort(dst_rows, kind="stable")
        self.urows, self.starts_all = np.unique(dst_rows[order], return_index=True)
        self.order_all = order
        self.kept_order = order[kept[order]]
        kept_rows, self.kept_starts = np.unique(dst_rows[self.kept_order], return_index=True)
        assert np.array_equal(kept_rows, self.urows)   # a row's last product always survives
        self.survive = np.array([int(r) not in last_overwrite for r in self.urows])[:, None]

    def weights(self, model):
        """Every tile the block's matmuls use (index 0: the weights held at its start); the
        loads' tiles gathered from the buffer as it is now, padded and transposed as the
        loader does. Leaves the model holding the last tile."""
        n = self.n
        tiles = np.empty((self.loads + 1, n, n), dtype=np.int64)
        tiles[0] = model.shadow
        if self.loads:
            loaded = model.ub[self.load_rows] * self.load_mask
            if self.load_transpose.any():
                loaded[self.load_transpose] = loaded[self.load_transpose].transpose(0, 2, 1)
            tiles[1:] = loaded
            model.shadow = tiles[-1].copy()
        return tiles

    def execute(self, model):
        tiles = self.weights(model)
        if not self.matmuls:
            return
        model.active = tiles[self.tile_of_op[-1]].copy()
        x = model.ub[self.x_rows]
        w = tiles[self.tile_of_op]
        if self.limit < 1 << 53 and self._products(model, x, w):
            return
        # A partial sum may saturate (or the accumulator is too wide for float64): the
        # array's chain, matmul by matmul.
        model._chain([(x[self.bounds[i]:self.bounds[i + 1]], w[i], m[3], m[2], m[4])
                      for i, m in enumerate(self.matmuls)])

    def _products(self, model, x, w):
        """Every product at once when no partial sum can leave the accumulator range (each
        bounded by the row's old value plus the sum of absolute products of every matmul
        into that row); False when the bound does not hold."""
        xf, wf = x.astype(np.float64), w.astype(np.float64)
        n, ops = self.n, len(self.matmuls)
        if self.uniform:
            rows = self.bounds[1]
            products = np.matmul(xf.reshape(ops, rows, n), wf).reshape(-1, n)
            magnitude = np.matmul(np.abs(xf).reshape(ops, rows, n), np.abs(wf)).reshape(-1, n)
        else:
            products = np.empty_like(xf)
            magnitude = np.empty_like(xf)
            for i in range(ops):
                a, b = self.bounds[i], self.bounds[i + 1]
                products[a:b] = xf[a:b] @ wf[i]
                magnitude[a:b] = np.abs(xf[a:b]) @ np.abs(wf[i])
        old = model.acc[self.urows]
        reach = np.add.reduceat(magnitude[self.order_all], self.starts_all, axis=0)
        if float((np.abs(old) + reach).max()) > self.limit:
            return False
        sums = np.add.reduceat(products[self.kept_order], self.kept_starts, axis=0)
        model.acc[self.urows] = np.where(self.survive, old, 0) + sums.astype(np.int64)
        return True


class TrackedRegisters(list):
    """The index registers of a run being recorded: remembers which ones it wrote and the
    start value of each one it read before writing it."""

    def __init__(self, values):
        super().__init__(values)
        self.read_first = {}
        self.written = set()

    def __getitem__(self, i):
        if i not in self.written and i not in self.read_first:
            self.read_first[i] = list.__getitem__(self, i)
        return list.__getitem__(self, i)

    def __setitem__(self, i, value):
        self.written.add(i)
        list.__setitem__(self, i, value)


class RunTrace:
    """What one run did, replayable on a model in the same start state.

    ``reads``: ``(register, value)`` of every index register the run read before writing
    it; ``final``: the model's attributes after the run, ``final["regs"]`` only the
    registers it wrote (``{register: value}``)."""

    def __init__(self, cfg, fetched, actions, final, reads=()):
        # The words fetched, compared in one call (a run that stopped before its first
        # fetch, e.g. a start address past the memory, fetched none).
        pcs = sorted(fetched)
        self._pcs = itemgetter(*pcs) if pcs else (lambda imem: ())
        self._words = tuple(fetched[p] for p in pcs) if len(pcs) != 1 else fetched[pcs[0]]
        self.cfg = cfg
        self.actions = actions
        self.final = dict(final)
        self.written = self.final.pop("regs", {})
        self.reads = tuple(reads)
        self.steps = None            # compiled at the first replay

    def matches(self, imem, regs):
        """The registers this run read first hold what they held, and the program words it
        fetched are still there."""
        return all(regs[i] == v for i, v in self.reads) and self._pcs(imem) == self._words

    def _compile(self):
        steps, loads, matmuls = [], [], []

        def close():
            if loads or matmuls:
                steps.append((MATMUL, MatmulBlock(self.cfg, list(loads), list(matmuls))))
                loads.clear()
                matmuls.clear()

        for action in self.actions:
            kind = action[0]
            if kind == LOAD:
                loads.append(action[1:])
            elif kind == MATMUL:
                matmuls.append((*action[1:], len(loads)))
            else:
                close()
                steps.append(action)
        close()
        return steps

    def replay(self, model):
        if self.steps is None:
            self.steps = self._compile()
        for step in self.steps:
            kind = step[0]
            if kind == MATMUL:
                step[1].execute(model)
            elif kind == VECTOR:
                model._vpu(step[1], step[2])
            elif kind == GD:
                model._gd(*step[1:])
            else:
                model.cfgs[step[1]] = step[2]
        for name, value in self.final.items():
            setattr(model, name, value)
        for i, value in self.written.items():
            model.regs[i] = value


class TraceCache:
    """The last ``size`` traces, least recently used out, found by their start address and
    watchdog (``key``) and then by the registers they read (:meth:`RunTrace.matches`)."""

    def __init__(self, size):
        self.size = size
        self._traces = OrderedDict()       # (key, reads) -> RunTrace
        self._by_key = {}                  # key -> {reads: RunTrace}
        #: Runs replayed, and runs interpreted (and recorded).
        self.hits = self.misses = 0

    def lookup(self, key, imem, regs):
        for reads, trace in self._by_key.get(key, {}).items():
            if trace.matches(imem, regs):
                self._traces.move_to_end((key, reads))
                self.hits += 1
                return trace
        self.misses += 1
        return None

    def store(self, key, trace):
        entry = (key, trace.reads)
        self._traces[entry] = trace
        self._traces.move_to_end(entry)
        self._by_key.setdefault(key, {})[trace.reads] = trace
        while len(self._traces) > self.size:
            (old_key, old_reads), _ = self._traces.popitem(last=False)
            bucket = self._by_key[old_key]
            del bucket[old_reads]
            if not bucket:
                del self._by_key[old_key]

    def clear(self):
        self._traces.clear()
        self._by_key.clear()
