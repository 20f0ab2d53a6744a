"""Delay lines: the skewing and de-skewing registers at the array's edges."""

from amaranth.hdl import Shape, Signal, Value
from amaranth.lib import data

__all__ = ["delayed"]


def delayed(m, value, cycles, *, name="delay", domain="sync"):
    """Return ``value`` delayed by ``cycles`` registers in ``domain``.

    ``value`` may be a signal, expression or :class:`~amaranth.lib.data.View`; the result has
    the same shape (a view for a view). With ``cycles == 0`` the value itself is returned, so the
    "delay" is a wire. Every register resets to zero.
    """
    if cycles < 0:
        raise ValueError(f"Delay must be a non-negative number of cycles, not {cycles}")
    if isinstance(value, data.View):
        shape = data.Layout.cast(value.shape())
    else:
        shape = Shape.cast(Value.cast(value).shape())
    stage = value
    for i in range(cycles):
        reg = Signal(shape, name=f"{name}_{i}")
        m.d[domain] += reg.eq(stage)
        stage = reg
    return stage
