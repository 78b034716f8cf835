"""Releasing a quarantined user or item: lift the guard's flag, replay their held events.

The worker's guard holds suspicious events on ``interactions.quarantine``. Releasing sends a
``release`` message on the control topic (the worker lifts the flag and exempts the key for
an hour), then re-produces the held events to ``interactions.released``, which the worker
trains on without counting them against the guard. Events already released (by their
``streamrec-source`` header) are not sent twice.
"""

from __future__ import annotations

import uuid

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streamrec.broker.base import wait_for_broker
from streamrec.control import sign
from streamrec.errors import BrokerUnavailable
from streamrec.kafka import consumer_config, producer_config
from streamrec.replay import topic_partitions
from streamrec.settings import Settings


def _read_with_headers(settings: Settings, topic: str, idle_s: float = 1.0):
    c = Consumer(consumer_config(settings, f"streamrec-release-{uuid.uuid4().hex[:8]}"))
    try:
        parts = topic_partitions(c, topic)
        if not parts:
            return
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        while True:
            msgs = c.consume(1000, timeout=idle_s)
            if not msgs:
                return
            for m in msgs:
                if m.error() is None:
                    yield m.key(), m.value(), dict(m.headers() or [])
    finally:
        c.close()


def release(settings: Settings, user: str | None = None, item: str | None = None) -> int:
    """Release ``user`` or ``item``; returns how many held events were replayed."""
    if (user is None) == (item is None):
        raise ValueError("release exactly one of user or item")
    kind, ident = ("user", user) if user is not None else ("item", item)
    wait_for_broker(settings.bootstrap_servers, settings.broker_wait_s,
                    settings.kafka_common(), what="release")
    p = Producer(producer_config(settings))
    secret = settings.control_key.get_secret_value() if settings.control_key else None
    p.produce(settings.topic_control, key=b"release",
              value=sign({"type": "release", "kind": kind, "id": ident}, secret))
    done = {h.get("streamrec-source") for _, _, h in
            _read_with_headers(settings, settings.topic_released)}
    n = 0
    for key, value, headers in _read_with_headers(settings, settings.topic_quarantine):
        source = headers.get("streamrec-source")
        if source in done or value is None:
            continue
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or doc.get(f"{kind}_id") != ident:
            continue
        p.produce(settings.topic_released, key=key, value=value,
                  headers=[("streamrec-source", source or b"")])
        done.add(source)
        n += 1
    if p.flush(30):
        raise BrokerUnavailable("release: records not delivered within 30 s")
    return n
