"""The worker's logic with no Kafka in it: events in, model updated, lists out.

The Faust app, the bootstrap replay, the retrain job and the benchmarks all drive this one
class, so what is tested here is what runs in production.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import orjson

from stream_app.ann import IVFIndex
from stream_app.blend import blend_terms_into, row_moments
from stream_app.candidates import ItemMoments, mask_seen, padded, score_union, union_rows
from stream_app.cooccurrence import CooccurrenceIndex
from stream_app.deltas import AppliedSeqs
from stream_app.explore import EXPLORE, Entry, Pick, counter_uniform, explore_picks, picks_of
from stream_app.guard import Guard, GuardConfig
from stream_app.model import ModelParams, PaddedLightFM, padded_capacity
from stream_app.registry import IdRegistry
from stream_app.topn import Cells, top_n_flat
from stream_app.useritems import UserItems
from streamrec.errors import ConfigError
from streamrec.schema import FALLBACK_KEY, Interaction
from streamrec.settings import Settings

log = logging.getLogger(__name__)

ListEntry = tuple[str, float, "str | None"]
"""(item_id, score, reason) of a published list; reason is ``"explore"`` or None."""


@dataclass
class BatchOutcome:
    """What one micro-batch did, for metrics and for publishing lists."""

    applied: int = 0
    duplicates: int = 0
    positives: int = 0
    new_users: int = 0
    new_items: int = 0
    users: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))


@dataclass
class Changes:
    """What changed in an engine since its last checkpoint, handed over by
    :meth:`Engine.take_changes` (the store writes it; the engine forgets it)."""

    new_users: list[tuple[int, str]]
    """(row, id) of user ids registered since."""
    new_items: list[tuple[int, str]]
    dirty_users: set[int]
    """User rows whose seen items or positives changed."""
    new_event_ids: list[str]
    """Dedup ids remembered since, and those forgotten (out of the dedup window)."""
    evicted_event_ids: list[str]


def model_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Engine:
    """Model + registries + per-user history + dedup + popularity: the worker's whole state."""

    def __init__(self, settings: Settings, model: PaddedLightFM | None = None,
                 users: IdRegistry | None = None, items: IdRegistry | None = None,
                 created: str | None = None) -> None:
        self.settings = settings
        self.users = users or IdRegistry()
        self.items = items or IdRegistry()
        if model is None:
            model = PaddedLightFM(
                ModelParams.from_settings(settings),
                padded_capacity(len(self.users), settings.padding_fraction, settings.padding_min),
                padded_capacity(len(self.items), settings.padding_fraction, settings.padding_min))
        self.model = model
        self.created = created or model_stamp()
        self.batch_seq = 0
        self.n_applied = 0
        self.seen = UserItems()  # every item a user row interacted with (incl. dislikes)
        self.dedup: OrderedDict[str, None] = OrderedDict()
        self.recent_positives: deque[int] = deque(maxlen=settings.popular_window)
        self.popularity = Counter()
        self.guard = Guard(GuardConfig.from_settings(settings)) if settings.guard_enabled \
            else None
        shares = settings.cooc_weight + settings.trans_weight
        if shares > 1:
            raise ConfigError(f"cooc_weight + trans_weight is {shares:g}; the blend needs at "
                              "most 1 (LightFM keeps the rest)")
        self.cooc = CooccurrenceIndex(alpha=settings.cooc_alpha, recent=settings.cooc_recent,
                                      pair_window=settings.cooc_pair_window,
                                      capacity=self.model.item_capacity,
                                      growth=settings.growth_factor,
                                      dense_max=settings.cooc_dense_items,
                                      max_neighbours=settings.cooc_max_neighbours,
                                      transitions=(settings.trans_window, settings.trans_decay,
                                                   settings.trans_recent)
                                      if settings.trans_window > 0 else None,
                                      transitions_dense_max=settings.trans_dense_items)
        self.dirty_users: set[int] = set()
        self.ann: IVFIndex | None = None          # large catalogues: stream_app/candidates.py
        self._ann_touched: list[np.ndarray] = []
        self._ann_checked = 0.0
        self._item_moments: tuple[ItemMoments, int, float, int] | None = None
        self._ann_updated = 0.0
        self.new_event_ids: list[str] = []
        self.evicted_event_ids: list[str] = []
        self.offsets: dict[str, int] = {}
        self.applied_deltas = AppliedSeqs()      # sharded workers: other shards' deltas in
        self._weights = settings.event_weights
        self.last_batch_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] = (
            np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32))

    # ----------------------------------------------------------------- checkpoints
    def take_changes(self, everything: bool = False) -> Changes:
        """Hand over what changed since the last call and start counting anew: the ids
        registered, the users whose history changed, the dedup ids added and forgotten.
        ``everything``: the whole state as changes (a full rewrite of the store: every id,
        every user with history, every remembered dedup id, nothing forgotten)."""
        if everything:
            self.users.reset_persisted()
            self.items.reset_persisted()
            self.dirty_users = set(self.seen.nonempty_rows().tolist())
            self.new_event_ids = list(self.dedup)
            self.evicted_event_ids = []
        changes = Changes(self.users.unpersisted(), self.items.unpersisted(),
                          self.dirty_users, self.new_event_ids, self.evicted_event_ids)
        self.users.mark_persisted()
        self.items.mark_persisted()
        self.dirty_users = set()
        self.new_event_ids = []
        self.evicted_event_ids = []
        return changes

    # ----------------------------------------------------------------- versions
    @property
    def model_version(self) -> str:
        return f"{self.created}-{self.batch_seq:06d}"

    # ----------------------------------------------------------------- offsets
    @staticmethod
    def tp_key(topic: str, partition: int) -> str:
        return f"{topic}:{partition}"

    def is_applied(self, topic: str, partition: int, offset: int) -> bool:
        """True if this record is already in the state (redelivered after a restart)."""
        return offset < self.offsets.get(self.tp_key(topic, partition), 0)

    def advance(self, topic: str, partition: int, offset: int) -> None:
        key = self.tp_key(topic, partition)
        if offset + 1 > self.offsets.get(key, 0):
            self.offsets[key] = offset + 1

    # ----------------------------------------------------------------- metadata
    def _grow(self) -> None:
        self.model.ensure_capacity(len(self.users), len(self.items), self.settings.growth_factor)

    def apply_user_features(self, user_id: str, features: dict) -> int:
        row = self.users.assign(user_id)
        self._grow()
        self.model.users.set(row, features)
        return row

    def apply_item_features(self, item_id: str, features: dict) -> int:
        row = self.items.assign(item_id)
        self._grow()
        self.model.items.set(row, features)
        return row

    # ----------------------------------------------------------------- interactions
    def _signed_value(self, ev: Interaction) -> float:
        """+weight for positive feedback, -weight for negative, 0 for 'seen, not trained'."""
        w = self._weights.get(ev.event_type, 1.0) * (1.0 if ev.weight is None else ev.weight)
        if ev.event_type == "dislike":
            return -1.0
        if ev.event_type == "rating":
            return w if ev.rating >= self.settings.rating_threshold else -1.0
        return w

    def _dedup(self, events: Sequence[Interaction]) -> list[Interaction]:
        if self.settings.dedup_window == 0:
            return list(events)
        out = []
        seen_ids = self.dedup
        for ev in events:
            eid = ev.event_id
            if eid is not None:
                if eid in seen_ids:
                    continue
                seen_ids[eid] = None
                self.new_event_ids.append(eid)
                if len(seen_ids) > self.settings.dedup_window:
                    self.evicted_event_ids.append(seen_ids.popitem(last=False)[0])
            out.append(ev)
        return out

    def apply_interactions(self, events: Sequence[Interaction], train: bool = True) -> BatchOutcome:
        """Dedup, map ids, record history, and (if ``train``) ``fit_partial`` on the batch."""
        outcome = BatchOutcome()
        fresh = self._dedup(events)
        outcome.duplicates = len(events) - len(fresh)
        if not fresh:
            return outcome
        n_users0, n_items0 = len(self.users), len(self.items)
        u = self.users.assign_many(ev.user_id for ev in fresh)
        i = self.items.assign_many(ev.item_id for ev in fresh)
        outcome.new_users = len(self.users) - n_users0
        outcome.new_items = len(self.items) - n_items0
        self._grow()
        for ev, ur, ir in zip(fresh, u, i):
            if ev.user_features:
                self.model.users.set(int(ur), ev.user_features)
            if ev.item_features:
                self.model.items.set(int(ir), ev.item_features)
        values = np.fromiter((self._signed_value(ev) for ev in fresh), np.float32, len(fresh))
        self._record_history(u, i, values)
        self.last_batch_arrays = (u, i, values)
        outcome.applied = len(fresh)
        self.n_applied += len(fresh)
        outcome.positives = int((values > 0).sum())
        outcome.users = np.unique(u)
        if train:
            self.fit_batch(u, i, values)
        if self.ann is not None:
            self._ann_touched.append(i)
        self.batch_seq += 1
        return outcome

    def fit_batch(self, users: np.ndarray, items: np.ndarray, values: np.ndarray) -> None:
        """A micro-batch's LightFM step (``epochs_per_batch`` epochs of ``fit_partial``):
        part of :meth:`apply_interactions`, or run by the worker after the batch's lists
        went out (``list_before_fit``)."""
        self.model.fit_partial(users, items, values, epochs=self.settings.epochs_per_batch,
                               num_threads=self.settings.num_threads)

    def _record_history(self, u: np.ndarray, i: np.ndarray, values: np.ndarray) -> None:
        self.seen.add(u, i)
        self.dirty_users.update(u.tolist())
        pos = values > 0
        if pos.any():
            self.cooc.add(u[pos], i[pos])
            liked = i[pos].tolist()
            self.add_recent_positives(liked)
            if self.cooc.capture is not None:
                self.cooc.capture.recent(liked)

    def add_recent_positives(self, items: list[int]) -> None:
        """Positives behind the popular fallback (a shard's own, and other shards')."""
        recent, popularity = self.recent_positives, self.popularity
        for ir in items:
            if len(recent) == recent.maxlen:
                popularity[recent[0]] -= 1
            recent.append(ir)
            popularity[ir] += 1

    def is_trained(self, user_rows: np.ndarray) -> np.ndarray:
        """Which user rows have a positive (their lists are the model's, else "fallback").

        The co-occurrence index records every positive of every row, so its positives store
        is the trained set; nothing extra is kept or checkpointed.
        """
        return self.cooc.history.has(user_rows)

    def fit_all(self, epochs: int, users: np.ndarray, items: np.ndarray, values: np.ndarray,
                on_epoch=None) -> None:
        """A full fit from the current (fresh) model on every recorded interaction."""
        self.model.fit_partial(users, items, values, epochs=epochs,
                               num_threads=self.settings.fit_threads, on_epoch=on_epoch)

    # ----------------------------------------------------------------- lists
    def score_rows(self, user_rows: np.ndarray) -> np.ndarray:
        """(users x assigned items) ranking scores: LightFM's, blended with co-occurrence
        and transitions.

        LightFM reacts to a new positive only as fast as SGD moves a row; co-occurrence
        reacts at once; transitions know what tends to come *next* after the user's last
        items. Blending them wins on prequential hit@10 (docs/evaluation.md). Dummy
        (unassigned) item rows are never scored: they can never be shown.
        """
        valid = len(self.items)
        s = self.settings
        scores = self.model.scores(user_rows, valid)
        terms = []
        if s.cooc_weight > 0:
            terms.append((self.cooc.scores(user_rows, valid), s.cooc_weight))
        if s.trans_weight > 0 and self.cooc.transitions is not None:
            terms.append((self.cooc.transition_scores(user_rows, valid), s.trans_weight))
        return blend_terms_into(scores, terms)

    def item_positives(self) -> np.ndarray:
        """Positives per assigned item row (distinct users), the exploration's uncertainty.

        Read from the co-occurrence index, which counts every positive whether or not its
        scores are blended and which a checkpoint restores from users' stored positives,
        so no extra state is kept or saved.
        """
        valid = len(self.items)
        counts = self.cooc.counts
        if len(counts) >= valid:
            return counts[:valid]
        return np.concatenate([counts, np.zeros(valid - len(counts), counts.dtype)])

    def pick_lists(self, user_rows: np.ndarray, scores: np.ndarray, n: int,
                   exclude: Sequence[Collection[int]] | Cells | None = None,
                   decimals: int | None = None) -> list[Pick]:
        """Best-first lists of ``n`` for a batch of user rows: per user (item rows, scores,
        positions of exploration slots), built for the whole batch from flat arrays.

        ``scores`` is (users x assigned items, or more columns) and is modified in place.
        ``exclude``: item rows never to show per user (default: what each user interacted
        with or disliked). With ``explore_share`` > 0 some slots go to sampled uncertain
        items (:mod:`stream_app.explore`); the draw is keyed by ``random_seed``, the model
        step and the user row, so it is reproducible and changes as the model moves.
        ``decimals`` rounds the scores as they are published.
        """
        valid = len(self.items)
        if exclude is None:
            exclude = Cells(*self.seen.cells(user_rows))
        s = self.settings
        sd = row_moments(scores[:, :valid])[1] if s.explore_share > 0 else None
        picked = top_n_flat(scores, n, valid, exclude)
        if sd is None:
            return picks_of(picked, n, decimals)
        return explore_picks(np.asarray(user_rows), scores, sd, picked, self.item_positives(),
                             n, s.explore_share, s.explore_temperature, s.explore_protect_top,
                             s.random_seed, self.batch_seq, decimals=decimals)

    def pick_rows(self, user_rows: np.ndarray, scores: np.ndarray, n: int,
                  exclude: Sequence[Collection[int]] | Cells | None = None
                  ) -> list[list[Entry]]:
        """:meth:`pick_lists` as (item row, score, reason) entries; reason is
        ``"explore"`` for an exploration slot, else None."""
        return [_entries(rows, sc, explored)
                for rows, sc, explored in self.pick_lists(user_rows, scores, n, exclude)]

    def recommend_rows(self, user_rows: np.ndarray, n: int) -> list[list[ListEntry]]:
        """Top-n (item_id, score, reason) per user row, seen and disliked items excluded;
        reason is ``"explore"`` for an exploration slot, else None."""
        if len(user_rows) == 0:
            return []
        ids = self.items.id_list
        return [_entries([ids[r] for r in rows], sc, explored) for rows, sc, explored in
                self.lists(user_rows, n, decimals=5)]

    def lists(self, user_rows: np.ndarray, n: int, decimals: int | None = None) -> list[Pick]:
        """The published lists of a batch of users: every item scored while the catalogue
        is small, candidates only from ``ann_min_items`` items on (same blend, seen items,
        exploration; :mod:`stream_app.candidates`)."""
        user_rows = np.asarray(user_rows, np.int64)
        threshold = self.settings.ann_min_items
        if threshold and len(self.items) >= threshold:
            return self.candidate_lists(user_rows, n, decimals)
        return self.pick_lists(user_rows, self.score_rows(user_rows), n, decimals=decimals)

    def list_chunk(self) -> int:
        """Users per :meth:`lists` call for a ~64 MB score matrix: exact rows span the item
        capacity (2,048 users on ML-100K, ~110 at 100 k items: bench/scale.py measured the
        same ms per list from 256-user chunks as from 2,048-user ones); candidate rows a
        few thousand items (~8 sqrt(N) + the co-occurrence neighbours + the sample)."""
        threshold = self.settings.ann_min_items
        width = self.model.item_capacity
        if threshold and len(self.items) >= threshold:
            width = 4 * int(8 * np.sqrt(len(self.items))) + self.settings.explore_sample
        return max(16, min(2048, (16 << 20) // max(1, width)))

    def candidate_lists(self, user_rows: np.ndarray, n: int, decimals: int | None = None
                        ) -> list[Pick]:
        """:meth:`lists` through candidates: the IVF index's probe of the model's ranking,
        the co-occurrence and transition neighbours and, for exploration,
        ``explore_sample`` uniform items; blended with the whole catalogue's exact
        moments."""
        s, m, valid = self.settings, self.model, len(self.items)
        i_bias, i_emb = m.item_representations()
        _, u_emb = m.user_representations(user_rows)
        parts = [self._ann_index(i_emb, i_bias).candidates(u_emb, s.ann_candidates or None,
                                                            valid)]
        terms = []
        if s.cooc_weight > 0:
            terms.append((self.cooc.scores_sparse(user_rows, valid), s.cooc_weight))
        if s.trans_weight > 0 and self.cooc.transitions is not None:
            terms.append((self.cooc.transition_scores(user_rows, valid, sparse=True),
                          s.trans_weight))
        parts.extend(padded(t) for t, _ in terms)
        if s.explore_share > 0 and s.explore_sample:
            u = counter_uniform(s.random_seed, self.batch_seq, user_rows, s.explore_sample,
                                stream=2)
            parts.append(np.minimum((u * valid).astype(np.int64), valid - 1))
        items, void = union_rows(parts)
        scores, sd = score_union(u_emb, items, void, i_emb, i_bias,
                                 self._moments(i_emb, i_bias), terms, valid)
        mask_seen(scores, items, *self.seen.cells(user_rows), valid)
        picked = top_n_flat(scores, n, scores.shape[1], [])
        if s.explore_share > 0:
            positives = self.item_positives()[np.maximum(items, 0)]
            picks = explore_picks(user_rows, scores, sd, picked, positives, n,
                                  s.explore_share, s.explore_temperature,
                                  s.explore_protect_top, s.random_seed, self.batch_seq,
                                  decimals=decimals)
        else:
            picks = picks_of(picked, n, decimals)
        return [(items[b, cols].tolist(), sc, explored)
                for b, (cols, sc, explored) in enumerate(picks)]

    def _ann_index(self, i_emb: np.ndarray, i_bias: np.ndarray) -> IVFIndex:
        """The IVF index, built on first use, rebuilt by its policy (age, growth, checked
        drift at most once a minute: ~1 s at 100 k items), else updated with the items of
        the batches since, at most once a second."""
        valid, now = len(self.items), time.monotonic()
        index = self.ann
        check = now - self._ann_checked >= 60
        if index is None or index.needs_rebuild(i_emb if check else None,
                                                i_bias if check else None):
            index = self.ann = IVFIndex(seed=self.settings.random_seed).build(i_emb, i_bias,
                                                                               valid)
            self._ann_touched, self._ann_checked, self._ann_updated = [], now, now
        elif self._ann_touched and now - self._ann_updated >= 1.0:
            # at most once a second: re-assigning and re-sorting the lists is O(items) (14 ms
            # at 1 M), and only where to look goes stale meanwhile: candidates are scored
            # with current vectors, and new rows are candidates for everyone until then
            index.update(np.concatenate(self._ann_touched), i_emb, i_bias)
            self._ann_touched, self._ann_updated = [], now
        if check:
            self._ann_checked = now
        return index

    def _moments(self, i_emb: np.ndarray, i_bias: np.ndarray) -> ItemMoments:
        """The items' moments for the blend's z-scores, recomputed when the reps changed
        but at most once a second (or when the catalogue grew 1 %): a few items move per
        micro-batch, and the full product is ~10 ms at 100 k items."""
        valid, version, now = len(self.items), self.model.item_reps_version, time.monotonic()
        cached = self._item_moments
        if cached is None or (cached[1] != version and now - cached[2] >= 1.0) or \
                valid > cached[3] * 1.01:
            cached = self._item_moments = (ItemMoments.of(i_emb, i_bias, valid), version,
                                           now, valid)
        return cached[0]

    def recommend(self, user_id: str, n: int) -> tuple[list[ListEntry], str]:
        """A user's list and its source; an unknown user gets the popular fallback."""
        row = self.users.get(user_id)
        if row is None:
            return self.fallback(n), "fallback"
        lst = self.recommend_rows(np.array([row]), n)[0]
        return lst, ("model" if self.is_trained(np.array([row]))[0] else "fallback")

    def fallback(self, n: int) -> list[ListEntry]:
        """Most frequent items among the last ``popular_window`` positives (no exploration:
        it is what unknown users see, and what an attack on the popular list would move)."""
        top = [(r, c) for r, c in self.popularity.most_common(n) if c > 0]
        total = max(1, len(self.recent_positives))
        return [(self.items.id_of(r), c / total, None) for r, c in top]

    def list_record(self, user_id: str, items: Sequence[ListEntry], source: str,
                    now: float | None = None) -> bytes:
        """The contract's recommendation list as the JSON bytes published and served; an
        entry with a reason (``"explore"``) carries it as ``"reason"`` (additive)."""
        return orjson.dumps({
            "user_id": user_id,
            "items": [{"item_id": i, "score": s} if why is None else
                      {"item_id": i, "score": s, "reason": why} for i, s, why in items],
            "model_version": self.model_version,
            "updated_at": time.time() if now is None else now,
            "source": source,
        })

    def lists_for_rows(self, user_rows: Iterable[int], n: int) -> list[tuple[str, bytes]]:
        """(user_id, list JSON) for each row: what a micro-batch publishes (the same
        bytes :meth:`list_record` makes from :meth:`recommend_rows`' entries)."""
        rows = np.fromiter(user_rows, dtype=np.int64)
        if len(rows) == 0:
            return []
        now = time.time()
        picks = self.lists(rows, n, decimals=5)
        version, ids = self.model_version, self.items.id_list
        out = []
        for uid, trained, (items, sc, explored) in zip(self.users.ids_of(rows),
                                                       self.is_trained(rows).tolist(), picks):
            entries = [{"item_id": ids[i], "score": v} for i, v in zip(items, sc)]
            for pos in explored:
                entries[pos]["reason"] = EXPLORE
            out.append((uid, orjson.dumps({
                "user_id": uid, "items": entries, "model_version": version,
                "updated_at": now, "source": "model" if trained else "fallback"})))
        return out

    def fallback_record(self, n: int) -> bytes:
        return self.list_record(FALLBACK_KEY, self.fallback(n), "fallback")



def _entries(keys: list, scores: list[float], explored: list[int]) -> list[tuple]:
    """(key, score, reason) entries of a pick; reason "explore" at the explored positions."""
    why: list[str | None] = [None] * len(keys)
    for pos in explored:
        why[pos] = EXPLORE
    return list(zip(keys, scores, why))
