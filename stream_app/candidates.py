"""Lists from candidates: what the engine scores when the catalogue is too large to scan.

An exact list scores every item (one BLAS product per micro-batch, then the blend,
exploration and top-N over whole rows): ~1.5 ms a list at 100 k items, ~12 ms at 1 M
(docs/benchmarks.md). From ``ann_min_items`` items on, the engine scores only candidates
per user: the IVF index's probe of the model's ranking (:mod:`stream_app.ann`), every item
the user's co-occurrence score reaches (the neighbours of their recent positives), and a
seeded uniform sample of items for exploration slots.

The blend's z-scores still use the whole catalogue's moments, computed exactly without a
scan: a model score is an inner product with ``[embedding, bias]``, so its mean and variance
over all items follow from the items' mean vector and second-moment matrix (one small
product per model update); the co-occurrence row is sparse, so its moments, and its
covariance with the model's scores, come from its nonzeros, which are all candidates. So a
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
        x = augmented(item_emb[:n_items], item_bias[:n_items]).astype(np.float64)
        return cls(x.mean(axis=0), (x.T @ x) / max(1, n_items))

    def score_moments(self, user_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per user (mean, variance) of ``user_emb @ item_emb.T + item_bias`` over the items."""
        q = np.concatenate([user_emb.astype(np.float64),
                            np.ones((len(user_emb), 1))], axis=1)
        mu = q @ self.mean
        var = np.einsum("ij,jk,ik->i", q, self.second, q) - mu * mu
        return mu, np.maximum(var, 0.0)


def union_rows(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate (users x width) item-row blocks (-1 padded) and drop repeats per row:
    each row sorted, a repeat replaced by -1."""
    m = np.concatenate([p for p in parts if p.shape[1]], axis=1) if parts else \
        np.empty((0, 0), np.int64)
    m.sort(axis=1)
    if m.shape[1] > 1:
        m[:, 1:][m[:, 1:] == m[:, :-1]] = -1
    return m


def padded(csr: sp.csr_matrix) -> np.ndarray:
    """The column indices of each CSR row as a (rows x max nnz) array, -1 padded."""
    lens = np.diff(csr.indptr)
    width = int(lens.max()) if len(lens) else 0
    out = np.full((csr.shape[0], width), -1, np.int64)
    if width:
        pos = np.arange(len(csr.indices)) - np.repeat(csr.indptr[:-1], lens)
        out[np.repeat(np.arange(csr.shape[0]), lens), pos] = csr.indices
    return out


def lookup(keys_sorted: np.ndarray, values: np.ndarray, queries: np.ndarray,
           missing: float = 0.0) -> np.ndarray:
    """``values[k]`` where ``keys_sorted[k] == query``, else ``missing`` (vectorised)."""
    if len(keys_sorted) == 0:
        return np.full(queries.shape, missing, values.dtype if len(values) else np.float32)
    pos = np.minimum(np.searchsorted(keys_sorted, queries), len(keys_sorted) - 1)
    return np.where(keys_sorted[pos] == queries, values[pos], missing)


@dataclass
class Candidates:
    """One micro-batch chunk's candidate matrix, ready for top-N and exploration."""

    items: np.ndarray           # (users x width) item rows, -1 padding
    scores: np.ndarray          # (users x width) blended scores, -inf padding and seen
    sd: np.ndarray              # (users x 1) standard deviation over the whole catalogue
    positives: np.ndarray       # (users x width) positives per candidate item


def score_union(user_emb: np.ndarray, items: np.ndarray, item_emb: np.ndarray,
                item_bias: np.ndarray, moments: ItemMoments, cooc: sp.csr_matrix | None,
                weight: float, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Blended scores of each user's candidate ``items`` and each user's standard deviation
    over the whole catalogue: ``(1 - w) z(model) + w z(cooc)`` with exact moments.

    ``cooc``: (users x n_items) CSR of the co-occurrence scores with sorted indices; every
    one of its nonzeros must be among the candidates (the covariance term uses them).
    """
    model = score_candidates(user_emb, items, item_emb, item_bias)
    mu_m, var_m = moments.score_moments(user_emb)
    if cooc is None or weight <= 0:
        sd = np.sqrt(var_m)
        sd[~(sd > 1e-12)] = 1.0
        return model, sd[:, None].astype(np.float32)
    n_users, width = items.shape
    keys = (np.arange(n_users, dtype=np.int64)[:, None] * n_items + items).ravel()
    c_keys = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(cooc.indptr)) * n_items \
        + cooc.indices
    c = lookup(c_keys, cooc.data.astype(np.float32), keys).reshape(n_users, width)
    c[items < 0] = 0.0
    csum = np.asarray(cooc.sum(axis=1)).ravel().astype(np.float64)
    csq = np.asarray(cooc.multiply(cooc).sum(axis=1)).ravel().astype(np.float64)
    mu_c, var_c = csum / n_items, np.maximum(csq / n_items - (csum / n_items) ** 2, 0.0)
    finite = np.where(np.isfinite(model), model, 0.0).astype(np.float64)
    cov = (finite * c).sum(axis=1) / n_items - mu_m * mu_c
    sd_m, sd_c = np.sqrt(var_m), np.sqrt(var_c)
    sd_m[~(sd_m > 1e-12)] = 1.0
    sd_c[~(sd_c > 1e-12)] = 1.0
    a, b = (1.0 - weight) / sd_m, weight / sd_c
    shift = -(a * mu_m + b * mu_c)
    blended = model * a[:, None].astype(np.float32) + c * b[:, None].astype(np.float32) \
        + shift[:, None].astype(np.float32)
    var = a * a * var_m + b * b * var_c + 2 * a * b * cov
    sd = np.sqrt(np.maximum(var, 0.0))
    sd[~(sd > 1e-12)] = 1.0
    return blended, sd[:, None].astype(np.float32)


def mask_seen(scores: np.ndarray, items: np.ndarray, seen_rows: np.ndarray,
              seen_cols: np.ndarray, n_items: int) -> None:
    """-inf where a candidate is padding or an item its user interacted with."""
    n_users, width = items.shape
    keys = (np.arange(n_users, dtype=np.int64)[:, None] * n_items + items).ravel()
    seen = np.sort(seen_rows.astype(np.int64) * n_items + seen_cols)
    hit = lookup(seen, np.ones(len(seen), bool), keys, missing=False).reshape(n_users, width)
    scores[hit | (items < 0)] = -np.inf
