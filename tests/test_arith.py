"""Carry-save helpers (gateware/arith.py), exhaustive on small widths against Python."""

import itertools

import numpy as np
import pytest
from amaranth.hdl import Signal

from tinytpu_hdl.gateware.arith import (
    complement, compress, negative, product_terms, quotient, reciprocal,
)

from test_numeric import _eval_comb


@pytest.mark.parametrize("count,carry_in", [(1, 0), (2, 1), (3, 0), (4, 1), (5, 0), (7, 1)])
def test_compress_keeps_the_sum_modulo_the_width(count, carry_in):
    width = 5
    ins = [Signal(3, name=f"t{i}") for i in range(count)]
    s, c = compress(ins, width, carry_in=carry_in)
    out_s, out_c = Signal(width), Signal(width)
    rng = np.random.default_rng(count)
    vectors = rng.integers(0, 8, (300, count))
    got = _eval_comb(ins, [(out_s, s), (out_c, c)], vectors)
    want = (vectors.sum(axis=1) + carry_in) % 2 ** width
    assert np.array_equal((got[:, 0] + got[:, 1]) % 2 ** width, want)


def test_compress_with_integer_terms():
    a = Signal(4)
    s, c = compress([a, 5, 9], 6, carry_in=1)
    out_s, out_c = Signal(6), Signal(6)
    vectors = np.arange(16)[:, None]
    got = _eval_comb([a], [(out_s, s), (out_c, c)], vectors)
    assert np.array_equal((got[:, 0] + got[:, 1]) % 64, (vectors[:, 0] + 15) % 64)


def test_product_terms_sum_to_the_product():
    a, b = Signal(4), Signal(3)
    total = Signal(7)
    terms = product_terms(a, b)
    expr = terms[0]
    for t in terms[1:]:
        expr = expr + t
    vectors = np.array(list(itertools.product(range(16), range(8))))
    got = _eval_comb([a, b], [(total, expr)], vectors)
    assert np.array_equal(got[:, 0], vectors[:, 0] * vectors[:, 1])


@pytest.mark.parametrize("minus_count", [0, 1, 2])
def test_negative_exhaustive(minus_count):
    # Three added 3-bit terms and up to two subtracted ones: every combination, the sign
    # taken in 6 bits (the true difference lies in [-14, 21]).
    plus = [Signal(3, name=f"p{i}") for i in range(3)]
    minus = [Signal(3, name=f"m{i}") for i in range(minus_count)]
    flag = Signal()
    expr = negative(plus, minus, width=6)
    vectors = np.array(list(itertools.product(range(8), repeat=3 + minus_count)))
    got = _eval_comb(plus + minus, [(flag, expr)], vectors)
    diff = vectors[:, :3].sum(axis=1) - vectors[:, 3:].sum(axis=1)
    assert np.array_equal(got[:, 0], diff < 0)


def test_negative_of_a_carry_save_pair_and_a_constant():
    # The control unit's form: an address plus a span held as two carry-save terms,
    # against a memory depth.
    addr, k, stride = Signal(4), Signal(3), Signal(3)
    s, c = compress(product_terms(k, stride) + [complement(stride, 8)], 8,
                    carry_in=1)  # (k - 1) * stride
    flag = Signal()
    expr = negative([addr, s, c], [11], width=8)
    vectors = np.array(list(itertools.product(range(16), range(1, 8), range(8))))
    got = _eval_comb([addr, k, stride], [(flag, expr)], vectors)
    want = vectors[:, 0] + (vectors[:, 1] - 1) * vectors[:, 2] < 11
    assert np.array_equal(got[:, 0], want)


@pytest.mark.parametrize("divisor", range(1, 17))
def test_reciprocal_divides_every_16_bit_value_exactly(divisor):
    m, shift = reciprocal(divisor, 16)
    v = np.arange(1 << 16, dtype=np.int64)
    assert np.array_equal((v * m) >> shift, v // divisor)


@pytest.mark.parametrize("divisor", [1, 2, 3, 5, 8, 12])
def test_quotient_in_gateware(divisor):
    a = Signal(10)
    out = Signal(10)
    vectors = np.arange(1 << 10)[:, None]
    got = _eval_comb([a], [(out, quotient(a, divisor))], vectors)
    assert np.array_equal(got[:, 0], vectors[:, 0] // divisor)


@pytest.mark.parametrize("divisor, less", [(3, 1), (10, 1), (12, 1), (7, 5), (8, 1), (1, 1),
                                           (10, 0)])
def test_quotient_of_a_difference_in_gateware(divisor, less):
    """``(v - less) // divisor`` on 16-bit values (the transposed VPU's extent takes
    ``(rows - 1) // n``), including the largest, where the reciprocal's product needs
    every bit."""
    a = Signal(16)
    out = Signal(16)
    rng = np.random.default_rng(divisor * 10 + less)
    v = np.unique(np.concatenate([np.arange(less, 1500), np.arange(65536 - 1500, 65536),
                                  rng.integers(less, 65536, 1500)]))
    got = _eval_comb([a], [(out, quotient(a, divisor, less=less))], v[:, None])
    assert np.array_equal(got[:, 0], (v - less) // divisor)
