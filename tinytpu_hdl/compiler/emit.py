"""Program text emission shared by the lowerings: tiled matrix products and vector passes."""

from ..asm import assemble
from ..isa import ConfigReg
from .layout import ceil_div

__all__ = ["Emitter"]


class Emitter:
    """Collects assembly lines; knows the array size and tracks configuration registers."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.n = cfg.n
        self.lines = []
        self._config = {}

    def emit(self, line, comment=None):
        self.lines.append(f"    {line}" + (f"    # {comment}" if comment else ""))

    def label(self, name):
        self.lines.append(f"{name}:")

    def comment(self, text):
        self.lines.append(f"    # {text}")

    def forget_config(self):
        """Configuration values are unknown here (a loop head)."""
        self._config.clear()

    def config(self, reg: ConfigReg, value: float):
        raw = int(self.cfg.scalar.encode(value)) & 0xFFFF
        if self._config.get(reg) != raw:
            self.emit(f"cfg {reg.name.lower()}, {raw:#06x}", f"{reg.name.lower()} = {value:g}")
            self._config[reg] = raw

    @staticmethod
    def addr(space, base, reg=0):
        return f"{space}[r{reg}+{base}]" if reg else f"{space}[{base}]"

    def matmul_tiles(self, weights, inputs, acc_base, m, k_total, *, transpose, comment=None):
        """Accumulate ``sum_t inputs_t @ S_t`` into ``m`` accumulator rows.

        ``weights(t)`` gives ``(ub_base, rows)`` of the stored tile ``t`` (loaded as is, or
        transposed); ``inputs(t)`` gives ``(ub_base, reg, stride)`` of the ``m`` input rows
        streamed against it; ``k_total`` is the number of tiles.
        """
        if comment:
            self.comment(comment)
        for t in range(k_total):
            w_base, w_rows = weights(t)
            x_base, x_reg, x_stride = inputs(t)
            flag = ", transpose" if transpose else ""
            self.emit(f"loadw {self.addr('ub', w_base)}, rows={w_rows}{flag}")
            stride = f", stride={x_stride}" if x_stride != 1 else ""
            acc = ", accumulate" if t else ""
            self.emit(f"matmul {self.addr('ub', x_base, x_reg)}, {self.addr('acc', acc_base)}, "
                      f"rows={m}{stride}{acc}")

    def tiles(self, size):
        """``(start, count)`` of each ``n``-wide tile of a dimension of ``size``."""
        return [(t * self.n, min(self.n, size - t * self.n)) for t in range(ceil_div(size, self.n))]

    def program(self):
        return assemble("\n".join(self.lines) + "\n", scalar=self.cfg.scalar)

    @property
    def text(self):
        return "\n".join(self.lines) + "\n"
