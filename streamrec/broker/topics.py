"""Creating the contract's topics, the same code for every broker engine."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.errors import BrokerUnavailable
from streamrec.settings import Settings

log = logging.getLogger(__name__)


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Per-topic configs: ``recommendations`` (and the metadata topics) are compacted.

    ``users`` and ``items`` are compacted too: their latest value per key is the metadata.
    """
    compact = {"cleanup.policy": "compact", "segment.ms": str(settings.compaction_segment_ms),
               "min.cleanable.dirty.ratio": "0.1", "min.compaction.lag.ms": "0"}
    return {settings.topic_recommendations: dict(compact),
            settings.topic_users: dict(compact),
            settings.topic_items: dict(compact)}


def ensure_topics(settings: Settings, timeout: float = 20.0) -> list[str]:
    """Create every missing contract topic; return the names created now."""
    admin = AdminClient(settings.kafka_common())
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"broker at {settings.bootstrap_servers} did not answer: {exc}; start one with "
            '"streamrec broker" or set KAFKA_BOOTSTRAP_SERVERS') from exc
    configs = topic_configs(settings)
    new = [NewTopic(t, num_partitions=settings.partitions,
                    replication_factor=settings.replication_factor, config=configs.get(t, {}))
           for t in settings.topics if t not in existing]
    if not new:
        return []
    created = []
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc):
                continue
            raise BrokerUnavailable(f"could not create topic {name!r}: {exc}") from exc
    log.info("created topics %s", created)
    return created
