"""librdkafka settings shared by every producer and plain consumer of streamrec."""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from streamrec.errors import BrokerUnavailable, ConfigError
from streamrec.settings import Settings

_rdkafka_log = logging.getLogger("librdkafka")
log = logging.getLogger(__name__)


LOW_LATENCY: dict[str, Any] = {"socket.nagle.disable": True, "reconnect.backoff.max.ms": 1000,
                               "metadata.recovery.strategy": "none"}
"""Every client sends small requests at once: with Nagle's algorithm on (librdkafka's
default) a small request can wait for the ACK of the previous one, which Linux delays by up
to 40 ms; a list must follow its event within a few ms (docs/latency-notes.md). And a
broker that comes back is reconnected to within a second (librdkafka backs off up to 10 s).
With ``metadata.recovery.strategy`` at librdkafka's default (``rebootstrap``), a client that
lost every broker decommissions the brokers it knew and starts again from the bootstrap
address; after a broker restart we saw producers and consumers left with partitions whose
leader was "not found in cache" and nothing produced or fetched for minutes (as in
librdkafka issue #4976). ``none`` keeps the known brokers and reconnects to them."""


def diagnostics() -> dict[str, Any]:
    """``STREAMREC_KAFKA_DEBUG`` (e.g. ``metadata,broker,topic``): librdkafka's own debug
    contexts, logged by every client of ours at DEBUG on the ``librdkafka`` logger."""
    contexts = os.environ.get("STREAMREC_KAFKA_DEBUG", "").strip()
    return {"debug": contexts} if contexts else {}


METADATA_REFRESH_MS = 10_000
"""Partitions added to a topic are seen within this (librdkafka's default is 5 minutes)."""


LIVE_LINGER_MS = 2
"""Our own producers (paced replays, control messages) wait at most 2 ms for company: one
producer sending ~1,000 events/s unbatched makes every record its own produce request and
its own fetch response, and on a shared box the worker and the lookup then fall behind.
Measured, event -> list served p50 / p99 at 1,000 ev/s from one producer (bench/latency_hops.py,
2026-12-05, medians of 5 runs): linger 2 ms 6.3 / 13.0 ms, 1 ms 6.1 / 14.6, 0.5 ms
5.8 / 22.1, 0 ms 6.1 / 46.6."""
APP_LINGER_MS = 0
"""An app's :class:`~producers.events.EventProducer` sends each event at once. The usual
app instance sends a few events a second beside many others, so its events go one per
request whatever the linger, and a linger only delays them. Measured at 1,000 ev/s in all
(the rest from a batching producer), the app instance's event -> list served p50 / p99:
linger 0 ms 4.3 / 12.9 ms, 0.5 ms 5.3 / 14.7, 1 ms 5.0 / 10.2, 2 ms 6.2 / 13.3. A single app
process sending hundreds of events a second or more passes ``LIVE_LINGER_MS`` (README)."""
BULK_LINGER_MS = 5
"""Replays at full speed (``streamrec produce`` without ``--rate``) batch instead: fewer,
larger produce requests for the broker."""


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Producer settings: murmur2 partitioning (same partition as Java/Faust producers for a
    key, so per-user order holds), small linger for freshness, idempotence for no duplicates."""
    conf: dict[str, Any] = {
        **settings.kafka_common(),
        **LOW_LATENCY,
        "partitioner": "murmur2_random",
        "linger.ms": LIVE_LINGER_MS,
        "batch.size": 1_000_000,
        "enable.idempotence": settings.idempotent_producers,
        "compression.type": "none",
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        "logger": _rdkafka_log,
        **diagnostics(),
    }
    conf.update(overrides)
    return conf


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Plain consumer settings: short session (Tansu joins take half of it), fast fetch
    back-off (librdkafka's 1 s default caps throughput near 150 k/s), manual commits."""
    conf: dict[str, Any] = {
        **settings.kafka_common(),
        **LOW_LATENCY,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 3),
        "fetch.queue.backoff.ms": 10,
        "fetch.wait.max.ms": 100,
        "enable.partition.eof": False,
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        "logger": _rdkafka_log,
        **diagnostics(),
    }
    conf.update(overrides)
    return conf


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS settings of ``kafka_common()`` as an ``ssl.SSLContext``, for clients that are
    not librdkafka (Faust's aiokafka): same CA, client certificate and hostname check."""
    ca = settings.ssl_ca_location
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=ca if ca and ca != "probe" else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"STREAMREC_SSL_CA_LOCATION={ca}: not a PEM file of CA "
                          f"certificates ({exc})") from None
    ctx.check_hostname = settings.ssl_endpoint_identification == "https"
    if settings.ssl_certificate_location and settings.ssl_key_location:
        # no password: an encrypted key fails here instead of OpenSSL asking on the terminal
        secret = settings.ssl_key_password
        password = secret.get_secret_value() if secret else (lambda: b"")
        try:
            ctx.load_cert_chain(settings.ssl_certificate_location, settings.ssl_key_location,
                                password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "cannot load the client certificate STREAMREC_SSL_CERTIFICATE_LOCATION="
                f"{settings.ssl_certificate_location} with its key STREAMREC_SSL_KEY_LOCATION="
                f"{settings.ssl_key_location} (wrong STREAMREC_SSL_KEY_PASSWORD, or not PEM? "
                f"{exc})") from None
    return ctx


_TRANSIENT_CODES = {
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT, KafkaError._WAIT_COORD, KafkaError._RESOLVE,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_CONTROLLER, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.BROKER_NOT_AVAILABLE,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NETWORK_EXCEPTION,
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.UNKNOWN_TOPIC_OR_PART,
    # KRaft right after start: "All brokers are currently fenced"
    KafkaError.INVALID_REPLICATION_FACTOR,
}


def is_transient(exc: BaseException) -> bool:
    """A Kafka error that a running or restarting broker heals by itself (unreachable,
    fenced, not leader or controller yet, timeouts): retried with backoff, never fatal."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    if isinstance(err, KafkaError):
        return err.retriable() or err.code() in _TRANSIENT_CODES
    return isinstance(exc, (TimeoutError, ConnectionError))


def broker_away(exc: BaseException) -> bool:
    """The broker is away or not ready yet: our own ``BrokerUnavailable`` or a transient
    Kafka error (:func:`is_transient`). What every "wait for the broker, then begin the step
    again" loop retries on."""
    return isinstance(exc, BrokerUnavailable) or is_transient(exc)


def replay_linger(rate: float | None) -> dict[str, float]:
    """``linger.ms`` of a replay's producer: one producer sending paced events batches a
    little (``LIVE_LINGER_MS``); at full speed more (``BULK_LINGER_MS``)."""
    return {"linger.ms": LIVE_LINGER_MS if rate else BULK_LINGER_MS}


def end_offsets(settings: Settings, partitions: list[tuple[str, int]],
                timeout: float = 5.0, admin: Any = None) -> dict[tuple[str, int], int] | None:
    """The high watermark of each (topic, partition), asked of the broker by a ListOffsets
    request; None if the broker does not answer. Without ``admin`` a fresh, short-lived
    client asks: a second opinion when a long-lived client stops seeing partition leaders
    (seen after broker restarts), so its owner can tell "the broker is away" from "this
    client is stuck"."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    if not partitions:
        return {}
    client = admin or AdminClient({**settings.kafka_common(), "logger": _rdkafka_log,
                                   "metadata.recovery.strategy": "none"})
    request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
    try:
        futures = client.list_offsets(request, request_timeout=timeout)
        return {(tp.topic, tp.partition): fut.result(timeout).offset
                for tp, fut in futures.items()}
    except Exception:   # KafkaException, a timeout: no answer
        return None


def readable(msgs: list[Message], what: str) -> list[Message]:
    """The records among consumed messages; a real read error is logged (``what`` names the
    reader), the end-of-partition notice skipped."""
    out = []
    for m in msgs:
        err = m.error()
        if err is None:
            out.append(m)
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("%s read error: %s", what, err)
    return out
