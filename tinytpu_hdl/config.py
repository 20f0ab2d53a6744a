"""Configuration of one TPU instance: array size and number formats."""

from dataclasses import dataclass, field

from .numeric import FixedFormat, Q8_8

__all__ = ["TPUConfig"]


@dataclass(frozen=True)
class TPUConfig:
    """Parameters shared by the gateware, the reference model, the compiler and the runtime.

    ``n`` is the side of the square systolic array. ``data`` is the storage
    format (default Q8.8); ``acc`` the accumulator format, by default twice
    as wide with twice the fraction bits so that products are exact.
    """

    n: int = 2
    data: FixedFormat = Q8_8
    acc: FixedFormat = field(default=None)

    def __post_init__(self):
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"Array size n must be a positive integer, not {self.n!r}")
        if not isinstance(self.data, FixedFormat):
            raise TypeError(f"Data format must be a FixedFormat, not {self.data!r}")
        if self.acc is None:
            object.__setattr__(self, "acc",
                               FixedFormat(min(62, 2 * self.data.width), 2 * self.data.frac))
        if not isinstance(self.acc, FixedFormat):
            raise TypeError(f"Accumulator format must be a FixedFormat, not {self.acc!r}")
        if self.acc.frac != 2 * self.data.frac or self.acc.width < 2 * self.data.width:
            raise ValueError(f"Accumulator format {self.acc} must have {2 * self.data.frac} "
                             f"fraction bits and at least {2 * self.data.width} bits to hold "
                             f"products of {self.data} exactly")
