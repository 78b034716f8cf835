"""Whole-batch ingest: a confluent-kafka consumer that the Faust app drives from a task.

A Faust agent spends about 60-100 µs of Python per record before our code sees it (10-16 k
records/s on 2 cores, doing nothing). Reading whole fetch batches with librdkafka costs a few
µs per record, so the worker's own work (parse, fit_partial, top-N, publish) sets the pace.
Positions come from the offsets stored with the worker's state (they win over the group's),
and the group's committed offsets are only updated after a checkpoint, for lag monitoring.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from stream_app import metrics
from stream_app.deltas import kafka_positions
from stream_app.worker import Worker
from streamrec.kafka import consumer_config, end_offsets, readable
from streamrec.replay import Record
from streamrec.settings import Settings

log = logging.getLogger(__name__)

LAG_EVERY_S = 1.0
"""How often the consumer-lag gauges are refreshed."""
STALL_S = 20.0


class ConsumerStalled(RuntimeError):
    """The ingest consumer is assigned and behind, yet reads nothing: start it again."""


class BatchConsumer:
    """Subscribes to the worker's topics; ``poll_batch`` returns up to ``n`` records."""

    def __init__(self, settings: Settings, worker: Worker) -> None:
        self.settings = settings
        self.worker = worker
        self._lock = threading.Lock()
        self._closed = False
        self.consumer = Consumer(consumer_config(
            settings, settings.worker_group,
            **{"fetch.wait.max.ms": settings.fetch_wait_ms,
               "max.poll.interval.ms": 600_000,
               "queued.max.messages.kbytes": 65_536}))   # 64 MB read ahead: ~300 k events
        self.topics = [settings.topic_interactions, settings.topic_users, settings.topic_items,
                       settings.topic_released, settings.topic_control]
        self._assigned: list[TopicPartition] = []
        if settings.shards > 1:   # a shard takes its own partitions; no group join
            from stream_app.shards import shard_assignment

            self.topics.append(settings.item_deltas_topic)
            self._on_assign(self.consumer, shard_assignment(settings, self.consumer,
                                                            self.topics))
        else:
            self.consumer.subscribe(self.topics, on_assign=self._on_assign)
        self._lag_at = 0.0
        self._position, self._moved_at = -1, time.monotonic()
        self._probed_at = 0.0

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        offsets = self.worker.engine.offsets
        for tp in partitions:
            tp.offset = offsets.get(f"{tp.topic}:{tp.partition}", OFFSET_BEGINNING)
        consumer.assign(partitions)
        self._assigned = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        log.info("ingest assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in partitions])
        metrics.READY.set(1)  # only now does an event reach the model (group joined)

    def poll_batch(self, n: int, timeout: float) -> list[Record]:
        """Wait up to ``timeout`` for one record, then take whatever else is already fetched
        (up to ``n``): under light load a batch is a single event, applied at once; under
        heavy load the fetch queue is full and batches grow to ``n`` by themselves."""
        with self._lock:
            if self._closed:
                return []
            first = self.consumer.poll(timeout)
            if time.monotonic() - self._lag_at >= LAG_EVERY_S:
                self._update_lag()
                if first is None and self._stalled():
                    raise ConsumerStalled("the ingest consumer is assigned and behind, yet "
                                          f"read nothing for {STALL_S:.0f} s")
            if first is None:
                return []
            msgs = [first, *self.consumer.consume(n - 1, 0)] if n > 1 else [first]
        out: list[Record] = []
        now = time.time()
        for m in readable(msgs, "ingest"):
            _, ts = m.timestamp()
            out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                              ts / 1000.0 if ts and ts > 0 else now))
        return out

    def _update_lag(self) -> None:
        """Records per assigned partition not yet in the state: the high watermark of the
        last fetch response (librdkafka's cache, no request) minus the state's offset.
        Exported as gauges (dashboards, alerts) and kept on the worker for ``/readyz``."""
        self._lag_at = time.monotonic()
        offsets = self.worker.engine.offsets
        lag: dict[str, int] = {}
        for tp in self._assigned:
            try:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except Exception:   # no fetch response for it yet
                continue
            if high < 0:
                continue
            key = f"{tp.topic}:{tp.partition}"
            lag[key] = behind = max(0, high - offsets.get(key, 0))
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(behind)
        self.worker.lag = lag

    def _stalled(self) -> bool:
        """The state has not moved for ``STALL_S`` while this consumer polled, and a fresh
        client sees the topics' ends past it: this consumer is stuck (seen after broker
        restarts: partitions whose leader it no longer knows, so it fetches nothing; its
        own queries then fail too, which is why a second client is asked). Asks at most
        once per ``STALL_S``; a broker that answers nobody is an outage, not a stall."""
        offsets = self.worker.engine.offsets
        position = sum(offsets.values())
        now = time.monotonic()
        if position != self._position:
            self._position, self._moved_at = position, now
            return False
        if now - self._moved_at < STALL_S or now - self._probed_at < STALL_S:
            return False
        self._probed_at = now
        ends = end_offsets(self.settings, [(tp.topic, tp.partition) for tp in self._assigned])
        if ends is None:
            return False
        behind = any(end > offsets.get(f"{t}:{p}", 0) for (t, p), end in ends.items())
        if not behind:
            self._moved_at = now
        return behind

    def behind(self, records: list[Record], n: int) -> bool:
        """A backlog waits after this batch: it was full, or a partition's high watermark
        from the last fetch response (librdkafka's cache: no broker request; right on Tansu
        too, unlike its ListOffsets) is at least another full batch past its last record.
        A few records that arrived meanwhile are no backlog: their lists go out at once."""
        if len(records) >= n:
            return True
        last: dict[tuple[str, int], int] = {}
        for rec in records:
            last[(rec.topic, rec.partition)] = rec.offset
        with self._lock:
            if self._closed:
                return False
            for (topic, part), offset in last.items():
                try:
                    _, high = self.consumer.get_watermark_offsets(
                        TopicPartition(topic, part), cached=True)
                except Exception:   # no fetch response yet for it
                    continue
                if high - (offset + 1) >= n:
                    return True
        return False

    def commit(self, offsets: dict[str, int]) -> None:
        """Publish the checkpointed offsets to the group (monitoring; ours stay the truth)."""
        tps = kafka_positions(offsets)
        if tps:
            try:
                self.consumer.commit(offsets=tps, asynchronous=True)
            except Exception as exc:  # no assignment yet, rebalance in progress
                log.debug("group commit skipped: %s", exc)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.consumer.close()
