"""Fraud and bot guard: decide, per micro-batch and before training, which events to hold back.

Time is *arrival* time (the Kafka record timestamp), never the event's own ``timestamp``: a
MovieLens replay sends 1998 events at whatever ``--rate`` says, and an attacker controls the
event body. Record timestamps also make the decisions repeatable: the same records through
a guard in the same state decide the same way (WAL replay after a restart, a retrain).

**Live and historical events.** An event whose own ``timestamp`` is older than its arrival
by more than ``history_after_s`` is *historical*: a backfill (the worker's bootstrap replay,
``streamrec produce``, an app loading its users' past), a late upload. "Arrival" is the
guard's clock, the newest record timestamp it has seen (stored with its state, so a WAL
replay decides exactly as the first pass did; wall-clock time is never read). A whole
history arrives in one burst, so historical events are judged on the user's *own* timeline
instead of arrival counts, and bounded by a per-user budget:

``user_rate``
    one user sent more *live* events in the last minute than any person can; a whole
    MovieLens session replayed live in one burst stays below it.
``user_pace``
    one user's live events of the last minute *claim* (event ``timestamp``, else arrival) to
    have happened faster than a person acts; or, separately, their historical events of the
    last minute claim so (a history forged with one timestamp, or a replayed capture). A
    replayed human session arrives in a burst but its timestamps are spread over minutes; a
    bot stamps "now" (or nothing). This stops a 1,000 events/s bot after ~50 events; one
    that forges spread-out timestamps still meets ``user_rate`` (live) or ``user_history``.
``user_history``
    one user's history is larger than any person's: the items they already trained on
    (``history_sizes``, from the engine's state) plus their historical events of this
    micro-batch, or their historical events of the last minute, exceed
    ``history_max_events``. A bot forging spread-out past timestamps (which looks human on
    its own timeline) gets at most that many events into the model per account.
``user_repeat``
    one user repeated the same action on the same item more often than a person does
    (live and historical events alike).
``item_burst``
    one item is suddenly hit by brand-new users (first seen less than ``new_user_age_s``
    ago and unknown to the model): either their events are a large share of *all* traffic
    of the last 0.2 s, or each of them repeats the same action on it. Only new users'
    events on the item are held back; established users keep training on it. Historical
    events count here at their arrival: a backfill's busiest item is ~1 % of it.

A flagged user stays quarantined (every later event too) until ``quarantine_ttl_s`` passes
or an operator calls :meth:`Guard.release_user`; a flagged item holds back new users' events
likewise. Decisions are per micro-batch: when a rule trips, every event of that key in the
batch is held back, including the ones that arrived before the threshold was reached.
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
USER_HISTORY = "user_history"
REASONS: tuple[str, ...] = (USER_RATE, USER_PACE, USER_REPEAT, ITEM_BURST, USER_HISTORY)
"""Every reason :meth:`Guard.check` returns: the ``reason`` header and the metric label."""

_CODES = {r: k + 1 for k, r in enumerate(REASONS)}
_NAMES = np.array([None, *REASONS], dtype=object)
_SEP = "\x1f"   # joins user, item and action into one key; never part of a sane id


@dataclass(frozen=True)
class GuardConfig:
    """Thresholds of the guard, measured on MovieLens 100K replayed at 200 to 1,000,000
    events/s (``docs/guard-notes.md``); each leaves a wide margin over the heaviest real
    user or item there."""

    enabled: bool = True
    """Off: :meth:`Guard.check` keeps everything."""
    window_s: float = 60.0
    """Window of the user rules and of ``item_burst``'s repeat test: a bot has to keep a
    human pace for a whole minute. Memory is bounded by keys active in the last window."""
    window_buckets: int = 12
    """Ring buckets of that window (5 s each): it slides in 5 s steps."""
    action_buckets: int = 3
    """Ring buckets of the (user, item, action) window (20 s each). It has a key per
    distinct action of the last minute, the most of any window, so it slides coarsely."""
    burst_window_s: float = 0.2
    """Window of ``item_burst``'s share test: short, so that a burst is a large share of
    recent traffic at once and is caught within its first ~10-20 events. A share of a
    longer window needs proportionally more attack events before it trips, and every
    event that slips through trains the model and feeds the popular list."""
    burst_buckets: int = 2
    """Ring buckets of the burst window (0.1 s each)."""
    user_max_events: int = 900
    """``user_rate``: events of one user per window. The heaviest MovieLens 100K user has
    737 ratings in all, and a fast replay delivers all of them within one window; 900 keeps
    a 20 % margin and still stops a 1,000 events/s bot (that forges timestamps) in 1 s."""
    pace_min_events: int = 50
    """``user_pace`` looks only at users with at least this many events in the window, so a
    page of impressions stamped in the same second is never a burst."""
    pace_max_rate: float = 5.0
    """``user_pace``: events per second of *claimed* time (span of their timestamps, at least
    1 s). MovieLens users never exceed 0.42/s over 50 events; 5/s is 12x that."""
    pair_max_events: int = 50
    """``user_repeat``: one user's events with the same action on the same item per window.
    MovieLens has one rating per pair; a person reloading a page stays far below."""
    item_burst_events: int = 10
    """``item_burst`` (share test): at least this many new-user events on the item in the
    burst window, so a few events in a quiet moment (3 of 20 is 15 %) are never a burst.
    Replayed at 2,000 events/s, no MovieLens item gets 10 events within 0.2 s."""
    item_burst_share: float = 0.05
    """... and at least this share of *all* events of the burst window. Replayed at up to
    1,000,000 events/s, the busiest MovieLens item peaks at 1.1 % once it has 10 events;
    5,000 attack clicks in 10 s beside a 2,000 events/s stream are 20 %."""
    item_burst_min_users: int = 3
    """... and at least this many different new users on the item in the same micro-batch
    step: one fast account is ``user_pace``'s job, not a reason to hold back an item."""
    item_repeat_events: int = 30
    """``item_burst`` (repeat test): at least this many new-user events on the item in the
    window ..."""
    item_repeat_ratio: float = 3.0
    """... from users who repeat the same action on it this many times each on average.
    MovieLens: exactly 1; a purchase funnel (view, click, cart, purchase) is 1 per action;
    50 fake users sending 5,000 clicks: 100."""
    item_repeat_min_actions: int = 10
    """... and at least this many distinct (new user, action) pairs on the item in the
    window. One user has at most 7 actions, so this means several accounts; one user
    repeating is ``user_repeat``'s job."""
    item_burst_new_fraction: float = 0.5
    """Both tests need at least this fraction of the item's events (in their window) to
    come from new users: a hit that established users are watching is never held back."""
    new_user_age_s: float = 3600.0
    """A user first seen less than this ago (and unknown to the model) is brand-new."""
    quarantine_ttl_s: float = 86400.0
    """A flag lifts by itself after a day; an operator can release earlier."""
    release_exempt_s: float = 3600.0
    """After a release the key is exempt from every rule this long: an operator vouched."""
    history_after_s: float = 300.0
    """An event whose own ``timestamp`` is older than its arrival (the guard's clock) by more
    than this is historical (a backfill, a late upload) and is judged on the user's own
    timeline. Live events claim times within a few seconds of arrival (clock skew, producer
    batching); five minutes leaves room for a slow producer without letting a backfill in."""
    history_max_events: int = 6_000
    """``user_history``: the largest history one user may bring in from the past: items they
    trained on before the micro-batch plus its historical events (or their historical
    events per window). The heaviest user of the synthetic power-user history has 5,000
    ratings (MovieLens 100K: 737, 1M: 2,314; 20M: 9,254 would need more); a bot forging a
    spread-out past gets at most this many events per account into the model, then the
    account is quarantined like any other (docs/guard-notes.md)."""

    @classmethod
    def from_settings(cls, settings: object) -> GuardConfig:
        """Take ``settings.guard_<field>`` where Settings defines it and it is not None;
        every other threshold keeps the measured default written here."""
        values = {f.name: getattr(settings, f"guard_{f.name}", None) for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class Flag:
    """Why and since when (arrival time) a user or item is quarantined."""

    reason: str
    since: float
    detail: str


class _Window:
    """Per-key event counts over the last ``n`` buckets of ``bucket_s`` seconds.

    Each key owns a ring row of cells stamped with their absolute bucket number; a cell
    counts while its stamp is within the window, so nothing shifts as time passes.
    Optionally keeps the min and max of a per-event value (claimed timestamps) per cell.
    Keys idle for a whole window are evicted and their rows reused.
    """

    def __init__(self, window_s: float, n: int, track_span: bool = False,
                 capacity: int = 256) -> None:
        self.n = n
        self.bucket_s = window_s / n
        self.track_span = track_span
        self.index: dict[str, int] = {}
        self.keys: list[str | None] = [None] * capacity
        self.free: list[int] = list(range(capacity - 1, -1, -1))
        self.counts = np.zeros((capacity, n), np.int32)
        self.stamps = np.full((capacity, n), -1, np.int64)
        self.last = np.full(capacity, -1, np.int64)
        self.evicted_at = -1
        if track_span:
            self.lo = np.full((capacity, n), np.inf)
            self.hi = np.full((capacity, n), -np.inf)

    def __len__(self) -> int:
        return len(self.index)

    def bucket(self, t: float) -> int:
        return int(t // self.bucket_s)

    def _grow(self) -> None:
        old = len(self.keys)
        self.keys.extend([None] * old)
        self.free.extend(range(2 * old - 1, old - 1, -1))
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

    def add(self, keys: Sequence[str], n: np.ndarray, t: float, lo: np.ndarray | None = None,
            hi: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Count ``n[k]`` events of distinct ``keys[k]`` at time ``t``; (slots, window
        totals after adding) back."""
        b = self.bucket(t)
        if b != self.evicted_at:
            self.evict(b)
        if len(keys) == 1:
            return self._add_one(keys[0], int(n[0]), b, lo, hi)
        return self._add_many(self.slots(keys), n, b, lo, hi)

    def _add_many(self, s: np.ndarray, n: np.ndarray, b: int, lo: np.ndarray | None,
                  hi: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`add` on distinct slots ``s`` at bucket ``b``, vectorised."""
        j = b % self.n
        stale = s[self.stamps[s, j] != b]
        if len(stale):
            self.counts[stale, j] = 0
            if self.track_span:
                self.lo[stale, j] = np.inf
                self.hi[stale, j] = -np.inf
        self.stamps[s, j] = b
        self.counts[s, j] += n
        self.last[s] = b
        if self.track_span and lo is not None:
            self.lo[s, j] = np.minimum(self.lo[s, j], lo)
            self.hi[s, j] = np.maximum(self.hi[s, j], hi)
        return s, self.totals(s, b)

    def _add_one(self, key: str, n: int, b: int, lo: np.ndarray | None,
                 hi: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`add` of one key with scalar indexing (a one-event batch's usual call):
        the same cells, in ~a fifth of the time of the vectorised path."""
        s = self.index.get(key)
        if s is None:
            s = int(self.slots([key])[0])
        j = b % self.n
        if self.stamps[s, j] != b:
            self.counts[s, j] = 0
            if self.track_span:
                self.lo[s, j] = np.inf
                self.hi[s, j] = -np.inf
        self.stamps[s, j] = b
        self.counts[s, j] += n
        self.last[s] = b
        if self.track_span and lo is not None:
            self.lo[s, j] = min(self.lo[s, j], float(lo[0]))
            self.hi[s, j] = max(self.hi[s, j], float(hi[0]))
        total = int(self.counts[s][self.stamps[s] > b - self.n].sum())
        return np.array([s]), np.array([total])

    def totals(self, s: np.ndarray, b: int) -> np.ndarray:
        return np.where(self.stamps[s] > b - self.n, self.counts[s], 0).sum(axis=1)

    def spans(self, s: np.ndarray, b: int) -> np.ndarray:
        """max - min of the tracked value over the window, per slot."""
        live = self.stamps[s] > b - self.n
        return (np.where(live, self.hi[s], -np.inf).max(axis=1)
                - np.where(live, self.lo[s], np.inf).min(axis=1))

    def total(self, key: str, t: float) -> int:
        """One key's count in the window ending at ``t`` (0 for an unknown key)."""
        s = self.index.get(key)
        return 0 if s is None else int(self.totals(np.array([s]), self.bucket(t))[0])

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

    def evict(self, b: int) -> int:
        """Forget keys with no event in the window ending at bucket ``b``."""
        self.evicted_at = b
        idle = np.flatnonzero((self.last >= 0) & (self.last <= b - self.n))
        if len(idle):
            self._release(idle.tolist())
        return len(idle)

    def drop(self, keys: Sequence[str]) -> None:
        slots = [self.index[k] for k in keys if k in self.index]
        if slots:
            self._release(slots)

    def state(self) -> dict:
        """Live cells only, as columns (a key has one or two live cells, not ``n``)."""
        used = np.flatnonzero(self.last >= 0)
        newest = int(self.last[used].max()) if len(used) else 0
        rows, cols = np.nonzero(self.stamps[used] > newest - self.n)
        keys, key_of = np.unique(rows, return_inverse=True)
        slots = used[rows]
        base = newest - self.n + 1
        out = {"bucket_s": self.bucket_s, "n": self.n, "base": base,
               "keys": [self.keys[s] for s in used[keys].tolist()],
               "key": key_of.tolist(), "stamp": (self.stamps[slots, cols] - base).tolist(),
               "count": self.counts[slots, cols].tolist()}
        if self.track_span:
            out["lo"] = self.lo[slots, cols].tolist()
            out["hi"] = self.hi[slots, cols].tolist()
        return out

    def load(self, data: dict) -> bool:
        """Take counts from :meth:`state` (into an empty window); False if its shape changed."""
        if data["n"] != self.n or not math.isclose(data["bucket_s"], self.bucket_s):
            return False
        if not data["keys"]:
            return True
        s = self.slots(data["keys"])[np.asarray(data["key"], np.int64)]
        stamps = np.asarray(data["stamp"], np.int64) + int(data["base"])
        cols = stamps % self.n
        self.stamps[s, cols] = stamps
        self.counts[s, cols] = np.asarray(data["count"], np.int32)
        np.maximum.at(self.last, s, stamps)
        if self.track_span:
            self.lo[s, cols] = np.asarray(data["lo"], np.float64)
            self.hi[s, cols] = np.asarray(data["hi"], np.float64)
        return True


class Guard:
    """Sliding-window rate rules and a burst detector in front of training.

    Build one per worker (``Guard(GuardConfig.from_settings(settings))``), call
    :meth:`check` on every micro-batch of parsed events before the engine sees them, and
    persist :meth:`state` with the engine's checkpoint so a restart decides the same.
    """

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = cfg = config or GuardConfig()
        long_, short = (cfg.window_s, cfg.window_buckets), (cfg.burst_window_s, cfg.burst_buckets)
        self.windows: dict[str, _Window] = {
            "users": _Window(*long_, track_span=True),  # per user, + claimed-time span
            "user_history": _Window(*long_, track_span=True),  # same, historical events
            "actions": _Window(cfg.window_s, cfg.action_buckets),  # per (user, item, action)
            "item_all": _Window(*long_),                # per item, everyone
            "item_new": _Window(*long_),                # per item, new users' events
            "item_new_actions": _Window(*long_),        # per item, new users' distinct actions
            "items": _Window(*short),                   # per item, everyone
            "item_new_recent": _Window(*short),         # per item, new users' events
            "total": _Window(*short),                   # all events, one key
        }
        self.first_seen: dict[str, float] = {}          # brand-new users, oldest first
        self.user_flags: dict[str, Flag] = {}
        self.item_flags: dict[str, Flag] = {}
        self.user_exempt: dict[str, float] = {}         # released: exempt until (arrival)
        self.item_exempt: dict[str, float] = {}
        self.decisions: Counter[str] = Counter()
        """Events by decision since the guard was created: "kept", "released", a reason."""
        self.new_flags: list[tuple[str, str, Flag]] = []
        """(kind, id, flag) raised by the last :meth:`check`, for logs and metrics."""
        self.clock = 0.0                                # newest arrival time seen

    # ----------------------------------------------------------------- decisions
    def check(self, events: Sequence[Interaction], arrival_times: np.ndarray,
              known_users: np.ndarray | None = None,
              released: np.ndarray | None = None,
              history_sizes: np.ndarray | None = None) -> tuple[np.ndarray, list[str | None]]:
        """Which events may be trained on: ``(keep_mask, reasons)``, reason None where kept.

        ``arrival_times``: Kafka record timestamps (epoch s), one per event; a late record
        counts as arriving now (the guard's clock never runs backwards).
        ``known_users``: True where the model knew the user before this batch; such users
        are never brand-new (optional; without it the guard's own memory decides).
        ``released``: True for events an operator released; they pass uncounted.
        ``history_sizes``: per event, how many items its user had trained on before this
        batch (the engine's seen items); ``user_history`` adds the batch's historical events
        to it. Without it only the historical events of the last window count.
        """
        n = len(events)
        self.new_flags = []
        if n == 0 or not self.config.enabled:
            self.decisions["kept"] += n
            return np.ones(n, bool), [None] * n
        arrival = np.asarray(arrival_times, np.float64)
        t = np.maximum.accumulate(np.maximum(arrival, self.clock))
        self.clock = float(t[-1])
        self._expire(self.clock)
        codes = np.zeros(n, np.int8)
        idx = np.arange(n) if released is None else np.flatnonzero(~np.asarray(released, bool))
        self.decisions["released"] += n - len(idx)
        if len(idx):
            at = idx.tolist()
            users = np.array([events[k].user_id for k in at])
            items = np.array([events[k].item_id for k in at])
            actions = np.array([f"{events[k].user_id}{_SEP}{events[k].item_id}{_SEP}"
                                f"{events[k].event_type}" for k in at])
            claimed = np.array([arrival[k] if events[k].timestamp is None
                                else events[k].timestamp for k in at], np.float64)
            known = (np.zeros(len(idx), bool) if known_users is None
                     else np.asarray(known_users, bool)[idx])
            ts = t[idx]
            hist = claimed < ts - self.config.history_after_s
            prior = (np.zeros(len(idx), np.int64) if history_sizes is None
                     else np.asarray(history_sizes, np.int64)[idx])
            grown = prior + _running_count(users, hist)   # history size after each event
            step = np.zeros(len(idx), bool)   # a new step wherever any window's bucket changes
            if len(idx) > 1:
                for bucket_s in {w.bucket_s for w in self.windows.values()}:
                    step[1:] |= np.diff(np.floor(ts / bucket_s)) != 0
            segments = np.split(np.arange(len(idx)), np.flatnonzero(step)) if step.any() \
                else (np.arange(len(idx)),)
            for seg in segments:
                codes[idx[seg]] = self._step(users[seg], items[seg], actions[seg], claimed[seg],
                                             known[seg], float(ts[seg[-1]]), hist[seg],
                                             grown[seg])
        if self.new_flags:
            self._log_new_flags()
        keep = codes == 0
        reasons = _NAMES[codes].tolist()
        self.decisions["kept"] += int(keep.sum())
        if not keep.all():
            self.decisions.update(r for r in reasons if r is not None)
        return keep, reasons

    def _step(self, users: np.ndarray, items: np.ndarray, actions: np.ndarray,
              claimed: np.ndarray, known: np.ndarray, now: float, hist: np.ndarray,
              grown: np.ndarray) -> np.ndarray:
        """Count events that share every window's bucket, apply the rules, return codes."""
        w = self.windows
        uu, ufirst, uinv, ucnt = _unique(users)
        ii, _, iinv, icnt = _unique(items)
        aa, afirst, ainv, acnt = _unique(actions)
        _, a_tot = w["actions"].add(aa.tolist(), acnt, now)
        i_keys = ii.tolist()
        _, i_tot = w["items"].add(i_keys, icnt, now)
        _, i_long = w["item_all"].add(i_keys, icnt, now)
        all_tot = int(w["total"].add(["*"], np.array([len(users)]), now)[1][0])
        new_u = self._brand_new(uu.tolist(), known[ufirst], now)
        new_ev = new_u[uinv]

        if not hist.all():                      # live events: arrival counts, claimed pace
            has, u_tot, u_span = self._count_users("users", uu, uinv, claimed, ~hist, now)
            self._check_users(uu[has], u_tot, u_span, now)
        self._check_repeats(users[afirst], a_tot, now)
        if hist.any():                          # historical: own-timeline pace, budget
            has, h_tot, h_span = self._count_users("user_history", uu, uinv, claimed, hist,
                                                   now)
            size = np.zeros(len(uu), np.int64)
            np.maximum.at(size, uinv[hist], grown[hist])
            self._check_history(uu[has], h_tot, h_span, np.maximum(size[has], h_tot), now)
        if new_ev.any():
            first_action = (a_tot == acnt)[ainv] & new_ev   # first time in the window
            pairs = np.unique(iinv[new_ev] * len(uu) + uinv[new_ev])
            i_users = np.bincount(pairs // len(uu), minlength=len(ii))   # new users per item
            self._check_items(items[new_ev], items[first_action], ii, i_tot, i_long, i_users,
                              all_tot, now)

        codes = np.zeros(len(users), np.int8)
        if self.user_flags:
            flags = self.user_flags
            u_code = np.fromiter((_CODES[flags[u].reason] if u in flags else 0
                                  for u in uu.tolist()), np.int8, len(uu))
            codes = u_code[uinv]
        if self.item_flags:
            flagged = np.fromiter((i in self.item_flags for i in i_keys), bool, len(ii))
            if self.user_exempt:
                new_u &= np.fromiter((u not in self.user_exempt for u in uu.tolist()), bool,
                                     len(uu))
            codes[(codes == 0) & flagged[iinv] & new_u[uinv]] = _CODES[ITEM_BURST]
        return codes

    def _count_users(self, window: str, uu: np.ndarray, uinv: np.ndarray,
                     claimed: np.ndarray, mask: np.ndarray, now: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count the ``mask`` events per user into ``window`` (with their claimed-time
        span): (indices into ``uu`` of the users counted, window totals, spans)."""
        sel = uinv[mask]
        cnt = np.bincount(sel, minlength=len(uu))
        lo = np.full(len(uu), np.inf)
        hi = np.full(len(uu), -np.inf)
        np.minimum.at(lo, sel, claimed[mask])
        np.maximum.at(hi, sel, claimed[mask])
        has = np.flatnonzero(cnt)
        win = self.windows[window]
        slots, tot = win.add(uu[has].tolist(), cnt[has], now, lo[has], hi[has])
        return has, tot, win.spans(slots, win.bucket(now))

    def _check_users(self, uu: np.ndarray, u_tot: np.ndarray, u_span: np.ndarray,
                     now: float) -> None:
        cfg = self.config
        win = f"in {cfg.window_s:g} s"
        hit = u_tot > cfg.user_max_events
        self._flag_users(uu[hit], USER_RATE, now,
                         [f"{k} events {win} (limit {cfg.user_max_events})"
                          for k in u_tot[hit].tolist()])
        self._check_pace(uu, u_tot, u_span, now, "")

    def _check_pace(self, uu: np.ndarray, tot: np.ndarray, span: np.ndarray, now: float,
                    kind: str) -> None:
        cfg = self.config
        pace = tot / np.maximum(span, 1.0)
        hit = (tot >= cfg.pace_min_events) & (pace > cfg.pace_max_rate)
        self._flag_users(uu[hit], USER_PACE, now,
                         [f"{k} {kind}events in {cfg.window_s:g} s stamped within {s:.1f} s "
                          f"({p:.0f}/s, limit {cfg.pace_max_rate:g}/s)" for k, s, p in
                          zip(tot[hit].tolist(), span[hit].tolist(), pace[hit].tolist())])

    def _check_repeats(self, action_users: np.ndarray, a_tot: np.ndarray, now: float) -> None:
        cfg = self.config
        hit = a_tot > cfg.pair_max_events
        self._flag_users(action_users[hit], USER_REPEAT, now,
                         [f"{k} times the same action on one item in {cfg.window_s:g} s "
                          f"(limit {cfg.pair_max_events})" for k in a_tot[hit].tolist()])

    def _check_history(self, uu: np.ndarray, tot: np.ndarray, span: np.ndarray,
                       size: np.ndarray, now: float) -> None:
        """Historical events: a human pace on the user's own timeline, and a history no
        larger than ``history_max_events``."""
        cfg = self.config
        self._check_pace(uu, tot, span, now, "historical ")
        hit = size > cfg.history_max_events
        self._flag_users(uu[hit], USER_HISTORY, now,
                         [f"a history of {k} events (limit {cfg.history_max_events})"
                          for k in size[hit].tolist()])

    def _check_items(self, new_items: np.ndarray, first_items: np.ndarray, ii: np.ndarray,
                     i_tot: np.ndarray, i_long: np.ndarray, i_users: np.ndarray, all_tot: int,
                     now: float) -> None:
        """The burst detector: items hit by brand-new users, by share or by repetition."""
        cfg, w = self.config, self.windows
        ni, _, _, ncnt = _unique(new_items)
        keys = ni.tolist()
        _, recent = w["item_new_recent"].add(keys, ncnt, now)
        _, longer = w["item_new"].add(keys, ncnt, now)
        fi, _, _, fcnt = _unique(first_items)
        firsts = np.zeros(len(ni), np.int64)           # first_items is a subset of new_items
        firsts[np.searchsorted(ni, fi)] = fcnt
        _, distinct = w["item_new_actions"].add(keys, firsts, now)
        distinct = np.maximum(distinct, 1)
        at = np.searchsorted(ii, ni)
        share_of_item = cfg.item_burst_new_fraction
        by_share = ((recent >= cfg.item_burst_events) & (recent >= cfg.item_burst_share * all_tot)
                    & (recent >= share_of_item * i_tot[at])
                    & (i_users[at] >= cfg.item_burst_min_users))
        by_repeat = ((longer >= cfg.item_repeat_events)
                     & (longer >= cfg.item_repeat_ratio * distinct)
                     & (distinct >= cfg.item_repeat_min_actions)
                     & (longer >= share_of_item * i_long[at]))
        for k in np.flatnonzero(by_share | by_repeat).tolist():
            item = keys[k]
            if item in self.item_flags or item in self.item_exempt:
                continue
            if by_share[k]:
                detail = (f"{recent[k]} events from new users in {cfg.burst_window_s:g} s, "
                          f"{recent[k] / all_tot:.0%} of all (limit {cfg.item_burst_share:.0%})")
            else:
                detail = (f"{longer[k]} events from new users in {cfg.window_s:g} s, "
                          f"{longer[k] / distinct[k]:.0f} per user and action "
                          f"(limit {cfg.item_repeat_ratio:g})")
            flag = Flag(ITEM_BURST, now, detail)
            self.item_flags[item] = flag
            self.new_flags.append(("item", item, flag))

    def _flag_users(self, ids: np.ndarray, reason: str, now: float, details: list[str]) -> None:
        for uid, detail in zip(ids.tolist(), details):
            if uid in self.user_flags or uid in self.user_exempt:
                continue
            flag = Flag(reason, now, detail)
            self.user_flags[uid] = flag
            self.new_flags.append(("user", uid, flag))

    def _log_new_flags(self) -> None:
        """One line per kind and reason, however many accounts a bot farm brings."""
        groups: dict[tuple[str, str], list[tuple[str, Flag]]] = {}
        for kind, key, flag in self.new_flags:
            groups.setdefault((kind, flag.reason), []).append((key, flag))
        for (kind, reason), flagged in groups.items():
            more = f" and {len(flagged) - 5} more" if len(flagged) > 5 else ""
            log.warning("guard: quarantined %d %s(s) for %s: %s%s (first: %s)", len(flagged),
                        kind, reason, ", ".join(k for k, _ in flagged[:5]), more,
                        flagged[0][1].detail)

    def _brand_new(self, users: list[str], known: np.ndarray, now: float) -> np.ndarray:
        """True per user first seen less than ``new_user_age_s`` ago and not known before.

        The guard's memory wins over ``known``: a new account whose first events reached
        the model before a flag stays new for the whole age window.
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

    def _expire(self, now: float) -> None:
        """Forget old first sightings; lift expired flags and exemptions."""
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

        Their quarantined events come back through the released path (``released=True``
        in :meth:`check`), which passes uncounted. True if the user was quarantined.
        """
        was = self.user_flags.pop(user_id, None) is not None
        self.windows["users"].drop([user_id])
        self.windows["user_history"].drop([user_id])
        prefix = user_id + _SEP
        actions = self.windows["actions"]
        actions.drop([k for k in actions.index if k.startswith(prefix)])
        self.user_exempt[user_id] = (self.clock if now is None else now) + \
            self.config.release_exempt_s
        log.info("guard: user %s released (was quarantined: %s)", user_id, was)
        return was

    def release_item(self, item_id: str, now: float | None = None) -> bool:
        """Lift an item's burst flag, forget its counts, exempt it for ``release_exempt_s``."""
        was = self.item_flags.pop(item_id, None) is not None
        for name in ("items", "item_all", "item_new", "item_new_actions", "item_new_recent"):
            self.windows[name].drop([item_id])
        self.item_exempt[item_id] = (self.clock if now is None else now) + \
            self.config.release_exempt_s
        log.info("guard: item %s released (was quarantined: %s)", item_id, was)
        return was

    def screen(self, events: Sequence[Interaction],
               known_users: np.ndarray | None = None) -> tuple[np.ndarray, list[str | None]]:
        """Standing flags only, nothing counted, the clock untouched: for records this guard
        has already counted once (a retrained model catching up to the live offsets)."""
        keep = np.ones(len(events), bool)
        reasons: list[str | None] = [None] * len(events)
        for k, e in enumerate(events):
            flag = self.user_flags.get(e.user_id)
            if (flag is None and e.item_id in self.item_flags
                    and e.user_id not in self.user_exempt
                    and self._is_new(e.user_id, known_users is not None and known_users[k])):
                flag = self.item_flags[e.item_id]
            if flag is not None:
                keep[k] = False
                reasons[k] = flag.reason
        return keep, reasons

    def _is_new(self, user_id: str, known: bool) -> bool:
        t0 = self.first_seen.get(user_id)
        return not known if t0 is None else self.clock - t0 < self.config.new_user_age_s

    def quarantined(self) -> dict[str, dict[str, Flag]]:
        """The users and items quarantined now, with why and since when."""
        return {"users": dict(self.user_flags), "items": dict(self.item_flags)}

    # ----------------------------------------------------------------- persistence
    def state(self) -> dict:
        """Everything the guard knows as JSON-able data; write it with the checkpoint."""
        return {
            "version": 1,
            "clock": self.clock,
            "windows": {name: w.state() for name, w in self.windows.items()},
            "first_seen": list(self.first_seen.items()),
            "user_flags": {k: [f.reason, f.since, f.detail] for k, f in self.user_flags.items()},
            "item_flags": {k: [f.reason, f.since, f.detail] for k, f in self.item_flags.items()},
            "user_exempt": dict(self.user_exempt),
            "item_exempt": dict(self.item_exempt),
            "decisions": dict(self.decisions),
        }

    @classmethod
    def from_state(cls, data: dict, config: GuardConfig | None = None) -> Guard:
        """A guard restored from :meth:`state`; thresholds come from ``config``, and a
        window whose length or buckets changed starts counting from zero."""
        g = cls(config)
        g.clock = float(data["clock"])
        for name, w in g.windows.items():
            if name in data["windows"] and not w.load(data["windows"][name]):
                log.info("guard: window %s changed shape; counting from zero", name)
        g.first_seen = {k: float(v) for k, v in data["first_seen"]}
        g.user_flags = {k: Flag(*v) for k, v in data["user_flags"].items()}
        g.item_flags = {k: Flag(*v) for k, v in data["item_flags"].items()}
        g.user_exempt = {k: float(v) for k, v in data["user_exempt"].items()}
        g.item_exempt = {k: float(v) for k, v in data["item_exempt"].items()}
        g.decisions = Counter(data["decisions"])
        return g


_ONE = np.zeros(1, np.int64)
_ONE.setflags(write=False)


def _unique(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(a, return_index, return_inverse, return_counts)``, at once for one
    element: a live micro-batch is usually one event, and the guard asks for six of these
    per batch (~20 us each in numpy's general path)."""
    if len(a) == 1:
        return a, _ONE, _ONE, _ONE + 1
    return np.unique(a, return_index=True, return_inverse=True, return_counts=True)


def _running_count(keys: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per position, how many ``mask`` positions of the same key there are up to and
    including it (0 where ``mask`` is False)."""
    if len(keys) == 1:
        return mask.astype(np.int64)
    out = np.zeros(len(keys), np.int64)
    if not mask.any():
        return out
    at = np.flatnonzero(mask)
    _, inv = np.unique(keys[at], return_inverse=True)
    order = np.argsort(inv, kind="stable")
    grp = inv[order]
    first = np.r_[0, np.flatnonzero(np.diff(grp)) + 1]
    rank = np.arange(len(grp)) - np.repeat(first, np.diff(np.r_[first, len(grp)]))
    out[at[order]] = rank + 1
    return out
