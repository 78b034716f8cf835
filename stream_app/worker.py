"""The worker's Kafka edge around the engine: WAL, publishing lists, DLQ, checkpoints.

``Worker.handle(records)`` is what the Faust agent calls per micro-batch; it is synchronous
on purpose (no awaits inside), so a checkpoint never sees half a batch.

Lists follow load. A micro-batch marks the users it touched as *pending*; pending lists are
published oldest first, all of them as soon as the worker has caught up with its input, and
under load (a backlog of records waits) only once they have waited as long as the input
lags (at most ``list_max_delay_s``), so several events of a user in that time cost one list
instead of several and the model keeps learning at full speed. Publishing yields to new
events after ``list_slice_s``. Checkpoints are captured
between micro-batches and written by a background thread (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from confluent_kafka import Consumer, KafkaException

from stream_app import metrics
from stream_app.batch import BatchResult, process_records
from stream_app.deltas import (CUT_TOPIC, DeltaBuffer, apply_delta, kafka_positions,
                                parse_delta, sign_value)
from stream_app.engine import Engine
from stream_app.store import WorkerStore
from streamrec.control import ModelMessage, ReleaseMessage, parse_control, retrain_path
from streamrec.delivery import DeliveringProducer
from streamrec.errors import BrokerUnavailable, InvalidEvent, ModelStateError, StreamrecError
from streamrec.kafka import consumer_config
from streamrec.replay import Record, read_topics, topic_partitions
from streamrec.schema import FALLBACK_KEY
from streamrec.settings import Settings

log = logging.getLogger(__name__)

STALL_S = 15.0
"""No list acknowledged for this long, records in flight, the broker answering a fresh
client: the producer is stuck and is replaced (:class:`~streamrec.delivery.DeliveringProducer`,
watched by :meth:`Worker.watch_producer`)."""


class Worker:
    """Owns the engine, its RocksDB store and the producer of lists and dead letters."""

    def __init__(self, settings: Settings, progress: bool = True) -> None:
        self.settings = settings
        self.progress = progress
        self.store = WorkerStore(settings.state_dir)
        self.producer = DeliveringProducer(settings, stall_s=STALL_S,
                                           **{"linger.ms": settings.list_linger_ms})
        self.engine: Engine | None = None
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        self._refresh_queue: list[int] = []
        self._pending: dict[int, float] = {}     # user row -> when its list fell behind
        self._pending_ts: dict[int, float] = {}  # user row -> oldest record time it lacks
        self._in_flight: dict[bytes, int] = {}   # list key -> lists produced, not yet acked
        self._fallback_dirty = False
        self._last_fallback = 0.0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._writing: Future | None = None
        self._writing_offsets: dict[str, int] = {}
        self._force_full = False
        self._snapshot_s = 0.0
        self._write_s = 0.0
        self._list_s = 1e-4                      # seconds per list (moving average)
        self.on_checkpoint: Callable[[dict[str, int]], None] | None = None
        self._key = settings.control_key.get_secret_value() if settings.control_key else None
        """HMAC key of control messages and item deltas (None: unsigned accepted)."""
        self.sharded = settings.shards > 1       # docs/scaling.md, "Sharded workers"
        self._outbox: dict[int, bytes] = {}      # own deltas produced, not yet acknowledged
        self._fit_due = False    # the last batch's LightFM step waits for its lists
        self._last_cut = time.monotonic()
        self.lag: dict[str, int] | None = None   # records behind per partition (batch ingest)

    # ----------------------------------------------------------------- start
    def start(self) -> Engine:
        """Restore from the last checkpoint (+ WAL), or bootstrap from the topics."""
        loaded = self.store.load(self.settings)
        if loaded is not None:
            self.engine, wal_seq = loaded
            if self.sharded:   # capture what the replayed events add; the cuts in the WAL
                self._outbox = self.store.outbox()       # empty it where they did
                self.engine.cooc.capture = DeltaBuffer()
            replayed = 0
            for _, records in self.store.wal_after(wal_seq):
                self._apply(records, wal=False)
                replayed += 1
            self._mark(self.store.pending_rows())
            log.info("restored state: %d users, %d items, offsets %s, %d WAL batches replayed, "
                     "%d lists to republish", len(self.engine.users), len(self.engine.items),
                     self.engine.offsets, replayed, len(self._pending))
            self.publish_due(backlog=False, budget_s=float("inf"))
            for seq, value in sorted(self._outbox.items()):
                self._produce_delta(seq, value)
            if replayed:
                self.checkpoint()
        else:
            self.bootstrap()   # sharded: its users' counts captured, cut at its checkpoint
            if self.sharded and self.engine.cooc.capture is None:
                self.engine.cooc.capture = DeltaBuffer()
        self._update_gauges()
        self.commit_group_offsets()
        return self.engine

    def bootstrap(self) -> None:
        """Train a fresh model on everything already in the topics (an empty system: no-op)."""
        from stream_app.retrain import replay_into_engine, snapshot_offsets, train_engine

        s = self.settings
        if self.sharded:
            self._check_first_life()
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
            if replayed.records or self.sharded:   # a shard: a checkpoint before any delta
                self.checkpoint()
            return
        log.info("bootstrap: %d records, %d interactions, %d users, %d items; training %d "
                 "epochs", replayed.records, len(replayed.users), len(self.engine.users),
                 len(self.engine.items), s.epochs_bootstrap)
        train_engine(s, replayed, progress=self.progress)
        if self.sharded and s.shard_bootstrap == "all":
            from stream_app.shards import own_share

            self.engine = own_share(replayed.engine, replayed.users, s,
                                    self._partitions(s.topic_interactions))
            log.info("bootstrap: shard %d keeps %d of the %d users", s.shard,
                     len(self.engine.users), len(replayed.engine.users))
        self.publish_all()
        self.checkpoint()

    def _check_first_life(self) -> None:
        """A bootstrapping shard shares its users' counts as its first deltas (the others'
        come from the deltas topic, from its beginning). A shard that shared deltas before
        has lost its state dir: the other shards hold its counts already, so bootstrapping
        it again would count them twice. Refuse, say what to do."""
        s = self.settings
        mine = str(s.shard).encode()
        for chunk in read_topics(s, [s.item_deltas_topic], idle_s=0.2):
            if any(rec.key == mine for rec in chunk):
                raise ModelStateError(
                    f"shard {s.shard} has no state in {s.state_dir} but shared item deltas "
                    f"before (topic {s.item_deltas_topic}): its state dir was lost. Restore it "
                    "from a backup, or rebuild every shard: stop the workers, delete every "
                    f"{Path(s.state_dir).parent}/shard-* and the topic {s.item_deltas_topic}, "
                    "start them again")

    def _partitions(self, topic: str) -> int:
        c = Consumer(consumer_config(self.settings, "streamrec-metadata"))
        try:
            parts = topic_partitions(c, topic)
        finally:
            c.close()
        if not parts:
            raise BrokerUnavailable(f"topic {topic} not available yet")
        return len(parts)

    def commit_group_offsets(self) -> None:
        """Tell the consumer group where our state is, so Faust does not re-read (and skip)
        everything from the beginning. Best effort: the skip by offset keeps it correct."""
        s, engine = self.settings, self.engine
        tps = kafka_positions(engine.offsets)
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
    def handle(self, records: list[Record], backlog: bool = False) -> BatchResult:
        """One micro-batch: log it, apply it, publish the lists that are due; checkpoint
        when due. ``backlog``: a backlog of records waits behind this batch, so the lists of
        the users it touched may wait as long as the input is behind (at most
        ``list_max_delay_s``) and coalesce."""
        t0 = time.perf_counter()
        now = time.time()
        step = max(1, len(records) // 64)   # a systematic sample keeps the histogram cheap
        for rec in records[::step]:
            metrics.INGEST_DELAY.observe(max(0.0, now - rec.timestamp))
        oldest = min(rec.timestamp for rec in records)
        res = self._apply(records, wal=True, oldest=oldest)
        lag = max(0.0, now - oldest) if backlog else 0.0
        try:
            self.publish_due(backlog, lag_s=lag)
        finally:
            self._fit_after_lists()
        self.maybe_cut()
        self.maybe_checkpoint()
        metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.observe(len(records))
        return res

    def _apply(self, records: list[Record], wal: bool, oldest: float | None = None
               ) -> BatchResult:
        engine = self.engine
        fresh = [r for r in records if not engine.is_applied(r.topic, r.partition, r.offset)]
        if len(fresh) < len(records):
            metrics.EVENTS.labels("skipped").inc(len(records) - len(fresh))
        if not fresh:
            return BatchResult(skipped=len(records))
        if wal:
            self.store.append_wal(fresh)
        s = self.settings
        control = [r for r in fresh if r.topic == s.topic_control]
        if control:
            fresh = [r for r in fresh if r.topic != s.topic_control]
        if self.sharded:
            fresh = self._apply_shared(fresh)
        # live batches (not a replay, no control message that may checkpoint or swap):
        # with list_before_fit, the LightFM step waits until the batch's lists are sent
        later = wal and not control and self.settings.list_before_fit
        res = process_records(engine, fresh, self.settings, train=not later)
        self._fit_due = later and res.outcome.applied > 0
        res.skipped += len(records) - len(fresh)
        self._dirty = True
        metrics.BATCHES.inc()
        metrics.EVENTS.labels("applied").inc(res.outcome.applied)
        metrics.EVENTS.labels("duplicate").inc(res.outcome.duplicates)
        metrics.EVENTS.labels("metadata").inc(res.metadata)
        self._publish_invalid(res)
        self._publish_quarantined(res)
        self._mark(res.affected_users, oldest)
        if res.outcome.positives:
            self._fallback_dirty = True
        self._update_gauges()
        self.producer.poll(0)
        for rec in control:
            self.engine.advance(rec.topic, rec.partition, rec.offset)
            self.on_control(rec.key, rec.value)
        return res

    def _fit_after_lists(self) -> None:
        """The LightFM step of the batch whose lists just went out (``list_before_fit``;
        the engine still holds that batch's arrays). The state after it equals training
        first (building lists changes no parameter); a crash before it loses nothing: the
        WAL replays the whole batch, trained."""
        if self._fit_due:
            self._fit_due = False
            self.engine.fit_batch(*self.engine.last_batch_arrays)

    # ----------------------------------------------------------------- sharded workers
    def _apply_shared(self, records: list[Record]) -> list[Record]:
        """Apply this shard's own cuts (WAL replay) and other shards' item deltas; return
        the other records (:mod:`stream_app.deltas`)."""
        s, engine = self.settings, self.engine
        rest = []
        for rec in records:
            if rec.topic == CUT_TOPIC:
                self._apply_cut(rec)
            elif rec.topic == s.item_deltas_topic:
                engine.advance(rec.topic, rec.partition, rec.offset)
                try:
                    delta = parse_delta(rec.value, self._key)
                except InvalidEvent as exc:
                    metrics.DELTAS.labels("refused").inc()
                    self._publish_invalid_one(rec.key, rec.value, exc.reason)
                    continue
                if delta.shard == s.shard:
                    continue
                applied = apply_delta(engine, delta)
                metrics.DELTAS.labels("applied" if applied else "duplicate").inc()
                self._dirty = True
            else:
                rest.append(rec)
        return rest

    def maybe_cut(self) -> None:
        """Every ``delta_interval_s``: share what this shard's events added (see
        :meth:`cut`)."""
        if self.sharded and time.monotonic() - self._last_cut >= self.settings.delta_interval_s:
            self.cut()

    def cut(self, produce: bool = True) -> list[Record]:
        """Turn the captured changes into the next deltas: logged in the WAL first (a replay
        empties the capture at the same place), then produced (``produce``; else the caller
        produces them); kept in the outbox until the broker acknowledges them."""
        self._last_cut = time.monotonic()
        capture = self.engine.cooc.capture if self.sharded else None
        if not capture:
            return []
        shard = self.settings.shard
        seq = self.engine.offsets.get(Engine.tp_key(CUT_TOPIC, shard), 0)
        now = time.time()
        recs = [Record(CUT_TOPIC, shard, seq + k, None, value, now)
                for k, value in enumerate(capture.encode(self.engine.items, shard, seq))]
        self.store.append_wal(recs)
        for rec in recs:
            self._apply_cut(rec, produce)
        self._dirty = True
        return recs

    def _apply_cut(self, rec: Record, produce: bool = True) -> None:
        self.engine.advance(rec.topic, rec.partition, rec.offset)
        self.engine.cooc.capture.clear()
        self._outbox[rec.offset] = rec.value
        if produce:
            self._produce_delta(rec.offset, rec.value)

    def _produce_delta(self, seq: int, body: bytes) -> None:
        s = self.settings

        def delivered(err, msg) -> None:
            if err is None:
                self._outbox.pop(seq, None)
                metrics.DELTAS.labels("produced").inc()
            else:
                self._on_delivery(err, msg)
                self._produce_delta(seq, body)

        self.producer.produce(s.item_deltas_topic, key=str(s.shard).encode(),
                              value=sign_value(body, self._key), on_delivery=delivered)

    # ----------------------------------------------------------------- lists that follow load
    def _mark(self, rows: Iterable[int], record_ts: float | None = None) -> None:
        """These users' lists are behind their events (first time counts: FIFO order);
        ``record_ts``: the oldest record time among those events (event -> list metric)."""
        now = time.monotonic()
        pending, stamps = self._pending, self._pending_ts
        for r in rows:
            if r not in pending:
                pending[r] = now
                if record_ts is not None:
                    stamps[r] = record_ts
        metrics.LISTS_PENDING.set(len(pending))

    def idle_timeout(self, longest: float) -> float:
        """How long the ingest loop may wait for records before lists are due again: 0
        while lists are pending, until the fallback is due when only it waits."""
        if self._pending:
            return 0.0
        if self._fallback_dirty:
            due = self._last_fallback + self.settings.fallback_interval_s - time.monotonic()
            return min(longest, max(0.0, due))
        return longest

    def publish_due(self, backlog: bool, budget_s: float | None = None,
                    lag_s: float | None = None) -> int:
        """Publish pending lists oldest first: all of them when caught up; under load
        (``backlog``) only those that waited as long as the input lags (``lag_s``: how far
        behind its oldest record the batch was; lists need not be fresher than the events
        they reflect), at most ``list_max_delay_s``; for at most ``budget_s`` (default
        ``list_slice_s``) so new events are read in between. Returns lists sent."""
        s = self.settings
        start = time.monotonic()
        budget = s.list_slice_s if budget_s is None else budget_s
        wait = s.list_max_delay_s if lag_s is None else min(s.list_max_delay_s, lag_s)
        cutoff = start - wait if backlog else float("inf")
        # a chunk takes at most half the slice, so the slice holds whatever a list costs
        chunk = max(16, min(self.engine.list_chunk(), int(0.5 * min(budget, 1.0) / self._list_s)))
        pending = self._pending
        sent = 0
        while pending:
            rows = []
            for r, since in pending.items():
                if since > cutoff or len(rows) == chunk:
                    break
                rows.append(r)
            if not rows:
                break
            wall = time.time()
            for r in rows:
                metrics.LIST_WAIT.observe(start - pending.pop(r))
                stamp = self._pending_ts.pop(r, None)
                if stamp is not None:
                    metrics.EVENT_TO_LIST.observe(max(0.0, wall - stamp))
            t0 = time.monotonic()
            sent += self.publish_lists(rows, chunk=chunk)
            self._list_s = 0.8 * self._list_s + 0.2 * (time.monotonic() - t0) / len(rows)
            if time.monotonic() - start >= budget:
                break
        if self._fallback_dirty and start - self._last_fallback >= s.fallback_interval_s:
            self._publish_fallback()
        metrics.LISTS_PENDING.set(len(pending))
        if sent:
            self.producer.poll(0)
        return sent

    # ----------------------------------------------------------------- model swap
    def on_control(self, key: bytes | None, value: bytes | None) -> None:
        """An operator message (:mod:`streamrec.control`): ``model`` swaps in a retrained
        model, ``release`` lifts the guard on a user or item. A message that is invalid,
        unsigned or forged (with ``control_key`` set), or names a model outside
        ``STATE_DIR/retrain/``, goes to the dead-letter topic and is counted; the worker
        carries on. Nothing outside the state dir is ever created or deleted."""
        try:
            msg = parse_control(value, self._key)
            if isinstance(msg, ModelMessage):
                path = retrain_path(self.settings.state_dir, msg.path)
        except InvalidEvent as exc:
            metrics.CONTROL_REFUSED.inc()
            self._publish_invalid_one(key, value, f"{self.settings.topic_control}: "
                                                  f"{exc.reason}")
            return
        if isinstance(msg, ReleaseMessage):
            if self.engine.guard is not None:
                release = self.engine.guard.release_user if msg.kind == "user" else \
                    self.engine.guard.release_item
                log.info("guard: released %s %s (%s)", msg.kind, msg.id, release(msg.id))
            return
        try:
            self.swap(path)
        except StreamrecError as exc:
            metrics.SWAPS.labels("failed").inc()
            log.error("model swap from %s failed, keeping the current model: %s", path, exc)

    def swap(self, path: Path) -> None:
        """Load a retrained engine, catch it up to our offsets, swap it in, refresh lists.

        Runs between micro-batches, so no event is applied to the old model after the new
        one's catch-up read it. The lookup API keeps serving the old lists until the
        background refresh publishes new ones.
        """
        t0 = time.perf_counter()
        if self.sharded:
            raise ModelStateError("model swaps are not supported with sharded workers yet: "
                                  "each shard retrains from the topics when its state dir is "
                                  "deleted (docs/scaling.md)")
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
        self._pending, self._pending_ts = (
            {row: t for row, t in ((new.users.get(old.users.id_of(r)), t)
                                   for r, t in rows.items()) if row is not None}
            for rows in (self._pending, self._pending_ts))
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

    def _on_record_delivery(self, err, msg, record: tuple) -> None:
        """A dead letter or quarantined event: on failure it is produced again (it was taken
        off its input topic already; the DLQ and the quarantine must not lose it)."""
        self._on_delivery(err, msg)
        if err is not None:
            self._produce(*record)

    def _on_list_delivery(self, err, msg) -> None:
        """A list reached the topic, or failed: then its user is pending again."""
        key = msg.key()
        left = self._in_flight.pop(key, 1) - 1
        if left > 0:
            self._in_flight[key] = left
        if err is None:
            return
        self._on_delivery(err, msg)
        if key == FALLBACK_KEY.encode():
            self._fallback_dirty = True
            return
        row = self.engine.users.get(key.decode("utf-8", "replace"))
        if row is not None:
            self._mark((row,))

    def _unconfirmed(self) -> set[int]:
        """User rows whose lists may not have reached the topic yet: pending ones, and
        those produced but not yet acknowledged (stored with a checkpoint, republished
        after a restart; so a checkpoint never waits for the broker)."""
        self.producer.poll(0)
        users = self.engine.users
        rows = set(self._pending)
        for key in list(self._in_flight):
            row = users.get(key.decode("utf-8", "replace"))
            if row is not None:
                rows.add(row)
        return rows

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list | None = None) -> None:
        is_list = topic == self.settings.topic_recommendations
        if is_list:
            callback = self._on_list_delivery
        else:
            record = (topic, key, value, headers)
            callback = lambda err, msg: self._on_record_delivery(err, msg, record)  # noqa: E731
        self.producer.produce(topic, key=key, value=value, headers=headers,
                              on_delivery=callback)   # waits for room when the queue is full
        if is_list:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def watch_producer(self) -> None:
        """Serve delivery callbacks, and replace the producer if it is stuck (seen after
        broker restarts: partitions whose leader it no longer knows): its queued lists, dead
        letters and quarantined events are produced again by the new one
        (:class:`~streamrec.delivery.DeliveringProducer`). Called by a timer, so an idle
        worker's stuck producer is found too."""
        self.producer.poll(0)

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
        """The popular-items list the lookup serves to users it does not know (at most
        every ``fallback_interval_s``: it changes slowly, and each one is a record)."""
        self._produce(self.settings.topic_recommendations, FALLBACK_KEY.encode(),
                      self.engine.fallback_record(self.settings.top_n))
        self._fallback_dirty = False
        self._last_fallback = time.monotonic()

    def publish_lists(self, user_rows: Iterable[int], chunk: int | None = None) -> int:
        """Score, rank and publish the lists of ``user_rows`` now, in chunks of
        :meth:`Engine.list_chunk` users (a ~64 MB score matrix)."""
        rows = sorted(set(user_rows))
        if chunk is None:
            chunk = self.engine.list_chunk()
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
        """Snapshot and write the state now. Lists are never behind it: those pending or
        not yet acknowledged are stored with it and republished after a restart."""
        self._finish_write(wait=True)
        cuts = self.cut(produce=False)   # produced once stored: a shard that bootstrapped
        self.producer.flush(30)          # shares nothing before it has a checkpoint
        self.store.checkpoint(self.engine, full=full or self._force_full,
                              pending=self._unconfirmed(), outbox=dict(self._outbox))
        for rec in cuts:
            self._produce_delta(rec.offset, rec.value)
        self._force_full = False
        self._dirty = False     # written synchronously: everything applied is in it
        self._checkpointed(dict(self.engine.offsets))

    def maybe_checkpoint(self) -> None:
        """Every ``checkpoint_interval_s``: capture a snapshot between micro-batches (a copy
        of the model arrays) and let the background writer store it. The event loop waits
        neither for the files and their fsync (30-100 ms, up to seconds when the disk is
        busy: the old p99 of freshness) nor for the broker to acknowledge lists."""
        if self._writing is not None:
            if not self._writing.done():
                return
            self._finish_write()
        if not self._dirty or time.monotonic() - self._last_checkpoint < self._interval:
            return
        t0 = time.monotonic()
        self.cut()   # a checkpoint holds no uncut changes (the WAL before it is dropped)
        snap = self.store.snapshot(self.engine, full=self._force_full,
                                   pending=self._unconfirmed(), outbox=dict(self._outbox))
        self._force_full = False
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        self._snapshot_s = self._last_checkpoint - t0
        metrics.CHECKPOINT_SECONDS.labels("snapshot").observe(self._snapshot_s)
        self._writing_offsets = snap.offsets
        self._writing = self._writer.submit(self._timed_write, snap)

    def _timed_write(self, snap) -> None:
        t0 = time.monotonic()
        self.store.write(snap)
        self._write_s = time.monotonic() - t0
        metrics.CHECKPOINT_SECONDS.labels("write").observe(self._write_s)

    @property
    def _interval(self) -> float:
        """``checkpoint_interval_s``, stretched so checkpoints stay cheap as the state grows:
        the snapshot (on the event loop) at most ~5 % of the time, the background write
        (disk, and the GIL it takes) at most half (a 1 M-user model is ~0.6 GB a write)."""
        return max(self.settings.checkpoint_interval_s, 20 * self._snapshot_s,
                   2 * self._write_s)

    def _finish_write(self, wait: bool = False) -> None:
        """Account for the background write: on failure the next checkpoint is full (the
        snapshot had taken the engine's change sets), and the state stays dirty."""
        job, self._writing = self._writing, None
        if job is None:
            return
        try:
            job.result(timeout=None if wait else 0)
        except Exception as exc:  # disk full, permissions: keep running, say what to do
            self._force_full = True
            self._dirty = True
            metrics.CHECKPOINT_ERRORS.inc()
            log.error("checkpoint write failed (%s); the next one rewrites the whole state. "
                      "Check free space and permissions of %s", exc, self.store.root)
            return
        self._checkpointed(self._writing_offsets)

    def _checkpointed(self, offsets: dict[str, int]) -> None:
        """A checkpoint of ``offsets`` is durable. (Whether the state is still dirty is
        not decided here: batches applied while a background write ran are not in it.)"""
        if self.on_checkpoint is not None:
            self.on_checkpoint(dict(offsets))
        self._last_checkpoint = time.monotonic()
        metrics.CHECKPOINTS.inc()

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

    def close(self, checkpoint: bool = True) -> None:
        """Publish what is pending (up to 10 s), checkpoint, stop the writer. After a crash
        (``checkpoint=False``) the engine may hold half a batch: nothing more is published
        or checkpointed (the background write in flight, a consistent snapshot, finishes);
        the next start restores the last checkpoint and replays the WAL."""
        if self.engine is not None and checkpoint:
            self.publish_due(backlog=False, budget_s=10.0)
            if self._dirty or self._writing is not None or self._pending:
                self.checkpoint()
        self._writer.shutdown(wait=True)
        if checkpoint:
            self.producer.flush(30)
        self.store.close()

    def readiness(self) -> tuple[bool, dict]:
        """For ``/readyz``: streaming, and behind its input by at most one micro-batch."""
        streaming = metrics.READY._value.get() == 1   # noqa: SLF001 - the gauge is the truth
        lag = self.lag
        total = sum(lag.values()) if lag is not None else None
        if total is None:   # batch ingest measures its lag (within a second of assignment)
            ok = streaming and self.settings.ingest == "agent"
        else:
            ok = streaming and total <= self.settings.max_batch
        return ok, {"streaming": streaming, "lag": total, "lists_pending": len(self._pending)}
