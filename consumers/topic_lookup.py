"""A user's latest list read straight from the ``recommendations`` topic (no store, no API)."""

from __future__ import annotations

import orjson

from streamrec.broker import wait_for_broker
from streamrec.replay import read_topics
from streamrec.schema import FALLBACK_KEY
from streamrec.settings import Settings


def latest_list(settings: Settings, user_id: str, n: int) -> dict:
    """Scan the (compacted) topic for the last value of ``user_id``; fallback if none.
    A broker that does not answer within ``broker_wait_s`` (10 s if that is 0: this is a
    command someone waits for), wrong credentials or an untrusted certificate raise a
    :class:`~streamrec.errors.StreamrecError` saying so."""
    wait_for_broker(settings.bootstrap_servers, settings.broker_wait_s or 10.0,
                    settings.kafka_common(), what="recommend")
    latest: dict[str, bytes] = {}
    wanted = {user_id.encode(), FALLBACK_KEY.encode()}
    for chunk in read_topics(settings, [settings.topic_recommendations], idle_s=0.3):
        for _, _, _, key, value, _ in chunk:
            if key in wanted and value is not None:
                latest[key.decode()] = value
    raw = latest.get(user_id)
    if raw is None:
        raw = latest.get(FALLBACK_KEY)
        doc = orjson.loads(raw) if raw else {"items": [], "model_version": "none",
                                              "updated_at": 0.0}
        doc.update(user_id=user_id, source="fallback")
    else:
        doc = orjson.loads(raw)
    doc["items"] = doc["items"][:n]
    return doc
