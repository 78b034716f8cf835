"""What the fraud/bot guard would hold back on a replayed data set: users and events per rule.

``streamrec guard report`` and ``bench/guard_report.py`` call :func:`guard_report`: the
events go through a fresh :class:`~stream_app.guard.Guard` in micro-batches, as the worker
feeds them, with arrival times of a replay at ``rate`` events/s (a backfill "as fast as it
goes" is a high rate), or with each event's own timestamp as its arrival (a producer that
stamps records with event time). What the worker's engine tells the guard is simulated:
a user is known once an event of theirs was kept, and their history size is the distinct
items kept so far.

A user held here is a false positive when the data set is real (MovieLens, an app's
export): the report is how thresholds are checked against a history before it is
backfilled (docs/guard-notes.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream_app.guard import REASONS, Guard, GuardConfig
from streamrec.schema import Interaction


@dataclass
class GuardReport:
    """Outcome of one replay: what was held, per rule."""

    events: int = 0
    kept: int = 0
    held_events: Counter = field(default_factory=Counter)
    """Events held per reason."""
    held_users: dict[str, str] = field(default_factory=dict)
    """User id -> reason of their flag, for every user the replay flagged."""
    held_items: dict[str, str] = field(default_factory=dict)
    user_events: Counter = field(default_factory=Counter)
    """Events per held user in the replay (how much of their history was theirs)."""
    keep: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    """Per event of the replay (in input order): kept or not."""

    def rows(self) -> list[dict]:
        """One row per rule: users flagged, events held; then a total row."""
        users = Counter(self.held_users.values())
        out = [{"rule": r, "users": users.get(r, 0), "items": sum(
                    1 for v in self.held_items.values() if v == r),
                "events": self.held_events.get(r, 0)} for r in REASONS]
        out.append({"rule": "total", "users": len(self.held_users),
                    "items": len(self.held_items), "events": self.events - self.kept})
        return out

    def table(self) -> str:
        lines = [f"{'rule':<14} {'users':>6} {'items':>6} {'events held':>12}"]
        for r in self.rows():
            lines.append(f"{r['rule']:<14} {r['users']:>6} {r['items']:>6} {r['events']:>12}")
        lines.append(f"{self.events} events replayed, {self.kept} kept")
        for uid, why in sorted(self.held_users.items(), key=lambda x: -self.user_events[x[0]])[:10]:
            lines.append(f"  held: user {uid} ({why}, {self.user_events[uid]} events)")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"events": self.events, "kept": self.kept, "rules": self.rows(),
                "held_users": dict(self.held_users), "held_items": dict(self.held_items)}


def arrival_times(events: Sequence[Interaction], rate: float | None,
                  start: float | None = None) -> np.ndarray:
    """Arrival of each event: ``start + k / rate`` (``start``: a day after the newest
    event, a backfill of the past); ``rate`` None: the events' own timestamps (record
    timestamps stamped with event time)."""
    own = np.array([np.nan if e.timestamp is None else e.timestamp for e in events],
                   np.float64)
    if rate is None:
        return np.where(np.isnan(own), np.nanmax(own) if len(own) else 0.0, own)
    if start is None:
        start = (float(np.nanmax(own)) if len(own) and not np.isnan(own).all() else 0.0) \
            + 86400.0
    return start + np.arange(len(events), dtype=np.float64) / rate


def guard_report(events: Iterable[Interaction], config: GuardConfig | object | None = None,
                 rate: float | None = 1_000_000.0, arrivals: np.ndarray | None = None,
                 max_batch: int = 2000, batch_s: float = 0.05,
                 guard: Guard | None = None) -> GuardReport:
    """Replay ``events`` (in their order) through a guard; users and events held per rule.

    ``config``: a :class:`GuardConfig` or a Settings (``guard_*`` fields), default the
    measured thresholds. ``rate``: replay speed in events/s (None: each event arrives at its
    own timestamp); ``arrivals`` overrides both. Micro-batches hold the events of
    ``batch_s`` of arrival time, at most ``max_batch`` (the worker's defaults).
    """
    events = list(events)
    if guard is None:
        if config is not None and not isinstance(config, GuardConfig):
            config = GuardConfig.from_settings(config)
        guard = Guard(config)
    t = arrival_times(events, rate) if arrivals is None else np.asarray(arrivals, np.float64)
    if arrivals is None and rate is None:
        batch_s = float("inf")        # stamped with event time: fetch batches of max_batch
    report = GuardReport(events=len(events), keep=np.zeros(len(events), bool))
    sizes: Counter[str] = Counter()               # distinct items kept per user
    kept_pairs: set[tuple[str, str]] = set()
    for seg in _batches(t, max_batch, batch_s):
        batch = [events[k] for k in seg]
        users = [e.user_id for e in batch]
        h = np.fromiter((sizes[u] for u in users), np.int64, len(batch))
        keep, reasons = guard.check(batch, t[seg], h > 0, history_sizes=h)
        report.keep[seg] = keep
        for e, k, why in zip(batch, keep.tolist(), reasons):
            if k:
                if (e.user_id, e.item_id) not in kept_pairs:
                    kept_pairs.add((e.user_id, e.item_id))
                    sizes[e.user_id] += 1
            else:
                report.held_events[why] += 1
    report.kept = int(report.keep.sum())
    flags = guard.quarantined()
    report.held_users = {u: f.reason for u, f in flags["users"].items()}
    report.held_items = {i: f.reason for i, f in flags["items"].items()}
    held = set(report.held_users)
    report.user_events = Counter(e.user_id for e in events if e.user_id in held)
    return report


def load_events(movielens: Path | None = None, jsonl: Path | None = None
                ) -> list[Interaction]:
    """A data set to replay: a JSON-lines file of contract events (invalid lines skipped),
    else MovieLens 100K (``movielens`` or a known location) in time order."""
    if jsonl is not None:
        import orjson

        from streamrec.errors import InvalidEvent
        from streamrec.schema import validate_interaction

        out = []
        with open(jsonl, "rb") as f:
            for line in f:
                if line.strip():
                    try:
                        out.append(validate_interaction(orjson.loads(line)))
                    except (orjson.JSONDecodeError, InvalidEvent):
                        continue
        return out
    from streamrec.movielens import find_movielens, load_movielens

    ml = load_movielens(find_movielens(movielens, download=False))
    return [Interaction.model_construct(
                user_id=str(u), item_id=str(i), event_type="rating", rating=float(r),
                timestamp=float(t), weight=None, event_id=None, user_features=None,
                item_features=None)
            for u, i, r, t in zip(ml.users.tolist(), ml.items.tolist(), ml.ratings.tolist(),
                                  ml.timestamps.tolist())]


def _batches(t: np.ndarray, max_batch: int, batch_s: float) -> Iterable[np.ndarray]:
    """Consecutive index ranges: same ``batch_s`` slot of arrival, at most ``max_batch``."""
    if not len(t):
        return
    if not np.isfinite(batch_s):
        for s in range(0, len(t), max_batch):
            yield np.arange(s, min(s + max_batch, len(t)))
        return
    slot = np.floor((t - t[0]) / batch_s)
    cuts = np.flatnonzero(np.diff(slot) != 0) + 1
    for seg in np.split(np.arange(len(t)), cuts):
        for s in range(0, len(seg), max_batch):
            yield seg[s:s + max_batch]
