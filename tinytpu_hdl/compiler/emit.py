"""Program text emission shared by the lowerings: addresses, counted loops, tiled products.

Programs stay short whatever the sizes: a dimension of many tiles becomes a counted loop
(``djnz``) whose addresses are index registers stepped at the end of each iteration, so a
program's length grows with the number of loop nests (layers), not with the number of
tiles, samples or batches. A loop of at most :attr:`Emitter.unroll` iterations is emitted
straight-line instead (no loop-control instructions), which the lowerings prefer while
the program fits the instruction memory.

A loop over ``count`` iterations with address streams ``(origin, step)``::

    addi  rS, rO, 0          # one register per stream: R[S] = R[origin's register]
    setr  rC, count          # iteration counter
    loop:
    ...                       # the body, addressing origin.base + R[S]
    addi  rS, rS, step
    djnz  rC, loop

costs ``2 + 2 * streams`` cycles of control per iteration (two per ``addi``/``djnz``),
hidden while the matmul engine streams at least that many rows per iteration.
"""

from dataclasses import dataclass

from ..asm import assemble
from ..isa import NUM_REGS, ConfigReg
from .layout import ceil_div
from .memory import CompileError
from .schedule import hoist_weight_loads

__all__ = ["Addr", "Emitter"]


@dataclass(frozen=True)
class Addr:
    """An address operand: ``base + R[reg]`` in ``space`` (``"ub"`` or ``"acc"``)."""

    space: str
    base: int
    reg: int = 0

    def __add__(self, offset):
        return Addr(self.space, self.base + int(offset), self.reg)

    def __str__(self):
        return f"{self.space}[r{self.reg}+{self.base}]" if self.reg else \
            f"{self.space}[{self.base}]"


class Emitter:
    """Collects assembly lines; allocates index registers; tracks configuration registers.

    ``reserved`` registers are never handed out by :meth:`alloc` (the host or the caller
    owns them). ``unroll``: loops of at most this many iterations are emitted
    straight-line. ``pipeline``: whether callers may software-pipeline their work (longer
    programs, fewer cycles).
    """

    def __init__(self, cfg, *, unroll=2, reserved=(), pipeline=True):
        self.cfg = cfg
        self.pipeline = pipeline
        self.n = cfg.n
        self.unroll = unroll
        self.lines = []
        self._config = {}
        self._labels = 0
        self._free = [r for r in range(NUM_REGS - 1, 0, -1) if r not in set(reserved)]

    # --- text ---------------------------------------------------------------------------

    def emit(self, line, comment=None):
        self.lines.append(f"    {line}" + (f"    # {comment}" if comment else ""))

    def label(self, name):
        self.lines.append(f"{name}:")

    def new_label(self, prefix="loop"):
        self._labels += 1
        return f"{prefix}{self._labels}"

    def comment(self, text):
        self.lines.append(f"    # {text}")

    def program(self, origin=0):
        """The assembled program, weight loads moved ahead of the passes they do not
        depend on (:func:`.schedule.hoist_weight_loads`)."""
        return hoist_weight_loads(assemble(self.text, scalar=self.cfg.scalar, origin=origin),
                                  self.n)

    @property
    def text(self):
        return "\n".join(self.lines) + "\n"

    # --- registers ----------------------------------------------------------------------

    def alloc(self):
        if not self._free:
            raise CompileError(f"the program needs more than the {NUM_REGS - 1} index "
                               f"registers (loops nested too deeply)")
        return self._free.pop()

    def release(self, *regs):
        for r in regs:
            self._free.append(r)

    # --- configuration registers -------------------------------------------------------

    def forget_config(self, keep=()):
        """Configuration values are unknown here (a loop head reached from several places),
        but for the registers in ``keep``, which nothing after this point changes."""
        self._config = {r: v for r, v in self._config.items() if r in keep}

    def _raw(self, value):
        return int(self.cfg.scalar.encode(value)) & 0xFFFF

    def config_changes(self, reg: ConfigReg, value: float):
        """Whether :meth:`config` with these arguments emits an instruction."""
        return self._config.get(reg) != self._raw(value)

    def config(self, reg: ConfigReg, value: float):
        raw = self._raw(value)
        if self._config.get(reg) != raw:
            self.emit(f"cfg {reg.name.lower()}, {raw:#06x}", f"{reg.name.lower()} = {value:g}")
            self._config[reg] = raw

    # --- instructions -----------------------------------------------------------------

    def loadw(self, src, rows, transpose=False):
        self.emit(f"loadw {src}, rows={rows}" + (", transpose" if transpose else ""))

    def matmul(self, src, dst, rows, *, stride=1, accumulate=False):
        self.emit(f"matmul {src}, {dst}, rows={rows}" + (f", stride={stride}" if stride != 1
                                                         else "")
                  + (", accumulate" if accumulate else ""))

    def vpu(self, src, dst, rows, *, aux=None, bias=None, path=(), stride=1, transpose=False):
        text = f"vpu {src}, {dst}, rows={rows}"
        if aux is not None:
            text += f", aux={aux}"
        if bias is not None:
            text += f", bias={bias}"
        if path:
            text += ", path=" + "|".join(path)
        if stride != 1:
            text += f", stride={stride}"
        if transpose:
            text += ", transpose"
        self.emit(text)

    def gd(self, src, param, rows, *, stochastic=False):
        self.emit(f"gd {src}, {param}, rows={rows}" + (", stochastic" if stochastic else ""))

    # --- loops --------------------------------------------------------------------------

    def loop(self, count, streams, body):
        """Emit ``body(addrs)`` for ``count`` iterations. ``streams`` is a list of
        ``(origin, step)``: iteration ``t`` addresses ``origin + t * step``. Straight-line
        when ``count <= unroll``, else a counted loop with a register per moving stream.
        The body must not change configuration registers (set them before the loop)."""
        if count <= 0:
            return
        if count <= self.unroll:
            for t in range(count):
                body([origin + t * step for origin, step in streams])
            return
        before = dict(self._config)
        counter = self.alloc()
        regs = []
        addrs = []
        for origin, step in streams:
            if step == 0:
                regs.append(None)
                addrs.append(origin)
                continue
            reg = self.alloc()
            regs.append(reg)
            self.emit(f"addi r{reg}, r{origin.reg}, 0")
            addrs.append(Addr(origin.space, origin.base, reg))
        self.emit(f"setr r{counter}, {count}")
        head = self.new_label()
        self.label(head)
        body(addrs)
        for reg, (_, step) in zip(regs, streams):
            if reg is not None:
                self.emit(f"addi r{reg}, r{reg}, {step}")
        self.emit(f"djnz r{counter}, {head}")
        if self._config != before:
            raise AssertionError("a loop body changed a configuration register")
        self.release(counter, *[r for r in regs if r is not None])

    def tiles(self, size):
        """``(start, count)`` of each ``n``-wide tile of a dimension of ``size``."""
        return [(t * self.n, min(self.n, size - t * self.n)) for t in range(ceil_div(size, self.n))]

    def tiled(self, size, streams, body, *, tile=None):
        """Emit ``body(addrs, width)`` for each ``tile``-wide part (default ``n``) of a
        dimension of ``size``: a loop over the whole parts and, after it, the partial last
        one (``width < tile``)."""
        tile = tile or self.n
        full, last = divmod(size, tile)
        self.loop(full, streams, lambda addrs: body(addrs, tile))
        if last:
            body([origin + full * step for origin, step in streams], last)

    def reduce(self, count, weights, w_step, inputs, x_step, acc, m, *, rows=None,
               last_rows=None, stride=1, transpose=False, accumulate_first=False,
               between=()):
        """``acc[m rows] (+)= sum_t inputs_t @ S_t`` over ``count`` weight tiles: tile ``t``
        is ``rows`` rows (default ``n``; ``last_rows`` for the last) loaded from ``weights +
        t * w_step`` (transposed with ``transpose``), against ``m`` input rows streamed
        from ``inputs + t * x_step`` with ``stride``. The first tile overwrites the
        accumulators unless ``accumulate_first``.

        ``between`` is a list of functions that emit other work (e.g. the vector passes of
        an earlier result) among the tiles: the ``j``-th after the weight load of tile
        ``2 j + 1`` and before its matmul (or after the last tile), so that the load is
        not held up by a pass that reads through the loader's port and each pass has the
        streaming of two tiles to run beside. A ``None`` leaves its place empty."""
        rows = rows or self.n
        last_rows = last_rows or rows

        def pair(w, x, k, accumulate, work=()):
            self.loadw(w, k, transpose)
            for emit in work:
                emit()
            self.matmul(x, acc, m, stride=stride, accumulate=accumulate)

        # The tiles up to the last one with other work, one by one.
        hooks = {}
        for j, emit in enumerate(between):
            if emit is not None:
                hooks.setdefault(min(2 * j + 1, count), []).append(emit)
        done = min(max(hooks) + 1, count) if hooks else 1
        for t in range(done):
            pair(weights + t * w_step, inputs + t * x_step,
                 last_rows if t == count - 1 else rows, accumulate_first or t > 0,
                 hooks.get(t, ()))
        for emit in hooks.get(count, ()):
            emit()
        if done == count:
            return
        tail = 1 if last_rows != rows else 0
        self.loop(count - done - tail, [(weights + done * w_step, w_step),
                                        (inputs + done * x_step, x_step)],
                  lambda a: pair(a[0], a[1], rows, True))
        if tail:
            pair(weights + (count - 1) * w_step, inputs + (count - 1) * x_step, last_rows, True)
