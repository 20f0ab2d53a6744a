"""The number formats of the TPU, defined once.

Every value the TPU stores is a two's-complement signed fixed-point number
described by a :class:`FixedFormat` (total ``width`` in bits, ``frac``
fraction bits). Two formats matter:

* the **data format** (default Q8.8: 16 bits, 8 fraction bits), used for
  everything held in the unified buffer: inputs, weights, biases,
  activations, targets, gradients and configuration values;
* the **accumulator format** (default Q16.16: 32 bits, 16 fraction bits),
  used for products and sums inside the systolic array and in the
  accumulator memory. Its fraction is twice the data format's, so the
  product of two data values is represented *exactly*; its width is at
  least twice the data width so that a single product never overflows.

Arithmetic rules (the only ones the project uses; gateware, reference model
and compiler call the functions below):

* **Products** are exact: ``a * b`` of two data values is an accumulator
  value with no rounding.
* **Sums** in the accumulator format *saturate*: a result outside
  ``[min_int, max_int]`` is clamped to the nearest bound and an overflow is
  flagged. Sums never wrap. A dot product is accumulated in a fixed order
  (array row 0 first), and the saturation is applied after every addition,
  so the order is part of the definition (see :func:`dot_chain`).
* **Narrowing** (accumulator -> data, or any format to one with fewer
  fraction bits) rounds to nearest with ties toward +infinity
  (``floor(x / 2**s + 1/2)``, implemented as "add half an output LSB, then
  arithmetic shift right") and then saturates to the destination range.
  This is the cheapest round-to-nearest rule in hardware (one adder, no
  sticky bits) and is bias-free except on exact ties.
* **Encoding** a float applies the same rule: ``floor(x * 2**frac + 1/2)``
  then saturation.
* **Stochastic narrowing** (used only by the gradient-descent unit when an
  instruction asks for it): ``floor(x / 2**s + r / 2**s)`` with ``r`` a
  pseudo-random integer in ``[0, 2**s)`` from :func:`xorshift32`, then
  saturation. It rounds up with probability equal to the discarded
  fraction, so updates smaller than one LSB survive on average.

The numpy functions work on ``int64`` arrays of raw integers; every format
must therefore be at most 62 bits wide. The ``hdl_*`` functions build the
corresponding Amaranth expressions.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Mux, Value, signed

__all__ = [
    "FixedFormat", "Q8_8", "Q16_16", "FormatError", "check_accumulator",
    "round_shift", "saturate", "narrow", "add_sat", "mul_narrow", "dot_chain",
    "stochastic_narrow", "xorshift32", "xorshift32_sequence", "xorshift_seed",
    "hdl_saturate", "hdl_round_shift", "hdl_narrow", "hdl_add_sat", "hdl_mul_narrow",
    "hdl_stochastic_round", "hdl_xorshift32",
]


class FormatError(ValueError):
    """A value cannot be represented in a number format (NaN, infinity)."""


@dataclass(frozen=True)
class FixedFormat:
    """A signed two's-complement fixed-point format with ``frac`` fraction bits.

    A raw integer ``i`` represents the real value ``i / 2**frac``.
    """

    width: int = 16
    frac: int = 8

    def __post_init__(self):
        if not isinstance(self.width, int) or isinstance(self.width, bool):
            raise TypeError(f"Format width must be an integer, not {self.width!r}")
        if not isinstance(self.frac, int) or isinstance(self.frac, bool):
            raise TypeError(f"Format fraction bits must be an integer, not {self.frac!r}")
        if not 2 <= self.width <= 62:
            raise ValueError(f"Format width must be between 2 and 62 bits, not {self.width}")
        if not 0 <= self.frac < self.width:
            raise ValueError(f"Format fraction bits must be between 0 and width - 1 "
                             f"({self.width - 1}), not {self.frac}")

    def __str__(self):
        return f"Q{self.width - self.frac}.{self.frac}"

    @property
    def shape(self):
        """Amaranth shape of a raw value: ``signed(width)``."""
        return signed(self.width)

    @property
    def min_int(self):
        return -(1 << (self.width - 1))

    @property
    def max_int(self):
        return (1 << (self.width - 1)) - 1

    @property
    def scale(self):
        """Real value of ``2**frac`` raw units, i.e. raw value of 1.0."""
        return 1 << self.frac

    @property
    def lsb(self):
        """Real value of one raw unit."""
        return 1.0 / self.scale

    @property
    def min_value(self):
        return self.min_int / self.scale

    @property
    def max_value(self):
        return self.max_int / self.scale

    def encode(self, values, *, return_clipped=False):
        """Encode real numbers into raw integers (round to nearest, ties up; saturate).

        Raises :class:`FormatError` for NaN or infinite values. With
        ``return_clipped=True`` also returns how many values were outside
        the representable range and were saturated.
        """
        values = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise FormatError(f"{bad} value(s) are NaN or infinite and cannot be encoded in {self}")
        raw = np.floor(values * self.scale + 0.5)
        clipped = int(np.count_nonzero((raw < self.min_int) | (raw > self.max_int)))
        raw = np.clip(raw, self.min_int, self.max_int).astype(np.int64)
        if return_clipped:
            return raw, clipped
        return raw

    def decode(self, raw):
        """Real values of raw integers (as ``float64``)."""
        return np.asarray(raw, dtype=np.int64).astype(np.float64) / self.scale

    def to_unsigned(self, raw):
        """Raw integers as ``width``-bit unsigned bit patterns (for memories and wires)."""
        return np.asarray(raw, dtype=np.int64) & ((1 << self.width) - 1)

    def from_unsigned(self, bits):
        """Inverse of :meth:`to_unsigned`: sign-extend ``width``-bit patterns."""
        bits = np.asarray(bits, dtype=np.int64) & ((1 << self.width) - 1)
        return np.where(bits >= (1 << (self.width - 1)), bits - (1 << self.width), bits)


def check_accumulator(fmt, acc):
    """Raise ``ValueError`` unless ``acc`` holds every product of two ``fmt`` values exactly
    (twice the fraction bits, at least twice the width)."""
    if acc.frac != 2 * fmt.frac or acc.width < 2 * fmt.width:
        raise ValueError(f"Accumulator format {acc} cannot hold products of {fmt} exactly: it "
                         f"needs {2 * fmt.frac} fraction bits and at least {2 * fmt.width} bits")


#: The default data format (16-bit, 8 fraction bits).
Q8_8 = FixedFormat(16, 8)
#: The default accumulator format (32-bit, 16 fraction bits).
Q16_16 = FixedFormat(32, 16)


# --- numpy implementation --------------------------------------------------------------------

def round_shift(raw, shift):
    """Divide by ``2**shift`` rounding to nearest, ties toward +infinity (``shift`` >= 0);
    multiply by ``2**-shift`` for a negative ``shift``."""
    raw = np.asarray(raw, dtype=np.int64)
    if shift > 0:
        return (raw + (1 << (shift - 1))) >> shift
    if shift < 0:
        return raw << -shift
    return raw


def stochastic_narrow(raw, src, dst, random_bits, *, return_overflow=False):
    """Narrow ``raw`` (format ``src``) to ``dst`` adding ``random_bits`` (uniform 32-bit
    integers; their low ``s`` bits are used, ``s = src.frac - dst.frac > 0``) before the
    arithmetic shift, then saturate."""
    shift = src.frac - dst.frac
    if shift <= 0:
        raise ValueError("stochastic narrowing needs fewer fraction bits in the destination")
    offset = np.asarray(random_bits, dtype=np.int64) & ((1 << shift) - 1)
    value = (np.asarray(raw, dtype=np.int64) + offset) >> shift
    return saturate(value, dst, return_overflow=return_overflow)


def xorshift32(state):
    """One step of Marsaglia's xorshift32 on ``uint32`` values (never 0 for a nonzero state)."""
    x = np.asarray(state, dtype=np.uint64) & 0xFFFFFFFF
    x ^= (x << np.uint64(13)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(17)
    x ^= (x << np.uint64(5)) & np.uint64(0xFFFFFFFF)
    return x.astype(np.int64)


def xorshift32_sequence(state, count):
    """``count`` successive states of each generator from ``state`` (one per lane): an
    ``(count, lanes)`` array whose row ``i`` is ``state`` after ``i`` steps, and the state
    after ``count`` steps (as :func:`xorshift32` applied ``count`` times, in Python
    integers: one numpy call per step would cost more than the steps)."""
    out = np.empty((count, len(state)), dtype=np.int64)
    final = []
    for lane, x in enumerate(int(v) & 0xFFFFFFFF for v in state):
        column = out[:, lane]
        values = [0] * count
        for i in range(count):
            values[i] = x
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
        column[:] = values
        final.append(x)
    return out, np.array(final, dtype=np.int64)


def xorshift_seed(seed, lane):
    """Initial xorshift32 state of ``lane`` for a 32-bit ``seed`` (never zero)."""
    state = (seed ^ ((lane + 1) * 0x9E3779B9)) & 0xFFFFFFFF
    return state or 0x6D2B79F5


def saturate(raw, fmt, *, return_overflow=False):
    """Clamp raw integers to the range of ``fmt``; optionally also return the overflow mask."""
    raw = np.asarray(raw, dtype=np.int64)
    overflow = (raw < fmt.min_int) | (raw > fmt.max_int)
    out = np.clip(raw, fmt.min_int, fmt.max_int)
    if return_overflow:
        return out, overflow
    return out


def narrow(raw, src, dst, *, return_overflow=False):
    """Convert raw values of format ``src`` to format ``dst``: round, then saturate."""
    return saturate(round_shift(raw, src.frac - dst.frac), dst, return_overflow=return_overflow)


def add_sat(a, b, fmt, *, return_overflow=False):
    """Saturating sum of two raw values of the same format."""
    return saturate(np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64), fmt,
                    return_overflow=return_overflow)


def mul_narrow(a, fmt_a, b, fmt_b, dst, *, return_overflow=False):
    """Exact product of ``a`` (format ``fmt_a``) and ``b`` (format ``fmt_b``), narrowed to ``dst``."""
    prod = np.asarray(a, dtype=np.int64) * np.asarray(b, dtype=np.int64)
    src = FixedFormat(min(62, fmt_a.width + fmt_b.width), fmt_a.frac + fmt_b.frac)
    return narrow(prod, src, dst, return_overflow=return_overflow)


def dot_chain(x, w, acc, *, psum=None, return_overflow=False):
    """The systolic array's matrix product, bit-exact.

    ``x`` is ``(M, K)`` and ``w`` is ``(K, C)``, raw data-format integers.
    For every output ``(m, c)`` the partial sum starts at ``psum`` (0 by
    default) and adds ``x[m, k] * w[k, c]`` for ``k = 0, 1, ..., K-1`` in
    that order, saturating to ``acc`` after each addition, exactly as the
    partial sums flow down a column of the array. Returns ``(M, C)`` raw
    accumulator integers and, optionally, an ``(M,)`` mask of the rows in
    which any addition saturated.
    """
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"dot_chain needs (M, K) and (K, C) arrays, not {x.shape} and {w.shape}")
    out = np.zeros((x.shape[0], w.shape[1]), dtype=np.int64)
    if psum is not None:
        out = out + np.asarray(psum, dtype=np.int64)
    overflow = np.zeros(x.shape[0], dtype=bool)
    # No partial sum can leave the accumulator range when |psum| + sum_k |x w| stays in it
    # (bounds of every prefix of the chain): then the chain is the plain product.
    if max(abs(acc.min_int), acc.max_int) < 1 << 62 and x.size and w.size:
        bound = np.abs(x) @ np.abs(w) + np.abs(out)
        if int(bound.max()) <= min(-acc.min_int, acc.max_int):
            out = out + x @ w
            return (out, overflow) if return_overflow else out
    for k in range(x.shape[1]):
        out, ovf = saturate(out + x[:, k:k + 1] * w[k:k + 1, :], acc, return_overflow=True)
        overflow |= ovf.any(axis=1)
    if return_overflow:
        return out, overflow
    return out


# --- Amaranth expressions --------------------------------------------------------------------

def hdl_mul_const(value, k):
    """Amaranth expression: the unsigned ``value`` times the constant ``k >= 0``, as a sum
    of shifted copies (one per set bit of ``k``), so that synthesis spends adders, not a
    multiplier block, on it."""
    value = Value.cast(value)
    terms = [value << bit for bit in range(k.bit_length()) if (k >> bit) & 1]
    if not terms:
        return Const(0, 1)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def hdl_saturate(value, fmt):
    """Amaranth expression clamping the signed ``value`` to ``fmt``.

    Returns ``(result, overflow)``: ``result`` has shape ``fmt.shape``;
    ``overflow`` is a 1-bit expression, high when clamping happened.
    """
    value = Value.cast(value)
    if not value.shape().signed:
        value = Cat(value, Const(0, 1)).as_signed()
    if len(value) <= fmt.width:
        return value.as_signed() if len(value) == fmt.width else value, Const(0, 1)
    # The value fits iff the bits from the destination's sign bit upwards are all equal.
    top = value[fmt.width - 1:]
    fits = ~top.any() | top.all()
    bound = Mux(value[-1], Const(fmt.min_int, fmt.shape), Const(fmt.max_int, fmt.shape))
    result = Mux(fits, value[:fmt.width].as_signed(), bound)
    return result, ~fits


def hdl_round_shift(value, shift):
    """Amaranth expression for :func:`round_shift` (signed ``value``)."""
    value = Value.cast(value)
    if shift > 0:
        return (value + (1 << (shift - 1))) >> shift
    if shift < 0:
        return value << -shift
    return value


def hdl_stochastic_round(value, src, dst, random_bits):
    """Amaranth expression: ``value`` (format ``src``) plus the low ``src.frac - dst.frac``
    bits of ``random_bits``, shifted to ``dst``'s fraction: :func:`stochastic_narrow`
    before its saturation (:func:`hdl_saturate`), so that a pipeline can register between
    the two."""
    shift = src.frac - dst.frac
    offset = Value.cast(random_bits)[:shift]
    return (Value.cast(value) + offset) >> shift


def hdl_xorshift32(state):
    """Amaranth expression: the next xorshift32 state after the 32-bit ``state``."""
    x = Value.cast(state)[:32]
    x = (x ^ (x << 13))[:32]
    x = (x ^ (x >> 17))[:32]
    return (x ^ (x << 5))[:32]


def hdl_narrow(value, src, dst):
    """Amaranth expression for :func:`narrow`: returns ``(result, overflow)``.

    When it drops fraction bits, the rounding is the carry into the kept bits (the value
    shifted right, plus the highest dropped bit) and only the destination's width of
    them is added: whether the result fits is decided from the input beside that carry
    chain (the kept bits fit and are not the largest value while the carry is set, or
    are one below the smallest and the carry is set), so that one multiplexer, not a
    wide comparison, follows the adder."""
    value = Value.cast(value)
    if not value.shape().signed:
        value = Cat(value, Const(0, 1)).as_signed()
    shift = src.frac - dst.frac
    if shift <= 0 or len(value) - shift <= dst.width:
        return hdl_saturate(hdl_round_shift(value, shift), dst)
    kept = value[shift:].as_signed()             # floor(value / 2 ** shift)
    carry = value[shift - 1]                     # rounds to nearest, ties upwards
    top = kept[dst.width - 1:]
    ones = kept[:dst.width - 1].all()
    at_max = ~top.any() & ones                     # the largest value: the carry overflows
    below_min = top[1:].all() & ~top[0] & ones     # one below the smallest: it comes back
    fits = ((~top.any() | top.all()) & ~(at_max & carry)) | (below_min & carry)
    total = (kept[:dst.width] + carry)[:dst.width].as_signed()
    bound = Mux(value[-1], Const(dst.min_int, dst.shape), Const(dst.max_int, dst.shape))
    return Mux(fits, total, bound), ~fits


def hdl_add_sat(a, b, fmt):
    """Amaranth expression for :func:`add_sat`: returns ``(result, overflow)``."""
    return hdl_saturate(Value.cast(a) + Value.cast(b), fmt)


def hdl_mul_narrow(a, fmt_a, b, fmt_b, dst):
    """Amaranth expression for :func:`mul_narrow`: returns ``(result, overflow)``."""
    src = FixedFormat(min(62, fmt_a.width + fmt_b.width), fmt_a.frac + fmt_b.frac)
    return hdl_narrow(Value.cast(a) * Value.cast(b), src, dst)
