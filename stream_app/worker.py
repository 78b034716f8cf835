"""The worker's Kafka edge around the engine: WAL, publishing lists, DLQ, checkpoints.

``Worker.handle(records)`` is what the Faust agent calls per micro-batch; it is synchronous
on purpose (no awaits inside), so a checkpoint never sees half a batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from stream_app import metrics
from stream_app.batch import BatchResult, process_records
from stream_app.engine import FALLBACK_KEY, Engine
from streamrec.replay import read_topics
from stream_app.store import WorkerStore
from streamrec.replay import Record
from streamrec.kafka import consumer_config, producer_config
from streamrec.settings import Settings

log = logging.getLogger(__name__)


class Worker:
    """Owns the engine, its RocksDB store and the producer of lists and dead letters."""

    def __init__(self, settings: Settings, progress: bool = True) -> None:
        self.settings = settings
        self.progress = progress
        self.store = WorkerStore(settings.state_dir)
        self.producer = Producer(producer_config(settings))
        self.engine: Engine | None = None
        self._last_checkpoint = time.monotonic()
        self._dirty = False

    # ----------------------------------------------------------------- start
    def start(self) -> Engine:
        """Restore from the last checkpoint (+ WAL), or bootstrap from the topics."""
        loaded = self.store.load(self.settings)
        if loaded is not None:
            self.engine, wal_seq = loaded
            replayed = 0
            for _, records in self.store.wal_after(wal_seq):
                self._apply(records, wal=False)
                replayed += 1
            log.info("restored state: %d users, %d items, offsets %s, %d WAL batches replayed",
                     len(self.engine.users), len(self.engine.items), self.engine.offsets, replayed)
            if replayed:
                self.checkpoint()
        else:
            self.engine = Engine(self.settings)
            self.bootstrap()
        self._update_gauges()
        self.commit_group_offsets()
        return self.engine

    def bootstrap(self) -> None:
        """Train a fresh model on everything already in the topics (an empty system: no-op)."""
        s, engine = self.settings, self.engine
        topics = [s.topic_users, s.topic_items, s.topic_interactions]
        users, items, values = [], [], []
        n = 0
        for chunk in read_topics(s, topics, progress=self.progress, desc="bootstrap: reading"):
            res = process_records(engine, chunk, s, train=False)
            self._publish_invalid(res)
            users.append(res.users)
            items.append(res.items)
            values.append(res.values)
            n += len(chunk)
        if not n:
            log.info("bootstrap: topics are empty, starting with a fresh padded model")
            return
        u, i, v = (np.concatenate(x) if x else np.empty(0) for x in (users, items, values))
        log.info("bootstrap: %d records, %d interactions, %d users, %d items; training %d epochs",
                 n, len(u), len(engine.users), len(engine.items), s.epochs_bootstrap)
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=s.epochs_bootstrap, desc="bootstrap: training", unit="epoch", disable=None)
        engine.fit_all(s.epochs_bootstrap, u, i, v,
                       on_epoch=(lambda _e: bar.update(1)) if bar else None)
        if bar:
            bar.close()
        self.publish_all()
        self.checkpoint()

    def commit_group_offsets(self) -> None:
        """Tell the consumer group where our state is, so Faust does not re-read (and skip)
        everything from the beginning. Best effort: the skip by offset keeps it correct."""
        s, engine = self.settings, self.engine
        tps = []
        for key, off in engine.offsets.items():
            topic, _, part = key.rpartition(":")
            tps.append(TopicPartition(topic, int(part), off))
        if not tps:
            return
        c = Consumer(consumer_config(s, s.worker_group))
        try:
            c.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            log.info("could not pre-commit group offsets (%s); redelivered records are skipped",
                     exc)
        finally:
            c.close()

    # ----------------------------------------------------------------- batches
    def handle(self, records: list[Record]) -> BatchResult:
        """One micro-batch: log it, apply it, publish its lists; checkpoint when due."""
        t0 = time.perf_counter()
        res = self._apply(records, wal=True)
        if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s:
            self.checkpoint()
        metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.observe(len(records))
        return res

    def _apply(self, records: list[Record], wal: bool) -> BatchResult:
        engine = self.engine
        fresh = [r for r in records if not engine.is_applied(r[0], r[1], r[2])]
        if len(fresh) < len(records):
            metrics.EVENTS.labels("skipped").inc(len(records) - len(fresh))
        if not fresh:
            return BatchResult(skipped=len(records))
        if wal:
            self.store.append_wal(fresh)
        res = process_records(engine, fresh, self.settings, train=True)
        res.skipped += len(records) - len(fresh)
        self._dirty = True
        metrics.BATCHES.inc()
        metrics.EVENTS.labels("applied").inc(res.outcome.applied)
        metrics.EVENTS.labels("duplicate").inc(res.outcome.duplicates)
        metrics.EVENTS.labels("metadata").inc(res.metadata)
        self._publish_invalid(res)
        self.publish_lists(res.affected_users)
        if res.outcome.positives:
            self.producer.produce(self.settings.topic_recommendations, key=FALLBACK_KEY.encode(),
                                  value=engine.fallback_record(self.settings.top_n),
                                  on_delivery=self._on_delivery)
        self._update_gauges()
        self.producer.poll(0)
        return res

    # ----------------------------------------------------------------- publishing
    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            metrics.PRODUCE_ERRORS.labels(msg.topic()).inc()
            log.error("delivery to %s failed: %s", msg.topic(), err)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers,
                                      on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.05)

    def _publish_invalid(self, res: BatchResult) -> None:
        for key, value, reason in res.invalid:
            metrics.EVENTS.labels("invalid").inc()
            log.warning("invalid record -> %s: %s", self.settings.topic_dlq, reason)
            self._produce(self.settings.topic_dlq, key, value,
                          headers=[("error", reason.encode("utf-8"))])

    def publish_lists(self, user_rows: Iterable[int], chunk: int = 2048) -> int:
        rows = sorted(set(user_rows))
        n = 0
        for start in range(0, len(rows), chunk):
            for uid, value in self.engine.lists_for_rows(rows[start:start + chunk],
                                                         self.settings.top_n):
                self._produce(self.settings.topic_recommendations, uid.encode(), value)
                n += 1
        metrics.LISTS.inc(n)
        return n

    def publish_all(self) -> int:
        """Every known user's list plus the fallback (after bootstrap or a model swap)."""
        n = self.publish_lists(range(len(self.engine.users)))
        self._produce(self.settings.topic_recommendations, FALLBACK_KEY.encode(),
                      self.engine.fallback_record(self.settings.top_n))
        self.producer.flush(30)
        log.info("published %d lists", n)
        return n

    # ----------------------------------------------------------------- state
    def checkpoint(self) -> None:
        """Flush published lists, then snapshot the state (lists are never behind it)."""
        self.producer.flush(30)
        self.store.checkpoint(self.engine)
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        metrics.CHECKPOINTS.inc()

    def maybe_checkpoint(self) -> None:
        if self._dirty and time.monotonic() - self._last_checkpoint >= \
                self.settings.checkpoint_interval_s:
            self.checkpoint()

    def _update_gauges(self) -> None:
        e = self.engine
        metrics.APPLIED_TOTAL.set(e.n_applied)
        metrics.KNOWN.labels("user").set(len(e.users))
        metrics.KNOWN.labels("item").set(len(e.items))
        metrics.CAPACITY.labels("user").set(e.model.user_capacity)
        metrics.CAPACITY.labels("item").set(e.model.item_capacity)

    def close(self) -> None:
        if self.engine is not None and self._dirty:
            self.checkpoint()
        self.producer.flush(30)
        self.store.close()
