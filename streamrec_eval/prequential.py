"""Prequential (test-then-train) evaluation of streaming recommenders, no Kafka in it.

The protocol (river's ``progressive_val_score`` for top-N lists):

1. the events are in time order; the first ``split`` of them train the model;
2. for every later event, in order: if it is a positive (rating >= 4), ask the model for
   the user's top ``n`` (items the user already interacted with excluded) and count a hit
   if the event's item is in it; then feed the event to the model (positives and
   negatives alike). Models decide themselves when to learn from what they were fed.

Reported: hit@n overall and for new users (no positive before the split) vs returning
ones, catalogue coverage of the lists served, mean popularity rank of recommended items
(1 = the most liked item before the split), the beyond-accuracy numbers of
:mod:`streamrec_eval.beyond_accuracy` (novelty, genre diversity, popularity bias against
the users' own history, exposure of new items) and run time.

Any object with ``fit_initial(events)``, ``recommend(user, n, exclude)`` and
``update(events)`` can be evaluated (:class:`PrequentialModel`); the adapters of
popularity baselines and of streamrec's engine are in :mod:`streamrec_eval.adapters`, the
runs ``streamrec evaluate`` makes in :mod:`streamrec_eval.evaluate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream_app.topn import top_n
from streamrec_eval import beyond_accuracy
from streamrec_eval.stream import POSITIVE, Events, Stream

log = logging.getLogger(__name__)


class PrequentialModel(Protocol):
    """What the runner needs from a model. Users and items are the stream's int codes."""

    name: str

    def fit_initial(self, events: Events) -> None:
        """Learn from the training part (called once, before any other method)."""

    def recommend(self, user: int, n: int, exclude: set[int]) -> Sequence[int]:
        """Up to ``n`` item codes, best first, none of them in ``exclude``."""

    def update(self, events: Events) -> None:
        """Events that just happened (one at a time in the protocol); learn when you like."""


def top_items(scores: np.ndarray, n: int, exclude: Iterable[int] = ()) -> np.ndarray:
    """Best ``n`` columns of a 1-D score vector, best first, ``exclude`` left out."""
    ex = exclude if isinstance(exclude, (set, list, np.ndarray)) else list(exclude)
    return top_n(np.array(scores, dtype=np.float64)[None, :], n, len(scores), [ex])[0][0]
# --------------------------------------------------------------------------- results
@dataclass
class RunResult:
    """Per-positive outcomes of one run, and what they add up to."""

    name: str
    hits: np.ndarray
    new_user: np.ndarray
    event_index: np.ndarray
    served: np.ndarray
    pop_rank_sum: float
    n_served: int
    fit_seconds: float
    seconds: float
    n: int = 10
    lists: np.ndarray = field(default_factory=lambda: np.empty((0, 10), np.int64))
    """Every list served, one row per positive (item codes, ``-1`` padded)."""
    beyond: dict[str, float] = field(default_factory=dict)
    """Beyond-accuracy numbers (:func:`streamrec_eval.beyond_accuracy.measure`)."""

    def hit_rate(self, mask: np.ndarray | None = None) -> float:
        h = self.hits if mask is None else self.hits[mask]
        return float(h.mean()) if len(h) else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            f"hit@{self.n}": round(self.hit_rate(), 4),
            f"hit@{self.n}_new": round(self.hit_rate(self.new_user), 4),
            f"hit@{self.n}_returning": round(self.hit_rate(~self.new_user), 4),
            "positives": len(self.hits),
            "positives_new": int(self.new_user.sum()),
            "hits": int(self.hits.sum()),
            "coverage": round(float((self.served > 0).mean()), 4),
            "mean_popularity_rank": round(self.pop_rank_sum / max(1, self.n_served), 1),
            **self.beyond,
            "fit_seconds": round(self.fit_seconds, 1),
            "seconds": round(self.seconds, 1),
        }

    def rolling(self, window: int = 500) -> np.ndarray:
        """Hit rate over the last ``window`` positives, per positive."""
        c = np.concatenate([[0.0], np.cumsum(self.hits, dtype=np.float64)])
        k = np.arange(1, len(self.hits) + 1)
        lo = np.maximum(0, k - window)
        return (c[k] - c[lo]) / (k - lo)

    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.hits, dtype=np.float64) / np.arange(1, len(self.hits) + 1)


def popularity_ranks(events: Events, n_items: int, threshold: float = POSITIVE) -> np.ndarray:
    """1-based rank of every item by its positives in ``events`` (ties: lower code first)."""
    _, items = events.positives(threshold)
    counts = np.bincount(items, minlength=n_items)
    order = np.lexsort((np.arange(n_items), -counts))
    ranks = np.empty(n_items, np.int64)
    ranks[order] = np.arange(1, n_items + 1)
    return ranks


def run_prequential(model: PrequentialModel, stream: Stream, split: float = 0.9,
                    end: float = 1.0, n: int = 10, threshold: float = POSITIVE,
                    progress: bool = True) -> RunResult:
    """Train on ``[0, split)``, then test-then-train every event of ``[split, end)``.

    ``split=0.8, end=0.9`` is the held-out window for choosing hyperparameters; the test
    window ``[0.9, 1.0)`` is only for reporting.
    """
    lo, hi = stream.split_index(split), stream.split_index(end)
    initial = stream.events(0, lo)
    t0 = time.perf_counter()
    model.fit_initial(initial)
    fit_s = time.perf_counter() - t0
    history: dict[int, set[int]] = {}
    for u, i in zip(initial.users.tolist(), initial.items.tolist()):
        history.setdefault(u, set()).add(i)
    returning = set(initial.positives(threshold)[0].tolist())
    ranks = popularity_ranks(initial, stream.n_items, threshold)
    served = np.zeros(stream.n_items, np.int64)
    hits, new_user, index, lists = [], [], [], []
    rank_sum, n_served = 0.0, 0
    users, items, ratings = stream.users.tolist(), stream.items.tolist(), stream.ratings.tolist()
    steps: Iterable[int] = range(lo, hi)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc=f"prequential {model.name}", unit="ev", leave=False,
                     mininterval=1.0)
    for k in steps:
        u, i = users[k], items[k]
        seen = history.setdefault(u, set())
        if ratings[k] >= threshold:
            recs = np.asarray(model.recommend(u, n, seen), dtype=np.int64)[:n]
            hits.append(i in set(recs.tolist()))
            new_user.append(u not in returning)
            index.append(k)
            served[recs] += 1
            lists.append(recs)
            rank_sum += float(ranks[recs].sum())
            n_served += len(recs)
        seen.add(i)
        model.update(stream.events(k, k + 1))
    model_finish = getattr(model, "finish", None)
    if model_finish is not None:
        model_finish()
    total = time.perf_counter() - t0
    log.info("prequential %s: %d positives in %.1f s", model.name, len(hits), total)
    hits_a, index_a = np.array(hits, bool), np.array(index, np.int64)
    lists_a = beyond_accuracy.pad_lists(lists, n)
    beyond = beyond_accuracy.measure(stream, lists_a, index_a, lo, hits_a, threshold) \
        if len(lists) else {}
    return RunResult(model.name, hits_a, np.array(new_user, bool), index_a, served, rank_sum,
                     n_served, fit_s, total, n, lists_a, beyond)


def curves(result: RunResult, window: int = 500, every: int = 10) -> dict[str, list]:
    """Cumulative and rolling hit rate, thinned to every ``every``-th positive, for JSON."""
    idx = np.arange(0, len(result.hits), every)
    return {"event_index": result.event_index[idx].tolist(),
            "cumulative": np.round(result.cumulative()[idx], 4).tolist(),
            "rolling": np.round(result.rolling(window)[idx], 4).tolist()}
