"""Incremental item-item co-occurrence and its asymmetric-cosine scores ("item kNN").

Two items co-occur when one user liked both. The counts grow per micro-batch (no retrain),
and a user's score for item ``k`` sums, over the user's last ``recent`` positives ``j``, the
asymmetric cosine ``C[j, k] / (n_j ** alpha * n_k ** (1 - alpha))``. It reacts to a new
positive at once, which is what a factor model updated by SGD does slowly: the engine can
blend these scores with LightFM's (see :func:`blend`).

Counts are a dense ``capacity x capacity`` float32 matrix while the catalogue is small (the
fastest there: ML-100K's 1.7 k items), and bounded sparse counts
(:class:`~stream_app.sparsecounts.SparseCounts`: a CSR base pruned to each item's
``max_neighbours`` strongest neighbours plus pending per-batch deltas) once it outgrows
``dense_max`` items: a dense matrix at 100 k items would be 40 GB (84 GB with the padding),
unbounded sparse rows ~45 GB at 10 M positives. Users' positives live in a
:class:`~stream_app.useritems.UserItems` arena (distinct, in order). Everything is one
vectorised step per micro-batch: :meth:`CooccurrenceIndex.add` finds each new positive's
pair window in the arena and adds all pairs at once; :meth:`CooccurrenceIndex.scores` is one
sparse product of the users' weighted recent positives with the counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from stream_app.sparsecounts import SparseCounts
from stream_app.transitions import DENSE_PRODUCT_USERS, TransitionCounts, gaps_of
from stream_app.useritems import UserItems

if TYPE_CHECKING:
    from stream_app.deltas import DeltaBuffer

_CHUNK = 65_536
"""Positives per internal step of :meth:`CooccurrenceIndex.add`: bounds the pair arrays
(x ``2 * pair_window``) of a restart's one big call; the steps run in order, so the result
is the same as one step."""


class CooccurrenceIndex:
    """Co-occurrence counts over users' positives, updated per micro-batch.

    ``pair_window``: a new positive co-occurs with the user's last ``pair_window`` earlier
    positives (None: with all of them). ``recent``: how many of a user's last positives a
    score is built from. ``max_neighbours``: in sparse mode, the counts each item keeps
    after a merge (0: unbounded; dense mode never prunes). Users and items are any
    non-negative ints below 2**31 (engine rows, dataset codes); users should be dense.
    ``transitions``: also count the order of positives (:mod:`stream_app.transitions`),
    ``(window, decay, recent)``, from the same positives (nothing more is stored), dense up
    to ``transitions_dense_max`` items (default ``dense_max``).
    """

    def __init__(self, alpha: float = 0.7, recent: int = 20, pair_window: int | None = None,
                 capacity: int = 256, growth: float = 1.5, dense_max: int = 16_384,
                 max_neighbours: int = 200, merge_min: int = 1 << 21,
                 transitions: tuple[int, float, int] | None = None,
                 transitions_dense_max: int | None = None) -> None:
        self.alpha = alpha
        self.recent = recent
        self.pair_window = pair_window
        self.growth = growth
        self.dense_max = dense_max
        self._sparse_kw = {"max_neighbours": max_neighbours, "merge_min": merge_min}
        self.counts = np.zeros(capacity, np.float32)
        self.pairs: np.ndarray | None = None
        self._rows: SparseCounts | None = None
        if capacity <= dense_max:
            self.pairs = np.zeros((capacity, capacity), np.float32)
        else:
            self._rows = SparseCounts(capacity, **self._sparse_kw)
        self.history = UserItems()
        self.capture: DeltaBuffer | None = None   # sharded workers: local changes to share
        self.transitions: TransitionCounts | None = None
        if transitions is not None:
            window, decay, recent_t = transitions
            self.transitions = TransitionCounts(
                window, decay, recent_t, capacity,
                dense_max if transitions_dense_max is None else transitions_dense_max,
                max_neighbours, merge_min)

    @property
    def capacity(self) -> int:
        return len(self.counts)

    @property
    def sparse(self) -> bool:
        return self._rows is not None

    @property
    def sparse_counts(self) -> SparseCounts | None:
        """The bounded sparse counts (None in dense mode): sizes, merges, pruned entries."""
        return self._rows

    @property
    def nbytes(self) -> int:
        """Memory held by the counts and the users' positives (for the memory benches)."""
        pairs = self.pairs.nbytes if self.pairs is not None else self._rows.nbytes
        trans = self.transitions.nbytes if self.transitions is not None else 0
        return self.counts.nbytes + pairs + self.history.nbytes + trans

    def pair(self, i: int, j: int) -> float:
        """How many users liked both ``i`` and ``j`` (within the pair window)."""
        if self.pairs is not None:
            return float(self.pairs[i, j]) if max(i, j) < self.capacity else 0.0
        return self._rows.get(i, j)

    def _ensure(self, cap: int) -> None:
        if cap <= self.capacity:
            return
        counts = np.zeros(cap, np.float32)
        counts[:self.capacity] = self.counts
        if self.pairs is not None and cap > self.dense_max:
            self._rows = SparseCounts.from_dense(self.pairs, cap, **self._sparse_kw)
            self.pairs = None     # once, when the catalogue grows
        elif self.pairs is not None:
            pairs = np.zeros((cap, cap), np.float32)
            pairs[:self.capacity, :self.capacity] = self.pairs
            self.pairs = pairs
        else:
            self._rows.resize(cap)
        self.counts = counts
        if self.transitions is not None:
            self.transitions.ensure(cap)

    def _capacity_for(self, items: np.ndarray) -> int:
        """The capacity :meth:`_ensure` reaches growing for ``items`` one at a time, in order
        (so the capacity, and the switch to sparse, do not depend on the batching)."""
        cap = self.capacity
        while True:
            over = np.flatnonzero(items >= cap)
            if not len(over):
                return cap
            cap = int(np.ceil(max(int(items[over[0]]) + 1, cap) * self.growth))
            items = items[over[0] + 1:]

    def add(self, users: Iterable[int], items: Iterable[int]) -> None:
        """Record positives in order; a repeated (user, item) positive counts once.

        Each new positive pairs with the user's last ``pair_window`` earlier distinct
        positives, earlier ones of the same batch included (as if added one by one).
        """
        u = np.asarray(users if isinstance(users, np.ndarray) else list(users), np.int64)
        i = np.asarray(items if isinstance(items, np.ndarray) else list(items), np.int64)
        for s in range(0, len(u), _CHUNK):
            self._add_step(u[s:s + _CHUNK], i[s:s + _CHUNK])

    def _add_step(self, u: np.ndarray, i: np.ndarray) -> None:
        if not len(u):
            return
        taken, pos = self.history.add(u, i)
        if not len(taken):
            return
        new_items = i[taken]
        self._ensure(self._capacity_for(new_items))
        np.add.at(self.counts, new_items, 1.0)
        capture = self.capture
        if capture is not None:
            capture.positives(new_items)
        if self.transitions is not None:
            t_owner, t_prev = self.history.window(u[taken], pos, self.transitions.window)
            t_cur = new_items[t_owner]
            gaps = gaps_of(t_owner, len(taken))
            self.transitions.add(t_cur, t_prev, gaps)
            if capture is not None:
                capture.transitions(t_prev, t_cur, self.transitions.weights_of(gaps))
        owner, prev = self.history.window(u[taken], pos, self.pair_window)
        if not len(owner):
            return
        cur = new_items[owner]
        prev = prev.astype(np.int64)
        if capture is not None:
            capture.pairs(cur, prev)
        if self.pairs is not None:
            cap = self.capacity
            keys, times = np.unique(np.concatenate([cur * cap + prev, prev * cap + cur]),
                                    return_counts=True)
            self.pairs.reshape(-1)[keys] += times.astype(np.float32)
        else:
            self._rows.add(np.concatenate([cur, prev]), np.concatenate([prev, cur]))

    def add_shared(self, items: np.ndarray, counts: np.ndarray, pair_a: np.ndarray,
                   pair_b: np.ndarray, pair_w: np.ndarray, trans_a: np.ndarray,
                   trans_b: np.ndarray, trans_w: np.ndarray) -> None:
        """Add another shard's count changes (:mod:`stream_app.deltas`): per-item positives,
        pair counts (one direction given, both added) and raw transition weights, all in
        this index's item rows. Not captured: only a shard's own events are shared."""
        top = max((int(a.max()) for a in (items, pair_a, pair_b, trans_a, trans_b) if len(a)),
                  default=-1)
        if top >= 0:
            self._ensure(self._capacity_for(np.array([top], np.int64)))
        if len(items):
            np.add.at(self.counts, items, counts.astype(np.float32))
        if len(pair_a):
            rows = np.concatenate([pair_a, pair_b])
            cols = np.concatenate([pair_b, pair_a])
            w = np.concatenate([pair_w, pair_w]).astype(np.float32)
            if self.pairs is not None:
                np.add.at(self.pairs, (rows, cols), w)
            else:
                self._rows.add(rows, cols, w)
        if len(trans_a) and self.transitions is not None:
            self.transitions.add_raw(trans_a, trans_b, trans_w)

    def count_arrays(self) -> dict[str, np.ndarray]:
        """Every count as arrays (sharded workers checkpoint them: other shards' shares
        cannot be rebuilt from this shard's users' histories)."""
        out = {"cooc_counts": self.counts.copy()}
        out.update(_matrix_arrays("cooc_pairs", self.pairs, self._rows))
        if self.transitions is not None:
            t = self.transitions
            out.update(_matrix_arrays("cooc_trans", t.dense, t.rows))
        return out

    def load_count_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace every count by :meth:`count_arrays`' (after :meth:`load_histories`)."""
        counts = np.asarray(arrays["cooc_counts"], np.float32)
        self._ensure(len(counts))
        self.counts[:] = 0
        self.counts[:len(counts)] = counts
        cap = self.capacity
        if self.pairs is not None:
            self.pairs[:] = 0
        else:
            self._rows = SparseCounts(cap, **self._sparse_kw)
        a, b, w = _matrix_entries("cooc_pairs", arrays)
        if self.pairs is not None:
            self.pairs[a, b] = w
        else:
            self._rows.add(a, b, w)
        t = self.transitions
        if t is not None and "cooc_trans_rows" in arrays:
            if t.dense is not None:
                t.dense[:] = 0
            else:
                t.rows = SparseCounts(cap, **t._sparse_kw)   # noqa: SLF001 - same package
            t.add_raw(*_matrix_entries("cooc_trans", arrays))

    def load_histories(self, histories: Mapping[int, Sequence[int] | np.ndarray]) -> None:
        """Rebuild counts and pairs from users' positives (oldest first, no repeats), as
        :meth:`add` would have built them (restart path). Counts are the same as live when
        nothing was pruned; pruned rows may keep other weak neighbours, as users are replayed
        one after another instead of in time order."""
        rows = [u for u, h in histories.items() if len(h)]
        if not rows:
            return
        lens = [len(histories[u]) for u in rows]
        items = np.concatenate([np.asarray(histories[u], np.int64) for u in rows])
        self.add(np.repeat(np.asarray(rows, np.int64), lens), items)

    def transition_scores(self, users: Sequence[int] | np.ndarray, n_items: int,
                          sparse: bool = False) -> np.ndarray | sp.csr_matrix:
        """(len(users) x n_items) order-aware scores from the users' last positives
        (:class:`~stream_app.transitions.TransitionCounts`); zeros if not counted."""
        users = np.asarray(users if isinstance(users, np.ndarray) else list(users), np.int64)
        if self.transitions is None:
            return sp.csr_matrix((len(users), n_items), dtype=np.float32) if sparse else \
                np.zeros((len(users), n_items), np.float32)
        return self.transitions.scores(self.history, users, n_items, sparse)

    def positives(self, user: int) -> list[int]:
        """Every positive of the user, oldest first."""
        return self.history[int(user)].tolist()

    def scores_sparse(self, users: Sequence[int] | np.ndarray, n_items: int) -> sp.csr_matrix:
        """:meth:`scores` as a CSR matrix with sorted indices (only the items the scores
        reach take memory: the candidate path of large catalogues)."""
        out = self.scores(users, n_items, sparse=True)
        return out if sp.issparse(out) else sp.csr_matrix(out)

    def scores(self, users: Sequence[int] | np.ndarray, n_items: int | None = None,
               sparse: bool = False) -> np.ndarray | sp.csr_matrix:
        """(len(users) x n_items) asymmetric-cosine scores; zeros for users without positives.

        One sparse product: (users x items) weights ``n_j ** -alpha`` on each user's last
        ``recent`` positives, times the counts, then each column scaled by ``n_k ** (alpha - 1)``.
        """
        users = np.asarray(users if isinstance(users, np.ndarray) else list(users), np.int64)
        n = self.capacity if n_items is None else n_items
        owner, src = self.history.last(users, self.recent)
        if not len(owner):
            return sp.csr_matrix((len(users), n), dtype=np.float32) if sparse else \
                np.zeros((len(users), n), np.float32)
        cap = self.capacity
        m = min(n, cap)
        inv_cand = np.zeros(cap, np.float32)          # 0 beyond n: those columns are cut
        cand = self.counts[:m]
        np.power(cand, -(1.0 - self.alpha), out=inv_cand[:m], where=cand > 0)
        w = (self.counts[src] ** -self.alpha).astype(np.float32)
        if self.pairs is not None and len(users) == 1 and not sparse:
            # one user (a live micro-batch's usual list): a small dense product
            out = np.zeros((1, n), np.float32)
            out[0, :m] = (w @ self.pairs[src, :m]) * inv_cand[:m]
            return out
        if self.pairs is not None:
            # owner is sorted (users in order): the CSR is built directly, not from COO
            indptr = np.zeros(len(users) + 1, np.int64)
            np.cumsum(np.bincount(owner, minlength=len(users)), out=indptr[1:])
            weights = sp.csr_matrix((w, np.asarray(src, np.int64), indptr),
                                    shape=(len(users), cap))
            prod = weights @ self.pairs                # (users x capacity), dense
            prod *= inv_cand
            if n == cap:
                return prod
            out = np.zeros((len(users), n), np.float32)
            out[:, :m] = prod[:, :m]
            return out
        if not sparse and len(users) <= DENSE_PRODUCT_USERS:
            out = np.zeros((len(users), n), np.float32)
            out[:, :m] = self._rows.times_dense(owner, src, w, len(users), m) * inv_cand[:m]
            return out
        prod = self._rows.times(owner, src, w, len(users))
        prod.data *= inv_cand[prod.indices]
        if sparse:
            prod = prod[:, :m] if m < cap else prod
            prod.sort_indices()
            return prod
        if n == cap:
            return prod.toarray()      # into fresh calloc'ed zeros: no extra pass
        out = np.zeros((len(users), n), np.float32)
        out[:, :m] = prod.toarray()[:, :m]
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


def _matrix_arrays(name: str, dense: np.ndarray | None, rows: SparseCounts | None
                   ) -> dict[str, np.ndarray]:
    """A dense or sparse count matrix as (rows, cols, weights) of its non-zero entries."""
    if dense is not None:
        a, b = np.nonzero(dense)
        w = dense[a, b]
    else:
        m = rows.rows(np.arange(rows.capacity)).tocoo()
        a, b, w = m.row, m.col, m.data
    return {f"{name}_rows": a.astype(np.int64), f"{name}_cols": b.astype(np.int64),
            f"{name}_w": np.asarray(w, np.float32)}


def _matrix_entries(name: str, arrays: Mapping[str, np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(arrays[f"{name}_rows"], np.int64),
            np.asarray(arrays[f"{name}_cols"], np.int64),
            np.asarray(arrays[f"{name}_w"], np.float32))
