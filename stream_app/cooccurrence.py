"""Incremental item-item co-occurrence and its asymmetric-cosine scores ("item kNN").

Two items co-occur when one user liked both. The counts grow one positive at a time (no
retrain), and a user's score for item ``k`` sums, over the user's last ``recent`` positives
``j``, the asymmetric cosine ``C[j, k] / (n_j ** alpha * n_k ** (1 - alpha))``. It reacts to
a new positive at once, which is what a factor model updated by SGD does slowly: the engine
can blend these scores with LightFM's (see :func:`blend`).

Counts are a dense ``capacity x capacity`` float32 matrix while the catalogue is small (one
BLAS row-sum per user, the fastest there), and sparse rows (item -> co-liked items and counts,
in growable arrays) once it outgrows ``dense_max`` items: a dense matrix at 100 k items would
be 40 GB (84 GB with the padding), while sparse rows hold only pairs that occurred.
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
                 capacity: int = 256, growth: float = 1.5, dense_max: int = 16_384) -> None:
        self.alpha = alpha
        self.recent = recent
        self.pair_window = pair_window
        self.growth = growth
        self.dense_max = dense_max
        self.counts = np.zeros(capacity, np.float32)
        self.pairs: np.ndarray | None = None
        self._rows: SparseRows | None = None
        if capacity <= dense_max:
            self.pairs = np.zeros((capacity, capacity), np.float32)
        else:
            self._rows = SparseRows()
        self.history: dict[int, list[int]] = {}
        self._liked: dict[int, set[int]] = {}

    @property
    def capacity(self) -> int:
        return len(self.counts)

    @property
    def sparse(self) -> bool:
        return self._rows is not None

    @property
    def nbytes(self) -> int:
        """Memory held by the counts (for the memory bench)."""
        held = self.counts.nbytes
        return held + (self.pairs.nbytes if self.pairs is not None else self._rows.nbytes)

    def pair(self, i: int, j: int) -> float:
        """How many users liked both ``i`` and ``j`` (within the pair window)."""
        if self.pairs is not None:
            return float(self.pairs[i, j]) if max(i, j) < self.capacity else 0.0
        return self._rows.get(i, j)

    def _ensure(self, n: int) -> None:
        if n <= self.capacity:
            return
        cap = int(np.ceil(max(n, self.capacity) * self.growth))
        counts = np.zeros(cap, np.float32)
        counts[:self.capacity] = self.counts
        if self.pairs is not None and cap > self.dense_max:
            self._rows = SparseRows.from_dense(self.pairs)  # once, when the catalogue grows
            self.pairs = None
        elif self.pairs is not None:
            pairs = np.zeros((cap, cap), np.float32)
            pairs[:self.capacity, :self.capacity] = self.pairs
            self.pairs = pairs
        self.counts = counts

    def _add_pairs(self, i: int, prev: Sequence[int]) -> None:
        if self.pairs is not None:
            idx = np.fromiter(prev, np.int64, len(prev))
            self.pairs[i, idx] += 1.0
            self.pairs[idx, i] += 1.0
        else:
            for j in prev:
                self._rows.add(i, j)
                self._rows.add(j, i)

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
                self._add_pairs(i, prev)
            self.counts[i] += 1.0
            hist.append(i)
            liked.add(i)

    def load_histories(self, histories: dict[int, list[int]]) -> None:
        """Rebuild counts and pairs from users' positives (oldest first, no repeats), as
        :meth:`add` would have built them, but vectorised per user (restart path)."""
        self._ensure(1 + max((max(h) for h in histories.values() if h), default=0))
        if self._rows is not None:  # sparse: the incremental path, user by user
            for u, hist in histories.items():
                if hist:
                    self.add([u] * len(hist), hist)
            return
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
            if self.pairs is not None:
                out[r, :m] = (w @ self.pairs[idx, :m]) * inv_cand
            else:
                row = out[r]
                for j, wj in zip(idx.tolist(), w.tolist()):
                    keys, vals = self._rows.row(j)
                    inside = keys < m
                    row[keys[inside]] += wj * vals[inside]
                row[:m] *= inv_cand
        return out


class SparseRows:
    """Per item, the items co-liked with it and how often, in growable arrays; a dict per row
    finds an existing pair in O(1). Only pairs that occurred take memory."""

    def __init__(self) -> None:
        self._keys: dict[int, np.ndarray] = {}
        self._vals: dict[int, np.ndarray] = {}
        self._len: dict[int, int] = {}
        self._pos: dict[int, dict[int, int]] = {}

    @classmethod
    def from_dense(cls, pairs: np.ndarray) -> "SparseRows":
        rows = cls()
        for i in np.flatnonzero(pairs.any(axis=1)).tolist():
            cols = np.flatnonzero(pairs[i])
            n = len(cols)
            rows._keys[i] = np.asarray(cols, np.int64)
            rows._vals[i] = pairs[i, cols].astype(np.float32)
            rows._len[i] = n
            rows._pos[i] = dict(zip(cols.tolist(), range(n)))
        return rows

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + self._vals[i].nbytes for i, k in self._keys.items()) + \
            sum(len(p) for p in self._pos.values()) * 100  # dict entries, roughly

    def add(self, i: int, j: int, by: float = 1.0) -> None:
        pos = self._pos.get(i)
        if pos is None:
            pos = self._pos[i] = {}
            self._keys[i] = np.empty(4, np.int64)
            self._vals[i] = np.empty(4, np.float32)
            self._len[i] = 0
        k = pos.get(j)
        if k is not None:
            self._vals[i][k] += by
            return
        n = self._len[i]
        if n == len(self._keys[i]):
            self._keys[i] = np.concatenate([self._keys[i], np.empty(n, np.int64)])
            self._vals[i] = np.concatenate([self._vals[i], np.empty(n, np.float32)])
        self._keys[i][n], self._vals[i][n] = j, by
        pos[j] = n
        self._len[i] = n + 1

    def get(self, i: int, j: int) -> float:
        k = self._pos.get(i, {}).get(j)
        return 0.0 if k is None else float(self._vals[i][k])

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._len.get(i, 0)
        if n == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        return self._keys[i][:n], self._vals[i][:n]


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
