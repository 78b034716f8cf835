"""Creating the contract's topics, the same code for every broker engine."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from tenacity import Retrying, retry_if_exception, stop_after_delay, stop_never, wait_exponential

from streamrec.broker.base import wait_for_broker
from streamrec.errors import BrokerUnavailable
from streamrec.kafka import is_transient
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


def ensure_topics(settings: Settings, timeout: float = 20.0,
                  extra: dict[str, int] | None = None) -> list[str]:
    """Create every missing contract topic; return the names created now.

    Waits for the broker first (``broker_wait_s``; 0: as long as it takes), and retries
    what a starting or restarting broker answers (fenced, not controller, timeouts) with
    backoff; anything else (not authorised, a bad config) is one clear error."""
    wait_for_broker(settings.bootstrap_servers, settings.broker_wait_s,
                    settings.kafka_common())
    admin = AdminClient(settings.kafka_common())
    created: list[str] = []
    retrying = Retrying(stop=stop_after_delay(settings.broker_wait_s) if settings.broker_wait_s
                        else stop_never, wait=wait_exponential(multiplier=0.2, max=5),
                        retry=retry_if_exception(is_transient), reraise=True,
                        before_sleep=lambda st: log.warning(
                            "creating topics: %s; retrying", st.outcome.exception()))
    try:
        retrying(_create_missing, admin, settings, timeout, created, extra or {})
    except KafkaException as exc:
        hint = ("; is the broker healthy?" if is_transient(exc) else
                "; check the broker's ACLs and topic settings")
        raise BrokerUnavailable(f"could not create topics on {settings.bootstrap_servers}: "
                                f"{exc}{hint}") from None
    if created:
        log.info("created topics %s", created)
    return created


def _create_missing(admin: AdminClient, settings: Settings, timeout: float,
                    created: list[str], extra: dict[str, int]) -> None:
    """One attempt: create what is missing (the contract's topics, and ``extra``: name ->
    partitions); raise the first error that is not 'exists'."""
    existing = set(admin.list_topics(timeout=timeout).topics)
    configs = topic_configs(settings)
    wanted = {**{t: settings.partitions for t in settings.topics}, **extra}
    new = [NewTopic(t, num_partitions=n, replication_factor=settings.replication_factor,
                    config=configs.get(t, {}))
           for t, n in wanted.items() if t not in existing]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args and isinstance(exc.args[0], KafkaError) and \
                    exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
