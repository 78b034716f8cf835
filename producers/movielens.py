"""Replaying MovieLens 100K as contract records: metadata first, then ratings in time order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from producers.events import DeliveryReport, EventProducer, Pacer
from streamrec.movielens import MovieLens, load_movielens
from streamrec.kafka import replay_linger
from streamrec.settings import Settings

log = logging.getLogger(__name__)


def rating_event(ml: MovieLens, k: int) -> dict:
    """The k-th rating (time order) as an interaction event; ``event_id`` makes a repeated
    replay harmless (the worker applies an event_id once)."""
    u, i = str(ml.users[k]), str(ml.items[k])
    return {"user_id": u, "item_id": i, "event_type": "rating", "rating": float(ml.ratings[k]),
            "timestamp": float(ml.timestamps[k]), "event_id": f"ml-{u}-{i}-{int(ml.timestamps[k])}"}


def replay_movielens(settings: Settings, path: Path | MovieLens, rate: float | None = None,
                     limit: int | None = None, skip_fraction: float = 0.0,
                     metadata: bool = True, progress: bool = True,
                     on_event: Callable[[int, dict], None] | None = None,
                     event_time: bool = False) -> DeliveryReport:
    """Send users and items metadata, then ratings ``[skip, skip+limit)`` at ``rate``/s.

    ``event_time``: record timestamps are the ratings' own (1997-98) times; see
    :class:`~producers.events.EventProducer` for why that is off by default."""
    ml = path if isinstance(path, MovieLens) else load_movielens(path)
    start = ml.split_index(skip_fraction)
    stop = len(ml) if limit is None else min(len(ml), start + limit)
    with EventProducer(settings, event_time=event_time,
                       **replay_linger(rate)) as producer:
        if metadata:
            for uid, feats in ml.user_features.items():
                producer.send_user(uid, feats)
            for iid, feats in ml.item_features.items():
                producer.send_item(iid, feats)
            producer.flush()
        pacer = Pacer(rate)
        rng = range(start, stop)
        if progress:
            from tqdm import tqdm
            rng = tqdm(rng, desc="producing ratings", unit="ev", unit_scale=True, leave=False,
                       disable=None)
        for k in rng:
            event = rating_event(ml, k)
            if on_event is not None:
                on_event(k, event)
            producer.send(event)
            pacer.tick()
    log.info("replayed MovieLens ratings %d..%d", start, stop)
    return producer.report
