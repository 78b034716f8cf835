"""The worker's Kafka edge around the engine: WAL, publishing lists, DLQ, checkpoints.

``Worker.handle(records)`` is what the Faust agent calls per micro-batch; it is synchronous
on purpose (no awaits inside), so a checkpoint never sees half a batch.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from stream_app import metrics
from stream_app.batch import BatchResult, process_records
from stream_app.engine import Engine
from stream_app.store import WorkerStore
from streamrec.errors import ModelStateError, StreamrecError
from streamrec.kafka import consumer_config, producer_config
from streamrec.replay import Record, read_topics
from streamrec.schema import FALLBACK_KEY
from streamrec.settings import Settings

log = logging.getLogger(__name__)


class Worker:
    """Owns the engine, its RocksDB store and the producer of lists and dead letters."""

    def __init__(self, settings: Settings, progress: bool = True) -> None:
        self.settings = settings
        self.progress = progress
        self.store = WorkerStore(settings.state_dir)
        self.producer = Producer(producer_config(settings,
                                                 **{"linger.ms": settings.list_linger_ms}))
        self.engine: Engine | None = None
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        self._refresh_queue: list[int] = []
        self.on_checkpoint: Callable[[dict[str, int]], None] | None = None

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
            self.bootstrap()
        self._update_gauges()
        self.commit_group_offsets()
        return self.engine

    def bootstrap(self) -> None:
        """Train a fresh model on everything already in the topics (an empty system: no-op)."""
        from stream_app.retrain import replay_into_engine, snapshot_offsets, train_engine

        s = self.settings
        snapshot = snapshot_offsets(s)
        replayed = replay_into_engine(s, progress=self.progress, until_time=time.time())
        self.engine = replayed.engine
        for key, end in snapshot.items():  # older model announcements predate this bootstrap
            if key.rpartition(":")[0] == s.topic_control and end:
                self.engine.offsets[key] = end
        for key, value, reason in replayed.invalid:
            self._publish_invalid_one(key, value, reason)
        if not len(replayed.users):
            log.info("bootstrap: no interactions yet, starting with a fresh padded model")
            if replayed.records:
                self.checkpoint()
            return
        log.info("bootstrap: %d records, %d interactions, %d users, %d items; training %d "
                 "epochs", replayed.records, len(replayed.users), len(self.engine.users),
                 len(self.engine.items), s.epochs_bootstrap)
        train_engine(s, replayed, progress=self.progress)
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
        now = time.time()
        for rec in records:
            metrics.INGEST_DELAY.observe(max(0.0, now - rec[5]))
        res = self._apply(records, wal=True)
        self.maybe_checkpoint()
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
        control = [r for r in fresh if r[0] == self.settings.topic_control]
        if control:
            fresh = [r for r in fresh if r[0] != self.settings.topic_control]
        res = process_records(engine, fresh, self.settings, train=True)
        res.skipped += len(records) - len(fresh)
        self._dirty = True
        metrics.BATCHES.inc()
        metrics.EVENTS.labels("applied").inc(res.outcome.applied)
        metrics.EVENTS.labels("duplicate").inc(res.outcome.duplicates)
        metrics.EVENTS.labels("metadata").inc(res.metadata)
        self._publish_invalid(res)
        self._publish_quarantined(res)
        self.publish_lists(res.affected_users)
        if res.outcome.positives:
            self._publish_fallback()
        self._update_gauges()
        self.producer.poll(0)
        for rec in control:
            self.engine.advance(rec[0], rec[1], rec[2])
            self.on_control(rec[4])
        return res

    # ----------------------------------------------------------------- model swap
    def on_control(self, value: bytes | None) -> None:
        """A control message; ``{"type": "model", "path": ...}`` swaps in a retrained model."""
        try:
            msg = orjson.loads(value) if value else {}
        except orjson.JSONDecodeError:
            log.warning("ignoring unreadable control message %r", value[:200] if value else value)
            return
        if isinstance(msg, dict) and msg.get("type") == "release" and self.engine.guard:
            kind, ident = msg.get("kind"), str(msg.get("id", ""))
            release = self.engine.guard.release_user if kind == "user" else \
                self.engine.guard.release_item
            log.info("guard: released %s %s (%s)", kind, ident, release(ident))
            return
        if not isinstance(msg, dict) or msg.get("type") != "model" or not msg.get("path"):
            log.warning("ignoring control message %s", str(msg)[:200])
            return
        try:
            self.swap(Path(msg["path"]))
        except StreamrecError as exc:
            metrics.SWAPS.labels("failed").inc()
            log.error("model swap from %s failed, keeping the current model: %s",
                      msg["path"], exc)

    def swap(self, path: Path) -> None:
        """Load a retrained engine, catch it up to our offsets, swap it in, refresh lists.

        Runs between micro-batches, so no event is applied to the old model after the new
        one's catch-up read it. The lookup API keeps serving the old lists until the
        background refresh publishes new ones.
        """
        t0 = time.perf_counter()
        if not path.exists():
            raise ModelStateError(f"retrained model {path} not found (is the state dir shared "
                                  "between retrain and worker?)")
        other = WorkerStore(path)
        try:
            loaded = other.load(self.settings)
        finally:
            other.close()
        if loaded is None:
            raise ModelStateError(f"{path} holds no checkpoint")
        new, _ = loaded
        old = self.engine
        data_topics = (self.settings.topic_interactions, self.settings.topic_users,
                       self.settings.topic_items, self.settings.topic_released)
        stop = {k: v for k, v in old.offsets.items() if k.rpartition(":")[0] in data_topics}
        behind = {k: v for k, v in stop.items() if new.offsets.get(k, 0) < v}
        caught = 0
        if behind:
            for chunk in read_topics(self.settings, list(data_topics), start=new.offsets,
                                     stop=stop, idle_s=0.2, chunk=self.settings.max_batch):
                process_records(new, chunk, self.settings, train=True)
                caught += len(chunk)
        for key, off in old.offsets.items():
            if key not in new.offsets or new.offsets[key] < off:
                new.offsets[key] = off
        new.guard = old.guard  # live flags and releases carry over
        self.engine = new
        self.checkpoint(full=True)
        self._refresh_queue = list(range(len(new.users)))
        metrics.SWAPS.labels("ok").inc()
        log.info("swapped in model %s (%d users, %d items), caught up %d records in %.1f s; "
                 "refreshing %d lists in the background", new.model_version, len(new.users),
                 len(new.items), caught, time.perf_counter() - t0, len(self._refresh_queue))
        shutil.rmtree(path, ignore_errors=True)

    def refresh_some(self, budget: int) -> int:
        """Publish up to ``budget`` queued lists (the rate-limited refresh after a swap)."""
        if not self._refresh_queue:
            return 0
        rows, self._refresh_queue = (self._refresh_queue[:budget],
                                     self._refresh_queue[budget:])
        n = self.publish_lists(rows)
        if not self._refresh_queue:
            self._publish_fallback()
            log.info("list refresh after the swap is complete")
        self.producer.poll(0)
        return n

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
            self._publish_invalid_one(key, value, reason)

    def _publish_quarantined(self, res: BatchResult) -> None:
        for key, value, source, reason in res.quarantined:
            metrics.QUARANTINED.labels(reason.split(":")[0]).inc()
            self._produce(self.settings.topic_quarantine, key, value,
                          headers=[("reason", reason.encode("utf-8")),
                                   ("streamrec-source", source.encode())])
        if res.quarantined:
            metrics.EVENTS.labels("quarantined").inc(len(res.quarantined))

    def _publish_invalid_one(self, key: bytes | None, value: bytes | None, reason: str) -> None:
        metrics.EVENTS.labels("invalid").inc()
        log.warning("invalid record -> %s: %s", self.settings.topic_dlq, reason)
        self._produce(self.settings.topic_dlq, key, value,
                      headers=[("error", reason.encode("utf-8"))])

    def _publish_fallback(self) -> None:
        """The popular-items list the lookup serves to users it does not know."""
        self._produce(self.settings.topic_recommendations, FALLBACK_KEY.encode(),
                      self.engine.fallback_record(self.settings.top_n))

    def publish_lists(self, user_rows: Iterable[int], chunk: int | None = None) -> int:
        """Score, rank and publish the lists of ``user_rows`` in chunks whose score matrix
        stays near 64 MB (2,048 users on ML-100K, ~160 at 100 k items: bench/scale.py
        measured the same ms per list from 256-user chunks as from 2,048-user ones)."""
        rows = sorted(set(user_rows))
        if chunk is None:
            chunk = max(16, min(2048, (16 << 20) // max(1, self.engine.model.item_capacity)))
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
        self._publish_fallback()
        self.producer.flush(30)
        log.info("published %d lists", n)
        return n

    # ----------------------------------------------------------------- state
    def checkpoint(self, full: bool = False) -> None:
        """Flush published lists, then snapshot the state (lists are never behind it)."""
        self.producer.flush(30)
        self.store.checkpoint(self.engine, full=full)
        if self.on_checkpoint is not None:
            self.on_checkpoint(dict(self.engine.offsets))
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
        if e.guard is not None:
            metrics.GUARD_FLAGGED.labels("user").set(len(e.guard.user_flags))
            metrics.GUARD_FLAGGED.labels("item").set(len(e.guard.item_flags))
        metrics.KNOWN.labels("user").set(len(e.users))
        metrics.KNOWN.labels("item").set(len(e.items))
        metrics.CAPACITY.labels("user").set(e.model.user_capacity)
        metrics.CAPACITY.labels("item").set(e.model.item_capacity)

    def close(self) -> None:
        if self.engine is not None and self._dirty:
            self.checkpoint()
        self.producer.flush(30)
        self.store.close()
