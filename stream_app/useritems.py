"""Per-user item lists in one numpy arena: what a user touched, or their positives in order.

At a million users a ``dict[int, set[int]]`` costs ~1 kB per user in Python objects (2 GB
for the seen sets and positive histories together); here a user row is an int32 slice of a
growable arena (``start``/``length``/``capacity`` arrays indexed by row), about 16 bytes per
row plus 4-8 bytes per stored item. Every operation takes a micro-batch of rows at once:

- :meth:`UserItems.add` appends (row, item) pairs that are new for their row, in input
  order (distinct per row: a repeated pair is stored once);
- :meth:`UserItems.cells` gives every item of some rows as (local row, item) arrays, ready
  to mask a score matrix (``scores[local, items] = -inf``);
- :meth:`UserItems.window` / :meth:`UserItems.last` give items by position (a user's last
  ``k`` positives, the positives just before a new one);
- :meth:`UserItems.has` / :meth:`UserItems.contains` answer membership.

A full slice is moved to the arena's end with twice the capacity; the space it leaves is
reclaimed by an occasional compaction (when the arena is full and at least half of it is
such garbage), so the arena stays within ~4x the stored items. Rows are dense ints (engine
rows) that only grow; reading a row that was never written returns nothing and writes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

_MIN_SLICE = 4
_ITEM_BITS = 32
_FEW = 8
"""Up to this many pairs, :meth:`UserItems.add` goes pair by pair (cheaper than numpy)."""


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])`` without the loop."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    ends = np.cumsum(lengths)
    offs = np.repeat(np.asarray(starts, np.int64) - (ends - lengths), lengths)
    return offs + np.arange(total, dtype=np.int64)


class UserItems:
    """Distinct items per user row, in insertion order, in one int32 arena."""

    def __init__(self, rows: int = 0, arena: int = 1024) -> None:
        n = max(16, rows)
        self._start = np.zeros(n, np.int64)
        self._len = np.zeros(n, np.int32)
        self._cap = np.zeros(n, np.int32)
        self._rows = 0          # rows with a slot in the arrays (max row written + 1)
        self._arena = np.zeros(max(arena, 16), np.int32)
        self._tail = 0          # arena[:tail] is allocated (slices or garbage)
        self._garbage = 0       # slots of moved slices, reclaimed by _compact

    # ----------------------------------------------------------------- sizes
    @property
    def n_rows(self) -> int:
        """One past the highest row ever written (rows below it may still be empty)."""
        return self._rows

    @property
    def n_items(self) -> int:
        """Stored (row, item) pairs."""
        return int(self._len[:self._rows].sum())

    @property
    def nbytes(self) -> int:
        return self._start.nbytes + self._len.nbytes + self._cap.nbytes + self._arena.nbytes

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """Items per row (0 for rows never written, including negative ones)."""
        rows = np.asarray(rows, np.int64)
        ok = (rows >= 0) & (rows < self._rows)
        out = np.zeros(len(rows), np.int64)
        out[ok] = self._len[rows[ok]]
        return out

    def has(self, rows: np.ndarray) -> np.ndarray:
        """Which rows hold at least one item."""
        return self.lengths(rows) > 0

    def nonempty_rows(self) -> np.ndarray:
        return np.flatnonzero(self._len[:self._rows] > 0)

    # ----------------------------------------------------------------- single-row reads
    def __contains__(self, row: object) -> bool:
        return isinstance(row, (int, np.integer)) and 0 <= row < self._rows and \
            bool(self._len[row] > 0)

    def __getitem__(self, row: int) -> np.ndarray:
        """A copy of the row's items, oldest first (empty for a row never written)."""
        row = int(row)
        if not 0 <= row < self._rows:
            return np.empty(0, np.int32)
        s = int(self._start[row])
        return self._arena[s:s + int(self._len[row])].copy()

    def items(self) -> Iterator[tuple[int, np.ndarray]]:
        """(row, items) of every non-empty row, by row (checkpoints, tests)."""
        for row in self.nonempty_rows().tolist():
            yield row, self[row]

    # ----------------------------------------------------------------- batch reads
    def window(self, rows: np.ndarray, ends: np.ndarray, k: int | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Items at positions ``[ends - k, ends)`` of each row (all before ``ends`` if ``k`` is
        None), oldest first, as (index into ``rows``, item) arrays. ``ends`` must not pass
        the rows' lengths."""
        rows = np.asarray(rows, np.int64)
        ends = np.asarray(ends, np.int64)
        if len(rows) == 1:          # one user (a live micro-batch's usual list): a slice
            end = int(ends[0])
            lo1 = 0 if k is None else max(0, end - k)
            if end <= lo1:
                return np.empty(0, np.int64), np.empty(0, np.int32)
            s = int(self._start[rows[0]])
            return np.zeros(end - lo1, np.int64), self._arena[s + lo1:s + end].copy()
        lo = np.zeros_like(ends) if k is None else np.maximum(0, ends - k)
        n = ends - lo
        owner = np.repeat(np.arange(len(rows)), n)
        if not len(owner):
            return owner, np.empty(0, np.int32)
        starts = np.zeros(len(rows), np.int64)
        has = n > 0
        starts[has] = self._start[rows[has]] + lo[has]
        return owner, self._arena[ranges(starts, n)]

    def last(self, rows: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Each row's last ``k`` items (all if None), oldest first, as (index, item) arrays."""
        rows = np.asarray(rows, np.int64)
        return self.window(rows, self.lengths(rows), k)

    def cells(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every item of each row as (index into ``rows``, item): ``scores[i, j] = -inf``
        masks a batch's score matrix in one assignment."""
        return self.last(rows, None)

    def contains(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (row, item) pair is stored."""
        rows = np.asarray(rows, np.int64)
        items = np.asarray(items, np.int64)
        if not len(rows):
            return np.zeros(0, bool)
        urows = np.unique(rows)
        owner, stored = self.cells(urows)
        if not len(owner):
            return np.zeros(len(rows), bool)
        return _member(_keys(rows, items), np.sort(_keys(urows[owner], stored)))

    # ----------------------------------------------------------------- writes
    def add(self, rows: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append the pairs new for their row, in input order; a pair repeated in the batch
        or already stored is skipped.

        Returns (indices into the input of the pairs appended, their positions in their
        rows): a caller can find what came before each new item with :meth:`window`.
        """
        rows = np.asarray(rows, np.int64)
        items = np.asarray(items, np.int64)
        if len(rows) != len(items):
            raise ValueError(f"{len(rows)} rows for {len(items)} items; pass one row per item")
        if not len(rows):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        if rows.min() < 0 or items.min() < 0 or items.max() >= 1 << _ITEM_BITS - 1:
            raise ValueError("rows and items must be non-negative ints below 2**31")
        if len(rows) <= _FEW:
            return self._add_few(rows.tolist(), items.tolist())
        keys = _keys(rows, items)
        _, first = np.unique(keys, return_index=True)   # first occurrence of each pair
        take = np.sort(first)
        stored = self.contains(rows[take], items[take])
        take = take[~stored]
        if not len(take):
            return take, take
        r, it = rows[take], items[take]
        order = np.argsort(r, kind="stable")            # by row, input order within a row
        rs = r[order]
        urow, ufirst, ucount = np.unique(rs, return_index=True, return_counts=True)
        self._ensure_rows(int(urow[-1]) + 1)
        self._reserve(urow, self._len[urow].astype(np.int64) + ucount)
        pos_sorted = self._len[rs].astype(np.int64) + \
            (np.arange(len(rs)) - np.repeat(ufirst, ucount))
        self._arena[self._start[rs] + pos_sorted] = it[order]
        self._len[urow] += ucount.astype(np.int32)
        pos = np.empty(len(take), np.int64)
        pos[order] = pos_sorted
        return take, pos

    def _add_few(self, rows: list[int], items: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`add` pair by pair: a live micro-batch is often a single event, and the
        vectorised path costs ~100 µs of numpy calls whatever its size."""
        taken, positions = [], []
        for k, (r, it) in enumerate(zip(rows, items)):
            if r < self._rows:
                s, n = int(self._start[r]), int(self._len[r])
                if n and (self._arena[s:s + n] == it).any():
                    continue
            else:
                n = 0
                self._ensure_rows(r + 1)
            if n + 1 > self._cap[r]:
                self._reserve(np.array([r]), np.array([n + 1]))
            self._arena[self._start[r] + n] = it
            self._len[r] = n + 1
            taken.append(k)
            positions.append(n)
        return np.asarray(taken, np.int64), np.asarray(positions, np.int64)

    def load(self, rows: Sequence[int] | np.ndarray, lists: Sequence[np.ndarray]) -> None:
        """Bulk-fill empty rows from stored lists (restart path; lists must be distinct)."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return
        lens = np.fromiter((len(x) for x in lists), np.int64, len(lists))
        if self.has(rows).any():
            raise ValueError("load() fills empty rows only; use add() to extend a row")
        self._ensure_rows(int(rows.max()) + 1)
        self._reserve(rows, lens)
        keep = lens > 0
        flat = np.concatenate([np.asarray(x, np.int32) for x in lists]) if lens.sum() else \
            np.empty(0, np.int32)
        self._arena[ranges(self._start[rows[keep]], lens[keep])] = flat
        self._len[rows] = lens.astype(np.int32)

    # ----------------------------------------------------------------- arena management
    def _ensure_rows(self, n: int) -> None:
        if n > len(self._start):
            size = max(n, 2 * len(self._start))
            for name in ("_start", "_len", "_cap"):
                old = getattr(self, name)
                new = np.zeros(size, old.dtype)
                new[:len(old)] = old
                setattr(self, name, new)
        self._rows = max(self._rows, n)

    def _reserve(self, rows: np.ndarray, need: np.ndarray) -> None:
        """Room for ``need`` items in each of the (unique) ``rows``: a full slice moves to the
        arena's end with a power-of-two capacity (doubling)."""
        grow = need > self._cap[rows]
        if not grow.any():
            return
        rows, need = rows[grow], need[grow]
        cap = np.left_shift(1, np.ceil(np.log2(np.maximum(need, _MIN_SLICE))).astype(np.int64))
        cap = np.where(cap < need, 2 * cap, cap)        # float rounding guard
        extra = int(cap.sum())
        if self._tail + extra > len(self._arena):
            if 2 * self._garbage >= self._tail:
                self._compact(rows, cap)
                return
            self._arena = _grown(self._arena, self._tail, self._tail + extra)
        start = self._tail + np.cumsum(cap) - cap
        lens = self._len[rows]
        self._arena[ranges(start, lens)] = self._arena[ranges(self._start[rows], lens)]
        self._garbage += int(self._cap[rows].sum())
        self._start[rows] = start
        self._cap[rows] = cap
        self._tail += extra

    def _compact(self, rows: np.ndarray, cap: np.ndarray) -> None:
        """Lay every row out afresh, in row order, ``rows`` with their new capacities."""
        n = self._rows
        caps = self._cap[:n].astype(np.int64)
        caps[rows] = cap
        start = np.cumsum(caps) - caps
        total = int(caps.sum())
        arena = np.zeros(total + max(total // 4, 1024), np.int32)
        lens = self._len[:n]
        arena[ranges(start, lens)] = self._arena[ranges(self._start[:n], lens)]
        self._arena = arena
        self._start[:n] = start
        self._cap[:n] = caps
        self._tail = total
        self._garbage = 0


def _keys(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    return (np.asarray(rows, np.int64) << _ITEM_BITS) | np.asarray(items, np.int64)


def _member(queries: np.ndarray, ref_sorted: np.ndarray) -> np.ndarray:
    """``np.isin`` for int64 keys against a sorted array (numpy 2's hash-based ``isin`` was
    ~5x slower here)."""
    at = np.searchsorted(ref_sorted, queries)
    np.minimum(at, len(ref_sorted) - 1, out=at)
    return ref_sorted[at] == queries


def _grown(arena: np.ndarray, used: int, need: int) -> np.ndarray:
    new = np.zeros(max(need, int(len(arena) * 1.5)), arena.dtype)
    new[:used] = arena[:used]
    return new
