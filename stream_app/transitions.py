"""Incremental, bounded item-to-item transitions: the order of a user's positives.

Co-occurrence is symmetric: it knows that two items are liked by the same people, not which
comes *after* which. People rate, watch and buy in sessions, in the order a page shows
things, so the next positive is best predicted by what followed the user's last few items in
other users' sequences: the sequential rules of Ludewig & Jannach (2018), measured as a peer
in ``bench/peers.py`` (issue #18).

For every new positive ``b`` of a user and each of their earlier positives ``a`` at most
``window`` positives back (``gap`` steps), ``T[a, b] += 1 / gap``; a user's scores are the
rows of their last ``recent`` positives weighted ``decay ** k`` (``k`` = 0 for the newest).

Storage is the co-occurrence index's (:mod:`stream_app.cooccurrence`): a dense float32
matrix while the catalogue is small, bounded sparse counts
(:class:`~stream_app.sparsecounts.SparseCounts`: a pruned CSR base plus log-structured
pending deltas) beyond ``dense_max`` items. ``1 / gap`` is stored scaled by
``lcm(1..window)`` (60 for the default window of 5), so every count is a whole number and
the pruning keeps its fast integer path; scores are scaled back.

The counts are fed by :class:`~stream_app.cooccurrence.CooccurrenceIndex` from the same
positives arena (distinct positives per user, in order), so nothing new is stored or
checkpointed: a restart rebuilds them from the users' stored positives exactly as it
rebuilds the co-occurrence counts (``CooccurrenceIndex.load_histories``).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from stream_app.sparsecounts import SparseCounts
from stream_app.useritems import UserItems


DENSE_PRODUCT_USERS = 16
"""Up to this many users, sparse counts score into a dense array directly
(:meth:`SparseCounts.times_dense`: a live micro-batch's lists), beyond it through scipy."""


class TransitionCounts:
    """``T[a, b]``: how strongly ``b`` followed ``a`` in users' positives (see module)."""

    def __init__(self, window: int = 5, decay: float = 0.6, recent: int = 5,
                 capacity: int = 256, dense_max: int = 16_384, max_neighbours: int = 200,
                 merge_min: int = 1 << 21) -> None:
        if window < 1 or recent < 1:
            raise ValueError("window and recent must be at least 1")
        self.window, self.decay, self.recent = window, decay, recent
        self.dense_max = dense_max
        self.scale = float(math.lcm(*range(1, window + 1)))
        self._sparse_kw = {"max_neighbours": max_neighbours, "merge_min": merge_min}
        self.dense: np.ndarray | None = None
        self.rows: SparseCounts | None = None
        self._capacity = capacity
        if capacity <= dense_max:
            self.dense = np.zeros((capacity, capacity), np.float32)
        else:
            self.rows = SparseCounts(capacity, **self._sparse_kw)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def sparse(self) -> bool:
        return self.rows is not None

    @property
    def nbytes(self) -> int:
        return self.dense.nbytes if self.dense is not None else self.rows.nbytes

    def ensure(self, capacity: int) -> None:
        """Grow to ``capacity`` items (dense -> sparse once it passes ``dense_max``)."""
        if capacity <= self._capacity:
            return
        if self.dense is not None and capacity > self.dense_max:
            self.rows = SparseCounts.from_dense(self.dense, capacity, **self._sparse_kw)
            self.dense = None
        elif self.dense is not None:
            grown = np.zeros((capacity, capacity), np.float32)
            grown[:self._capacity, :self._capacity] = self.dense
            self.dense = grown
        else:
            self.rows.resize(capacity)
        self._capacity = capacity

    def get(self, a: int, b: int) -> float:
        """``T[a, b]`` (in units of ``1 / gap``)."""
        if self.dense is not None:
            v = self.dense[a, b] if max(a, b) < self._capacity else 0.0
        else:
            v = self.rows.get(a, b)
        return float(v) / self.scale

    def add(self, cur: np.ndarray, prev: np.ndarray, gaps: np.ndarray) -> None:
        """``T[prev[k], cur[k]] += 1 / gaps[k]`` for every k (vectorised)."""
        if not len(cur):
            return
        self.add_raw(prev, cur, self.weights_of(gaps))

    def weights_of(self, gaps: np.ndarray) -> np.ndarray:
        """The stored (whole-number) weights of transitions ``gaps`` steps apart."""
        return np.rint(self.scale / np.asarray(gaps, np.float64))

    def add_raw(self, prev: np.ndarray, cur: np.ndarray, w: np.ndarray) -> None:
        """``T[prev[k], cur[k]] += w[k]`` in stored units (:meth:`weights_of`)."""
        if not len(cur):
            return
        w = np.asarray(w, np.float64)
        prev = np.asarray(prev, np.int64)
        cur = np.asarray(cur, np.int64)
        if self.dense is not None:
            cap = self._capacity
            keys = prev * cap + cur
            uniq, inv = np.unique(keys, return_inverse=True)
            self.dense.reshape(-1)[uniq] += np.bincount(inv, weights=w).astype(np.float32)
        else:
            self.rows.add(prev, cur, w)

    def weights(self, history: UserItems, users: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(owner, item, weight) of each user's last ``recent`` positives, ``decay ** k``
        from the newest, divided by the storage scale."""
        owner, src = history.last(users, self.recent)
        if not len(owner):
            return owner, src, np.zeros(0, np.float32)
        n = np.bincount(owner, minlength=len(users))
        first = np.cumsum(n) - n
        age = n[owner] - 1 - (np.arange(len(owner)) - first[owner])   # 0 = newest
        w = (self.decay ** age / self.scale).astype(np.float32)
        return owner, src, w

    def scores(self, history: UserItems, users: np.ndarray, n_items: int,
               sparse: bool = False) -> np.ndarray | sp.csr_matrix:
        """(len(users) x n_items) transition scores (zeros without positives); ``sparse``:
        a CSR with sorted indices (the candidate path)."""
        users = np.asarray(users, np.int64)
        owner, src, w = self.weights(history, users)
        cap = self._capacity
        m = min(n_items, cap)
        if not len(owner):
            return sp.csr_matrix((len(users), n_items), dtype=np.float32) if sparse else \
                np.zeros((len(users), n_items), np.float32)
        if self.dense is not None:
            if len(users) == 1 and not sparse:
                out = np.zeros((1, n_items), np.float32)
                out[0, :m] = w @ self.dense[src, :m]
                return out
            indptr = np.zeros(len(users) + 1, np.int64)
            np.cumsum(np.bincount(owner, minlength=len(users)), out=indptr[1:])
            wm = sp.csr_matrix((w, np.asarray(src, np.int64), indptr), shape=(len(users), cap))
            if sparse:
                prod = sp.csr_matrix(wm @ self.dense[:, :m])
                prod.sort_indices()
                return _width(prod, n_items)
            prod = wm @ self.dense
            out = np.zeros((len(users), n_items), np.float32)
            out[:, :m] = prod[:, :m]
            return out
        if not sparse and len(users) <= DENSE_PRODUCT_USERS:
            out = np.zeros((len(users), n_items), np.float32)
            out[:, :m] = self.rows.times_dense(owner, src, w, len(users), m)
            return out
        prod = self.rows.times(owner, src, w, len(users))
        if sparse:
            prod = prod[:, :m] if m < cap else prod
            prod.sort_indices()
            return _width(sp.csr_matrix(prod), n_items)
        out = np.zeros((len(users), n_items), np.float32)
        out[:, :m] = prod.toarray()[:, :m]
        return out


def _width(m: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """``m`` with exactly ``n`` columns (entries never lie beyond ``n``)."""
    if m.shape[1] == n:
        return m
    return sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], n))


def gaps_of(owner: np.ndarray, n_owners: int) -> np.ndarray:
    """For items returned oldest first per owner (``UserItems.window``), how many steps
    each lies before its owner's new positive: ``n_owner - index within the owner``."""
    n = np.bincount(owner, minlength=n_owners)
    first = np.cumsum(n) - n
    return n[owner] - (np.arange(len(owner)) - first[owner])
