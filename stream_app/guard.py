"""Fraud and bot guard: decide, per micro-batch and before training, which events to hold back.

Time is *arrival* time (the Kafka record timestamp), never the event's own ``timestamp``: a
MovieLens replay sends 1998 events at whatever ``--rate`` says, and an attacker controls the
event body. Record timestamps also make the decisions repeatable: replaying the same records
(WAL after a restart, a retrain) through a guard in the same state decides the same way.

Four rules, all over one sliding window of arrival time (``GuardConfig.window_s``):

``user_rate``
    one user sent more events in the window than any person can (a whole MovieLens session
    replayed in a burst stays below it, see ``docs/guard-notes.md``).
``user_pace``
    one user's events in the window *claim* (event ``timestamp``) to have happened faster
    than a person acts. A replayed human session arrives in a burst but its timestamps are
    spread over minutes; a bot stamps "now". This catches a 1,000 events/s bot after ~100
    events instead of ~900. A bot that forges spread-out timestamps still meets ``user_rate``.
``user_repeat``
    one (user, item) pair repeated more often than a person clicks the same thing.
``item_burst``
    one item suddenly receives a large share of all traffic, mostly from brand-new users
    (first seen less than ``new_user_age_s`` ago and unknown to the model). Only those new
    users' events on the item are held back; established users keep training on it.

A flagged user stays quarantined (all their later events too) until ``quarantine_ttl_s``
passes or an operator calls :meth:`Guard.release_user`; a flagged item holds back new users'
events on it likewise. Decisions are made per micro-batch: when a rule trips, every event of
that key in the batch is held back, including the ones that arrived before the threshold.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from streamrec.schema import Interaction

log = logging.getLogger(__name__)

USER_RATE = "user_rate"
USER_PACE = "user_pace"
USER_REPEAT = "user_repeat"
ITEM_BURST = "item_burst"
REASONS: tuple[str, ...] = (USER_RATE, USER_PACE, USER_REPEAT, ITEM_BURST)
"""Every reason :meth:`Guard.check` can return; the ``reason`` header and metric label."""

_CODES = {r: k + 1 for k, r in enumerate(REASONS)}
_NAMES = np.array([None, *REASONS], dtype=object)
_PAIR_SEP = "\x1f"   # ids are JSON strings; a unit separator never appears in a sane one


@dataclass(frozen=True)
class GuardConfig:
    """Thresholds of the guard. Numbers were measured on MovieLens 100K replayed at 200 to
    100,000 events/s (``docs/guard-notes.md``); each one leaves a wide margin over the
    heaviest real user there."""

    enabled: bool = True
    """Off: :meth:`Guard.check` keeps everything (and counts nothing)."""
    window_s: float = 60.0
    """Sliding window of arrival time for every rule. Long enough that a bot has to keep
    a human pace for a minute; bounded memory is keys active in the last window."""
    n_buckets: int = 12
    """Ring buckets per window (5 s each): the window slides in 5 s steps."""
    user_max_events: int = 900
    """``user_rate``: events per user per window. The heaviest MovieLens 100K user has 737
    ratings in total, and a fast replay delivers all of them within one window; 900 keeps a
    20 % margin and still stops a 1,000 events/s bot within its first second."""
    pace_min_events: int = 100
    """``user_pace`` looks only at users with at least this many events in the window, so a
    handful of events stamped in the same second (a page of impressions) is never a burst."""
    pace_max_rate: float = 5.0
    """``user_pace``: events per second of *claimed* time (span of their ``timestamp``s,
    at least 1 s). MovieLens users never exceed 0.3/s over 100 events; 5/s is 17x that."""
    pair_max_events: int = 50
    """``user_repeat``: events of one user on one item per window. MovieLens has one rating
    per pair; a person re-viewing a page a few times stays far below 50 in a minute."""
    item_burst_events: int = 50
    """``item_burst`` needs at least this many new-user events on the item in the window.
    The busiest MovieLens item gets 155 events in 10 s at 2,000 ev/s, but as 0.8 % of the
    traffic, so the share rule below is what separates; this floor stops tiny windows
    (3 events of 20 are 15 %) from counting as a burst."""
    item_burst_share: float = 0.05
    """... and those events must be at least this share of *all* events in the window.
    MovieLens items never exceed 1 % once they have 50 events; an attack of 5,000 clicks in
    10 s beside a 2,000 ev/s stream is 20 %."""
    item_burst_new_fraction: float = 0.5
    """... and at least this fraction of the item's own events in the window come from new
    users, so a hit that established users are watching is never held back."""
    new_user_age_s: float = 3600.0
    """A user first seen less than this ago (and unknown to the model) is brand-new."""
    quarantine_ttl_s: float = 86400.0
    """A flag lifts by itself after a day; an operator can release earlier."""
    release_exempt_s: float = 3600.0
    """After a release the key is exempt from every rule this long: the operator vouched."""

    @property
    def bucket_s(self) -> float:
        return self.window_s / self.n_buckets

    @classmethod
    def from_settings(cls, settings: object) -> "GuardConfig":
        """Read ``settings.guard_<field>`` for each field that Settings defines."""
        values = {f.name: getattr(settings, f"guard_{f.name}") for f in fields(cls)
                  if hasattr(settings, f"guard_{f.name}")}
        return cls(**values)


@dataclass(frozen=True)
class Flag:
    """Why and since when (arrival time) a user or item is quarantined."""

    reason: str
    since: float
    detail: str


class _Window:
    """Per-key event counts over the last ``n_buckets`` buckets of arrival time.

    Each key owns a ring row of cells stamped with their absolute bucket number; a cell
    counts while its stamp is within the window, so nothing has to be shifted as time
    passes. Optionally keeps the min and max of a per-event value (claimed timestamps)
    per cell. Keys idle for a whole window are evicted and their rows reused.
    """

    def __init__(self, n_buckets: int, track_span: bool = False, capacity: int = 256) -> None:
        self.n = n_buckets
        self.track_span = track_span
        self.index: dict[str, int] = {}
        self.keys: list[str | None] = [None] * capacity
        self.free: list[int] = list(range(capacity - 1, -1, -1))
        self.counts = np.zeros((capacity, n_buckets), np.int64)
        self.stamps = np.full((capacity, n_buckets), -1, np.int64)
        self.last = np.full(capacity, -1, np.int64)
        if track_span:
            self.lo = np.full((capacity, n_buckets), np.inf)
            self.hi = np.full((capacity, n_buckets), -np.inf)

    def __len__(self) -> int:
        return len(self.index)

    def _grow(self) -> None:
        old = len(self.keys)
        new = old * 2
        self.keys.extend([None] * old)
        self.free.extend(range(new - 1, old - 1, -1))
        self.counts = np.concatenate([self.counts, np.zeros_like(self.counts)])
        self.stamps = np.concatenate([self.stamps, np.full_like(self.stamps, -1)])
        self.last = np.concatenate([self.last, np.full_like(self.last, -1)])
        if self.track_span:
            self.lo = np.concatenate([self.lo, np.full_like(self.lo, np.inf)])
            self.hi = np.concatenate([self.hi, np.full_like(self.hi, -np.inf)])

    def slots(self, keys: Sequence[str]) -> np.ndarray:
        index = self.index
        out = np.empty(len(keys), np.int64)
        for k, key in enumerate(keys):
            s = index.get(key)
            if s is None:
                if not self.free:
                    self._grow()
                s = self.free.pop()
                index[key] = s
                self.keys[s] = key
            out[k] = s
        return out

    def add(self, keys: Sequence[str], n: np.ndarray, bucket: int,
            lo: np.ndarray | None = None,
            hi: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Count ``n[k]`` events of distinct ``keys[k]`` in ``bucket``; (slots, window
        totals) back."""
        s = self.slots(keys)
        j = bucket % self.n
        stale = self.stamps[s, j] != bucket
        if stale.any():
            st = s[stale]
            self.counts[st, j] = 0
            if self.track_span:
                self.lo[st, j] = np.inf
                self.hi[st, j] = -np.inf
        self.stamps[s, j] = bucket
        self.counts[s, j] += n
        self.last[s] = bucket
        if self.track_span and lo is not None:
            self.lo[s, j] = np.minimum(self.lo[s, j], lo)
            self.hi[s, j] = np.maximum(self.hi[s, j], hi)
        return s, self.totals(s, bucket)

    def _live(self, s: np.ndarray, bucket: int) -> np.ndarray:
        return self.stamps[s] > bucket - self.n

    def totals(self, s: np.ndarray, bucket: int) -> np.ndarray:
        return np.where(self._live(s, bucket), self.counts[s], 0).sum(axis=1)

    def spans(self, s: np.ndarray, bucket: int) -> np.ndarray:
        """max - min of the tracked value over the window, per slot."""
        live = self._live(s, bucket)
        return (np.where(live, self.hi[s], -np.inf).max(axis=1)
                - np.where(live, self.lo[s], np.inf).min(axis=1))

    def total(self, key: str, bucket: int) -> int:
        s = self.index.get(key)
        return 0 if s is None else int(self.totals(np.array([s]), bucket)[0])

    def _release(self, slots: Sequence[int]) -> None:
        for s in slots:
            del self.index[self.keys[s]]
            self.keys[s] = None
            self.free.append(s)
        idx = np.asarray(slots, np.int64)
        self.counts[idx] = 0
        self.stamps[idx] = -1
        self.last[idx] = -1
        if self.track_span:
            self.lo[idx] = np.inf
            self.hi[idx] = -np.inf

    def evict(self, bucket: int) -> int:
        """Forget keys with no event in the window (their totals are 0 anyway)."""
        idle = np.flatnonzero((self.last >= 0) & (self.last <= bucket - self.n))
        if len(idle):
            self._release(idle.tolist())
        return len(idle)

    def drop(self, keys: Sequence[str]) -> None:
        slots = [self.index[k] for k in keys if k in self.index]
        if slots:
            self._release(slots)

    def state(self) -> dict:
        used = np.flatnonzero(self.last >= 0)
        out = {"keys": [self.keys[s] for s in used.tolist()],
               "counts": self.counts[used].tolist(), "stamps": self.stamps[used].tolist()}
        if self.track_span:
            out["lo"] = np.where(self.stamps[used] >= 0, self.lo[used], 0.0).tolist()
            out["hi"] = np.where(self.stamps[used] >= 0, self.hi[used], 0.0).tolist()
        return out

    @classmethod
    def from_state(cls, data: dict, n_buckets: int, track_span: bool) -> "_Window":
        keys = data["keys"]
        w = cls(n_buckets, track_span, capacity=max(256, 1 << math.ceil(math.log2(len(keys) + 1))))
        if not keys:
            return w
        s = w.slots(keys)
        w.counts[s] = np.asarray(data["counts"], np.int64).reshape(len(keys), n_buckets)
        w.stamps[s] = np.asarray(data["stamps"], np.int64).reshape(len(keys), n_buckets)
        w.last[s] = w.stamps[s].max(axis=1)
        if track_span:
            empty = w.stamps[s] < 0
            w.lo[s] = np.where(empty, np.inf, np.asarray(data["lo"], float).reshape(empty.shape))
            w.hi[s] = np.where(empty, -np.inf, np.asarray(data["hi"], float).reshape(empty.shape))
        return w


class Guard:
    """Sliding-window rate rules and a burst detector in front of training.

    Build one per worker (``Guard(GuardConfig.from_settings(settings))``), call
    :meth:`check` on every micro-batch of parsed events before the engine sees them,
    and persist :meth:`state` with the engine's checkpoint so a restart decides the same.
    """

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        n = self.config.n_buckets
        self.users = _Window(n, track_span=True)    # events per user (+ claimed time span)
        self.pairs = _Window(n)                      # events per (user, item)
        self.items = _Window(n)                      # events per item, everyone
        self.items_new = _Window(n)                  # events per item from brand-new users
        self.total = _Window(n)                      # all events, one key
        self.first_seen: dict[str, float] = {}       # brand-new users, oldest first
        self.user_flags: dict[str, Flag] = {}
        self.item_flags: dict[str, Flag] = {}
        self.user_exempt: dict[str, float] = {}      # released: exempt until (arrival time)
        self.item_exempt: dict[str, float] = {}
        self.decisions: Counter[str] = Counter()
        self.new_flags: list[tuple[str, str, Flag]] = []
        """(kind, id, flag) raised by the last :meth:`check`, for logging and metrics."""
        self.clock = 0.0                             # newest arrival time seen
        self._bucket = -1

    # ----------------------------------------------------------------- decisions
    def check(self, events: Sequence[Interaction], arrival_times: np.ndarray,
              known_users: np.ndarray | None = None,
              released: np.ndarray | None = None) -> tuple[np.ndarray, list[str | None]]:
        """Which events may be trained on: ``(keep_mask, reasons)``, reasons None where kept.

        ``arrival_times``: the Kafka record timestamps (epoch s), one per event. Late records
        count in the current bucket (the guard's clock never runs backwards).
        ``known_users``: True where the model already knew the user before this batch; such
        users are never brand-new (optional; without it only the guard's memory decides).
        ``released``: True for events an operator released; they pass and are not counted.
        """
        n = len(events)
        keep = np.ones(n, bool)
        self.new_flags = []
        if n == 0 or not self.config.enabled:
            self.decisions["kept"] += n
            return keep, [None] * n
        arrival = np.asarray(arrival_times, np.float64)
        t = np.maximum.accumulate(np.maximum(arrival, self.clock))
        codes = np.zeros(n, np.int8)
        todo = np.ones(n, bool) if released is None else ~np.asarray(released, bool)
        self.decisions["released"] += int(n - todo.sum())
        idx = np.flatnonzero(todo)
        if len(idx):
            users = np.array([events[k].user_id for k in idx.tolist()])
            items = np.array([events[k].item_id for k in idx.tolist()])
            claimed = np.array([arrival[k] if events[k].timestamp is None
                                else events[k].timestamp for k in idx.tolist()], np.float64)
            known = (np.zeros(len(idx), bool) if known_users is None
                     else np.asarray(known_users, bool)[idx])
            buckets = np.floor(t[idx] / self.config.bucket_s).astype(np.int64)
            cuts = np.flatnonzero(np.diff(buckets)) + 1
            for seg in np.split(np.arange(len(idx)), cuts):
                codes[idx[seg]] = self._step(users[seg], items[seg], claimed[seg], known[seg],
                                             float(t[idx[seg[-1]]]), int(buckets[seg[0]]))
        self.clock = float(t[-1])
        keep = codes == 0
        reasons = _NAMES[codes].tolist()
        self.decisions["kept"] += int(keep.sum())
        if not keep.all():
            self.decisions.update(r for r in reasons if r is not None)
        return keep, reasons

    def _step(self, users: np.ndarray, items: np.ndarray, claimed: np.ndarray,
              known: np.ndarray, now: float, bucket: int) -> np.ndarray:
        """Count one bucket's events, apply the rules, return reason codes per event."""
        cfg = self.config
        if bucket != self._bucket:
            self._advance(now, bucket)
        uu, ufirst, uinv, ucnt = np.unique(users, return_index=True, return_inverse=True,
                                           return_counts=True)
        ii, iinv, icnt = np.unique(items, return_inverse=True, return_counts=True)
        pairs = np.char.add(np.char.add(users, _PAIR_SEP), items)
        pp, pfirst, pcnt = np.unique(pairs, return_index=True, return_counts=True)
        lo = np.full(len(uu), np.inf)
        hi = np.full(len(uu), -np.inf)
        np.minimum.at(lo, uinv, claimed)
        np.maximum.at(hi, uinv, claimed)

        u_keys = uu.tolist()
        u_slots, u_tot = self.users.add(u_keys, ucnt, bucket, lo, hi)
        u_span = self.users.spans(u_slots, bucket)
        _, p_tot = self.pairs.add(pp.tolist(), pcnt, bucket)
        _, i_tot = self.items.add(ii.tolist(), icnt, bucket)
        all_tot = int(self.total.add(["*"], np.array([len(users)]), bucket)[1][0])
        new_u = self._brand_new(u_keys, known[ufirst], now)
        new_ev = new_u[uinv]

        pace = u_tot / np.maximum(u_span, 1.0)
        self._flag_users(uu[u_tot > cfg.user_max_events], USER_RATE, now,
                         u_tot[u_tot > cfg.user_max_events],
                         f"events in {cfg.window_s:g} s > {cfg.user_max_events}")
        hit = (u_tot >= cfg.pace_min_events) & (pace > cfg.pace_max_rate)
        self._flag_users(uu[hit], USER_PACE, now, np.round(pace[hit], 1),
                         f"events per claimed second over {cfg.window_s:g} s "
                         f"> {cfg.pace_max_rate:g}")
        hit = p_tot > cfg.pair_max_events
        self._flag_users(users[pfirst[hit]], USER_REPEAT, now, p_tot[hit],
                         f"events on one item in {cfg.window_s:g} s > {cfg.pair_max_events}")
        if new_ev.any():
            self._detect_bursts(items[new_ev], i_tot, ii, all_tot, bucket, now)

        codes = np.zeros(len(users), np.int8)
        if self.user_flags:
            flagged = np.isin(uu, list(self.user_flags))
            u_code = np.zeros(len(uu), np.int8)
            u_code[flagged] = [_CODES[self.user_flags[u].reason] for u in uu[flagged].tolist()]
            codes = u_code[uinv]
        if self.item_flags:
            on_flagged = np.isin(ii, list(self.item_flags))[iinv] & new_ev
            codes[(codes == 0) & on_flagged] = _CODES[ITEM_BURST]
        return codes

    def _detect_bursts(self, new_items: np.ndarray, i_tot: np.ndarray, ii: np.ndarray,
                       all_tot: int, bucket: int, now: float) -> None:
        cfg = self.config
        ni, ncnt = np.unique(new_items, return_counts=True)
        _, n_tot = self.items_new.add(ni.tolist(), ncnt, bucket)
        item_tot = i_tot[np.searchsorted(ii, ni)]
        hit = ((n_tot >= cfg.item_burst_events) & (n_tot >= cfg.item_burst_share * all_tot)
               & (n_tot >= cfg.item_burst_new_fraction * item_tot))
        for item, k in zip(ni[hit].tolist(), n_tot[hit].tolist()):
            if item in self.item_flags or item in self.item_exempt:
                continue
            flag = Flag(ITEM_BURST, now, f"{k} events from new users of {all_tot} in "
                                         f"{cfg.window_s:g} s (>= {cfg.item_burst_share:.0%})")
            self.item_flags[item] = flag
            self.new_flags.append(("item", item, flag))
            log.warning("guard: item %s quarantined for new users: %s", item, flag.detail)

    def _flag_users(self, ids: np.ndarray, reason: str, now: float, values: np.ndarray,
                    rule: str) -> None:
        for uid, v in zip(ids.tolist(), values.tolist()):
            if uid in self.user_flags or uid in self.user_exempt:
                continue
            flag = Flag(reason, now, f"{v} {rule}")
            self.user_flags[uid] = flag
            self.new_flags.append(("user", uid, flag))
            log.warning("guard: user %s quarantined (%s): %s", uid, reason, flag.detail)

    def _brand_new(self, users: list[str], known: np.ndarray, now: float) -> np.ndarray:
        """True per user first seen less than ``new_user_age_s`` ago and not known before.

        The guard's own memory wins over ``known``: a new account whose first events slipped
        into the model before a flag stays new for the whole age window.
        """
        first_seen, age = self.first_seen, self.config.new_user_age_s
        out = np.zeros(len(users), bool)
        for k, (uid, was_known) in enumerate(zip(users, known.tolist())):
            t0 = first_seen.get(uid)
            if t0 is None:
                if not was_known:
                    first_seen[uid] = now
                    out[k] = True
            else:
                out[k] = now - t0 < age
        return out

    def _advance(self, now: float, bucket: int) -> None:
        """Once per bucket: evict idle keys, forget old first sightings, lift expired flags."""
        self._bucket = bucket
        for w in (self.users, self.pairs, self.items, self.items_new, self.total):
            w.evict(bucket)
        first_seen, horizon = self.first_seen, now - self.config.new_user_age_s
        while first_seen:
            uid = next(iter(first_seen))
            if first_seen[uid] >= horizon:
                break
            del first_seen[uid]
        ttl = self.config.quarantine_ttl_s
        for flags in (self.user_flags, self.item_flags):
            for key in [k for k, f in flags.items() if now - f.since >= ttl]:
                del flags[key]
        for exempt in (self.user_exempt, self.item_exempt):
            for key in [k for k, until in exempt.items() if until <= now]:
                del exempt[key]

    # ----------------------------------------------------------------- operators
    def release_user(self, user_id: str, now: float | None = None) -> bool:
        """Lift a user's flag, forget their counts, exempt them for ``release_exempt_s``.

        Their quarantined events come back through the released path (``released=True``),
        which passes uncounted. True if the user was quarantined.
        """
        was = self.user_flags.pop(user_id, None) is not None
        self.users.drop([user_id])
        prefix = user_id + _PAIR_SEP
        self.pairs.drop([k for k in self.pairs.index if k.startswith(prefix)])
        self.user_exempt[user_id] = (self.clock if now is None else now) + \
            self.config.release_exempt_s
        log.info("guard: user %s released (was quarantined: %s)", user_id, was)
        return was

    def release_item(self, item_id: str, now: float | None = None) -> bool:
        """Lift an item's burst flag, forget its counts, exempt it for ``release_exempt_s``."""
        was = self.item_flags.pop(item_id, None) is not None
        self.items.drop([item_id])
        self.items_new.drop([item_id])
        self.item_exempt[item_id] = (self.clock if now is None else now) + \
            self.config.release_exempt_s
        log.info("guard: item %s released (was quarantined: %s)", item_id, was)
        return was

    def quarantined(self) -> dict[str, dict[str, Flag]]:
        """The users and items currently quarantined, with why and since when."""
        return {"users": dict(self.user_flags), "items": dict(self.item_flags)}

    # ----------------------------------------------------------------- persistence
    def state(self) -> dict:
        """Everything the guard knows, as JSON-able data (write it with the checkpoint)."""
        return {
            "version": 1,
            "clock": self.clock,
            "bucket_s": self.config.bucket_s,
            "n_buckets": self.config.n_buckets,
            "bucket": self._bucket,
            "windows": {name: getattr(self, name).state() for name in _WINDOWS},
            "first_seen": list(self.first_seen.items()),
            "user_flags": {k: [f.reason, f.since, f.detail] for k, f in self.user_flags.items()},
            "item_flags": {k: [f.reason, f.since, f.detail] for k, f in self.item_flags.items()},
            "user_exempt": dict(self.user_exempt),
            "item_exempt": dict(self.item_exempt),
            "decisions": dict(self.decisions),
        }

    @classmethod
    def from_state(cls, data: dict, config: GuardConfig | None = None) -> "Guard":
        """A guard restored from :meth:`state` (thresholds come from ``config``, not the data)."""
        g = cls(config)
        n = g.config.n_buckets
        g.clock = float(data["clock"])
        if data["n_buckets"] == n and math.isclose(data["bucket_s"], g.config.bucket_s):
            g._bucket = int(data["bucket"])
            for name, track in _WINDOWS.items():
                setattr(g, name, _Window.from_state(data["windows"][name], n, track))
        else:
            log.info("guard: window changed (%s x %s s -> %s x %s s); counting from zero",
                     data["n_buckets"], data["bucket_s"], n, g.config.bucket_s)
        g.first_seen = {k: float(v) for k, v in data["first_seen"]}
        g.user_flags = {k: Flag(*v) for k, v in data["user_flags"].items()}
        g.item_flags = {k: Flag(*v) for k, v in data["item_flags"].items()}
        g.user_exempt = {k: float(v) for k, v in data["user_exempt"].items()}
        g.item_exempt = {k: float(v) for k, v in data["item_exempt"].items()}
        g.decisions = Counter(data["decisions"])
        return g


_WINDOWS = {"users": True, "pairs": False, "items": False, "items_new": False, "total": False}
"""Guard attributes holding a window, and whether they track a claimed-time span."""
