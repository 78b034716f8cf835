"""User-sharded workers on Apache Kafka (docs/scaling.md, "Sharded workers"): two
supervisors share two shards through the lease group (each bootstraps on a history already
in the topic and keeps its users); one supervisor is killed with -9
mid-stream (its shard moves to the other, which restores it from the shared state dir),
then one shard process is killed with -9 (its supervisor starts it again). Afterwards every
produced event is in its shard's state and the shards applied exactly as many events as were
produced (nothing lost, nothing twice), every streamed user's newest list reached the lookup,
and each shard's item-side counts equal one worker's counts over all events: no delta lost
or applied twice."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from producers import EventProducer
from stream_app.engine import Engine
from stream_app.shards import shard_dir
from stream_app.store import WorkerStore
from streamrec.broker import ensure_topics
from streamrec.broker.base import free_port
from streamrec.schema import validate_interaction
from streamrec.settings import Settings
from consumers.partitioner import user_partition
from tests.chaos.harness import lists_check
from tests.integration.processes import Proc, metric, start_lookup, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]

SHARDS = 2
EVENTS = 5000
HISTORY = 1000
RATE = 250.0          # events/s
START_S = 90


@pytest.fixture
def sharded(broker, settings: Settings) -> Settings:
    if broker.engine == "tansu":
        pytest.skip("consumer groups on Tansu join in half the session timeout; Apache Kafka "
                    "only")
    tag = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={
        "partitions": 2 * SHARDS, "shards": SHARDS, "guard_enabled": False,
        "topic_interactions": f"events-sh-{tag}", "topic_users": f"users-sh-{tag}",
        "item_deltas_topic": f"deltas-{tag}", "shard_leases_topic": f"leases-{tag}",
        "checkpoint_interval_s": 1.0})
    ensure_topics(s)
    return s


def events(n: int = EVENTS, users: int = 120, items: int = 80, seed: int = 5) -> list[dict]:
    """Two taste groups, so shards' users share items and co-occurrences."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u = int(rng.integers(0, users))
        lo = 0 if u % 2 == 0 else items // 2
        i = lo + int(rng.pareto(1.3) * 6) % (items // 2)
        out.append({"user_id": f"u{u}", "item_id": f"i{i}", "event_type": "click"})
    return out


class Stream(threading.Thread):
    """Produces the events at a steady rate (no event_id: dedup cannot hide a double)."""

    def __init__(self, s: Settings, evs: list[dict]) -> None:
        super().__init__(daemon=True)
        self.s, self.evs, self.sent = s, evs, 0
        self.error: BaseException | None = None
        self.last_sent: dict[str, float] = {}     # user -> when their last event was sent

    def run(self) -> None:
        try:
            with EventProducer(self.s) as p:
                t0 = time.monotonic()
                for k, ev in enumerate(self.evs):
                    delay = t0 + k / RATE - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    # the time before the send: taken after it, a descheduled thread
                    # could stamp a time later than the list the event produced
                    self.last_sent[ev["user_id"]] = time.time()
                    p.send(ev)
                    self.sent = k + 1
        except BaseException as exc:   # noqa: BLE001 - reported by the test
            self.error = exc


def shard_ports(bases: list[int], shard: int) -> list[int]:
    return [b + 1 + shard for b in bases]


def shard_metric(bases: list[int], shard: int, name: str, labels: str = "") -> float:
    """The metric of whichever supervisor's process runs the shard now."""
    for port in shard_ports(bases, shard):
        try:
            if metric(port, "streamrec_worker_ready") == 1:
                return metric(port, name, labels)
        except Exception:   # noqa: BLE001 - not running there
            continue
    raise ValueError(f"shard {shard} is not running")


def applied(bases: list[int]) -> int:
    return int(sum(shard_metric(bases, k, "streamrec_worker_state_applied_events")
                   for k in range(SHARDS)))


def reference(evs: list[dict], s: Settings) -> Engine:
    one = Engine(s.model_copy(update={"shards": 1, "shard": -1}))
    one.apply_interactions([validate_interaction(e) for e in evs], train=False)
    return one


def counts_by_id(e: Engine, ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [e.items.get(x) for x in ids]
    c = np.array([e.cooc.counts[r] for r in rows])
    p = np.array([[e.cooc.pair(a, b) for b in rows] for a in rows])
    t = np.array([[e.cooc.transitions.get(a, b) for b in rows] for a in rows])
    return c, p, t


def test_sharded_workers_lose_and_double_nothing_through_kill_9(sharded: Settings,
                                                                tmp_path: Path) -> None:
    s = sharded
    evs = events()
    with EventProducer(s) as p:   # a history first: each shard bootstraps on it, keeps its
        for ev in evs[:HISTORY]:  # users and shares their counts as its first deltas
            p.send(ev)
    bases = [free_port(), free_port()]
    lookup = start_lookup(s, tmp_path)
    # the second supervisor gets its shard count from the flag, not the environment
    sups = [Proc(["worker", "--no-progress", *(["--shards", str(SHARDS)] if k else [])],
                 s.model_copy(update={"worker_metrics_port": b, "shards": 1 if k else SHARDS}),
                 tmp_path / f"supervisor-{k}.log").start() for k, b in enumerate(bases)]
    try:
        for k in range(SHARDS):
            wait_until(lambda k=k: shard_metric(bases, k, "streamrec_worker_ready") == 1,
                       START_S, f"shard {k} running", procs=tuple(sups))
        stream = Stream(s, evs[HISTORY:])
        stream.start()
        wait_until(lambda: stream.sent >= (EVENTS - HISTORY) // 3, 60, "a third of the events sent")
        # kill -9 a supervisor that runs a shard: its shard processes die with it
        victim = next(k for k, b in enumerate(bases)
                      if any(_answers(b + 1 + j) for j in range(SHARDS)))
        sups[victim].stop(signal.SIGKILL)
        survivor = sups[1 - victim]
        for k in range(SHARDS):
            wait_until(lambda k=k: _answers(bases[1 - victim] + 1 + k), START_S,
                       f"shard {k} taken over by the other supervisor", procs=(survivor,))
        other = bases[1 - victim]   # the survivor says it runs both, and is ready
        wait_until(lambda: metric(other, "streamrec_worker_shards_running") == SHARDS and
                   metric(other, "streamrec_worker_ready") == 1 and
                   metric(other, "streamrec_worker_shards") == SHARDS, 30,
                   "the survivor's gauges", procs=(survivor,))
        wait_until(lambda: stream.sent >= 2 * (EVENTS - HISTORY) // 3, 60, "two thirds sent")
        # kill -9 one shard process: its supervisor starts it again
        os.kill(_pid_of(bases[1 - victim], 0), signal.SIGKILL)
        stream.join(120)
        assert stream.error is None and stream.sent == EVENTS - HISTORY
        wait_until(lambda: applied(bases) >= EVENTS, 120, "every event applied",
                   procs=(survivor,))
        time.sleep(4)   # cuts every 1 s: the last deltas reach the other shard
        assert applied(bases) == EVENTS            # exactly once, across the shards
        dup = sum(shard_metric(bases, k, "streamrec_worker_item_deltas_total",
                               '{outcome="applied"}') for k in range(SHARDS))
        assert dup > 0
        # every streamed user's newest list, published after their last event, is served
        assert lists_check(s, stream) == []
    finally:
        for p in (*sups, lookup):
            p.stop()
    assert survivor.p.returncode == 0, survivor.log()[-3000:]
    want = reference(evs, s)
    ids = want.items.ids
    w_c, w_p, w_t = counts_by_id(want, ids)
    for k in range(SHARDS):
        store = WorkerStore(shard_dir(s, k))
        try:
            got, _ = store.load(s.model_copy(update={"shard": k}))
        finally:
            store.close()
        mine = [e for e in evs if user_partition(e["user_id"], 2 * SHARDS) % SHARDS == k]
        rows = np.array([got.users.get(e["user_id"]) for e in mine])
        cols = np.array([got.items.get(e["item_id"]) for e in mine])
        assert (rows != None).all() and got.seen.contains(rows.astype(np.int64),  # noqa: E711
                                                          cols.astype(np.int64)).all()
        c, p, t = counts_by_id(got, ids)
        np.testing.assert_allclose(c, w_c, err_msg=f"shard {k}: item positives")
        np.testing.assert_allclose(p, w_p, err_msg=f"shard {k}: co-occurrence pairs")
        np.testing.assert_allclose(t, w_t, rtol=1e-6, err_msg=f"shard {k}: transitions")
        assert got.n_applied < EVENTS   # each shard trained its own users only


def _answers(port: int) -> bool:
    try:
        return metric(port, "streamrec_worker_ready") == 1
    except Exception:   # noqa: BLE001
        return False


def _pid_of(base: int, shard: int) -> int:
    """The pid of the shard's process, as its supervisor's /readyz reports it."""
    return wait_until(lambda: httpx.get(f"http://127.0.0.1:{base}/readyz", timeout=2)
                      .json()["running"][str(shard)], 30, f"shard {shard}'s pid")
