"""Exploration slots: a small share of each list goes to items the model is unsure about.

A model trained only on what it already shows never learns about new or rarely seen items.
So a few slots (default 1 in 10) go to candidates drawn by a *sampled score*: the model's
score for this user, plus a bonus for items with few interactions, plus Gumbel noise. Drawing
the top k of those sampled scores is sampling k items without replacement with probability
proportional to ``exp(score / temperature) / sqrt(1 + interactions)``: uncertain items the
model does not rule out come first, and every draw is reproducible from the RNG's seed.

Pure numpy; ``Engine.recommend_rows`` calls :func:`mix_exploration` once per user with the
score row it already computed.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

EXPLORE = "explore"
"""The ``reason`` of an exploration entry in a published list."""

Entry = tuple[int, float, "str | None"]
"""(item row, score, reason): reason is ``"explore"`` for an exploration slot, else None."""


def exploration_log_weights(scores: np.ndarray, interactions: np.ndarray,
                            temperature: float = 1.0) -> np.ndarray:
    """Log sampling weights of candidates: ``score / temperature - log(1 + n) / 2``.

    ``scores``: the model's scores of the candidates for one user (``-inf`` where the item
    must never be shown); ``interactions``: how often each candidate was interacted with.
    The ``1 / sqrt(1 + n)`` factor is the usual uncertainty of a mean estimated from ``n``
    observations: a brand-new item weighs as much as a known one scoring ``log(n) / 2``
    higher. A high temperature flattens the scores towards pure novelty.
    """
    return (np.asarray(scores, np.float64) / temperature
            - 0.5 * np.log1p(np.asarray(interactions, np.float64)))


def explore_slots(n: int, share: float, rng: np.random.Generator) -> int:
    """How many of ``n`` slots explore: ``n * share`` rounded at random (its expectation is
    exact, so 1 in 10 holds for lists of 5 too)."""
    want = max(0.0, n * share)
    k = int(want)
    return k + int(rng.random() < want - k)


def mix_exploration(exploit_rows: np.ndarray, exploit_scores: np.ndarray,
                    candidates: np.ndarray, log_weights: np.ndarray, n: int,
                    rng: np.random.Generator, share: float = 0.1,
                    seen: Collection[int] = (), protect_top: int = 3,
                    candidate_scores: np.ndarray | None = None) -> list[Entry]:
    """The user's list of ``n``: exploit entries, with some slots given to sampled candidates.

    ``exploit_rows``/``exploit_scores``: the best-first list (at least ``n`` long when the
    catalogue allows). ``candidates``/``log_weights``: item rows that may be explored and
    their log weights (:func:`exploration_log_weights`); a candidate the user has ``seen``,
    one already in the list, or one with a non-finite weight is never drawn. Exploration
    entries take random positions after the first ``protect_top`` and carry their model
    score from ``candidate_scores`` (else 0.0). With fewer candidates than slots, the
    exploit list fills the rest.
    """
    exploit = [(int(r), float(s), None) for r, s in zip(exploit_rows[:n], exploit_scores[:n])]
    k = min(explore_slots(n, share, rng), max(0, n - protect_top))
    if k == 0 or len(candidates) == 0:
        return exploit
    candidates = np.asarray(candidates)
    log_weights = np.asarray(log_weights, np.float64)
    ok = np.isfinite(log_weights) & ~np.isin(candidates, exploit_rows[:n])
    if len(seen):
        ok &= ~np.isin(candidates, np.fromiter(seen, np.int64, len(seen)))
    pool = np.flatnonzero(ok)
    k = min(k, len(pool))
    if k == 0:
        return exploit
    sampled = log_weights[pool] + rng.gumbel(size=len(pool))
    drawn = pool[np.argsort(-sampled, kind="stable")[:k]]
    scores = (np.zeros(k) if candidate_scores is None
              else np.asarray(candidate_scores, np.float64)[drawn])
    explore = [(int(candidates[d]), round(float(s), 5), EXPLORE) for d, s in zip(drawn, scores)]
    length = min(n, len(exploit) + k)
    first = min(protect_top, length - k)
    slots = set(rng.choice(np.arange(first, length), size=k, replace=False).tolist())
    kept, out = iter(exploit), []
    it_explore = iter(explore)
    for pos in range(length):
        out.append(next(it_explore) if pos in slots else next(kept))
    return out
