"""The number format: numpy rules checked against exact rational arithmetic, and the Amaranth
expressions checked exhaustively against the numpy rules on small formats."""

import math
from fractions import Fraction

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.numeric import (
    FixedFormat, FormatError, Q8_8, Q16_16, add_sat, dot_chain, hdl_add_sat, hdl_mul_narrow,
    hdl_narrow, hdl_saturate, mul_narrow, narrow, round_shift, saturate, xorshift32,
    xorshift32_sequence, xorshift_seed,
)


def exact_round(q: Fraction) -> int:
    """Round to nearest, ties toward +infinity, on an exact rational."""
    return math.floor(q + Fraction(1, 2))


def clamp(v, fmt):
    return max(fmt.min_int, min(fmt.max_int, v))


class TestFixedFormat:
    def test_q8_8_constants(self):
        assert (Q8_8.width, Q8_8.frac, Q8_8.min_int, Q8_8.max_int) == (16, 8, -32768, 32767)
        assert Q8_8.min_value == -128.0 and Q8_8.max_value == 127.99609375
        assert str(Q8_8) == "Q8.8" and str(Q16_16) == "Q16.16"

    def test_encode_decode_roundtrip_of_representable_values(self):
        raw = np.arange(Q8_8.min_int, Q8_8.max_int + 1)
        assert np.array_equal(Q8_8.encode(Q8_8.decode(raw)), raw)

    def test_encode_rounds_ties_up(self):
        lsb = Q8_8.lsb
        assert list(Q8_8.encode([0.5 * lsb, -0.5 * lsb, 1.5 * lsb, -1.5 * lsb, 0.49 * lsb,
                                 -0.51 * lsb])) == [1, 0, 2, -1, 0, -1]

    def test_encode_saturates_and_counts(self):
        raw, clipped = Q8_8.encode([1000.0, -1000.0, 127.99, -128.0, 3.0], return_clipped=True)
        assert list(raw) == [32767, -32768, 32765, -32768, 768]
        assert clipped == 2

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_encode_rejects_non_finite(self, bad):
        with pytest.raises(FormatError, match="NaN or infinite"):
            Q8_8.encode([1.0, bad])

    def test_unsigned_bit_patterns(self):
        raw = np.array([-32768, -1, 0, 1, 32767])
        bits = Q8_8.to_unsigned(raw)
        assert list(bits) == [0x8000, 0xFFFF, 0, 1, 0x7FFF]
        assert np.array_equal(Q8_8.from_unsigned(bits), raw)

    @pytest.mark.parametrize("args, message", [
        ((1, 0), "between 2 and 62"),
        ((63, 8), "between 2 and 62"),
        ((16, 16), "between 0 and width - 1"),
        ((16, -1), "between 0 and width - 1"),
    ])
    def test_invalid_formats(self, args, message):
        with pytest.raises(ValueError, match=message):
            FixedFormat(*args)

    def test_invalid_types(self):
        with pytest.raises(TypeError, match="width must be an integer"):
            FixedFormat(16.0, 8)


class TestNumpyRules:
    rng = np.random.default_rng(1)

    def test_round_shift_matches_exact_rounding(self):
        values = self.rng.integers(-2**40, 2**40, 2000)
        values[:6] = [-3, -2, -1, 1, 2, 3]
        for shift in (1, 2, 8, 16):
            got = round_shift(values, shift)
            want = [exact_round(Fraction(int(v), 2**shift)) for v in values]
            assert list(got) == want

    def test_narrow_acc_to_data(self):
        values = np.concatenate([self.rng.integers(-2**31, 2**31, 3000),
                                 [2**23, 2**23 - 128, 2**23 - 129, -2**23 - 128, -2**23 - 129]])
        got, ovf = narrow(values, Q16_16, Q8_8, return_overflow=True)
        for v, g, o in zip(values, got, ovf):
            r = exact_round(Fraction(int(v), 256))
            assert g == clamp(r, Q8_8)
            assert o == (r != clamp(r, Q8_8))

    def test_mul_narrow(self):
        a = self.rng.integers(-32768, 32768, 3000)
        b = self.rng.integers(-32768, 32768, 3000)
        got = mul_narrow(a, Q8_8, b, Q8_8, Q8_8)
        for x, y, g in zip(a, b, got):
            assert g == clamp(exact_round(Fraction(int(x) * int(y), 256)), Q8_8)

    def test_add_sat(self):
        a = np.array([32767, -32768, 100, -5])
        b = np.array([1, -1, 200, 3])
        got, ovf = add_sat(a, b, Q8_8, return_overflow=True)
        assert list(got) == [32767, -32768, 300, -2]
        assert list(ovf) == [True, True, False, False]

    def test_dot_chain_saturates_in_order(self):
        # 2**30 + 2**30 saturates at row 1; the negative product at row 2 then pulls the
        # clamped value down: the result differs from clamp(sum) on purpose.
        x = np.array([[-32768, -32768, 32767]])
        w = np.array([[-32768], [-32768], [-32768]])
        got, ovf = dot_chain(x, w, Q16_16, return_overflow=True)
        expect = clamp(2**31 - 1 + 32767 * -32768, Q16_16)
        assert got[0, 0] == expect and ovf[0]
        assert got[0, 0] != clamp(int((x @ w)[0, 0]), Q16_16)

    def test_dot_chain_matches_matmul_without_overflow(self):
        x = self.rng.integers(-3000, 3000, (7, 5))
        w = self.rng.integers(-3000, 3000, (5, 3))
        got, ovf = dot_chain(x, w, Q16_16, return_overflow=True)
        assert np.array_equal(got, x @ w) and not ovf.any()

    def test_dot_chain_shape_check(self):
        with pytest.raises(ValueError, match="dot_chain needs"):
            dot_chain(np.zeros((2, 3)), np.zeros((2, 3)), Q16_16)


def _eval_comb(inputs, outputs, vectors):
    """Drive combinational ``inputs`` with each row of ``vectors``; return the outputs."""
    m = Module()
    for out, expr in outputs:
        m.d.comb += out.eq(expr)
    got = []

    async def tb(ctx):
        for row in vectors:
            for sig, v in zip(inputs, row):
                ctx.set(sig, int(v))
            got.append([ctx.get(out) for out, _ in outputs])

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    return np.array(got, dtype=np.int64)


class TestHdlExpressions:
    """Exhaustive on small formats, so every rounding tie and saturation edge is hit."""

    small = FixedFormat(5, 2)
    small_acc = FixedFormat(10, 4)

    def test_saturate_exhaustive(self):
        a = Signal(signed(9))
        res, ovf = hdl_saturate(a, self.small)
        out, flag = Signal(self.small.shape), Signal()
        vectors = np.arange(-256, 256)[:, None]
        got = _eval_comb([a], [(out, res), (flag, ovf)], vectors)
        want, want_ovf = saturate(vectors[:, 0], self.small, return_overflow=True)
        assert np.array_equal(got[:, 0], want) and np.array_equal(got[:, 1], want_ovf)

    def test_narrow_exhaustive(self):
        a = Signal(self.small_acc.shape)
        res, ovf = hdl_narrow(a, self.small_acc, self.small)
        out, flag = Signal(self.small.shape), Signal()
        vectors = np.arange(-512, 512)[:, None]
        got = _eval_comb([a], [(out, res), (flag, ovf)], vectors)
        want, want_ovf = narrow(vectors[:, 0], self.small_acc, self.small, return_overflow=True)
        assert np.array_equal(got[:, 0], want) and np.array_equal(got[:, 1], want_ovf)

    @pytest.mark.parametrize("src,dst", [
        (FixedFormat(10, 4), FixedFormat(5, 2)), (FixedFormat(10, 4), FixedFormat(4, 3)),
        (FixedFormat(9, 1), FixedFormat(6, 0)), (FixedFormat(8, 6), FixedFormat(6, 1)),
        (FixedFormat(8, 2), FixedFormat(7, 1)), (FixedFormat(8, 2), FixedFormat(8, 4)),
        (FixedFormat(6, 3), FixedFormat(2, 0))])
    def test_narrow_exhaustive_over_shapes(self, src, dst):
        # Every value of the source, so the rounding carry at and beside the largest and
        # smallest destination values, and the shifts that keep fewer bits than the
        # destination holds, are all met.
        a = Signal(src.shape)
        res, ovf = hdl_narrow(a, src, dst)
        out, flag = Signal(dst.shape), Signal()
        vectors = np.arange(src.min_int, src.max_int + 1)[:, None]
        got = _eval_comb([a], [(out, res), (flag, ovf)], vectors)
        want, want_ovf = narrow(vectors[:, 0], src, dst, return_overflow=True)
        assert np.array_equal(got[:, 0], want) and np.array_equal(got[:, 1], want_ovf)

    def test_mul_narrow_and_add_sat_exhaustive(self):
        a, b = Signal(self.small.shape), Signal(self.small.shape)
        prod, prod_ovf = hdl_mul_narrow(a, self.small, b, self.small, self.small)
        total, total_ovf = hdl_add_sat(a, b, self.small)
        outs = [Signal(self.small.shape), Signal(), Signal(self.small.shape), Signal()]
        grid = np.array([(x, y) for x in range(-16, 16) for y in range(-16, 16)])
        got = _eval_comb([a, b], list(zip(outs, [prod, prod_ovf, total, total_ovf])), grid)
        want_p, want_po = mul_narrow(grid[:, 0], self.small, grid[:, 1], self.small, self.small,
                                     return_overflow=True)
        want_s, want_so = add_sat(grid[:, 0], grid[:, 1], self.small, return_overflow=True)
        assert np.array_equal(got[:, 0], want_p) and np.array_equal(got[:, 1], want_po)
        assert np.array_equal(got[:, 2], want_s) and np.array_equal(got[:, 3], want_so)

    def test_q8_8_narrow_random(self):
        a = Signal(Q16_16.shape)
        res, _ = hdl_narrow(a, Q16_16, Q8_8)
        out = Signal(Q8_8.shape)
        vectors = np.random.default_rng(3).integers(-2**31, 2**31, 500)[:, None]
        got = _eval_comb([a], [(out, res)], vectors)
        assert np.array_equal(got[:, 0], narrow(vectors[:, 0], Q16_16, Q8_8))


def test_xorshift32_is_marsaglias_and_its_sequence_steps_it():
    # Marsaglia's xorshift32 (13, 17, 5) from 1: 270369, 67634689, 2647435461.
    x = np.array([1])
    seen = []
    for _ in range(3):
        x = xorshift32(x)
        seen.append(int(x[0]))
    assert seen == [270369, 67634689, 2647435461]
    start = np.array([xorshift_seed(99, lane) for lane in range(6)])
    states, after = xorshift32_sequence(start, 50)
    x = start
    for row in states:
        assert np.array_equal(row, x)
        x = xorshift32(x)
    assert np.array_equal(after, x)


class TestConfig:
    def test_default_accumulator(self):
        cfg = TPUConfig(n=4)
        assert cfg.data == Q8_8 and cfg.acc == Q16_16

    def test_custom_format_gets_matching_accumulator(self):
        cfg = TPUConfig(n=2, data=FixedFormat(8, 4))
        assert cfg.acc == FixedFormat(16, 8)

    @pytest.mark.parametrize("n", [0, -1, 2.0, True])
    def test_bad_n(self, n):
        with pytest.raises(ValueError, match="positive integer"):
            TPUConfig(n=n)

    def test_bad_accumulator(self):
        with pytest.raises(ValueError, match="needs 16 fraction bits"):
            TPUConfig(n=2, acc=FixedFormat(32, 8))
