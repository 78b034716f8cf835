"""Top-N selection for a batch of users: mask what must never be shown, then select.

Selection uses ``np.partition`` to find each row's n-th best score (3x faster than
``argpartition`` on float32 rows), keeps the entries at or above it, and sorts only those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Cells(NamedTuple):
    """(score row, item column) pairs, e.g. every item a batch of users interacted with
    (:meth:`stream_app.useritems.UserItems.cells`): masked in one assignment."""

    rows: np.ndarray
    cols: np.ndarray


@dataclass
class TopN:
    """A batch's lists in flat arrays: user ``b``'s best-first entries are
    ``cols[starts[b]:starts[b] + counts[b]]`` with scores ``vals[...]`` (no Python object
    per entry, so callers can convert or encode a whole batch at once)."""

    cols: np.ndarray
    vals: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def user_index(self) -> np.ndarray:
        """The batch row of every entry of ``cols``/``vals``."""
        return np.repeat(np.arange(len(self.starts)), self.counts)

    def best(self) -> np.ndarray:
        """Each user's best score (0 for an empty list)."""
        out = np.zeros(len(self.starts), self.vals.dtype if len(self.vals) else np.float32)
        has = self.counts > 0
        out[has] = self.vals[self.starts[has]]
        return out

    def pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per user (item rows, scores) array pairs: :func:`top_n`'s form."""
        return [(self.cols[s:s + c], self.vals[s:s + c])
                for s, c in zip(self.starts.tolist(), self.counts.tolist())]


def top_n(scores: np.ndarray, n: int, n_valid_items: int,
          exclude: Cells | Sequence[np.ndarray | list[int] | set[int]]
          ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Best ``n`` item rows per score row, best first, as (rows, scores) pairs.

    ``scores`` is (users x capacity); columns from ``n_valid_items`` on are unassigned dummy
    slots and are never returned. ``exclude``: item rows each user already interacted with
    or disliked, as :class:`Cells` (the engine's vectorised path) or one collection per
    score row (``exclude[i]`` for row ``i``). Modifies ``scores`` in place.
    """
    return top_n_flat(scores, n, n_valid_items, exclude).pairs()


def top_n_flat(scores: np.ndarray, n: int, n_valid_items: int,
               exclude: Cells | Sequence[np.ndarray | list[int] | set[int]]) -> TopN:
    """:func:`top_n` as one :class:`TopN` of flat arrays."""
    n_users, n_cols = scores.shape
    if n_cols > n_valid_items:
        scores[:, n_valid_items:] = -np.inf
    if isinstance(exclude, Cells):
        rows, cols = exclude
    else:
        lens = [len(e) for e in exclude]
        rows = np.repeat(np.arange(len(exclude)), lens)
        cols = np.concatenate([np.fromiter(e, dtype=np.int64, count=len(e)) for e in exclude]) \
            if sum(lens) else np.empty(0, np.int64)
    if len(rows):
        scores[rows, cols] = -np.inf
    k = min(n, n_valid_items)
    if k <= 0 or n_users == 0:
        empty = np.zeros(n_users, np.int64)
        return TopN(np.empty(0, np.int64), np.empty(0, scores.dtype), empty, empty.copy())
    valid = scores[:, :n_valid_items]
    kth = np.partition(valid, n_valid_items - k, axis=1)[:, n_valid_items - k]
    keep = valid >= kth[:, None]
    keep &= valid > -np.inf          # masked entries never count, even when kth is -inf
    rows, cols = np.nonzero(keep)
    vals = valid[rows, cols]
    order = np.lexsort((cols, -vals, rows))      # by user, then best score, then item row
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n_users))
    ends = np.searchsorted(rows, np.arange(n_users), side="right")
    counts = np.minimum(ends - starts, k)
    if (counts < ends - starts).any():           # ties at the n-th score: cut each to k
        take = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])
        cols, vals = cols[take], vals[take]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return TopN(cols.astype(np.int64, copy=False), vals, starts.astype(np.int64), counts)
