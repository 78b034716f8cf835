"""Mode B of the read side: lookups that share the partitions of ``recommendations``.

``STREAMREC_LOOKUP_MODE=partitioned``. Every replica joins the consumer group
``lookup_group`` with ``subscribe()`` (cooperative-sticky assignment: a rebalance moves only
the partitions that must move), stores only the lists of its partitions, and answers a
request for a user of another replica's partition by forwarding it there: the
interactive-queries pattern of Kafka Streams, done by hand.

- **Which partition holds a user**: ``murmur2(user id) % partitions`` (``consumers/
  partitioner.py``), as every producer of ours partitions (``partitioner=murmur2_random``).
- **Who owns it**: each replica publishes ``{"url", "partitions", "member_id",
  "assignment", ...}`` under its URL to the small compacted topic ``lookup_members_topic``
  on every assignment change (and a tombstone when it leaves), and reads that topic from
  the beginning. The group's own member metadata is not exposed by librdkafka's Python
  client, and neither is the group generation, so the claims are ordered by their offset in
  that one-partition topic: a partition belongs to the replica whose latest record claims
  it (a new owner publishes after it is assigned, so it supersedes a dead owner's record).
- **On assignment** a partition is *restoring*: it is read from the offset stored with the
  lists in this replica's RocksDB if it held the partition before (revoked partitions are
  kept, marked not owned, with their offsets), else from the beginning of the compacted
  topic, up to the end it had when assigned; then it is *ready*. **On revocation** it stops
  being served here at once.
- **Requests** (:class:`PartitionRouter`, called by ``consumers.api.LookupAPI`` before its
  own path): a user of a ready partition here is served as in Mode A; of a restoring
  partition, or a partition with no known owner, gets the fallback list (``"source":
  "fallback"``, never an error); of another replica's partition is forwarded to it
  (``consumers/forward.py``; if it does not answer in ``lookup_forward_timeout_s``, the
  fallback). A forwarded request carries ``x-streamrec-forwarded`` and is never forwarded
  again. Forwarding rather than a ``307``: the contract promises ``200`` with the list,
  clients (``LookupClient`` on httpx, wrk, most HTTP libraries) do not follow redirects by
  default, replicas' own URLs may not be reachable from clients behind a load balancer,
  and a redirect costs the client a second round trip, where forwarding costs one hop
  inside the cluster.
- **A replica that dies**: the group coordinator notices after ``session_timeout_ms``,
  the survivors get its partitions, restore them and publish their claims; meanwhile a
  forward to the dead replica fails at once (connection refused) or after the timeout, and
  the request gets the fallback. ``bench/lookup_scale.py`` measures how long.
- Beside the group consumer, a side reader (``assign()``, no group) follows the members
  topic, the fallback list (key ``__fallback__``, in its own partition: read from a tail
  of that partition first, from its beginning only if the tail does not hold it) and, for
  the read-your-writes filter, the ``interactions`` of the users this replica owns. The two
  threads write the store under one lock.

Adding partitions to ``recommendations`` moves users (``% partitions`` changes): lists of
a moved user are found again only once the worker republishes them (``streamrec
retrain`` republishes every list). Mode A has no such caveat.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import Receive, Scope, Send

from consumers.forward import FORWARDED, Forwarder
from consumers.lookup import LAG_EVERY_S, RESTARTS, LookupConsumer, from_end
from consumers.lookup import READY as READY_GAUGE
from consumers.partitioner import partition_of, user_partition
from consumers.store import ListStore
from streamrec.kafka import consumer_config, end_offsets, producer_config, readable
from streamrec.schema import FALLBACK_KEY, MAX_ID_LEN
from streamrec.settings import Settings

log = logging.getLogger(__name__)

OWNED = Gauge("streamrec_lookup_partitions_owned",
              "partitioned lookup: recommendations partitions assigned to this replica")
RESTORING_G = Gauge("streamrec_lookup_partitions_restoring",
                    "partitioned lookup: assigned partitions still being read up to their end")
RESTORE_SECONDS = Histogram("streamrec_lookup_restore_seconds",
                            "partitioned lookup: assignment of a partition to served from it",
                            buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300))
FORWARDS = Counter("streamrec_lookup_forwarded_total",
                   "partitioned lookup: requests for another replica's users, by outcome "
                   "(ok: its answer was relayed; fallback: it did not answer, the fallback "
                   "list was served)", ["outcome"])
FORWARD_SECONDS = Histogram("streamrec_lookup_forward_seconds",
                            "partitioned lookup: time to relay a request to its owner",
                            buckets=(.0001, .00025, .0005, .001, .0025, .005, .01, .025, .1,
                                     .25, 1))
LOCAL_FALLBACK = Counter("streamrec_lookup_unowned_fallback_total",
                         "partitioned lookup: requests answered with the fallback list because "
                         "their partition was restoring or had no known owner", ["why"])

READY = "ready"
RESTORING = "restoring"
FORWARD = "forward"
UNKNOWN = "unknown"
UNKNOWN_END = 1 << 62
"""Restore target of a partition whose end was not asked yet (never reached)."""
FALLBACK_TAIL = 20_000
"""Records at the end of the fallback's partition searched before reading it all."""
METADATA_EVERY_S = 10.0


def advertised_url(settings: Settings) -> str:
    """This replica's base URL for its peers (``lookup_advertised_url``, else host:port)."""
    if settings.lookup_advertised_url:
        return settings.lookup_advertised_url.rstrip("/")
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::", "") \
        else "127.0.0.1"
    return f"http://{host}:{settings.http_port}"


# --------------------------------------------------------------------------- ownership
class Ownership:
    """What this replica serves and who serves the rest. Written by the consumer threads
    (whole dicts replaced, never mutated), read by the request path without a lock."""

    def __init__(self, self_url: str) -> None:
        self.self_url = self_url
        self.partitions = 0
        self.states: dict[int, str] = {}
        """Assigned partitions: RESTORING or READY."""
        self.owners: dict[int, str] = {}
        """Partition -> URL of the replica whose latest members record claims it."""

    def route(self, user_id: str) -> tuple[str, str | None]:
        """(READY | RESTORING | FORWARD | UNKNOWN, the owner's URL when FORWARD)."""
        n = self.partitions
        if n <= 0:
            return UNKNOWN, None
        p = user_partition(user_id, n)
        state = self.states.get(p)
        if state is not None:
            return state, None
        url = self.owners.get(p)
        if url is None or url == self.self_url:
            return UNKNOWN, None
        return FORWARD, url

    def describe(self) -> dict[str, Any]:
        return {"url": self.self_url, "partitions": self.partitions,
                "owned": {str(p): s for p, s in sorted(self.states.items())},
                "owners": {str(p): u for p, u in sorted(self.owners.items())}}


class MemberDirectory:
    """The members topic folded into the owner of each partition (see the module)."""

    def __init__(self) -> None:
        self.records: dict[bytes, tuple[int, str, list[int]]] = {}

    def update(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if key is None:
            return
        if value is None:
            self.records.pop(key, None)
            return
        try:
            doc = orjson.loads(value)
            url = str(doc["url"])
            parts = [int(p) for p in doc["partitions"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("skipping an unreadable lookup members record %r", key[:64])
            return
        self.records[key] = (offset, url, parts)

    def owners(self) -> dict[int, str]:
        out: dict[int, tuple[int, str]] = {}
        for offset, url, parts in self.records.values():
            for p in parts:
                if p not in out or out[p][0] < offset:
                    out[p] = (offset, url)
        return {p: url for p, (_, url) in out.items()}


def ensure_members_topic(settings: Settings, timeout: float = 10.0) -> None:
    """Create the compacted one-partition members topic if it is missing."""
    name = settings.lookup_members_topic
    admin = AdminClient(settings.kafka_common())
    if name in admin.list_topics(timeout=timeout).topics:
        return
    topic = NewTopic(name, num_partitions=1, replication_factor=settings.replication_factor,
                     config={"cleanup.policy": "compact",
                             "segment.ms": str(settings.compaction_segment_ms),
                             "min.cleanable.dirty.ratio": "0.1"})
    for fut in admin.create_topics([topic], operation_timeout=timeout).values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args and isinstance(exc.args[0], KafkaError) and \
                    exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
    log.info("created topic %s", name)


# --------------------------------------------------------------------------- consumer
class PartitionedLookup(LookupConsumer):
    """The lookup consumer of Mode B: a group member on ``recommendations`` (this thread)
    plus a :class:`SideReader` thread; see the module docstring."""

    def __init__(self, settings: Settings, store: ListStore) -> None:
        super().__init__(settings, store)
        self.url = advertised_url(settings)
        self.ownership = Ownership(self.url)
        self.directory = MemberDirectory()
        self.lock = threading.Lock()
        """Held while either thread filters a batch and writes it with ``self.offsets``."""
        self.offsets: dict[str, int] = {}
        self._assigned_at: dict[int, float] = {}
        self._assignments = 0
        self._joined = False
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None
        self.side = SideReader(self)

    def start(self) -> None:
        super().start()
        self.side.start()

    def stop(self) -> None:
        super().stop()
        self.side.stop()

    def router(self, app: Any) -> "PartitionRouter":
        return PartitionRouter(self, app)

    # ----------------------------------------------------------------- session
    def _session(self) -> None:
        s = self.settings
        # a partition assigned while a fetch waits joins the next fetch: a short wait makes
        # a restore start sooner (10 idle fetches/s per broker cost nothing measurable)
        conf = consumer_config(s, s.lookup_group,
                               **{"fetch.wait.max.ms": min(s.fetch_wait_ms, 100),
                                  "fetch.queue.backoff.ms": 1,
                                  "partition.assignment.strategy": "cooperative-sticky"})
        consumer = self._consumer = Consumer(conf)
        self._producer = Producer(producer_config(s))
        self._admin = AdminClient({**s.kafka_common(), "logger": logging.getLogger("librdkafka"),
                                   "metadata.recovery.strategy": "none"})
        topic = s.topic_recommendations
        try:
            with self.lock:
                self.offsets = {str(k): v for k, v in self.store.offsets().items()}
            self.ownership.partitions = len(self._topic_partitions(consumer, topic, wait=True))
            consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_revoke)
            self.error = None
            self._position, self._moved_at = -1, time.monotonic()
            checked = lagged = committed = time.monotonic()
            while not self._halt.is_set():
                first = consumer.poll(0.2)   # rebalance callbacks run in here
                if first is not None:
                    self._consume(consumer, [first, *consumer.consume(5000, 0)], self.offsets)
                self._check_restored(consumer)
                now = time.monotonic()
                if now - lagged >= LAG_EVERY_S:
                    lagged = now
                    self._update_lag(consumer, self.offsets)    # and the stall watchdog
                if now - committed >= 5.0:
                    committed = now
                    self._commit_owned(consumer)
                if now - checked >= METADATA_EVERY_S:
                    checked = now
                    try:
                        count = len(self._topic_partitions(consumer, topic, wait=False))
                    except KafkaException as exc:   # the broker is away: it reconnects
                        log.debug("partition count check skipped: %s", exc)
                        count = 0
                    if count:
                        self.ownership.partitions = count
        finally:
            self._leave(consumer)

    def _commit_owned(self, consumer: Consumer) -> None:
        """Our partitions' positions under ``lookup_group``, for standard tools
        (``kafka-consumer-groups --describe`` shows each partition's lag and owner); never
        read back: positions come from the offsets stored with the lists."""
        topic = self.settings.topic_recommendations
        tps = [TopicPartition(topic, p, self.offsets[str(p)])
               for p in self.ownership.states if str(p) in self.offsets]
        if tps:
            try:
                consumer.commit(offsets=tps, asynchronous=True)
            except KafkaException as exc:   # a rebalance in progress: next time
                log.debug("lookup group commit skipped: %s", exc)

    def _leave(self, consumer: Consumer) -> None:
        """Leave the group (its revocation is served here), then withdraw our record."""
        try:
            consumer.close()
        except Exception as exc:  # the broker is away: the group notices by itself
            log.debug("closing the lookup group consumer: %s", exc)
        self._set_states({})
        producer = self._producer
        if producer is not None:
            try:
                producer.produce(self.settings.lookup_members_topic, key=self.url.encode(),
                                 value=None)
                producer.flush(2)
            except Exception as exc:
                log.debug("withdrawing the lookup members record: %s", exc)

    # ----------------------------------------------------------------- rebalances
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        topic = self.settings.topic_recommendations
        now = time.monotonic()
        with self.lock:
            tps = [TopicPartition(topic, tp.partition,
                                  self.offsets.get(str(tp.partition), OFFSET_BEGINNING))
                   for tp in partitions]
            consumer.incremental_assign(tps)
            for tp in tps:
                # where restoring ends is asked right after this callback: asked in here,
                # each query waited ~0.3-0.5 s for the rebalance to finish
                self._assigned_at[tp.partition] = now
                self._targets[tp.partition] = UNKNOWN_END
            states = dict(self.ownership.states)
            states.update({tp.partition: RESTORING for tp in tps})
            self._set_states(states)
        self._assignments += 1
        self._joined = True
        log.info("lookup %s assigned %s (resuming %s)", self.url,
                 [tp.partition for tp in tps],
                 {tp.partition: tp.offset for tp in tps if tp.offset >= 0} or "none")
        self._publish()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        with self.lock:
            self._set_states({p: s for p, s in self.ownership.states.items() if p not in gone})
            try:
                consumer.incremental_unassign(partitions)
            except KafkaException as exc:   # lost: nothing left to unassign
                log.debug("incremental_unassign: %s", exc)
        log.info("lookup %s gave up %s", self.url, sorted(gone))
        self._assignments += 1
        self._publish()

    def _ends(self, partitions: list[int], timeout: float = 2.0) -> dict[int, int]:
        """The partitions' high watermarks by one ListOffsets request on the session's
        admin client (on the consumer's own connection a query waits behind the fetch in
        flight, which the broker may hold for fetch.wait.max.ms); {} when no answer."""
        topic = self.settings.topic_recommendations
        ends = end_offsets(self.settings, [(topic, p) for p in partitions], timeout=timeout,
                           admin=self._admin)
        return {p: end for (_, p), end in (ends or {}).items()}

    def _update_lag(self, consumer: Consumer, offsets: dict[str, int]) -> None:
        """The base's lag gauges and stall watchdog over our partitions; readiness is
        :meth:`_check_restored`'s (it also needs an owner for every other partition)."""
        if not self._joined:   # before the first assignment there is nothing to be behind on
            return
        was_ready = self.ready.is_set()
        super()._update_lag(consumer, offsets)
        if not was_ready and self.ready.is_set() and not self._serves_all():
            self.ready.clear()
            READY_GAUGE.set(0)

    def _serves_all(self) -> bool:
        """Ours restored, and an owner known for every other partition."""
        own = self.ownership
        if any(v == RESTORING for v in own.states.values()):
            return False
        known = set(own.states) | set(own.owners)
        return all(p in known for p in range(own.partitions))

    def _set_states(self, states: dict[int, str]) -> None:
        self.ownership.states = states
        self.partitions = sorted(states)
        self.lag = {p: v for p, v in self.lag.items() if p in states}
        OWNED.set(len(states))
        RESTORING_G.set(sum(1 for v in states.values() if v == RESTORING))

    def _publish(self) -> None:
        consumer, producer = self._consumer, self._producer
        if producer is None:
            return
        doc = {"url": self.url, "partitions": sorted(self.ownership.states),
               "member_id": consumer.memberid() if consumer is not None else None,
               "assignment": self._assignments, "topic": self.settings.topic_recommendations,
               "updated_at": time.time()}
        producer.produce(self.settings.lookup_members_topic, key=self.url.encode(),
                         value=orjson.dumps(doc))
        producer.poll(0)

    # ----------------------------------------------------------------- restore
    def _check_restored(self, consumer: Consumer) -> None:
        """Restoring partitions that reached the end they had when assigned become ready."""
        states = self.ownership.states
        restoring = [p for p, s in states.items() if s == RESTORING]
        if not restoring:
            if self._joined and not self.ready.is_set() and self._serves_all():
                self.ready.set()       # /readyz: ours restored, and an owner for every other
                READY_GAUGE.set(1)
                log.info("lookup %s serves its partitions %s", self.url, sorted(states))
            return
        topic = self.settings.topic_recommendations
        unknown = [p for p in restoring if self._targets.get(p, UNKNOWN_END) == UNKNOWN_END]
        if unknown:
            self._targets.update(self._ends(unknown, timeout=1.0))   # else asked again
        done = []
        for p in restoring:
            target = self._targets.get(p, UNKNOWN_END)
            if target == UNKNOWN_END:
                continue
            reached = self.offsets.get(str(p), 0)
            if reached < target:
                pos = consumer.position([TopicPartition(topic, p)])
                reached = max(reached, pos[0].offset if pos else -1)
            if reached >= target:
                done.append(p)
        if not done:
            return
        now = time.monotonic()
        with self.lock:
            states = dict(self.ownership.states)
            for p in done:
                if states.get(p) == RESTORING:
                    states[p] = READY
                    took = now - self._assigned_at.get(p, now)
                    RESTORE_SECONDS.observe(took)
                    log.info("lookup %s restored partition %d (to offset %d) in %.2f s",
                             self.url, p, self._targets.get(p, 0), took)
            self._set_states(states)

    def _consume(self, consumer: Consumer, msgs: list, offsets: dict[str, int]) -> None:
        with self.lock:
            super()._consume(consumer, msgs, offsets)

    # ----------------------------------------------------------------- side reader hooks
    def apply_side(self, fallback: bytes | None, events: list) -> None:
        """Write what the side reader read: the fallback list, and stored lists of our users
        rewritten by the read-your-writes filter (with the group thread's offsets)."""
        with self.lock:
            writes: list[tuple[bytes, bytes | None]] = []
            key = FALLBACK_KEY.encode()
            if fallback is not None and self._accepted(key, fallback, {}):
                writes.append((key, fallback))
            if events:
                rewritten, _ = self._filtered(events, self.offsets)
                writes.extend(rewritten)
            if writes:
                self.store.apply(writes, self.offsets)


class SideReader(threading.Thread):
    """Members topic, fallback list and (for the seen filter) our users' events, by
    ``assign()``; supervised like the lookup consumer (retried with backoff)."""

    def __init__(self, lookup: PartitionedLookup) -> None:
        super().__init__(name="lookup-side", daemon=True)
        self.lookup = lookup
        self.settings = lookup.settings
        self._halt = threading.Event()
        self._fallback_search: tuple[int, int, int] | None = None
        self._lists_partitions = 0
        self._event_parts: set[int] = set()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        delay = 0.5
        while not self._halt.is_set():
            try:
                self._session()
                return
            except Exception as exc:
                RESTARTS.inc()
                log.warning("lookup side reader stopped (%s: %s); starting it again in %.1f s",
                            type(exc).__name__, exc, delay)
                self._halt.wait(delay)
                delay = min(30.0, delay * 2)

    def _session(self) -> None:
        s = self.settings
        ensure_members_topic(s)
        consumer = Consumer(consumer_config(
            s, f"streamrec-lookup-side-{uuid.uuid4().hex[:8]}",
            **{"fetch.wait.max.ms": min(s.fetch_wait_ms, 100), "fetch.queue.backoff.ms": 1}))
        try:
            self._assign(consumer)
            checked = time.monotonic()
            while not self._halt.is_set():
                first = consumer.poll(0.2)
                if first is not None:
                    self._handle(consumer, [first, *consumer.consume(5000, 0)])
                self._widen_fallback_search(consumer)
                if time.monotonic() - checked >= METADATA_EVERY_S:
                    checked = time.monotonic()
                    self._follow_partition_changes(consumer)
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer, topic: str) -> list[int]:
        t = consumer.list_topics(topic, timeout=5).topics.get(topic)
        return sorted(t.partitions) if t is not None and t.error is None else []

    def _assign(self, consumer: Consumer) -> None:
        s = self.settings
        members = self._partitions(consumer, s.lookup_members_topic)
        tps = [TopicPartition(s.lookup_members_topic, p, OFFSET_BEGINNING) for p in members]
        tps += self._fallback_tps(consumer)
        tps += self._event_tps(consumer, self._partitions(consumer, s.topic_interactions))
        consumer.assign(tps)

    def _fallback_tps(self, consumer: Consumer) -> list[TopicPartition]:
        topic = self.settings.topic_recommendations
        n = len(self._partitions(consumer, topic))
        self._lists_partitions = n
        if not n:
            return []
        p = partition_of(FALLBACK_KEY.encode(), n)
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
        start = max(low, high - FALLBACK_TAIL)
        self._fallback_search = (p, low, high) if start > low else None
        return [TopicPartition(topic, p, start)]

    def _event_tps(self, consumer: Consumer, parts: list[int]) -> list[TopicPartition]:
        if self.lookup.seen is None:
            return []
        self._event_parts |= set(parts)
        return from_end(consumer, self.settings.topic_interactions, parts)

    def _widen_fallback_search(self, consumer: Consumer) -> None:
        """The tail of the fallback's partition did not hold it: read the partition from
        its beginning (once)."""
        search = self._fallback_search
        if search is None:
            return
        p, low, high = search
        topic = self.settings.topic_recommendations
        pos = consumer.position([TopicPartition(topic, p)])
        if pos and pos[0].offset >= high:
            self._fallback_search = None
            consumer.incremental_unassign([TopicPartition(topic, p)])
            consumer.incremental_assign([TopicPartition(topic, p, low)])
            log.info("fallback list not in the last %d records of partition %d; reading it "
                     "from the beginning", FALLBACK_TAIL, p)

    def _follow_partition_changes(self, consumer: Consumer) -> None:
        s = self.settings
        if len(self._partitions(consumer, s.topic_recommendations)) != self._lists_partitions:
            consumer.incremental_unassign([tp for tp in consumer.assignment()
                                           if tp.topic == s.topic_recommendations])
            consumer.incremental_assign(self._fallback_tps(consumer))
        new = [p for p in self._partitions(consumer, s.topic_interactions)
               if p not in self._event_parts]
        if new and self.lookup.seen is not None:
            consumer.incremental_assign(self._event_tps(consumer, new))

    def _handle(self, consumer: Consumer, msgs: list) -> None:
        s = self.settings
        fallback, events, members = None, [], False
        own = self.lookup.ownership
        key_fb = FALLBACK_KEY.encode()
        for m in readable(msgs, "lookup side"):
            topic = m.topic()
            if topic == s.lookup_members_topic:
                self.lookup.directory.update(m.key(), m.value(), m.offset())
                members = True
            elif topic == s.topic_recommendations:
                if m.key() == key_fb and m.value() is not None:
                    fallback = m.value()
                    self._fallback_search = None
            else:
                key = m.key()
                n = own.partitions
                if key is not None and n and partition_of(key, n) in own.states:
                    events.append(m)
        if members:
            own.owners = self.lookup.directory.owners()
        if fallback is not None or events:
            self.lookup.apply_side(fallback, events)


# --------------------------------------------------------------------------- requests
class PartitionRouter:
    """The request path of Mode B, called by ``LookupAPI`` before its own: True when it has
    answered (forwarded, or the fallback list), False to let the local path answer."""

    def __init__(self, lookup: PartitionedLookup, app: Any) -> None:
        self.ownership = lookup.ownership
        self.store = lookup.store
        self.app = app
        self.forwarder = Forwarder(lookup.settings.lookup_forward_timeout_s)
        self._n_of: Callable[[bytes], int | None] = app._n

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        path: str = scope["path"]
        if path == "/lookup/partitions":
            await _reply(send, 200, orjson.dumps(self.ownership.describe()))
            return True
        if scope["method"] != "GET" or not path.startswith(PREFIX):
            return False
        user_id = path[len(PREFIX):]
        if not user_id or len(user_id) > MAX_ID_LEN or "/" in user_id:
            return False
        how, url = self.ownership.route(user_id)
        if how == READY:
            return False
        headers = scope["headers"]
        if how == FORWARD and not any(name == FORWARDED for name, _ in headers):
            query = scope["query_string"]
            # the path as received (percent-encoding kept); some servers put the query in it
            target = (scope.get("raw_path") or path.encode()).split(b"?", 1)[0]
            if query:
                target += b"?" + query
            auth = next((v for k, v in headers if k == b"authorization"), None)
            t0 = time.perf_counter()
            reply = await self.forwarder.get(url, target, auth)
            if reply is not None and reply[0] < 500:
                FORWARD_SECONDS.observe(time.perf_counter() - t0)
                FORWARDS.labels("ok").inc()
                await _reply(send, reply[0], reply[1], reply[2])
                return True
            FORWARDS.labels("fallback").inc()
        n = self._n(scope["query_string"])
        if n is None:
            return False        # a bad n: FastAPI's route answers 422, as everywhere
        LOCAL_FALLBACK.labels(RESTORING if how == RESTORING else "not owned").inc()
        await _reply(send, 200, self.fallback_body(user_id, n))
        return True

    def _n(self, query: bytes) -> int | None:
        n = self._n_of(query)
        if n is not None or not query:
            return n
        values = parse_qs(query.decode("latin-1")).get("n")
        if values is None:
            return self.app.default_n
        if len(values) == 1 and values[0].isdigit() and 1 <= int(values[0]) <= self.app.max_n:
            return int(values[0])
        return None

    def fallback_body(self, user_id: str, n: int) -> bytes:
        from consumers.api import _empty_fallback, _stored

        doc = _stored(self.store.get(FALLBACK_KEY)) or _empty_fallback(user_id)
        doc["user_id"] = user_id
        doc["source"] = "fallback"
        doc["items"] = doc["items"][:n]
        return orjson.dumps(doc)


PREFIX = "/recommendations/"


async def _reply(send: Send, status: int, body: bytes,
                 content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()),
                            (b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})
