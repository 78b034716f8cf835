"""A background thread that keeps the list store equal to the ``recommendations`` topic,
minus the items each user has just interacted with (``consumers/seen.py``)."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from consumers.seen import RecentSeen, event_user_item, may_list, without_items
from consumers.store import ListStore
from streamrec.kafka import consumer_config, readable
from streamrec.settings import Settings

log = logging.getLogger(__name__)

RECORDS = Counter("streamrec_lookup_records_total", "recommendation records stored")
LAST_UPDATE = Gauge("streamrec_lookup_last_update_timestamp", "when the store last changed")
LIST_DELAY = Histogram("streamrec_lookup_list_delay_seconds",
                       "A list record's timestamp (when the worker published it) to when it is "
                       "stored here and served", buckets=(.0005, .001, .002, .003, .005, .0075,
                                                          .01, .015, .02, .03, .05, .1, .25,
                                                          .5, 1, 2.5, 5, 10))
SEEN_FILTERED = Counter("streamrec_lookup_seen_filtered_total",
                        "lists rewritten without items their user has just interacted with")


class LookupConsumer(threading.Thread):
    """Reads every partition of ``recommendations`` by ``assign`` (no group join: start in
    well under a second) from the offsets stored with the lists, else from the beginning."""

    def __init__(self, settings: Settings, store: ListStore) -> None:
        super().__init__(name="lookup-consumer", daemon=True)
        self.settings = settings
        self.store = store
        self._halt = threading.Event()
        self.ready = threading.Event()
        self.error: str | None = None
        self.partitions: list[int] = []
        self.seen = RecentSeen(settings.lookup_seen_users, settings.lookup_seen_per_user) \
            if settings.lookup_seen_filter else None

    def stop(self) -> None:
        self._halt.set()

    def _partitions(self, consumer: Consumer, topic: str) -> list[int]:
        while not self._halt.is_set():
            md = consumer.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                return sorted(t.partitions)
            log.info("waiting for topic %s to exist", topic)
            time.sleep(1)
        return []

    def _assign(self, consumer: Consumer) -> None:
        topic = self.settings.topic_recommendations
        self.partitions = self._partitions(consumer, topic)
        stored = self.store.offsets()
        tps = [TopicPartition(topic, p, stored.get(str(p), OFFSET_BEGINNING))
               for p in self.partitions]
        if self.seen is not None:
            # Only events from now on matter: lists published later already exclude older
            # ones. Start at the reported end (on Tansu it can be a little before the end,
            # which only re-reads a few events).
            events = self.settings.topic_interactions
            for p in self._partitions(consumer, events):
                _, high = consumer.get_watermark_offsets(TopicPartition(events, p), timeout=5)
                tps.append(TopicPartition(events, p, max(high, 0)))
        consumer.assign(tps)
        log.info("lookup consumer assigned %s from %s", self.partitions, stored or "beginning")

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
                if key is None:
                    continue
                value = m.value()
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

    def run(self) -> None:
        conf = consumer_config(self.settings, f"streamrec-lookup-{uuid.uuid4().hex[:8]}",
                               **{"fetch.wait.max.ms": self.settings.fetch_wait_ms,
                                  "fetch.queue.backoff.ms": 1})
        consumer = Consumer(conf)
        try:
            self._assign(consumer)
            self.ready.set()
            offsets = {str(k): v for k, v in self.store.offsets().items()}
            while not self._halt.is_set():
                first = consumer.poll(1.0)  # returns as soon as a list arrives
                if first is None:
                    continue
                msgs = [first, *consumer.consume(5000, 0)]
                batch, published = self._filtered(msgs, offsets)
                if batch:
                    self.store.apply(batch, offsets)
                    now = time.time()
                    for ts in published:
                        LIST_DELAY.observe(max(0.0, now - ts))
                    RECORDS.inc(len(batch))
                    LAST_UPDATE.set(time.time())
        except Exception as exc:  # keep the API up and say why in /healthz
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("lookup consumer stopped")
        finally:
            consumer.close()
