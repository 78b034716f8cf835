"""Incremental item-item co-occurrence and its asymmetric-cosine scores ("item kNN").

Two items co-occur when one user liked both. The counts grow one positive at a time (no
retrain), and a user's score for item ``k`` sums, over the user's last ``recent`` positives
``j``, the asymmetric cosine ``C[j, k] / (n_j ** alpha * n_k ** (1 - alpha))``. It reacts to
a new positive at once, which is what a factor model updated by SGD does slowly: the engine
can blend these scores with LightFM's (see :func:`blend`).

Rows are dense ``capacity x capacity`` float32 counts, grown geometrically like the model's
padding: fine for catalogues of a few ten thousand items; a bigger one wants sparse rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class CooccurrenceIndex:
    """Co-occurrence counts over users' positives, updated in place per positive.

    ``pair_window``: a new positive co-occurs with the user's last ``pair_window`` positives
    (None: with all of them). ``recent``: how many of a user's last positives a score is
    built from. Users and items are any non-negative ints (engine rows, dataset codes).
    """

    def __init__(self, alpha: float = 0.7, recent: int = 20, pair_window: int | None = None,
                 capacity: int = 256, growth: float = 1.5) -> None:
        self.alpha = alpha
        self.recent = recent
        self.pair_window = pair_window
        self.growth = growth
        self.counts = np.zeros(capacity, np.float32)
        self.pairs = np.zeros((capacity, capacity), np.float32)
        self.history: dict[int, list[int]] = {}
        self._liked: dict[int, set[int]] = {}

    @property
    def capacity(self) -> int:
        return len(self.counts)

    def _ensure(self, n: int) -> None:
        if n <= self.capacity:
            return
        cap = int(np.ceil(max(n, self.capacity) * self.growth))
        counts = np.zeros(cap, np.float32)
        counts[:self.capacity] = self.counts
        pairs = np.zeros((cap, cap), np.float32)
        pairs[:self.capacity, :self.capacity] = self.pairs
        self.counts, self.pairs = counts, pairs

    def add(self, users: Iterable[int], items: Iterable[int]) -> None:
        """Record positives in order; a repeated (user, item) positive counts once."""
        for u, i in zip(users, items):
            u, i = int(u), int(i)
            liked = self._liked.setdefault(u, set())
            if i in liked:
                continue
            self._ensure(i + 1)
            hist = self.history.setdefault(u, [])
            prev = hist if self.pair_window is None else hist[-self.pair_window:]
            if prev:
                idx = np.fromiter(prev, np.int64, len(prev))
                self.pairs[i, idx] += 1.0
                self.pairs[idx, i] += 1.0
            self.counts[i] += 1.0
            hist.append(i)
            liked.add(i)

    def load_histories(self, histories: dict[int, list[int]]) -> None:
        """Rebuild counts and pairs from users' positives (oldest first, no repeats), as
        :meth:`add` would have built them, but vectorised per user (restart path)."""
        self._ensure(1 + max((max(h) for h in histories.values() if h), default=0))
        w = self.pair_window
        for u, hist in histories.items():
            if not hist:
                continue
            h = np.asarray(hist, dtype=np.int64)
            self.counts[h] += 1.0
            t = np.arange(len(h))
            lo = np.zeros_like(t) if w is None else np.maximum(0, t - w)
            n_prev = t - lo
            if n_prev.sum():
                cur = np.repeat(t, n_prev)
                prev = np.concatenate([np.arange(a, b) for a, b in zip(lo, t) if b > a])
                np.add.at(self.pairs, (h[cur], h[prev]), 1.0)
                np.add.at(self.pairs, (h[prev], h[cur]), 1.0)
            self.history[int(u)] = list(map(int, hist))
            self._liked[int(u)] = set(self.history[int(u)])

    def recent_items(self, user: int) -> list[int]:
        """The user's last ``recent`` positives, oldest first (empty for an unknown user)."""
        return self.history.get(int(user), [])[-self.recent:]

    def positives(self, user: int) -> list[int]:
        """Every positive of the user, oldest first."""
        return self.history.get(int(user), [])

    def scores(self, users: Sequence[int], n_items: int | None = None) -> np.ndarray:
        """(len(users) x n_items) asymmetric-cosine scores; zeros for users without positives."""
        n = self.capacity if n_items is None else n_items
        out = np.zeros((len(users), n), np.float32)
        m = min(n, self.capacity)
        cand = self.counts[:m]
        inv_cand = np.zeros(m, np.float32)
        np.power(cand, -(1.0 - self.alpha), out=inv_cand, where=cand > 0)
        for r, u in enumerate(users):
            src = self.recent_items(u)
            if not src:
                continue
            idx = np.fromiter(src, np.int64, len(src))
            w = self.counts[idx] ** -self.alpha
            out[r, :m] = (w @ self.pairs[idx, :m]) * inv_cand
        return out


def standardise(scores: np.ndarray, valid: int) -> np.ndarray:
    """Per-row z-scores over the first ``valid`` columns, so two score scales can be mixed."""
    s = scores[:, :valid]
    mu = s.mean(axis=1, keepdims=True)
    sd = s.std(axis=1, keepdims=True)
    sd[sd == 0] = 1.0
    out = np.zeros_like(scores)
    out[:, :valid] = (s - mu) / sd
    return out


def blend(model_scores: np.ndarray, cooc_scores: np.ndarray, weight: float,
          valid: int) -> np.ndarray:
    """``(1 - weight) * z(model) + weight * z(cooccurrence)`` row by row.

    A user without positives has an all-zero co-occurrence row, which standardises to zero:
    the model's ranking is kept unchanged for them.
    """
    if weight <= 0:
        return model_scores
    return (1.0 - weight) * standardise(model_scores, valid) + \
        weight * standardise(cooc_scores, valid)
