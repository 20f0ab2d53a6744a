"""Data layouts of the compiler, checked against plain numpy reshapes."""

import numpy as np
import pytest

from tinytpu_hdl.compiler.layout import (
    from_blocked, from_params, to_blocked, to_params, to_transposed_chunks,
)


@pytest.mark.parametrize("shape, n", [((5, 7), 2), ((4, 4), 4), ((1, 9), 8), ((6, 3), 4)])
def test_blocked_roundtrip_and_positions(shape, n):
    rng = np.random.default_rng(0)
    m = rng.integers(-100, 100, shape)
    rows = to_blocked(m, n)
    R, C = shape
    assert rows.shape == (-(-C // n) * R, n)
    for r in range(R):
        for c in range(C):
            assert rows[(c // n) * R + r, c % n] == m[r, c]
    assert np.array_equal(from_blocked(rows, R, C, n), m)


@pytest.mark.parametrize("batch, features, n", [(4, 2, 2), (5, 3, 2), (32, 64, 8), (3, 5, 4)])
def test_transposed_chunks(batch, features, n):
    rng = np.random.default_rng(1)
    h = rng.integers(-100, 100, (batch, features))
    rows = to_transposed_chunks(h, n, one=256)
    nb = -(-batch // n)
    fpad = -(-features // n) * n
    assert rows.shape == ((fpad + 1) * nb, n)
    for b in range(batch):
        for f in range(features):
            assert rows[f * nb + b // n, b % n] == h[b, f]
    padding = [(b, f) for b in range(nb * n) for f in range(fpad) if b >= batch or f >= features]
    assert all(rows[f * nb + b // n, b % n] == 0 for b, f in padding)
    assert (rows[fpad * nb:] == 256).all()


@pytest.mark.parametrize("out_f, in_f, n", [(2, 2, 2), (1, 2, 2), (10, 32, 8), (5, 3, 4)])
def test_params_roundtrip(out_f, in_f, n):
    rng = np.random.default_rng(2)
    w = rng.integers(-100, 100, (out_f, in_f))
    b = rng.integers(-100, 100, out_f)
    rows = to_params(w, b, n)
    in_pad = -(-in_f // n) * n
    assert rows.shape == (-(-out_f // n) * (in_pad + 1), n)
    # Tile ot, row i holds W[ot*n:(ot+1)*n, i] (zero rows up to the whole tile); then the
    # bias.
    assert np.array_equal(rows[:in_f, :min(n, out_f)], w[:n].T)
    assert not rows[in_f:in_pad].any()
    assert np.array_equal(rows[in_pad, :min(n, out_f)], b[:n])
    w2, b2 = from_params(rows, out_f, in_f, n)
    assert np.array_equal(w2, w) and np.array_equal(b2, b)
