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
:mod:`stream_app.beyond_accuracy` (novelty, genre diversity, popularity bias against the
users' own history, exposure of new items) and run time. :func:`run_exploration` adds the
price and gain of exploration slots.

Any object with ``fit_initial(events)``, ``recommend(user, n, exclude)`` and
``update(events)`` can be evaluated (:class:`PrequentialModel`); adapters here cover
popularity baselines and streamrec's :class:`~stream_app.engine.Engine` driven exactly as
the worker drives it (static, periodic full retrain, micro-batches of ``B`` events), plus
the improvements measured in ``docs/evaluation-notes.md`` (fold-in, co-occurrence blend).

Run everything: ``python -m stream_app.prequential --out bench/results``.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stream_app import beyond_accuracy
from stream_app.cooccurrence import CooccurrenceIndex, blend
from stream_app.engine import Engine
from stream_app.figures import new_figure
from stream_app.foldin import fold_in_lightfm
from stream_app.topn import top_n
from streamrec.schema import Interaction
from streamrec.settings import Settings

log = logging.getLogger(__name__)

POSITIVE = 4.0
"""Rating at or above which an event is a positive the protocol tests on."""


# --------------------------------------------------------------------------- data
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


# --------------------------------------------------------------------------- protocol
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
    """Beyond-accuracy numbers (:func:`stream_app.beyond_accuracy.measure`)."""

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


# --------------------------------------------------------------------------- popularity
class Popularity:
    """Most-liked items, all time (``window=None``) or over the last ``window`` positives."""

    def __init__(self, window: int | None = None, threshold: float = POSITIVE,
                 name: str | None = None) -> None:
        self.window = window
        self.threshold = threshold
        self.name = name or ("popularity" if window is None else f"recent popularity {window}")
        self.counts = np.zeros(0, np.float64)
        self.recent: deque[int] = deque()

    def _add(self, events: Events) -> None:
        _, items = events.positives(self.threshold)
        for i in items.tolist():
            self.counts[i] += 1
            if self.window is not None:
                self.recent.append(i)
                if len(self.recent) > self.window:
                    self.counts[self.recent.popleft()] -= 1

    def fit_initial(self, events: Events) -> None:
        self.counts = np.zeros(events.stream.n_items, np.float64)
        self._add(events)

    def recommend(self, user: int, n: int, exclude: set[int]) -> np.ndarray:
        return top_items(self.counts, n, exclude)

    def update(self, events: Events) -> None:
        self._add(events)


# --------------------------------------------------------------------------- the engine
def engine_settings(**overrides: Any) -> Settings:
    """The worker's defaults with single-threaded (reproducible) training and, unless
    overridden, no exploration: model comparisons measure the ranking itself (the peers do
    not explore); :func:`run_exploration` measures what exploration costs and buys."""
    return Settings(**{"num_threads": 1, "explore_share": 0.0, **overrides})


LIST_SETTINGS = frozenset({"explore_share", "explore_temperature", "explore_protect_top",
                           "cooc_weight", "trans_weight", "trans_decay", "trans_recent"})
"""Settings that shape lists but not training (the co-occurrence and transition counts are
kept whatever their blend weights): a bootstrapped engine is shared across them, so
variants that differ only here are compared from the same bootstrap."""


def bootstrap_engine(settings: Settings, events: Events, metadata: bool = True) -> Engine:
    """An engine as the worker's ``bootstrap()`` leaves it: metadata of every user and item
    (the MovieLens replay sends it first), the events applied untrained, then one full fit
    of ``settings.epochs_bootstrap`` epochs."""
    engine = Engine(settings)
    stream = events.stream
    if metadata:
        for uid in stream.user_ids:
            feats = stream.user_features.get(uid)
            if feats:
                engine.apply_user_features(uid, feats)
        for iid in stream.item_ids:
            feats = stream.item_features.get(iid)
            if feats:
                engine.apply_item_features(iid, feats)
    if len(events):
        engine.apply_interactions(events.interactions(), train=False)
        u, i, v = engine.last_batch_arrays
        engine.fit_all(settings.epochs_bootstrap, u, i, v)
    return engine


class BootstrapCache:
    """Bootstrapped engines by (settings, metadata, slice): each run gets a deep copy, so
    the 30-epoch fit is paid once per configuration and every copy starts identical."""

    def __init__(self) -> None:
        self._engines: dict[tuple, Engine] = {}

    def get(self, settings: Settings, events: Events, metadata: bool = True) -> Engine:
        key = (settings.model_dump_json(exclude=set(LIST_SETTINGS)), metadata,
               id(events.stream), events.start, events.stop)
        if key not in self._engines:
            self._engines[key] = bootstrap_engine(settings, events, metadata)
        engine = copy.deepcopy(self._engines[key])
        engine.settings = settings         # differs at most in LIST_SETTINGS
        return engine


class EngineModel:
    """streamrec's :class:`Engine` in the protocol, fed micro-batches of ``batch_size``
    events through ``apply_interactions`` exactly as the worker does; ``batch_size=None``:
    bootstrapped and never updated (static).

    Lists: a user the engine does not know gets its fallback (recent popular) list; a
    known user the model list, as ``Engine.recommend`` serves it. ``untrained_fallback``
    also sends known users without a trained positive to the fallback.
    """

    def __init__(self, settings: Settings | None = None, batch_size: int | None = 1,
                 metadata: bool = True, untrained_fallback: bool = False,
                 name: str | None = None, cache: BootstrapCache | None = None) -> None:
        self.settings = settings or engine_settings()
        self.batch_size = batch_size
        self.metadata = metadata
        self.untrained_fallback = untrained_fallback
        self.name = name or ("streamrec static" if batch_size is None
                             else f"streamrec B={batch_size}")
        self.cache = cache
        self.engine: Engine | None = None
        self.stream: Stream | None = None
        self._pending: tuple[int, int] | None = None
        self._item_codes = np.zeros(0, np.int64)

    # -- lifecycle
    def fit_initial(self, events: Events) -> None:
        self.stream = events.stream
        self.engine = (self.cache.get(self.settings, events, self.metadata) if self.cache
                       else bootstrap_engine(self.settings, events, self.metadata))
        self.after_bootstrap(events)

    def after_bootstrap(self, events: Events) -> None:
        """Hook for variants that keep state beside the engine."""

    def update(self, events: Events) -> None:
        if self.batch_size is None:
            return
        start = events.start if self._pending is None else self._pending[0]
        self._pending = (start, events.stop)
        if events.stop - start >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self._pending is None:
            return
        batch = self.stream.events(*self._pending)
        self._pending = None
        outcome = self.engine.apply_interactions(batch.interactions(), train=True)
        self.after_batch(batch, outcome)

    def finish(self) -> None:
        self.flush()

    def after_batch(self, batch: Events, outcome: Any) -> None:
        """Hook run after each micro-batch was applied and trained."""

    # -- lists
    def item_codes(self) -> np.ndarray:
        """Engine item row -> stream item code (rows are assigned in order, never reused)."""
        e = self.engine
        if len(self._item_codes) < len(e.items):
            code = self.stream.item_code
            extra = [code[x] for x in e.items.ids_of(range(len(self._item_codes), len(e.items)))]
            self._item_codes = np.concatenate([self._item_codes, np.asarray(extra, np.int64)])
        return self._item_codes

    def item_rows(self, codes: Iterable[int]) -> set[int]:
        e, ids = self.engine, self.stream.item_ids
        rows = (e.items.get(ids[c]) for c in codes)
        return {r for r in rows if r is not None}

    def fallback(self, n: int, exclude: set[int]) -> np.ndarray:
        e = self.engine
        rows = [r for r, c in e.popularity.most_common(n + len(exclude)) if c > 0]
        codes = self.item_codes()[np.asarray(rows, np.int64)] if rows else np.empty(0, np.int64)
        return np.array([c for c in codes.tolist() if c not in exclude][:n], np.int64)

    def score_row(self, row: int) -> np.ndarray:
        """(item capacity,) scores of one user row; variants blend or replace them."""
        return self.engine.score_rows(np.array([row]))[0]

    def recommend(self, user: int, n: int, exclude: set[int]) -> np.ndarray:
        e = self.engine
        row = e.users.get(self.stream.user_ids[user])
        if row is None or (self.untrained_fallback and not e.is_trained(np.array([row]))[0]):
            return self.fallback(n, exclude)
        scores = self.score_row(row)[None, :].astype(np.float64)
        ex = set(e.seen[row].tolist()) | self.item_rows(exclude)
        entries = e.pick_rows(np.array([row]), scores, n, [ex])[0]
        return self.item_codes()[np.fromiter((r for r, _, _ in entries), np.int64,
                                             len(entries))]


class PeriodicRetrain(EngineModel):
    """A fresh engine bootstrapped on everything so far every ``every`` events (the
    retrain job on a schedule), unchanged in between."""

    def __init__(self, settings: Settings | None = None, every: int = 2000,
                 metadata: bool = True, name: str | None = None) -> None:
        super().__init__(settings, None, metadata, name=name or f"streamrec retrain/{every}")
        self.every = every
        self._since = 0

    def update(self, events: Events) -> None:
        self._since += len(events)
        if self._since >= self.every:
            self._since = 0
            self.engine = bootstrap_engine(self.settings, self.stream.events(0, events.stop),
                                           self.metadata)
            self._item_codes = np.zeros(0, np.int64)


class ImprovedEngine(EngineModel):
    """The engine plus what ``docs/evaluation-notes.md`` measured, each part switchable.

    - ``cooc_weight`` > 0: blend z-scored LightFM scores with an incremental item-item
      co-occurrence score (:mod:`stream_app.cooccurrence`) built on the engine's rows.
    - ``fold_in``: after each micro-batch, set the representation of every user with a
      new positive by an ALS solve over their positives (:mod:`stream_app.foldin`);
      ``fold_in_max`` limits it to users with at most that many positives.
    - ``carry`` > 0: every batch user's last ``carry`` earlier positives go into the WARP
      batch with weight ``carry_weight`` (0: only so they are not sampled as negatives).
    """

    def __init__(self, settings: Settings | None = None, batch_size: int = 1,
                 cooc_weight: float = 0.0, cooc_alpha: float = 0.7, cooc_recent: int = 20,
                 cooc_pair_window: int | None = 20,
                 fold_in: bool = False, fold_reg: float = 0.1, fold_alpha: float = 1.0,
                 fold_scale: float = 1.0, fold_mix: float = 1.0, fold_in_max: int | None = None,
                 fold_method: str = "als",
                 carry: int = 0, carry_weight: float = 0.0, metadata: bool = True,
                 untrained_fallback: bool = False, name: str | None = None,
                 cache: BootstrapCache | None = None) -> None:
        super().__init__(settings, batch_size, metadata, untrained_fallback, name=name,
                         cache=cache)
        if cooc_weight > 0:  # this variant blends its own index: switch the engine's off
            self.settings = self.settings.model_copy(update={"cooc_weight": 0.0})
        self.cooc_weight = cooc_weight
        self.fold = {"reg": fold_reg, "alpha": fold_alpha, "scale": fold_scale,
                     "mix": fold_mix, "method": fold_method}
        self.fold_in, self.fold_in_max = fold_in, fold_in_max
        self.carry, self.carry_weight = carry, carry_weight
        self.cooc = CooccurrenceIndex(alpha=cooc_alpha, recent=cooc_recent,
                                      pair_window=cooc_pair_window)
        if name is None:
            parts = [f"B={batch_size}"]
            if fold_in:
                parts.append("fold-in")
            if cooc_weight > 0:
                parts.append(f"cooc {cooc_weight:g}")
            if carry:
                parts.append(f"carry {carry}")
            self.name = "streamrec+ " + " ".join(parts)

    def _positive_rows(self) -> tuple[np.ndarray, np.ndarray]:
        u, i, v = self.engine.last_batch_arrays
        keep = v > 0
        return u[keep], i[keep]

    def after_bootstrap(self, events: Events) -> None:
        # The bootstrap's arrays are the last applied batch: every training positive.
        u, i = self._positive_rows()
        self.cooc.add(u.tolist(), i.tolist())
        if self.fold_in:
            self._fold(np.unique(u))

    def update(self, events: Events) -> None:
        if self.carry:
            self._pending = (events.start if self._pending is None else self._pending[0],
                             events.stop)
            if self._pending[1] - self._pending[0] >= self.batch_size:
                self._flush_with_carry()
            return
        super().update(events)

    def _flush_with_carry(self) -> None:
        """apply_interactions(train=False), then one fit_partial with carried positives."""
        batch = self.stream.events(*self._pending)
        self._pending = None
        e = self.engine
        outcome = e.apply_interactions(batch.interactions(), train=False)
        u, i, v = e.last_batch_arrays
        cu, ci = [], []
        for r in np.unique(u[v > 0]).tolist():
            prev = self.cooc.positives(r)[-self.carry:]
            cu.extend([r] * len(prev))
            ci.extend(prev)
        fit_with_context(e, u, i, v, np.asarray(cu, np.int32), np.asarray(ci, np.int32),
                         self.carry_weight)
        self.after_batch(batch, outcome)

    def after_batch(self, batch: Events, outcome: Any) -> None:
        u, i = self._positive_rows()
        if len(u) == 0:
            return
        self.cooc.add(u.tolist(), i.tolist())
        if self.fold_in:
            self._fold(np.unique(u))

    def _fold(self, rows: np.ndarray) -> None:
        pos = [self.cooc.positives(r) for r in rows.tolist()]
        if self.fold_in_max is not None:
            keep = [k for k, p in enumerate(pos) if len(p) <= self.fold_in_max]
            rows, pos = rows[keep], [pos[k] for k in keep]
        fold_in_lightfm(self.engine.model, rows, pos, len(self.engine.items), **self.fold)

    def score_row(self, row: int) -> np.ndarray:
        s = super().score_row(row)
        if self.cooc_weight <= 0:
            return s
        c = self.cooc.scores([row], len(s))
        return blend(s[None, :], c, self.cooc_weight, len(self.engine.items))[0]


def fit_with_context(engine: Engine, u: np.ndarray, i: np.ndarray, v: np.ndarray,
                     cu: np.ndarray, ci: np.ndarray, context_weight: float) -> None:
    """``fit_partial`` on a batch's positives plus context positives (earlier positives of
    its users), ``settings.epochs_per_batch`` epochs.

    WARP treats every entry of the matrix it is given as a positive that must not be
    sampled as a negative; a context entry with weight 0 only does that, a small weight
    also rehearses it. The weights share the interactions' sparsity, as LightFM demands.
    """
    import scipy.sparse as sp

    m = engine.model
    keep = v > 0
    if not keep.any():
        return
    batch: dict[tuple[int, int], float] = {}
    for a, b, w in zip(u[keep].tolist(), i[keep].tolist(), v[keep].tolist()):
        batch[(a, b)] = batch.get((a, b), 0.0) + w
    context = {(a, b) for a, b in zip(cu.tolist(), ci.tolist())} - batch.keys()
    pairs = list(batch) + sorted(context)
    weights = np.array(list(batch.values()) + [context_weight] * len(context), np.float32)
    rows = np.fromiter((a for a, _ in pairs), np.int32, len(pairs))
    cols = np.fromiter((b for _, b in pairs), np.int32, len(pairs))
    shape = (m.user_capacity, m.item_capacity)
    inter = sp.coo_matrix((np.ones(len(pairs), np.float32), (rows, cols)), shape=shape)
    wmat = sp.coo_matrix((weights, (rows, cols)), shape=shape)
    uf, itf = m.users.matrix(), m.items.matrix()
    for _ in range(engine.settings.epochs_per_batch):
        m.lightfm.fit_partial(inter, user_features=uf, item_features=itf, sample_weight=wmat,
                              epochs=1, num_threads=engine.settings.num_threads)
    m._item_reps = None


# --------------------------------------------------------------------------- running it all
def curves(result: RunResult, window: int = 500, every: int = 10) -> dict[str, list]:
    """Cumulative and rolling hit rate, thinned to every ``every``-th positive, for JSON."""
    idx = np.arange(0, len(result.hits), every)
    return {"event_index": result.event_index[idx].tolist(),
            "cumulative": np.round(result.cumulative()[idx], 4).tolist(),
            "rolling": np.round(result.rolling(window)[idx], 4).tolist()}


def plot_results(results: Mapping[str, RunResult], batch_models: Mapping[int, str],
                 reference: Sequence[str], path_batch: Path, path_time: Path,
                 window: int = 500) -> None:
    """hit@n vs micro-batch size, and cumulative / rolling hit@n over stream time."""
    fig = new_figure(figsize=(6.5, 4))
    ax = fig.subplots()
    sizes = sorted(batch_models)
    ax.plot(sizes, [results[batch_models[b]].hit_rate() for b in sizes], "o-",
            label="streamrec, micro-batches of B")
    for name in reference:
        if name in results:
            ax.axhline(results[name].hit_rate(), ls="--", lw=1, label=name,
                       color=f"C{1 + list(reference).index(name)}")
    ax.set_xscale("log")
    ax.set_xlabel("micro-batch size B (events)")
    ax.set_ylabel(f"hit@{next(iter(results.values())).n}")
    ax.set_title("Prequential hit rate vs micro-batch size (ML-100K, last 10 %)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_batch, dpi=120)

    fig = new_figure(figsize=(12, 4))
    axes = fig.subplots(1, 2, sharey=False)
    for name, res in results.items():
        if name not in reference and name not in batch_models.values():
            continue
        axes[0].plot(res.event_index, res.cumulative(), label=name, lw=1.2)
        axes[1].plot(res.event_index, res.rolling(window), label=name, lw=1.0)
    axes[0].set_title("cumulative hit rate")
    axes[1].set_title(f"rolling hit rate (last {window} positives)")
    for ax in axes:
        ax.set_xlabel("event index (time order)")
        ax.set_ylabel("hit@n")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_time, dpi=120)


def format_table(summaries: Iterable[Mapping[str, Any]], n: int = 10) -> str:
    """A plain-text table of run summaries, one line per model."""
    head = f"{'model':<42} {'hit@'+str(n):>7} {'new':>7} {'return':>7} {'cover':>6} " \
           f"{'poprank':>8} {'secs':>7}"
    lines = [head, "-" * len(head)]
    for s in summaries:
        lines.append(f"{s['name']:<42} {s[f'hit@{n}']:>7.4f} {s[f'hit@{n}_new']:>7.4f} "
                     f"{s[f'hit@{n}_returning']:>7.4f} {s['coverage']:>6.3f} "
                     f"{s['mean_popularity_rank']:>8.1f} {s['seconds']:>7.1f}")
    return "\n".join(lines)


def best_engine(settings: Settings | None = None, batch_size: int = 1,
                cache: BootstrapCache | None = None) -> ImprovedEngine:
    """The best streamrec configuration found (see ``docs/evaluation-notes.md``):
    ``BEST_SETTINGS`` over ``settings``, and ``BEST`` for :class:`ImprovedEngine`."""
    s = (settings or engine_settings()).model_copy(update=BEST_SETTINGS)
    return ImprovedEngine(s, batch_size=batch_size, **BEST, cache=cache,
                          name=f"streamrec+ best B={batch_size}")


BEST_SETTINGS: dict[str, Any] = {"epochs_per_batch": 10}
"""Settings changes chosen on the held-out window (events 80-90 %), never on the test."""

BEST: dict[str, Any] = {}
"""Keyword arguments of :class:`ImprovedEngine` chosen on the held-out window. Empty: the
co-occurrence blend it measured (0.3) moved into the engine long ago, and issue #18 chose
the engine's co-occurrence and transition weights (0.2 / 0.2, ``bench/order_aware.py``), so
the best configuration is the engine's defaults."""


EXPLORE_SHARES: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
"""Exploration shares of the trade-off curve in ``streamrec evaluate``."""

EXPLORE_TEMPERATURES: tuple[float, ...] = (0.5, 1.0, 2.0)
"""Temperatures of the curve: near the top of the ranking (0.5) to mostly novelty (2)."""

EXPLORE_KEYS = ("hit@10", "hit@10_new", "hit@10_returning", "coverage", "novelty_bits",
                "diversity_genre", "rec_popularity_pct", "new_items", "new_items_shown",
                "new_item_median_delay", "new_item_positives", "new_item_hit", "seconds")


def run_exploration(stream: Stream, out_dir: Path | None = None,
                    settings: Settings | None = None,
                    shares: Sequence[float] = EXPLORE_SHARES,
                    temperatures: Sequence[float] = EXPLORE_TEMPERATURES,
                    split: float = 0.9, n: int = 10,
                    progress: bool = True, cache: BootstrapCache | None = None
                    ) -> list[dict[str, Any]]:
    """Exploration's price and gain: the engine as the worker runs it (B = 1) with each
    ``explore_share`` (and temperature), through the same prequential protocol.

    The replay is logged data: a list cannot change what the user does next, so the gain is
    measured as exposure (coverage, how soon new items are first shown), not as the clicks
    exposure would earn; the price (hit@n) is measured exactly. Writes
    ``exploration.json`` and ``exploration.png`` to ``out_dir`` if given.
    """
    settings = settings or engine_settings()
    cache = cache or BootstrapCache()
    rows: list[dict[str, Any]] = []
    for t in temperatures:
        for share in shares:
            if share == 0 and t != temperatures[0]:
                continue                       # no slot explores: the temperature is moot
            s = settings.model_copy(update={"explore_share": share, "explore_temperature": t})
            name = f"explore {share:g}" + (f" T={t:g}" if len(temperatures) > 1 else "")
            res = run_prequential(EngineModel(s, 1, cache=cache, name=name), stream,
                                  split=split, n=n, progress=progress)
            summary = res.summary()
            rows.append({"explore_share": share, "temperature": t,
                         **{k: summary[k] for k in EXPLORE_KEYS if k in summary}})
            log.info("exploration %s: %s", name, rows[-1])
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "exploration.json").write_text(json.dumps(
            {"protocol": "prequential, ML-100K last 10 %, engine defaults, B = 1",
             "points": rows}, indent=1))
        plot_exploration(rows, out_dir / "exploration.png")
    return rows


def plot_exploration(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """hit@10, catalogue coverage and the share of new items ever shown against
    explore_share, one line per temperature."""
    fig = new_figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    base = [r for r in rows if r["explore_share"] == 0]
    panels = (("hit@10", "prequential hit@10", "price: hit@10"),
              ("coverage", "catalogue coverage", "gain: catalogue coverage"),
              ("new_items_shown", "share of new items shown",
               "gain: new items shown at all"))
    for k, t in enumerate(sorted({r["temperature"] for r in rows})):
        pts = sorted(base + [r for r in rows if r["temperature"] == t and r["explore_share"]],
                     key=lambda r: r["explore_share"])
        for ax, (key, _, _) in zip(axes, panels):
            ax.plot([r["explore_share"] for r in pts], [r[key] for r in pts], "o-",
                    color=f"C{k}", label=f"temperature {t:g}")
    for ax, (_, ylabel, title) in zip(axes, panels):
        ax.set_xlabel("explore_share")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("Exploration on ML-100K (prequential, last 10 %, B = 1; new items: first "
                 "event in the test window)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_all(stream: Stream, out_dir: Path, settings: Settings | None = None,
            batch_sizes: Sequence[int] = (1, 10, 50, 200), retrain_every: int = 2000,
            split: float = 0.9, n: int = 10, progress: bool = True,
            extra: Sequence[PrequentialModel] = ()) -> dict[str, Any]:
    """Every baseline and engine mode through the protocol; writes ``prequential.json``
    and two PNG plots to ``out_dir`` and returns the results dict."""
    settings = settings or engine_settings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = BootstrapCache()
    batch_models = {b: f"streamrec B={b}" for b in batch_sizes}
    models: list[PrequentialModel] = [
        Popularity(),
        Popularity(window=settings.popular_window),
        EngineModel(settings, None, cache=cache),
        PeriodicRetrain(settings, every=retrain_every),
        *[EngineModel(settings, b, cache=cache, name=batch_models[b]) for b in batch_sizes],
        best_engine(settings, 1, cache),
        *extra,
    ]
    results: dict[str, RunResult] = {}
    for model in models:
        res = run_prequential(model, stream, split=split, n=n, progress=progress)
        results[model.name] = res
        log.info("%s", res.summary())
    summaries = [r.summary() for r in results.values()]
    doc = {
        "protocol": {"events": len(stream), "split": split, "n": n,
                     "positive_rating": POSITIVE, "test_events": len(stream) -
                     stream.split_index(split), "positives": summaries[0]["positives"],
                     "positives_new_users": summaries[0]["positives_new"]},
        "settings": {k: getattr(settings, k) for k in (
            "no_components", "loss", "learning_rate", "epochs_bootstrap", "epochs_per_batch",
            "feature_weight", "rating_threshold", "num_threads", "random_seed")},
        "best": {"settings": BEST_SETTINGS, "engine": BEST},
        "models": {s["name"]: s for s in summaries},
        "curves": {name: curves(r) for name, r in results.items()},
    }
    (out_dir / "prequential.json").write_text(json.dumps(doc, indent=1))
    reference = ["popularity", f"recent popularity {settings.popular_window}",
                 "streamrec static", f"streamrec retrain/{retrain_every}",
                 "streamrec+ best B=1"]
    plot_results(results, batch_models, reference, out_dir / "prequential_batch.png",
                 out_dir / "prequential_time.png")
    doc["table"] = format_table(summaries, n)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from streamrec.movielens import find_movielens, load_movielens

    p = argparse.ArgumentParser(description="Prequential evaluation of streamrec on ML-100K")
    p.add_argument("--data", type=Path, default=None, help="ML-100K folder")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stream = Stream.from_movielens(load_movielens(find_movielens(args.data, download=False)))
    doc = run_all(stream, args.out, engine_settings(num_threads=args.threads))
    print(doc["table"])
    print(f"wrote {args.out / 'prequential.json'} and plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
