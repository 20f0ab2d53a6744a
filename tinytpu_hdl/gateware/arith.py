"""Carry-save arithmetic: sums of many terms with one carry chain.

A sum of ``k`` terms built as a chain of ``k - 1`` adders puts ``k - 1`` carry chains one
after another on a path. Here the terms are first reduced with 3:2 compressors (full
adders side by side, one LUT level each, no carry between the bits) to two terms whose
sum is the same modulo ``2 ** width``; one carry chain then adds those two, or decides a
comparison from its sign. Everything is modulo ``2 ** width``: callers choose a width
in which the true results, with their sign, fit.
"""

from amaranth.hdl import Cat, Const, Value

__all__ = ["compress", "complement", "product_terms", "negative", "reciprocal", "quotient"]


def _fit(value, width):
    value = Value.cast(value)
    if len(value) >= width:
        return value[:width]
    return Cat(value, Const(0, width - len(value)))


def complement(value, width):
    """``~value`` in ``width`` bits, i.e. ``-value - 1`` modulo ``2 ** width``: a term
    that subtracts ``value`` with a carry-in of one."""
    return ~_fit(value, width)


def compress(terms, width, *, carry_in=0):
    """Two terms whose sum equals the sum of ``terms`` (plus ``carry_in``, 0 or 1) modulo
    ``2 ** width``: the terms (unsigned, zero-extended or cut to ``width`` bits; integers
    allowed) reduced by 3:2 compressors, three terms to two per level, until two are left.
    The last level always reduces three terms to a sum and a carry term, and the carry
    term's lowest bit is always free: ``carry_in`` takes it, at no cost."""
    terms = [_fit(Const(t, width) if isinstance(t, int) else t, width) for t in terms]
    while len(terms) < 3:
        terms.append(Const(0, width))
    while len(terms) > 2:
        reduced = []
        for i in range(0, len(terms) - 2, 3):
            a, b, c = terms[i:i + 3]
            reduced.append((a ^ b ^ c)[:width])
            carry = (a & b) | (a & c) | (b & c)
            low = Const(carry_in, 1) if len(terms) == 3 else Const(0, 1)
            reduced.append(Cat(low, carry[:width - 1]))
        reduced += terms[len(terms) - len(terms) % 3:] if len(terms) % 3 else []
        terms = reduced
    return terms[0], terms[1]


def product_terms(a, b):
    """The partial products of the unsigned ``a`` and ``b``: ``a << i`` where bit ``i`` of
    ``b`` is set, for every bit of ``b`` (their sum is ``a * b``)."""
    a, b = Value.cast(a).as_unsigned(), Value.cast(b).as_unsigned()
    return [Cat(Const(0, i), a) & Cat(b[i].replicate(len(a) + i)) for i in range(len(b))]


def negative(plus, minus=(), *, width):
    """Whether ``sum(plus) - sum(minus)`` is negative, for unsigned terms whose true
    difference lies in ``[-2 ** (width - 1), 2 ** (width - 1))``: each subtracted term
    enters as its complement plus one (the ones as the compressors' carry-in, and a
    constant term for more than one), the terms are compressed to two, and one carry
    chain gives the sign bit."""
    terms = list(plus) + [complement(t, width) for t in minus]
    if len(minus) > 1:
        terms.append(len(minus) - 1)
    s, c = compress(terms, width, carry_in=1 if minus else 0)
    return (s + c)[width - 1]


def reciprocal(divisor, width):
    """``(m, shift)`` such that ``(v * m) >> shift == v // divisor`` for every ``v`` below
    ``2 ** width`` (a power of two: ``m`` is 1): ``shift = width + ceil(log2(divisor))``,
    ``m = ceil(2 ** shift / divisor)``."""
    if divisor < 1:
        raise ValueError(f"divisor must be positive, not {divisor!r}")
    if divisor & (divisor - 1) == 0:
        return 1, divisor.bit_length() - 1
    shift = width + (divisor - 1).bit_length()
    return -(-(1 << shift) // divisor), shift


def quotient(value, divisor, *, less=0):
    """``(value - less) // divisor`` for the unsigned ``value``, a constant ``divisor`` and
    a constant ``less`` no greater than ``value`` (else the result is undefined): a
    subtraction and a shift, or the partial products of :func:`reciprocal` compressed with
    ``-less * m`` to two terms and one carry chain (the subtraction then costs no carry
    chain of its own)."""
    value = Value.cast(value).as_unsigned()
    m, shift = reciprocal(divisor, len(value))
    if m == 1:
        if less:
            value = (value - less)[:len(value)]
        return value[shift:] if shift < len(value) else Const(0, 1)
    width = len(value) + m.bit_length()
    terms = [Cat(Const(0, bit), value) for bit in range(m.bit_length()) if (m >> bit) & 1]
    if less:
        # (value - less) * m = value * m - less * m, below 2 ** width for value - less
        # below 2 ** len(value): modulo 2 ** width the constant's complement is exact.
        terms.append((-less * m) % (1 << width))
    s, c = compress(terms, width)
    return (s + c)[shift:width]
