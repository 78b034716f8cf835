"""A background thread that keeps the list store equal to the ``recommendations`` topic,
minus the items each user has just interacted with (``consumers/seen.py``).

It never gives up: a broker that is not up yet, goes away or restarts, or a consumer that
fails for any reason, is retried with backoff (the API keeps serving what the store holds
meanwhile). Partitions added to the topics are picked up within
``LOOKUP_METADATA_EVERY_S``. Every list is validated before it is stored (a bad record is
counted and skipped, never served), and a list older than the stored one for its user is
skipped (lists of one user in two partitions, after partitions were added, can arrive out
of order on a re-read).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from consumers.seen import RecentSeen, event_user_item, may_list, without_items
from consumers.store import ListStore
from streamrec.kafka import consumer_config, end_offsets, readable
from streamrec.schema import validate_list
from streamrec.settings import Settings

log = logging.getLogger(__name__)

RECORDS = Counter("streamrec_lookup_records_total", "recommendation records stored")
INVALID = Counter("streamrec_lookup_invalid_records_total",
                  "recommendation records skipped: not a valid list (never stored or served)")
STALE = Counter("streamrec_lookup_stale_records_total",
                "lists skipped because the store holds a newer one for that user")
LAST_UPDATE = Gauge("streamrec_lookup_last_update_timestamp", "when the store last changed")
LIST_DELAY = Histogram("streamrec_lookup_list_delay_seconds",
                       "A list record's timestamp (when the worker published it) to when it is "
                       "stored here and served", buckets=(.0005, .001, .002, .003, .005, .0075,
                                                          .01, .015, .02, .03, .05, .1, .25,
                                                          .5, 1, 2.5, 5, 10))
SEEN_FILTERED = Counter("streamrec_lookup_seen_filtered_total",
                        "lists rewritten without items their user has just interacted with")
CONSUMER_LAG = Gauge("streamrec_lookup_consumer_lag",
                     "Records of each recommendations partition not yet in the store",
                     ["topic", "partition"])
READY = Gauge("streamrec_lookup_ready",
              "1 once the store has caught up with the recommendations topic")
RESTARTS = Counter("streamrec_lookup_consumer_restarts_total",
                   "times the lookup consumer failed and was started again")

METADATA_EVERY_S = 10.0
"""How often the consumer looks for partitions added to its topics."""
LAG_EVERY_S = 1.0
STALL_S = 15.0
MAX_BACKOFF_S = 5.0
"""Restarts of a failed consumer back off up to this: a broker that comes back is read from
within seconds."""


def from_end(consumer: Consumer, topic: str, parts: list[int]) -> list[TopicPartition]:
    """``topic``'s partitions ``parts`` positioned at their current end (the seen filter
    reads events from now on; lists published later already exclude older ones)."""
    out = []
    for p in parts:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
        out.append(TopicPartition(topic, p, max(high, 0)))
    return out


class ConsumerStalled(RuntimeError):
    """The consumer is assigned and behind, yet reads nothing: start it again."""


class LookupConsumer(threading.Thread):
    """Reads every partition of ``recommendations`` by ``assign`` (no group join: start in
    well under a second) from the offsets stored with the lists, else from the beginning."""

    def __init__(self, settings: Settings, store: ListStore) -> None:
        super().__init__(name="lookup-consumer", daemon=True)
        self.settings = settings
        self.store = store
        self._halt = threading.Event()
        self.ready = threading.Event()
        """Set once the store caught up with the topic's end as of the first assignment."""
        self.error: str | None = None
        """The last failure, cleared when the consumer runs again."""
        self.partitions: list[int] = []
        self.lag: dict[int, int] = {}
        self._targets: dict[int, int] = {}
        self._event_parts: set[int] = set()
        self._position, self._moved_at = -1, time.monotonic()
        self.seen = RecentSeen(settings.lookup_seen_users, settings.lookup_seen_per_user) \
            if settings.lookup_seen_filter else None

    def stop(self) -> None:
        self._halt.set()

    # ----------------------------------------------------------------- supervision
    def run(self) -> None:
        """Consume until stopped; any failure is logged, counted and retried with backoff."""
        delay = 0.5
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                self._session()
                return
            except Exception as exc:  # the broker is away, or anything else: never give up
                self.error = f"{type(exc).__name__}: {exc}"
                RESTARTS.inc()
                if time.monotonic() - started > 60:
                    delay = 0.5          # it ran a while: a new failure, not the same one
                log.warning("lookup consumer stopped (%s); starting it again in %.1f s "
                            "(serving the stored lists meanwhile)", self.error, delay)
                self._halt.wait(delay)
                delay = min(MAX_BACKOFF_S, delay * 2)

    def _session(self) -> None:
        conf = consumer_config(self.settings, self.settings.lookup_commit_group or
                               f"streamrec-lookup-{uuid.uuid4().hex[:8]}",
                               **{"fetch.wait.max.ms": self.settings.fetch_wait_ms,
                                  "fetch.queue.backoff.ms": 1})
        consumer = Consumer(conf)
        try:
            offsets = {str(k): v for k, v in self.store.offsets().items()}
            self._assign(consumer, offsets)
            self.error = None
            self._position, self._moved_at = -1, time.monotonic()
            checked = committed = lagged = time.monotonic()
            while not self._halt.is_set():
                first = consumer.poll(1.0)  # returns as soon as a list arrives
                if first is not None:
                    self._consume(consumer, [first, *consumer.consume(5000, 0)], offsets)
                now = time.monotonic()
                if now - lagged >= LAG_EVERY_S:
                    lagged = now
                    self._update_lag(consumer, offsets)
                if now - checked >= METADATA_EVERY_S:
                    checked = now
                    try:
                        self._add_new_partitions(consumer, offsets)
                    except KafkaException as exc:   # the broker is away: the consumer
                        log.debug("partition check skipped: %s", exc)   # itself reconnects
                if self.settings.lookup_commit_group and now - committed >= 5.0:
                    committed = now
                    self._commit(consumer, offsets)
        finally:
            consumer.close()

    # ----------------------------------------------------------------- assignment
    def _topic_partitions(self, consumer: Consumer, topic: str, wait: bool) -> list[int]:
        while not self._halt.is_set():
            md = consumer.list_topics(topic, timeout=5)   # raises while the broker is away
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                return sorted(t.partitions)
            if not wait:
                return []
            log.info("waiting for topic %s to exist", topic)
            self._halt.wait(1)
        return []

    def _assign(self, consumer: Consumer, offsets: dict[str, int]) -> None:
        topic = self.settings.topic_recommendations
        self.partitions = self._topic_partitions(consumer, topic, wait=True)
        tps = [TopicPartition(topic, p, offsets.get(str(p), OFFSET_BEGINNING))
               for p in self.partitions]
        for p in self.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            self._targets.setdefault(p, high)
        tps += self._event_partitions(consumer, self._topic_partitions(
            consumer, self.settings.topic_interactions, wait=False))
        consumer.assign(tps)
        log.info("lookup consumer assigned %s from %s", self.partitions, offsets or "beginning")

    def _event_partitions(self, consumer: Consumer, parts: list[int]) -> list[TopicPartition]:
        """Interactions partitions for the seen filter, from their end: only events from now
        on matter (lists published later already exclude older ones)."""
        if self.seen is None:
            return []
        self._event_parts |= set(parts)
        return from_end(consumer, self.settings.topic_interactions, parts)

    def _add_new_partitions(self, consumer: Consumer, offsets: dict[str, int]) -> None:
        """Partitions added to the topics since the assignment: read lists from their
        beginning, events from their end."""
        topic = self.settings.topic_recommendations
        lists = [p for p in self._topic_partitions(consumer, topic, wait=False)
                 if p not in self.partitions]
        events = []
        if self.seen is not None:
            events = [p for p in self._topic_partitions(
                consumer, self.settings.topic_interactions, wait=False)
                if p not in self._event_parts]
        if not lists and not events:
            return
        tps = [TopicPartition(topic, p, offsets.get(str(p), OFFSET_BEGINNING)) for p in lists]
        tps += self._event_partitions(consumer, events)
        consumer.incremental_assign(tps)
        self.partitions = sorted([*self.partitions, *lists])
        log.info("lookup consumer added partitions: lists %s, events %s", lists, events)

    # ----------------------------------------------------------------- progress
    def _update_lag(self, consumer: Consumer, offsets: dict[str, int]) -> None:
        """Lag per lists partition from the high watermark of the last fetch response
        (librdkafka's cache: no request, so the consumer thread never waits on one); ready
        once every partition reached the end it had when the lookup first assigned it.
        The cache stops moving when the consumer stops fetching, so a store that has not
        moved for ``STALL_S`` asks a fresh client for the topic's ends (at most once per
        ``STALL_S``): past the store, the consumer is stuck (seen after broker restarts:
        partitions whose leader it no longer knows) and the session starts again."""
        topic = self.settings.topic_recommendations
        for p in self.partitions:
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self.lag[p] = max(0, high - offsets.get(str(p), 0))
                CONSUMER_LAG.labels(topic, str(p)).set(self.lag[p])
        position = sum(offsets.values())
        now = time.monotonic()
        if position != self._position:
            self._position, self._moved_at = position, now
        elif now - self._moved_at > STALL_S:
            self._moved_at = now
            fresh = end_offsets(self.settings, [(topic, p) for p in self.partitions])
            if fresh is not None:
                behind = {p: max(0, end - offsets.get(str(p), 0)) for (_, p), end in fresh.items()}
                self.lag.update(behind)
                if any(behind.values()):
                    raise ConsumerStalled(f"{sum(behind.values())} lists waiting on {topic} "
                                          f"and none read for {STALL_S:.0f} s")
        if not self.ready.is_set() and all(offsets.get(str(p), 0) >= self._targets.get(p, 0)
                                           for p in self.partitions):
            self.ready.set()
            READY.set(1)
            log.info("lookup store caught up with %s", topic)

    def _commit(self, consumer: Consumer, offsets: dict[str, int]) -> None:
        """Publish positions under ``lookup_commit_group`` for standard lag tools."""
        tps = [TopicPartition(self.settings.topic_recommendations, int(p), off)
               for p, off in offsets.items()]
        if tps:
            try:
                consumer.commit(offsets=tps, asynchronous=True)
            except KafkaException as exc:
                log.debug("lookup commit skipped: %s", exc)

    # ----------------------------------------------------------------- records
    def _consume(self, consumer: Consumer, msgs: list, offsets: dict[str, int]) -> None:
        batch, published = self._filtered(msgs, offsets)
        if batch:
            self.store.apply(batch, offsets)
            now = time.time()
            for ts in published:
                LIST_DELAY.observe(max(0.0, now - ts))
            RECORDS.inc(len(batch))
            LAST_UPDATE.set(time.time())
        elif published:     # only skipped records: still move the stored offsets
            self.store.apply([], offsets)

    def _accepted(self, key: bytes, value: bytes | None,
                  writes: dict[bytes, bytes | None]) -> bool:
        """A valid list, not older than the one stored (or about to be) for its user."""
        if value is None:
            return True     # a tombstone deletes the user's list
        try:
            updated = validate_list(value)
        except (ValidationError, ValueError) as exc:
            INVALID.inc()
            log.warning("skipping an invalid list for %r: %s", key[:64], str(exc)[:200])
            return False
        current = writes[key] if key in writes else self.store.get_raw(key)
        if current is not None:
            try:
                if updated < orjson.loads(current).get("updated_at", 0.0):
                    STALE.inc()
                    return False
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                pass
        return True

    def _filtered(self, msgs: list, offsets: dict[str, int]
                  ) -> tuple[list[tuple[bytes, bytes | None]], list[float]]:
        """The batch's writes: lists (minus recent items of their user) in arrival order,
        plus stored lists rewritten because their user has just touched one of their items;
        and when each list was published (for the list-delay histogram)."""
        lists_topic = self.settings.topic_recommendations
        writes: dict[bytes, bytes | None] = {}
        seen = self.seen
        published: list[float] = []
        for m in readable(msgs, "lookup"):
            key = m.key()
            if m.topic() == lists_topic:
                offsets[str(m.partition())] = m.offset() + 1
                _, ts = m.timestamp()
                if ts > 0:
                    published.append(ts / 1000.0)
                value = m.value()
                if key is None or not self._accepted(key, value, writes):
                    continue
                recent = (seen.items_of(key.decode("utf-8", "replace")) if seen is not None
                          else None)
                if value is not None and recent:
                    kept = without_items(value, recent)
                    if kept is not None:
                        value = kept
                        SEEN_FILTERED.inc()
                writes.pop(key, None)  # keep arrival order: the last write wins
                writes[key] = value
            elif seen is not None:
                pair = event_user_item(m.value())
                if pair is None:
                    continue
                user, item = pair
                seen.add(user, item)
                ukey = user.encode("utf-8")
                current = writes[ukey] if ukey in writes else self.store.get(user)
                if current is not None and may_list(current, item):
                    rewritten = without_items(current, {item})
                    if rewritten is not None:
                        writes[ukey] = rewritten
                        SEEN_FILTERED.inc()
        return list(writes.items()), published
