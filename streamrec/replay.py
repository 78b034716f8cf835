"""Reading whole topics from given offsets up to their end: bootstrap and retrain.

"The end" is taken carefully: Tansu's ListOffsets reports a high watermark that can lag far
behind the real end after batched produce (1 for a partition holding one batch of 1,000
records), but the high watermark in its *fetch* responses is right on both brokers. So a
partition is done when librdkafka reports reaching its end (``enable.partition.eof``, from
the fetch responses) at our position. As a fallback (a broker that never reports it), a
partition at or past the ListOffsets high watermark that stays silent for ``idle_s`` counts
as done too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streamrec.errors import BrokerUnavailable
from streamrec.kafka import consumer_config
from streamrec.settings import Settings

log = logging.getLogger(__name__)

Record = tuple[str, int, int, "bytes | None", "bytes | None", float]
"""(topic, partition, offset, key, value, timestamp seconds): a Kafka record, broker-free."""


def topic_partitions(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    md = consumer.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        return []
    return sorted(t.partitions)


def read_topics(settings: Settings, topics: list[str], start: dict[str, int] | None = None,
                idle_s: float = 0.5, chunk: int = 10_000, progress: bool = False,
                desc: str = "replay", stop: dict[str, int] | None = None,
                until_time: float | None = None) -> Iterator[list[Record]]:
    """Yield chunks of records from every partition of ``topics``, from ``start`` offsets
    (``"topic:partition" -> next offset``; default: the beginning) to the end, or, with
    ``stop``, to exactly those offsets (partitions not named there: to the end).

    With ``until_time`` (epoch seconds) a partition also counts as done once it reached the
    reported high watermark and returned a record stamped at or after that time, so a
    steady stream of new events cannot keep a replay going forever, on Tansu too (whose
    high watermark can lag the real end, so an offset snapshot would stop far too early).
    """
    start = start or {}
    stop = stop or {}
    consumer = Consumer(consumer_config(settings, f"streamrec-replay-{uuid.uuid4().hex[:8]}",
                                        **{"enable.auto.offset.store": False,
                                           "enable.partition.eof": True,
                                           "fetch.wait.max.ms": 10}))
    bar = None
    try:
        assignment = []
        highs: dict[tuple[str, int], int] = {}
        for topic in topics:
            for p in topic_partitions(consumer, topic):
                off = start.get(f"{topic}:{p}", OFFSET_BEGINNING)
                assignment.append(TopicPartition(topic, p, off))
                try:
                    _, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                except Exception as exc:
                    raise BrokerUnavailable(f"cannot read offsets of {topic}: {exc}") from exc
                key = f"{topic}:{p}"
                highs[(topic, p)] = stop[key] if key in stop else hi
        if not assignment:
            return
        consumer.assign(assignment)
        total = sum(max(0, hi - (start.get(f"{t}:{p}", 0))) for (t, p), hi in highs.items())
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total or None, desc=desc, unit="ev", unit_scale=True, leave=False,
                       disable=None)
        position = {(tp.topic, tp.partition): max(0, tp.offset) for tp in assignment}
        bounded = {(t, p) for t, p in highs if f"{t}:{p}" in stop}
        newest: dict[tuple[str, int], float] = {}
        last_data = time.monotonic()
        heard = {tp: last_data for tp in highs}   # when each partition last gave a record
        end_at: dict[tuple[str, int], int] = {}   # where librdkafka last saw the end

        def partition_done(tp: tuple[str, int], now: float) -> bool:
            if tp not in bounded and end_at.get(tp) == position[tp]:
                return True
            if position[tp] < highs[tp]:
                return False
            if tp in bounded:
                return True
            if until_time is not None and newest.get(tp, 0.0) >= until_time:
                return True
            return now - heard[tp] >= idle_s

        while True:
            msgs = consumer.consume(chunk, timeout=0.1)
            batch: list[Record] = []
            last: dict[tuple[str, int], Record] = {}
            now = time.time()
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        end_at[(m.topic(), m.partition())] = m.offset()
                        continue
                    log.warning("replay read error: %s", m.error())
                    continue
                topic, part, offset = m.topic(), m.partition(), m.offset()
                tp = (topic, part)
                if tp in bounded and offset >= highs[tp]:
                    position[tp] = max(position[tp], highs[tp])
                    continue
                _, ts = m.timestamp()
                rec = (topic, part, offset, m.key(), m.value(),
                       ts / 1000.0 if ts and ts > 0 else now)
                batch.append(rec)
                last[tp] = rec
            mono = time.monotonic()
            for tp, rec in last.items():     # per partition once per chunk, not per record
                position[tp] = rec[2] + 1
                newest[tp] = rec[5]
                heard[tp] = mono
            if batch:
                last_data = mono
                if bar is not None:
                    bar.update(len(batch))
                yield batch
            if all(partition_done(tp, time.monotonic()) for tp in highs):
                return
            if batch:
                continue
            reached = all(position[tp] >= hi for tp, hi in highs.items())
            if not reached and time.monotonic() - last_data > 30:
                raise BrokerUnavailable("replay stalled: no records for 30 s before the end of "
                                        f"{topics}; is the broker healthy?")
    finally:
        if bar is not None:
            bar.close()
        consumer.close()
