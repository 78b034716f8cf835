"""Fold-in: solve a user's embedding in closed form from the items they liked.

SGD on one new positive moves a fresh user row only a little, so a user who just arrived
keeps a near-random representation for many events. Implicit-feedback ALS has the answer
(``partial_fit_users``): with the item factors ``Y`` fixed, the user's factors are the
ridge solution

    x = (YᵀY + alpha · Σ_p y_p y_pᵀ + reg · I)⁻¹ · (1 + alpha) · Σ_p y_p

over the user's positives ``p`` (confidence ``1 + alpha`` on them, 1 on every other item,
target 1 on positives and 0 elsewhere). :func:`als_fold_in` is that solve, batched;
:func:`fold_in_lightfm` writes the result into a :class:`~stream_app.model.PaddedLightFM`
as the user's representation, so scoring, checkpoints and later ``fit_partial`` calls see it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream_app.model import PaddedLightFM


def als_fold_in(item_factors: np.ndarray, positives: Sequence[Sequence[int]],
                reg: float = 0.1, alpha: float = 1.0,
                gram: np.ndarray | None = None) -> np.ndarray:
    """(len(positives) x k) user factors; a user without positives gets zeros.

    ``gram`` is ``item_factors.T @ item_factors`` if the caller already has it (it only
    changes when the item factors do, so one per micro-batch is enough).
    """
    y = np.asarray(item_factors, dtype=np.float64)
    k = y.shape[1]
    out = np.zeros((len(positives), k), np.float32)
    if not len(positives):
        return out
    g = y.T @ y if gram is None else np.asarray(gram, dtype=np.float64)
    base = g + reg * np.eye(k)
    mats, rhs, rows = [], [], []
    for r, pos in enumerate(positives):
        if len(pos) == 0:
            continue
        yp = y[np.asarray(pos, dtype=np.int64)]
        mats.append(base + alpha * (yp.T @ yp))
        rhs.append((1.0 + alpha) * yp.sum(axis=0))
        rows.append(r)
    if rows:
        out[rows] = np.linalg.solve(np.stack(mats), np.stack(rhs)[..., None])[..., 0]
    return out


def centroid_fold_in(item_factors: np.ndarray,
                     positives: Sequence[Sequence[int]]) -> np.ndarray:
    """(len(positives) x k): mean factors of each user's positives minus the mean item
    (Rocchio); zeros for a user without positives. No solve, no regularisation."""
    y = np.asarray(item_factors, dtype=np.float64)
    centre = y.mean(axis=0)
    out = np.zeros((len(positives), y.shape[1]), np.float32)
    for r, pos in enumerate(positives):
        if len(pos):
            out[r] = y[np.asarray(pos, dtype=np.int64)].mean(axis=0) - centre
    return out


def fold_in_lightfm(model: PaddedLightFM, user_rows: Sequence[int],
                    positives: Sequence[Sequence[int]], n_items: int, reg: float = 0.1,
                    alpha: float = 1.0, scale: float = 1.0, mix: float = 1.0,
                    method: str = "als") -> np.ndarray:
    """Set each user's representation to ``mix·scale·x + (1 - mix)·current`` and return it.

    ``x`` is :func:`als_fold_in` over the item representations of the first ``n_items``
    (assigned) item rows; ``positives[r]`` holds item rows of ``user_rows[r]``. A user's
    representation is the sum of its feature embeddings (identity + weighted metadata), so
    the identity row takes the difference and the metadata rows are left alone. ``scale``
    sets how much the dot product weighs against LightFM's item biases in the scores.
    ``method="centroid"`` uses :func:`centroid_fold_in` instead of the ALS solve.
    """
    rows = np.asarray(user_rows, dtype=np.int64)
    if len(rows) == 0:
        return np.empty((0, model.params.no_components), np.float32)
    _, item_emb = model.item_representations()
    if method == "als":
        x = als_fold_in(item_emb[:n_items], positives, reg=reg, alpha=alpha) * scale
    else:
        x = centroid_fold_in(item_emb[:n_items], positives) * scale
    _, current = model.user_representations(rows)
    has = np.fromiter((len(p) > 0 for p in positives), bool, len(rows))
    target = np.where(has[:, None], mix * x + (1.0 - mix) * current, current)
    ident = model.users.buckets + rows
    emb = model.lightfm.user_embeddings
    emb[ident] += (target - current).astype(np.float32)
    return target.astype(np.float32)
