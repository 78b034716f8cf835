"""The app-side producer: validate against the contract before sending, report delivery."""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaException

from streamrec.errors import BrokerUnavailable, InvalidEvent
from streamrec.delivery import DeliveringProducer
from streamrec.kafka import APP_LINGER_MS
from streamrec.schema import EntityMetadata, Interaction, validate_interaction
from streamrec.settings import Settings

log = logging.getLogger(__name__)

BACKFILL_AFTER_S = 300.0
"""With ``event_time``, an event whose ``timestamp`` is older than this is sent with its own
time as the Kafka record timestamp (the guard's ``history_after_s``)."""


@dataclass
class DeliveryReport:
    """Counts of what was sent (``sent``: events, ``metadata``: users/items records);
    ``errors`` keeps the first few delivery failures."""

    sent: int = 0
    metadata: int = 0
    delivered: int = 0
    failed: int = 0
    invalid: int = 0
    errors: list[str] = field(default_factory=list)


class EventProducer:
    """Sends interaction events and metadata to the contract's topics.

    Events are validated locally first (an invalid event raises ``InvalidEvent`` and is
    counted, nothing is sent), keyed by user id (murmur2, like Java and Faust producers, so a
    user's events stay in order on one partition), and flushed on ``close``/exit. Each event
    is sent at once (``linger.ms`` 0, :data:`~streamrec.kafka.APP_LINGER_MS`: the freshest
    lists for an app instance sending a few events a second); a process that sends hundreds
    a second or more passes ``**{"linger.ms": LIVE_LINGER_MS}`` (2 ms) to batch them.

    ``event_time``: a backfilled event (``timestamp`` more than ``BACKFILL_AFTER_S`` in the
    past) gets its own time as the Kafka record timestamp (Kafka's CreateTime, event-time
    semantics), never a future one. Off by default: Kafka's time-based retention and segment
    rolling read record timestamps, so on a topic with the default ``retention.ms`` (7 days)
    the closed segments of a backfill stamped with its past are deleted within minutes
    (measured: docs/guard-notes.md). Turn it on only for an ``interactions`` topic with
    ``retention.ms=-1``. The guard needs neither: it tells a backfill by the events' own
    timestamps against their arrival.
    """

    def __init__(self, settings: Settings, event_time: bool = False,
                 **producer_overrides: Any) -> None:
        self.settings = settings
        self.event_time = event_time
        self.report = DeliveryReport()
        # remembers every record until acknowledged; replaces a stuck librdkafka producer
        self._producer = DeliveringProducer(
            settings, **{"linger.ms": APP_LINGER_MS, **producer_overrides})
        self._closed = False
        atexit.register(self.close)

    @classmethod
    def from_env(cls, **overrides: Any) -> "EventProducer":
        return cls(Settings(**overrides))

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            self.report.delivered += 1
        else:
            self.report.failed += 1
            if len(self.report.errors) < 10:
                self.report.errors.append(f"{msg.topic()}: {err}")
            log.error("delivery to %s failed: %s", msg.topic(), err)

    def _produce(self, topic: str, key: str, value: bytes, metadata: bool = False,
                 timestamp_ms: int = 0) -> None:
        try:
            self._producer.produce(topic, key=key.encode("utf-8"), value=value,
                                   on_delivery=self._on_delivery, timestamp=timestamp_ms)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot produce to {topic}: {exc}") from exc
        if metadata:
            self.report.metadata += 1
        else:
            self.report.sent += 1
        self._producer.poll(0)

    def send(self, event: Mapping[str, Any] | Interaction) -> Interaction:
        """Validate and send one interaction event; returns the normalised event."""
        try:
            ev = event if isinstance(event, Interaction) else validate_interaction(dict(event))
        except InvalidEvent:
            self.report.invalid += 1
            raise
        value = orjson.dumps(ev.model_dump(exclude_none=True))
        self._produce(self.settings.topic_interactions, ev.user_id, value,
                      timestamp_ms=self.record_timestamp_ms(ev.timestamp))
        return ev

    def record_timestamp_ms(self, timestamp: float | None, now: float | None = None) -> int:
        """The Kafka record timestamp for an event stamped ``timestamp``: 0 (the producer's
        clock, at send) unless ``event_time`` is on and the event is a backfill."""
        if not self.event_time or timestamp is None:
            return 0
        now = time.time() if now is None else now
        return int(timestamp * 1000) if timestamp < now - BACKFILL_AFTER_S else 0

    def send_user(self, user_id: str, features: Mapping[str, Any]) -> None:
        meta = EntityMetadata(user_id=user_id, features=dict(features))
        self._produce(self.settings.topic_users, meta.user_id,
                      orjson.dumps(meta.model_dump(exclude_none=True)), metadata=True)

    def send_item(self, item_id: str, features: Mapping[str, Any]) -> None:
        meta = EntityMetadata(item_id=item_id, features=dict(features))
        self._produce(self.settings.topic_items, meta.item_id,
                      orjson.dumps(meta.model_dump(exclude_none=True)), metadata=True)

    def flush(self, timeout: float = 30.0) -> DeliveryReport:
        """Wait for every sent record; raise if some could not be delivered in time."""
        left = self._producer.flush(timeout)
        if left:
            raise BrokerUnavailable(f"{left} records not delivered within {timeout:.0f} s; "
                                    f"is the broker at {self.settings.bootstrap_servers} up?")
        return self.report

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._producer.flush(30)
            except Exception:  # at interpreter exit: best effort
                pass

    def __enter__(self) -> "EventProducer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        self.close()


class Pacer:
    """Sleeps so that ``tick()`` is called at most ``rate`` times per second on average."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.start = time.perf_counter()
        self.n = 0

    def tick(self) -> None:
        if not self.interval:
            return
        self.n += 1
        ahead = self.start + self.n * self.interval - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
