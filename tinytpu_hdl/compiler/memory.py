"""Memory planning: named regions of the unified buffer and the accumulators."""

from dataclasses import dataclass, field

__all__ = ["CompileError", "Region", "MemoryPlan"]


class CompileError(ValueError):
    """A model, shape or size the compiler cannot lower; the message names the limit."""


@dataclass(frozen=True)
class Region:
    name: str
    base: int
    rows: int
    space: str = "ub"

    @property
    def end(self):
        return self.base + self.rows


@dataclass
class MemoryPlan:
    """Bump allocator over the unified buffer (``ub``) and the accumulators (``acc``)."""

    ub_depth: int
    acc_depth: int
    ub: dict = field(default_factory=dict)
    acc: dict = field(default_factory=dict)
    _ub_top: int = 0
    _acc_top: int = 0

    def alloc(self, name, rows):
        if name in self.ub:
            raise ValueError(f"region {name!r} allocated twice")
        region = Region(name, self._ub_top, rows, "ub")
        if region.end > self.ub_depth:
            used = ", ".join(f"{r.name} {r.rows}" for r in self.ub.values())
            raise CompileError(
                f"the unified buffer is too small: {name} needs {rows} rows at row "
                f"{region.base}, but the buffer has {self.ub_depth} rows (already used: "
                f"{used or 'nothing'})")
        self.ub[name] = region
        self._ub_top = region.end
        return region

    def alloc_acc(self, name, rows):
        if name in self.acc:
            raise ValueError(f"region {name!r} allocated twice")
        region = Region(name, self._acc_top, rows, "acc")
        if region.end > self.acc_depth:
            raise CompileError(
                f"the accumulators are too small: {name} needs {rows} rows, the accumulator "
                f"memory has {self.acc_depth}")
        self.acc[name] = region
        self._acc_top = region.end
        return region

    @property
    def ub_used(self):
        return self._ub_top

    @property
    def ub_free(self):
        return self.ub_depth - self._ub_top

    @property
    def regions(self):
        return {**{f"acc.{k}": v for k, v in self.acc.items()}, **self.ub}
