"""One micro-batch of raw Kafka records through the engine: parse, route, apply, report.

Shared by the Faust agent, WAL replay after a restart, bootstrap and retrain, so every path
treats every record the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from stream_app.engine import BatchOutcome, Engine
from streamrec.replay import Record
from streamrec.errors import InvalidEvent
from streamrec.schema import Event, parse_interaction, parse_metadata
from streamrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    outcome: BatchOutcome = field(default_factory=BatchOutcome)
    invalid: list[tuple[bytes | None, bytes | None, str]] = field(default_factory=list)
    quarantined: list[tuple[bytes | None, bytes | None, str, str]] = field(default_factory=list)
    """(key, value, "topic:partition:offset", reason) held back by the guard."""
    skipped: int = 0
    metadata: int = 0
    feature_users: set[int] = field(default_factory=set)
    users: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    items: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    values: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))

    @property
    def affected_users(self) -> set[int]:
        return set(self.outcome.users.tolist()) | self.feature_users


def process_records(engine: Engine, records: list[Record], settings: Settings,
                    train: bool = True) -> BatchResult:
    """Apply a batch of records from any of the worker's topics, in offset order per topic.

    Invalid records are returned (for the dead-letter topic), never raised; records already
    in the state (offset below the stored one) are skipped, which makes redelivery harmless.
    """
    res = BatchResult()
    events: list[Event] = []
    arrivals: list[float] = []
    sources: list[int] = []          # index in ``records`` of each event (for quarantine)
    released: list[bool] = []
    t_events, t_released = settings.topic_interactions, settings.topic_released
    t_users, t_items = settings.topic_users, settings.topic_items
    stored: dict[tuple[str, int], int] = {}   # the state's next offset per partition
    last: dict[tuple[str, int], int] = {}     # the batch's newest offset per partition
    offsets = engine.offsets
    for k, (topic, part, offset, key, value, ts) in enumerate(records):
        tp = (topic, part)
        start = stored.get(tp)
        if start is None:
            start = stored[tp] = offsets.get(engine.tp_key(topic, part), 0)
        if offset < start:
            res.skipped += 1
            continue
        if offset > last.get(tp, -1):
            last[tp] = offset
        try:
            if topic == t_events or topic == t_released:
                ev = parse_interaction(value)
                events.append(ev if ev.timestamp is not None else ev._replace(timestamp=ts))
                arrivals.append(ts)
                sources.append(k)
                released.append(topic == t_released)
            elif topic == t_users:
                meta = parse_metadata(value, "user", _decode_key(key))
                res.feature_users.add(engine.apply_user_features(meta.user_id, meta.features))
                res.metadata += 1
            elif topic == t_items:
                meta = parse_metadata(value, "item", _decode_key(key))
                engine.apply_item_features(meta.item_id, meta.features)
                res.metadata += 1
        except InvalidEvent as exc:
            res.invalid.append((key, value, f"{topic}: {exc.reason}"))
    for (topic, part), offset in last.items():
        engine.advance(topic, part, offset)
    if events and engine.guard is not None:
        events = _guard(engine, events, arrivals, records, sources, released, res)
    if events:
        res.outcome = engine.apply_interactions(events, train=train)
        if not train:
            res.users, res.items, res.values = engine.last_batch_arrays
    return res


def _guard(engine: Engine, events: list[Event], arrivals: list[float], records: list[Record],
           sources: list[int], released: list[bool], res: BatchResult) -> list[Event]:
    """Hold back what the fraud/bot guard flags (before training: a held event moves no
    list and no popularity). Known = has trained history (metadata alone assigns rows).

    Arrival is the record timestamp and the history sizes are the engine's seen items, both
    stored (in the record, in the checkpoint), so a WAL replay decides as the first pass."""
    users = engine.users
    rows = np.fromiter((-1 if (r := users.get(e.user_id)) is None else r for e in events),
                       np.int64, len(events))
    sizes = engine.seen.lengths(rows)
    keep, reasons = engine.guard.check(events, np.asarray(arrivals, dtype=np.float64),
                                       sizes > 0, np.asarray(released, dtype=bool),
                                       history_sizes=sizes)
    if keep.all():
        return events
    for k in np.flatnonzero(~keep).tolist():
        topic, part, offset, key, value, _ = records[sources[k]]
        res.quarantined.append((key, value, f"{topic}:{part}:{offset}",
                                reasons[k] or "quarantined"))
    return [e for e, k in zip(events, keep.tolist()) if k]


def _decode_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None
