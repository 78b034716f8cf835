"""User-sharded workers: which partitions a shard owns, and the supervisor that runs shards.

A *shard* is a unit of state, like a Kafka Streams task: shard k of N owns the users of the
``interactions`` and ``users`` partitions p with p % N == k (users are partitioned by the
murmur2 hash of their id, as every producer of ours keys them), reads every partition of
the item-side topics, and keeps its state (checkpoints and WAL) in ``STATE_DIR/shard-k``. It
is today's worker, with its crash recovery, run on a subset of the users; what the shards
learn about items they share through :mod:`stream_app.deltas`.

Which process runs which shard is decided by a Kafka consumer group, not by us: each
``streamrec worker`` with ``shards`` > 1 is a *supervisor* that joins the group
``worker_group + "-leases"`` on ``shard_leases_topic`` (one partition per shard,
cooperative-sticky assignment) and runs shard k, in a child process, while it holds
partition k. A supervisor that dies (or its machine) stops heartbeating; after
``session_timeout_ms`` the group hands its leases to the others, whose new children open the
shard's state dir (it must be on storage every worker reaches) and restore it: the last
checkpoint, the WAL, then Kafka from the stored offsets, exactly what a restarted worker does.
Its children die with it (``PR_SET_PDEATHSIG``), so two processes never run one shard; the
state dir's lock guards that as well.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumers.partitioner import user_partition
from stream_app import metrics
from stream_app.deltas import DeltaBuffer
from stream_app.engine import Engine
from stream_app.model import padded_capacity
from stream_app.registry import IdRegistry
from streamrec.errors import BrokerUnavailable, ConfigError
from streamrec.kafka import consumer_config
from streamrec.settings import Settings

log = logging.getLogger(__name__)

RESTART_MAX_S = 30.0
"""A shard process that exits while its lease is held is started again after 1, 2, 4 ...
seconds, at most this long (a shard whose state dir is still locked by a dying process
starts on a later try)."""
STOP_TIMEOUT_S = 120.0
"""A revoked shard checkpoints and exits on SIGTERM; after this long it is killed (its next
owner then restores the last checkpoint and the WAL, as after a crash)."""


def shard_dir(settings: Settings, shard: int) -> Path:
    return Path(settings.state_dir) / f"shard-{shard}"


def user_topics(settings: Settings) -> tuple[str, ...]:
    """Topics keyed by user, split between shards; every other topic is read by all."""
    return settings.topic_interactions, settings.topic_users


def shard_assignment(settings: Settings, consumer: Consumer, topics: list[str]
                     ) -> list[TopicPartition]:
    """The partitions shard ``settings.shard`` reads: its share of the user topics, all of
    the others."""
    try:
        meta = consumer.list_topics(timeout=10)
    except KafkaException as exc:
        raise BrokerUnavailable(f"shard {settings.shard}: could not list topics: {exc}") \
            from None
    out = []
    for topic in topics:
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise BrokerUnavailable(f"shard {settings.shard}: topic {topic} not available yet")
        parts = sorted(info.partitions)
        if topic in user_topics(settings):
            if len(parts) % settings.shards:
                raise ConfigError(
                    f"topic {topic} has {len(parts)} partitions, not a multiple of "
                    f"STREAMREC_SHARDS={settings.shards}: create it with a multiple (e.g. "
                    f"STREAMREC_PARTITIONS={settings.shards * 4}) before the first start")
            parts = [p for p in parts if p % settings.shards == settings.shard]
        out.extend(TopicPartition(topic, p) for p in parts)
    return out


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl   # resolved here: the forked child
_PR_SET_PDEATHSIG = 1                                # must not take the loader's locks


def own_share(full: Engine, applied_rows: np.ndarray, settings: Settings,
              partitions: int) -> Engine:
    """Shard ``settings.shard``'s part of an engine bootstrapped on every user (see
    ``shard_bootstrap``): its users (those whose id hashes to one of its ``interactions``
    partitions, as every producer of ours keys them), their model rows, seen items and
    histories, every item; its counts rebuilt from its users' histories and captured, so
    they go out as its first deltas (the other shards add theirs). The model's item side,
    the fallback's recent positives, the dedup ids and the guard are kept whole: every
    shard computed the same. ``applied_rows``: the user row of every event applied."""
    n = settings.shards
    ids = full.users.ids
    keep = np.array([r for r, uid in enumerate(ids)
                     if user_partition(uid, partitions) % n == settings.shard], np.int64)
    s = settings
    capacity = padded_capacity(len(keep), s.padding_fraction, s.padding_min)
    e = Engine(s, model=full.model.keep_users(keep, capacity),
               users=IdRegistry(ids[r] for r in keep.tolist()), items=full.items,
               created=full.created)
    e.users.reset_persisted()   # new to the store: its first checkpoint writes them
    e.batch_seq = full.batch_seq
    e.n_applied = int(np.isin(applied_rows, keep).sum())
    theirs = set(user_topics(s))
    e.offsets = {k: v for k, v in full.offsets.items()
                 if k.rpartition(":")[0] not in theirs or int(k.rpartition(":")[2]) % n
                 == s.shard}
    e.dedup = full.dedup
    e.recent_positives, e.popularity = full.recent_positives, full.popularity
    e.guard = full.guard
    new_rows = list(range(len(keep)))
    e.seen.load(new_rows, [full.seen[r] for r in keep.tolist()])
    e.cooc.capture = DeltaBuffer()
    e.cooc.load_histories({k: full.cooc.history[r] for k, r in enumerate(keep.tolist())})
    e.dirty_users = set(new_rows)
    return e


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the supervisor dies, even by ``kill -9``."""
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() == 1:           # the parent died before prctl took effect
        os._exit(1)


class Supervisor:
    """Holds shard leases in the consumer group and runs each leased shard's process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children: dict[int, subprocess.Popen] = {}
        self.held: set[int] = set()
        self._next_start: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._stop = False

    # ----------------------------------------------------------------- children
    def _start(self, shard: int) -> None:
        s = self.settings
        env = {**os.environ, "STREAMREC_SHARDS": str(s.shards), "STREAMREC_SHARD": str(shard),
               "STREAMREC_STATE_DIR": str(shard_dir(s, shard)),
               "STREAMREC_WORKER_METRICS_PORT":
                   str(s.worker_metrics_port + 1 + shard if s.worker_metrics_port else 0)}
        shard_dir(s, shard).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "streamrec.cli", "worker", "--no-progress"]
        self.children[shard] = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
        log.info("shard %d: started (pid %d, state dir %s)", shard, self.children[shard].pid,
                 shard_dir(s, shard))

    def _stop_child(self, shard: int) -> None:
        proc = self.children.pop(shard, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("shard %d did not stop within %.0f s; killing it (its next owner "
                      "restores the last checkpoint and the WAL)", shard, STOP_TIMEOUT_S)
            proc.kill()
            proc.wait()
        log.info("shard %d: stopped (exit %s)", shard, proc.returncode)

    def _watch(self) -> None:
        """Start the held shards that are not running (with backoff after a failure);
        keep the gauges current (a supervisor is ready when every shard it holds runs, so
        one that holds none, a standby, is ready too)."""
        self._gauges()
        now = time.monotonic()
        for shard in sorted(self.held):
            proc = self.children.get(shard)
            if proc is not None and proc.poll() is None:
                if now - self._next_start.get(shard, now) > 60:
                    self._failures[shard] = 0     # up for a minute: healthy again
                continue
            if proc is not None:
                self.children.pop(shard)
                n = self._failures[shard] = self._failures.get(shard, 0) + 1
                delay = min(RESTART_MAX_S, 2.0 ** (n - 1))
                self._next_start[shard] = now + delay
                log.warning("shard %d exited with code %s; starting it again in %.0f s",
                            shard, proc.returncode, delay)
            if now >= self._next_start.get(shard, 0):
                self._next_start[shard] = now
                self._start(shard)

    # ----------------------------------------------------------------- leases
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        got = {tp.partition for tp in partitions}
        log.info("leases assigned: shards %s (holding %s)", sorted(got),
                 sorted(self.held | got))
        self.held |= got
        self._watch()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        log.info("leases revoked: shards %s", sorted(gone))
        for shard in sorted(gone):
            self._stop_child(shard)
        self.held -= gone
        try:
            consumer.incremental_unassign(partitions)
        except KafkaException as exc:   # lost (session expired): nothing to unassign
            log.debug("unassign after revoke: %s", exc)

    def run(self) -> None:
        """Until SIGTERM/SIGINT: hold leases, run their shards; then stop every shard
        (each checkpoints) and leave the group, so the others take over at once."""
        from streamrec.broker import ensure_topics

        s = self.settings
        ensure_topics(s, extra={s.item_deltas_topic: 1, s.shard_leases_topic: s.shards})
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "_stop", True))
        consumer = Consumer(consumer_config(
            s, f"{s.worker_group}-leases",
            **{"partition.assignment.strategy": "cooperative-sticky",
               "max.poll.interval.ms": 600_000}))
        consumer.subscribe([s.shard_leases_topic], on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("supervising %d shards in %s (group %s-leases)", s.shards, s.state_dir,
                 s.worker_group)
        try:
            while not self._stop:
                consumer.poll(0.5)     # the lease topic is empty: this heartbeats and rebalances
                self._watch()
        finally:
            for shard in sorted(self.children):
                self._stop_child(shard)
            self.held.clear()
            consumer.close()
            log.info("supervisor stopped")

    def _running(self) -> dict[int, int]:
        return {k: p.pid for k, p in self.children.items() if p.poll() is None}

    def _gauges(self) -> None:
        running = self._running()
        metrics.SHARDS.set(len(running))
        metrics.SHARDS_TOTAL.set(self.settings.shards)
        metrics.READY.set(1 if sorted(running) == sorted(self.held) else 0)

    def readiness(self) -> tuple[bool, dict]:
        running = self._running()
        return sorted(running) == sorted(self.held), {
            "shards": self.settings.shards, "held": sorted(self.held),
            "running": {str(k): pid for k, pid in sorted(running.items())}}


def run_supervisor(settings: Settings) -> None:
    from stream_app.health import serve_health
    from streamrec.broker import wait_for_broker

    sup = Supervisor(settings)
    if settings.worker_metrics_port:
        serve_health(settings.http_host, settings.worker_metrics_port, sup.readiness)
    wait_for_broker(settings.bootstrap_servers, settings.broker_wait_s,
                    settings.kafka_common(), what="supervisor")
    sup.run()
