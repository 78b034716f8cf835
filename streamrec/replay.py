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
from typing import NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streamrec.errors import BrokerUnavailable
from streamrec.kafka import consumer_config
from streamrec.settings import Settings

log = logging.getLogger(__name__)

TP = tuple[str, int]
"""(topic, partition)."""

STALL_S = 30.0
"""A replay that received nothing for this long before the end of its topics gives up."""


class Record(NamedTuple):
    """A Kafka record, broker-free: what replays, the WAL and the worker's batches carry.

    Hot paths build millions of these; unpacking (``topic, part, offset, key, value, ts =
    rec``) works as for the plain tuple it replaced."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    """Seconds: the record's own timestamp, else when it was read."""


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
        assignment, highs = _assignment(consumer, topics, start, stop)
        if not assignment:
            return
        consumer.assign(assignment)
        if progress:
            bar = _progress_bar(highs, start, desc)
        state = _Replay(assignment, highs, {tp for tp in highs if _key(tp) in stop},
                        idle_s, until_time)
        while True:
            batch = state.take(consumer.consume(chunk, timeout=0.1))
            if batch:
                if bar is not None:
                    bar.update(len(batch))
                yield batch
            if state.done(time.monotonic()):
                return
            if not batch:
                state.check_stalled(topics)
    finally:
        if bar is not None:
            bar.close()
        consumer.close()


def _key(tp: TP) -> str:
    return f"{tp[0]}:{tp[1]}"


def _assignment(consumer: Consumer, topics: list[str], start: dict[str, int],
                stop: dict[str, int]) -> tuple[list[TopicPartition], dict[TP, int]]:
    """Every partition of ``topics`` at its start offset, and where each one ends: its
    ``stop`` offset, else the high watermark the broker reports now."""
    assignment = []
    highs: dict[TP, int] = {}
    for topic in topics:
        for p in topic_partitions(consumer, topic):
            key = f"{topic}:{p}"
            assignment.append(TopicPartition(topic, p, start.get(key, OFFSET_BEGINNING)))
            try:
                _, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            except Exception as exc:
                raise BrokerUnavailable(f"cannot read offsets of {topic}: {exc}") from exc
            highs[(topic, p)] = stop[key] if key in stop else hi
    return assignment, highs


def _progress_bar(highs: dict[TP, int], start: dict[str, int], desc: str):
    from tqdm import tqdm

    total = sum(max(0, hi - start.get(_key(tp), 0)) for tp, hi in highs.items())
    return tqdm(total=total or None, desc=desc, unit="ev", unit_scale=True, leave=False,
                disable=None)


class _Replay:
    """Where a replay stands per partition, and the rule that says it is done.

    A partition is done when librdkafka reported its end (``enable.partition.eof``) at
    our position, or, at or past the high watermark taken at the start: at once if it has
    a ``stop`` offset (``bounded``), once it returned a record stamped at or after
    ``until_time``, or once it was silent for ``idle_s``."""

    def __init__(self, assignment: list[TopicPartition], highs: dict[TP, int],
                 bounded: set[TP], idle_s: float, until_time: float | None) -> None:
        self.highs, self.bounded = highs, bounded
        self.idle_s, self.until_time = idle_s, until_time
        self.position = {(tp.topic, tp.partition): max(0, tp.offset) for tp in assignment}
        self.newest: dict[TP, float] = {}          # newest record timestamp per partition
        self.last_data = time.monotonic()
        self.heard = {tp: self.last_data for tp in highs}   # when each last gave a record
        self.end_at: dict[TP, int] = {}            # where librdkafka last saw the end

    def take(self, msgs: list) -> list[Record]:
        """The records among ``msgs`` (errors logged, end-of-partition events noted,
        records past a ``stop`` offset dropped); positions move once per partition."""
        batch: list[Record] = []
        last: dict[TP, Record] = {}
        now = time.time()
        for m in msgs:
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    self.end_at[(m.topic(), m.partition())] = m.offset()
                else:
                    log.warning("replay read error: %s", m.error())
                continue
            topic, part, offset = m.topic(), m.partition(), m.offset()
            tp = (topic, part)
            if tp in self.bounded and offset >= self.highs[tp]:
                self.position[tp] = max(self.position[tp], self.highs[tp])
                continue
            _, ts = m.timestamp()
            rec = Record(topic, part, offset, m.key(), m.value(),
                         ts / 1000.0 if ts and ts > 0 else now)
            batch.append(rec)
            last[tp] = rec
        mono = time.monotonic()
        for tp, rec in last.items():     # per partition once per chunk, not per record
            self.position[tp] = rec.offset + 1
            self.newest[tp] = rec.timestamp
            self.heard[tp] = mono
        if batch:
            self.last_data = mono
        return batch

    def partition_done(self, tp: TP, now: float) -> bool:
        if tp not in self.bounded and self.end_at.get(tp) == self.position[tp]:
            return True
        if self.position[tp] < self.highs[tp]:
            return False
        if tp in self.bounded:
            return True
        if self.until_time is not None and self.newest.get(tp, 0.0) >= self.until_time:
            return True
        return now - self.heard[tp] >= self.idle_s

    def done(self, now: float) -> bool:
        return all(self.partition_done(tp, now) for tp in self.highs)

    def check_stalled(self, topics: list[str]) -> None:
        """The watchdog: nothing for ``STALL_S`` and not yet at the high watermarks."""
        reached = all(self.position[tp] >= hi for tp, hi in self.highs.items())
        if not reached and time.monotonic() - self.last_data > STALL_S:
            raise BrokerUnavailable(f"replay stalled: no records for {STALL_S:.0f} s before the "
                                    f"end of {topics}; is the broker healthy?")
