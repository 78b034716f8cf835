"""Top-N selection for a batch of users: mask what must never be shown, then argpartition."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_n(scores: np.ndarray, n: int, n_valid_items: int,
          exclude: Sequence[np.ndarray | list[int] | set[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Best ``n`` item rows per score row, best first, as (rows, scores) pairs.

    ``scores`` is (users x capacity); columns from ``n_valid_items`` on are unassigned dummy
    slots and are never returned; ``exclude[i]`` holds item rows user ``i`` already
    interacted with or disliked. Modifies ``scores`` in place.
    """
    scores[:, n_valid_items:] = -np.inf
    lens = [len(e) for e in exclude]
    if sum(lens):
        rows = np.repeat(np.arange(len(exclude)), lens)
        cols = np.concatenate([np.fromiter(e, dtype=np.int64, count=len(e)) for e in exclude])
        scores[rows, cols] = -np.inf
    k = min(n, scores.shape[1])
    if k <= 0:
        return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in range(len(scores))]
    if k < scores.shape[1]:
        part = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
    else:
        part = np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    best_scores = np.take_along_axis(part_scores, order, axis=1)
    out = []
    for r in range(len(scores)):
        ok = np.isfinite(best_scores[r])
        out.append((best[r][ok], best_scores[r][ok]))
    return out
