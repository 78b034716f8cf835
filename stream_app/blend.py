"""Mixing two score scales per user: ``(1 - w) * z(model) + w * z(co-occurrence)``.

LightFM's scores and the co-occurrence scores live on unrelated scales, so each row of each
is z-scored (its mean and standard deviation over the catalogue) before they are mixed.
Written as one affine map per row, ``a * model + b * cooc + c``, it costs four passes over
the score matrix instead of the dozen (and the temporaries) of standardising each matrix
separately: at a micro-batch of 2,000 users x 2,000 items that is ~3 ms instead of ~30 ms,
and list building is most of what the worker does (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np


def row_moments(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation over the columns, as ``(rows, 1)`` columns of
    the scores' dtype; a constant row gets standard deviation 1 (its z-scores are 0).

    Sums run in the scores' dtype with numpy's pairwise/SIMD reductions (float64 casts of
    a large float32 matrix cost 4x the time); the moments are combined in float64."""
    m = scores.shape[1]
    mu = scores.sum(axis=1, dtype=scores.dtype).astype(np.float64) / m
    sq = np.einsum("ij,ij->i", scores, scores).astype(np.float64) / m
    sd = np.sqrt(np.maximum(sq - mu * mu, 0.0))
    sd[~(sd > 1e-12 * np.maximum(1.0, np.abs(mu)))] = 1.0
    return mu[:, None].astype(scores.dtype), sd[:, None].astype(scores.dtype)


def blend_terms_into(model_scores: np.ndarray,
                     terms: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """``(1 - sum(w)) * z(model) + sum(w * z(term))`` row by row, into ``model_scores``
    (returned); each term's scores are used as scratch space. Terms with weight 0 are
    skipped; an all-zero row of a term standardises to zero (it changes nothing)."""
    terms = [(s, w) for s, w in terms if w > 0]
    if not terms:
        return model_scores
    if len(terms) == 1:
        return blend_into(model_scores, *terms[0])
    total = sum(w for _, w in terms)
    mu_m, sd_m = row_moments(model_scores)
    a = (1.0 - total) / sd_m
    shift = -(a * mu_m)
    np.multiply(model_scores, a, out=model_scores)
    for scores, w in terms:
        mu, sd = row_moments(scores)
        b = w / sd
        shift -= b * mu
        np.multiply(scores, b, out=scores)
        model_scores += scores
    model_scores += shift
    return model_scores


def blend_into(model_scores: np.ndarray, cooc_scores: np.ndarray, weight: float
               ) -> np.ndarray:
    """``(1 - weight) * z(model) + weight * z(cooc)`` row by row, written into
    ``model_scores`` (returned); ``cooc_scores`` is used as scratch space.

    Both are (users x items) over the same (assigned) item columns. A user without
    positives has an all-zero co-occurrence row, whose z-scores are zero: the model's
    ranking is kept unchanged for them.
    """
    if weight <= 0:
        return model_scores
    mu_m, sd_m = row_moments(model_scores)
    mu_c, sd_c = row_moments(cooc_scores)
    a = (1.0 - weight) / sd_m
    b = weight / sd_c
    shift = -(a * mu_m + b * mu_c)
    np.multiply(model_scores, a, out=model_scores)
    np.multiply(cooc_scores, b, out=cooc_scores)
    model_scores += cooc_scores
    model_scores += shift
    return model_scores
