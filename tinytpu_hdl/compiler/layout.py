"""How matrices are laid out in unified-buffer rows of ``n`` lanes.

*Blocked* layout of an ``(R, C)`` matrix: ``ceil(C / n)`` blocks of ``R`` rows;
element ``(r, c)`` is in row ``(c // n) * R + r``, lane ``c % n``. Streaming
the rows of one block feeds ``n`` columns of the matrix through the array.

Feature dimensions of the layouts below are padded to whole tiles, ``pad(F) =
ceil(F / n) * n`` (the padding rows are zero), so that every weight tile a program
loads is a whole one and no loop needs a partial last iteration.

*Transposed-chunk* layout of a ``(B, F)`` activation matrix (the transpose
that weight gradients stream): the batch is cut into ``nb = ceil(B / n)``
chunks of ``n`` samples; row ``f * nb + bt`` holds feature ``f`` of the
samples of chunk ``bt`` (lane = sample within the chunk), for ``f < pad(F)``, and
rows ``pad(F) * nb .. pad(F) * nb + nb - 1`` are all ones (they give the bias
gradient). Chunk ``bt``'s ``pad(F) + 1`` rows are read with stride ``nb``.

*Parameter* layout of a layer ``(W, b)`` with ``W`` of shape ``(out, in)``:
for each output tile ``ot`` of ``n`` outputs, ``pad(in) + 1`` rows: the rows of
``W^T`` (row ``i`` holds ``W[ot*n : ot*n+n, i]``, zero for ``i >= in``) and then the
bias row. The weight gradient of a tile lands in the accumulators in the same order, so
one gradient-descent instruction updates weights and bias together.
"""

import numpy as np

__all__ = ["ceil_div", "pad", "to_blocked", "from_blocked", "to_transposed_chunks",
           "to_params", "from_params"]


def ceil_div(a, b):
    return -(-a // b)


def pad(features, n):
    """``features`` rounded up to whole tiles of ``n``."""
    return ceil_div(features, n) * n


def _lanes(n, values):
    out = np.zeros((values.shape[0], n), dtype=np.int64)
    out[:, :values.shape[1]] = values
    return out


def to_blocked(raw, n):
    """Rows of the blocked layout of the ``(R, C)`` integer matrix ``raw``."""
    raw = np.asarray(raw, dtype=np.int64)
    R, C = raw.shape
    return np.concatenate([_lanes(n, raw[:, j * n:(j + 1) * n]) for j in range(ceil_div(C, n))]) \
        if C else np.zeros((0, n), dtype=np.int64)


def from_blocked(rows, R, C, n):
    """Inverse of :func:`to_blocked`."""
    rows = np.asarray(rows, dtype=np.int64)
    blocks = [rows[j * R:(j + 1) * R, :min(n, C - j * n)] for j in range(ceil_div(C, n))]
    return np.concatenate(blocks, axis=1)


def to_transposed_chunks(raw, n, one):
    """Rows of the transposed-chunk layout of the ``(B, F)`` matrix ``raw``; ``one`` is the
    raw encoding of 1.0."""
    raw = np.asarray(raw, dtype=np.int64)
    B, F = raw.shape
    nb = ceil_div(B, n)
    padded = np.zeros((nb * n, pad(F, n)), dtype=np.int64)
    padded[:B, :F] = raw
    # chunk bt, feature f -> row f * nb + bt, lanes = samples of the chunk
    chunks = padded.reshape(nb, n, -1).transpose(2, 0, 1).reshape(-1, n)
    return np.concatenate([chunks, np.full((nb, n), one, dtype=np.int64)])


def to_params(w_raw, b_raw, n):
    """Rows of the parameter layout of a layer with ``W`` (out, in) and ``b`` (out,)."""
    w_raw = np.asarray(w_raw, dtype=np.int64)
    b_raw = np.asarray(b_raw, dtype=np.int64)
    out_f, in_f = w_raw.shape
    rows = []
    for ot in range(ceil_div(out_f, n)):
        tile = np.zeros((pad(in_f, n), n), dtype=np.int64)
        part = w_raw[ot * n:(ot + 1) * n, :].T          # (in, <=n)
        tile[:in_f, :part.shape[1]] = part
        rows.append(tile)
        rows.append(_lanes(n, b_raw[None, ot * n:(ot + 1) * n]))
    return np.concatenate(rows)


def from_params(rows, out_f, in_f, n):
    """Inverse of :func:`to_params`: ``(W, b)``."""
    rows = np.asarray(rows, dtype=np.int64)
    w = np.zeros((out_f, in_f), dtype=np.int64)
    b = np.zeros(out_f, dtype=np.int64)
    per = pad(in_f, n) + 1
    for ot in range(ceil_div(out_f, n)):
        k = min(n, out_f - ot * n)
        block = rows[ot * per:(ot + 1) * per]
        w[ot * n:ot * n + k] = block[:in_f, :k].T
        b[ot * n:ot * n + k] = block[per - 1, :k]
    return w, b
