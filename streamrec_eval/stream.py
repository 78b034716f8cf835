"""The stream an evaluation replays: rated interactions in time order, ids coded to ints.

:class:`Stream` is built from a MovieLens folder (:meth:`Stream.from_movielens`, already in
time order), from the synthetic power-user history (:mod:`streamrec_eval.synthetic`) or from
any (user, item, rating) triples; its time splits (``split_index``) are what every protocol
here trains and tests on. :class:`Events` is a contiguous slice of it: what a model is fed
at once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.schema import Interaction

POSITIVE = 4.0
"""Rating at or above which an event is a positive the protocol tests on."""


@dataclass(frozen=True)
class Stream:
    """Rated interactions in time order, users and items coded to dense ints.

    ``user_ids[code]`` / ``item_ids[code]`` give the external ids; metadata is keyed by them.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    user_features: Mapping[str, dict] = field(default_factory=dict)
    item_features: Mapping[str, dict] = field(default_factory=dict)

    @classmethod
    def from_triples(cls, users: Sequence[str], items: Sequence[str], ratings: Sequence[float],
                     timestamps: Sequence[float] | None = None,
                     user_features: Mapping[str, dict] | None = None,
                     item_features: Mapping[str, dict] | None = None) -> Stream:
        """Code external ids (in order of first appearance); the order of events is kept."""
        ucodes, uids = _code(users)
        icodes, iids = _code(items)
        ts = np.arange(len(ucodes), dtype=np.float64) if timestamps is None else \
            np.asarray(timestamps, dtype=np.float64)
        return cls(ucodes, icodes, np.asarray(ratings, dtype=np.float64), ts, uids, iids,
                   dict(user_features or {}), dict(item_features or {}))

    @classmethod
    def from_movielens(cls, ml: Any) -> Stream:
        """A :class:`~streamrec.movielens.MovieLens` (already in time order) as a stream."""
        return cls.from_triples(ml.users.tolist(), ml.items.tolist(), ml.ratings,
                                ml.timestamps, ml.user_features, ml.item_features)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def split_index(self, fraction: float) -> int:
        return int(len(self) * fraction)

    def events(self, start: int, stop: int) -> Events:
        return Events(self, start, stop)

    @functools.cached_property
    def user_code(self) -> dict[str, int]:
        return {u: k for k, u in enumerate(self.user_ids)}

    @functools.cached_property
    def item_code(self) -> dict[str, int]:
        return {i: k for k, i in enumerate(self.item_ids)}

    @functools.cached_property
    def interactions(self) -> list[Interaction]:
        """Every event as the contract's record (what the producer sends), built once."""
        uids, iids = self.user_ids, self.item_ids
        return [Interaction(user_id=uids[u], item_id=iids[i], event_type="rating",
                            rating=float(r), timestamp=float(t), event_id=f"ev-{k}")
                for k, (u, i, r, t) in enumerate(zip(self.users.tolist(), self.items.tolist(),
                                                     self.ratings.tolist(),
                                                     self.timestamps.tolist()))]


def _code(ids: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    table: dict[str, int] = {}
    codes = np.fromiter((table.setdefault(x, len(table)) for x in ids), np.int64, len(ids))
    return codes, tuple(table)


@dataclass(frozen=True)
class Events:
    """A contiguous slice ``[start, stop)`` of a stream: what a model is fed at once."""

    stream: Stream
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def users(self) -> np.ndarray:
        return self.stream.users[self.start:self.stop]

    @property
    def items(self) -> np.ndarray:
        return self.stream.items[self.start:self.stop]

    @property
    def ratings(self) -> np.ndarray:
        return self.stream.ratings[self.start:self.stop]

    def positives(self, threshold: float = POSITIVE) -> tuple[np.ndarray, np.ndarray]:
        keep = self.ratings >= threshold
        return self.users[keep], self.items[keep]

    def interactions(self) -> list[Interaction]:
        return self.stream.interactions[self.start:self.stop]
