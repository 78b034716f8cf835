"""A background thread that keeps the list store equal to the ``recommendations`` topic."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from prometheus_client import Counter, Gauge

from consumers.store import ListStore
from streamrec.kafka import consumer_config
from streamrec.settings import Settings

log = logging.getLogger(__name__)

RECORDS = Counter("streamrec_lookup_records_total", "recommendation records stored")
LAST_UPDATE = Gauge("streamrec_lookup_last_update_timestamp", "when the store last changed")


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

    def stop(self) -> None:
        self._halt.set()

    def _assign(self, consumer: Consumer) -> None:
        topic = self.settings.topic_recommendations
        while not self._halt.is_set():
            md = consumer.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                break
            log.info("waiting for topic %s to exist", topic)
            time.sleep(1)
        self.partitions = sorted(t.partitions)
        stored = self.store.offsets()
        consumer.assign([TopicPartition(topic, p, stored.get(str(p), OFFSET_BEGINNING))
                         for p in self.partitions])
        log.info("lookup consumer assigned %s from %s", self.partitions, stored or "beginning")

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
                first = consumer.poll(0.2)  # returns as soon as a list arrives
                if first is None:
                    continue
                msgs = [first, *consumer.consume(5000, 0)]
                batch = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("lookup read error: %s", err)
                        continue
                    if m.key() is None:
                        continue
                    batch.append((m.key(), m.value()))
                    offsets[str(m.partition())] = m.offset() + 1
                if batch:
                    self.store.apply(batch, offsets)
                    RECORDS.inc(len(batch))
                    LAST_UPDATE.set(time.time())
        except Exception as exc:  # keep the API up and say why in /healthz
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("lookup consumer stopped")
        finally:
            consumer.close()
