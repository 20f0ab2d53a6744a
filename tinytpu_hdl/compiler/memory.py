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
    """Bump allocator over the unified buffer (``ub``) and the accumulators (``acc``).

    ``loadable`` (default: every row) is the number of buffer rows, from row 0, that the
    weight loader and the units' aux, bias and parameter reads may use
    (``TPUConfig.ub_loadable_rows``): a region allocated with ``loaded=True`` must end
    there, so callers allocate those regions first."""

    ub_depth: int
    acc_depth: int
    loadable: int = None
    ub: dict = field(default_factory=dict)
    acc: dict = field(default_factory=dict)
    _ub_top: int = 0
    _acc_top: int = 0

    @classmethod
    def of(cls, cfg):
        return cls(cfg.ub_depth, cfg.acc_depth, cfg.ub_loadable_rows)

    def alloc(self, name, rows, *, loaded=False):
        if name in self.ub:
            raise ValueError(f"region {name!r} allocated twice")
        region = Region(name, self._ub_top, rows, "ub")

        def used():
            return ", ".join(f"{r.name} {r.rows}" for r in self.ub.values()) or "nothing"
        if region.end > self.ub_depth:
            raise CompileError(
                f"the unified buffer is too small: {name} needs {rows} rows at row "
                f"{region.base}, but the buffer has {self.ub_depth} rows (already used: "
                f"{used()})")
        if loaded and self.loadable is not None and region.end > self.loadable:
            raise CompileError(
                f"{name} ({rows} rows at row {region.base}) is loaded as weights or read as "
                f"aux rows, bias rows or parameters, which must lie below row "
                f"{self.loadable} (TPUConfig.ub_copy_depth; already used: {used()})")
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
