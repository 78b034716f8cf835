"""Bounded sparse pair counts: a pruned CSR base plus pending CSR deltas, all at C speed.

Co-occurrence counts at 100 k items cannot be dense (40+ GB), and unbounded sparse rows grow
with every distinct pair (~400 M pair updates at 10 M positives). Here the counts are:

- a **base**: a scipy CSR matrix whose rows hold at most ``max_neighbours`` entries (each
  row's largest counts, ties to the lower column), so it is O(items x max_neighbours);
- **pending** deltas: one canonical CSR per micro-batch, merged pairwise like a log-structured
  merge tree (a level is added into the one before it once it is at least half its size), so
  a batch costs O(its pairs x log) and a read visits a handful of matrices;
- a **full merge** once the pending entries pass ``max(merge_min, merge_ratio * base.nnz)``:
  everything is added into the base (``csr + csr``) and every row pruned back to
  ``max_neighbours``. Its cost is O(base), so the threshold grows with the base (amortised
  O(1) per pair);
- an **early merge** of hot rows: item popularity is heavy-tailed (the top item of a Zipf
  catalogue draws ~8 % of the positives), so between full merges a popular item's pending
  row would grow to tens of thousands of entries, and every user with that item among
  their recent positives would pay for them in :meth:`SparseCounts.times`. A row whose
  live pending entries pass ``hot_len`` is summed and pruned at once into a small
  **overlay** CSR (rows merged early since the last full merge) and its entries in the
  existing pending levels are marked dead (``_merged_seq``), so no pending row is read
  longer than ~``hot_len`` entries and the O(base) full merge stays rare.

- a **tail**: the last few thousand pairs as plain arrays. A live micro-batch brings a
  handful of pairs, and making a canonical ``capacity``-row CSR of them, then adding it
  into the levels, costs O(capacity) each time (~0.4 ms at 16 k items, measured per event
  in ``bench/transition_cost.py``); the tail turns into a level once it holds
  ``tail_max`` pairs, so that cost is paid once per few thousand pairs.

Pending deltas (and the tail) count in every read (:meth:`SparseCounts.get`, :meth:`SparseCounts.times`),
so until a row is pruned the counts are exactly the unbounded ones. A pruned pair that occurs
again starts from zero: pruning approximates the strongest neighbours (the row keeps the
pairs strongest when it was pruned), not an exact top-M.

Counts are whole numbers (each pair occurrence adds 1), which lets the pruning sort one
packed int64 key per entry (``np.sort`` is ~10x faster than ``argsort`` on this numpy).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from stream_app.useritems import ranges

log = logging.getLogger(__name__)


class SparseCounts:
    """Pair counts over ``capacity`` items, each row bounded once it is merged.

    ``max_neighbours``: entries a row keeps after a merge (0: unbounded, nothing pruned).
    ``merge_min`` / ``merge_ratio``: pending entries that trigger a full merge.
    ``hot_len``: live pending entries that get a row merged early (default
    ``4 * max_neighbours``; 0: never early).
    ``tail_max``: pairs kept as plain arrays before they become a pending level (0: none).
    """

    def __init__(self, capacity: int, max_neighbours: int = 200, merge_min: int = 1 << 21,
                 merge_ratio: float = 0.5, hot_len: int | None = None,
                 tail_max: int = 4096) -> None:
        self.max_neighbours = max_neighbours
        self.merge_min = merge_min
        self.merge_ratio = merge_ratio
        self.hot_len = 4 * max_neighbours if hot_len is None else hot_len
        self.base = _empty(capacity)
        self.overlay = _empty(capacity)        # rows merged early, authoritative over base
        self._in_overlay = np.zeros(capacity, bool)
        self.levels: list[sp.csr_matrix] = []
        self._level_seq: list[int] = []
        self._seq = 0                           # next level sequence number
        self._merged_seq = np.zeros(capacity, np.int64)   # a row's entries in levels < this
        self._pending_len = np.zeros(capacity, np.int64)  # are dead; live entries (upper bound)
        self.tail_max = tail_max
        self._tail: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._tail_n = 0
        self._tail_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.pruned = 0          # entries dropped by pruning so far (0: counts are exact)
        self.merges = 0
        self.early_merges = 0
        self.merge_seconds = 0.0

    @classmethod
    def from_dense(cls, pairs: np.ndarray, capacity: int, **kw) -> "SparseCounts":
        """The counts of a dense matrix (the switch from dense once the catalogue grows)."""
        out = cls(capacity, **kw)
        base = _resized(sp.csr_matrix(pairs, dtype=np.float32), capacity)
        out.base, out.pruned = top_per_row(base, out.max_neighbours)
        return out

    # ----------------------------------------------------------------- sizes
    @property
    def capacity(self) -> int:
        return self.base.shape[0]

    @property
    def pending_nnz(self) -> int:
        """Entries held in pending levels (dead ones included until they are dropped)."""
        return sum(m.nnz for m in self.levels)

    @property
    def nnz(self) -> int:
        return self.base.nnz + self.overlay.nnz + self.pending_nnz + self._tail_n

    @property
    def nbytes(self) -> int:
        mats = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
                   for m in (self.base, self.overlay, *self.levels))
        return mats + self._in_overlay.nbytes + self._merged_seq.nbytes + \
            self._pending_len.nbytes + 20 * self._tail_n

    def resize(self, capacity: int) -> None:
        """Grow to ``capacity`` rows and columns (no copy of the entries)."""
        if capacity <= self.capacity:
            return
        extra = capacity - self.capacity
        self.base = _resized(self.base, capacity)
        self.overlay = _resized(self.overlay, capacity)
        self.levels = [_resized(m, capacity) for m in self.levels]
        self._in_overlay = np.concatenate([self._in_overlay, np.zeros(extra, bool)])
        self._merged_seq = np.concatenate([self._merged_seq, np.zeros(extra, np.int64)])
        self._pending_len = np.concatenate([self._pending_len, np.zeros(extra, np.int64)])

    # ----------------------------------------------------------------- writes
    def add(self, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray | None = None
            ) -> None:
        """Count one occurrence of every (row, col) pair (repeats count repeatedly), or
        ``weights`` of them (whole numbers keep the pruning's fast path)."""
        if not len(rows):
            return
        w = np.ones(len(rows), np.float32) if weights is None else \
            np.asarray(weights, np.float32)
        self._tail.append((np.array(rows, np.int64), np.array(cols, np.int64),
                           np.array(w, np.float32)))   # copies: callers may reuse theirs
        self._tail_n += len(rows)
        self._tail_arrays = None
        if self._tail_n > self.tail_max:
            self._flush_tail()

    def _tail_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, weight) of the pairs in the tail, oldest first."""
        if self._tail_arrays is None:
            if not self._tail:
                empty = np.zeros(0, np.int64)
                self._tail_arrays = (empty, empty, np.zeros(0, np.float32))
            elif len(self._tail) == 1:
                self._tail_arrays = self._tail[0]
            else:
                self._tail_arrays = tuple(np.concatenate(a) for a in zip(*self._tail))
                self._tail = [self._tail_arrays]
        return self._tail_arrays

    def _flush_tail(self, merge_if_due: bool = True) -> None:
        """Turn the tail into a pending level (then merge if the pending entries are due)."""
        if not self._tail_n:
            return
        rows, cols, w = self._tail_entries()
        self._tail, self._tail_n, self._tail_arrays = [], 0, None
        delta = csr_from_pairs(rows, cols, self.capacity, w)
        lens = np.diff(delta.indptr)
        touched = np.flatnonzero(lens)
        self._pending_len[touched] += lens[touched]
        self._push(delta)
        if not merge_if_due:
            return
        if self.pending_nnz > max(self.merge_min, self.merge_ratio * self.base.nnz):
            self.merge()
        elif self.hot_len > 0:
            hot = touched[self._pending_len[touched] > self.hot_len]
            if len(hot):   # the tracker over-counts pairs repeated across levels: recount
                live = sum(n for _, _, n in self._sources(hot)[2:])
                self._pending_len[hot] = live
                hot = hot[live > self.hot_len]
            if len(hot):
                self._merge_rows(hot)

    def _push(self, delta: sp.csr_matrix) -> None:
        levels, seqs = self.levels, self._level_seq
        levels.append(delta)
        seqs.append(self._next_seq())
        while len(levels) > 1 and 2 * levels[-1].nnz >= levels[-2].nnz:
            newer, s_new = levels.pop(), seqs.pop()
            older, s_old = levels.pop(), seqs.pop()
            levels.append(self._live(older, s_old) + self._live(newer, s_new))
            seqs.append(self._next_seq())

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    def merge(self) -> None:
        """Add the pending deltas and the overlay into the base; prune each row."""
        self._flush_tail(merge_if_due=False)
        if not self.levels and not self.overlay.nnz:
            return
        t0 = time.perf_counter()
        total = self.base
        if self.overlay.nnz or self._in_overlay.any():
            total = _drop_rows(total, self._in_overlay) + self.overlay
        pending = None
        for m, s in zip(reversed(self.levels), reversed(self._level_seq)):  # smallest first
            live = self._live(m, s)
            pending = live if pending is None else pending + live
        if pending is not None:
            total = total + pending
        self.base, dropped = top_per_row(total, self.max_neighbours)
        self.overlay = _empty(self.capacity)
        self._in_overlay[:] = False
        self._pending_len[:] = 0
        self.levels, self._level_seq = [], []
        self.pruned += dropped
        self.merges += 1
        took = time.perf_counter() - t0
        self.merge_seconds += took
        log.debug("cooccurrence merge %d: base nnz %d, dropped %d, %.0f ms", self.merges,
                  self.base.nnz, dropped, took * 1e3)

    def _merge_rows(self, rows: np.ndarray) -> None:
        """Early merge: sum these rows' current counts and live pending entries, prune them,
        store them in the overlay, and mark their entries in the existing levels dead."""
        self._flush_tail(merge_if_due=False)
        t0 = time.perf_counter()
        merged, dropped = top_per_row(self.rows(rows), self.max_neighbours)
        self.overlay = _replace_rows(self.overlay, rows, merged)
        self._in_overlay[rows] = True
        self._merged_seq[rows] = self._seq      # every existing level is older
        self._pending_len[rows] = 0
        self.pruned += dropped
        self.early_merges += 1
        self.merge_seconds += time.perf_counter() - t0

    def _live(self, m: sp.csr_matrix, seq: int) -> sp.csr_matrix:
        """Level ``m`` (sequence ``seq``) without the rows merged early since it was made."""
        return _drop_rows(m, self._merged_seq > seq)

    # ----------------------------------------------------------------- reads
    def _sources(self, items: np.ndarray) -> list[tuple[sp.csr_matrix, np.ndarray, np.ndarray]]:
        """(matrix, start, length) of the live entries of ``items``' rows in every matrix."""
        out = []
        for m, alive in ((self.base, ~self._in_overlay[items]),
                         (self.overlay, self._in_overlay[items]),
                         *((m, self._merged_seq[items] <= s)
                           for m, s in zip(self.levels, self._level_seq))):
            start = m.indptr[items].astype(np.int64)
            out.append((m, start, np.where(alive, m.indptr[items + 1] - start, 0)))
        return out

    def _tail_for(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index into ``items``, column, count) of the tail's pairs in their rows, oldest
        first. ``items`` must be distinct."""
        t_rows, t_cols, t_w = self._tail_entries()
        if not len(t_rows) or not len(items):
            return t_rows[:0], t_cols[:0], t_w[:0]
        order = np.argsort(items, kind="stable")
        sorted_items = items[order]
        pos = np.minimum(np.searchsorted(sorted_items, t_rows), len(items) - 1)
        hit = sorted_items[pos] == t_rows
        return order[pos[hit]], t_cols[hit], t_w[hit]

    def _gather(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index into ``items``, column, count) of every live entry of their rows, the
        tail's included (a row may then repeat a column: counts add up). ``items`` must be
        distinct."""
        items = np.asarray(items, np.int64)
        parts = self._sources(items)
        local = [np.repeat(np.arange(len(items)), n) for _, _, n in parts]
        cols = [m.indices[ranges(s, n)].astype(np.int64) for m, s, n in parts]
        vals = [m.data[ranges(s, n)] for m, s, n in parts]
        if self._tail_n:
            t_local, t_cols, t_vals = self._tail_for(items)
            local.append(t_local)
            cols.append(t_cols)
            vals.append(t_vals)
        return np.concatenate(local), np.concatenate(cols), np.concatenate(vals)

    def rows(self, items: np.ndarray) -> sp.csr_matrix:
        """(len(items) x capacity) current counts of these rows, pending included."""
        items = np.asarray(items, np.int64)
        local, cols, vals = self._gather(items)
        out = sp.csr_matrix((vals, (local, cols)), shape=(len(items), self.capacity))
        out.sum_duplicates()
        return out

    def get(self, i: int, j: int) -> float:
        if not (0 <= i < self.capacity and 0 <= j < self.capacity):
            return 0.0
        _, cols, vals = self._gather(np.array([i]))
        return float(vals[cols == j].sum())

    def times(self, owner: np.ndarray, src: np.ndarray, weights: np.ndarray,
              n_rows: int) -> sp.csr_matrix:
        """(n_rows x capacity) ``sum(weights[k] * counts[src[k], :])`` per ``owner[k]``,
        pending deltas and the tail included, as one sparse product.

        The live rows of ``src`` are gathered from every stored matrix (and the tail) into
        one (a row per matrix and source item), so there is one ``csr @ csr`` and no sum of
        products.
        """
        items, local = np.unique(np.asarray(src, np.int64), return_inverse=True)
        local = local.ravel()
        parts = self._sources(items)
        lens = [n for _, _, n in parts]
        indices = [m.indices[ranges(s, n)] for m, s, n in parts]
        data = [m.data[ranges(s, n)] for m, s, n in parts]
        if self._tail_n:        # one more block of rows: the tail's pairs, by item
            t_local, t_cols, t_vals = self._tail_for(items)
            order = np.argsort(t_local, kind="stable")
            lens.append(np.bincount(t_local, minlength=len(items)))
            indices.append(t_cols[order].astype(np.int32))
            data.append(t_vals[order])
        lens = np.stack(lens)
        indptr = np.zeros(lens.size + 1, np.int64)
        np.cumsum(lens.ravel(), out=indptr[1:])
        gathered = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr),
                                 shape=(lens.size, self.capacity))
        k = np.arange(len(lens))[:, None] * len(items)
        w = sp.csr_matrix((np.tile(np.asarray(weights, np.float32), len(lens)),
                           (np.tile(owner, len(lens)), (k + local).ravel())),
                          shape=(n_rows, lens.size))
        return w @ gathered

    def times_dense(self, owner: np.ndarray, src: np.ndarray, weights: np.ndarray,
                    n_rows: int, width: int) -> np.ndarray:
        """:meth:`times` as a dense (n_rows x width) array (columns past ``width`` cut),
        with no scipy matrix built: a live micro-batch's list asks for one or a few users,
        and building the sparse operands costs more than the product (~0.8 ms at 16 k
        items against ~0.05 ms for this)."""
        items, local = np.unique(np.asarray(src, np.int64), return_inverse=True)
        li, cols, vals = self._gather(items)
        local = local.ravel()
        # entries of each distinct item, then each source positive's copy of its item's
        order = np.argsort(li, kind="stable")
        li, cols, vals = li[order], cols[order], vals[order]
        lens = np.bincount(li, minlength=len(items))
        start = np.cumsum(lens) - lens
        take = ranges(start[local], lens[local])
        rep = np.repeat(np.arange(len(local)), lens[local])
        c = cols[take]
        keep = c < width
        flat = np.asarray(owner, np.int64)[rep[keep]] * width + c[keep]
        wv = (np.asarray(weights, np.float64)[rep] * vals[take])[keep]
        out = np.bincount(flat, weights=wv, minlength=n_rows * width)
        return out.astype(np.float32).reshape(n_rows, width)


def csr_from_pairs(rows: np.ndarray, cols: np.ndarray, capacity: int,
                   weights: np.ndarray | None = None) -> sp.csr_matrix:
    """Canonical (sorted, summed) CSR of one count (or ``weights[k]``) per (row, col) pair."""
    keys = np.asarray(rows, np.int64) * capacity + np.asarray(cols, np.int64)
    if weights is None:
        keys = np.sort(keys)
    else:
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    if weights is None:
        counts = np.diff(np.r_[starts, len(keys)]).astype(np.float32)
    else:
        counts = np.add.reduceat(np.asarray(weights, np.float64)[order], starts) \
            .astype(np.float32)
    uniq = keys[starts]
    r = uniq // capacity
    indptr = np.zeros(capacity + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=capacity), out=indptr[1:])
    return sp.csr_matrix((counts, (uniq - r * capacity).astype(np.int32), indptr),
                         shape=(capacity, capacity))


def top_per_row(m: sp.csr_matrix, k: int) -> tuple[sp.csr_matrix, int]:
    """Keep each row's ``k`` largest entries (ties: the lower column); ``k`` 0 keeps all.
    ``m`` must be canonical. Returns the pruned matrix and how many entries it dropped."""
    lens = np.diff(m.indptr)
    over = np.flatnonzero(lens > k) if k > 0 else np.empty(0, np.int64)
    if not len(over):
        return m, 0
    olens = lens[over]
    idx = ranges(m.indptr[over], olens)              # entries of the rows to prune, in order
    local = np.repeat(np.arange(len(over), dtype=np.int64), olens)
    keep = _rank_below(local, m.indices[idx].astype(np.int64), m.data[idx], olens, k,
                       m.shape[1])
    mask = np.ones(m.nnz, bool)
    mask[idx[~keep]] = False
    new_lens = lens.copy()
    new_lens[over] = k
    indptr = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(new_lens, out=indptr[1:])
    out = sp.csr_matrix((m.data[mask], m.indices[mask], indptr), shape=m.shape)
    return out, int(len(idx) - keep.sum())


def _rank_below(local: np.ndarray, cols: np.ndarray, vals: np.ndarray, lens: np.ndarray,
                k: int, n_cols: int) -> np.ndarray:
    """Whether each entry is among its row's ``k`` first by (value descending, column).

    Whole counts pack (row, -value, column) into one int64 key: one ``np.sort`` gives each
    row's k-th key, and an entry is kept if its key is not above it.
    """
    whole = np.rint(vals)
    vmax = int(whole.max()) if len(whole) else 0
    first = np.r_[0, np.cumsum(lens)[:-1]]
    if np.array_equal(whole, vals) and len(lens) * (vmax + 1) * n_cols < 2 ** 62:
        key = (local * (vmax + 1) + (vmax - whole.astype(np.int64))) * n_cols + cols
        kth = np.sort(key)[first + k - 1]
        return key <= kth[local]
    order = np.lexsort((cols, -vals, local))          # non-integral counts: slower, general
    keep = np.zeros(len(local), bool)
    keep[order[(np.arange(len(order)) - np.repeat(first, lens)) < k]] = True
    return keep


def _drop_rows(m: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``m`` with the rows flagged in the boolean ``rows`` emptied (``m`` if none has any)."""
    lens = np.diff(m.indptr)
    gone = rows & (lens > 0)
    if not gone.any():
        return m
    keep = ~np.repeat(gone, lens)
    lens = np.where(gone, 0, lens)
    indptr = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def _replace_rows(m: sp.csr_matrix, rows: np.ndarray, new: sp.csr_matrix) -> sp.csr_matrix:
    """``m`` with ``rows`` (ascending, unique) replaced by the rows of ``new`` (row ``k`` of
    ``new`` becomes row ``rows[k]``)."""
    if np.any(np.diff(rows) <= 0):
        raise ValueError("rows passed to _replace_rows must be ascending and unique")
    flag = np.zeros(m.shape[0], bool)
    flag[rows] = True
    lens = np.zeros(m.shape[0], np.int64)
    lens[rows] = np.diff(new.indptr)
    indptr = np.zeros(m.shape[0] + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    placed = sp.csr_matrix((new.data, new.indices, indptr), shape=m.shape)
    return _drop_rows(m, flag) + placed


def _empty(capacity: int) -> sp.csr_matrix:
    return sp.csr_matrix((np.zeros(0, np.float32), np.zeros(0, np.int32),
                          np.zeros(capacity + 1, np.int32)), shape=(capacity, capacity))


def _resized(m: sp.csr_matrix, capacity: int) -> sp.csr_matrix:
    rows = m.shape[0]
    if capacity == rows and m.shape[1] == capacity:
        return m
    indptr = np.concatenate([m.indptr, np.full(capacity - rows, m.indptr[-1], m.indptr.dtype)])
    return sp.csr_matrix((m.data, m.indices, indptr), shape=(capacity, capacity))
