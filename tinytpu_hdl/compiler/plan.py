"""Plans: what the compiler hands the runtime.

A :class:`Plan` is everything one call (a matrix product, an inference, a training) does on
the device, in order: the programs it keeps in the instruction memory, the host transfers
and the program runs. One executor (:mod:`tinytpu_hdl.runtime.executor`) carries out
plans on every backend; nothing in a plan depends on the backend.

Transfers name *where* data lives on the host (named tensors of raw format integers) and
where it goes on the device, never how it gets there: a later DMA engine that moves tiles
from external memory can execute the same :class:`Write` and :class:`Read` steps.

Data views (sources and sinks of transfers) are small frozen dataclasses over named
tensors, so a plan can be printed and inspected (``acc.last_plan``):

============================  =================================================
:class:`Blocked`               blocked layout of a 2-D slice (``layout.to_blocked``)
:class:`TransposedChunks`      transposed-chunk layout of a slice of samples
:class:`Params`                parameter layout of layer ``l`` (``W{l}``, ``b{l}``)
:class:`Literal`               constant rows computed at compile time
:class:`Concat`                several views one after the other
============================  =================================================
"""

from dataclasses import dataclass, field

import numpy as np

from ..host_protocol import Space, item_words
from .layout import (
    ceil_div, from_blocked, from_params, pad, to_blocked, to_params, to_transposed_chunks,
)

__all__ = ["Blocked", "TransposedChunks", "Params", "Literal", "Concat", "ProgramImage",
           "Write", "Read", "Run", "Wait", "LoadPrograms", "Mark", "Plan", "streamed"]


# --- data views ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Blocked:
    """Rows of the blocked layout of ``tensor[r0:r1, c0:c1]``; each block is padded with
    zero rows to ``block_rows`` rows (0: no padding)."""

    tensor: str
    r0: int
    r1: int
    c0: int
    c1: int
    block_rows: int = 0

    def rows(self, n):
        return ceil_div(self.c1 - self.c0, n) * max(self.r1 - self.r0, self.block_rows)

    def pack(self, tensors, n):
        part = tensors[self.tensor][self.r0:self.r1, self.c0:self.c1]
        rows = to_blocked(part, n)
        pad = self.block_rows - (self.r1 - self.r0)
        if pad <= 0:
            return rows
        blocks = rows.reshape(-1, self.r1 - self.r0, n)
        zeros = np.zeros((blocks.shape[0], pad, n), dtype=np.int64)
        return np.concatenate([blocks, zeros], axis=1).reshape(-1, n)

    def unpack(self, tensors, rows, n):
        height = max(self.r1 - self.r0, self.block_rows)
        rows = np.asarray(rows).reshape(-1, height, n)[:, :self.r1 - self.r0].reshape(-1, n)
        tensors[self.tensor][self.r0:self.r1, self.c0:self.c1] = from_blocked(
            rows, self.r1 - self.r0, self.c1 - self.c0, n)


@dataclass(frozen=True)
class TransposedChunks:
    """Rows of the transposed-chunk layout of the samples ``tensor[r0:r1]`` (``one``: the
    raw encoding of 1.0 for the rows of ones)."""

    tensor: str
    r0: int
    r1: int
    one: int

    def rows(self, n, features):
        return (pad(features, n) + 1) * ceil_div(self.r1 - self.r0, n)

    def pack(self, tensors, n):
        return to_transposed_chunks(tensors[self.tensor][self.r0:self.r1], n, self.one)


@dataclass(frozen=True)
class Params:
    """The parameter layout of layer ``layer``: tensors ``W{layer}`` (out, in) and
    ``b{layer}``."""

    layer: int

    def pack(self, tensors, n):
        return to_params(tensors[f"W{self.layer}"], tensors[f"b{self.layer}"], n)

    def unpack(self, tensors, rows, n):
        w = tensors[f"W{self.layer}"]
        w_new, b_new = from_params(rows, w.shape[0], w.shape[1], n)
        tensors[f"W{self.layer}"] = w_new
        tensors[f"b{self.layer}"] = b_new


@dataclass(frozen=True, eq=False)
class Literal:
    """Constant rows fixed at compile time (an identity matrix, rows of ones)."""

    name: str
    values: np.ndarray = field(repr=False)

    def pack(self, tensors, n):
        return self.values


@dataclass(frozen=True)
class Concat:
    """Several views one after the other."""

    parts: tuple

    def pack(self, tensors, n):
        return np.concatenate([p.pack(tensors, n) for p in self.parts])

    def unpack(self, tensors, rows, n):
        start = 0
        for part in self.parts:
            count = part.rows(n)
            part.unpack(tensors, rows[start:start + count], n)
            start += count


# --- steps --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProgramImage:
    """A program kept in the instruction memory from ``origin`` on (its branch targets are
    assembled for that address)."""

    name: str
    program: object
    origin: int

    def __len__(self):
        return len(self.program)


@dataclass(frozen=True)
class Write:
    """Host to device: ``source`` into ``space`` from ``address`` on (``rows`` items)."""

    space: Space
    address: int
    rows: int
    source: object


@dataclass(frozen=True)
class Read:
    """Device to host: ``rows`` items of ``space`` from ``address`` into ``sink``."""

    space: Space
    address: int
    rows: int
    sink: object


@dataclass(frozen=True)
class Run:
    """Start the program ``program`` with the index registers ``regs`` (``(reg, value)``
    pairs) set first; ``tag`` says what the run does (e.g. ``("epoch", 3)``). With
    ``wait=False`` the steps after it run while the program does (host writes into rows it
    does not use), until a :class:`Wait`."""

    program: str
    regs: tuple = ()
    tag: tuple = ()
    wait: bool = True


@dataclass(frozen=True)
class Wait:
    """Wait for the program started by the last ``Run(..., wait=False)``."""


def streamed(chunks, *, second_buffer, write, run, after):
    """Steps that stream ``chunks`` through the device: for each, ``write(chunk, offset)``
    its data, ``run(chunk, offset, wait)`` the program on it, then ``after(chunk)`` (reads
    of its results). With ``second_buffer`` (the offset of a second input buffer, or 0 for
    one), chunk ``k + 1`` is written into the other buffer while chunk ``k``'s run goes on,
    so that the host's transfer overlaps the device's work."""
    steps = []
    for k, chunk in enumerate(chunks):
        offset = second_buffer * (k % 2)
        if k == 0 or not second_buffer:
            steps.append(write(chunk, offset))
        steps.append(run(chunk, offset, not second_buffer))
        if second_buffer:
            if k + 1 < len(chunks):
                steps.append(write(chunks[k + 1], second_buffer * ((k + 1) % 2)))
            steps.append(Wait())
        steps.extend(after(chunk))
    return steps


@dataclass(frozen=True)
class LoadPrograms:
    """Load more programs into the instruction memory (over earlier ones)."""

    programs: tuple


@dataclass(frozen=True)
class Mark:
    """Nothing on the device: tells the caller that the steps before it finished ``tag``
    (e.g. ``("epochs", 0, 5)``)."""

    tag: tuple


@dataclass
class Plan:
    """What one call does on the device: resident programs, memory map, steps."""

    kind: str
    cfg: object
    programs: tuple
    steps: list
    regions: dict
    info: dict = field(default_factory=dict)

    def all_programs(self):
        """Every program of the plan: those loaded first, then those of
        :class:`LoadPrograms` steps."""
        images = list(self.programs)
        for step in self.steps:
            if isinstance(step, LoadPrograms):
                images.extend(step.programs)
        return images

    @property
    def runs(self):
        return sum(isinstance(s, Run) for s in self.steps)

    def words(self, kind):
        """32-bit words a step kind (:class:`Write` or :class:`Read`) moves, headers
        excluded."""
        return sum(s.rows * item_words(self.cfg, s.space) for s in self.steps
                   if isinstance(s, kind))

    @property
    def instruction_words(self):
        """Instruction words the plan loads (all its programs, reloads included)."""
        return sum(len(p) for p in self.all_programs())

    def summary(self):
        """A few lines for people: runs, transfers, programs, memory map."""
        cfg = self.cfg
        lines = [f"{self.kind} plan for N={cfg.n} (buffer {cfg.ub_depth} rows, accumulators "
                 f"{cfg.acc_depth} rows, instruction memory {cfg.imem_depth} words)",
                 f"  {self.runs} program runs; host writes {self.words(Write):,} words, "
                 f"reads {self.words(Read):,} words"]
        for p in self.all_programs():
            lines.append(f"  program {p.name!r}: {len(p)} instructions at {p.origin}")
        for r in sorted(self.regions.values(), key=lambda r: (r.space, r.base)):
            lines.append(f"  {r.space}[{r.base}:{r.end}] {r.name} ({r.rows} rows)")
        for key, value in self.info.items():
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()
