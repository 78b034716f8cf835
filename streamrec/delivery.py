"""A producer that delivers what it accepted, even when librdkafka's gets stuck.

After a broker restart we saw idempotent librdkafka producers stop delivering for good:
queued records, no acknowledgement for minutes, no error (the broker answered any fresh
client within a second; see docs/reliability.md). :class:`DeliveringProducer` wraps a
confluent-kafka ``Producer``, remembers every record until it is acknowledged, and when
records wait with no acknowledgement for ``stall_s`` (default ``STALL_S``) while a fresh client reaches the
broker, replaces the stuck producer: its queued records are purged (never sent, so never
duplicated) and produced again by the new one, in their order; its in-flight requests are
left to finish or fail. The caller's delivery callback sees each record once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Producer

from streamrec.kafka import end_offsets, producer_config
from streamrec.settings import Settings

log = logging.getLogger(__name__)

STALL_S = 30.0
"""Records waiting and nothing acknowledged for this long: ask a fresh client."""
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}

Callback = Callable[[Any, Any], None]


class DeliveringProducer:
    """``produce`` / ``poll`` / ``flush`` / ``len`` like a confluent-kafka ``Producer``."""

    def __init__(self, settings: Settings, stall_s: float = STALL_S, **overrides: Any) -> None:
        self.settings = settings
        self.stall_s = stall_s
        self._conf = producer_config(settings, **overrides)
        self._producer = Producer(self._conf)
        self._retired: list[Producer] = []
        self._pending: dict[int, tuple] = {}
        self._next = 0
        self._acked_at = self._probed_at = time.monotonic()
        self.replaced = 0

    def __len__(self) -> int:
        return len(self._pending)

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                headers: list | None = None, timestamp: int = 0,
                on_delivery: Callback | None = None) -> None:
        """Queue a record; ``BufferError`` is handled (waits for room), never raised."""
        rid = self._next
        self._next += 1
        record = (topic, value, key, headers, timestamp, on_delivery)
        self._pending[rid] = record
        self._send(rid, record)

    def _send(self, rid: int, record: tuple) -> None:
        topic, value, key, headers, timestamp, _ = record
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers,
                                       timestamp=timestamp,
                                       on_delivery=lambda err, msg: self._delivered(rid, err, msg))
                return
            except BufferError:   # its queue is full: let deliveries drain, then retry
                self._producer.poll(0.05)

    def _delivered(self, rid: int, err: Any, msg: Any) -> None:
        if err is not None and err.code() in _PURGED and rid in self._pending:
            self._send(rid, self._pending[rid])   # purged from a stuck producer: again
            return
        record = self._pending.pop(rid, None)
        if err is None:
            self._acked_at = time.monotonic()
        if record is not None and record[5] is not None:
            record[5](err, msg)

    def poll(self, timeout: float = 0) -> int:
        """Serve delivery callbacks (and those of a replaced producer), then :meth:`watch`."""
        served = self._producer.poll(timeout)
        for old in list(self._retired):
            served += old.poll(0)
            if not len(old):
                self._retired.remove(old)
        self.watch()
        return served

    def flush(self, timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` for every record; returns how many are still waiting."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            self.poll(min(0.1, max(0.0, deadline - time.monotonic())))
        return len(self._pending)

    def watch(self) -> None:
        """Replace a stuck producer (see the module's docstring); cheap when nothing waits."""
        now = time.monotonic()
        if not self._pending or now - self._acked_at < self.stall_s or \
                now - self._probed_at < self.stall_s:
            return
        self._probed_at = now
        topics = sorted({record[0] for record in self._pending.values()})
        if end_offsets(self.settings, [(t, 0) for t in topics]) is None:
            return   # the broker answers nobody: an outage; librdkafka retries by itself
        log.warning("producer: %d records waiting, none acknowledged for %.0f s, although the "
                    "broker answers; replacing the producer", len(self._pending),
                    now - self._acked_at)
        old, self._producer = self._producer, Producer(self._conf)
        self._acked_at = now
        self.replaced += 1
        old.purge(in_queue=True, in_flight=False, blocking=False)
        old.poll(0)          # the purged records' callbacks: produced again, in order
        if len(old):
            self._retired.append(old)
