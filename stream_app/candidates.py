"""Lists from candidates: what the engine scores when the catalogue is too large to scan.

An exact list scores every item (one BLAS product per micro-batch, then the blend,
exploration and top-N over whole rows): ~1.5 ms a list at 100 k items, ~12 ms at 1 M
(docs/benchmarks.md). From ``ann_min_items`` items on, the engine scores only candidates
per user: the IVF index's probe of the model's ranking (:mod:`stream_app.ann`), every item
the user's co-occurrence or transition score reaches (the neighbours of their recent
positives), and a seeded uniform sample of items for exploration slots.

The blend's z-scores still use the whole catalogue's moments, computed exactly without a
scan: a model score is an inner product with ``[embedding, bias]``, so its mean and variance
over all items follow from the items' mean vector and second-moment matrix (one small
product per model update); the co-occurrence and transition rows are sparse, so their
moments, and their covariances with the model's scores and each other, come from their
nonzeros, which are all candidates. So a
candidate's blended score equals the exact path's, and the lists agree whenever the exact
top-N is among the candidates (recall@20 0.997-0.999 from 10 k to 1 M items, bench/ann.py).
Exploration draws from the candidates only (the model's best, the co-occurrence neighbours
and the uniform sample), not from the whole catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from stream_app.ann import augmented, score_candidates


@dataclass
class ItemMoments:
    """Mean and second moment of the assigned items' ``[embedding, bias]`` vectors: the
    exact mean and variance of any user's model scores over the catalogue."""

    mean: np.ndarray            # (k + 1,)
    second: np.ndarray          # (k + 1, k + 1)

    @classmethod
    def of(cls, item_emb: np.ndarray, item_bias: np.ndarray, n_items: int) -> "ItemMoments":
        """From the first ``n_items`` rows; the product in float32 (10x faster than in
        float64; the z-scores need a few digits), the results in float64."""
        x = augmented(item_emb[:n_items], item_bias[:n_items])
        n = max(1, n_items)
        return cls(x.sum(axis=0).astype(np.float64) / n, (x.T @ x).astype(np.float64) / n)

    def score_moments(self, user_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per user (mean, variance) of ``user_emb @ item_emb.T + item_bias`` over the items."""
        q = np.concatenate([user_emb.astype(np.float64),
                            np.ones((len(user_emb), 1))], axis=1)
        mu = q @ self.mean
        var = np.einsum("ij,jk,ik->i", q, self.second, q) - mu * mu
        return mu, np.maximum(var, 0.0)


def union_rows(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (users x width) item-row blocks (-1 padded), each row sorted; returns
    the rows and a mask of the cells to ignore (padding and repeats of an item)."""
    m = np.concatenate([p for p in parts if p.shape[1]], axis=1)
    m.sort(axis=1)
    void = m < 0
    if m.shape[1] > 1:
        void[:, 1:] |= m[:, 1:] == m[:, :-1]
    return m, void


def padded(csr: sp.csr_matrix) -> np.ndarray:
    """The column indices of each CSR row as a (rows x max nnz) array, -1 padded."""
    lens = np.diff(csr.indptr)
    width = int(lens.max()) if len(lens) else 0
    out = np.full((csr.shape[0], width), -1, np.int64)
    if width:
        pos = np.arange(len(csr.indices)) - np.repeat(csr.indptr[:-1], lens)
        out[np.repeat(np.arange(csr.shape[0]), lens), pos] = csr.indices
    return out


def cell_keys(items: np.ndarray, n_items: int) -> np.ndarray:
    """Flat keys ``row * (n + 1) + item + 1`` of sorted candidate rows: non-decreasing over
    the flattened matrix (padding -1 sorts first in its row and gets the row's base key)."""
    base = np.arange(len(items), dtype=np.int64)[:, None] * (n_items + 1)
    return (base + items + 1).ravel()


def locate(keys: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_items: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Flat cell of each (row, item) pair among the candidates (its first copy), and
    whether it is there at all: a search of the few pairs in the many cells."""
    q = rows.astype(np.int64) * (n_items + 1) + cols + 1
    if len(keys) == 0 or len(q) == 0:
        return np.zeros(len(q), np.int64), np.zeros(len(q), bool)
    pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    return pos, keys[pos] == q


def score_union(user_emb: np.ndarray, items: np.ndarray, void: np.ndarray,
                item_emb: np.ndarray, item_bias: np.ndarray, moments: ItemMoments,
                terms: list[tuple[sp.csr_matrix, float]], n_items: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Blended scores of each user's sorted candidate ``items`` (``-inf`` where ``void``)
    and each user's standard deviation over the whole catalogue: ``(1 - sum(w)) z(model) +
    sum(w z(term))`` with exact moments.

    ``terms``: (users x n_items) CSR scores (co-occurrence, transitions) and their weights;
    every nonzero must be among the candidates (the covariance terms are summed over them).
    """
    model = score_candidates(user_emb, np.where(void, -1, items), item_emb, item_bias)
    mu_m, var_m = moments.score_moments(user_emb)
    terms = [(t, w) for t, w in terms if w > 0 and t is not None]
    sd_m = np.sqrt(var_m)
    sd_m[~(sd_m > 1e-12)] = 1.0
    if not terms:
        return model, sd_m[:, None].astype(np.float32)
    n_users = len(items)
    keys = cell_keys(items, n_items)
    finite = np.where(np.isfinite(model), model, 0.0)
    a = (1.0 - sum(w for _, w in terms)) / sd_m
    shift = -(a * mu_m)
    var = a * a * var_m
    dense: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []   # (scores, mean, b)
    for csr, w in terms:
        c = np.zeros(items.size, np.float32)
        owner = np.repeat(np.arange(n_users), np.diff(csr.indptr))
        pos, hit = locate(keys, owner, csr.indices, n_items)
        c[pos[hit]] = csr.data[hit]
        c = c.reshape(items.shape)
        csum = np.asarray(csr.sum(axis=1)).ravel().astype(np.float64)
        csq = np.bincount(owner, weights=csr.data.astype(np.float64) ** 2, minlength=n_users)
        mu_c = csum / n_items
        var_c = np.maximum(csq / n_items - mu_c ** 2, 0.0)
        sd_c = np.sqrt(var_c)
        sd_c[~(sd_c > 1e-12)] = 1.0
        b = w / sd_c
        shift -= b * mu_c
        cov = np.einsum("ij,ij->i", finite, c).astype(np.float64) / n_items - mu_m * mu_c
        var += b * b * var_c + 2 * a * b * cov
        for c2, mu2, b2 in dense:
            cov2 = np.einsum("ij,ij->i", c, c2).astype(np.float64) / n_items - mu_c * mu2
            var += 2 * b * b2 * cov2
        dense.append((c, mu_c, b))
    model *= a[:, None].astype(np.float32)
    for c, _, b in dense:
        c *= b[:, None].astype(np.float32)
        model += c
    model += shift[:, None].astype(np.float32)
    sd = np.sqrt(np.maximum(var, 0.0))
    sd[~(sd > 1e-12)] = 1.0
    return model, sd[:, None].astype(np.float32)


def mask_seen(scores: np.ndarray, items: np.ndarray, seen_rows: np.ndarray,
              seen_cols: np.ndarray, n_items: int) -> None:
    """-inf where a candidate is an item its user interacted with."""
    pos, hit = locate(cell_keys(items, n_items), seen_rows, seen_cols, n_items)
    scores.ravel()[pos[hit]] = -np.inf
